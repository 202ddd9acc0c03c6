//! Engine counters (passes, batches, jobs, workers), read by the metrics endpoint.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram (Prometheus semantics: cumulative on export).
#[derive(Debug)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((v * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// (upper bound, cumulative count) per bucket, then the +Inf total, the sum and count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut acc = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        (buckets, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, self.count.load(Ordering::Relaxed))
    }
}

/// Buckets for durations in seconds, from a millisecond to a minute.
pub const SECONDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug)]
pub struct EngineStats {
    workers_alive: AtomicUsize,
    pub masked_passes: AtomicU64,
    pub head_passes: AtomicU64,
    pub clean_passes: AtomicU64,
    pub rejected: AtomicU64,
    /// Requests refused because they could not finish before their deadline.
    pub refused: AtomicU64,
    /// Admitted requests ended before their passes because they could no longer make
    /// their deadline (answered with their partial map when anytime).
    pub ended_early: AtomicU64,
    /// The admitted work in milliseconds of the engine (as the scheduler last told it),
    /// and the requests that hold it.
    backlog_ms: AtomicU64,
    backlog_requests: AtomicUsize,
    /// Jobs dropped because their caller went away.
    pub cancelled: AtomicU64,
    pub queued_jobs: AtomicUsize,
    pub running_jobs: AtomicUsize,
    pub batch_size: Histogram,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineStats {
    pub fn new() -> Self {
        Self {
            workers_alive: AtomicUsize::new(0),
            masked_passes: AtomicU64::new(0),
            head_passes: AtomicU64::new(0),
            clean_passes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            ended_early: AtomicU64::new(0),
            backlog_ms: AtomicU64::new(0),
            backlog_requests: AtomicUsize::new(0),
            cancelled: AtomicU64::new(0),
            queued_jobs: AtomicUsize::new(0),
            running_jobs: AtomicUsize::new(0),
            batch_size: Histogram::new(SIZES),
        }
    }

    /// The scheduler's latest view of the admitted work.
    pub(crate) fn set_backlog(&self, seconds: f64, requests: usize) {
        self.backlog_ms.store((seconds * 1e3).clamp(0.0, 1e12) as u64, Ordering::Relaxed);
        self.backlog_requests.store(requests, Ordering::Relaxed);
    }

    /// Seconds of work admitted and not yet run (an estimate from the measured rates).
    pub fn backlog_seconds(&self) -> f64 {
        self.backlog_ms.load(Ordering::Relaxed) as f64 / 1e3
    }

    /// When a request refused at capacity should come back: the time one admitted request
    /// takes on average to leave, at least a second.
    pub fn retry_after(&self) -> Duration {
        let requests = self.backlog_requests.load(Ordering::Relaxed).max(1) as f64;
        Duration::from_secs_f64((self.backlog_seconds() / requests).ceil().clamp(1.0, 3600.0))
    }

    pub fn workers_alive(&self) -> usize {
        self.workers_alive.load(Ordering::SeqCst)
    }

    pub(crate) fn worker_started(&self) {
        self.workers_alive.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn worker_stopped(&self) {
        self.workers_alive.fetch_sub(1, Ordering::SeqCst);
    }
}
