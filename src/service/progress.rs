//! Live progress of one explanation, readable from any thread (the stream and the CLI's
//! bar poll it); the engine updates it through `PassObserver`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use serde::Serialize;

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
}
