//! The scheduler's record of admitted requests (not jobs: a request's next job may not
//! exist yet while the service plans it): their deadlines, the passes expected of them and
//! those dispatched, so that the work queued can be told in seconds at any moment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::{self, Estimates, Pending, Rates, Work};
use super::model::EngineModel;
use crate::cam::Graph;

/// The place in the order of a request without a deadline (the command line, a warm-up):
/// it is served as if its deadline were this far off, so deadlines come first but it is
/// never starved.
pub(crate) const NO_DEADLINE_HORIZON: Duration = Duration::from_secs(300);

/// What an admission asks of the engine, in the engine's terms.
#[derive(Clone, Debug, Default)]
pub struct Demand {
    pub deadline: Option<Instant>,
    /// Answered with what ran by the deadline (anytime): admitted when a share of its
    /// work fits, ended when no more of it can run in time.
    pub partial_ok: bool,
    /// The caller's name for the kind of work (the service: its method and options);
    /// the engine learns how many passes each kind takes on each model, nothing more.
    pub label: String,
}

impl Demand {
    /// The place in the order: the deadline, or a distant one.
    pub(crate) fn key(&self, admitted: Instant) -> Instant {
        self.deadline.unwrap_or(admitted + NO_DEADLINE_HORIZON)
    }
}

pub(crate) struct Entry {
    model: Arc<EngineModel>,
    pub key: Instant,
    pub deadline: Option<Instant>,
    pub partial_ok: bool,
    label: u64,
    /// Passes expected in all: learned until the plan is known, then the plan's.
    expected: Work,
    planned: bool,
    /// The expected passes were learned from requests of its kind (not a guess).
    learned: bool,
    dispatched: Work,
    /// No job of it was cut short (so its passes teach the estimate).
    whole: bool,
}

/// Every admitted request, the rates and the learned estimates.
#[derive(Default)]
pub(crate) struct Ledger {
    entries: HashMap<usize, Entry>,
    pub rates: Rates,
    estimates: Estimates,
    workers: usize,
}

fn hash(label: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    label.hash(&mut h);
    h.finish()
}

impl Ledger {
    pub fn new(workers: usize) -> Self {
        Self { workers: workers.max(1), ..Default::default() }
    }

    /// The workers the engine's time is shared over (those alive).
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers.max(1);
    }

    /// A request about to be admitted, as the admission test sees it.
    pub fn entry(&self, model: &Arc<EngineModel>, demand: &Demand, now: Instant) -> Entry {
        let label = hash(&demand.label);
        let channels = model.package.info.feature_khw[0];
        let (expected, learned) = self.estimates.expect(model.name(), label, channels);
        Entry {
            model: model.clone(),
            key: demand.key(now),
            deadline: demand.deadline,
            partial_ok: demand.partial_ok,
            label,
            expected,
            planned: false,
            learned,
            dispatched: Work::default(),
            whole: true,
        }
    }

    /// Whether the engine must try the entry to learn what it costs: nothing is admitted
    /// and its kind has never run here. Its plan, known after its clean pass, decides
    /// then (a request refused on a guess would never teach the guess).
    pub fn worth_trying(&self, e: &Entry) -> bool {
        !e.learned && self.entries.is_empty()
    }

    pub fn insert(&mut self, id: usize, entry: Entry) {
        self.entries.insert(id, entry);
    }

    /// The request is done with the engine; a request that ran to the end teaches the
    /// estimate of its kind.
    pub fn release(&mut self, id: usize) {
        if let Some(e) = self.entries.remove(&id)
            && e.whole
            && e.dispatched.total() > 0.0
        {
            self.estimates.learn(e.model.name(), e.label, e.dispatched);
        }
    }

    /// A pass set of `passes` was submitted: the first replaces the estimate with the
    /// plan (and says so: the request's fit is checked again); later ones (the metrics)
    /// add to it.
    pub fn planned(&mut self, id: usize, graph: Graph, passes: usize) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        let first = !e.planned;
        let base = if first { e.dispatched } else { e.expected };
        e.expected = base.plus(Work::of(graph, passes));
        e.planned = true;
        first
    }

    /// The request was ended early: it holds no more of the engine's time.
    pub fn finish(&mut self, id: usize) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.expected = e.dispatched;
            e.whole = false;
        }
    }

    pub fn dispatched(&mut self, id: usize, graph: Graph, passes: usize) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.dispatched = e.dispatched.plus(Work::of(graph, passes));
        }
    }

    /// A job of the request ended before its passes did (deadline, failure, cancel).
    pub fn cut(&mut self, id: usize) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.whole = false;
        }
    }

    /// Seconds of the engine the entry still needs.
    pub fn seconds(&self, e: &Entry) -> f64 {
        let left = e.expected.less(e.dispatched);
        self.rates.seconds(e.model.id, left, self.workers)
    }

    pub fn pending(&self, e: &Entry) -> Pending {
        Pending { key: e.key, deadline: e.deadline, seconds: self.seconds(e), partial_ok: e.partial_ok }
    }

    /// Every admitted request but `except`, as the admission test sees them.
    pub fn all_pending(&self, except: Option<usize>) -> Vec<Pending> {
        self.entries.iter().filter(|(id, _)| Some(**id) != except).map(|(_, e)| self.pending(e)).collect()
    }

    pub fn get(&self, id: usize) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// Admitted requests, earliest deadline first, each with the work ahead of it and its
    /// own (seconds; an anytime request's own is at most its time left).
    pub fn in_order(&self, now: Instant) -> Vec<(usize, f64, f64)> {
        let mut ids: Vec<(&usize, &Entry)> = self.entries.iter().collect();
        ids.sort_by_key(|(id, e)| (e.key, **id));
        let mut before = 0.0;
        ids.into_iter()
            .map(|(id, e)| {
                let own = budget::consumes(now, &self.pending(e));
                let row = (*id, before, own);
                before += own;
                row
            })
            .collect()
    }

    /// Seconds of work admitted in all, and how many requests hold it.
    pub fn backlog(&self) -> (f64, usize) {
        (self.entries.values().map(|e| self.seconds(e)).sum(), self.entries.len())
    }
}
