//! Live progress of one explanation, readable from any thread (the stream and the CLI's
//! bar poll it); the engine updates it through `PassObserver`. It also keeps the first
//! target's scores as they arrive, so a stream can show the map sharpening.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::cam::{Coverage, Map, MaskPlan, TargetScores};
use crate::engine::PassObserver;

/// Where an explanation is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Admitted, waiting for a running slot.
    #[default]
    Queued,
    /// The clean pass (features and logits).
    Features,
    /// The method's passes.
    Masked,
    /// Faithfulness metrics' passes.
    Metrics,
}

#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicUsize,
    total: AtomicUsize,
    stage: AtomicU8,
    /// Bumped whenever scores arrive (a preview is worth recomputing).
    scored: AtomicUsize,
    partial: Mutex<Option<Partial>>,
}

/// The method's passes so far, for the first target.
#[derive(Debug)]
struct Partial {
    plan: Arc<MaskPlan>,
    target: usize,
    scores: TargetScores,
    done: Vec<bool>,
}

/// The map so far, at the target layer's resolution.
#[derive(Clone, Debug, Serialize)]
pub struct Preview {
    pub target: usize,
    pub map: Map,
    pub coverage: Coverage,
}

impl Progress {
    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Relaxed) {
            1 => Stage::Features,
            2 => Stage::Masked,
            3 => Stage::Metrics,
            _ => Stage::Queued,
        }
    }

    pub(crate) fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }

    /// Method and metric passes scored so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Method and metric passes planned (0 until the clean pass has run).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn set_total(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
    }

    fn partial(&self) -> std::sync::MutexGuard<'_, Option<Partial>> {
        self.partial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plan whose passes are about to run, and the first target (its clean logit).
    pub(crate) fn begin_passes(&self, plan: Arc<MaskPlan>, target: usize, clean_logit: f32) {
        let n = crate::cam::PassSet::len(&*plan);
        let scores = TargetScores { class: target, clean_logit, logits: vec![0.0; n], probs: vec![0.0; n] };
        *self.partial() = Some(Partial { plan, target, scores, done: vec![false; n] });
    }

    fn record(&self, start: usize, scores: &[Vec<(f32, f32)>]) {
        if let Some(p) = self.partial().as_mut() {
            for (i, per_target) in scores.iter().enumerate() {
                let (Some(&(z, prob)), true) = (per_target.first(), start + i < p.done.len()) else { continue };
                p.scores.logits[start + i] = z;
                p.scores.probs[start + i] = prob;
                p.done[start + i] = true;
            }
        }
        self.scored.fetch_add(1, Ordering::Relaxed);
    }

    /// Grows each time scores arrive.
    pub fn scored_version(&self) -> usize {
        self.scored.load(Ordering::Relaxed)
    }

    /// The first target's map from the passes done so far (`None` before the plan). The
    /// lock is held only to copy the scores; the map is computed outside it.
    pub fn preview(&self) -> Option<Preview> {
        let (plan, target, scores, done) = {
            let guard = self.partial();
            let p = guard.as_ref()?;
            (p.plan.clone(), p.target, p.scores.clone(), p.done.clone())
        };
        let map = crate::cam::preview(&plan, &scores, &done);
        Some(Preview { target, map, coverage: plan.coverage(&done) })
    }
}

/// Moves a request's progress to `stage` when its job starts and counts its passes.
pub(crate) struct StageObserver {
    pub progress: Arc<Progress>,
    pub stage: Stage,
}

impl PassObserver for StageObserver {
    fn started(&self) {
        self.progress.set_stage(self.stage);
    }

    fn passes_done(&self, n: usize) {
        self.progress.done.fetch_add(n, Ordering::Relaxed);
    }

    fn scored(&self, start: usize, scores: &[Vec<(f32, f32)>]) {
        // Only the method's passes make the map (the metrics' passes score other inputs).
        if self.stage == Stage::Masked {
            self.progress.record(start, scores);
        }
    }
}
