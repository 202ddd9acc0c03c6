//! What a caller submits to the queue, what it gets back, and the scheduler's record of a
//! job. A job is one unit of passes over one input: the clean pass, or a pass set.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::EngineError;
use super::model::EngineModel;
use crate::cam::{PassSet, Readout};

/// What a job asks the workers to run.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    /// Extractor then head on the input: its features and logits.
    Clean,
    /// Every pass of a set, each pass's head output read by the readout (its targets).
    Score { passes: Arc<dyn PassSet>, readout: Arc<Readout> },
}

/// Told as a job's passes run, from the scheduler thread (keep it cheap: it holds up every
/// job's dispatch; the service's observer only counts and copies under one short lock).
pub trait PassObserver: Send + Sync {
    /// The job's first batch was dispatched.
    fn started(&self);
    /// `n` more of the job's passes have been scored.
    fn passes_done(&self, n: usize);
    /// The scores of passes `start..start + scores.len()` (per pass, per target: logit and
    /// probability), for observers that show results as they come.
    fn scored(&self, _start: usize, _scores: &[Vec<(f32, f32)>]) {}
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

/// How a job runs, apart from what it runs.
#[derive(Clone, Default)]
pub struct RunOptions {
    pub deadline: Option<Instant>,
    /// At the deadline, answer a pass-set job with the passes scored so far (`Scored::done`)
    /// instead of failing it.
    pub partial_at_deadline: bool,
    pub observer: Option<Arc<dyn PassObserver>>,
    pub fault: Option<Fault>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("deadline", &self.deadline)
            .field("partial_at_deadline", &self.partial_at_deadline)
            .field("observer", &self.observer.is_some())
            .field("fault", &self.fault)
            .finish()
    }
}

/// The clean pass of one image.
#[derive(Clone, Debug)]
pub struct CleanPass {
    /// The target layer's activations in the canonical K×h×w layout.
    pub features: Vec<f32>,
    pub logits: Vec<f32>,
    pub timing: JobTiming,
}

/// One target class's scores over a pass set, in pass order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassScores {
    pub logits: Vec<f32>,
    /// Softmax probability of the class on each pass.
    pub probs: Vec<f32>,
}

/// A scored pass set.
#[derive(Clone, Debug)]
pub struct Scored {
    /// Per target, in the order asked.
    pub scores: Vec<PassScores>,
    /// Which passes were scored, when the deadline cut the job short (`None`: all; the
    /// scores of the others are 0).
    pub done: Option<Vec<bool>>,
    pub counts: PassCounts,
    pub timing: JobTiming,
}

/// The passes a job ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassCounts {
    /// Through extractor and head.
    pub full: usize,
    /// Through the head alone.
    pub head: usize,
    /// The largest batch any of them ran in.
    pub batch_size: usize,
}

/// Where a job's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JobTiming {
    /// Submission to its first batch being dispatched.
    pub queued: Duration,
    /// First batch dispatched to last result.
    pub running: Duration,
}

pub(crate) enum JobOutput {
    Clean { features: Vec<f32>, logits: Vec<f32> },
    Scored { scores: Vec<PassScores>, done: Option<Vec<bool>> },
}

pub(crate) type Reply = oneshot::Sender<Result<(JobOutput, PassCounts, JobTiming), EngineError>>;

/// A submitted job as the scheduler receives it.
pub(crate) struct JobEntry {
    pub id: usize,
    /// The admission (request) it belongs to: the ledger's key.
    pub admission: usize,
    /// Its place in the order: earliest first (the request's deadline, or a distant one).
    pub key: Instant,
    pub model: Arc<EngineModel>,
    pub input: Arc<[f32]>,
    pub work: Work,
    pub options: RunOptions,
    /// A later job of an admitted request: it goes ahead of new requests in the queue.
    pub follow_up: bool,
    /// A cheap request's job: it skips the queue and its clean pass runs next on a worker.
    pub priority: bool,
    pub reply: Reply,
    pub cancelled: Arc<AtomicBool>,
    pub submitted: Instant,
}
