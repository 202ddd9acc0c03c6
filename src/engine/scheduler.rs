//! The scheduler thread: owns every job, the queue and the ledger of admitted requests;
//! admits a request only when it can finish before its deadline, forms batches across
//! jobs (earliest deadline first, so the work admitted finishes instead of every job
//! slowing down together), scatters results back, enforces deadlines and ends early the
//! jobs that can no longer make theirs. It knows pass sets, not methods: what the passes
//! mean is the caller's business.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::budget::{self, Refusal, Returns};
use super::job::{JobEntry, JobOutput, JobTiming, PassCounts, PassScores, Work};
use super::ledger::{Demand, Ledger};
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
    /// May this request be admitted (does it finish before its deadline)?
    Admit {
        id: usize,
        model: Arc<EngineModel>,
        demand: Demand,
        reply: tokio::sync::oneshot::Sender<Result<(), Refusal>>,
    },
    /// The admission is done with the engine.
    Release(usize),
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

/// A batch sent to a worker and not yet answered.
#[derive(Clone)]
struct InFlight {
    seq: u64,
    jobs: Vec<usize>,
    /// A batch of pass-set passes (not clean passes).
    passes: bool,
}

pub(crate) struct Scheduler {
    config: EngineConfig,
    pool: Pool,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Box<JobEntry>>,
    jobs: HashMap<usize, Active>,
    /// Admitted requests, the measured rates and the learned estimates.
    ledger: Ledger,
    /// Refused requests told when to come back.
    returns: Returns,
    /// When the last pass batch finished, and whether others were still in flight then
    /// (the engine stayed busy, so the time to the next one measures its rate).
    last_pass_batch: Option<(Instant, bool)>,
    /// Per worker, each batch sent and not yet answered: its number and its jobs.
    in_flight: Vec<Vec<InFlight>>,
    next_batch: u64,
    shutting_down: bool,
}

impl Scheduler {
    pub fn new(config: EngineConfig, pool: Pool, stats: Arc<EngineStats>) -> Self {
        let in_flight = vec![Vec::new(); pool.workers()];
        Self {
            ledger: Ledger::new(pool.workers()),
            returns: Returns::default(),
            last_pass_batch: None,
            config,
            pool,
            stats,
            waiting: VecDeque::new(),
            jobs: HashMap::new(),
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
                    Command::Admit { id, model, demand, reply } => {
                        let _ = reply.send(self.admit(id, &model, &demand));
                    }
                    Command::Release(id) => self.ledger.release(id),
                    Command::Submit(entry) => self.submit(entry),
                    Command::Cancel(id) => self.cancel(id),
                    Command::Worker(WorkerEvent::Done(result)) => self.complete(*result),
                    Command::Worker(WorkerEvent::Exited(worker)) => self.worker_exited(worker),
                    Command::Worker(WorkerEvent::Ready(worker, sender)) => {
                        tracing::info!(worker, "replacement worker ready");
                        self.pool.revive(worker, sender);
                    }
                    Command::Worker(WorkerEvent::Timed { model, passes, elapsed }) => {
                        // Provisional: the first pass batch measured replaces it.
                        self.ledger.rates.observe(model, Graph::Full, passes, elapsed, true);
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
            self.ledger.set_workers(self.stats.workers_alive());
            self.recheck(now);
            self.promote();
            wake = self.dispatch(now);
            let (backlog, requests) = self.ledger.backlog();
            self.stats.set_backlog(backlog, requests);
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

    /// The admission test: the request goes into the ledger when, earliest deadline
    /// first, it finishes in time and delays no admitted request past its deadline.
    fn admit(&mut self, id: usize, model: &Arc<EngineModel>, demand: &Demand) -> Result<(), Refusal> {
        let now = Instant::now();
        self.ledger.set_workers(self.stats.workers_alive());
        let entry = self.ledger.entry(model, demand, now);
        if !self.ledger.worth_trying(&entry) {
            budget::admit(now, &self.ledger.all_pending(None), self.ledger.pending(&entry))
                .map_err(|refusal| self.returns.stagger(now, refusal))?;
        }
        self.ledger.insert(id, entry);
        Ok(())
    }

    /// Queues a job. A request's first pass set replaces its estimate with its plan; one
    /// that no longer fits its deadline is refused now, before any of its passes run.
    fn submit(&mut self, entry: Box<JobEntry>) {
        if let Work::Score { passes, .. } = &entry.work
            && self.ledger.planned(entry.admission, passes.graph(), passes.len())
            && let Some(refusal) = self.refuse(entry.admission)
        {
            self.ledger.cut(entry.admission);
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = entry.reply.send(Err(EngineError::Refused(refusal)));
            return;
        }
        self.stats.queued_jobs.fetch_add(1, Ordering::Relaxed);
        self.waiting.push_back(entry);
    }

    /// The admission test again for an admitted request, now that its plan is known.
    fn fits(&self, id: usize) -> Result<(), Refusal> {
        let Some(entry) = self.ledger.get(id) else {
            return Ok(());
        };
        let now = Instant::now();
        budget::admit(now, &self.ledger.all_pending(Some(id)), self.ledger.pending(entry))
    }

    /// A refusal of an admitted request, its wait staggered like the door's.
    fn refuse(&mut self, id: usize) -> Option<Refusal> {
        let refusal = self.fits(id).err()?;
        Some(self.returns.stagger(Instant::now(), refusal))
    }

    /// Ends early the jobs of requests that can no longer make their deadline, so the
    /// engine's time goes to those that can. The work of each one ended no longer counts
    /// against those behind it.
    fn recheck(&mut self, now: Instant) {
        let mut freed = 0.0;
        for (admission, before, own) in self.ledger.in_order(now) {
            let Some(entry) = self.ledger.get(admission) else {
                continue;
            };
            let Some(deadline) = entry.deadline else {
                continue;
            };
            let partial_ok = entry.partial_ok;
            if budget::hopeless(now, deadline, before - freed, own, partial_ok) && self.end_early(admission) {
                freed += own;
            }
        }
    }

    /// Ends the current jobs of an admission: an anytime one with the passes scored so
    /// far; one whose passes have not started is refused (nothing ran, a retry may fit);
    /// the others fail with the deadline. Returns whether there was a job to end.
    fn end_early(&mut self, admission: usize) -> bool {
        let running: Vec<usize> =
            self.jobs.values().filter(|j| j.entry.admission == admission).map(|j| j.entry.id).collect();
        let waiting: Vec<usize> = self.waiting.iter().filter(|e| e.admission == admission).map(|e| e.id).collect();
        let started = running.iter().any(|id| matches!(&self.jobs[id].state, State::Passes(p) if p.next > 0));
        // Before its passes start, a request is ended only when the admission test would
        // refuse it now (the estimates' noise must not turn an admitted request into a 504).
        let refusal = if started { None } else { self.fits(admission).err() };
        if (running.is_empty() && waiting.is_empty()) || (!started && refusal.is_none()) {
            return false;
        }
        let refusal = refusal.map(|r| self.returns.stagger(Instant::now(), r));
        self.ledger.cut(admission);
        self.stats.ended_early.fetch_add(1, Ordering::Relaxed);
        for id in waiting {
            if let Some(pos) = self.waiting.iter().position(|e| e.id == id)
                && let Some(entry) = self.waiting.remove(pos)
            {
                self.stats.queued_jobs.fetch_sub(1, Ordering::Relaxed);
                let _ = entry.reply.send(Err(unstarted(refusal)));
            }
        }
        for id in running {
            self.end_running(id, refusal);
        }
        self.ledger.finish(admission);
        true
    }

    fn end_running(&mut self, id: usize, refusal: Option<Refusal>) {
        let Some(job) = self.remove(id) else {
            return;
        };
        let started = matches!(&job.state, State::Passes(p) if p.next > 0);
        let timing = job.timing();
        match job.state {
            State::Passes(p) if job.entry.options.partial_at_deadline => {
                let output = JobOutput::Scored { scores: p.scores, done: Some(p.scored) };
                let _ = job.entry.reply.send(Ok((output, job.counts, timing)));
            }
            _ if started => {
                let _ = job.entry.reply.send(Err(EngineError::DeadlineExceeded));
            }
            _ => {
                let _ = job.entry.reply.send(Err(unstarted(refusal)));
            }
        }
    }

    fn worker_exited(&mut self, worker: usize) {
        if self.shutting_down {
            return;
        }
        tracing::error!(worker, "worker died; failing its in-flight batches and replacing it");
        let lost: Vec<usize> = self.in_flight[worker].drain(..).flat_map(|b| b.jobs).collect();
        for job in lost {
            self.fail(job, EngineError::Internal(format!("worker {worker} died while running this job")));
        }
        self.pool.replace(worker);
    }

    fn cancel(&mut self, id: usize) {
        let mut found = false;
        if let Some(pos) = self.waiting.iter().position(|e| e.id == id)
            && let Some(entry) = self.waiting.remove(pos)
        {
            self.stats.queued_jobs.fetch_sub(1, Ordering::Relaxed);
            self.ledger.cut(entry.admission);
            found = true;
        }
        if let Some(job) = self.remove(id) {
            self.ledger.cut(job.entry.admission);
            let _ = job.entry.reply.send(Err(EngineError::Cancelled));
            found = true;
        }
        if found {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&mut self, id: usize) -> Option<Active> {
        let job = self.jobs.remove(&id)?;
        self.stats.running_jobs.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }

    fn fail(&mut self, id: usize, error: EngineError) {
        if let Some(job) = self.remove(id) {
            self.ledger.cut(job.entry.admission);
            let _ = job.entry.reply.send(Err(error));
        }
    }

    fn expire(&mut self, now: Instant) {
        let past = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let expired: Vec<usize> =
            self.jobs.values().filter(|j| past(j.entry.options.deadline)).map(|j| j.entry.id).collect();
        for id in expired {
            let partial = self.jobs[&id].entry.options.partial_at_deadline;
            self.ledger.cut(self.jobs[&id].entry.admission);
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
                self.ledger.cut(entry.admission);
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
            let next = next_waiting(self.waiting.iter().map(|e| (e.follow_up, e.key, e.id)));
            let Some(entry) = next.and_then(|i| self.waiting.remove(i)) else {
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
                    self.ledger.dispatched(job.entry.admission, batch.graph, seg.passes.len());
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
            let jobs = batch.segments.iter().map(|s| s.job).collect();
            self.in_flight[worker].push(InFlight { seq: batch.seq, jobs, passes: batch.kind == BatchKind::Passes });
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

    /// The running jobs in the order their passes are served: earliest deadline first
    /// (see [`rank`]).
    fn ranked(&self) -> Vec<usize> {
        rank(self.jobs.values().map(|j| (j.entry.key, j.entry.id)))
    }

    /// Picks the next batch and whether it is urgent: priority jobs' clean passes first
    /// (cheap requests), then other clean passes (they gate everything else), then pass
    /// sets, earliest deadline first. Marks the passes taken. With `urgent_only`, only an
    /// urgent batch or none.
    fn form_batch(&mut self, urgent_only: bool) -> Option<(Batch, Instant, bool)> {
        let seq = self.next_batch;
        self.next_batch += 1;
        let ranked = self.ranked();
        let clean = |j: &Active| matches!(j.state, State::Clean { dispatched: false });
        let first_clean = ranked
            .iter()
            .find(|id| clean(&self.jobs[id]) && self.jobs[id].entry.priority)
            .or_else(|| ranked.iter().find(|id| !urgent_only && clean(&self.jobs[id])))
            .copied();
        match first_clean {
            Some(first) => Some(self.clean_batch(seq, first, &ranked, urgent_only)),
            None if urgent_only => None,
            None => self.pass_batch(seq, &ranked).map(|(batch, oldest)| (batch, oldest, false)),
        }
    }

    /// The clean passes of `first`'s model: priority jobs first, then (unless only urgent
    /// work may go) the others, up to the model's batch size.
    fn clean_batch(&mut self, seq: u64, first: usize, ranked: &[usize], urgent_only: bool) -> (Batch, Instant, bool) {
        let model = self.jobs[&first].entry.model.clone();
        let max = self.batch_limit(&model, Graph::Full);
        let same = |j: &Active| j.entry.model.id == model.id && matches!(j.state, State::Clean { dispatched: false });
        let mut ids: Vec<usize> =
            ranked.iter().copied().filter(|id| same(&self.jobs[id]) && self.jobs[id].entry.priority).collect();
        if !urgent_only {
            ids.extend(ranked.iter().copied().filter(|id| same(&self.jobs[id]) && !self.jobs[id].entry.priority));
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

    /// The next batch of pass-set passes: the earliest-deadline job with passes left, then
    /// (when it has fewer than a batch) the next ones of the same model and graph.
    fn pass_batch(&mut self, seq: u64, ranked: &[usize]) -> Option<(Batch, Instant)> {
        let first = *ranked.iter().find(|id| self.jobs[id].pending() > 0)?;
        let model = self.jobs[&first].entry.model.clone();
        // A batch runs one graph: image passes and head-only passes never mix.
        let graph = self.jobs[&first].graph();
        let max = self.batch_limit(&model, graph);
        let candidates: Vec<(usize, usize)> = ranked
            .iter()
            .filter(|id| self.jobs[id].entry.model.id == model.id && self.jobs[id].graph() == graph)
            .map(|id| (*id, self.jobs[id].pending()))
            .filter(|(_, p)| *p > 0)
            .collect();
        let take = fill(&candidates, max);
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

    /// A batch's time teaches the rate of its model and graph. Clean batches (a few
    /// inputs, slower per pass) only stand in until a pass batch has been measured.
    fn measure(&mut self, result: &BatchResult) {
        let batch = &result.batch;
        if result.outcome.is_ok() {
            let provisional = batch.kind == BatchKind::Clean;
            self.ledger.rates.observe(batch.model.id, batch.graph, batch.len(), result.elapsed, provisional);
        }
        if batch.kind == BatchKind::Passes {
            let now = Instant::now();
            if let Some((last, true)) = self.last_pass_batch {
                self.ledger.rates.observe_wall(batch.model.id, batch.graph, batch.len(), now - last);
            }
            // Busy: a pass batch is still running, so the next one ends within a batch's
            // time (a gap of idle seconds between bursts is not a rate).
            let busy = self.in_flight.iter().flatten().any(|b| b.passes);
            self.last_pass_batch = Some((now, busy));
        }
    }

    fn complete(&mut self, result: BatchResult) {
        self.in_flight[result.worker].retain(|b| b.seq != result.batch.seq);
        self.measure(&result);
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

/// Job ids (with their keys) in the order their passes are served: earliest key first,
/// then the older job. A key is the request's deadline, or, for a request without one, a
/// distant deadline ([`super::ledger::NO_DEADLINE_HORIZON`] after its admission): every
/// key is finite, so a job is served at the latest once every request admitted after its
/// key has passed: no job starves, however many arrive with earlier deadlines.
fn rank(jobs: impl Iterator<Item = (Instant, usize)>) -> Vec<usize> {
    let mut keyed: Vec<(Instant, usize)> = jobs.collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// Which waiting job (by position) takes the next running slot: a follow-up of an
/// admitted request first (it already waited its turn), then the earliest key, then the
/// older job.
fn next_waiting(waiting: impl Iterator<Item = (bool, Instant, usize)>) -> Option<usize> {
    waiting.enumerate().min_by_key(|(_, (follow_up, key, id))| (!follow_up, *key, *id)).map(|(i, _)| i)
}

/// How many passes each candidate (job, pending passes), in order, gets of a batch of
/// `max`: the first job as many as it has, then the next, until the batch is full.
fn fill(candidates: &[(usize, usize)], max: usize) -> Vec<usize> {
    let mut left = max;
    candidates
        .iter()
        .map(|(_, pending)| {
            let n = (*pending).min(left);
            left -= n;
            n
        })
        .collect()
}

/// A job ended before its passes: refused (429, come back later) when the admission test
/// says when it would fit, else failed with the deadline.
fn unstarted(refusal: Option<Refusal>) -> EngineError {
    refusal.map_or(EngineError::DeadlineExceeded, EngineError::Refused)
}

#[cfg(test)]
mod tests {
    use super::{fill, next_waiting, rank};
    use std::time::{Duration, Instant};

    #[test]
    fn the_earliest_deadline_fills_the_batch_first() {
        assert_eq!(fill(&[(1, 5), (2, 1), (3, 5)], 6), vec![5, 1, 0]);
        assert_eq!(fill(&[(1, 2), (2, 1), (3, 5)], 6), vec![2, 1, 3], "the next jobs top up a short one");
        assert_eq!(fill(&[(1, 2)], 8), vec![2], "a batch is never padded past the work there is");
        assert_eq!(fill(&[(1, 9), (2, 9)], 0), vec![0, 0]);
    }

    #[test]
    fn jobs_are_served_earliest_deadline_first_then_oldest() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let order = rank([(s(30), 4), (s(10), 7), (s(30), 2), (s(20), 9)].into_iter());
        assert_eq!(order, vec![7, 9, 2, 4]);
    }

    #[test]
    fn a_running_slot_goes_to_a_follow_up_then_the_earliest_deadline() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        assert_eq!(next_waiting([(false, s(30), 1), (false, s(10), 2), (true, s(50), 3)].into_iter()), Some(2));
        assert_eq!(next_waiting([(false, s(30), 1), (false, s(10), 2)].into_iter()), Some(1));
        assert_eq!(next_waiting([(false, s(10), 5), (false, s(10), 4)].into_iter()), Some(1), "ties: the older");
        assert_eq!(next_waiting(std::iter::empty()), None);
    }

    #[test]
    fn a_request_without_a_deadline_is_served_once_its_distant_key_comes_up() {
        // Admitted at t without a deadline: keyed t + horizon. A stream of requests with
        // 60 s deadlines goes first only while they were admitted before t + horizon − 60 s.
        let t = Instant::now();
        let horizon = super::super::ledger::NO_DEADLINE_HORIZON;
        let no_deadline = (t + horizon, 1);
        let early = (t + Duration::from_secs(60), 2);
        let late = (t + horizon - Duration::from_secs(59) + Duration::from_secs(60), 3);
        assert_eq!(rank([no_deadline, early, late].into_iter()), vec![2, 1, 3]);
    }
}
