//! The engine: a queue of pass sets. It admits work (failing fast past capacity), batches
//! the passes of concurrent jobs of one model, runs them on a pool of workers and returns
//! scores. It knows nothing of methods, targets, heads, maps or images: the service layer
//! decides what the passes are, and each job's `cam::Readout` what a head output means.
//!
//! Threading: one scheduler thread owns every job and the queue (no locks on the hot path);
//! each worker has a preparation thread (builds batch inputs) and an inference thread
//! (owns that worker's ONNX Runtime sessions), so building batch n+1 overlaps running batch
//! n. Callers talk to the scheduler through a channel and await a one-shot reply.

mod budget;
mod job;
mod ledger;
pub mod memory;
mod model;
mod scheduler;
pub mod stats;
mod worker;

pub use budget::Refusal;
pub use job::{CleanPass, Fault, JobTiming, PassCounts, PassObserver, PassScores, RunOptions, Scored};
pub use ledger::Demand;
pub use model::EngineModel;
pub use stats::EngineStats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cam::{PassSet, Readout};
use crate::model::ModelPackage;
use crate::runtime::{RuntimeError, SessionConfig};
use job::{JobEntry, JobOutput, Work};
use scheduler::Command;

/// Engine sizing. Defaults suit a small CPU machine; see BENCHMARKS.md for tuning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Worker count; each owns its own sessions for every model (0 = one per core, see
    /// `Config::effective_engine`).
    pub workers: usize,
    pub session: SessionConfig,
    /// Most masked inputs in one forward pass.
    pub max_batch_size: usize,
    /// How long a partly filled batch may wait for other jobs' passes.
    pub max_batch_delay_ms: u64,
    /// Jobs whose passes are being scheduled at once.
    pub max_concurrent_jobs: usize,
    /// Jobs admitted but waiting for a running slot; past this, submissions fail fast.
    pub max_queued_jobs: usize,
    /// Cheap requests (predictions: one pass) admitted at once, beside the explanations;
    /// past this they fail fast too.
    pub max_priority_requests: usize,
    /// Pause before a dead worker is replaced (so a crash loop cannot spin).
    pub worker_restart_delay_ms: u64,
    /// Per-model settings that differ from the above, by model name.
    pub models: std::collections::BTreeMap<String, ModelOverride>,
}

/// What one model may set differently, e.g. a GPU provider with larger batches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOverride {
    pub provider: Option<crate::runtime::ProviderConfig>,
    pub max_batch_size: Option<usize>,
}

impl EngineConfig {
    /// The provider configuration of a model: its override, else the engine's.
    pub fn provider_for(&self, model: &str) -> &crate::runtime::ProviderConfig {
        self.models.get(model).and_then(|o| o.provider.as_ref()).unwrap_or(&self.session.provider)
    }

    /// The largest batch of a model running on `provider`: its override; else, on the CPU,
    /// the batch size measured for it when its package was made (`measured`, model.toml's
    /// `[engine] max_batch_size`); else the engine's.
    pub fn batch_of(&self, model: &str, measured: Option<usize>, provider: crate::runtime::ProviderKind) -> usize {
        let own = self.models.get(model).and_then(|o| o.max_batch_size);
        let measured = measured.filter(|_| provider == crate::runtime::ProviderKind::Cpu);
        own.or(measured).unwrap_or(self.max_batch_size).max(1)
    }

    /// Whether a model's runs treat subnormal floats as zero: the configured
    /// `session.flush_denormals`, else what its package measured (model.toml `[engine]`).
    pub fn flush_of(&self, measured: Option<&crate::model::MeasuredEngine>) -> bool {
        self.session.flush_denormals.unwrap_or(measured.is_some_and(|e| e.flush_denormals))
    }

    /// A package as the engine will run it: its provider chosen (failing when a required
    /// one is missing), its session settings and batch size fixed.
    pub fn engine_model(&self, package: Arc<ModelPackage>) -> Result<Arc<EngineModel>, RuntimeError> {
        let provider_config = self.provider_for(&package.name).clone();
        let provider = provider_config.select()?;
        let measured = package.manifest.engine.as_ref();
        let flush = self.flush_of(measured);
        let session = SessionConfig { provider: provider_config, flush_denormals: Some(flush), ..self.session.clone() };
        let batch = self.batch_of(&package.name, measured.and_then(|e| e.max_batch_size), provider);
        Ok(Arc::new(EngineModel::new(package, provider, session, batch)))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            session: SessionConfig::default(),
            max_batch_size: 4,
            max_batch_delay_ms: 2,
            max_concurrent_jobs: 8,
            max_queued_jobs: 32,
            max_priority_requests: 256,
            worker_restart_delay_ms: 1000,
            models: Default::default(),
        }
    }
}

/// Why a job did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the server is at capacity ({capacity} jobs admitted); retry shortly")]
    Overloaded { capacity: usize, retry_after: Duration },
    /// The request cannot finish before its deadline behind the work admitted.
    #[error(
        "the request cannot finish before its deadline: {} requests are ahead of it with about {} s \
         of work, and it needs about {} s",
        .0.ahead_jobs, .0.ahead.as_secs(), .0.own.as_secs()
    )]
    Refused(Refusal),
    #[error("the deadline passed before the work finished")]
    DeadlineExceeded,
    #[error("the request was cancelled")]
    Cancelled,
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("model `{model}` failed at run time: {message}")]
    Runtime { model: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// The running engine. Cheap to share behind an `Arc`.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    admitted: Arc<AtomicUsize>,
    /// Priority admissions, counted apart so predictions are not refused because
    /// explanations fill the queue.
    admitted_priority: Arc<AtomicUsize>,
    draining: AtomicBool,
    next_id: AtomicUsize,
    scheduler: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Starts the scheduler and the workers; each worker opens and warms `models` before
    /// this returns (so "started" means "ready" for them). Models added later are opened
    /// by each worker on their first batch.
    pub fn start(mut config: EngineConfig, models: &[Arc<EngineModel>]) -> Result<Self, RuntimeError> {
        config.workers = config.workers.max(1);
        let stats = Arc::new(EngineStats::new());
        let (tx, rx) = mpsc::channel();
        let events_tx = tx.clone();
        let events: worker::Events = Arc::new(move |e| events_tx.send(Command::Worker(e)).is_ok());
        let restart = Duration::from_millis(config.worker_restart_delay_ms);
        let pool = worker::Pool::start(config.workers, models, restart, events, stats.clone())?;
        let scheduler = scheduler::Scheduler::new(config.clone(), pool, stats.clone());
        let handle = std::thread::Builder::new()
            .name("scorecam-scheduler".into())
            .spawn(move || scheduler.run(rx))
            .map_err(|e| RuntimeError::Worker(format!("could not start the scheduler: {e}")))?;
        Ok(Self {
            commands: tx,
            config,
            stats,
            admitted: Arc::new(AtomicUsize::new(0)),
            admitted_priority: Arc::new(AtomicUsize::new(0)),
            draining: AtomicBool::new(false),
            next_id: AtomicUsize::new(1),
            scheduler: std::sync::Mutex::new(Some(handle)),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// Ready: not draining and every worker alive.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && self.stats.workers_alive() == self.config.workers
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::SeqCst) + self.admitted_priority.load(Ordering::SeqCst)
    }

    /// Stops admitting new work and waits up to `grace` for admitted work to finish;
    /// returns whether it all did.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        let until = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.in_flight() == 0
    }

    /// Drains (up to `grace`), then stops the scheduler and workers.
    pub async fn shutdown(&self, grace: Duration) {
        self.drain(grace).await;
        let _ = self.commands.send(Command::Shutdown);
        let handle = self.scheduler.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Takes an admission slot for one request's jobs (fail fast past capacity rather than
    /// queue without bound), then asks the scheduler whether it can finish before its
    /// deadline behind the work already admitted (refused at once when not). The slot is
    /// freed when the admission drops.
    pub async fn admit(&self, model: &Arc<EngineModel>, demand: Demand) -> Result<Admission<'_>, EngineError> {
        let mut admission = self.take_slot(model, &self.admitted, self.capacity(), false, &demand)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let command = Command::Admit { id: admission.id, model: model.clone(), demand, reply };
        self.commands.send(command).map_err(|_| EngineError::ShuttingDown)?;
        admission.in_ledger = true;
        match answer.await {
            Ok(Ok(())) => Ok(admission),
            Ok(Err(refusal)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(EngineError::Refused(refusal))
            }
            Err(_) => Err(EngineError::ShuttingDown),
        }
    }

    /// Requests `admit` takes at once (running and queued) before it refuses.
    pub fn capacity(&self) -> usize {
        self.config.max_concurrent_jobs + self.config.max_queued_jobs
    }

    /// An admission for a cheap request (a clean pass: predictions, inference): its jobs
    /// skip the explanations' queue and run on the next free worker, so they answer in
    /// about one batch's time under any load. It has its own capacity.
    pub fn admit_priority(&self, model: &Arc<EngineModel>) -> Result<Admission<'_>, EngineError> {
        let demand = Demand::default();
        self.take_slot(model, &self.admitted_priority, self.config.max_priority_requests, true, &demand)
    }

    fn take_slot(
        &self,
        model: &Arc<EngineModel>,
        counter: &Arc<AtomicUsize>,
        capacity: usize,
        priority: bool,
        demand: &Demand,
    ) -> Result<Admission<'_>, EngineError> {
        if self.is_draining() {
            return Err(EngineError::ShuttingDown);
        }
        let admitted = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let now = Instant::now();
        let admission = Admission {
            engine: self,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key: demand.key(now),
            in_ledger: false,
            model: model.clone(),
            submitted: AtomicBool::new(false),
            priority,
            _slot: Slot(counter.clone()),
        };
        if admitted > capacity.max(1) {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(EngineError::Overloaded { capacity, retry_after: self.stats.retry_after() });
        }
        Ok(admission)
    }
}

/// One admitted request: its jobs run on one model, and every job after the first goes
/// ahead of requests still waiting for their first.
pub struct Admission<'e> {
    engine: &'e Engine,
    /// Its number in the scheduler's ledger.
    id: usize,
    /// Its place in the order of jobs (earliest deadline first).
    key: Instant,
    /// Whether the scheduler holds a ledger entry to release.
    in_ledger: bool,
    model: Arc<EngineModel>,
    submitted: AtomicBool,
    priority: bool,
    _slot: Slot,
}

impl Admission<'_> {
    /// The clean pass of one preprocessed image (C×H×W): its features and logits.
    pub async fn clean(&self, input: Arc<[f32]>, options: &RunOptions) -> Result<CleanPass, EngineError> {
        let [c, h, w] = self.model.package.info.input_chw;
        if input.len() != c * h * w {
            return Err(EngineError::Internal(format!(
                "input has {} values, model `{}` takes {}",
                input.len(),
                self.model.name(),
                c * h * w
            )));
        }
        match self.submit(input, Work::Clean, options).await? {
            (JobOutput::Clean { features, logits }, _, timing) => Ok(CleanPass { features, logits, timing }),
            _ => Err(EngineError::Internal("a clean job returned scores".into())),
        }
    }

    /// Every pass of `passes` on `input`, each read by `readout` (its targets' scores).
    pub async fn score(
        &self,
        input: Arc<[f32]>,
        passes: Arc<dyn PassSet>,
        readout: Arc<Readout>,
        options: &RunOptions,
    ) -> Result<Scored, EngineError> {
        if passes.is_empty() {
            // Nothing to run (EigenCAM's plan): no job, no queueing.
            let scores = vec![PassScores::default(); readout.len()];
            return Ok(Scored { scores, done: None, counts: PassCounts::default(), timing: JobTiming::default() });
        }
        match self.submit(input, Work::Score { passes, readout }, options).await? {
            (JobOutput::Scored { scores, done }, counts, timing) => Ok(Scored { scores, done, counts, timing }),
            _ => Err(EngineError::Internal("a score job returned a clean pass".into())),
        }
    }

    /// Hands a job to the scheduler and waits for its output.
    async fn submit(
        &self,
        input: Arc<[f32]>,
        work: Work,
        options: &RunOptions,
    ) -> Result<(JobOutput, PassCounts, JobTiming), EngineError> {
        let engine = self.engine;
        let id = engine.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, receive) = tokio::sync::oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let entry = JobEntry {
            id,
            admission: self.id,
            key: self.key,
            model: self.model.clone(),
            input,
            work,
            options: options.clone(),
            follow_up: self.submitted.swap(true, Ordering::SeqCst),
            priority: self.priority,
            reply,
            cancelled: cancelled.clone(),
            submitted: Instant::now(),
        };
        engine.commands.send(Command::Submit(Box::new(entry))).map_err(|_| EngineError::ShuttingDown)?;
        // If this future is dropped (client gone), the guard tells the scheduler to drop the
        // job's remaining passes.
        let mut cancel = CancelGuard { id, cancelled, commands: engine.commands.clone(), armed: true };
        let result = receive.await.map_err(|_| EngineError::ShuttingDown)?;
        cancel.armed = false;
        result
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.in_ledger {
            let _ = self.engine.commands.send(Command::Release(self.id));
        }
    }
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct CancelGuard {
    id: usize,
    cancelled: Arc<AtomicBool>,
    commands: mpsc::Sender<Command>,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.cancelled.store(true, Ordering::SeqCst);
            let _ = self.commands.send(Command::Cancel(self.id));
        }
    }
}
