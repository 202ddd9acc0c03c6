//! Jobs, the scheduler, the worker pool: runs explanations' passes in batches that are
//! filled across concurrent jobs.
//!
//! Threading: one scheduler thread owns every job and the queue (no locks on the hot path);
//! each worker has a preparation thread (builds masked batches) and an inference thread
//! (owns that worker's ONNX Runtime sessions), so building batch n+1 overlaps running batch
//! n. Callers talk to the scheduler through a channel and await a one-shot reply.

mod job;
pub mod memory;
mod scheduler;
pub mod stats;
mod worker;

pub use job::{ExplainOutcome, Fault, JobKind, JobRequest, Progress, RunStats, Stage, StageTimings, TargetSpec, top_k};
pub use stats::EngineStats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cam::faithfulness::{Faithfulness, MetricPlan};
use crate::cam::{self, Saliency};
use crate::model::ModelRegistry;
use crate::runtime::{ProviderKind, RuntimeError, SessionConfig};
use job::{JobEntry, JobOutput};
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

    /// The largest batch of a model: its override, else the engine's.
    pub fn batch_for(&self, model: &str) -> usize {
        self.models.get(model).and_then(|o| o.max_batch_size).unwrap_or(self.max_batch_size).max(1)
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
            worker_restart_delay_ms: 1000,
            models: Default::default(),
        }
    }
}

/// Why a job did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the server is at capacity ({0} jobs admitted); retry shortly")]
    Overloaded(usize),
    #[error("the deadline passed before the explanation finished")]
    DeadlineExceeded,
    #[error("the request was cancelled")]
    Cancelled,
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("target class {class} is out of range: the model has {classes} classes (0..{classes})")]
    InvalidTarget { class: usize, classes: usize },
    #[error("invalid method parameters: {0}")]
    InvalidMethod(String),
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    #[error("model `{model}` failed at run time: {message}")]
    Runtime { model: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// The running engine. Cheap to share behind an `Arc`.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    registry: ModelRegistry,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    admitted: Arc<AtomicUsize>,
    draining: AtomicBool,
    next_id: AtomicUsize,
    providers: Vec<ProviderKind>,
    scheduler: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Starts the scheduler and the workers, opens every model's sessions in every worker
    /// and runs one warm-up batch per model before returning (so "started" means "ready").
    pub fn start(registry: ModelRegistry, mut config: EngineConfig) -> Result<Self, RuntimeError> {
        config.workers = config.workers.max(1);
        for name in config.models.keys().filter(|n| registry.get(n).is_err()) {
            tracing::warn!(model = %name, "engine.models has settings for a model that is not loaded");
        }
        let providers =
            registry.all().iter().map(|m| config.provider_for(&m.name).select()).collect::<Result<Vec<_>, _>>()?;
        let stats = Arc::new(EngineStats::new(config.workers));
        let (tx, rx) = mpsc::channel();
        let pool = worker::Pool::start(&registry, &config, &providers, tx.clone(), stats.clone())?;
        let scheduler = scheduler::Scheduler::new(registry.clone(), config.clone(), pool, stats.clone());
        let handle = std::thread::Builder::new()
            .name("scorecam-scheduler".into())
            .spawn(move || scheduler.run(rx))
            .map_err(|e| RuntimeError::Worker(format!("could not start the scheduler: {e}")))?;
        Ok(Self {
            commands: tx,
            registry,
            config,
            stats,
            admitted: Arc::new(AtomicUsize::new(0)),
            draining: AtomicBool::new(false),
            next_id: AtomicUsize::new(1),
            providers,
            scheduler: std::sync::Mutex::new(Some(handle)),
        })
    }

    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// The execution provider each model's sessions use, in registry order.
    pub fn provider(&self, model_index: usize) -> ProviderKind {
        self.providers[model_index]
    }

    /// Ready: not draining and every worker alive.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && self.stats.workers_alive() == self.config.workers
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Jobs admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// Stops admitting new work; in-flight jobs carry on.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Waits (up to `grace`) for in-flight jobs, then stops the scheduler and workers.
    pub async fn shutdown(&self, grace: Duration) {
        self.begin_drain();
        let until = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.commands.send(Command::Shutdown);
        let handle = self.scheduler.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Runs the clean pass only: the logits of one preprocessed image.
    pub async fn predict(&self, model: &str, input: Vec<f32>) -> Result<Vec<f32>, EngineError> {
        let request = JobRequest::predict(model, input);
        let _admission = self.admit(&request)?;
        match self.submit(request).await? {
            JobOutput::Predicted { logits } => Ok(logits),
            _ => Err(EngineError::Internal("predict job returned another kind of output".into())),
        }
    }

    /// Runs a whole explanation: clean pass, the method's passes, the map of every target,
    /// then (when asked) the faithfulness passes, all under one admission.
    pub async fn explain(&self, request: JobRequest) -> Result<ExplainOutcome, EngineError> {
        let started = Instant::now();
        let _admission = self.admit(&request)?;
        let follow_up = request.clone();
        let wants_metrics = matches!(request.kind, JobKind::Explain { metrics: true, .. });
        let JobOutput::Explained(raw) = self.submit(request).await? else {
            return Err(EngineError::Internal("explain job returned another kind of output".into()));
        };
        // Combining reads every pass's score and upsamples: CPU work, off the async threads.
        let combined = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let maps: Vec<Saliency> = raw.scores.iter().map(|s| cam::combine(&raw.plan, s)).collect();
            (raw, maps, t.elapsed())
        })
        .await
        .map_err(|e| EngineError::Internal(format!("combining the map failed: {e}")))?;
        let (raw, maps, combine_time) = combined;
        let mut timings = raw.timings;
        timings.combine_ms = combine_time.as_secs_f64() * 1e3;
        let mut stats = raw.stats;
        let metrics = if wants_metrics {
            let t = Instant::now();
            let inputs = maps.iter().map(|m| m.input.data.clone()).collect();
            let (figures, metric_stats) = self.faithfulness(follow_up, inputs, &raw.clean_logits, &raw.targets).await?;
            stats.metric_passes = metric_stats.metric_passes;
            timings.metrics_ms = t.elapsed().as_secs_f64() * 1e3;
            Some(figures)
        } else {
            None
        };
        timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
        self.stats.observe_timings(&timings);
        Ok(ExplainOutcome { logits: raw.clean_logits, targets: raw.targets, maps, metrics, stats, timings })
    }

    /// Faithfulness of given maps (one per target, at the model's input resolution) for an
    /// image whose clean logits are known: the metric passes, batched like any others. The
    /// caller must hold an admission (`explain` does; so does [`Engine::evaluate_maps`]).
    async fn faithfulness(
        &self,
        mut request: JobRequest,
        maps: Vec<Vec<f32>>,
        clean_logits: &[f32],
        targets: &[usize],
    ) -> Result<(Vec<Faithfulness>, RunStats), EngineError> {
        let model = self.registry.get(&request.model).map_err(|_| EngineError::UnknownModel(request.model.clone()))?;
        let plan = Arc::new(MetricPlan::new(maps, model.info.input_chw));
        request.kind =
            JobKind::Score { passes: plan.clone(), targets: targets.into(), clean_logits: clean_logits.to_vec() };
        let JobOutput::Scored { scores, stats } = self.submit(request).await? else {
            return Err(EngineError::Internal("score job returned another kind of output".into()));
        };
        let probs = cam::softmax(clean_logits);
        let figures = scores.iter().enumerate().map(|(i, s)| plan.evaluate(i, s, probs[targets[i]])).collect();
        Ok((figures, stats))
    }

    /// Faithfulness of maps that came from elsewhere (baselines, other tools): `maps[i]`
    /// explains `targets[i]` of the preprocessed `input`.
    pub async fn evaluate_maps(
        &self,
        model: &str,
        input: Vec<f32>,
        maps: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<(Vec<Faithfulness>, RunStats), EngineError> {
        let request = JobRequest::predict(model, input);
        let _admission = self.admit(&request)?;
        let JobOutput::Predicted { logits } = self.submit(request.clone()).await? else {
            return Err(EngineError::Internal("predict job returned another kind of output".into()));
        };
        if let Some(&class) = targets.iter().find(|&&t| t >= logits.len()) {
            return Err(EngineError::InvalidTarget { class, classes: logits.len() });
        }
        self.faithfulness(request, maps, &logits, targets).await
    }

    /// Checks a request against its model and takes an admission slot (fail fast past
    /// capacity rather than queue without bound); the slot is freed when the guard drops.
    fn admit(&self, request: &JobRequest) -> Result<AdmissionGuard, EngineError> {
        if self.is_draining() {
            return Err(EngineError::ShuttingDown);
        }
        let model_index =
            self.registry.index_of(&request.model).ok_or_else(|| EngineError::UnknownModel(request.model.clone()))?;
        let model = &self.registry.all()[model_index];
        let [c, h, w] = model.info.input_chw;
        if request.input.len() != c * h * w {
            return Err(EngineError::Internal(format!(
                "input has {} values, model `{}` takes {}",
                request.input.len(),
                model.name,
                c * h * w
            )));
        }
        if let JobKind::Explain { targets, method, .. } = &request.kind {
            // Bounds first: a plan is sized by the method's parameters.
            method.check(model.info.feature_khw[0]).map_err(EngineError::InvalidMethod)?;
            if let TargetSpec::Classes(classes) = targets
                && let Some(&class) = classes.iter().find(|&&c| c >= model.info.classes)
            {
                return Err(EngineError::InvalidTarget { class, classes: model.info.classes });
            }
        }
        let capacity = self.config.max_concurrent_jobs + self.config.max_queued_jobs;
        let admitted = self.admitted.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = AdmissionGuard(self.admitted.clone());
        if admitted > capacity {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(EngineError::Overloaded(capacity));
        }
        Ok(guard)
    }

    /// Hands a job to the scheduler and waits for its output.
    async fn submit(&self, request: JobRequest) -> Result<JobOutput, EngineError> {
        let model_index =
            self.registry.index_of(&request.model).ok_or_else(|| EngineError::UnknownModel(request.model.clone()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, receive) = tokio::sync::oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let entry = JobEntry::new(id, model_index, request, reply, cancelled.clone());
        self.commands.send(Command::Submit(Box::new(entry))).map_err(|_| EngineError::ShuttingDown)?;
        // If this future is dropped (client gone), the guard tells the scheduler to drop the
        // job's remaining passes.
        let mut cancel = CancelGuard { id, cancelled, commands: self.commands.clone(), armed: true };
        let result = receive.await.map_err(|_| EngineError::ShuttingDown)?;
        cancel.armed = false;
        result
    }
}

struct AdmissionGuard(Arc<AtomicUsize>);

impl Drop for AdmissionGuard {
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
