//! Time budgets: how fast the engine runs each model's passes (measured), how many passes
//! a request is likely to take before its plan is known (learned), and the arithmetic that
//! admits a request only when its estimated finish meets its deadline. Pure data and
//! functions: the scheduler owns the one instance and passes the clock in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cam::Graph;

/// Weight of the newest sample in the moving averages: recent enough to follow a machine
/// that other work slows down, smooth enough that one odd batch does not swing admission.
const EWMA_WEIGHT: f64 = 0.2;

/// The same for the engine's wall-clock samples, which are noisier (the time between two
/// completions, whichever workers they came from).
const WALL_WEIGHT: f64 = 0.1;

/// Entries kept per table before it is cleared (labels and model loads are open-ended;
/// memory must not be).
const MAX_ENTRIES: usize = 1024;

/// Share of its time an anytime request must have left after the work ahead of it to be
/// admitted: it is answered with what ran by its deadline, but a map of a handful of
/// passes is noise. On an idle engine it is always admitted.
pub(crate) const ANYTIME_SHARE: f64 = 0.25;

/// Part of the time to a deadline kept for the work after the passes (combining,
/// rendering) and for the estimate's error (a machine shared with other work slows down
/// between admission and finish).
const DEADLINE_MARGIN: f64 = 0.1;

/// A running job is ended early only when its estimated finish overruns the time left by
/// this factor: estimates are noisy, and a job ended is all its work thrown away.
pub(crate) const HOPELESS_OVERRUN: f64 = 1.25;

/// Passes by graph: through extractor and head, or the head alone.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Work {
    pub full: f64,
    pub head: f64,
}

impl Work {
    pub fn of(graph: Graph, passes: usize) -> Self {
        match graph {
            Graph::Full => Work { full: passes as f64, head: 0.0 },
            Graph::Head => Work { full: 0.0, head: passes as f64 },
        }
    }

    pub fn plus(self, other: Work) -> Work {
        Work { full: self.full + other.full, head: self.head + other.head }
    }

    /// What is left of `self` once `done` has run (never negative).
    pub fn less(self, done: Work) -> Work {
        Work { full: (self.full - done.full).max(0.0), head: (self.head - done.head).max(0.0) }
    }

    pub fn total(self) -> f64 {
        self.full + self.head
    }
}

/// A moving average that starts at its first sample.
fn ewma(old: Option<f64>, sample: f64) -> f64 {
    weighted(old, sample, EWMA_WEIGHT)
}

fn weighted(old: Option<f64>, sample: f64, weight: f64) -> f64 {
    old.map_or(sample, |o| o + weight * (sample - o))
}

/// Measured seconds per pass, per model load and graph: of one worker running a batch
/// (with whether the figure is provisional: a clean batch's, standing in until a pass
/// batch is measured), and of the whole engine by the wall clock while it stays busy,
/// which also counts what the batches' own times miss (predictions in their lane,
/// preparing batches, other programs on the machine).
#[derive(Debug, Default)]
pub(crate) struct Rates {
    per_pass: HashMap<(u64, Graph), (f64, bool)>,
    wall: HashMap<(u64, Graph), f64>,
}

impl Rates {
    /// `passes` more of a model's passes finished `elapsed` after the engine's previous
    /// pass batch, with the engine busy all along.
    pub fn observe_wall(&mut self, model: u64, graph: Graph, passes: usize, elapsed: Duration) {
        if passes == 0 {
            return;
        }
        if self.wall.len() >= MAX_ENTRIES {
            self.wall.clear();
        }
        let old = self.wall.get(&(model, graph)).copied();
        // One stall (the machine's other work, a page-in) counts, but as at most four
        // times the average: a single sample must not swing admission.
        let sample = (elapsed.as_secs_f64() / passes as f64).min(old.map_or(f64::INFINITY, |o| o * 4.0));
        self.wall.insert((model, graph), weighted(old, sample, WALL_WEIGHT));
    }

    /// One batch of `passes` took `elapsed` on a worker. A provisional sample only fills a
    /// gap; the first real one replaces it rather than averaging with it.
    pub fn observe(&mut self, model: u64, graph: Graph, passes: usize, elapsed: Duration, provisional: bool) {
        if passes == 0 {
            return;
        }
        if self.per_pass.len() >= MAX_ENTRIES {
            self.per_pass.clear();
        }
        let sample = elapsed.as_secs_f64() / passes as f64;
        let old = self.per_pass.get(&(model, graph)).copied();
        let value = match old {
            Some((_, false)) if provisional => return,
            Some((o, was_provisional)) if was_provisional == provisional => ewma(Some(o), sample),
            _ => sample,
        };
        self.per_pass.insert((model, graph), (value, provisional));
    }

    /// Whether a model's passes of a graph have been measured by a pass batch.
    #[cfg(test)]
    pub fn knows(&self, model: u64, graph: Graph) -> bool {
        self.per_pass.get(&(model, graph)).is_some_and(|(_, provisional)| !provisional)
    }

    /// The engine's seconds per pass of a graph: by the wall clock, else one worker's
    /// shared over `workers`.
    fn engine_per_pass(&self, model: u64, graph: Graph, workers: usize) -> Option<f64> {
        let worker = || self.per_pass.get(&(model, graph)).map(|r| r.0 / workers.max(1) as f64);
        self.wall.get(&(model, graph)).copied().or_else(worker)
    }

    /// Seconds `work` takes on `workers` busy workers. Cold start: an unmeasured head
    /// graph is assumed as slow as the full one (an upper bound); an unmeasured full graph
    /// is assumed free, so a cold engine admits by capacity alone until its first batch.
    pub fn seconds(&self, model: u64, work: Work, workers: usize) -> f64 {
        let full = self.engine_per_pass(model, Graph::Full, workers);
        let head = self.engine_per_pass(model, Graph::Head, workers).or(full);
        work.full * full.unwrap_or(0.0) + work.head * head.unwrap_or(0.0)
    }
}

/// Passes per admission, learned per model and the caller's label of the kind of work.
#[derive(Debug, Default)]
pub(crate) struct Estimates {
    passes: HashMap<(String, u64), Work>,
}

impl Estimates {
    /// An admission of `label` on `model` ran `work` to the end. The estimate rises at once
    /// to a larger count and falls slowly: an estimate too high refuses a request at the
    /// door, one too low admits a request that its plan then refuses after it waited (a
    /// kind's count varies with the photo: Score-CAM skips constant channels).
    pub fn learn(&mut self, model: &str, label: u64, work: Work) {
        if self.passes.len() >= MAX_ENTRIES {
            self.passes.clear();
        }
        let key = (model.to_string(), label);
        let old = self.passes.get(&key).copied();
        let follow = |old: Option<f64>, sample: f64| match old {
            Some(o) if o < sample => sample,
            _ => ewma(old, sample),
        };
        let learned =
            Work { full: follow(old.map(|o| o.full), work.full), head: follow(old.map(|o| o.head), work.head) };
        self.passes.insert(key, learned);
    }

    /// The passes an admission is expected to take, and whether that was learned; before
    /// any of its kind finished, one pass per feature channel and the clean pass
    /// (Score-CAM's count without its savings, the default method).
    pub fn expect(&self, model: &str, label: u64, channels: usize) -> (Work, bool) {
        let cold = Work { full: channels as f64 + 1.0, head: 0.0 };
        self.passes.get(&(model.to_string(), label)).map_or((cold, false), |w| (*w, true))
    }
}

/// One admitted request as the admission test sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Pending {
    /// Its place in the order (earliest deadline first; requests without one get a
    /// distant one, so they are served too).
    pub key: Instant,
    pub deadline: Option<Instant>,
    /// Its remaining work, in seconds of the whole engine.
    pub seconds: f64,
    /// Answered with what ran by the deadline (anytime).
    pub partial_ok: bool,
}

/// Why a request is refused: what is ahead of it, what it needs, and when to come back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refusal {
    /// Admitted requests that run before it.
    pub ahead_jobs: usize,
    /// Their remaining work.
    pub ahead: Duration,
    /// Its own estimated work.
    pub own: Duration,
    /// When the same request would fit, if nothing new arrives ahead of it.
    pub retry_after: Duration,
    /// Whether it could meet its deadline at all on an idle engine.
    pub fits_alone: bool,
}

/// The time a deadline leaves for passes, less the margin for what follows them.
fn budget(now: Instant, deadline: Instant) -> f64 {
    deadline.saturating_duration_since(now).as_secs_f64() * (1.0 - DEADLINE_MARGIN)
}

/// By how much the work `ahead` and the request's own overrun its deadline (≤ 0: it
/// fits): all its work must fit, or (anytime) the work ahead must leave it a share of its
/// time. Requests without a deadline always fit.
fn overrun(now: Instant, ahead: f64, p: &Pending) -> f64 {
    let Some(d) = p.deadline else {
        return f64::NEG_INFINITY;
    };
    let b = budget(now, d);
    if p.partial_ok { ahead - b * (1.0 - ANYTIME_SHARE) } else { ahead + p.seconds - b }
}

/// The engine time a request takes from those behind it: all its work, or (anytime) at
/// most until its deadline.
pub(crate) fn consumes(now: Instant, p: &Pending) -> f64 {
    match p.deadline {
        Some(d) if p.partial_ok => p.seconds.min(budget(now, d)),
        _ => p.seconds,
    }
}

/// Admits `new` beside `admitted` (any order) when, earliest deadline first, it finishes
/// before its deadline and pushes no admitted request that would have made its deadline
/// past it. Otherwise says by how much the queue must shrink first.
pub(crate) fn admit(now: Instant, admitted: &[Pending], new: Pending) -> Result<(), Refusal> {
    let mut sorted: Vec<&Pending> = admitted.iter().collect();
    sorted.sort_by_key(|p| p.key);
    let split = sorted.partition_point(|p| p.key <= new.key);
    let ahead: f64 = sorted[..split].iter().map(|p| consumes(now, p)).sum();
    let mut over = overrun(now, ahead, &new).max(0.0);
    let fits_alone = overrun(now, 0.0, &new) <= 0.0;
    // The requests behind it: each that meets its deadline now must still meet it.
    let own = consumes(now, &new);
    let mut before = ahead;
    for p in &sorted[split..] {
        let (now_over, then_over) = (overrun(now, before, p), overrun(now, before + own, p));
        if now_over <= 0.0 && then_over > 0.0 {
            over = over.max(then_over);
        }
        before += consumes(now, p);
    }
    if over <= 0.0 {
        return Ok(());
    }
    let retry = if fits_alone { over } else { ahead };
    Err(Refusal {
        ahead_jobs: split,
        ahead: secs(ahead),
        own: secs(new.seconds),
        retry_after: secs(retry.ceil().max(1.0)),
        fits_alone,
    })
}

/// The refused requests told to come back, and when: each later refusal is told to come
/// back after their work too, so a burst refused together does not return together and
/// be refused again.
#[derive(Debug, Default)]
pub(crate) struct Returns {
    promised: Vec<(Instant, f64)>,
}

impl Returns {
    /// The refusal with its wait pushed back past the work of the requests refused before
    /// it that have not come back yet (counted for a second after their time: by then
    /// they are admitted and in the queue, or refused and told again).
    pub fn stagger(&mut self, now: Instant, mut refusal: Refusal) -> Refusal {
        self.promised.retain(|(back, _)| *back + Duration::from_secs(1) > now);
        if !refusal.fits_alone || self.promised.len() >= MAX_ENTRIES {
            return refusal;
        }
        let earlier: f64 = self.promised.iter().map(|(_, seconds)| seconds).sum();
        refusal.retry_after = secs((refusal.retry_after.as_secs_f64() + earlier).ceil());
        self.promised.push((now + refusal.retry_after, refusal.own.as_secs_f64()));
        refusal
    }
}

/// Whether a running request can no longer meet its deadline: `before` is the work ahead
/// of it, `own` its own remaining work (seconds of the whole engine). An anytime request
/// is answered with its partial map once it cannot get another pass in; the others once
/// their finish overruns the time left clearly ([`HOPELESS_OVERRUN`]).
pub(crate) fn hopeless(now: Instant, deadline: Instant, before: f64, own: f64, partial_ok: bool) -> bool {
    let left = deadline.saturating_duration_since(now).as_secs_f64();
    if partial_ok { before >= left } else { before + own > left * HOPELESS_OVERRUN }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e7))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, s: u64) -> Instant {
        base + Duration::from_secs(s)
    }

    fn job(base: Instant, deadline_s: u64, seconds: f64) -> Pending {
        let d = at(base, deadline_s);
        Pending { key: d, deadline: Some(d), seconds, partial_ok: false }
    }

    #[test]
    fn a_request_that_fits_after_the_queue_is_admitted() {
        let now = Instant::now();
        let queue = [job(now, 30, 10.0), job(now, 40, 10.0)];
        assert_eq!(admit(now, &queue, job(now, 60, 20.0)), Ok(()));
    }

    #[test]
    fn a_request_that_cannot_finish_in_time_is_refused_with_the_wait_that_would_fit() {
        let now = Instant::now();
        let queue = [job(now, 30, 20.0), job(now, 40, 15.0)];
        let refusal = admit(now, &queue, job(now, 50, 20.0)).unwrap_err();
        assert_eq!(refusal.ahead_jobs, 2);
        assert_eq!(refusal.ahead, Duration::from_secs(35));
        assert_eq!(refusal.own, Duration::from_secs(20));
        // 35 + 20 = 55 s of work against a budget of 50 × 0.9 = 45 s: 10 s over.
        assert_eq!(refusal.retry_after, Duration::from_secs(10));
        assert!(refusal.fits_alone);
    }

    #[test]
    fn an_earlier_deadline_may_not_push_an_admitted_request_past_its_own() {
        let now = Instant::now();
        let queue = [job(now, 60, 50.0)];
        // It would finish in time itself (it goes first), but the other would not.
        let refusal = admit(now, &queue, job(now, 20, 10.0)).unwrap_err();
        assert_eq!(refusal.ahead_jobs, 0);
        assert!(refusal.retry_after >= Duration::from_secs(3));
        // One that leaves the other its time (54 s of budget) is admitted.
        assert_eq!(admit(now, &queue, job(now, 20, 3.0)), Ok(()));
    }

    #[test]
    fn anytime_requests_need_a_share_of_their_time_left_after_the_queue() {
        let now = Instant::now();
        let mut new = job(now, 40, 200.0);
        assert!(admit(now, &[], new).is_err());
        new.partial_ok = true;
        assert_eq!(admit(now, &[], new), Ok(()), "an idle engine takes any anytime request");
        // 30 s ahead of a 40 s deadline (36 s of budget) leave it less than a quarter.
        let queue = [job(now, 35, 30.0)];
        let refusal = admit(now, &queue, new).unwrap_err();
        assert_eq!(refusal.retry_after, Duration::from_secs(3), "30 − 36 × 0.75 = 3 s too much ahead");
        let queue = [job(now, 35, 26.0)];
        assert_eq!(admit(now, &queue, new), Ok(()));
    }

    #[test]
    fn a_request_too_large_for_its_deadline_is_told_to_come_back_when_the_queue_is_empty() {
        let now = Instant::now();
        let queue = [job(now, 100, 12.0)];
        let refusal = admit(now, &queue, job(now, 200, 300.0)).unwrap_err();
        assert!(!refusal.fits_alone);
        assert_eq!(refusal.retry_after, Duration::from_secs(12));
    }

    #[test]
    fn requests_without_a_deadline_are_never_refused_for_time() {
        let now = Instant::now();
        let queue = [job(now, 10, 9.0)];
        let new = Pending { key: at(now, 300), deadline: None, seconds: 1e6, partial_ok: false };
        assert_eq!(admit(now, &queue, new), Ok(()));
    }

    #[test]
    fn an_unmeasured_engine_admits_everything() {
        let rates = Rates::default();
        let seconds = rates.seconds(1, Work { full: 1e6, head: 1e6 }, 2);
        assert_eq!(seconds, 0.0);
        let now = Instant::now();
        let queue: Vec<Pending> = (0..40).map(|_| job(now, 1, seconds)).collect();
        assert_eq!(admit(now, &queue, job(now, 1, seconds)), Ok(()));
    }

    #[test]
    fn rates_follow_the_batches_and_split_over_the_workers() {
        let mut rates = Rates::default();
        // A clean batch stands in until a pass batch is measured, then gives way.
        rates.observe(7, Graph::Full, 1, Duration::from_millis(900), true);
        assert!(!rates.knows(7, Graph::Full));
        assert!((rates.seconds(7, Work::of(Graph::Full, 2), 1) - 1.8).abs() < 1e-9);
        rates.observe(7, Graph::Full, 4, Duration::from_millis(400), false);
        rates.observe(7, Graph::Full, 1, Duration::from_millis(900), true);
        // An unmeasured head graph counts as the full one.
        assert!((rates.seconds(7, Work { full: 10.0, head: 10.0 }, 2) - 1.0).abs() < 1e-9);
        rates.observe(7, Graph::Full, 4, Duration::from_millis(800), false);
        // 0.1 + 0.2 × (0.2 − 0.1) = 0.12 s a pass.
        assert!((rates.seconds(7, Work::of(Graph::Full, 100), 1) - 12.0).abs() < 1e-9);
        assert!(rates.knows(7, Graph::Full) && !rates.knows(7, Graph::Head) && !rates.knows(8, Graph::Full));
        // The engine's wall clock, once measured, is the engine's rate (no division).
        rates.observe_wall(7, Graph::Full, 4, Duration::from_millis(200));
        assert!((rates.seconds(7, Work::of(Graph::Full, 100), 2) - 5.0).abs() < 1e-9);
        rates.observe_wall(7, Graph::Full, 4, Duration::from_millis(400));
        // 0.05 + 0.1 × (0.1 − 0.05) = 0.055 s a pass.
        assert!((rates.seconds(7, Work::of(Graph::Full, 100), 2) - 5.5).abs() < 1e-9);
    }

    #[test]
    fn estimates_start_from_the_channels_and_learn_each_kind_of_request() {
        let mut estimates = Estimates::default();
        assert_eq!(estimates.expect("m", 1, 1280), (Work { full: 1281.0, head: 0.0 }, false));
        estimates.learn("m", 1, Work { full: 900.0, head: 0.0 });
        assert_eq!(estimates.expect("m", 1, 1280), (Work { full: 900.0, head: 0.0 }, true));
        estimates.learn("m", 1, Work { full: 1000.0, head: 0.0 });
        assert_eq!(estimates.expect("m", 1, 1280).0.full, 1000.0, "a larger count is taken at once");
        estimates.learn("m", 1, Work { full: 500.0, head: 0.0 });
        assert_eq!(estimates.expect("m", 1, 1280).0.full, 900.0, "a smaller one slowly: 1000 + 0.2 × (500 − 1000)");
        assert_eq!(estimates.expect("m", 2, 1280).0.full, 1281.0, "another label is its own estimate");
    }

    #[test]
    fn refusals_of_one_burst_are_told_to_come_back_one_after_another() {
        let now = Instant::now();
        let mut returns = Returns::default();
        let refusal = |retry: u64| Refusal {
            ahead_jobs: 2,
            ahead: Duration::from_secs(10),
            own: Duration::from_secs(5),
            retry_after: Duration::from_secs(retry),
            fits_alone: true,
        };
        let waits: Vec<u64> = (0..3).map(|_| returns.stagger(now, refusal(4)).retry_after.as_secs()).collect();
        assert_eq!(waits, vec![4, 9, 14]);
        // Once their time (and a second) has passed, they no longer count.
        let later = now + Duration::from_secs(16);
        assert_eq!(returns.stagger(later, refusal(4)).retry_after.as_secs(), 4);
        let never = Refusal { fits_alone: false, ..refusal(7) };
        assert_eq!(returns.stagger(later, never).retry_after.as_secs(), 7, "a request too long for its deadline");
    }

    #[test]
    fn a_job_is_hopeless_only_when_clearly_late() {
        let now = Instant::now();
        let d = at(now, 10);
        assert!(!hopeless(now, d, 0.0, 12.0, false), "20 % over is within the estimate's error");
        assert!(hopeless(now, d, 0.0, 13.0, false));
        assert!(hopeless(now, d, 6.0, 7.0, false), "the work ahead counts");
        assert!(!hopeless(now, d, 9.0, 100.0, true), "anytime: a pass still fits");
        assert!(hopeless(now, d, 10.0, 1.0, true));
    }
}
