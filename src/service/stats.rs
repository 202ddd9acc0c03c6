//! Explanation-level counters and stage timings, beside the engine's pass-level ones.

use std::sync::atomic::{AtomicU64, Ordering};

use super::result::{RunStats, StageTimings};
use crate::engine::stats::{Histogram, SECONDS};

#[derive(Debug)]
pub struct ServiceStats {
    pub skipped_channels: AtomicU64,
    pub shared_mask_channels: AtomicU64,
    /// Explanations answered with a partial map (pass budget or anytime deadline).
    pub partial_explanations: AtomicU64,
    pub stage_seconds: Vec<(&'static str, Histogram)>,
}

impl Default for ServiceStats {
    fn default() -> Self {
        Self {
            skipped_channels: AtomicU64::new(0),
            shared_mask_channels: AtomicU64::new(0),
            partial_explanations: AtomicU64::new(0),
            stage_seconds: ["queue", "features", "masked", "combine", "metrics", "total"]
                .into_iter()
                .map(|s| (s, Histogram::new(SECONDS)))
                .collect(),
        }
    }
}

impl ServiceStats {
    pub(crate) fn observe(&self, stats: &RunStats, t: &StageTimings) {
        self.skipped_channels.fetch_add(stats.skipped_channels as u64, Ordering::Relaxed);
        self.shared_mask_channels.fetch_add(stats.shared_mask_channels as u64, Ordering::Relaxed);
        if stats.coverage.is_some() {
            self.partial_explanations.fetch_add(1, Ordering::Relaxed);
        }
        let values = [t.queue_ms, t.features_ms, t.masked_ms, t.combine_ms, t.metrics_ms, t.total_ms];
        for ((_, h), ms) in self.stage_seconds.iter().zip(values) {
            h.observe(ms / 1e3);
        }
    }
}
