//! The sync planner: what to ask MISP next, when a page is the last, how a page changes the
//! source's store, which attributes a source publishes. Plain functions over data, with time as a
//! parameter; no HTTP, no TLS, no tokio (MISP-API-NOTES §B, C, E).

use crate::config::SourceSettings;
use crate::model::Attribute;
use crate::validate::Interner;
use serde_json::json;
use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

/// Incremental syncs ask again for this many seconds before the cursor: MISP compares with `>=`
/// and clocks of synced instances drift. Duplicates are harmless (the store is keyed by uuid).
pub const CURSOR_OVERLAP_SECS: i64 = 120;

/// Where a source's sync stands between runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Largest attribute timestamp seen so far.
    pub max_timestamp: Option<i64>,
    /// When the last full resync finished (epoch seconds).
    pub last_full: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Ask for everything; what is not returned has vanished (hard delete, access lost).
    Full,
    /// Ask for attributes changed since `since` (epoch seconds, inclusive).
    Incremental { since: i64 },
}

/// Full when there is no cursor yet or the last full resync is older than `full_every` seconds.
pub fn choose_mode(cursor: &Cursor, now: i64, full_every: i64) -> Mode {
    match (cursor.max_timestamp, cursor.last_full) {
        (Some(ts), Some(full)) if now - full < full_every => Mode::Incremental {
            since: (ts - CURSOR_OVERLAP_SECS).max(0),
        },
        _ => Mode::Full,
    }
}

/// The body of one `POST /attributes/restSearch` page. Filters that MISP evaluates on state that
/// does not bump attribute timestamps (to_ids flips, tags, types rewritten on delete) are applied
/// by mispd on its own store instead, so an incremental sync cannot miss a change of them.
pub fn search_body(
    mode: Mode,
    page: u32,
    limit: u32,
    source: &SourceSettings,
) -> serde_json::Value {
    let mut body = json!({
        "returnFormat": "json",
        "page": page,
        "limit": limit,
        "order": "Attribute.id asc",
        "deleted": [0, 1],
        "includeEventUuid": 1,
        "includeEventTags": 1,
    });
    if let Mode::Incremental { since } = mode {
        body["attribute_timestamp"] = json!(since);
    }
    if source.published_only {
        // Unpublishing does not bump attribute timestamps: the next full resync catches it.
        body["published"] = json!(1);
    }
    if source.exclude_decayed {
        // Decay is a function of time, not an edit: an attribute that decays is not returned
        // by later incremental syncs either, so it leaves the store at the next full resync.
        body["includeDecayScore"] = json!(1);
        body["excludeDecayed"] = json!(1);
        if !source.decaying_models.is_empty() {
            body["decayingModel"] = json!(source.decaying_models);
        }
    }
    body
}

/// Whether the page just read is the last one (§E): fewer rows than asked for, counting rows the
/// server skipped for its own warninglists. A failed or truncated page never gets here: it is an error.
pub fn is_last_page(returned: usize, skipped_by_server: usize, limit: u32) -> bool {
    returned + skipped_by_server < limit as usize
}

/// Every attribute a source has told us about and not deleted, keyed by uuid (never by value:
/// a soft delete may rewrite the value, §C). Kept between syncs for incremental sync, so it is
/// compact: each attribute boxed once (the table holds pointers), keyed by its own uuid, its
/// repeated strings shared through one interner.
#[derive(Clone, Debug, Default)]
pub struct Store {
    by_uuid: HashSet<Stored>,
    shared: Interner,
}

/// An attribute in the store, hashed and compared by its uuid.
#[derive(Clone, Debug)]
struct Stored(Box<Attribute>);

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.0.uuid == other.0.uuid
    }
}

impl Eq for Stored {}

impl Hash for Stored {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.uuid.hash(h)
    }
}

impl Borrow<str> for Stored {
    fn borrow(&self) -> &str {
        &self.0.uuid
    }
}

impl Store {
    pub fn len(&self) -> usize {
        self.by_uuid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uuid.is_empty()
    }

    /// Makes room for `additional` more attributes at once, so a full sync does not grow the
    /// table step by step (each growth re-hashes every uuid, two cache misses apiece).
    pub fn reserve(&mut self, additional: usize) {
        self.by_uuid.reserve(additional);
    }

    /// Apply one attribute from a page: newer versions replace older ones, deletes remove.
    pub fn apply(&mut self, mut attr: Attribute) {
        if let Some(old) = self.by_uuid.get(&*attr.uuid) {
            if old.0.timestamp > attr.timestamp {
                return;
            }
        }
        if attr.deleted {
            self.by_uuid.remove(&*attr.uuid);
        } else {
            self.shared.share(&mut attr);
            self.by_uuid.replace(Stored(Box::new(attr)));
        }
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.iter().map(|a| a.timestamp).max()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Attribute> {
        self.by_uuid.iter().map(|s| &*s.0)
    }

    /// Remove every attribute of these events (a feed event that left the manifest or changed).
    pub fn remove_events(&mut self, events: &HashSet<String>) {
        let before = self.by_uuid.len();
        self.by_uuid.retain(|s| {
            s.0.event_uuid
                .as_deref()
                .is_none_or(|e| !events.contains(e))
        });
        if self.by_uuid.len() < before {
            self.reshare();
        }
    }

    /// Start the shared strings afresh from the attributes still stored, so the uuids and tag
    /// lists of removed events do not stay in memory for the life of a feed source.
    fn reshare(&mut self) {
        self.shared = Interner::default();
        let old = std::mem::take(&mut self.by_uuid);
        self.by_uuid.reserve(old.len());
        for Stored(mut a) in old {
            self.shared.share(&mut a);
            self.by_uuid.insert(Stored(a));
        }
    }
}

/// The client-side filters of a source (`to-ids-only`, `published-only`, `tags`, `not-tags`,
/// `types`, `max-age`). Tag patterns match case-insensitively; a trailing `%` or `*` matches any
/// suffix. `now` is epoch seconds.
pub fn selected(attr: &Attribute, source: &SourceSettings, now: i64) -> bool {
    if attr.deleted || (source.to_ids_only && !attr.to_ids) {
        return false;
    }
    if let Some(max_age) = source.max_age {
        let seen = attr.last_seen.unwrap_or(attr.timestamp).max(attr.timestamp);
        if now - seen > max_age.0.as_secs() as i64 {
            return false;
        }
    }
    if source.published_only && attr.event_published == Some(false) {
        return false;
    }
    if !source.types.is_empty() && !source.types.iter().any(|t| **t == *attr.misp_type) {
        return false;
    }
    let has = |pat: &String| attr.tags.iter().any(|t| tag_matches(pat, t));
    if !source.tags.is_empty() && !source.tags.iter().any(has) {
        return false;
    }
    !source.not_tags.iter().any(has)
}

fn tag_matches(pattern: &str, tag: &str) -> bool {
    match pattern.strip_suffix(['%', '*']) {
        Some(prefix) => {
            tag.len() >= prefix.len() && tag[..prefix.len()].eq_ignore_ascii_case(prefix)
        }
        None => pattern.eq_ignore_ascii_case(tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn attr(uuid: &str, ts: i64, deleted: bool) -> Attribute {
        Attribute {
            uuid: uuid.into(),
            event_uuid: Some("e1".into()),
            misp_type: "ip-dst".into(),
            category: "Network activity".into(),
            value: "198.51.100.1".into(),
            to_ids: true,
            deleted,
            timestamp: ts,
            tags: vec!["tlp:white".into()].into(),
            last_seen: None,
            event_published: Some(true),
        }
    }

    fn source() -> SourceSettings {
        toml::from_str("name='s'\nkind='misp'\nurl='https://misp.example.org'\napi-key='k'\n")
            .unwrap()
    }

    #[test]
    fn first_sync_and_stale_full_are_full() {
        assert_eq!(choose_mode(&Cursor::default(), 1000, 3600), Mode::Full);
        let c = Cursor {
            max_timestamp: Some(900),
            last_full: Some(0),
        };
        assert_eq!(choose_mode(&c, 10_000, 3600), Mode::Full);
        assert_eq!(
            choose_mode(&c, 1000, 3600),
            Mode::Incremental {
                since: 900 - CURSOR_OVERLAP_SECS
            }
        );
    }

    #[test]
    fn body_pages_with_fixed_order_and_deleted_both() {
        let b = search_body(Mode::Incremental { since: 77 }, 3, 500, &source());
        assert_eq!(b["page"], 3);
        assert_eq!(b["limit"], 500);
        assert_eq!(b["order"], "Attribute.id asc");
        assert_eq!(b["deleted"], json!([0, 1]));
        assert_eq!(b["attribute_timestamp"], 77);
        assert!(search_body(Mode::Full, 1, 500, &source())
            .get("attribute_timestamp")
            .is_none());
    }

    #[test]
    fn last_page_counts_server_skipped_rows() {
        assert!(!is_last_page(500, 0, 500));
        assert!(!is_last_page(498, 2, 500));
        assert!(is_last_page(10, 0, 500));
        assert!(is_last_page(0, 0, 500));
    }

    #[test]
    fn store_applies_newer_versions_and_deletes() {
        let mut s = Store::default();
        s.reserve(3);
        s.apply(attr("a", 10, false));
        s.apply(attr("a", 5, true)); // older delete: ignored
        assert_eq!(s.len(), 1);
        s.apply(attr("a", 20, true));
        assert!(s.is_empty());
    }

    #[test]
    fn store_shares_strings_and_forgets_those_of_removed_events() {
        let mut s = Store::default();
        let mut b = attr("b", 1, false);
        b.event_uuid = Some("e2".into());
        for a in [attr("a", 1, false), attr("c", 1, false), b] {
            s.apply(a);
        }
        let by = |s: &Store, u: &str| s.iter().find(|a| &*a.uuid == u).unwrap().clone();
        assert!(Arc::ptr_eq(&by(&s, "a").tags, &by(&s, "c").tags));
        let e1 = by(&s, "a").event_uuid.unwrap();
        assert!(Arc::ptr_eq(&e1, by(&s, "c").event_uuid.as_ref().unwrap()));
        assert_eq!(
            s.shared.len(),
            5,
            "e1, e2, ip-dst, Network activity, tlp:white"
        );
        s.remove_events(&HashSet::from(["e2".to_string()]));
        assert_eq!(s.len(), 2);
        assert_eq!(s.shared.len(), 4, "e2 is forgotten");
        assert!(Arc::ptr_eq(&by(&s, "a").tags, &by(&s, "c").tags));
    }

    #[test]
    fn filters_are_client_side() {
        let mut src = source();
        let mut a = attr("a", 1, false);
        assert!(selected(&a, &src, 10));
        a.to_ids = false;
        assert!(!selected(&a, &src, 10));
        a.to_ids = true;
        src.tags = vec!["TLP:%".into()];
        assert!(selected(&a, &src, 10));
        src.not_tags = vec!["tlp:white".into()];
        assert!(!selected(&a, &src, 10));
    }

    #[test]
    fn max_age_uses_last_seen_when_newer() {
        let mut src = source();
        src.max_age = Some(crate::config::HumanDuration(
            std::time::Duration::from_secs(100),
        ));
        let mut a = attr("a", 1000, false);
        assert!(selected(&a, &src, 1050));
        assert!(!selected(&a, &src, 1200));
        a.last_seen = Some(1150);
        assert!(selected(&a, &src, 1200), "seen recently: still published");
    }
}
