//! What a caller submits, what it gets back, and the scheduler's record of a job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::oneshot;

use super::EngineError;
use crate::cam::faithfulness::Faithfulness;
use crate::cam::{MaskPlan, Method, PassSet, Saliency, TargetScores};

/// Which classes to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// These class indices, in this order.
    Classes(Vec<usize>),
    /// The k most probable classes of the clean pass.
    TopK(usize),
}

#[derive(Clone, Debug)]
pub enum JobKind {
    Predict,
    /// The clean pass, then the method's passes; `metrics` plans the faithfulness passes
    /// into the progress total (they run as a follow-up `Score` job).
    Explain {
        method: Method,
        targets: TargetSpec,
        metrics: bool,
    },
    /// A given set of passes on the input, scored for `targets` (no clean pass).
    Score {
        passes: Arc<dyn PassSet>,
        targets: Arc<[usize]>,
        clean_logits: Vec<f32>,
    },
}

/// Where an explanation is (for progress reports).
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

/// Live progress of one explanation, readable from any thread.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicUsize,
    total: AtomicUsize,
    stage: std::sync::atomic::AtomicU8,
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

    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Masked passes planned (0 until the clean pass has run).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn set_total(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, n: usize) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// A fault to inject, for tests of containment (the HTTP layer only accepts it when
/// built with the `fault-injection` feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Panic while this job's passes are processed.
    Panic,
    /// End the worker thread that runs this job's batch.
    KillWorker,
}

/// A job as a caller describes it.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub model: String,
    /// One preprocessed image, C×H×W.
    pub input: Arc<[f32]>,
    pub kind: JobKind,
    pub deadline: Option<Instant>,
    pub progress: Option<Arc<Progress>>,
    pub fault: Option<Fault>,
}

impl JobRequest {
    pub fn predict(model: &str, input: Vec<f32>) -> Self {
        Self {
            model: model.into(),
            input: input.into(),
            kind: JobKind::Predict,
            deadline: None,
            progress: None,
            fault: None,
        }
    }

    pub fn explain(model: &str, input: Vec<f32>, method: impl Into<Method>, targets: TargetSpec) -> Self {
        Self {
            model: model.into(),
            input: input.into(),
            kind: JobKind::Explain { method: method.into(), targets, metrics: false },
            deadline: None,
            progress: None,
            fault: None,
        }
    }
}

impl JobRequest {
    /// Also plan the faithfulness passes (explanations only).
    pub fn with_metrics(mut self, on: bool) -> Self {
        if let JobKind::Explain { metrics, .. } = &mut self.kind {
            *metrics = on;
        }
        self
    }
}

/// Counts that describe the work an explanation took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// Every forward pass through the model for this job, the clean pass included.
    pub forward_passes: usize,
    /// Passes through the head graph alone (Ablation-CAM).
    pub head_passes: usize,
    /// Passes spent on faithfulness metrics (not counted above).
    pub metric_passes: usize,
    /// Channels that got no pass of their own (constant, all-zero, or left out).
    pub skipped_channels: usize,
    /// Channels whose mask equals another channel's, so they reused its passes.
    pub shared_mask_channels: usize,
    /// The largest batch any of its passes ran in.
    pub batch_size: usize,
}

/// Wall-clock time per stage, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageTimings {
    /// Admission to the clean pass starting.
    pub queue_ms: f64,
    /// The clean pass (extractor + head).
    pub features_ms: f64,
    /// First masked batch dispatched to last masked result.
    pub masked_ms: f64,
    /// Weights, sum and upsampling into maps.
    pub combine_ms: f64,
    /// Faithfulness metrics' passes (0 unless asked for).
    pub metrics_ms: f64,
    pub total_ms: f64,
}

/// What `Engine::explain` returns.
#[derive(Clone, Debug)]
pub struct ExplainOutcome {
    /// Logits of the clean pass.
    pub logits: Vec<f32>,
    /// The explained classes, in the order of `maps`.
    pub targets: Vec<usize>,
    pub maps: Vec<Saliency>,
    /// Per target, when metrics were asked for.
    pub metrics: Option<Vec<Faithfulness>>,
    pub stats: RunStats,
    pub timings: StageTimings,
}

/// The scheduler's finished explanation, before the maps are combined.
pub(crate) struct RawExplanation {
    pub clean_logits: Vec<f32>,
    pub targets: Vec<usize>,
    pub plan: Arc<MaskPlan>,
    pub scores: Vec<TargetScores>,
    pub stats: RunStats,
    pub timings: StageTimings,
}

pub(crate) enum JobOutput {
    Predicted { logits: Vec<f32> },
    Explained(Box<RawExplanation>),
    Scored { scores: Vec<TargetScores>, stats: RunStats },
}

pub(crate) type Reply = oneshot::Sender<Result<JobOutput, EngineError>>;

/// A submitted job as the scheduler receives it.
pub(crate) struct JobEntry {
    pub id: usize,
    pub model: usize,
    pub request: JobRequest,
    pub reply: Reply,
    pub cancelled: Arc<AtomicBool>,
    pub submitted: Instant,
}

impl JobEntry {
    pub fn new(id: usize, model: usize, request: JobRequest, reply: Reply, cancelled: Arc<AtomicBool>) -> Self {
        Self { id, model, request, reply, cancelled, submitted: Instant::now() }
    }
}

/// The k highest logits' indices, highest first (ties by index).
pub fn top_k(logits: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.truncate(k.min(logits.len()));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_logit_then_index() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
    }
}
