//! The scheduler thread: owns every job, forms batches across jobs (round-robin, so a
//! small job is not stuck behind a large one), scatters results back, enforces deadlines.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::job::{JobEntry, JobKind, JobOutput, RawExplanation, RunStats, Stage, StageTimings, TargetSpec, top_k};
use super::stats::EngineStats;
use super::worker::{Batch, BatchKind, BatchResult, Pool, Segment, SegmentOutput};
use super::{EngineConfig, EngineError};
use crate::cam::faithfulness::MetricPlan;
use crate::cam::{Activations, Graph, MaskPlan, PassSet, TargetScores};
use crate::model::ModelRegistry;

/// How long the engine must stay idle before it trims the heap.
const TRIM_AFTER_IDLE: Duration = Duration::from_secs(1);

pub(crate) enum Command {
    Submit(Box<JobEntry>),
    Cancel(usize),
    Done(Box<BatchResult>),
    /// A worker's inference thread ended; its in-flight batches are lost.
    WorkerExited(usize),
    /// A replacement worker is ready.
    WorkerReady(usize, mpsc::Sender<super::worker::Batch>),
    Shutdown,
}

/// Batches in flight per worker: one running, one being prepared.
const WORKER_DEPTH: usize = 2;

enum State {
    /// Waiting for (or in) the clean pass.
    Clean {
        dispatched: bool,
    },
    Masked(Box<MaskedState>),
}

/// Most head-only passes in one batch: they are cheap, so batches are larger than the
/// model's image batches (a 1280×7×7 input is 250 KB; 64 of them stay small).
const HEAD_BATCH: usize = 64;

struct MaskedState {
    passes: Arc<dyn PassSet>,
    /// The explanation's plan, to combine maps from; `None` for a `Score` job.
    plan: Option<Arc<MaskPlan>>,
    targets: Arc<[usize]>,
    clean_logits: Vec<f32>,
    next: usize,
    done: usize,
    scores: Vec<TargetScores>,
}

struct Active {
    entry: Box<JobEntry>,
    state: State,
    /// When the job's currently pending passes became available.
    pending_since: Instant,
    stats: RunStats,
    timings: StageTimings,
    masked_started: Option<Instant>,
}

impl Active {
    fn graph(&self) -> Graph {
        match &self.state {
            State::Clean { .. } => Graph::Full,
            State::Masked(m) => m.passes.graph(),
        }
    }

    fn pending(&self) -> usize {
        match &self.state {
            State::Clean { dispatched } => usize::from(!dispatched),
            State::Masked(m) => m.passes.len() - m.next,
        }
    }
}

pub(crate) struct Scheduler {
    registry: ModelRegistry,
    config: EngineConfig,
    pool: Pool,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Box<JobEntry>>,
    jobs: HashMap<usize, Active>,
    /// Round-robin order of running jobs.
    order: VecDeque<usize>,
    /// Per worker, the jobs of each batch sent and not yet answered (oldest first).
    in_flight: Vec<VecDeque<Vec<usize>>>,
    shutting_down: bool,
}

impl Scheduler {
    pub fn new(registry: ModelRegistry, config: EngineConfig, pool: Pool, stats: Arc<EngineStats>) -> Self {
        let in_flight = vec![VecDeque::new(); pool.workers()];
        Self {
            registry,
            config,
            pool,
            stats,
            waiting: VecDeque::new(),
            jobs: HashMap::new(),
            order: VecDeque::new(),
            in_flight,
            shutting_down: false,
        }
    }

    pub fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut wake = Duration::from_millis(100);
        // When the engine last went idle after work, until its memory is trimmed.
        let mut idle_since: Option<Instant> = None;
        let mut busy = false;
        loop {
            let first = match commands.recv_timeout(wake) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut shutdown = false;
            for cmd in first.into_iter().chain(std::iter::from_fn(|| commands.try_recv().ok())) {
                match cmd {
                    Command::Submit(entry) => {
                        self.stats.queued_jobs.fetch_add(1, Ordering::Relaxed);
                        self.waiting.push_back(entry);
                    }
                    Command::Cancel(id) => self.cancel(id),
                    Command::Done(result) => self.complete(*result),
                    Command::WorkerExited(worker) => self.worker_exited(worker),
                    Command::WorkerReady(worker, sender) => {
                        tracing::info!(worker, "replacement worker ready");
                        self.pool.revive(worker, sender);
                    }
                    Command::Shutdown => shutdown = true,
                }
            }
            if shutdown {
                self.shutting_down = true;
                break;
            }
            let now = Instant::now();
            self.expire(now);
            self.promote(now);
            wake = self.dispatch(now);
            // Idle for a while after work: give the burst's freed memory back to the OS.
            // Not at once: malloc_trim takes milliseconds, and between back-to-back
            // requests (a /predict client) it would sit in every request's path.
            let idle = self.jobs.is_empty() && self.waiting.is_empty();
            if !idle {
                busy = true;
                idle_since = None;
            } else if busy {
                busy = false;
                idle_since = Some(now);
            }
            if let Some(t) = idle_since {
                let waited = now.duration_since(t);
                if waited >= TRIM_AFTER_IDLE {
                    super::memory::release_free_memory();
                    idle_since = None;
                } else {
                    wake = wake.min(TRIM_AFTER_IDLE - waited);
                }
            }
        }
        for entry in self.waiting.drain(..) {
            let _ = entry.reply.send(Err(EngineError::ShuttingDown));
        }
        for (_, job) in self.jobs.drain() {
            let _ = job.entry.reply.send(Err(EngineError::ShuttingDown));
        }
    }

    fn worker_exited(&mut self, worker: usize) {
        if self.shutting_down {
            return;
        }
        tracing::error!(worker, "worker died; failing its in-flight batches and replacing it");
        let lost: Vec<usize> = self.in_flight[worker].drain(..).flatten().collect();
        for job in lost {
            self.fail(job, EngineError::Internal(format!("worker {worker} died while running this job")));
        }
        self.pool.replace(worker);
    }

    fn cancel(&mut self, id: usize) {
        let mut found = false;
        if let Some(pos) = self.waiting.iter().position(|e| e.id == id) {
            self.waiting.remove(pos);
            self.stats.queued_jobs.fetch_sub(1, Ordering::Relaxed);
            found = true;
        }
        if let Some(job) = self.remove(id) {
            let _ = job.entry.reply.send(Err(EngineError::Cancelled));
            found = true;
        }
        if found {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&mut self, id: usize) -> Option<Active> {
        let job = self.jobs.remove(&id)?;
        self.order.retain(|j| *j != id);
        self.stats.running_jobs.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }

    fn fail(&mut self, id: usize, error: EngineError) {
        if let Some(job) = self.remove(id) {
            let _ = job.entry.reply.send(Err(error));
        }
    }

    fn expire(&mut self, now: Instant) {
        let past = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let expired: Vec<usize> =
            self.jobs.values().filter(|j| past(j.entry.request.deadline)).map(|j| j.entry.id).collect();
        for id in expired {
            self.fail(id, EngineError::DeadlineExceeded);
        }
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for entry in self.waiting.drain(..) {
            if past(entry.request.deadline) {
                self.stats.queued_jobs.fetch_sub(1, Ordering::Relaxed);
                let _ = entry.reply.send(Err(EngineError::DeadlineExceeded));
            } else {
                kept.push_back(entry);
            }
        }
        self.waiting = kept;
    }

    fn promote(&mut self, now: Instant) {
        while self.jobs.len() < self.config.max_concurrent_jobs.max(1) {
            let Some(entry) = self.waiting.pop_front() else {
                break;
            };
            self.stats.queued_jobs.fetch_sub(1, Ordering::Relaxed);
            if entry.cancelled.load(Ordering::SeqCst) {
                continue;
            }
            self.stats.running_jobs.fetch_add(1, Ordering::Relaxed);
            let id = entry.id;
            let timings = StageTimings { queue_ms: ms(now - entry.submitted), ..Default::default() };
            let state = match &entry.request.kind {
                JobKind::Score { passes, targets, clean_logits } => {
                    if let Some(p) = &entry.request.progress {
                        p.set_stage(Stage::Metrics);
                    }
                    let scores = empty_scores(targets, clean_logits, passes.len());
                    State::Masked(Box::new(MaskedState {
                        passes: passes.clone(),
                        plan: None,
                        targets: targets.clone(),
                        clean_logits: clean_logits.clone(),
                        next: 0,
                        done: 0,
                        scores,
                    }))
                }
                _ => State::Clean { dispatched: false },
            };
            let active =
                Active { entry, state, pending_since: now, stats: RunStats::default(), timings, masked_started: None };
            self.jobs.insert(id, active);
            self.order.push_back(id);
            self.finish_if_done(id);
        }
    }

    /// Sends batches to workers with free slots; returns how long to sleep before the
    /// next look (a held, partly filled batch or a deadline may need it sooner).
    fn dispatch(&mut self, now: Instant) -> Duration {
        let delay = Duration::from_millis(self.config.max_batch_delay_ms);
        let mut wake = Duration::from_millis(100);
        if let Some(d) = self.jobs.values().filter_map(|j| j.entry.request.deadline).min() {
            wake = wake.min(d.saturating_duration_since(now));
        }
        while let Some(worker) =
            (0..self.in_flight.len()).filter(|w| self.pool.is_live(*w)).min_by_key(|w| self.in_flight[*w].len())
        {
            if self.in_flight[worker].len() >= WORKER_DEPTH {
                break;
            }
            let Some((batch, oldest)) = self.form_batch() else {
                break;
            };
            if batch.len() < self.batch_limit(batch.model, batch.graph) && now.duration_since(oldest) < delay {
                // Hold a partial batch briefly so other jobs' passes can join it.
                self.unform(&batch);
                wake = wake.min(delay - now.duration_since(oldest));
                break;
            }
            self.stats.batch_size.observe(batch.len() as f64);
            for seg in &batch.segments {
                if let Some(job) = self.jobs.get_mut(&seg.job) {
                    job.stats.batch_size = job.stats.batch_size.max(batch.len());
                    match (&job.entry.request.kind, batch.graph) {
                        (JobKind::Score { .. }, _) => job.stats.metric_passes += seg.passes.len(),
                        (_, Graph::Head) => job.stats.head_passes += seg.passes.len(),
                        (_, Graph::Full) => job.stats.forward_passes += seg.passes.len(),
                    }
                    if batch.kind == BatchKind::Masked && job.masked_started.is_none() {
                        job.masked_started = Some(now);
                    }
                }
            }
            self.in_flight[worker].push_back(batch.segments.iter().map(|s| s.job).collect());
            if let Err(batch) = self.pool.send(worker, batch) {
                self.in_flight[worker].pop_back();
                for seg in &batch.segments {
                    self.fail(seg.job, EngineError::Internal(format!("worker {worker} is not running")));
                }
                break;
            }
        }
        wake
    }

    /// Picks the next batch: clean passes first (they gate everything else), then masked
    /// passes shared round-robin among the jobs of one model. Marks the passes taken.
    fn batch_limit(&self, model: usize, graph: Graph) -> usize {
        let images = self.config.batch_for(&self.registry.all()[model].name);
        match graph {
            Graph::Full => images,
            Graph::Head => images.max(HEAD_BATCH),
        }
    }

    fn form_batch(&mut self) -> Option<(Batch, Instant)> {
        let first_clean =
            self.order.iter().find(|id| matches!(self.jobs[id].state, State::Clean { dispatched: false }));
        if let Some(&first) = first_clean {
            let model = self.jobs[&first].entry.model;
            let max = self.batch_limit(model, Graph::Full);
            let ids: Vec<usize> = self
                .order
                .iter()
                .copied()
                .filter(|id| {
                    let j = &self.jobs[id];
                    j.entry.model == model && matches!(j.state, State::Clean { dispatched: false })
                })
                .take(max)
                .collect();
            let mut oldest = Instant::now();
            let segments = ids
                .iter()
                .map(|id| {
                    let job = self.jobs.get_mut(id).expect("listed job exists");
                    job.state = State::Clean { dispatched: true };
                    if let Some(p) = &job.entry.request.progress {
                        p.set_stage(Stage::Features);
                    }
                    oldest = oldest.min(job.pending_since);
                    Segment {
                        job: *id,
                        input: job.entry.request.input.clone(),
                        plan: None,
                        targets: Arc::from([]),
                        passes: 0..1,
                        fault: job.entry.request.fault,
                    }
                })
                .collect();
            return Some((Batch { model, kind: BatchKind::Clean, graph: Graph::Full, segments }, oldest));
        }
        let first = *self.order.iter().find(|id| self.jobs[id].pending() > 0)?;
        let model = self.jobs[&first].entry.model;
        // A batch runs one graph: image passes and head-only passes never mix.
        let graph = self.jobs[&first].graph();
        let max = self.batch_limit(model, graph);
        // Rotate so the next batch starts with the next job: round-robin across batches too.
        let start = self.order.iter().position(|id| *id == first).unwrap_or(0);
        self.order.rotate_left(start);
        let mut candidates: Vec<(usize, usize)> = self
            .order
            .iter()
            .filter(|id| self.jobs[id].entry.model == model && self.jobs[id].graph() == graph)
            .map(|id| (*id, self.jobs[id].pending()))
            .filter(|(_, p)| *p > 0)
            .collect();
        // Deal slots one at a time round the jobs until the batch is full.
        let mut take = vec![0usize; candidates.len()];
        let mut left = max;
        while left > 0 {
            let mut progressed = false;
            for (i, (_, pending)) in candidates.iter_mut().enumerate() {
                if left > 0 && *pending > 0 {
                    *pending -= 1;
                    take[i] += 1;
                    left -= 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        self.order.rotate_left(1.min(self.order.len()));
        let mut oldest = Instant::now();
        let mut segments = Vec::new();
        for ((id, _), n) in candidates.drain(..).zip(take) {
            if n == 0 {
                continue;
            }
            let job = self.jobs.get_mut(&id).expect("listed job exists");
            oldest = oldest.min(job.pending_since);
            let State::Masked(m) = &mut job.state else {
                continue;
            };
            let passes = m.next..m.next + n;
            m.next += n;
            segments.push(Segment {
                job: id,
                input: job.entry.request.input.clone(),
                plan: Some(m.passes.clone()),
                targets: m.targets.clone(),
                passes,
                fault: job.entry.request.fault,
            });
        }
        Some((Batch { model, kind: BatchKind::Masked, graph, segments }, oldest))
    }

    /// Gives a held batch's passes back to their jobs (they are always the latest taken).
    fn unform(&mut self, batch: &Batch) {
        for seg in &batch.segments {
            if let Some(job) = self.jobs.get_mut(&seg.job) {
                match &mut job.state {
                    State::Clean { dispatched } => *dispatched = false,
                    State::Masked(m) => m.next = seg.passes.start,
                }
            }
        }
    }

    fn complete(&mut self, result: BatchResult) {
        self.in_flight[result.worker].pop_front();
        let model_name = self.registry.all()[result.batch.model].name.clone();
        let kind = result.batch.kind;
        let passes = result.batch.len() as u64;
        match (kind, result.batch.graph) {
            (BatchKind::Clean, _) => self.stats.clean_passes.fetch_add(passes, Ordering::Relaxed),
            (BatchKind::Masked, Graph::Full) => self.stats.masked_passes.fetch_add(passes, Ordering::Relaxed),
            (BatchKind::Masked, Graph::Head) => self.stats.head_passes.fetch_add(passes, Ordering::Relaxed),
        };
        let outputs = match result.outcome {
            Ok(outputs) => outputs,
            Err(message) => {
                tracing::error!(model = %model_name, %message, "batch failed");
                if let Ok(mut f) = self.stats.model_failures.lock() {
                    f.push((model_name.clone(), message.clone()));
                }
                for seg in &result.batch.segments {
                    self.fail(seg.job, EngineError::Runtime { model: model_name.clone(), message: message.clone() });
                }
                return;
            }
        };
        for (seg, output) in result.batch.segments.iter().zip(outputs) {
            if !self.jobs.contains_key(&seg.job) {
                continue; // cancelled or expired meanwhile
            }
            let output = match output {
                Ok(o) => o,
                Err(message) => {
                    tracing::error!(model = %model_name, job = seg.job, %message, "job failed");
                    self.fail(seg.job, EngineError::Runtime { model: model_name.clone(), message });
                    continue;
                }
            };
            match output {
                SegmentOutput::Clean { features, logits } => self.clean_done(seg.job, features, logits, result.elapsed),
                SegmentOutput::Masked { scores } => self.masked_done(seg.job, seg.passes.start, scores),
            }
        }
    }

    fn clean_done(&mut self, id: usize, features: Vec<f32>, logits: Vec<f32>, elapsed: Duration) {
        let model = self.registry.all()[self.jobs[&id].entry.model].clone();
        let job = self.jobs.get_mut(&id).expect("checked by caller");
        job.timings.features_ms = ms(elapsed);
        let JobKind::Explain { method, targets, metrics } = job.entry.request.kind.clone() else {
            let job = self.remove(id).expect("present");
            let _ = job.entry.reply.send(Ok(JobOutput::Predicted { logits }));
            return;
        };
        let targets: Vec<usize> = match targets {
            TargetSpec::Classes(c) => c,
            TargetSpec::TopK(k) => top_k(&logits, k.max(1)),
        };
        let [k, fh, fw] = model.info.feature_khw;
        let [c, h, w] = model.info.input_chw;
        let plan = Arc::new(MaskPlan::new(&method, Activations::new(k, fh, fw, features), [c, h, w]));
        job.stats.skipped_channels = plan.skipped_channels();
        self.stats.skipped_channels.fetch_add(plan.skipped_channels() as u64, Ordering::Relaxed);
        job.stats.shared_mask_channels = plan.shared_mask_channels();
        self.stats.shared_mask_channels.fetch_add(plan.shared_mask_channels() as u64, Ordering::Relaxed);
        if let Some(p) = &job.entry.request.progress {
            let metric_passes = if metrics { MetricPlan::pass_count(targets.len()) } else { 0 };
            p.set_total(plan.len() + metric_passes);
            p.set_stage(Stage::Masked);
        }
        let scores = empty_scores(&targets, &logits, plan.len());
        job.pending_since = Instant::now();
        job.state = State::Masked(Box::new(MaskedState {
            passes: plan.clone(),
            plan: Some(plan),
            targets: targets.into(),
            clean_logits: logits,
            next: 0,
            done: 0,
            scores,
        }));
        self.finish_if_done(id);
    }

    fn masked_done(&mut self, id: usize, start: usize, scores: Vec<Vec<(f32, f32)>>) {
        let job = self.jobs.get_mut(&id).expect("checked by caller");
        let State::Masked(m) = &mut job.state else {
            return;
        };
        for (i, per_target) in scores.iter().enumerate() {
            for (ts, (z, p)) in m.scores.iter_mut().zip(per_target) {
                ts.logits[start + i] = *z;
                ts.probs[start + i] = *p;
            }
        }
        m.done += scores.len();
        if let Some(p) = &job.entry.request.progress {
            p.add(scores.len());
        }
        self.finish_if_done(id);
    }

    fn finish_if_done(&mut self, id: usize) {
        let done = matches!(&self.jobs[&id].state, State::Masked(m) if m.done == m.passes.len());
        if !done {
            return;
        }
        let mut job = self.remove(id).expect("present");
        let State::Masked(m) = job.state else { unreachable!("checked above") };
        job.timings.masked_ms = job.masked_started.map(|t| ms(t.elapsed())).unwrap_or(0.0);
        let output = match m.plan {
            Some(plan) => JobOutput::Explained(Box::new(RawExplanation {
                clean_logits: m.clean_logits,
                targets: m.targets.to_vec(),
                plan,
                scores: m.scores,
                stats: job.stats,
                timings: job.timings,
            })),
            None => JobOutput::Scored { scores: m.scores, stats: job.stats },
        };
        let _ = job.entry.reply.send(Ok(output));
    }
}

/// Per target, room for every pass's score.
fn empty_scores(targets: &[usize], clean_logits: &[f32], passes: usize) -> Vec<TargetScores> {
    targets
        .iter()
        .map(|&t| TargetScores { clean_logit: clean_logits[t], logits: vec![0.0; passes], probs: vec![0.0; passes] })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
