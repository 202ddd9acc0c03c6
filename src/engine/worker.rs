//! Workers: each has a preparation thread that builds batch tensors and an inference
//! thread that owns its ONNX Runtime sessions. Sessions are opened per model the first
//! time a worker sees it (models come and go while the server runs) and dropped once the
//! model is gone and no job holds it.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::job::Fault;
use super::model::EngineModel;
use super::stats::EngineStats;
use crate::cam::{Graph, PassSet, Readout};
use crate::runtime::{ModelSessions, RuntimeError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchKind {
    /// Clean images: features and logits are wanted.
    Clean,
    /// Inputs built from pass sets: only the target classes' scores are wanted.
    Passes,
}

/// One job's share of a batch.
pub(crate) struct Segment {
    pub job: usize,
    pub input: Arc<[f32]>,
    pub passes_set: Option<Arc<dyn PassSet>>,
    /// How a pass's head output becomes its targets' scores (pass batches only).
    pub readout: Option<Arc<Readout>>,
    pub passes: Range<usize>,
    pub fault: Option<Fault>,
}

pub(crate) struct Batch {
    /// The scheduler's number for it (batches on the urgent lane complete out of order).
    pub seq: u64,
    pub model: Arc<EngineModel>,
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
    Scored {
        scores: Vec<Vec<(f32, f32)>>,
    },
}

pub(crate) struct BatchResult {
    pub worker: usize,
    pub batch: Batch,
    /// How long the inference thread took to run it (the engine's measured rate).
    pub elapsed: Duration,
    /// The whole batch failed, or each segment's own outcome.
    pub outcome: Result<Vec<Result<SegmentOutput, String>>, String>,
}

/// What workers tell the scheduler.
pub(crate) enum WorkerEvent {
    Done(Box<BatchResult>),
    /// A worker's inference thread ended; its in-flight batches are lost.
    Exited(usize),
    /// A replacement worker is ready.
    Ready(usize, WorkerHandle),
    /// A worker opened a model and timed one full batch of it: the rate admission uses
    /// until pass batches are measured (so a burst at a cold server is admitted by time,
    /// not by capacity alone).
    Timed {
        model: u64,
        passes: usize,
        elapsed: Duration,
    },
}

/// Where workers send their events (the scheduler's queue); a closure, so this file
/// needs nothing from the scheduler.
pub(crate) type Events = Arc<dyn Fn(WorkerEvent) -> bool + Send + Sync>;

/// What a worker's inference thread takes its batches from: one prepared batch from its
/// preparation thread, and urgent batches (cheap requests' clean passes) that the
/// scheduler hands over directly, so they run next instead of behind prepared work.
/// (Generic over the batch only so that its ordering can be tested without a model.)
pub(crate) struct Lanes<B = Batch> {
    state: Mutex<LaneState<B>>,
    changed: Condvar,
}

struct LaneState<B> {
    prepared: Option<(B, Vec<f32>)>,
    urgent: VecDeque<B>,
    /// The preparation thread has ended: no more prepared batches will come.
    no_more_prepared: bool,
    /// The inference thread has ended: nothing will be taken any more.
    closed: bool,
}

impl<B> Default for Lanes<B> {
    fn default() -> Self {
        let state = LaneState { prepared: None, urgent: VecDeque::new(), no_more_prepared: false, closed: false };
        Self { state: Mutex::new(state), changed: Condvar::new() }
    }
}

impl<B> Lanes<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState<B>> {
        // A panic never happens while the lock is held (the critical sections only move
        // values), but a poisoned lock must not take the worker down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands over a prepared batch, waiting while the previous one is still untaken (the
    /// depth of one that bounds memory); gives it back if the inference thread is gone.
    fn put_prepared(&self, batch: B, tensor: Vec<f32>) -> Result<(), B> {
        let mut state = self.lock();
        while state.prepared.is_some() && !state.closed {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.closed {
            return Err(batch);
        }
        state.prepared = Some((batch, tensor));
        self.changed.notify_all();
        Ok(())
    }

    /// Queues an urgent batch; gives it back if the inference thread is gone.
    pub fn put_urgent(&self, batch: B) -> Result<(), B> {
        let mut state = self.lock();
        if state.closed {
            return Err(batch);
        }
        state.urgent.push_back(batch);
        self.changed.notify_all();
        Ok(())
    }

    /// The next batch to run, urgent ones first: `(batch, Some(tensor))` when prepared,
    /// `(batch, None)` when urgent (its tensor is still to build). `None` once the
    /// preparation thread has ended and nothing urgent is left.
    fn take(&self) -> Option<(B, Option<Vec<f32>>)> {
        let mut state = self.lock();
        loop {
            if let Some(batch) = state.urgent.pop_front() {
                return Some((batch, None));
            }
            if let Some((batch, tensor)) = state.prepared.take() {
                self.changed.notify_all();
                return Some((batch, Some(tensor)));
            }
            if state.no_more_prepared || state.closed {
                return None;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn end_prepared(&self) {
        self.lock().no_more_prepared = true;
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// How the scheduler reaches one worker: batches to prepare, and the urgent lane.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    batches: mpsc::Sender<Batch>,
    lanes: Arc<Lanes>,
}

/// Handles to the workers; a dead worker's slot is empty until its replacement is ready.
pub(crate) struct Pool {
    senders: Vec<Option<WorkerHandle>>,
    template: WorkerSetup,
    restart_delay: Duration,
}

#[derive(Clone)]
struct WorkerSetup {
    id: usize,
    /// Models to open and warm before the worker reports ready.
    warm: Vec<Arc<EngineModel>>,
    events: Events,
    stats: Arc<EngineStats>,
}

impl Pool {
    /// Starts every worker and waits until each has opened and warmed `models`.
    pub fn start(
        workers: usize,
        models: &[Arc<EngineModel>],
        restart_delay: Duration,
        events: Events,
        stats: Arc<EngineStats>,
    ) -> Result<Self, RuntimeError> {
        let mut template = WorkerSetup { id: 0, warm: models.to_vec(), events, stats };
        let senders = (0..workers.max(1))
            .map(|id| start_worker(WorkerSetup { id, ..template.clone() }).map(Some))
            .collect::<Result<_, _>>()?;
        // Replacements open models as batches need them: the start-up set may be gone.
        template.warm.clear();
        Ok(Self { senders, template, restart_delay })
    }

    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    pub fn is_live(&self, worker: usize) -> bool {
        self.senders[worker].is_some()
    }

    /// Hands a batch to a worker, to prepare and run in order or (`urgent`) to run next;
    /// gives it back if that worker is gone.
    pub fn send(&self, worker: usize, batch: Batch, urgent: bool) -> Result<(), Batch> {
        match &self.senders[worker] {
            Some(h) if urgent => h.lanes.put_urgent(batch),
            Some(h) => h.batches.send(batch).map_err(|e| e.0),
            None => Err(batch),
        }
    }

    /// Forgets a dead worker and starts its replacement in the background (after a delay,
    /// so a worker that dies at once cannot spin); the scheduler hears `Ready`.
    pub fn replace(&mut self, worker: usize) {
        self.senders[worker] = None;
        let setup = WorkerSetup { id: worker, ..self.template.clone() };
        let delay = self.restart_delay;
        let spawned = std::thread::Builder::new().name(format!("scorecam-restart-{worker}")).spawn(move || {
            std::thread::sleep(delay);
            let events = setup.events.clone();
            match start_worker(setup) {
                Ok(tx) => {
                    events(WorkerEvent::Ready(worker, tx));
                }
                Err(e) => {
                    tracing::error!(worker, error = %e, "could not restart worker");
                    events(WorkerEvent::Exited(worker));
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(worker, error = %e, "could not start the restart thread");
        }
    }

    pub fn revive(&mut self, worker: usize, handle: WorkerHandle) {
        self.senders[worker] = Some(handle);
    }
}

/// Starts one worker and waits until its start-up models are open and warm.
fn start_worker(setup: WorkerSetup) -> Result<WorkerHandle, RuntimeError> {
    let id = setup.id;
    let (tx, rx) = mpsc::channel::<Batch>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let lanes = Arc::new(Lanes::default());
    spawn_worker(setup, rx, lanes.clone(), ready_tx)?;
    ready_rx.recv().map_err(|_| RuntimeError::Worker(format!("worker {id} exited during start-up")))??;
    Ok(WorkerHandle { batches: tx, lanes })
}

fn spawn_worker(
    setup: WorkerSetup,
    batches: mpsc::Receiver<Batch>,
    lanes: Arc<Lanes>,
    ready: mpsc::Sender<Result<(), RuntimeError>>,
) -> Result<(), RuntimeError> {
    // Used tensors go back to the preparation thread: a batch tensor is megabytes, and a
    // fresh allocation each batch costs page faults that the inference threads pay for.
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<f32>>();
    let spawn_err = |e: std::io::Error| RuntimeError::Worker(format!("could not start a worker thread: {e}"));
    let prep_lanes = lanes.clone();
    // The preparation thread builds at most one batch ahead of inference (the lane holds
    // one), which bounds memory to two batch tensors per worker.
    std::thread::Builder::new()
        .name(format!("scorecam-prep-{}", setup.id))
        .spawn(move || {
            for batch in batches {
                let mut tensor = recycle_rx.try_recv().unwrap_or_default();
                build_tensor(&batch, &mut tensor);
                if prep_lanes.put_prepared(batch, tensor).is_err() {
                    break;
                }
            }
            prep_lanes.end_prepared();
        })
        .map_err(spawn_err)?;
    std::thread::Builder::new()
        .name(format!("scorecam-infer-{}", setup.id))
        .spawn(move || inference_loop(setup, lanes, recycle_tx, ready))
        .map_err(spawn_err)?;
    Ok(())
}

/// Stacks a batch's inputs into `tensor` (reusing its allocation): clean images copied,
/// the others built from their pass sets.
fn build_tensor(batch: &Batch, tensor: &mut Vec<f32>) {
    let [c, h, w] = batch.model.package.info.input_chw;
    let per = match (batch.kind, batch.segments.first().and_then(|s| s.passes_set.as_ref())) {
        (BatchKind::Passes, Some(set)) => set.pass_len(),
        _ => c * h * w,
    };
    tensor.clear();
    tensor.resize(batch.len() * per, 0.0);
    let mut offset = 0;
    for seg in &batch.segments {
        let n = seg.passes.len();
        let out = &mut tensor[offset * per..(offset + n) * per];
        match (&seg.passes_set, batch.kind) {
            (Some(set), BatchKind::Passes) => set.fill_batch(&seg.input, seg.passes.clone(), out),
            _ => out.copy_from_slice(&seg.input),
        }
        offset += n;
    }
}

/// One model's sessions in one worker, and the model they belong to (weakly: when the
/// model is unloaded and no job holds it, the sessions are closed).
struct Open {
    model: Weak<EngineModel>,
    sessions: ModelSessions,
}

fn inference_loop(
    setup: WorkerSetup,
    lanes: Arc<Lanes>,
    recycle: mpsc::Sender<Vec<f32>>,
    ready: mpsc::Sender<Result<(), RuntimeError>>,
) {
    // However this thread ends, nothing more is taken from the lanes: the preparation
    // thread and the scheduler's urgent hand-offs must fail rather than wait.
    let _close = CloseLanes(lanes.clone());
    let mut open: HashMap<u64, Open> = HashMap::new();
    for model in &setup.warm {
        match open_and_warm(model, &setup.events) {
            Ok(s) => {
                open.insert(model.id, Open { model: Arc::downgrade(model), sessions: s });
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    setup.stats.worker_started();
    let _alive = AliveGuard { id: setup.id, stats: setup.stats.clone(), events: setup.events.clone() };
    let _ = ready.send(Ok(()));
    while let Some((batch, prepared)) = lanes.take() {
        // Only a prepared batch's tensor goes back to the preparation thread, which takes
        // one per batch it builds: an urgent batch's is dropped, or the spares would pile
        // up without bound under a stream of predictions.
        let recyclable = prepared.is_some();
        let tensor = prepared.unwrap_or_else(|| {
            let mut t = Vec::new();
            build_tensor(&batch, &mut t);
            t
        });
        if batch.segments.iter().any(|s| s.fault == Some(Fault::KillWorker)) {
            tracing::error!(worker = setup.id, "worker stopping (injected fault)");
            return;
        }
        open.retain(|_, o| o.model.strong_count() > 0);
        let opened = match open.entry(batch.model.id) {
            std::collections::hash_map::Entry::Occupied(o) => Ok(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => match open_and_warm(&batch.model, &setup.events) {
                Ok(sessions) => Ok(v.insert(Open { model: Arc::downgrade(&batch.model), sessions })),
                Err(e) => Err(e.to_string()),
            },
        };
        // Timed apart from opening the sessions: the rate is the batch's, not the set-up's.
        let started = Instant::now();
        let outcome = opened.and_then(|o| run_contained(&mut o.sessions, &batch, &tensor));
        let elapsed = started.elapsed();
        // The preparation thread may be gone (shutdown); the tensor is then just dropped.
        if recyclable {
            let _ = recycle.send(tensor);
        }
        let result = BatchResult { worker: setup.id, batch, outcome, elapsed };
        if !(setup.events)(WorkerEvent::Done(Box::new(result))) {
            break;
        }
    }
}

struct CloseLanes(Arc<Lanes>);

impl Drop for CloseLanes {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Counts the worker as alive while its inference thread runs, and tells the scheduler
/// when it ends, however it ends.
struct AliveGuard {
    id: usize,
    stats: Arc<EngineStats>,
    events: Events,
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.stats.worker_stopped();
        (self.events)(WorkerEvent::Exited(self.id));
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
                    seq: batch.seq,
                    model: batch.model.clone(),
                    kind: batch.kind,
                    graph: batch.graph,
                    segments: vec![Segment {
                        job: seg.job,
                        input: seg.input.clone(),
                        passes_set: seg.passes_set.clone(),
                        readout: seg.readout.clone(),
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

fn open_and_warm(model: &EngineModel, events: &Events) -> Result<ModelSessions, RuntimeError> {
    let started = Instant::now();
    let package = &model.package;
    let mut s = ModelSessions::open(
        &package.extractor,
        &package.head,
        package.session_shapes(),
        &model.session,
        model.provider,
    )?;
    // Warm-up: the first run allocates arenas and picks kernels; do it before real work,
    // at the batch size pass batches use, then time a second run of that batch.
    let [c, h, w] = package.info.input_chw;
    let batch = vec![0.0; model.max_batch * c * h * w];
    s.model_output(&batch, model.max_batch)?;
    let timed = Instant::now();
    s.model_output(&batch, model.max_batch)?;
    events(WorkerEvent::Timed { model: model.id, passes: model.max_batch, elapsed: timed.elapsed() });
    tracing::debug!(model = %package.name, ms = started.elapsed().as_millis() as u64, "sessions opened");
    Ok(s)
}

fn run_batch(sessions: &mut ModelSessions, batch: &Batch, tensor: &[f32]) -> Result<Vec<SegmentOutput>, String> {
    // Injected in pass batches, which mix jobs, so the isolation of the others is tested.
    if batch.kind == BatchKind::Passes && batch.segments.iter().any(|s| s.fault == Some(Fault::Panic)) {
        panic!("injected fault");
    }
    let n = batch.len();
    match batch.kind {
        BatchKind::Clean => {
            let features = sessions.features(tensor, n).map_err(|e| e.to_string())?;
            let logits = sessions.head_output(&features, n).map_err(|e| e.to_string())?;
            let (fper, lper) = (features.len() / n, logits.len() / n);
            Ok((0..batch.segments.len())
                .map(|i| SegmentOutput::Clean {
                    features: features[i * fper..(i + 1) * fper].to_vec(),
                    logits: logits[i * lper..(i + 1) * lper].to_vec(),
                })
                .collect())
        }
        BatchKind::Passes => {
            let outputs = match batch.graph {
                Graph::Full => sessions.model_output(tensor, n),
                Graph::Head => sessions.head_output(tensor, n),
            }
            .map_err(|e| e.to_string())?;
            let per = outputs.len() / n;
            let mut rows = outputs.chunks_exact(per);
            batch.segments.iter().map(|seg| read_segment(seg, &mut rows)).collect()
        }
    }
}

/// One segment's scores: its rows of the batch's head outputs, each read by its readout.
fn read_segment<'a>(seg: &Segment, rows: &mut impl Iterator<Item = &'a [f32]>) -> Result<SegmentOutput, String> {
    let readout = seg.readout.as_ref().ok_or("a pass segment without a readout")?;
    Ok(SegmentOutput::Scored { scores: rows.take(seg.passes.len()).map(|row| readout.read(row)).collect() })
}

#[cfg(test)]
mod tests {
    use super::Lanes;

    #[test]
    fn urgent_batches_go_before_the_prepared_one_and_a_closed_lane_refuses_work() {
        let lanes: Lanes<&str> = Lanes::default();
        lanes.put_prepared("prepared", vec![1.0]).unwrap();
        lanes.put_urgent("urgent 1").unwrap();
        lanes.put_urgent("urgent 2").unwrap();
        assert_eq!(lanes.take(), Some(("urgent 1", None)));
        assert_eq!(lanes.take(), Some(("urgent 2", None)));
        assert_eq!(lanes.take(), Some(("prepared", Some(vec![1.0]))));
        lanes.end_prepared();
        assert_eq!(lanes.take(), None, "nothing left once the preparation thread ended");
        lanes.close();
        assert_eq!(lanes.put_urgent("late"), Err("late"));
        assert_eq!(lanes.put_prepared("late", Vec::new()), Err("late"));
    }
}
