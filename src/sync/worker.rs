//! One worker per source: on its schedule it fetches (MISP restSearch pages or a static feed),
//! keeps the source's store of live attributes (on disk between syncs, [`store_file`]),
//! validates the selected ones and hands the result to the supervisor. A failed sync changes nothing that is served; it is retried with jittered
//! exponential backoff up to the interval.

use super::plan::{self, Cursor, Mode, Store};
use super::store_file::{self, StoreFileError};
use crate::config::{SourceKind, SourceSettings};
use crate::misp::client::SharedKey;
use crate::misp::{ClientError, FeedClient, FeedError, MispClient};
use crate::model::{now_epoch, Attribute, Indicator, Rejection};
use crate::validate::Validator;
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why a sync failed. Nothing served changes on any of these.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Misp(#[from] ClientError),
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("the whole sync took longer than {}s (20 times `timeout`); it was abandoned", .0.as_secs())]
    Deadline(Duration),
    #[error("cannot set up the source: {0}")]
    Setup(String),
}

impl SyncError {
    fn client(&self) -> Option<&ClientError> {
        match self {
            SyncError::Misp(e) | SyncError::Feed(FeedError::Client(e)) => Some(e),
            _ => None,
        }
    }
}

/// What a worker tells the supervisor.
#[derive(Debug)]
pub enum WorkerEvent {
    Syncing {
        source: Arc<str>,
    },
    /// A complete, validated view of the source. `fetched` is false when only re-validation ran.
    Synced {
        source: Arc<str>,
        indicators: Vec<Indicator>,
        rejected: Vec<Rejection>,
        attributes: usize,
        skipped: usize,
        key_expires: Option<String>,
        took: Duration,
        fetched: bool,
    },
    Failed {
        source: Arc<str>,
        error: String,
        auth: bool,
        retry_in: Duration,
    },
}

/// What a worker owns between syncs; handed back when it stops so a reload can keep it.
#[derive(Debug, Default)]
pub struct WorkerState {
    pub store: Store,
    pub cursor: Cursor,
    /// Feed sources: event uuid -> manifest timestamp of the version in the store.
    pub feed_events: HashMap<String, i64>,
    /// The state is the source's store file, not the fields above (empty then): between syncs
    /// it stays on disk ([`store_file`]). A default state makes the worker try the file too.
    pub on_disk: bool,
}

/// How the supervisor reaches a running worker.
pub struct WorkerHandle {
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<WorkerState>,
}

pub enum Fetcher {
    Misp(Box<MispClient>),
    Feed(FeedClient),
}

pub struct Worker {
    pub name: Arc<str>,
    pub settings: SourceSettings,
    pub fetcher: Fetcher,
    /// The current validator; the supervisor swaps it on reload.
    pub validator: Arc<ArcSwap<Validator>>,
    /// Bumped by the supervisor on reload: re-validate the store at once with the new rules.
    pub revalidate: watch::Receiver<u64>,
    pub events: mpsc::UnboundedSender<WorkerEvent>,
    /// The source's store file ([`store_file::path`]).
    pub store_path: std::path::PathBuf,
}

impl Worker {
    /// Start the worker. With a non-empty `state` (kept across a reload) it first re-validates
    /// the store with the current validator, so new rules apply at once.
    pub fn spawn(self, state: WorkerState) -> WorkerHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(state, stop_rx));
        WorkerHandle {
            stop: stop_tx,
            task,
        }
    }

    async fn run(mut self, mut state: WorkerState, mut stop: watch::Receiver<bool>) -> WorkerState {
        let interval = self.settings.interval.0;
        let mut failures: u32 = 0;
        // Whether the store file holds exactly what is in memory (no need to write it again).
        let mut saved = false;
        if state.on_disk || has_synced(&state) {
            // Handed over by a reload: the new rules apply at once. The sync follows at once
            // too, so the store stays in memory for it.
            saved = self.load(&mut state).await;
            if let Some(ev) = self.revalidated(&mut state).await {
                let _ = self.events.send(ev);
            }
        } else {
            // A fresh start: the store file of an earlier run, if any, is where the source stands.
            state.on_disk = true;
        }
        loop {
            let _ = self.events.send(WorkerEvent::Syncing {
                source: self.name.clone(),
            });
            let started = Instant::now();
            if state.on_disk {
                saved = self.load(&mut state).await;
            }
            let result = tokio::select! {
                r = self.sync_once(&mut state) => r,
                _ = stop.changed() => return state,
            };
            let wait = match result {
                Ok(Synced {
                    key_expires,
                    changed,
                }) => {
                    failures = 0;
                    saved &= !changed;
                    let ev = self.validate(&mut state, key_expires, started, true).await;
                    // The store goes before the supervisor builds the new index: its memory
                    // is reused for the index instead of leaving holes around it.
                    self.park(&mut state, saved).await;
                    if let Some(ev) = ev {
                        let _ = self.events.send(ev);
                    }
                    interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let retry_in = match e.client() {
                        Some(ClientError::RateLimited { retry_after }) => {
                            (*retry_after).max(Duration::from_secs(1))
                        }
                        _ => backoff(failures, interval),
                    };
                    let auth = matches!(e.client(), Some(ClientError::AuthFailed { .. }));
                    let _ = self.events.send(WorkerEvent::Failed {
                        source: self.name.clone(),
                        error: e.to_string(),
                        auth,
                        retry_in,
                    });
                    retry_in
                }
            };
            self.park(&mut state, saved).await;
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = stop.changed() => return state,
                    Ok(()) = self.revalidate.changed() => self.revalidate_state(&mut state).await,
                }
            }
        }
    }

    /// Re-validate the store with the current rules (after a reload), from its file and back.
    async fn revalidate_state(&self, state: &mut WorkerState) {
        let saved = self.load(state).await;
        let ev = self.revalidated(state).await;
        // Validation reads the store without changing it: a loaded one need not be written.
        self.park(state, saved).await;
        if let Some(ev) = ev {
            let _ = self.events.send(ev);
        }
    }

    /// The store judged by the current rules, when it speaks for the source.
    async fn revalidated(&self, state: &mut WorkerState) -> Option<WorkerEvent> {
        // Only a store filled by a completed sync speaks for the source. Before that (just
        // started from the snapshot, the URL changed on reload and MISP is down, or the store
        // file is gone), re-validating the empty store would publish "nothing" past the
        // breakers and unlist the whole last known-good set.
        if !has_synced(state) {
            return None;
        }
        self.validate(state, None, Instant::now(), false).await
    }

    /// Bring the state in from the store file when it is there. Returns whether it was loaded.
    /// Anything but a sound file of this source's identity leaves the state empty, so the next
    /// sync is a full one, never an incremental one on an empty store (a mass deletion).
    async fn load(&self, state: &mut WorkerState) -> bool {
        if !state.on_disk {
            return false;
        }
        *state = WorkerState::default();
        let path = self.store_path.clone();
        let name = self.name.clone();
        let identity = store_file::identity(&self.settings);
        let loaded =
            tokio::task::spawn_blocking(move || store_file::load(&path, &name, &identity)).await;
        let source = &self.name;
        match loaded {
            Ok(Ok(Some(s))) => {
                *state = s;
                return true;
            }
            Ok(Ok(None)) => {
                tracing::info!(source = %source, "no store file: the next sync is a full one")
            }
            Ok(Err(e @ StoreFileError::Damaged { .. })) => {
                let moved = store_file::quarantine(&self.store_path, now_epoch());
                let moved_to = match &moved {
                    Ok(to) => to.display().to_string(),
                    Err(m) => format!("not moved aside: {m}"),
                };
                tracing::warn!(source = %source, error = %e, moved_to, "store file refused; the next sync is a full one");
            }
            Ok(Err(e @ StoreFileError::Foreign { .. })) => {
                tracing::info!(source = %source, error = %e, "store file not used; the next sync is a full one")
            }
            Ok(Err(e @ StoreFileError::Io { .. })) => {
                tracing::warn!(source = %source, error = %e, "cannot read the store file; the next sync is a full one")
            }
            Err(e) => {
                tracing::error!(source = %source, error = %e, "loading the store file failed; the next sync is a full one")
            }
        }
        false
    }

    /// Put the state in its store file and free its memory until the next sync. `saved`: the
    /// file already holds it. When the file cannot be written the state stays in memory.
    async fn park(&self, state: &mut WorkerState, saved: bool) {
        if state.on_disk {
            return;
        }
        // A state no sync has filled (the file could not be read just now, then the sync
        // failed) is never written over the file: it may be sound, and the next load retries it.
        let saved = saved || !has_synced(state);
        let taken = std::mem::take(state);
        let path = self.store_path.clone();
        let name = self.name.clone();
        let identity = store_file::identity(&self.settings);
        // Writing, and freeing a million attributes, both take a while: off the runtime's threads.
        let parked = tokio::task::spawn_blocking(move || {
            if !saved {
                if let Err(e) = store_file::write(&path, &name, &identity, &taken) {
                    return Err(Box::new((taken, e)));
                }
            }
            drop(taken);
            crate::sys::release_free_memory();
            Ok(())
        })
        .await;
        match parked {
            Ok(Ok(())) => state.on_disk = true,
            Ok(Err(kept)) => {
                let (taken, e) = *kept;
                tracing::warn!(source = %self.name, error = %e, "cannot write the store file; keeping the store in memory");
                *state = taken;
            }
            Err(e) => {
                // The state went with the task; the file holds the last one written, whole.
                tracing::error!(source = %self.name, error = %e, "writing the store file failed");
                state.on_disk = true;
            }
        }
    }

    /// Validate the selected attributes of the store on a blocking thread.
    async fn validate(
        &self,
        state: &mut WorkerState,
        key_expires: Option<String>,
        started: Instant,
        fetched: bool,
    ) -> Option<WorkerEvent> {
        let now = now_epoch();
        let validator = self.validator.load_full();
        let name = self.name.clone();
        let settings = self.settings.clone();
        // The store goes to the blocking pool and comes back: no copy of a million attributes.
        let store = std::mem::take(&mut state.store);
        let judged = tokio::task::spawn_blocking(move || {
            let selected: Vec<&Attribute> = store
                .iter()
                .filter(|a| plan::selected(a, &settings, now))
                .collect();
            let judged = judge_all(&validator, &name, &selected, now);
            let attributes = selected.len();
            drop(selected);
            (store, judged, attributes)
        })
        .await;
        let (store, judged, attributes) = match judged {
            Ok(j) => j,
            Err(e) => {
                // The store went with the task: start over with a full sync, never an
                // incremental one on an empty store (it would look like a mass deletion).
                tracing::error!(source = %self.name, error = %e, "validation task failed; the next sync is a full one");
                *state = WorkerState::default();
                return None;
            }
        };
        state.store = store;
        let (indicators, rejected, skipped) = judged;
        Some(WorkerEvent::Synced {
            source: self.name.clone(),
            indicators,
            rejected,
            attributes,
            skipped,
            key_expires,
            took: started.elapsed(),
            fetched,
        })
    }

    /// Fetch and apply one sync. On error nothing in `state` has changed.
    async fn sync_once(&self, state: &mut WorkerState) -> Result<Synced, SyncError> {
        // A deadline for the whole sync, so a server that answers each page slowly cannot stall us forever.
        let deadline = self.settings.timeout.0 * 20;
        let fut = async {
            match &self.fetcher {
                Fetcher::Misp(client) => self.sync_misp(client, state).await,
                Fetcher::Feed(feed) => self.sync_feed(feed, state).await,
            }
        };
        match tokio::time::timeout(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(SyncError::Deadline(deadline)),
        }
    }

    async fn sync_misp(
        &self,
        client: &MispClient,
        state: &mut WorkerState,
    ) -> Result<Synced, SyncError> {
        let now = now_epoch();
        let mode = plan::choose_mode(
            &state.cursor,
            now,
            self.settings.full_resync.0.as_secs() as i64,
        );
        let limit = self.settings.page_size;
        // A full sync fills a fresh store page by page, so memory holds one decoded page at a
        // time, not the whole response; the current store is untouched until the sync is
        // complete. An incremental sync's pages (usually few) are kept and applied at the end.
        let mut fresh = (mode == Mode::Full).then(|| {
            let mut s = Store::default();
            s.reserve(state.store.len());
            s
        });
        let mut pages = Vec::new();
        let mut max_timestamp = state.cursor.max_timestamp;
        let mut key_expires = None;
        let mut bad_rows = 0;
        for page_no in 1.. {
            let body = plan::search_body(mode, page_no, limit, &self.settings);
            let page = client.search_page(&body).await?;
            bad_rows += page.bad_rows;
            key_expires = page.key_expires.or(key_expires);
            let last = plan::is_last_page(page.returned, page.skipped_by_server, limit);
            match &mut fresh {
                Some(store) => {
                    for a in page.attributes {
                        max_timestamp = max_timestamp.max(Some(a.timestamp));
                        store.apply(a);
                    }
                }
                None => pages.push(page.attributes),
            }
            if last {
                break;
            }
        }
        if bad_rows > 0 {
            tracing::warn!(source = %self.name, bad_rows, "MISP sent attributes that could not be read; they were skipped");
        }
        // The sync is complete: only now does anything change.
        let changed = match fresh {
            Some(store) => {
                state.store = store;
                state.cursor.last_full = Some(now);
                true
            }
            None => {
                // An incremental sync re-reads the overlap window: often it brings nothing new.
                let changed = changes_store(&state.store, pages.iter().flatten());
                state.store.reserve(pages.iter().map(Vec::len).sum());
                for a in pages.into_iter().flatten() {
                    max_timestamp = max_timestamp.max(Some(a.timestamp));
                    state.store.apply(a);
                }
                changed
            }
        };
        state.cursor.max_timestamp = max_timestamp;
        Ok(Synced {
            key_expires,
            changed,
        })
    }

    async fn sync_feed(
        &self,
        feed: &FeedClient,
        state: &mut WorkerState,
    ) -> Result<Synced, SyncError> {
        let manifest = feed.manifest().await?;
        let changed: Vec<(&String, i64)> = manifest
            .iter()
            .filter(|(uuid, ts)| state.feed_events.get(*uuid) != Some(*ts))
            .map(|(u, t)| (u, *t))
            .collect();
        let gone: HashSet<String> = state
            .feed_events
            .keys()
            .filter(|u| !manifest.contains_key(*u))
            .cloned()
            .collect();
        let mut fetched = Vec::with_capacity(changed.len());
        let mut bad_rows = 0;
        let mut missing = HashSet::new();
        let uuids = changed.iter().map(|(u, _)| (*u).clone()).collect();
        let mut events = feed.prefetch(uuids);
        while let Some(result) = events.next().await {
            match result {
                Ok(ev) => {
                    bad_rows += ev.bad_rows;
                    fetched.push(ev.attributes);
                }
                // Real feeds list events whose file is gone (the Infoblox feed has one). Skip that
                // event: keep what we had of it and try it again next time; every other error
                // abandons the whole sync.
                Err(FeedError::EventMissing { uuid }) => {
                    tracing::warn!(source = %self.name, event = %uuid, "the feed's manifest lists an event whose file is missing; skipped");
                    missing.insert(uuid);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let changed: Vec<(&String, i64)> = changed
            .into_iter()
            .filter(|(u, _)| !missing.contains(*u))
            .collect();
        if bad_rows > 0 {
            tracing::warn!(source = %self.name, bad_rows, "feed attributes that could not be read were skipped");
        }
        let mut remove: HashSet<String> = gone;
        remove.extend(changed.iter().map(|(u, _)| (*u).clone()));
        state.store.remove_events(&remove);
        for (uuid, ts) in &changed {
            state.feed_events.insert((*uuid).clone(), *ts);
        }
        state.feed_events.retain(|u, _| manifest.contains_key(u));
        state.store.reserve(fetched.iter().map(Vec::len).sum());
        for a in fetched.into_iter().flatten() {
            state.cursor.max_timestamp = state.cursor.max_timestamp.max(Some(a.timestamp));
            state.store.apply(a);
        }
        // A feed's `last_full` only says that it synced (`has_synced`): no reason to rewrite
        // the store file when no event changed.
        let changed = !remove.is_empty() || state.cursor.last_full.is_none();
        state.cursor.last_full = Some(now_epoch());
        Ok(Synced {
            key_expires: None,
            changed,
        })
    }
}

/// What a completed sync tells the loop.
struct Synced {
    key_expires: Option<String>,
    /// Whether the store or cursor changed (else a loaded store file still holds the state).
    changed: bool,
}

/// Attributes per thread below which a set is judged on one thread.
const PARALLEL_JUDGE: usize = 20_000;

/// Judges every attribute, spread over the cores for large sets; results keep the input order.
/// Indicators share the store's strings (the store interned them), so nothing is copied per
/// indicator but its value. Public for the ingest benchmark, which measures this.
pub fn judge_all(
    validator: &Validator,
    source: &Arc<str>,
    attrs: &[&Attribute],
    now: i64,
) -> (Vec<Indicator>, Vec<Rejection>, usize) {
    let judge = |part: &[&Attribute]| {
        let mut indicators = Vec::with_capacity(part.len());
        let mut rejected = Vec::new();
        let mut skipped = 0;
        for a in part {
            let j = validator.judge(source, a, now);
            skipped += usize::from(j.skipped);
            indicators.extend(j.accepted);
            rejected.extend(j.rejected);
        }
        (indicators, rejected, skipped)
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = cores.clamp(1, 4).min(attrs.len() / PARALLEL_JUDGE).max(1);
    if threads == 1 {
        return judge(attrs);
    }
    let per = attrs.len().div_ceil(threads);
    let parts: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = attrs
            .chunks(per)
            .map(|part| scope.spawn(move || judge(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = (Vec::with_capacity(attrs.len()), Vec::new(), 0);
    for (indicators, rejected, skipped) in parts {
        out.0.extend(indicators);
        out.1.extend(rejected);
        out.2 += skipped;
    }
    out
}

/// Whether applying these attributes would change the store: one pass over it, cheap beside
/// rewriting its file.
fn changes_store<'a>(store: &Store, incoming: impl Iterator<Item = &'a Attribute>) -> bool {
    // Of a uuid sent twice, the version `Store::apply` would keep: the last of the newest.
    let mut by_uuid: HashMap<&str, &Attribute> = HashMap::new();
    for a in incoming {
        let kept = by_uuid.entry(&a.uuid).or_insert(a);
        if a.timestamp >= kept.timestamp {
            *kept = a;
        }
    }
    for s in store.iter() {
        if by_uuid.is_empty() {
            return false;
        }
        if let Some(a) = by_uuid.remove(&*s.uuid) {
            if s != a && s.timestamp <= a.timestamp {
                return true;
            }
        }
    }
    // What the store lacks is news unless it is a delete.
    by_uuid.values().any(|a| !a.deleted)
}

/// Whether the worker's store reflects a completed sync (MISP: a full sync; feeds: any sync).
fn has_synced(state: &WorkerState) -> bool {
    state.cursor.last_full.is_some()
}

/// Exponential backoff from 2 s, capped at the interval, with +-25 % jitter so that many hosts
/// do not retry in step.
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let base = Duration::from_secs(2).saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    let capped = base.min(interval).max(Duration::from_millis(500));
    let jitter = 0.75 + fastrand::f64() * 0.5;
    capped.mul_f64(jitter)
}

/// Build the fetcher for a source: a pinned-TLS MISP client or a feed reader.
pub fn fetcher_for(
    settings: &SourceSettings,
    key: Option<SharedKey>,
) -> Result<Fetcher, SyncError> {
    let tls = settings.tls().map_err(SyncError::Setup)?;
    let max = usize::try_from(settings.max_response_bytes).unwrap_or(usize::MAX);
    match settings.kind {
        SourceKind::Misp => {
            let key = key.ok_or_else(|| SyncError::Setup("no credential loaded".into()))?;
            let client = MispClient::new(&settings.url, &tls, settings.timeout.0, key, max)?;
            Ok(Fetcher::Misp(Box::new(client)))
        }
        SourceKind::Feed => {
            let location = match settings.feed_dir() {
                Some(dir) => std::path::absolute(&dir)
                    .map_err(|e| SyncError::Setup(format!("{}: {e}", dir.display())))?
                    .display()
                    .to_string(),
                None => settings.url.clone(),
            };
            Ok(Fetcher::Feed(FeedClient::new(
                &location,
                &tls,
                settings.timeout.0,
                max,
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging_in_parallel_gives_what_one_thread_gives_in_order() {
        let settings = crate::validate::Settings {
            warninglists: vec![],
            allowlist: None,
            ..Default::default()
        };
        let (v, _) = Validator::load(&settings, crate::validate::Protected::default());
        let attrs: Vec<Attribute> = (0..3 * PARALLEL_JUDGE + 17)
            .map(|i| {
                let (t, value) = match i % 5 {
                    0 => ("domain", format!("d{i}.example-c2.net")),
                    1 => (
                        "ip-dst",
                        format!("11.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                    ),
                    2 => ("domain", format!("not a domain {i}")),
                    3 => ("comment", format!("free text {i}")),
                    _ => (
                        "domain|ip",
                        format!("p{i}.example-c2.net|12.0.{}.{}", i >> 8 & 255, i & 255),
                    ),
                };
                Attribute {
                    uuid: format!("00000000-0000-4000-8000-{i:012x}").into(),
                    event_uuid: Some("e1".into()),
                    misp_type: t.into(),
                    category: "Network activity".into(),
                    value: value.into(),
                    to_ids: true,
                    deleted: false,
                    timestamp: 1,
                    tags: Arc::from(Vec::new()),
                    last_seen: None,
                    event_published: None,
                }
            })
            .collect();
        let refs: Vec<&Attribute> = attrs.iter().collect();
        let source: Arc<str> = Arc::from("s");
        let (ind, rej, skipped) = judge_all(&v, &source, &refs, 0);
        let mut one = (Vec::new(), Vec::new(), 0);
        for a in &refs {
            let j = v.judge(&source, a, 0);
            one.0.extend(j.accepted);
            one.1.extend(j.rejected);
            one.2 += usize::from(j.skipped);
        }
        assert_eq!(skipped, one.2);
        assert!(skipped > 0 && !rej.is_empty() && ind.len() > attrs.len() / 2);
        assert_eq!(ind, one.0, "same indicators in the same order");
        assert_eq!(rej, one.1);
    }

    #[test]
    fn only_attributes_that_would_change_the_store_count_as_a_change() {
        let attr = |uuid: &str, ts: i64, value: &str, deleted: bool| Attribute {
            uuid: uuid.into(),
            event_uuid: Some("e1".into()),
            misp_type: "domain".into(),
            category: "Network activity".into(),
            value: value.into(),
            to_ids: true,
            deleted,
            timestamp: ts,
            tags: Arc::from(Vec::new()),
            last_seen: None,
            event_published: None,
        };
        let mut store = Store::default();
        store.apply(attr("a", 10, "a.example-c2.net", false));
        store.apply(attr("b", 10, "b.example-c2.net", false));
        let changes = |incoming: &[Attribute]| changes_store(&store, incoming.iter());
        assert!(!changes(&[]));
        // The overlap window returns what the store already holds.
        assert!(!changes(&[attr("a", 10, "a.example-c2.net", false)]));
        assert!(!changes(&[attr("a", 9, "older.example-c2.net", false)]));
        assert!(
            !changes(&[attr("zz", 11, "x.example-c2.net", true)]),
            "delete of unknown"
        );
        assert!(changes(&[attr("a", 10, "edited.example-c2.net", false)]));
        assert!(
            changes(&[attr("b", 11, "b.example-c2.net", true)]),
            "a delete"
        );
        assert!(
            changes(&[attr("c", 1, "c.example-c2.net", false)]),
            "a new one"
        );
        let mut flipped = attr("a", 10, "a.example-c2.net", false);
        flipped.to_ids = false;
        assert!(changes(&[flipped]));
        let same = attr("a", 10, "a.example-c2.net", false);
        let edited = attr("a", 11, "edited.example-c2.net", false);
        assert!(!changes(&[same.clone(), same.clone()]), "twice in one sync");
        assert!(changes(&[same.clone(), edited.clone()]));
        let older_edit = attr("a", 9, "edited.example-c2.net", false);
        assert!(
            !changes(&[older_edit, same.clone()]),
            "the newest version is the stored one"
        );
        let mut gone = same.clone();
        gone.deleted = true;
        assert!(!changes(&[gone, same]), "deleted, then back as it was");
    }

    #[test]
    fn backoff_grows_and_is_capped_by_interval() {
        let i = Duration::from_secs(60);
        assert!(backoff(1, i) <= Duration::from_millis(2500));
        assert!(backoff(3, i) >= Duration::from_secs(6));
        for n in 1..40 {
            assert!(backoff(n, i) <= i.mul_f64(1.25));
        }
    }
}
