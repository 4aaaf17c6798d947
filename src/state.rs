//! What the daemon serves right now, shared between the supervisor (the only writer) and the
//! query service (readers). Readers load one [`View`] and never see a half-applied sync: the
//! supervisor builds a whole new view and swaps it in atomically. Publishing also records what
//! changed (the journal behind `/v1/changes`) and wakes long-polling readers.

use crate::index::{Index, WarninglistHit};
use crate::model::{Kind, Rejection, SourceStatus};
use arc_swap::ArcSwap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Tells whether a value is itself on a loaded warninglist (implemented by validation, wired by
/// the supervisor), so lookups can say "listed, but also on the list of public resolvers".
pub trait WarninglistOracle: Send + Sync {
    /// Appends every warninglist the value is on to `out`.
    fn hits(&self, value: &str, out: &mut Vec<WarninglistHit>);
}

/// One consistent generation of served data and status.
#[derive(Default)]
pub struct View {
    /// Increases by one every time the published set changes; 0 means nothing published yet.
    pub generation: u64,
    pub index: Arc<Index>,
    pub sources: Vec<SourceStatus>,
    /// The most recent rejections, newest last (bounded by the supervisor).
    pub quarantine: Arc<Vec<Rejection>>,
    pub warninglists: Option<Arc<dyn WarninglistOracle>>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("generation", &self.generation)
            .field("indicators", &self.index.len())
            .field("sources", &self.sources)
            .field("quarantine", &self.quarantine.len())
            .field("warninglists", &self.warninglists.is_some())
            .finish()
    }
}

/// Actions a privileged client may ask of the supervisor through the query socket.
#[derive(Debug)]
pub enum AdminCommand {
    /// Apply a held change for this source (`mispctl release SOURCE`).
    Release {
        source: String,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
}

/// Counters for `/metrics`. The query service feeds the lookup and request counters; the
/// supervisor feeds the sync counters (plain atomic increments, no locks).
#[derive(Debug, Default)]
pub struct Metrics {
    pub lookups: AtomicU64,
    pub lookup_hits: AtomicU64,
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
    pub denied_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    /// Request latency histogram, buckets [`LATENCY_BUCKETS_US`] plus +Inf.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
    /// Supervisor: breaker trips and rejected values (sync counts are per source, in the view).
    pub breaker_trips: AtomicU64,
    pub rejections: AtomicU64,
    /// When the on-disk snapshot was last written (or, after a start, the restored one's
    /// modification time), seconds since the epoch; 0 while there is none.
    pub snapshot_written: AtomicI64,
    /// Snapshot writes that failed (the state directory is full or not writable).
    pub snapshot_failures: AtomicU64,
}

/// Upper bounds (microseconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 10] =
    [10, 25, 50, 100, 250, 500, 1_000, 10_000, 100_000, 1_000_000];

impl Metrics {
    pub fn observe_latency(&self, micros: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }
}

/// One changed value.
pub type Change = (Kind, Box<str>);

/// What changed between two generations.
#[derive(Debug)]
struct JournalStep {
    /// The generation this step starts from (it leads to the next step's `from`).
    from: u64,
    added: Vec<Change>,
    removed: Vec<Change>,
}

/// The answer to `/v1/changes`.
#[derive(Debug)]
pub enum Changes {
    /// The cursor is current: nothing to report (yet).
    Unchanged { cursor: String },
    /// Everything added and removed since the cursor, in order, netted out.
    Delta {
        cursor: String,
        added: Vec<Change>,
        removed: Vec<Change>,
    },
    /// The cursor is unknown, from before a restart or too old: the client must take the whole
    /// current set (`added`) and forget what it had.
    Reset { cursor: String, index: Arc<Index> },
}

/// Bounds on the journal: at most this many steps and this many changed values in total (about
/// 15 MB). A single publication changing more (such as the first one) empties the journal:
/// every older cursor then gets a reset, which is what it needs anyway.
const JOURNAL_MAX_STEPS: usize = 256;
const JOURNAL_MAX_VALUES: usize = 250_000;

#[derive(Debug, Default)]
struct Journal {
    steps: VecDeque<JournalStep>,
    values: usize,
}

/// The handle both sides hold.
pub struct Shared {
    view: ArcSwap<View>,
    admin: mpsc::Sender<AdminCommand>,
    journal: Mutex<Journal>,
    /// A random per-process tag in every cursor, so a cursor from before a restart resets.
    epoch: u64,
    generation_tx: watch::Sender<u64>,
    metrics: Metrics,
    /// Cleared by the supervisor when it stops serving (e.g. while shutting down).
    serving: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("view", &self.view.load())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(view: View, admin: mpsc::Sender<AdminCommand>) -> Arc<Shared> {
        let (generation_tx, _) = watch::channel(view.generation);
        Arc::new(Shared {
            view: ArcSwap::from_pointee(view),
            admin,
            journal: Mutex::new(Journal::default()),
            epoch: fastrand::u64(1..u64::MAX),
            generation_tx,
            metrics: Metrics::default(),
            serving: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// The current view; cheap, lock-free.
    pub fn load(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Publish a new view (supervisor only). When the index changed, the difference to the
    /// previous one is journaled (a merge walk over two sorted entry lists) and waiting
    /// `/v1/changes` readers wake up.
    pub fn publish(&self, view: View) {
        let old = self.view.load_full();
        let generation = view.generation;
        if generation != old.generation {
            let step = if Arc::ptr_eq(&old.index, &view.index) {
                Some((Vec::new(), Vec::new()))
            } else {
                diff(&old.index, &view.index, JOURNAL_MAX_VALUES)
            };
            let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            let Some((added, removed)) = step else {
                j.steps.clear();
                j.values = 0;
                drop(j);
                self.view.store(Arc::new(view));
                self.generation_tx.send_replace(generation);
                return;
            };
            j.values += added.len() + removed.len();
            j.steps.push_back(JournalStep {
                from: old.generation,
                added,
                removed,
            });
            while j.steps.len() > JOURNAL_MAX_STEPS || j.values > JOURNAL_MAX_VALUES {
                if let Some(s) = j.steps.pop_front() {
                    j.values -= s.added.len() + s.removed.len();
                }
            }
        }
        self.view.store(Arc::new(view));
        self.generation_tx.send_replace(generation);
    }

    pub fn admin(&self) -> &mpsc::Sender<AdminCommand> {
        &self.admin
    }

    /// Whether `/v1/health` may say the daemon serves (it also needs a published generation).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A receiver that sees every published generation (for long polls).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// The cursor naming a generation of this process.
    pub fn cursor(&self, generation: u64) -> String {
        format!("{:x}-{}", self.epoch, generation)
    }

    /// What changed since `cursor` (`None`: the client has nothing yet).
    pub fn changes_since(&self, cursor: Option<&str>) -> Changes {
        let view = self.load();
        let current = self.cursor(view.generation);
        let reset = || Changes::Reset {
            cursor: current.clone(),
            index: view.index.clone(),
        };
        let Some(since) = cursor.and_then(|c| self.parse_cursor(c)) else {
            return reset();
        };
        if since == view.generation {
            return Changes::Unchanged { cursor: current };
        }
        let j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        // The journal must hold the step leaving `since` and every step after it.
        let Some(start) = j.steps.iter().position(|s| s.from == since) else {
            drop(j);
            return reset();
        };
        // Net the steps out: a value added then removed is neither.
        let mut state: std::collections::HashMap<(Kind, &str), i32> = Default::default();
        for s in j.steps.iter().skip(start) {
            for (k, v) in &s.added {
                *state.entry((*k, v)).or_default() += 1;
            }
            for (k, v) in &s.removed {
                *state.entry((*k, v)).or_default() -= 1;
            }
        }
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for ((k, v), n) in state {
            match n.cmp(&0) {
                std::cmp::Ordering::Greater => added.push((k, v.into())),
                std::cmp::Ordering::Less => removed.push((k, v.into())),
                std::cmp::Ordering::Equal => {}
            }
        }
        added.sort();
        removed.sort();
        Changes::Delta {
            cursor: current,
            added,
            removed,
        }
    }

    fn parse_cursor(&self, c: &str) -> Option<u64> {
        let (epoch, generation) = c.split_once('-')?;
        (u64::from_str_radix(epoch, 16).ok()? == self.epoch)
            .then(|| generation.parse().ok())
            .flatten()
    }
}

/// `(added, removed)` between two indexes, by `(kind, value)`; `None` as soon as more than `cap`
/// values changed.
fn diff(old: &Index, new: &Index, cap: usize) -> Option<(Vec<Change>, Vec<Change>)> {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut a = old.entries().peekable();
    let mut b = new.entries().peekable();
    loop {
        if added.len() + removed.len() > cap {
            return None;
        }
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match (x.kind(), x.value()).cmp(&(y.kind(), y.value())) {
                std::cmp::Ordering::Less => {
                    removed.push((x.kind(), x.value().into()));
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    added.push((y.kind(), y.value().into()));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    a.next();
                    b.next();
                }
            },
            (Some(x), None) => {
                removed.push((x.kind(), x.value().into()));
                a.next();
            }
            (None, Some(y)) => {
                added.push((y.kind(), y.value().into()));
                b.next();
            }
            (None, None) => break,
        }
    }
    Some((added, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Indicator, Provenance};

    fn index(values: &[&str]) -> Arc<Index> {
        Arc::new(Index::build(
            values
                .iter()
                .map(|v| Indicator {
                    value: (*v).into(),
                    kind: Kind::Domain,
                    provenance: Provenance {
                        source: "s".into(),
                        event_uuid: None,
                        attribute_uuid: "u".into(),
                        misp_type: "domain".into(),
                        category: "c".into(),
                        tags: Arc::from(Vec::new()),
                        timestamp: 0,
                        to_ids: true,
                    },
                    notes: Vec::new(),
                })
                .collect(),
        ))
    }

    fn view(generation: u64, values: &[&str]) -> View {
        View {
            generation,
            index: index(values),
            ..View::default()
        }
    }

    fn names(v: &[Change]) -> Vec<&str> {
        v.iter().map(|(_, s)| &**s).collect()
    }

    #[test]
    fn changes_follow_generations_and_reset_on_unknown_cursors() {
        let (tx, _rx) = mpsc::channel(1);
        let shared = Shared::new(View::default(), tx);
        let Changes::Reset { cursor: c0, index } = shared.changes_since(None) else {
            panic!("expected a reset without a cursor")
        };
        assert!(index.is_empty());
        shared.publish(view(1, &["a.example", "b.example"]));
        shared.publish(view(2, &["b.example", "c.example"]));
        match shared.changes_since(Some(&c0)) {
            Changes::Delta { added, removed, .. } => {
                assert_eq!(names(&added), vec!["b.example", "c.example"]);
                assert!(removed.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let c1 = shared.cursor(1);
        let Changes::Delta {
            cursor,
            added,
            removed,
        } = shared.changes_since(Some(&c1))
        else {
            panic!("expected a delta")
        };
        assert_eq!(names(&added), vec!["c.example"]);
        assert_eq!(names(&removed), vec!["a.example"]);
        assert!(matches!(
            shared.changes_since(Some(&cursor)),
            Changes::Unchanged { cursor: c } if c == cursor
        ));
        // From another process, or from the future: reset with the whole set.
        for bad in ["1-1", "garbage", &shared.cursor(9)] {
            let Changes::Reset { index, .. } = shared.changes_since(Some(bad)) else {
                panic!("expected a reset for {bad}")
            };
            let all: Vec<&str> = index.entries().map(|e| e.value()).collect();
            assert_eq!(all, vec!["b.example", "c.example"]);
        }
    }

    #[test]
    fn a_step_larger_than_the_cap_empties_the_journal() {
        let small = index(&["a.example"]);
        let big = index(&["a.example", "b.example", "c.example", "d.example"]);
        assert!(diff(&small, &big, 2).is_none());
        let (added, removed) = diff(&small, &big, 3).unwrap();
        assert_eq!(names(&added), vec!["b.example", "c.example", "d.example"]);
        assert!(removed.is_empty());

        let (tx, _rx) = mpsc::channel(1);
        let shared = Shared::new(View::default(), tx);
        let many: Vec<String> = (0..JOURNAL_MAX_VALUES + 1)
            .map(|i| format!("v{i}.example"))
            .collect();
        let refs: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        shared.publish(view(1, &refs));
        assert_eq!(shared.journal.lock().unwrap().values, 0);
        let Changes::Reset { index, .. } = shared.changes_since(Some(&shared.cursor(0))) else {
            panic!("a cursor from before an oversized step resets")
        };
        assert_eq!(index.values(), JOURNAL_MAX_VALUES + 1);
        shared.publish(view(2, &refs[1..]));
        let Changes::Delta { removed, .. } = shared.changes_since(Some(&shared.cursor(1))) else {
            panic!("later steps are journaled again")
        };
        assert_eq!(removed.len(), 1);
    }

    #[test]
    fn journal_is_bounded() {
        let (tx, _rx) = mpsc::channel(1);
        let shared = Shared::new(View::default(), tx);
        for g in 1..=(JOURNAL_MAX_STEPS as u64 + 5) {
            let v = format!("v{g}.example");
            shared.publish(view(g, &[&v]));
        }
        let Changes::Reset { .. } = shared.changes_since(Some(&shared.cursor(1))) else {
            panic!("a cursor older than the journal must reset")
        };
        let recent = shared.cursor(JOURNAL_MAX_STEPS as u64);
        let Changes::Delta { added, removed, .. } = shared.changes_since(Some(&recent)) else {
            panic!("a recent cursor gets a delta")
        };
        assert_eq!(added.len(), 1);
        assert_eq!(removed.len(), 1);
    }
}
