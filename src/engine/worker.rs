//! Workers: each has a preparation thread that builds batch tensors and an inference
//! thread that owns its ONNX Runtime sessions.

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::EngineConfig;
use super::job::Fault;
use super::scheduler::Command;
use super::stats::EngineStats;
use crate::cam::{Graph, PassSet, class_scores};
use crate::model::ModelRegistry;
use crate::runtime::{ModelSessions, ProviderKind, RuntimeError, SessionConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchKind {
    /// Clean images: features and logits are wanted.
    Clean,
    /// Masked inputs built from a plan: only the target classes' scores are wanted.
    Masked,
}

/// One job's share of a batch.
pub(crate) struct Segment {
    pub job: usize,
    pub input: Arc<[f32]>,
    pub plan: Option<Arc<dyn PassSet>>,
    pub targets: Arc<[usize]>,
    pub passes: Range<usize>,
    pub fault: Option<Fault>,
}

pub(crate) struct Batch {
    pub model: usize,
    pub kind: BatchKind,
    /// Which graph the batch runs through (all its segments agree).
    pub graph: Graph,
    pub segments: Vec<Segment>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.passes.len()).sum()
    }
}

pub(crate) enum SegmentOutput {
    Clean {
        features: Vec<f32>,
        logits: Vec<f32>,
    },
    /// Per pass, per target: (logit, probability).
    Masked {
        scores: Vec<Vec<(f32, f32)>>,
    },
}

pub(crate) struct BatchResult {
    pub worker: usize,
    pub batch: Batch,
    /// The whole batch failed, or each segment's own outcome.
    pub outcome: Result<Vec<Result<SegmentOutput, String>>, String>,
    pub elapsed: Duration,
}

/// Handles to the workers' preparation threads; a dead worker's slot is empty until its
/// replacement is ready.
pub(crate) struct Pool {
    senders: Vec<Option<mpsc::Sender<Batch>>>,
    template: WorkerSetup,
    restart_delay: Duration,
}

impl Pool {
    /// Starts every worker and waits until each has opened and warmed its sessions.
    pub fn start(
        registry: &ModelRegistry,
        config: &EngineConfig,
        providers: &[ProviderKind],
        results: mpsc::Sender<Command>,
        stats: Arc<EngineStats>,
    ) -> Result<Self, RuntimeError> {
        let template = WorkerSetup {
            id: 0,
            registry: registry.clone(),
            session: config.session.clone(),
            providers: providers.to_vec(),
            model_providers: config
                .models
                .iter()
                .filter_map(|(name, o)| o.provider.clone().map(|p| (name.clone(), p)))
                .collect(),
            results,
            stats,
        };
        let senders = (0..config.workers.max(1))
            .map(|id| start_worker(template.with_id(id)).map(Some))
            .collect::<Result<_, _>>()?;
        Ok(Self { senders, template, restart_delay: Duration::from_millis(config.worker_restart_delay_ms) })
    }

    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    pub fn is_live(&self, worker: usize) -> bool {
        self.senders[worker].is_some()
    }

    /// Hands a batch to a worker; gives it back if that worker is gone.
    pub fn send(&self, worker: usize, batch: Batch) -> Result<(), Batch> {
        match &self.senders[worker] {
            Some(tx) => tx.send(batch).map_err(|e| e.0),
            None => Err(batch),
        }
    }

    /// Forgets a dead worker and starts its replacement in the background (after a delay,
    /// so a worker that dies at once cannot spin); the scheduler hears `WorkerReady`.
    pub fn replace(&mut self, worker: usize) {
        self.senders[worker] = None;
        let setup = self.template.with_id(worker);
        let delay = self.restart_delay;
        let spawned = std::thread::Builder::new().name(format!("scorecam-restart-{worker}")).spawn(move || {
            std::thread::sleep(delay);
            let results = setup.results.clone();
            match start_worker(setup) {
                Ok(tx) => {
                    let _ = results.send(Command::WorkerReady(worker, tx));
                }
                Err(e) => {
                    tracing::error!(worker, error = %e, "could not restart worker");
                    let _ = results.send(Command::WorkerExited(worker));
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(worker, error = %e, "could not start the restart thread");
        }
    }

    pub fn revive(&mut self, worker: usize, sender: mpsc::Sender<Batch>) {
        self.senders[worker] = Some(sender);
    }
}

/// Starts one worker and waits until its sessions are open and warm.
fn start_worker(setup: WorkerSetup) -> Result<mpsc::Sender<Batch>, RuntimeError> {
    let id = setup.id;
    let (tx, rx) = mpsc::channel::<Batch>();
    let (ready_tx, ready_rx) = mpsc::channel();
    spawn_worker(setup, rx, ready_tx)?;
    ready_rx.recv().map_err(|_| RuntimeError::Worker(format!("worker {id} exited during start-up")))??;
    Ok(tx)
}

impl WorkerSetup {
    fn with_id(&self, id: usize) -> Self {
        Self {
            id,
            registry: self.registry.clone(),
            session: self.session.clone(),
            providers: self.providers.clone(),
            model_providers: self.model_providers.clone(),
            results: self.results.clone(),
            stats: self.stats.clone(),
        }
    }
}

struct WorkerSetup {
    id: usize,
    registry: ModelRegistry,
    session: SessionConfig,
    providers: Vec<ProviderKind>,
    model_providers: std::collections::BTreeMap<String, crate::runtime::ProviderConfig>,
    results: mpsc::Sender<Command>,
    stats: Arc<EngineStats>,
}

fn spawn_worker(
    setup: WorkerSetup,
    batches: mpsc::Receiver<Batch>,
    ready: mpsc::Sender<Result<(), RuntimeError>>,
) -> Result<(), RuntimeError> {
    // Depth 1: the preparation thread builds at most one batch ahead of inference, which
    // bounds memory to two batch tensors per worker.
    let (prepared_tx, prepared_rx) = mpsc::sync_channel::<(Batch, Vec<f32>)>(1);
    let registry = setup.registry.clone();
    let spawn_err = |e: std::io::Error| RuntimeError::Worker(format!("could not start a worker thread: {e}"));
    std::thread::Builder::new()
        .name(format!("scorecam-prep-{}", setup.id))
        .spawn(move || {
            for batch in batches {
                let tensor = build_tensor(&registry, &batch);
                if prepared_tx.send((batch, tensor)).is_err() {
                    break;
                }
            }
        })
        .map_err(spawn_err)?;
    std::thread::Builder::new()
        .name(format!("scorecam-infer-{}", setup.id))
        .spawn(move || inference_loop(setup, prepared_rx, ready))
        .map_err(spawn_err)?;
    Ok(())
}

/// Stacks a batch's inputs: clean images copied, masked ones built from their plans.
fn build_tensor(registry: &ModelRegistry, batch: &Batch) -> Vec<f32> {
    let [c, h, w] = registry.all()[batch.model].info.input_chw;
    let per = match (batch.kind, batch.segments.first().and_then(|s| s.plan.as_ref())) {
        (BatchKind::Masked, Some(plan)) => plan.pass_len(),
        _ => c * h * w,
    };
    let mut tensor = vec![0.0f32; batch.len() * per];
    let mut offset = 0;
    for seg in &batch.segments {
        let n = seg.passes.len();
        let out = &mut tensor[offset * per..(offset + n) * per];
        match (&seg.plan, batch.kind) {
            (Some(plan), BatchKind::Masked) => plan.fill_batch(&seg.input, seg.passes.clone(), out),
            _ => out.copy_from_slice(&seg.input),
        }
        offset += n;
    }
    tensor
}

fn inference_loop(
    setup: WorkerSetup,
    prepared: mpsc::Receiver<(Batch, Vec<f32>)>,
    ready: mpsc::Sender<Result<(), RuntimeError>>,
) {
    let mut sessions = match open_and_warm(&setup) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    setup.stats.worker_started();
    let _alive = AliveGuard { id: setup.id, stats: setup.stats.clone(), results: setup.results.clone() };
    let _ = ready.send(Ok(()));
    for (batch, tensor) in prepared {
        if batch.segments.iter().any(|s| s.fault == Some(Fault::KillWorker)) {
            tracing::error!(worker = setup.id, "worker stopping (injected fault)");
            return;
        }
        let started = Instant::now();
        let outcome = run_contained(&mut sessions[batch.model], &batch, &tensor);
        let result = BatchResult { worker: setup.id, batch, outcome, elapsed: started.elapsed() };
        if setup.results.send(Command::Done(Box::new(result))).is_err() {
            break;
        }
    }
}

/// Counts the worker as alive while its inference thread runs, and tells the scheduler
/// when it ends, however it ends.
struct AliveGuard {
    id: usize,
    stats: Arc<EngineStats>,
    results: mpsc::Sender<Command>,
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.stats.worker_stopped();
        let _ = self.results.send(Command::WorkerExited(self.id));
    }
}

/// Runs a batch with panics caught. When a batch of several jobs panics, each job's
/// segment is re-run alone, so only the job that panics fails.
fn run_contained(
    sessions: &mut ModelSessions,
    batch: &Batch,
    tensor: &[f32],
) -> Result<Vec<Result<SegmentOutput, String>>, String> {
    let attempt = |sessions: &mut ModelSessions, batch: &Batch, tensor: &[f32]| {
        std::panic::catch_unwind(AssertUnwindSafe(|| run_batch(sessions, batch, tensor)))
            .unwrap_or_else(|panic| Err(format!("worker panicked: {}", panic_message(&panic))))
    };
    match attempt(sessions, batch, tensor) {
        Ok(outputs) => Ok(outputs.into_iter().map(Ok).collect()),
        Err(e) if batch.segments.len() == 1 => Err(e),
        Err(_) => {
            let per = tensor.len() / batch.len().max(1);
            let mut offset = 0;
            let mut outputs = Vec::with_capacity(batch.segments.len());
            for seg in &batch.segments {
                let n = seg.passes.len();
                let alone = Batch {
                    model: batch.model,
                    kind: batch.kind,
                    graph: batch.graph,
                    segments: vec![Segment {
                        job: seg.job,
                        input: seg.input.clone(),
                        plan: seg.plan.clone(),
                        targets: seg.targets.clone(),
                        passes: seg.passes.clone(),
                        fault: seg.fault,
                    }],
                };
                let part = &tensor[offset * per..(offset + n) * per];
                outputs.push(attempt(sessions, &alone, part).map(|mut o| o.remove(0)));
                offset += n;
            }
            Ok(outputs)
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn open_and_warm(setup: &WorkerSetup) -> Result<Vec<ModelSessions>, RuntimeError> {
    setup
        .registry
        .all()
        .iter()
        .zip(&setup.providers)
        .map(|(model, provider)| {
            // The model's own provider settings (device id, memory limit) if it has any.
            let mut session = setup.session.clone();
            session.provider = setup.model_providers.get(&model.name).cloned().unwrap_or(session.provider);
            let mut s = ModelSessions::open(
                &model.extractor_path(),
                &model.head_path(),
                model.info.into(),
                &session,
                *provider,
            )?;
            // Warm-up: the first run allocates arenas and picks kernels; do it before ready.
            let [c, h, w] = model.info.input_chw;
            s.logits(&vec![0.0; c * h * w], 1)?;
            Ok(s)
        })
        .collect()
}

fn run_batch(sessions: &mut ModelSessions, batch: &Batch, tensor: &[f32]) -> Result<Vec<SegmentOutput>, String> {
    // Injected in masked batches, which mix jobs, so the isolation of the others is tested.
    if batch.kind == BatchKind::Masked && batch.segments.iter().any(|s| s.fault == Some(Fault::Panic)) {
        panic!("injected fault");
    }
    let n = batch.len();
    match batch.kind {
        BatchKind::Clean => {
            let features = sessions.features(tensor, n).map_err(|e| e.to_string())?;
            let logits = sessions.head_logits(&features, n).map_err(|e| e.to_string())?;
            let (fper, lper) = (features.len() / n, logits.len() / n);
            Ok(batch
                .segments
                .iter()
                .enumerate()
                .map(|(i, _)| SegmentOutput::Clean {
                    features: features[i * fper..(i + 1) * fper].to_vec(),
                    logits: logits[i * lper..(i + 1) * lper].to_vec(),
                })
                .collect())
        }
        BatchKind::Masked => {
            let logits = match batch.graph {
                Graph::Full => sessions.logits(tensor, n),
                Graph::Head => sessions.head_logits(tensor, n),
            }
            .map_err(|e| e.to_string())?;
            let per = logits.len() / n;
            let mut rows = logits.chunks_exact(per);
            Ok(batch
                .segments
                .iter()
                .map(|seg| SegmentOutput::Masked {
                    scores: rows.by_ref().take(seg.passes.len()).map(|row| class_scores(row, &seg.targets)).collect(),
                })
                .collect())
        }
    }
}
