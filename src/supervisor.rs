//! The supervisor: owns the per-source published sets, runs one worker per source, applies
//! breakers and corroboration, builds each new generation of the index and publishes it
//! atomically, reloads on SIGHUP, feeds the watchdog, and drains on SIGTERM.

use crate::config::{Config, SourceKind, SourceSettings, Trust};
use crate::credentials::{ApiKey, CredentialError};
use crate::index::Index;
use crate::misp::client::{shared_key, SharedKey};
use crate::model::{
    now_epoch, rfc3339, HeldChange, Indicator, Kind, Rejection, SourceState, SourceStatus,
};
use crate::state::{AdminCommand, Shared, View, WarninglistOracle};
use crate::sync::store_file;
use crate::sync::worker::{fetcher_for, Worker, WorkerEvent, WorkerHandle, WorkerState};
use crate::validate::{breaker, Protected, Validator};
use crate::{notify, snapshot};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How many sample values a rejection summary names in the journal.
const REJECTION_SAMPLES: usize = 5;

struct SourceSlot {
    settings: SourceSettings,
    name: Arc<str>,
    status: SourceStatus,
    /// The source's whole published set when the served index holds only part of it: a
    /// low-trust source, whose uncorroborated indicators are kept but not served. `None` for a
    /// normal-trust source: the index is the only copy of its last known-good set.
    own: Option<Arc<Vec<Indicator>>>,
    /// A new published set for the next [`Supervisor::rebuild`] to take in; kept until a
    /// rebuild succeeds, so a failed one loses nothing and the next one retries it.
    incoming: Option<Arc<Vec<Indicator>>>,
    /// Order-independent digest of the published set ([`set_digest`]); `None` when unknown
    /// (restored from a snapshot), so the first sync rebuilds.
    digest: Option<u64>,
    /// A validated set a breaker refused, waiting for release.
    held: Option<Vec<Indicator>>,
    quarantine: Vec<Rejection>,
    /// Further syncs that returned exactly the held set (for `auto-release-after`).
    held_confirmations: u32,
    /// The rejections of the held set, shown once it is released.
    held_quarantine: Vec<Rejection>,
    /// Reason counts of the last journal summary, so an unchanged quarantine is not re-logged.
    last_rejections: String,
    key: Option<SharedKey>,
    worker: Option<WorkerHandle>,
    stale_warned: bool,
    /// Whether the "API key expires soon" warning was given for the current expiry date.
    expiry_warned: Option<String>,
}

/// The signals the daemon handles, installed first thing at start so that a SIGHUP or SIGTERM
/// during start-up is queued for the supervisor instead of killing the process.
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

pub struct Supervisor {
    config_path: PathBuf,
    config: Config,
    shared: Arc<Shared>,
    validator: Arc<ArcSwap<Validator>>,
    revalidate: watch::Sender<u64>,
    slots: Vec<SourceSlot>,
    generation: u64,
    index: Arc<Index>,
    events_tx: mpsc::UnboundedSender<WorkerEvent>,
    events_rx: mpsc::UnboundedReceiver<WorkerEvent>,
    admin_rx: mpsc::Receiver<AdminCommand>,
}

/// Low-trust sources are served only where a normal-trust source agrees: with none of those,
/// nothing they list is served. Said by `mispctl check-config` and at start.
pub fn corroboration_warning(config: &Config) -> Option<String> {
    let low: Vec<&str> = config
        .sources
        .iter()
        .filter(|s| s.trust == Trust::Low)
        .map(|s| s.name.as_str())
        .collect();
    let any_normal = config.sources.iter().any(|s| s.trust == Trust::Normal);
    (!low.is_empty() && !any_normal).then(|| {
        format!(
            "every source is trust = \"low\" ({}): a low-trust indicator is served only when a normal-trust source lists it too, so nothing will be served",
            low.join(", ")
        )
    })
}

/// Load the validator for a configuration, logging list problems (never fatal).
pub fn build_validator(config: &Config) -> Validator {
    let hosts: Vec<String> = config.sources.iter().filter_map(|s| s.host()).collect();
    let protected = Protected::discover(&hosts, &config.daemon.resolv_conf);
    let (validator, warnings) = Validator::load(&config.validation, protected);
    for w in warnings {
        // The loader marks notes that need no action "(info)" (e.g. no allowlist file).
        if w.ends_with("(info)") {
            tracing::info!(note = %w, "validation");
        } else {
            tracing::warn!(warning = %w, "warninglist or allowlist problem; the rest is loaded");
        }
    }
    validator
}

impl Supervisor {
    pub fn new(
        config_path: PathBuf,
        config: Config,
        shared: Arc<Shared>,
        admin_rx: mpsc::Receiver<AdminCommand>,
        restored: Option<snapshot::Restored>,
        validator: Validator,
    ) -> Supervisor {
        let validator = Arc::new(ArcSwap::from_pointee(validator));
        // Unbounded: a worker must never wait on the supervisor, which may be waiting for it to stop.
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (revalidate, _) = watch::channel(0);
        let mut sup = Supervisor {
            config_path,
            config,
            shared,
            validator,
            revalidate,
            slots: Vec::new(),
            generation: 0,
            index: Arc::new(Index::default()),
            events_tx,
            events_rx,
            admin_rx,
        };
        if let Some(w) = corroboration_warning(&sup.config) {
            tracing::warn!("{w}");
        }
        let mut restored = restored.unwrap_or_default();
        for s in sup.config.sources.clone() {
            let mut slot = new_slot(s);
            let served = restored.served(&slot.name);
            if let Some(r) = restored.sources.remove(&*slot.name) {
                slot.own = r.own.map(Arc::new);
                slot.digest = None;
                slot.quarantine = r.quarantine;
                slot.held = r.held;
                slot.status.indicators = served;
                slot.status.quarantined = slot.quarantine.len();
                slot.status.last_success_epoch = r.last_success;
                slot.status.last_success = r.last_success.map(rfc3339);
                if let Some(h) = r.held_change {
                    slot.status.held = Some(h);
                    slot.status.state = SourceState::Held;
                }
            }
            sup.slots.push(slot);
        }
        if let Some(t) = restored.written_at {
            sup.shared
                .metrics()
                .snapshot_written
                .store(t, Ordering::Relaxed);
        }
        sup.generation = restored.generation;
        sup.index = Arc::new(restored.index);
        sup
    }

    /// Publish the first view (from the snapshot, if any) before `READY=1`. The snapshot's
    /// index is served as it is unless the configuration changed which sources it should hold
    /// or how far they are trusted; then it is rebuilt from the sets it holds.
    pub async fn publish_initial(&mut self) {
        if self.index_fits_config() {
            self.generation += 1;
            self.publish_view();
        } else {
            tracing::info!(
                "the sources changed since the snapshot was written: rebuilding the index"
            );
            self.rebuild().await;
        }
        crate::sys::release_free_memory();
    }

    /// Whether the current index is what a rebuild would make: it names only configured
    /// sources, and exactly the low-trust sources keep their own set.
    fn index_fits_config(&self) -> bool {
        let own_as_trusted = self
            .slots
            .iter()
            .all(|s| s.own.is_some() == (s.settings.trust == Trust::Low));
        own_as_trusted
            && self
                .index
                .source_names()
                .all(|n| self.slots.iter().any(|s| &*s.name == n))
    }

    /// Start every worker and run until SIGTERM/SIGINT. Returns after the final snapshot.
    pub async fn run(mut self, signals: Signals) -> std::io::Result<()> {
        let Signals {
            mut hup,
            mut term,
            mut int,
        } = signals;
        self.forget_removed_stores();
        for i in 0..self.slots.len() {
            self.start_worker(i, WorkerState::default());
        }
        self.publish_view();
        let wd = notify::watchdog_interval();
        let mut wd_tick = tokio::time::interval(wd.unwrap_or(Duration::from_secs(3600)));
        let mut stale_tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                Some(ev) = self.events_rx.recv() => self.on_event(ev).await,
                Some(cmd) = self.admin_rx.recv() => self.on_admin(cmd).await,
                _ = hup.recv() => self.reload().await,
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = wd_tick.tick(), if wd.is_some() => {
                    if self.healthy().await {
                        notify::watchdog();
                    } else {
                        tracing::error!("health probe failed: not feeding the watchdog");
                    }
                }
                _ = stale_tick.tick() => self.check_stale().await,
            }
        }
        notify::stopping();
        self.shared.set_serving(false);
        tracing::info!("stopping: workers first, then the final snapshot");
        for i in 0..self.slots.len() {
            self.stop_worker(i).await;
        }
        self.write_snapshot().await;
        Ok(())
    }

    fn start_worker(&mut self, i: usize, state: WorkerState) {
        let slot = &mut self.slots[i];
        if slot.settings.kind == SourceKind::Misp && slot.key.is_none() {
            match load_key(&self.config, &slot.settings) {
                Ok(k) => slot.key = Some(shared_key(k)),
                Err(e) => {
                    tracing::error!(source = %slot.name, error = %e, "credential refused; this source is disabled, the others keep running");
                    slot.status.state = SourceState::Disabled;
                    slot.status.last_error = Some(e.to_string());
                    return;
                }
            }
        }
        let fetcher = match fetcher_for(&slot.settings, slot.key.clone()) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(source = %slot.name, error = %e, "cannot set up this source; it is disabled");
                slot.status.state = SourceState::Disabled;
                slot.status.last_error = Some(e.to_string());
                return;
            }
        };
        let worker = Worker {
            name: slot.name.clone(),
            settings: slot.settings.clone(),
            fetcher,
            validator: self.validator.clone(),
            revalidate: self.revalidate.subscribe(),
            events: self.events_tx.clone(),
            store_path: store_file::path(&self.config.daemon.state_dir, &slot.name),
        };
        slot.worker = Some(worker.spawn(state));
    }

    async fn stop_worker(&mut self, i: usize) -> WorkerState {
        stop(self.slots[i].worker.take()).await
    }

    async fn on_event(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::Syncing { source } => {
                if let Some(slot) = self.slot_mut(&source) {
                    if slot.status.state != SourceState::Held {
                        slot.status.state = SourceState::Syncing;
                    }
                }
                self.publish_view();
            }
            WorkerEvent::Failed {
                source,
                error,
                auth,
                retry_in,
            } => {
                let Some(slot) = self.slot_mut(&source) else {
                    return;
                };
                tracing::warn!(source = %source, error = %error, retry_in_secs = retry_in.as_secs(), "sync failed; still serving the last good data");
                slot.status.last_error = Some(error);
                slot.status.syncs_failed += 1;
                if slot.status.state != SourceState::Held {
                    slot.status.state = if auth {
                        SourceState::AuthFailed
                    } else if slot.status.last_success_epoch.is_some()
                        && !is_stale(slot, now_epoch())
                    {
                        SourceState::Degraded
                    } else {
                        SourceState::Failing
                    };
                }
                self.publish_view();
            }
            WorkerEvent::Synced {
                source,
                indicators,
                rejected,
                attributes,
                skipped,
                key_expires,
                took,
                fetched,
            } => {
                let Some(i) = self.slots.iter().position(|s| *s.name == *source) else {
                    return;
                };
                if fetched {
                    self.shared
                        .metrics()
                        .rejections
                        .fetch_add(rejected.len() as u64, Ordering::Relaxed);
                    let status = &mut self.slots[i].status;
                    status.syncs_ok += 1;
                    status.last_sync_seconds = Some(took.as_secs_f64());
                }
                let limits = self.config.validation.breaker_limits();
                let quarantine_limit = self.config.daemon.quarantine_limit;
                let slot = &mut self.slots[i];
                log_rejections(slot, &rejected);
                slot.status.key_expires = key_expires.or(slot.status.key_expires.take());
                warn_key_expiry(slot, now_epoch());
                let (added, removed, current) = {
                    let old = published_keys(&slot.own, &slot.name, &self.index);
                    let new: HashSet<_> = indicators.iter().map(key).collect();
                    (
                        new.difference(&old).count(),
                        old.difference(&new).count(),
                        old.len(),
                    )
                };
                // Re-validation after a reload removes what new rules reject: that is the operator's
                // doing, not remote data, so it skips the breaker. Except while a change is held:
                // the worker's store already holds the refused remote data, and re-validating it
                // must not slip the held change through.
                let verdict = if fetched || slot.held.is_some() {
                    breaker::judge_change(current, added, removed, &limits)
                } else {
                    breaker::BreakerVerdict::Apply
                };
                let now = now_epoch();
                let mut rejected = rejected;
                rejected.truncate(quarantine_limit);
                if fetched {
                    slot.status.last_success_epoch = Some(now);
                    slot.status.last_success = Some(rfc3339(now));
                    slot.status.last_error = None;
                    slot.stale_warned = false;
                }
                // Any difference counts, provenance too (a tag added upstream is served at once).
                let digest = set_digest(&indicators);
                let changed = slot.digest != Some(digest) || slot.incoming.is_some();
                match verdict {
                    breaker::BreakerVerdict::Apply => {
                        let what = if fetched {
                            "sync applied"
                        } else {
                            "re-validated with the reloaded rules"
                        };
                        tracing::info!(source = %source, attributes, indicators = indicators.len(), skipped, added, removed, took_ms = took.as_millis() as u64, "{what}");
                        // A re-validation says nothing about the remote side: a failing source stays
                        // failing. It ends a hold only when the held change now passes the breaker.
                        if fetched || slot.status.state == SourceState::Held {
                            slot.status.state = SourceState::Ok;
                        }
                        slot.status.indicators = indicators.len();
                        slot.quarantine = rejected;
                        slot.status.quarantined = slot.quarantine.len();
                        slot.held = None;
                        slot.held_quarantine = Vec::new();
                        slot.status.held = None;
                        if changed {
                            slot.digest = Some(digest);
                            slot.incoming = Some(Arc::new(indicators));
                            self.rebuild().await;
                            self.write_snapshot().await;
                            // The kept rejections were allocated among the whole set's
                            // indicators, now freed: fresh copies sit together, and the pages
                            // around the originals can go back to the kernel.
                            let slot = &mut self.slots[i];
                            slot.quarantine = slot.quarantine.clone();
                            tokio::task::spawn_blocking(crate::sys::release_free_memory);
                        } else {
                            self.publish_view();
                        }
                    }
                    breaker::BreakerVerdict::Hold { reason } => {
                        let same_as_held = fetched
                            && slot
                                .held
                                .as_ref()
                                .is_some_and(|h| diff_counts(h, &indicators) == (0, 0));
                        if fetched {
                            slot.held_confirmations = if same_as_held {
                                slot.held_confirmations + 1
                            } else {
                                0
                            };
                        }
                        // What is served keeps its own quarantine; the held set's waits with it.
                        slot.held_quarantine = rejected;
                        let auto = slot.settings.auto_release_after;
                        if auto > 0 && slot.held_confirmations >= auto {
                            tracing::warn!(source = %source, added, removed, confirmations = slot.held_confirmations,
                                "held change confirmed by {auto} further syncs; applying it (auto-release-after)");
                            slot.held = Some(indicators);
                            let _ = self.release(i).await;
                            return;
                        }
                        let since = slot.status.held.as_ref().map_or(now, |h| h.since);
                        // Report a hold once, and again when a later sync brings a different change.
                        if slot.status.held.is_none() || (fetched && !same_as_held) {
                            self.shared
                                .metrics()
                                .breaker_trips
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::error!(source = %source, added, removed, current, reason = %reason, "mass change held: still serving the last known-good set; release with `mispctl release {source}`");
                        }
                        slot.held = Some(indicators);
                        slot.status.held = Some(HeldChange {
                            added,
                            removed,
                            current,
                            reason,
                            since,
                        });
                        slot.status.state = SourceState::Held;
                        self.publish_view();
                        self.write_snapshot().await;
                    }
                }
            }
        }
    }

    /// Apply the held set of slot `i`; returns the operator message.
    async fn release(&mut self, i: usize) -> Result<String, String> {
        let slot = &mut self.slots[i];
        let source = slot.name.clone();
        let Some(set) = slot.held.take() else {
            return Err(format!("source `{source}` has no held change"));
        };
        let h = slot.status.held.take();
        slot.held_confirmations = 0;
        slot.quarantine = std::mem::take(&mut slot.held_quarantine);
        slot.status.quarantined = slot.quarantine.len();
        slot.status.indicators = set.len();
        slot.digest = Some(set_digest(&set));
        slot.incoming = Some(Arc::new(set));
        slot.status.state = SourceState::Ok;
        let msg = match h {
            Some(h) => format!("released `{source}`: +{} -{}", h.added, h.removed),
            None => format!("released `{source}`"),
        };
        self.rebuild().await;
        self.write_snapshot().await;
        Ok(msg)
    }

    async fn on_admin(&mut self, cmd: AdminCommand) {
        match cmd {
            AdminCommand::Release { source, reply } => {
                let result = match self.slots.iter().position(|s| *s.name == *source) {
                    None => Err(format!("no source named `{source}`")),
                    Some(i) => self.release(i).await,
                };
                if let Ok(msg) = &result {
                    tracing::warn!(source = %source, result = %msg, "held change released by an operator");
                }
                let _ = reply.send(result);
            }
        }
    }

    /// SIGHUP: re-read the configuration and every credential. A configuration that fails to
    /// load or check is rejected and the running one stays.
    async fn reload(&mut self) {
        notify::reloading();
        tracing::info!(path = %self.config_path.display(), "reloading configuration");
        match Config::load(&self.config_path) {
            Err(e) => {
                tracing::error!(error = %e, "new configuration rejected; the running one stays")
            }
            Ok(new) => self.apply_config(new).await,
        }
        notify::ready(&self.status_line());
    }

    async fn apply_config(&mut self, new: Config) {
        // Loading warninglists takes a while: off the runtime's threads.
        let for_validator = new.clone();
        match tokio::task::spawn_blocking(move || build_validator(&for_validator)).await {
            Ok(v) => self.validator.store(Arc::new(v)),
            Err(e) => {
                tracing::error!(error = %e, "reloading the warninglists failed; the previous rules stay")
            }
        }
        // Workers that keep running re-validate their stores with the new rules; the ones
        // restarted below subscribe afterwards and validate once when they start.
        self.revalidate.send_modify(|n| *n += 1);
        let mut old: HashMap<String, SourceSlot> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(|s| (s.name.to_string(), s))
            .collect();
        self.config = new;
        for settings in self.config.sources.clone() {
            match old.remove(&settings.name) {
                Some(slot) if slot.settings == settings && slot.worker.is_some() => {
                    // Unchanged and running: rotate the key in place. A sync in flight finishes
                    // with the key it started with; the next request uses the new one.
                    if let Some(key) = &slot.key {
                        match load_key(&self.config, &slot.settings) {
                            Ok(k) => key.store(Arc::new(k)),
                            Err(e) => {
                                tracing::error!(source = %slot.name, error = %e, "credential refused on reload; the key already loaded stays in use")
                            }
                        }
                    }
                    self.slots.push(slot);
                }
                Some(mut slot) => {
                    let state = stop(slot.worker.take()).await;
                    // Keep the store when it would be asked for the same data: same place, same
                    // server-side filters (the store file is refused otherwise, too).
                    let same_place =
                        store_file::identity(&slot.settings) == store_file::identity(&settings);
                    slot.status.kind = settings.kind.as_str().to_string();
                    slot.settings = settings;
                    slot.key = None;
                    if slot.status.state == SourceState::Disabled {
                        slot.status.state = SourceState::Starting;
                    }
                    self.slots.push(slot);
                    self.start_worker(
                        self.slots.len() - 1,
                        if same_place {
                            state
                        } else {
                            WorkerState::default()
                        },
                    );
                }
                None => {
                    self.slots.push(new_slot(settings));
                    self.start_worker(self.slots.len() - 1, WorkerState::default());
                }
            }
        }
        for (name, mut slot) in old {
            tracing::info!(source = %name, "source removed from the configuration; its indicators are no longer served");
            stop(slot.worker.take()).await;
        }
        self.forget_removed_stores();
        self.rebuild().await;
        self.write_snapshot().await;
    }

    /// Delete the store files of sources no longer configured (a few directory entries).
    fn forget_removed_stores(&self) {
        let keep: Vec<&str> = self.slots.iter().map(|s| &*s.name).collect();
        match store_file::remove_others(&self.config.daemon.state_dir, &keep) {
            Ok(removed) => {
                for path in removed {
                    tracing::info!(path = %path.display(), "store file of a removed source deleted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot tidy the store files of removed sources"),
        }
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut SourceSlot> {
        self.slots.iter_mut().find(|s| &*s.name == name)
    }

    /// Build a new index generation from every source's published set and publish it. A
    /// source's set is its `incoming` one, else its own (low trust), else its records in the
    /// current index: the index is the only copy of a normal-trust source's set.
    async fn rebuild(&mut self) {
        let current = self.index.clone();
        let parts: Vec<Part> = self
            .slots
            .iter()
            .map(|s| Part {
                name: s.name.clone(),
                trust: s.settings.trust,
                from: match (&s.incoming, &s.own) {
                    (Some(new), _) => SetFrom::Set(new.clone()),
                    (None, Some(own)) => SetFrom::Set(own.clone()),
                    (None, None) => SetFrom::Index,
                },
            })
            .collect();
        let built = tokio::task::spawn_blocking(move || assemble(&current, parts)).await;
        match built {
            Ok((index, own)) => {
                for (slot, own) in self.slots.iter_mut().zip(own) {
                    slot.own = own;
                    slot.incoming = None;
                }
                self.index = Arc::new(index);
                self.generation += 1;
            }
            Err(e) => {
                // Nothing was taken from the slots: the new sets stay pending and the next
                // rebuild (the next sync at the latest) tries them again.
                tracing::error!(error = %e, "index build failed; the previous generation stays")
            }
        }
        self.publish_view();
        // The previous generation and the build's inputs are freed now (readers holding the old
        // view let go within a request): give their pages back.
        tokio::task::spawn_blocking(crate::sys::release_free_memory);
    }

    fn publish_view(&self) {
        let mut quarantine: Vec<Rejection> = Vec::new();
        for s in &self.slots {
            quarantine.extend(s.quarantine.iter().cloned());
        }
        let view = View {
            generation: self.generation,
            index: self.index.clone(),
            sources: self.slots.iter().map(|s| s.status.clone()).collect(),
            quarantine: Arc::new(quarantine),
            warninglists: Some(self.validator.clone()),
        };
        self.shared.publish(view);
        notify::status(&self.status_line());
    }

    pub fn status_line(&self) -> String {
        let states: Vec<String> = self
            .slots
            .iter()
            .map(|s| format!("{} {}", s.name, s.status.state.as_str()))
            .collect();
        format!(
            "serving {} indicators (generation {}); {}",
            self.index.len(),
            self.generation,
            if states.is_empty() {
                "no sources configured".to_string()
            } else {
                states.join(", ")
            }
        )
    }

    /// `max-stale`: warn once and report `failing`. `expire-after`: stop serving the source.
    async fn check_stale(&mut self) {
        let now = now_epoch();
        let mut changed = false;
        let mut expired = false;
        for s in &mut self.slots {
            if is_stale(s, now) && !s.stale_warned {
                tracing::warn!(source = %s.name, "data is older than max-stale; still serving it");
                s.stale_warned = true;
                if matches!(s.status.state, SourceState::Degraded | SourceState::Ok) {
                    s.status.state = SourceState::Failing;
                }
                changed = true;
            }
            let too_old = match (s.settings.expire_after, s.status.last_success_epoch) {
                (Some(max), Some(t)) => now - t > max.0.as_secs() as i64,
                _ => false,
            };
            if too_old && s.status.indicators > 0 {
                tracing::error!(source = %s.name, "data is older than expire-after: its indicators are no longer served");
                s.incoming = Some(Arc::new(Vec::new()));
                s.digest = Some(set_digest(&[]));
                s.status.indicators = 0;
                s.status.state = SourceState::Failing;
                expired = true;
            }
        }
        if expired {
            self.rebuild().await;
            self.write_snapshot().await;
        } else if changed {
            self.publish_view();
        }
    }

    /// The watchdog is fed only while the query service answers on its socket and every
    /// worker that should run is alive.
    async fn healthy(&self) -> bool {
        let workers_ok = self
            .slots
            .iter()
            .all(|s| s.worker.as_ref().is_none_or(|w| !w.task.is_finished()));
        if !workers_ok {
            return false;
        }
        let probe = crate::query::client::get(&self.config.query.socket, "/v1/health");
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok((200, _)))
        )
    }

    async fn write_snapshot(&self) {
        let snap = snapshot::Snapshot {
            generation: self.generation,
            index: self.index.clone(),
            sources: self
                .slots
                .iter()
                .map(|s| snapshot::SourceSnapshot {
                    name: s.name.to_string(),
                    own: s.own.clone(),
                    quarantine: s.quarantine.clone(),
                    held: s.held.clone(),
                    held_change: s.status.held.clone(),
                    last_success: s.status.last_success_epoch,
                })
                .collect(),
        };
        let dir = self.config.daemon.state_dir.clone();
        let error = match tokio::task::spawn_blocking(move || snapshot::write(&dir, &snap)).await {
            Ok(Ok(())) => {
                let m = self.shared.metrics();
                m.snapshot_written.store(now_epoch(), Ordering::Relaxed);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the snapshot task failed: {e}"),
        };
        let m = self.shared.metrics();
        m.snapshot_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %error, "could not write the snapshot");
    }
}

async fn stop(worker: Option<WorkerHandle>) -> WorkerState {
    match worker {
        Some(h) => {
            let _ = h.stop.send(true);
            h.task.await.unwrap_or_default()
        }
        None => WorkerState::default(),
    }
}

fn load_key(config: &Config, source: &SourceSettings) -> Result<ApiKey, CredentialError> {
    crate::credentials::load(
        source.api_key.as_deref().unwrap_or_default(),
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .as_deref(),
        &config.daemon.credentials_dir,
        source.allow_nonstandard_key,
    )
}

/// Lookups ask the current validator (swapped on reload) whether a value is itself on a
/// warninglist.
impl WarninglistOracle for ArcSwap<Validator> {
    fn hits(&self, value: &str, out: &mut Vec<crate::index::WarninglistHit>) {
        self.load().for_each_warninglist_hit(value, |l| {
            out.push(crate::index::WarninglistHit {
                name: l.name.clone(),
                category: l.category.as_str(),
            })
        })
    }
}

fn new_slot(settings: SourceSettings) -> SourceSlot {
    let low = settings.trust == Trust::Low;
    SourceSlot {
        name: Arc::from(settings.name.as_str()),
        status: SourceStatus::new(&settings.name, settings.kind.as_str()),
        settings,
        own: low.then(|| Arc::new(Vec::new())),
        incoming: None,
        digest: Some(set_digest(&[])),
        held: None,
        quarantine: Vec::new(),
        held_confirmations: 0,
        held_quarantine: Vec::new(),
        last_rejections: String::new(),
        key: None,
        worker: None,
        stale_warned: false,
        expiry_warned: None,
    }
}

/// Days before the API key's expiry (MISP's `X-Auth-Key-Expiration`) when the journal is told.
const KEY_EXPIRY_WARNING_DAYS: i64 = 14;

/// Warn once per expiry date when the key expires within [`KEY_EXPIRY_WARNING_DAYS`].
fn warn_key_expiry(slot: &mut SourceSlot, now: i64) {
    let Some(expires) = slot.status.key_expires.clone() else {
        return;
    };
    let Some(at) = crate::misp::wire::parse_iso8601(&expires) else {
        return;
    };
    let days = (at - now).div_euclid(86_400);
    if days < KEY_EXPIRY_WARNING_DAYS && slot.expiry_warned.as_deref() != Some(expires.as_str()) {
        tracing::warn!(source = %slot.name, expires = %expires, days_left = days,
            "the MISP API key expires soon: create a new one in MISP, install it, and run `systemctl reload mispd`");
        slot.expiry_warned = Some(expires);
    }
}

fn is_stale(slot: &SourceSlot, now: i64) -> bool {
    match (slot.settings.max_stale, slot.status.last_success_epoch) {
        (Some(max), Some(t)) => now - t > max.0.as_secs() as i64,
        _ => false,
    }
}

fn key(i: &Indicator) -> (&str, Kind) {
    (&i.value, i.kind)
}

/// The distinct `(value, kind)` pairs a source publishes: its own set, or its records in the index.
fn published_keys<'a>(
    own: &'a Option<Arc<Vec<Indicator>>>,
    name: &str,
    index: &'a Index,
) -> HashSet<(&'a str, Kind)> {
    match own {
        Some(set) => set.iter().map(key).collect(),
        None => index.source_keys(name),
    }
}

/// Distinct (value, kind) pairs added and removed going from `old` to `new`.
pub fn diff_counts(old: &[Indicator], new: &[Indicator]) -> (usize, usize) {
    let a: HashSet<_> = old.iter().map(key).collect();
    let b: HashSet<_> = new.iter().map(key).collect();
    (b.difference(&a).count(), a.difference(&b).count())
}

/// An order-independent digest of a set: the wrapping sum of each indicator's keyed hash, every
/// field included. Equal sets give equal digests; a different one is told apart with
/// overwhelming odds (it decides whether a sync needs a rebuild).
pub fn set_digest(set: &[Indicator]) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    // Keyed per process: a source cannot plan two different sets with the same digest.
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(std::hash::RandomState::new);
    set.iter().fold(0u64, |sum, i| {
        let mut h = key.build_hasher();
        i.value.hash(&mut h);
        i.kind.hash(&mut h);
        let p = &i.provenance;
        (
            &p.source,
            &p.event_uuid,
            &p.attribute_uuid,
            &p.misp_type,
            &p.category,
        )
            .hash(&mut h);
        (&p.tags, p.timestamp, p.to_ids, &i.notes).hash(&mut h);
        sum.wrapping_add(h.finish())
    })
}

/// Where [`Supervisor::rebuild`] takes one source's set from: a set it holds (new, or a
/// low-trust source's own), or the source's records in the current index.
enum SetFrom {
    Set(Arc<Vec<Indicator>>),
    Index,
}

struct Part {
    name: Arc<str>,
    trust: Trust,
    from: SetFrom,
}

/// Every normal-trust source's set, plus the low-trust indicators a normal source confirms, in
/// source order, built into a new index (borrowed: nothing is copied before the index copies
/// what it keeps). Returns it with each source's new `own` set (low trust: the whole set;
/// normal trust: `None`, the index holds it).
fn assemble(current: &Index, parts: Vec<Part>) -> (Index, Vec<Option<Arc<Vec<Indicator>>>>) {
    let sets: Vec<(Trust, Arc<Vec<Indicator>>)> = parts
        .into_iter()
        .map(|p| {
            let set = match p.from {
                SetFrom::Set(v) => v,
                SetFrom::Index => Arc::new(current.source_indicators(&p.name)),
            };
            (p.trust, set)
        })
        .collect();
    let normal = || {
        sets.iter()
            .filter(|(t, _)| *t == Trust::Normal)
            .flat_map(|(_, v)| v.iter())
    };
    let confirmed: HashSet<(&str, Kind)> = normal().map(key).collect();
    let mut merged: Vec<&Indicator> = Vec::with_capacity(normal().count());
    for (trust, set) in &sets {
        match trust {
            Trust::Normal => merged.extend(set.iter()),
            Trust::Low => merged.extend(set.iter().filter(|i| confirmed.contains(&key(i)))),
        }
    }
    drop(confirmed);
    let index = Index::build_from(&merged);
    drop(merged);
    let own = sets
        .into_iter()
        .map(|(trust, set)| (trust == Trust::Low).then_some(set))
        .collect();
    (index, own)
}

/// One aggregated journal line per sync, not one per value, and only when the quarantine changed:
/// a poisoned feed of a million rows, or the same few rejects every five minutes, must not flood
/// the journal. A source listing protected infrastructure is an error.
fn log_rejections(slot: &mut SourceSlot, rejected: &[Rejection]) {
    let mut by_code: HashMap<&str, usize> = HashMap::new();
    for r in rejected {
        *by_code.entry(&r.reason.code).or_default() += 1;
    }
    let mut counts: Vec<_> = by_code.into_iter().collect();
    counts.sort();
    let summary = counts
        .iter()
        .map(|(c, n)| format!("{c}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    if summary == slot.last_rejections {
        tracing::debug!(source = %slot.name, quarantined = rejected.len(), "quarantine unchanged");
        return;
    }
    slot.last_rejections = summary.clone();
    if rejected.is_empty() {
        return;
    }
    let source = &slot.name;
    let samples: Vec<String> = rejected
        .iter()
        .take(REJECTION_SAMPLES)
        .map(|r| format!("{} ({}: {})", r.value, r.reason.code, r.reason.detail))
        .collect();
    tracing::warn!(source = %source, quarantined = rejected.len(), reasons = %summary, samples = %samples.join("; "), "values quarantined");
    for r in rejected
        .iter()
        .filter(|r| &*r.reason.code == "protected")
        .take(REJECTION_SAMPLES)
    {
        tracing::error!(source = %source, value = %r.value, detail = %r.reason.detail, attribute = %r.attribute_uuid,
            "source lists this host's own infrastructure: it may be compromised or poisoned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Provenance;

    fn ind(source: &str, value: &str) -> Indicator {
        Indicator {
            value: value.into(),
            kind: Kind::Domain,
            provenance: Provenance {
                source: source.into(),
                event_uuid: None,
                attribute_uuid: format!("{source}-{value}").into(),
                misp_type: "domain".into(),
                category: "Network activity".into(),
                tags: Arc::from(Vec::<Arc<str>>::new()),
                timestamp: 0,
                to_ids: true,
            },
            notes: vec![],
        }
    }

    #[test]
    fn low_trust_indicators_need_a_normal_source_to_agree() {
        let normal = vec![ind("a", "both.example"), ind("a", "only-a.example")];
        let low = vec![ind("b", "both.example"), ind("b", "only-b.example")];
        let parts = vec![
            Part {
                name: "a".into(),
                trust: Trust::Normal,
                from: SetFrom::Set(Arc::new(normal)),
            },
            Part {
                name: "b".into(),
                trust: Trust::Low,
                from: SetFrom::Set(Arc::new(low.clone())),
            },
        ];
        let (index, own) = assemble(&Index::default(), parts);
        let mut got: Vec<(String, String)> = index
            .to_indicators()
            .iter()
            .map(|i| (i.provenance.source.to_string(), i.value.to_string()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("a".to_string(), "both.example".to_string()),
                ("a".into(), "only-a.example".into()),
                ("b".into(), "both.example".into())
            ]
        );
        // The normal source lives in the index only; the low one keeps its whole set.
        assert!(own[0].is_none());
        assert_eq!(**own[1].as_ref().unwrap(), low);

        // Rebuilt from the index and the own set alone (no new data), nothing is lost; a source
        // turned low-trust keeps its whole set out of the index.
        let parts = vec![
            Part {
                name: "a".into(),
                trust: Trust::Low,
                from: SetFrom::Index,
            },
            Part {
                name: "b".into(),
                trust: Trust::Normal,
                from: SetFrom::Set(own[1].clone().unwrap()),
            },
        ];
        let (again, own) = assemble(&index, parts);
        assert_eq!(again.source_len("b"), 2);
        assert_eq!(again.source_len("a"), 1, "only the corroborated value");
        assert_eq!(own[0].as_ref().unwrap().len(), 2);
        assert!(own[1].is_none());
    }

    #[test]
    fn set_digest_ignores_order_and_sees_every_field() {
        let a = vec![ind("a", "x.example"), ind("a", "y.example")];
        let mut b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(set_digest(&a), set_digest(&b));
        b[0].provenance.tags = Arc::from(vec![Arc::<str>::from("tlp:red")]);
        assert_ne!(set_digest(&a), set_digest(&b));
        assert_ne!(set_digest(&a), set_digest(&a[..1]));
        assert_eq!(set_digest(&[]), 0);
    }

    #[test]
    fn diff_counts_distinct_values_added_and_removed() {
        let old = vec![
            ind("a", "x.example"),
            ind("a", "y.example"),
            ind("b", "y.example"),
        ];
        let new = vec![ind("a", "y.example"), ind("a", "z.example")];
        assert_eq!(diff_counts(&old, &new), (1, 1));
    }
}
