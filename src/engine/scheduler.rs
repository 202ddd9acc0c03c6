//! The scheduler thread: owns every job and the queue, forms batches across jobs
//! (round-robin, so a small job is not stuck behind a large one), scatters results back,
//! enforces deadlines. It knows pass sets, not methods: what the passes mean is the
//! caller's business.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::job::{JobEntry, JobOutput, JobTiming, PassCounts, PassScores, Work};
use super::model::EngineModel;
use super::stats::EngineStats;
use super::worker::{Batch, BatchKind, BatchResult, Pool, Segment, SegmentOutput, WorkerEvent};
use super::{EngineConfig, EngineError};
use crate::cam::{Graph, PassSet, Readout};

/// How long the engine must stay idle before it trims the heap.
const TRIM_AFTER_IDLE: Duration = Duration::from_secs(1);
/// While work never stops (a dataset run, a saturated server), trim this often instead,
/// or the idle trim never comes. ONNX Runtime's arena keeps its own buffers (the fix for
/// the growth BENCHMARKS.md's "memory of long runs" traces); what is left to glibc is the
/// requests' own buffers of varying sizes (decoded photos, maps, PNGs), whose freed
/// pages would otherwise stay in its heaps.
const TRIM_WHILE_BUSY: Duration = Duration::from_secs(5);

/// Batches in flight per worker: one running, one being prepared.
const WORKER_DEPTH: usize = 2;

/// Most head-only passes in one batch: they are cheap, so batches are larger than the
/// model's image batches (a 1280×7×7 input is 250 KB; 64 of them stay small).
const HEAD_BATCH: usize = 64;

pub(crate) enum Command {
    Submit(Box<JobEntry>),
    Cancel(usize),
    Worker(WorkerEvent),
    Shutdown,
}

enum State {
    /// Waiting for (or in) the clean pass.
    Clean {
        dispatched: bool,
    },
    Passes(Box<PassState>),
}

struct PassState {
    passes: Arc<dyn PassSet>,
    readout: Arc<Readout>,
    next: usize,
    done: usize,
    /// Which passes are scored (batches of two workers finish out of order).
    scored: Vec<bool>,
    scores: Vec<PassScores>,
}

struct Active {
    entry: Box<JobEntry>,
    state: State,
    counts: PassCounts,
    started: Option<Instant>,
}

impl Active {
    fn graph(&self) -> Graph {
        match &self.state {
            State::Clean { .. } => Graph::Full,
            State::Passes(p) => p.passes.graph(),
        }
    }

    fn pending(&self) -> usize {
        match &self.state {
            State::Clean { dispatched } => usize::from(!dispatched),
            State::Passes(p) => p.passes.len() - p.next,
        }
    }

    fn timing(&self) -> JobTiming {
        let started = self.started.unwrap_or(self.entry.submitted);
        JobTiming { queued: started - self.entry.submitted, running: started.elapsed() }
    }
}

pub(crate) struct Scheduler {
    config: EngineConfig,
    pool: Pool,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Box<JobEntry>>,
    jobs: HashMap<usize, Active>,
    /// Round-robin order of running jobs.
    order: VecDeque<usize>,
    /// Per worker, each batch sent and not yet answered: its number and its jobs.
    in_flight: Vec<Vec<(u64, Vec<usize>)>>,
    next_batch: u64,
    shutting_down: bool,
}

impl Scheduler {
    pub fn new(config: EngineConfig, pool: Pool, stats: Arc<EngineStats>) -> Self {
        let in_flight = vec![Vec::new(); pool.workers()];
        Self {
            config,
            pool,
            stats,
            waiting: VecDeque::new(),
            jobs: HashMap::new(),
            order: VecDeque::new(),
            in_flight,
            next_batch: 0,
            shutting_down: false,
        }
    }

    pub fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut wake = Duration::from_millis(100);
        // When the engine last went idle after work, until its memory is trimmed.
        let mut idle_since: Option<Instant> = None;
        let mut busy = false;
        let mut last_trim = Instant::now();
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
                        // A follow-up of an admitted request already waited its turn.
                        if entry.follow_up {
                            self.waiting.push_front(entry);
                        } else {
                            self.waiting.push_back(entry);
                        }
                    }
                    Command::Cancel(id) => self.cancel(id),
                    Command::Worker(WorkerEvent::Done(result)) => self.complete(*result),
                    Command::Worker(WorkerEvent::Exited(worker)) => self.worker_exited(worker),
                    Command::Worker(WorkerEvent::Ready(worker, sender)) => {
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
            self.promote();
            wake = self.dispatch(now);
            // Idle for a while after work: give the burst's freed memory back to the OS.
            // Not at once: malloc_trim takes milliseconds, and between back-to-back
            // requests (a /predict client) it would sit in every request's path.
            let idle = self.jobs.is_empty() && self.waiting.is_empty();
            if !idle {
                busy = true;
                idle_since = None;
                if now.duration_since(last_trim) >= TRIM_WHILE_BUSY {
                    super::memory::release_free_memory();
                    last_trim = now;
                }
            } else if busy {
                busy = false;
                idle_since = Some(now);
            }
            if let Some(t) = idle_since {
                let waited = now.duration_since(t);
                if waited >= TRIM_AFTER_IDLE {
                    super::memory::release_free_memory();
                    last_trim = now;
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
        let lost: Vec<usize> = self.in_flight[worker].drain(..).flat_map(|(_, jobs)| jobs).collect();
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
            self.jobs.values().filter(|j| past(j.entry.options.deadline)).map(|j| j.entry.id).collect();
        for id in expired {
            let partial = self.jobs[&id].entry.options.partial_at_deadline;
            match self.remove(id) {
                Some(job) if partial && matches!(job.state, State::Passes(_)) => {
                    // What is scored so far is the answer; batches still in flight are
                    // dropped when they return (the job is gone).
                    let timing = job.timing();
                    let State::Passes(p) = job.state else { unreachable!("matched above") };
                    let output = JobOutput::Scored { scores: p.scores, done: Some(p.scored) };
                    let _ = job.entry.reply.send(Ok((output, job.counts, timing)));
                }
                Some(job) => {
                    let _ = job.entry.reply.send(Err(EngineError::DeadlineExceeded));
                }
                None => {}
            }
        }
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for entry in self.waiting.drain(..) {
            if past(entry.options.deadline) {
                self.stats.queued_jobs.fetch_sub(1, Ordering::Relaxed);
                let _ = entry.reply.send(Err(EngineError::DeadlineExceeded));
            } else {
                kept.push_back(entry);
            }
        }
        self.waiting = kept;
    }

    /// Moves waiting jobs into running slots: priority jobs (cheap requests, a pass or
    /// two each) at once, without taking a slot; the others while slots are free.
    fn promote(&mut self) {
        if self.waiting.iter().any(|e| e.priority) {
            let (urgent, rest): (VecDeque<_>, VecDeque<_>) = self.waiting.drain(..).partition(|e| e.priority);
            self.waiting = rest;
            urgent.into_iter().for_each(|e| self.activate(e));
        }
        let max = self.config.max_concurrent_jobs.max(1);
        while self.jobs.values().filter(|j| !j.entry.priority).count() < max {
            let Some(entry) = self.waiting.pop_front() else {
                break;
            };
            self.activate(entry);
        }
    }

    fn activate(&mut self, entry: Box<JobEntry>) {
        self.stats.queued_jobs.fetch_sub(1, Ordering::Relaxed);
        if entry.cancelled.load(Ordering::SeqCst) {
            return;
        }
        self.stats.running_jobs.fetch_add(1, Ordering::Relaxed);
        let id = entry.id;
        let state = match &entry.work {
            Work::Clean => State::Clean { dispatched: false },
            Work::Score { passes, readout } => State::Passes(Box::new(PassState {
                passes: passes.clone(),
                readout: readout.clone(),
                next: 0,
                done: 0,
                scored: vec![false; passes.len()],
                scores: readout
                    .targets()
                    .iter()
                    .map(|_| PassScores { logits: vec![0.0; passes.len()], probs: vec![0.0; passes.len()] })
                    .collect(),
            })),
        };
        self.jobs.insert(id, Active { entry, state, counts: PassCounts::default(), started: None });
        self.order.push_back(id);
        self.finish_if_done(id);
    }

    /// Sends batches to workers with free slots; returns how long to sleep before the
    /// next look (a held, partly filled batch or a deadline may need it sooner).
    fn dispatch(&mut self, now: Instant) -> Duration {
        let delay = Duration::from_millis(self.config.max_batch_delay_ms);
        let mut wake = Duration::from_millis(100);
        if let Some(d) = self.jobs.values().filter_map(|j| j.entry.options.deadline).min() {
            wake = wake.min(d.saturating_duration_since(now));
        }
        while let Some(worker) =
            (0..self.in_flight.len()).filter(|w| self.pool.is_live(*w)).min_by_key(|w| self.in_flight[*w].len())
        {
            // A worker with its slots full still takes urgent batches: they skip the queue.
            let urgent_only = self.in_flight[worker].len() >= WORKER_DEPTH;
            let Some((batch, oldest, urgent)) = self.form_batch(urgent_only) else {
                break;
            };
            if batch.len() < self.batch_limit(&batch.model, batch.graph) && now.duration_since(oldest) < delay {
                // Hold a partial batch briefly so other jobs' passes can join it.
                self.unform(&batch);
                wake = wake.min(delay - now.duration_since(oldest));
                break;
            }
            self.stats.batch_size.observe(batch.len() as f64);
            for seg in &batch.segments {
                if let Some(job) = self.jobs.get_mut(&seg.job) {
                    job.counts.batch_size = job.counts.batch_size.max(batch.len());
                    match batch.graph {
                        Graph::Head => job.counts.head += seg.passes.len(),
                        Graph::Full => job.counts.full += seg.passes.len(),
                    }
                    if job.started.is_none() {
                        job.started = Some(now);
                        if let Some(o) = &job.entry.options.observer {
                            o.started();
                        }
                    }
                }
            }
            self.in_flight[worker].push((batch.seq, batch.segments.iter().map(|s| s.job).collect()));
            if let Err(batch) = self.pool.send(worker, batch, urgent) {
                self.in_flight[worker].pop();
                for seg in &batch.segments {
                    self.fail(seg.job, EngineError::Internal(format!("worker {worker} is not running")));
                }
                break;
            }
        }
        wake
    }

    fn batch_limit(&self, model: &EngineModel, graph: Graph) -> usize {
        let images = model.max_batch;
        match graph {
            Graph::Full => images,
            Graph::Head => images.max(HEAD_BATCH),
        }
    }

    /// Picks the next batch and whether it is urgent: priority jobs' clean passes first
    /// (cheap requests), then other clean passes (they gate everything else), then pass
    /// sets shared round-robin among the jobs of one model. Marks the passes taken. With
    /// `urgent_only`, only an urgent batch or none.
    fn form_batch(&mut self, urgent_only: bool) -> Option<(Batch, Instant, bool)> {
        let seq = self.next_batch;
        self.next_batch += 1;
        let clean = |j: &Active| matches!(j.state, State::Clean { dispatched: false });
        let first_clean = self
            .order
            .iter()
            .find(|id| clean(&self.jobs[id]) && self.jobs[id].entry.priority)
            .or_else(|| self.order.iter().find(|id| !urgent_only && clean(&self.jobs[id])))
            .copied();
        match first_clean {
            Some(first) => Some(self.clean_batch(seq, first, urgent_only)),
            None if urgent_only => None,
            None => self.pass_batch(seq).map(|(batch, oldest)| (batch, oldest, false)),
        }
    }

    /// The clean passes of `first`'s model: priority jobs first, then (unless only urgent
    /// work may go) the others, up to the model's batch size.
    fn clean_batch(&mut self, seq: u64, first: usize, urgent_only: bool) -> (Batch, Instant, bool) {
        let model = self.jobs[&first].entry.model.clone();
        let max = self.batch_limit(&model, Graph::Full);
        let same = |j: &Active| j.entry.model.id == model.id && matches!(j.state, State::Clean { dispatched: false });
        let mut ids: Vec<usize> =
            self.order.iter().copied().filter(|id| same(&self.jobs[id]) && self.jobs[id].entry.priority).collect();
        if !urgent_only {
            ids.extend(self.order.iter().copied().filter(|id| same(&self.jobs[id]) && !self.jobs[id].entry.priority));
        }
        ids.truncate(max);
        let urgent = ids.iter().any(|id| self.jobs[id].entry.priority);
        let mut oldest = Instant::now();
        let segments = ids
            .iter()
            .map(|id| {
                let job = self.jobs.get_mut(id).expect("listed job exists");
                job.state = State::Clean { dispatched: true };
                oldest = oldest.min(job.entry.submitted);
                Segment {
                    job: *id,
                    input: job.entry.input.clone(),
                    passes_set: None,
                    readout: None,
                    passes: 0..1,
                    fault: job.entry.options.fault,
                }
            })
            .collect();
        (Batch { seq, model, kind: BatchKind::Clean, graph: Graph::Full, segments }, oldest, urgent)
    }

    /// The next batch of pass-set passes: the jobs of the first job's model and graph,
    /// dealt round-robin, starting one job further on each time.
    fn pass_batch(&mut self, seq: u64) -> Option<(Batch, Instant)> {
        let first = *self.order.iter().find(|id| self.jobs[id].pending() > 0)?;
        let model = self.jobs[&first].entry.model.clone();
        // A batch runs one graph: image passes and head-only passes never mix.
        let graph = self.jobs[&first].graph();
        let max = self.batch_limit(&model, graph);
        // Rotate so the next batch starts with the next job: round-robin across batches too.
        let start = self.order.iter().position(|id| *id == first).unwrap_or(0);
        self.order.rotate_left(start);
        let candidates: Vec<(usize, usize)> = self
            .order
            .iter()
            .filter(|id| self.jobs[id].entry.model.id == model.id && self.jobs[id].graph() == graph)
            .map(|id| (*id, self.jobs[id].pending()))
            .filter(|(_, p)| *p > 0)
            .collect();
        let take = deal(&candidates, max);
        self.order.rotate_left(1.min(self.order.len()));
        let mut oldest = Instant::now();
        let mut segments = Vec::new();
        for ((id, _), n) in candidates.into_iter().zip(take).filter(|(_, n)| *n > 0) {
            let job = self.jobs.get_mut(&id).expect("listed job exists");
            oldest = oldest.min(job.started.unwrap_or(job.entry.submitted));
            let State::Passes(p) = &mut job.state else {
                continue;
            };
            let passes = p.next..p.next + n;
            p.next += n;
            segments.push(Segment {
                job: id,
                input: job.entry.input.clone(),
                passes_set: Some(p.passes.clone()),
                readout: Some(p.readout.clone()),
                passes,
                fault: job.entry.options.fault,
            });
        }
        Some((Batch { seq, model, kind: BatchKind::Passes, graph, segments }, oldest))
    }

    /// Gives a held batch's passes back to their jobs (they are always the latest taken).
    fn unform(&mut self, batch: &Batch) {
        for seg in &batch.segments {
            if let Some(job) = self.jobs.get_mut(&seg.job) {
                match &mut job.state {
                    State::Clean { dispatched } => *dispatched = false,
                    State::Passes(p) => p.next = seg.passes.start,
                }
            }
        }
    }

    fn complete(&mut self, result: BatchResult) {
        self.in_flight[result.worker].retain(|(seq, _)| *seq != result.batch.seq);
        let model_name = result.batch.model.name().to_string();
        let passes = result.batch.len() as u64;
        match (result.batch.kind, result.batch.graph) {
            (BatchKind::Clean, _) => self.stats.clean_passes.fetch_add(passes, Ordering::Relaxed),
            (BatchKind::Passes, Graph::Full) => self.stats.masked_passes.fetch_add(passes, Ordering::Relaxed),
            (BatchKind::Passes, Graph::Head) => self.stats.head_passes.fetch_add(passes, Ordering::Relaxed),
        };
        let outputs = match result.outcome {
            Ok(outputs) => outputs,
            Err(message) => {
                tracing::error!(model = %model_name, %message, "batch failed");
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
            match output {
                Ok(SegmentOutput::Clean { features, logits }) => {
                    let job = self.remove(seg.job).expect("checked above");
                    let timing = job.timing();
                    let _ = job.entry.reply.send(Ok((JobOutput::Clean { features, logits }, job.counts, timing)));
                }
                Ok(SegmentOutput::Scored { scores }) => self.scored(seg.job, seg.passes.start, scores),
                Err(message) => {
                    tracing::error!(model = %model_name, job = seg.job, %message, "job failed");
                    self.fail(seg.job, EngineError::Runtime { model: model_name.clone(), message });
                }
            }
        }
    }

    fn scored(&mut self, id: usize, start: usize, scores: Vec<Vec<(f32, f32)>>) {
        let job = self.jobs.get_mut(&id).expect("checked by caller");
        let State::Passes(p) = &mut job.state else {
            return;
        };
        for (i, per_target) in scores.iter().enumerate() {
            for (ts, (z, prob)) in p.scores.iter_mut().zip(per_target) {
                ts.logits[start + i] = *z;
                ts.probs[start + i] = *prob;
            }
            p.scored[start + i] = true;
        }
        p.done += scores.len();
        if let Some(o) = &job.entry.options.observer {
            o.scored(start, &scores);
            o.passes_done(scores.len());
        }
        self.finish_if_done(id);
    }

    fn finish_if_done(&mut self, id: usize) {
        let done = matches!(&self.jobs[&id].state, State::Passes(p) if p.done == p.passes.len());
        if !done {
            return;
        }
        let job = self.remove(id).expect("present");
        let timing = job.timing();
        let State::Passes(p) = job.state else { unreachable!("checked above") };
        let _ = job.entry.reply.send(Ok((JobOutput::Scored { scores: p.scores, done: None }, job.counts, timing)));
    }
}

/// How many passes each candidate (job, pending passes) gets of a batch of `max`: slots
/// dealt one at a time round the jobs until the batch is full or every job is exhausted.
fn deal(candidates: &[(usize, usize)], max: usize) -> Vec<usize> {
    let mut pending: Vec<usize> = candidates.iter().map(|(_, p)| *p).collect();
    let mut take = vec![0usize; candidates.len()];
    let mut left = max;
    while left > 0 {
        let mut progressed = false;
        for (i, pending) in pending.iter_mut().enumerate() {
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
    take
}

#[cfg(test)]
mod tests {
    use super::deal;

    #[test]
    fn slots_are_dealt_round_the_jobs_until_the_batch_is_full() {
        assert_eq!(deal(&[(1, 5), (2, 1), (3, 5)], 6), vec![3, 1, 2]);
        assert_eq!(deal(&[(1, 2)], 8), vec![2], "a batch is never padded past the work there is");
        assert_eq!(deal(&[(1, 9), (2, 9)], 0), vec![0, 0]);
    }
}
