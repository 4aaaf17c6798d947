//! Validation: every attribute from every source passes through here before anything is
//! published. Pure logic over data (files are read only when lists are loaded and host facts
//! discovered): syntax by MISP type, sanity (bogons, too-broad networks, public suffixes),
//! protected host infrastructure, MISP warninglists, the local allowlist, and the mass-change
//! breakers. See `docs/validation.md` for the operator's view.
//!
//! Checks run in this order and the first failure is the rejection reason:
//! 1. syntax (`syntax`, or `defanged` when refanging is off), 2. sanity (`bogon`, `too-broad`,
//!    `public-suffix`), 3. `protected`, 4. `warninglist`, 5. `allowlist`.

mod allowlist;
pub mod breaker;
mod fxhash;
mod protected;
mod sanity;
mod syntax;
mod types;
mod warninglist;

pub use breaker::{judge_change, BreakerLimits, BreakerVerdict};

/// Whether mispd indexes this MISP type (exports and filters check names against it).
pub fn is_indexed_type(misp_type: &str) -> bool {
    types::INDEXED_TYPES.contains(&misp_type)
}
pub use protected::Protected;
pub use warninglist::{Action, Category, KNOWN_LISTS};

use crate::model::{Attribute, Indicator, Kind, Provenance, RejectReason, Rejection};
use allowlist::Allowlist;
use ipnet::IpNet;
use sanity::{Insane, Sanity};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use syntax::{Parsed, UrlHost};
use types::{Part, Shape};
use warninglist::{ListMeta, Probe, RawHit, Warninglists};

/// The `[validation]` section of the configuration. Every field has a safe default.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Settings {
    /// Directories of MISP warninglists, each in MISP layout (`lists/<name>/list.json`) or flat
    /// (`<name>/list.json`). Default: `["/usr/share/mispd/warninglists"]` (shipped with the package).
    pub warninglists: Vec<PathBuf>,
    /// Action per list (folder name such as `amazon-aws`, or the list's `name`): `block` or
    /// `inform`. Default: `block` for false-positive lists, `inform` for the known-services
    /// lists (dynamic DNS, URL shorteners, VPN exits...; see [`KNOWN_LISTS`]).
    pub warninglist_actions: BTreeMap<String, Action>,
    /// Lists not loaded at all (folder name or list name). Default: none.
    pub disabled_warninglists: Vec<String>,
    /// The local allowlist file; a missing file is an empty allowlist. `""` disables it.
    /// Default: `/etc/mispd/allowlist.txt`.
    pub allowlist: Option<PathBuf>,
    /// IPv4 networks shorter than this prefix are rejected as `too-broad`. Default: 16.
    pub min_prefix_v4: u8,
    /// IPv6 networks shorter than this prefix are rejected as `too-broad`. Default: 32.
    pub min_prefix_v6: u8,
    /// Special-purpose ranges that may be published anyway (e.g. a lab's own RFC 1918 network),
    /// as CIDRs; an indicator must lie entirely inside one. Default: none.
    pub allow_bogons: Vec<String>,
    /// Refang defanged values (`hxxp://`, `[.]`) and publish them with a `refanged` note; when
    /// false they are quarantined with reason `defanged`. Default: true (the real defanged
    /// values seen are flagged `to_ids` by their authors and are real indicators).
    pub refang: bool,
    /// Breaker: hold a sync that adds more than this many indicators. Default: 500000.
    pub max_added: usize,
    /// Breaker: hold a sync whose additions exceed this percentage of the current set. Default: 1000.
    pub max_added_percent: u32,
    /// Breaker: hold a sync that removes more than this percentage of the current set. Default: 50.
    pub max_removed_percent: u32,
    /// Breaker: the percentage limits apply only to changes larger than this. Default: 100.
    pub breaker_floor: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let b = BreakerLimits::default();
        Settings {
            warninglists: vec![PathBuf::from("/usr/share/mispd/warninglists")],
            warninglist_actions: BTreeMap::new(),
            disabled_warninglists: Vec::new(),
            allowlist: Some(PathBuf::from("/etc/mispd/allowlist.txt")),
            min_prefix_v4: 16,
            min_prefix_v6: 32,
            allow_bogons: Vec::new(),
            refang: true,
            max_added: b.max_added,
            max_added_percent: b.max_added_percent,
            max_removed_percent: b.max_removed_percent,
            breaker_floor: b.floor,
        }
    }
}

impl Settings {
    /// Semantic checks; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=32).contains(&self.min_prefix_v4) {
            return Err(format!(
                "validation.min-prefix-v4 = {} must be between 1 and 32",
                self.min_prefix_v4
            ));
        }
        if !(1..=128).contains(&self.min_prefix_v6) {
            return Err(format!(
                "validation.min-prefix-v6 = {} must be between 1 and 128",
                self.min_prefix_v6
            ));
        }
        for b in &self.allow_bogons {
            syntax::parse_net(b.trim(), true).map_err(|e| {
                format!("validation.allow-bogons: {e} (write a CIDR such as 10.9.0.0/16)")
            })?;
        }
        if !(1..=100).contains(&self.max_removed_percent) {
            return Err(format!(
                "validation.max-removed-percent = {} must be between 1 and 100",
                self.max_removed_percent
            ));
        }
        if self.max_added_percent == 0 {
            return Err("validation.max-added-percent must be at least 1".into());
        }
        if self.max_added == 0 {
            return Err("validation.max-added must be at least 1".into());
        }
        for k in self.warninglist_actions.keys() {
            if k.trim().is_empty() {
                return Err("validation.warninglist-actions has an empty list name".into());
            }
        }
        Ok(())
    }

    pub fn breaker_limits(&self) -> BreakerLimits {
        BreakerLimits {
            max_added: self.max_added,
            max_added_percent: self.max_added_percent,
            max_removed_percent: self.max_removed_percent,
            floor: self.breaker_floor,
        }
    }
}

/// The outcome for one attribute. A composite may yield two indicators, or one accepted and
/// one rejected half.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judged {
    pub accepted: Vec<Indicator>,
    pub rejected: Vec<Rejection>,
    /// The type is not indexed (or the attribute is deleted): nothing to publish, nothing held.
    pub skipped: bool,
}

/// A warninglist a value is on (for lookups: "listed as a public DNS resolver").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WarninglistHit {
    /// Folder name, e.g. `public-dns-v4`.
    pub list: String,
    /// The list's own name.
    pub name: String,
    pub category: Category,
    pub action: Action,
}

/// What is loaded, for status and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ValidatorStats {
    pub warninglists: usize,
    pub warninglist_entries: usize,
    /// Entries per list type (`cidr`, `hostname`, `string`, `substring`, `regex`).
    pub entries_by_type: BTreeMap<String, usize>,
    pub blocking_lists: usize,
    pub informing_lists: usize,
    pub allowlist_entries: usize,
    pub protected_addresses: usize,
    pub protected_names: usize,
}

/// The loaded validator: immutable, `Send + Sync`, shared by all workers behind an `Arc` and
/// rebuilt on reload.
#[derive(Debug)]
pub struct Validator {
    refang: bool,
    sanity: Sanity,
    protected: Protected,
    lists: Warninglists,
    allow: Allowlist,
    /// Per indexed MISP type, everything judging needs, found with one lookup.
    types: fxhash::FxHashMap<Box<str>, TypeInfo>,
}

#[derive(Debug)]
struct TypeInfo {
    shape: Shape,
    name: Arc<str>,
    tables: warninglist::TypeTables,
}

/// One indexed part that passed syntax.
struct Checked {
    parsed: Parsed,
    notes: Vec<Box<str>>,
    label: &'static str,
    part: Part,
}

impl Validator {
    /// Load lists and the allowlist. Never fails: problems (a malformed list, a missing
    /// directory) are returned as warnings for the log and the rest is used.
    pub fn load(settings: &Settings, protected: Protected) -> (Validator, Vec<String>) {
        let mut warnings = Vec::new();
        let allowed = settings
            .allow_bogons
            .iter()
            .filter_map(|b| match syntax::parse_net(b.trim(), true) {
                Ok(n) => Some(n),
                Err(e) => {
                    warnings.push(format!("validation.allow-bogons entry ignored: {e}"));
                    None
                }
            })
            .collect();
        let lists = Warninglists::load(
            &settings.warninglists,
            &settings.warninglist_actions,
            &settings.disabled_warninglists,
            &mut warnings,
        );
        for name in settings.warninglist_actions.keys() {
            if !lists
                .lists
                .iter()
                .any(|l| *l.id == **name || *l.name == **name)
            {
                warnings.push(format!(
                    "validation.warninglist-actions names `{name}`, which is not a loaded list"
                ));
            }
        }
        let allow = match &settings.allowlist {
            Some(p) if !p.as_os_str().is_empty() => Allowlist::load(p, &mut warnings),
            _ => Allowlist::default(),
        };
        let types = types::INDEXED_TYPES
            .iter()
            .filter_map(|t| {
                let info = TypeInfo {
                    shape: types::shape(t)?,
                    name: Arc::from(*t),
                    tables: lists.tables(t).clone(),
                };
                Some((Box::from(*t), info))
            })
            .collect();
        let v = Validator {
            types,
            refang: settings.refang,
            sanity: Sanity::new(allowed, settings.min_prefix_v4, settings.min_prefix_v6),
            protected,
            lists,
            allow,
        };
        (v, warnings)
    }

    /// A validator with default settings whose only warninglist is one `list.json` given as
    /// bytes (folder name `id`): no allowlist, no host facts. For fuzzing and testing the
    /// warninglist loader; its warnings are returned as with [`Validator::load`].
    pub fn with_warninglist_bytes(id: &str, list_json: &[u8]) -> (Validator, Vec<String>) {
        let settings = Settings {
            warninglists: Vec::new(),
            allowlist: None,
            ..Settings::default()
        };
        let (mut v, mut warnings) = Validator::load(&settings, Protected::default());
        v.lists = Warninglists::from_bytes(id, list_json, &mut warnings);
        (v, warnings)
    }

    pub fn stats(&self) -> ValidatorStats {
        let l = &self.lists.lists;
        ValidatorStats {
            warninglists: l.len(),
            warninglist_entries: l.iter().map(|l| l.entries).sum(),
            entries_by_type: self
                .lists
                .entries_by_type()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            blocking_lists: l.iter().filter(|l| l.action == Action::Block).count(),
            informing_lists: l.iter().filter(|l| l.action == Action::Inform).count(),
            allowlist_entries: self.allow.len(),
            protected_addresses: self.protected.addrs().count(),
            protected_names: self.protected.names().count(),
        }
    }

    /// Which loaded warninglists a (raw, user-supplied) value is on: every exact list (string,
    /// hostname, CIDR), and the pattern lists (substring, regex) that apply to the value's shape
    /// (docs/query-api.md).
    pub fn warninglist_hits(&self, value: &str) -> Vec<WarninglistHit> {
        let mut out = Vec::new();
        self.for_each_warninglist_hit(value, |l| {
            out.push(WarninglistHit {
                list: l.id.to_string(),
                name: l.name.to_string(),
                category: l.category,
                action: l.action,
            })
        });
        out
    }

    /// The lookup side of [`Validator::warninglist_hits`]: calls `f` with each list the value is
    /// on, in the same order, without copying names (a lookup may probe millions of values).
    pub(crate) fn for_each_warninglist_hit(&self, value: &str, mut f: impl FnMut(&ListMeta)) {
        let v = syntax::refang(value.trim());
        use warninglist::LookupKind as Shape;
        // The shapes are tried cheapest first. A value with `@` or all hex is never a valid
        // name (names have no `@`; all-hex text has no dot, so a single label), so trying those
        // before `syntax::name` changes no answer and skips a failed name check per hash.
        let (text, net, is_name, shape): (Cow<'_, str>, _, _, _) =
            if let Some(n) = syntax::net(&v, true) {
                (net_text(n).into(), Some(n), false, Some(Shape::Address))
            } else if v.contains("://") {
                // A URL even when it does not normalise (a bad port, say): its shape is still a
                // URL's.
                let u = crate::normalize::url(&v).map_or(v, Cow::Owned);
                (u, None, false, Some(Shape::Url))
            } else if v.contains('@') {
                let e = crate::normalize::email(&v).map_or(v, Cow::Owned);
                (e, None, false, Some(Shape::Email))
            } else if let Some(h) = crate::normalize::hex(&v) {
                // Only the lengths of the hashes MISP stores; a short hex string may be anything.
                let hash = matches!(h.len(), 32 | 40 | 56 | 64 | 96 | 128);
                (h.into(), None, false, hash.then_some(Shape::Hash))
            } else if let Ok(n) = syntax::name(&v) {
                (n.into(), None, true, Some(Shape::Name))
            } else {
                (v, None, false, None)
            };
        let registrable = if is_name || net.is_none() && text.contains("://") {
            let host = warninglist::extract_host(&text);
            psl::domain_str(host).map_or(0, str::len)
        } else {
            0
        };
        let probe = Probe {
            text: &text,
            net,
            is_name,
            registrable,
        };
        let mut hits = Vec::new();
        self.lists
            .check(&probe, self.lists.for_shape(shape), &mut hits);
        for h in &hits {
            f(&self.lists.lists[h.list as usize]);
        }
    }

    /// Judge one attribute. Composites yield up to two indicators; types mispd does not index
    /// (comment, text, link, email-attachment...) and deleted attributes are `skipped`.
    pub fn judge(&self, source: &Arc<str>, attr: &Attribute, now: i64) -> Judged {
        let mut out = Judged::default();
        let info = match self.types.get(&*attr.misp_type) {
            Some(i) if !attr.deleted => i,
            _ => {
                out.skipped = true;
                return out;
            }
        };
        let raw = attr.value.trim();
        let reject = |code: &str, detail: String| Rejection {
            source: source.clone(),
            value: raw.into(),
            misp_type: Box::from(&*attr.misp_type),
            event_uuid: attr.event_uuid.as_deref().map(Box::from),
            attribute_uuid: attr.uuid.clone(),
            reason: RejectReason {
                code: code.into(),
                detail: detail.into(),
            },
            at: now,
        };
        // Syntax of every part first: one malformed half makes the whole attribute malformed.
        let mut checked: [Option<Checked>; 2] = [None, None];
        let parts: [(Part, &str, &'static str); 2];
        let parts: &[(Part, &str, &'static str)] = match info.shape {
            Shape::Single(p) => {
                parts = [(p, raw, ""), (Part::Ignored, "", "")];
                &parts[..1]
            }
            Shape::Pair(a, b) => match raw.split_once('|') {
                Some((x, y)) => {
                    parts = [(a, x.trim(), part_label(a)), (b, y.trim(), part_label(b))];
                    &parts[..]
                }
                None => {
                    out.rejected.push(reject(
                        "syntax",
                        format!("a {} value must be two parts joined by `|`", attr.misp_type),
                    ));
                    return out;
                }
            },
        };
        for &(part, v, label) in parts {
            let mut notes = Vec::new();
            let v = if syntax::is_defanged(v) && !matches!(part, Part::Hash(_) | Part::Text) {
                if !self.refang {
                    out.rejected.push(reject(
                        "defanged",
                        with_label(label, format!("`{v}` is defanged and refang is off")),
                    ));
                    return out;
                }
                notes.push(Box::from("refanged"));
                syntax::refang(v)
            } else {
                std::borrow::Cow::Borrowed(v)
            };
            match syntax::parse(part, &v) {
                Ok(Some(parsed)) => {
                    if part == Part::Url && !v.contains("://") {
                        notes.push(Box::from("scheme-added"));
                    }
                    if let Parsed::Net(n) = &parsed {
                        if syntax::had_host_bits(&v) {
                            notes.push(format!("host bits cleared: {v} published as {n}").into());
                        }
                    }
                    let slot = if checked[0].is_none() { 0 } else { 1 };
                    checked[slot] = Some(Checked {
                        parsed,
                        notes,
                        label,
                        part,
                    });
                }
                Ok(None) => {}
                Err(detail) => {
                    out.rejected
                        .push(reject("syntax", with_label(label, detail)));
                    return out;
                }
            }
        }
        let tables = &info.tables;
        let mut provenance: Option<Provenance> = None;
        let mut hits = Vec::new();
        for c in checked.into_iter().flatten() {
            match self.check(&c, tables, &mut hits) {
                Ok(extra) => {
                    let (value, kind) = value_kind(c.parsed, c.part);
                    let mut notes = c.notes;
                    notes.extend(extra);
                    let p = provenance
                        .get_or_insert_with(|| self.provenance(source, attr, &info.name))
                        .clone();
                    out.accepted.push(Indicator {
                        value: value.into_boxed_str(),
                        kind,
                        provenance: p,
                        notes,
                    });
                }
                Err((code, detail)) => out.rejected.push(reject(code, with_label(c.label, detail))),
            }
        }
        out
    }

    /// Checks 2-5 on one part; `Ok` carries notes to add.
    fn check(
        &self,
        c: &Checked,
        tables: &warninglist::TypeTables,
        hits: &mut Vec<RawHit>,
    ) -> Result<Vec<Box<str>>, (&'static str, String)> {
        let insane = |e: Insane| match e {
            Insane::Bogon(d) => ("bogon", d),
            Insane::TooBroad(d) => ("too-broad", d),
            Insane::PublicSuffix(d) => ("public-suffix", d),
        };
        let protected = |why: &str| ("protected", why.to_string());
        let allowed = |d: String| ("allowlist", d);
        let ip_text;
        let probe = match &c.parsed {
            Parsed::Net(n) => {
                self.sanity.check_net(*n).map_err(insane)?;
                if let Some(why) = self.protected.net(n) {
                    return Err(protected(why));
                }
                ip_text = net_text(*n);
                Probe {
                    text: &ip_text,
                    net: Some(*n),
                    is_name: false,
                    registrable: 0,
                }
            }
            Parsed::Name(name) => {
                let domain = self.is_domain(c);
                let registrable = self.sanity.check_name(name).map_err(insane)?;
                if let Some(why) = self.protected.name(name, domain) {
                    return Err(protected(why));
                }
                Probe {
                    text: name,
                    net: None,
                    is_name: true,
                    registrable,
                }
            }
            Parsed::Url { text, host } => {
                let mut registrable = 0;
                match host {
                    UrlHost::Ip(a) => {
                        let n = IpNet::from(*a);
                        self.sanity.check_net(n).map_err(insane)?;
                        if let Some(why) = self.protected.net(&n) {
                            return Err(protected(why));
                        }
                    }
                    UrlHost::Name(h) => {
                        registrable = self.sanity.check_name(h).map_err(insane)?;
                        if let Some(why) = self.protected.name(h, false) {
                            return Err(protected(why));
                        }
                    }
                }
                Probe {
                    text,
                    net: None,
                    is_name: false,
                    registrable,
                }
            }
            Parsed::Email(t) | Parsed::Hash(t) | Parsed::Text(t) => Probe {
                text: t,
                net: None,
                is_name: false,
                registrable: 0,
            },
        };
        hits.clear();
        self.lists.check(&probe, tables, hits);
        let mut notes = Vec::new();
        if !hits.is_empty() {
            let lists = &self.lists.lists;
            let block = hits
                .iter()
                .find(|h| lists[h.list as usize].action == Action::Block);
            if let Some(h) = block {
                let l = &lists[h.list as usize];
                return Err((
                    "warninglist",
                    format!("{} is on warninglist {} ({})", probe.text, l.id, l.name),
                ));
            }
            if let Some(h) = hits.iter().find(|h| h.covers) {
                let l = &lists[h.list as usize];
                return Err((
                    "warninglist",
                    format!(
                        "{} is itself an entry of known-services warninglist {} ({}): only names under it may be published",
                        probe.text, l.id, l.name
                    ),
                ));
            }
            for h in hits.iter() {
                notes.push(format!("warninglist:{}", lists[h.list as usize].id).into());
            }
        }
        match &c.parsed {
            Parsed::Net(n) => self.allow.net(n).map(allowed).map_or(Ok(()), Err)?,
            Parsed::Name(name) => self
                .allow
                .name(name, self.is_domain(c))
                .map(allowed)
                .map_or(Ok(()), Err)?,
            Parsed::Url { text, host } => {
                let hit = match host {
                    UrlHost::Ip(a) => self.allow.net(&IpNet::from(*a)),
                    UrlHost::Name(h) => self.allow.name(h, false),
                };
                hit.or_else(|| self.allow.value(text))
                    .map(allowed)
                    .map_or(Ok(()), Err)?
            }
            Parsed::Email(e) => {
                let dom = e.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                self.allow
                    .value(e)
                    .or_else(|| self.allow.name(dom, false))
                    .map(allowed)
                    .map_or(Ok(()), Err)?
            }
            Parsed::Hash(t) | Parsed::Text(t) => {
                self.allow.value(t).map(allowed).map_or(Ok(()), Err)?
            }
        }
        Ok(notes)
    }

    fn is_domain(&self, c: &Checked) -> bool {
        c.part == Part::Domain
    }

    fn provenance(&self, source: &Arc<str>, attr: &Attribute, misp_type: &Arc<str>) -> Provenance {
        Provenance {
            source: source.clone(),
            event_uuid: attr.event_uuid.clone(),
            attribute_uuid: Arc::from(&*attr.uuid),
            misp_type: misp_type.clone(),
            category: attr.category.clone(),
            tags: attr.tags.clone(),
            timestamp: attr.timestamp,
            to_ids: attr.to_ids,
        }
    }
}

fn part_label(p: Part) -> &'static str {
    match p {
        Part::Ip { .. } => "ip",
        Part::Port => "port",
        Part::Domain => "domain",
        Part::Hostname => "hostname",
        Part::Url => "url",
        Part::Email => "email",
        Part::Hash(_) => "hash",
        Part::Text => "text",
        Part::Ignored => "filename",
    }
}

fn with_label(label: &str, detail: String) -> String {
    if label.is_empty() {
        detail
    } else {
        format!("{label} half: {detail}")
    }
}

/// Canonical text of an address or network: a plain address for a full-length prefix.
fn net_text(n: IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn value_kind(p: Parsed, part: Part) -> (String, Kind) {
    match p {
        Parsed::Net(n) if n.prefix_len() == n.max_prefix_len() => (net_text(n), Kind::Ip),
        Parsed::Net(n) => (net_text(n), Kind::Cidr),
        Parsed::Name(n) if part == Part::Hostname => (n, Kind::Hostname),
        Parsed::Name(n) => (n, Kind::Domain),
        Parsed::Url { text, .. } => (text, Kind::Url),
        Parsed::Email(e) => (e, Kind::Email),
        Parsed::Hash(h) => (h, Kind::Hash),
        Parsed::Text(t) => (t, Kind::Other),
    }
}

/// `child` is a proper subdomain of `parent` (`a.b.c` of `b.c`).
pub(crate) fn is_subdomain_of(child: &str, parent: &str) -> bool {
    child.len() > parent.len()
        && child.ends_with(parent)
        && child.as_bytes()[child.len() - parent.len() - 1] == b'.'
}

/// Makes the attributes of a sync store share their repeated strings (event uuids, types,
/// categories, tag lists), so a million attributes, and the indicators validated from them,
/// keep one copy of each.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    tag_lists: HashSet<Arc<[Arc<str>]>>,
    /// The strings and tag list passed in last, by address, with their shared copies: the rows
    /// of a page carry the same `Arc`s (the decoder shares them), so most calls are answered
    /// without hashing. Holding an input keeps its address from being reused for other text.
    recent: Vec<(Arc<str>, Arc<str>)>,
    recent_event: Option<(Arc<str>, Arc<str>)>,
    recent_tags: Option<(TagList, TagList)>,
}

type TagList = Arc<[Arc<str>]>;

/// How many recent strings (types, categories) [`Interner`] remembers by address.
const RECENT: usize = 8;

impl Interner {
    /// Number of distinct strings held.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    pub fn str(&mut self, s: &Arc<str>) -> Arc<str> {
        if let Some((_, x)) = self.recent.iter().find(|(k, _)| Arc::ptr_eq(k, s)) {
            return x.clone();
        }
        let x = self.lookup(s);
        if self.recent.len() == RECENT {
            self.recent.remove(0);
        }
        self.recent.push((s.clone(), x.clone()));
        x
    }

    fn lookup(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.strings.get(&**s) {
            Some(x) => x.clone(),
            None => {
                self.strings.insert(s.clone());
                s.clone()
            }
        }
    }

    /// The shared copy of a tag list (its tags shared too).
    pub fn tags(&mut self, tags: &Arc<[Arc<str>]>) -> Arc<[Arc<str>]> {
        if let Some((k, x)) = &self.recent_tags {
            if Arc::ptr_eq(k, tags) {
                return x.clone();
            }
        }
        let t = match self.tag_lists.get(&**tags) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<[Arc<str>]> = tags.iter().map(|t| self.lookup(t)).collect();
                self.tag_lists.insert(t.clone());
                t
            }
        };
        self.recent_tags = Some((tags.clone(), t.clone()));
        t
    }

    /// Points an attribute's repeated strings at the shared copies (for a sync store).
    pub fn share(&mut self, a: &mut Attribute) {
        a.misp_type = self.str(&a.misp_type);
        a.category = self.str(&a.category);
        if let Some(e) = &a.event_uuid {
            // Kept apart from `recent`: uuids of events are many and would push the types out.
            let x = match &self.recent_event {
                Some((k, x)) if Arc::ptr_eq(k, e) => x.clone(),
                _ => {
                    let x = self.lookup(e);
                    self.recent_event = Some((e.clone(), x.clone()));
                    x
                }
            };
            a.event_uuid = Some(x);
        }
        a.tags = self.tags(&a.tags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    fn attr(t: &str, v: &str, event: &str) -> Attribute {
        Attribute {
            uuid: format!("attr-{v}").into(),
            event_uuid: Some(event.into()),
            misp_type: t.into(),
            category: "Network activity".into(),
            value: v.into(),
            to_ids: true,
            deleted: false,
            timestamp: 1,
            tags: vec!["tlp:white".into(), "infoblox".into()].into(),
            last_seen: None,
            event_published: None,
        }
    }

    #[test]
    fn validator_is_shareable_and_interner_dedups() {
        assert_send_sync::<Validator>();
        let s = Settings {
            warninglists: vec![],
            allowlist: None,
            ..Settings::default()
        };
        let (v, w) = Validator::load(&s, Protected::default());
        assert!(w.is_empty(), "{w:?}");
        let src: Arc<str> = Arc::from("feed");
        let judge = |a: &Attribute| v.judge(&src, a, 0).accepted;
        // Unshared attributes (straight from a decoder): each indicator has its own strings.
        let inds: Vec<Indicator> = ["a-evil.xyz", "b-evil.xyz"]
            .iter()
            .flat_map(|d| judge(&attr("domain", d, "ev-1")))
            .collect();
        assert_eq!(inds.len(), 2);
        assert!(!Arc::ptr_eq(
            inds[0].provenance.event_uuid.as_ref().unwrap(),
            inds[1].provenance.event_uuid.as_ref().unwrap()
        ));
        // Attributes shared as the sync store shares them: the indicators point at the very
        // same strings, no copy per indicator.
        let mut store = Interner::default();
        let shared: Vec<Attribute> = ["c-evil.xyz", "d-evil.xyz"]
            .iter()
            .map(|d| {
                let mut a = attr("domain", d, "ev-1");
                store.share(&mut a);
                a
            })
            .collect();
        assert!(Arc::ptr_eq(&shared[0].tags, &shared[1].tags));
        let inds: Vec<Indicator> = shared.iter().flat_map(judge).collect();
        let (a, b) = (&inds[0].provenance, &inds[1].provenance);
        assert!(Arc::ptr_eq(&a.category, &b.category));
        assert!(Arc::ptr_eq(&a.tags, &shared[0].tags));
        assert!(Arc::ptr_eq(
            a.event_uuid.as_ref().unwrap(),
            b.event_uuid.as_ref().unwrap()
        ));
    }

    #[test]
    fn interner_answers_repeated_inputs_by_address_with_the_first_copy() {
        let mut it = Interner::default();
        let first: Arc<str> = Arc::from("ip-dst");
        assert!(Arc::ptr_eq(&it.str(&first), &first));
        let again: Arc<str> = Arc::from("ip-dst");
        for _ in 0..2 {
            assert!(
                Arc::ptr_eq(&it.str(&again), &first),
                "by content, then by address"
            );
        }
        // More strings than it remembers by address: still the first copies.
        let others: Vec<Arc<str>> = (0..3 * RECENT)
            .map(|i| Arc::from(format!("t{i}")))
            .collect();
        let shared: Vec<Arc<str>> = others.iter().map(|s| it.str(s)).collect();
        for (o, s) in others.iter().zip(&shared) {
            let copy: Arc<str> = Arc::from(&**o);
            assert!(Arc::ptr_eq(&it.str(&copy), s));
        }
        assert!(Arc::ptr_eq(&it.str(&again), &first));
        let tags: Arc<[Arc<str>]> = vec![Arc::from("tlp:white")].into();
        let same: Arc<[Arc<str>]> = vec![Arc::from("tlp:white")].into();
        let t = it.tags(&tags);
        assert!(Arc::ptr_eq(&it.tags(&same), &t));
        assert!(Arc::ptr_eq(&it.tags(&same), &t));
        assert!(Arc::ptr_eq(&it.tags(&tags), &t));
        assert_eq!(it.len(), 1 + 3 * RECENT + 1);
    }

    #[test]
    fn text_values_with_control_characters_are_refused() {
        let s = Settings {
            warninglists: vec![],
            allowlist: None,
            ..Settings::default()
        };
        let (v, _) = Validator::load(&s, Protected::default());
        let src: Arc<str> = Arc::from("feed");
        for bad in ["evil\nsecond-line", "tab\tseparated", "nul\u{0}"] {
            let j = v.judge(&src, &attr("mutex", bad, "ev-1"), 0);
            assert!(j.accepted.is_empty(), "{bad:?}");
            assert_eq!(&*j.rejected[0].reason.code, "syntax", "{bad:?}");
        }
        let j = v.judge(&src, &attr("mutex", "Global\\evil mutex", "ev-1"), 0);
        assert_eq!(
            j.accepted.len(),
            1,
            "spaces and backslashes are fine in a mutex"
        );
    }

    #[test]
    fn missing_list_directory_is_a_warning_not_an_error() {
        let s = Settings {
            warninglists: vec![PathBuf::from("/nonexistent/warninglists")],
            allowlist: None,
            warninglist_actions: [("no-such-list".to_string(), Action::Inform)].into(),
            ..Settings::default()
        };
        let (v, w) = Validator::load(&s, Protected::default());
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("/nonexistent/warninglists"));
        assert!(w[1].contains("no-such-list"));
        assert_eq!(v.stats().warninglists, 0);
    }
}
