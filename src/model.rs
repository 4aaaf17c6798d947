//! The data every stage shares: what a source yields ([`Attribute`]), what validation publishes
//! ([`Indicator`] with its [`Provenance`]), what it holds back ([`Rejection`]), and how each
//! source is doing ([`SourceStatus`]). Plain data: no I/O, no transport.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One MISP attribute as mispd understands it, whichever wire format it came from
/// (`/attributes/restSearch` or a static feed's event file). Numbers and flags are already
/// normalised (MISP sends strings or integers, bools or 0/1); `value` is exactly as received.
/// The strings many attributes repeat (event uuid, type, category, tag list) are `Arc`s, so
/// that a sync store of a million attributes keeps one copy of each
/// ([`Interner::share`](crate::validate::Interner::share)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub uuid: Box<str>,
    pub event_uuid: Option<Arc<str>>,
    /// The MISP type, e.g. `ip-dst`, `domain|ip`, `sha256`.
    pub misp_type: Arc<str>,
    pub category: Arc<str>,
    /// Raw value as MISP sent it (composites as `a|b`).
    pub value: Box<str>,
    pub to_ids: bool,
    pub deleted: bool,
    /// Attribute timestamp, seconds since the epoch.
    pub timestamp: i64,
    /// Attribute tags followed by inherited event tags, names only.
    pub tags: Arc<[Arc<str>]>,
    /// `last_seen` as epoch seconds when MISP gave one.
    pub last_seen: Option<i64>,
    /// Whether the attribute's event is published, when the wire format says.
    pub event_published: Option<bool>,
}

/// How an indicator is matched by lookups. Validation decides the kind from the MISP type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A single IPv4 or IPv6 address (canonical text form).
    Ip,
    /// A network in CIDR form; matches every address inside it.
    Cidr,
    /// A domain: matches the name and all its subdomains.
    Domain,
    /// A host name: matches exactly.
    Hostname,
    /// A URL, normalised (scheme and host lowercased, default port and fragment dropped).
    Url,
    /// An email address, lowercased.
    Email,
    /// A hex digest (md5, sha1, sha256, ...), lowercased; matched exactly.
    Hash,
    /// Anything else that is matched exactly as a string (filenames, mutexes, JA3, AS...).
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ip => "ip",
            Kind::Cidr => "cidr",
            Kind::Domain => "domain",
            Kind::Hostname => "hostname",
            Kind::Url => "url",
            Kind::Email => "email",
            Kind::Hash => "hash",
            Kind::Other => "other",
        }
    }
}

/// Where a published indicator came from. Shared strings are `Arc<str>` so that the many
/// indicators of one event or source point at one copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub source: Arc<str>,
    pub event_uuid: Option<Arc<str>>,
    pub attribute_uuid: Arc<str>,
    /// The MISP type of the attribute the value came from (e.g. `domain|ip` for a composite half).
    pub misp_type: Arc<str>,
    pub category: Arc<str>,
    pub tags: Arc<[Arc<str>]>,
    pub timestamp: i64,
    pub to_ids: bool,
}

/// A value that passed validation and may be served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Indicator {
    /// Normalised value, the form lookups are matched against.
    pub value: Box<str>,
    pub kind: Kind,
    pub provenance: Provenance,
    /// Notes a client should see with a match, e.g. `refanged` or an `inform` warninglist hit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Box<str>>,
}

/// Why a value was held back. `code` is stable and machine-readable (`syntax`, `bogon`,
/// `too-broad`, `public-suffix`, `protected`, `warninglist`, `allowlist`, `defanged`,
/// `unsupported-type`, `corroboration`...); `detail` says what exactly, for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectReason {
    pub code: Box<str>,
    pub detail: Box<str>,
}

/// A quarantined value with its origin and reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub source: Arc<str>,
    pub value: Box<str>,
    pub misp_type: Box<str>,
    pub event_uuid: Option<Box<str>>,
    pub attribute_uuid: Box<str>,
    pub reason: RejectReason,
    /// When it was rejected, seconds since the epoch.
    pub at: i64,
}

/// The health of one source, as an explicit state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceState {
    /// Configured, no sync finished yet.
    Starting,
    /// A sync is in progress.
    Syncing,
    /// Last sync succeeded.
    Ok,
    /// Last sync failed, earlier data still served and within `max-stale`.
    Degraded,
    /// MISP refused the key (403) or the credential could not be loaded.
    AuthFailed,
    /// A mass change tripped a breaker; the last known-good set is served.
    Held,
    /// Syncs keep failing and the data is older than `max-stale` (or there is none).
    Failing,
    /// The source cannot run (e.g. its credential file is unsafe); others continue.
    Disabled,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Syncing => "syncing",
            SourceState::Ok => "ok",
            SourceState::Degraded => "degraded",
            SourceState::AuthFailed => "auth-failed",
            SourceState::Held => "held",
            SourceState::Failing => "failing",
            SourceState::Disabled => "disabled",
        }
    }
}

/// A change a breaker refused to apply, waiting for `mispctl release` or confirmation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HeldChange {
    pub added: usize,
    pub removed: usize,
    pub current: usize,
    pub reason: String,
    pub since: i64,
}

/// What `/v1/status` says about one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SourceStatus {
    pub name: String,
    pub kind: String,
    pub state: SourceState,
    /// RFC 3339 time of the last successful sync.
    pub last_success: Option<String>,
    /// Seconds since the epoch of the last successful sync (for age computations).
    #[serde(skip)]
    pub last_success_epoch: Option<i64>,
    pub last_error: Option<String>,
    pub indicators: usize,
    pub quarantined: usize,
    pub held: Option<HeldChange>,
    /// When the API key expires, if MISP said so (`X-Auth-Key-Expiration`).
    pub key_expires: Option<String>,
    /// How long the last completed sync took (fetch, decode, validation), in seconds.
    pub last_sync_seconds: Option<f64>,
    /// Syncs that completed and that failed since the daemon started (for `/metrics`).
    #[serde(skip)]
    pub syncs_ok: u64,
    #[serde(skip)]
    pub syncs_failed: u64,
}

impl SourceStatus {
    pub fn new(name: &str, kind: &str) -> Self {
        SourceStatus {
            name: name.to_string(),
            kind: kind.to_string(),
            state: SourceState::Starting,
            last_success: None,
            last_success_epoch: None,
            last_error: None,
            indicators: 0,
            quarantined: 0,
            held: None,
            key_expires: None,
            last_sync_seconds: None,
            syncs_ok: 0,
            syncs_failed: 0,
        }
    }
}

/// Seconds since the epoch, now. The only clock read in this module; logic takes time as a parameter.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, seconds) for an epoch time.
pub fn rfc3339(epoch: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
