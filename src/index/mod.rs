//! The lookup structures over the published indicators. Plain data: built once per generation
//! from validated indicators, then only read. Knows no transport, no MISP client, no socket.
//!
//! Layout, chosen for a million indicators in well under 200 MB: every distinct `(kind, value)`
//! is one [`Entry`] whose text lives in one shared arena; each source record behind it is a
//! fixed-size [`Rec`] whose strings (source, event, type, category, tag set, notes) are interned
//! ids. Exact lookups go through an open-addressing table of entry ids keyed with a per-process
//! random SipHash key (a poisoned feed cannot plan collisions); CIDRs live in prefix tries.
//!
//! The index is also the supervisor's only copy of what normal-trust sources publish (a
//! rebuild reads a source's records back with [`Index::source_indicators`]) and what the
//! snapshot stores: `persist` writes the arrays as they are and checks them on the way back.

use crate::model::{Indicator, Kind, Provenance};
use crate::normalize;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;

mod ahead;
mod persist;

/// How a match was made.
///
/// `Url` marks a match found through the host of a queried URL (the matched rule's own kind is in
/// the match's `kind` field); a URL listed as such matches a URL query as `Exact`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    Exact,
    Cidr,
    Subdomain,
    Url,
}

impl MatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Cidr => "cidr",
            MatchKind::Subdomain => "subdomain",
            MatchKind::Url => "url",
        }
    }
}

const NONE: u32 = u32::MAX;
const TO_IDS: u8 = 1;
/// The attribute uuid was not a canonical lowercase UUID and is kept as text in the arena.
const ATTR_TEXT: u8 = 2;

/// One distinct `(kind, value)`; its records are `recs[first .. next entry's first]`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    off: u32,
    len: u32,
    first: u32,
    kind: Kind,
}

/// One source's record of an entry, with every string interned.
#[derive(Clone, Copy, Debug)]
struct Rec {
    attr: [u8; 16],
    timestamp: i64,
    source: u32,
    event: u32,
    misp_type: u32,
    category: u32,
    tags: u32,
    notes: u32,
    flags: u8,
}

/// An immutable index over one generation of published indicators.
pub struct Index {
    arena: String,
    entries: Vec<Entry>,
    recs: Vec<Rec>,
    /// Open addressing, linear probing, load <= 1/2: `(entry id, high hash bits)`, `NONE` id for
    /// an empty slot. The hash bits let a probe skip other values without touching them.
    slots: Vec<(u32, u32)>,
    hasher: RandomState,
    v4: PrefixMap<Ipv4Net, u32>,
    v6: PrefixMap<Ipv6Net, u32>,
    strings: Vec<Arc<str>>,
    tag_sets: Vec<Arc<[Arc<str>]>>,
    /// Id 0 is the empty set.
    note_sets: Vec<Box<[Box<str>]>>,
    /// Records per (source, MISP type) string ids, for metrics.
    counts: Vec<(u32, u32, u64)>,
}

/// The stored arrays of an [`Index`]; everything else in it is derived from them.
struct Parts {
    arena: String,
    entries: Vec<Entry>,
    recs: Vec<Rec>,
    strings: Vec<Arc<str>>,
    tag_sets: Vec<Arc<[Arc<str>]>>,
    note_sets: Vec<Box<[Box<str>]>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A summary: the index may hold millions of entries.
        f.debug_struct("Index")
            .field("records", &self.recs.len())
            .field("values", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Default for Index {
    fn default() -> Self {
        Index::build(Vec::new())
    }
}

/// Interning tables used only while building.
#[derive(Default)]
struct Interner {
    strings: Vec<Arc<str>>,
    string_ids: HashMap<Arc<str>, u32>,
    tag_sets: Vec<Arc<[Arc<str>]>>,
    tag_ids: HashMap<Arc<[Arc<str>]>, u32>,
    note_sets: Vec<Box<[Box<str>]>>,
    note_ids: HashMap<Box<[Box<str>]>, u32>,
    /// Ids by the address of the `Arc` passed in: the records of one source share their
    /// strings, so most are found without hashing their text. Sound because every input
    /// outlives the build (it is borrowed from the indicators), so no address is reused.
    by_addr: HashMap<usize, u32, BuildHasherDefault<AddrHasher>>,
    tags_by_addr: HashMap<usize, u32, BuildHasherDefault<AddrHasher>>,
}

/// Hashes an address for the by-address ids (addresses are not chosen by any feed).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_usize(self.0 as usize ^ b as usize);
        }
    }
    fn write_usize(&mut self, n: usize) {
        // Allocations are 8- or 16-byte aligned: drop the always-zero bits, then mix.
        self.0 = ((n as u64) >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        // The table takes buckets from the low bits; a multiply mixes the high ones best.
        self.0.rotate_left(32)
    }
}

impl Interner {
    fn string(&mut self, s: &Arc<str>) -> u32 {
        let addr = Arc::as_ptr(s) as *const u8 as usize;
        if let Some(&id) = self.by_addr.get(&addr) {
            return id;
        }
        let id = self.string_by_text(s);
        self.by_addr.insert(addr, id);
        id
    }

    fn string_by_text(&mut self, s: &Arc<str>) -> u32 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.clone());
        self.string_ids.insert(s.clone(), id);
        id
    }

    fn tags(&mut self, t: &Arc<[Arc<str>]>) -> u32 {
        let addr = Arc::as_ptr(t) as *const u8 as usize;
        if let Some(&id) = self.tags_by_addr.get(&addr) {
            return id;
        }
        let id = match self.tag_ids.get(t) {
            Some(&id) => id,
            None => {
                let id = self.tag_sets.len() as u32;
                self.tag_sets.push(t.clone());
                self.tag_ids.insert(t.clone(), id);
                id
            }
        };
        self.tags_by_addr.insert(addr, id);
        id
    }

    fn notes(&mut self, n: &[Box<str>]) -> u32 {
        if n.is_empty() {
            return 0;
        }
        if let Some(&id) = self.note_ids.get(n) {
            return id;
        }
        let n: Box<[Box<str>]> = n.into();
        let id = self.note_sets.len() as u32;
        self.note_sets.push(n.clone());
        self.note_ids.insert(n, id);
        id
    }
}

/// The kind in the top byte, then the value's first seven bytes, big-endian: orders like
/// `(kind, value)` up to ties, which the caller breaks with the full value.
fn sort_key(kind: Kind, value: &str) -> u64 {
    let mut b = [0u8; 8];
    b[0] = kind as u8;
    let v = value.as_bytes();
    let n = v.len().min(7);
    b[1..1 + n].copy_from_slice(&v[..n]);
    u64::from_be_bytes(b)
}

/// Parses a canonical lowercase hyphenated UUID; anything else is kept as text.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = hex_val(b[i])?;
        let lo = hex_val(b[i + 1])?;
        out[n] = hi << 4 | lo;
        n += 1;
        i += 2;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn format_uuid(u: &[u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut i = 0;
    for (n, byte) in u.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            i += 1;
        }
        out[i] = HEX[(byte >> 4) as usize];
        out[i + 1] = HEX[(byte & 15) as usize];
        i += 2;
    }
    out
}

/// Indicators from which [`Index::build_from`] sorts on two threads.
const PARALLEL_SORT: usize = 50_000;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |c| c.get())
}

/// Merges two sorted runs (no two elements compare equal).
fn merge<T: Copy>(a: Vec<T>, b: Vec<T>, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if cmp(&b[j], &a[i]).is_lt() {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl Index {
    /// Builds the index. Records with the same `(kind, value)` become one entry with several
    /// sources, in input order.
    pub fn build(indicators: Vec<Indicator>) -> Index {
        let refs: Vec<&Indicator> = indicators.iter().collect();
        Index::build_from(&refs)
    }

    /// [`Index::build`] over borrowed indicators (the supervisor merges sources' sets without
    /// copying them). The index copies what it keeps; the inputs may be dropped afterwards.
    pub fn build_from(indicators: &[&Indicator]) -> Index {
        // Sort a small permutation rather than the large records; the key carries the kind and
        // the value's first bytes inline so most comparisons never touch the heap. Ties fall
        // back to the full value, then input order (the records of one value stay in order).
        let cmp = |a: &(u64, u32), b: &(u64, u32)| {
            a.0.cmp(&b.0)
                .then_with(|| {
                    indicators[a.1 as usize]
                        .value
                        .cmp(&indicators[b.1 as usize].value)
                })
                .then(a.1.cmp(&b.1))
        };
        let sorted = |range: std::ops::Range<usize>| {
            let mut part: Vec<(u64, u32)> = range
                .map(|i| (sort_key(indicators[i].kind, &indicators[i].value), i as u32))
                .collect();
            part.sort_unstable_by(cmp);
            part
        };
        // Large sets: each half keyed and sorted on its own thread, then merged.
        let n = indicators.len();
        let order = if n >= PARALLEL_SORT && cores() > 1 {
            let (left, right) = std::thread::scope(|scope| {
                let left = scope.spawn(|| sorted(0..n / 2));
                let right = sorted(n / 2..n);
                let left = left.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                (left, right)
            });
            merge(left, right, cmp)
        } else {
            sorted(0..n)
        };
        let mut it = Interner::default();
        it.note_sets.push(Box::new([]));
        let total: usize = indicators.iter().map(|i| i.value.len()).sum();
        let mut arena = String::with_capacity(total);
        let mut entries: Vec<Entry> = Vec::new();
        let mut recs = Vec::with_capacity(indicators.len());
        for &(_, i) in &order {
            let ind = indicators[i as usize];
            let same = entries.last().is_some_and(|e| {
                e.kind == ind.kind && arena[e.off as usize..][..e.len as usize] == *ind.value
            });
            if !same {
                entries.push(Entry {
                    off: arena.len() as u32,
                    len: ind.value.len() as u32,
                    first: recs.len() as u32,
                    kind: ind.kind,
                });
                arena.push_str(&ind.value);
            }
            let p = &ind.provenance;
            let (attr, text) = match parse_uuid(&p.attribute_uuid) {
                Some(u) => (u, 0),
                None => {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&(arena.len() as u32).to_le_bytes());
                    a[4..8].copy_from_slice(&(p.attribute_uuid.len() as u32).to_le_bytes());
                    arena.push_str(&p.attribute_uuid);
                    (a, ATTR_TEXT)
                }
            };
            recs.push(Rec {
                attr,
                timestamp: p.timestamp,
                source: it.string(&p.source),
                event: p.event_uuid.as_ref().map_or(NONE, |e| it.string(e)),
                misp_type: it.string(&p.misp_type),
                category: it.string(&p.category),
                tags: it.tags(&p.tags),
                notes: it.notes(&ind.notes),
                flags: text | if p.to_ids { TO_IDS } else { 0 },
            });
        }
        drop(order);
        arena.shrink_to_fit();
        entries.shrink_to_fit();
        Index::assemble(Parts {
            arena,
            entries,
            recs,
            strings: it.strings,
            tag_sets: it.tag_sets,
            note_sets: it.note_sets,
        })
    }

    /// The lookup structures over finished arrays (from [`Index::build`] or a snapshot): the
    /// hash table, the CIDR tries and the per-source counts are derived, never stored.
    fn assemble(p: Parts) -> Index {
        let Parts {
            arena,
            entries,
            recs,
            strings,
            tag_sets,
            note_sets,
        } = p;
        let mut v4 = PrefixMap::new();
        let mut v6 = PrefixMap::new();
        for (id, e) in entries.iter().enumerate() {
            if e.kind == Kind::Cidr {
                match arena[e.off as usize..][..e.len as usize].parse::<IpNet>() {
                    Ok(IpNet::V4(n)) => {
                        v4.insert(n.trunc(), id as u32);
                    }
                    Ok(IpNet::V6(n)) => {
                        v6.insert(n.trunc(), id as u32);
                    }
                    Err(_) => {}
                }
            }
        }
        let mut count_map: HashMap<(u32, u32), u64> = HashMap::new();
        for r in &recs {
            *count_map.entry((r.source, r.misp_type)).or_default() += 1;
        }
        let mut counts: Vec<(u32, u32, u64)> =
            count_map.into_iter().map(|((s, t), n)| (s, t, n)).collect();
        counts.sort_unstable();
        let hasher = RandomState::new();
        let cap = (entries.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![(NONE, 0); cap];
        for (id, e) in entries.iter().enumerate() {
            let v = &arena[e.off as usize..][..e.len as usize];
            let h = hasher.hash_one(v);
            let mut s = h as usize & (cap - 1);
            while slots[s].0 != NONE {
                s = (s + 1) & (cap - 1);
            }
            slots[s] = (id as u32, (h >> 32) as u32);
        }
        Index {
            arena,
            entries,
            recs,
            slots,
            hasher,
            v4,
            v6,
            strings,
            tag_sets,
            note_sets,
            counts,
        }
    }

    /// Number of published indicator records (one value from two sources counts twice).
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Number of distinct `(kind, value)` entries.
    pub fn values(&self) -> usize {
        self.entries.len()
    }

    /// Every entry, sorted by `(kind, value)`.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = EntryRef<'_>> + '_ {
        (0..self.entries.len() as u32).map(move |id| EntryRef { index: self, id })
    }

    /// The records as [`Indicator`]s again (allocates; for snapshots and tests, not hot paths).
    pub fn to_indicators(&self) -> Vec<Indicator> {
        self.indicators_where(self.recs.len(), |_| true)
    }

    /// One source's records as [`Indicator`]s again, exactly as they were built (the index is
    /// the supervisor's only copy of a normal-trust source's published set).
    pub fn source_indicators(&self, source: &str) -> Vec<Indicator> {
        let Some(id) = self.string_id(source) else {
            return Vec::new();
        };
        self.indicators_where(self.source_len(source), |r| r.source == id)
    }

    /// Number of records of one source.
    pub fn source_len(&self, source: &str) -> usize {
        self.counts()
            .filter(|(s, _, _)| *s == source)
            .map(|(_, _, n)| n as usize)
            .sum()
    }

    /// The distinct `(value, kind)` pairs one source lists (for breaker diffs).
    pub fn source_keys(&self, source: &str) -> HashSet<(&str, Kind)> {
        let Some(id) = self.string_id(source) else {
            return HashSet::new();
        };
        let mut out = HashSet::with_capacity(self.source_len(source));
        for (i, e) in self.entries.iter().enumerate() {
            if self.recs_of(i as u32).iter().any(|r| r.source == id) {
                out.insert((&self.arena[e.off as usize..][..e.len as usize], e.kind));
            }
        }
        out
    }

    /// Names of the sources with at least one record.
    pub fn source_names(&self) -> impl Iterator<Item = &str> + '_ {
        let mut names: Vec<&str> = self.counts().map(|(s, _, _)| s).collect();
        names.dedup();
        names.into_iter()
    }

    /// The id of an interned string, if the index holds it. Linear: the table holds a few
    /// thousand strings at most (sources, types, categories, event uuids).
    fn string_id(&self, s: &str) -> Option<u32> {
        self.strings
            .iter()
            .position(|x| &**x == s)
            .map(|i| i as u32)
    }

    fn indicators_where(&self, capacity: usize, keep: impl Fn(&Rec) -> bool) -> Vec<Indicator> {
        let mut out = Vec::with_capacity(capacity);
        for e in self.entries() {
            for s in e.sources().filter(|s| keep(s.rec)) {
                out.push(Indicator {
                    value: e.value().into(),
                    kind: e.kind(),
                    provenance: Provenance {
                        source: s.source.clone(),
                        event_uuid: s.event_uuid.cloned(),
                        attribute_uuid: s.attribute_uuid().into(),
                        misp_type: s.misp_type.clone(),
                        category: s.category.clone(),
                        tags: s.tags.clone(),
                        timestamp: s.timestamp,
                        to_ids: s.to_ids,
                    },
                    notes: s.notes.to_vec(),
                });
            }
        }
        out
    }

    /// Records per `(source, MISP type)`.
    pub fn counts(&self) -> impl Iterator<Item = (&str, &str, u64)> + '_ {
        self.counts
            .iter()
            .map(|&(s, t, n)| (&*self.strings[s as usize], &*self.strings[t as usize], n))
    }

    /// Approximate heap bytes held by the index (for metrics and the benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.recs.capacity() * std::mem::size_of::<Rec>()
            + self.slots.capacity() * 8
    }

    fn value(&self, id: u32) -> &str {
        let e = &self.entries[id as usize];
        &self.arena[e.off as usize..][..e.len as usize]
    }

    fn recs_of(&self, id: u32) -> &[Rec] {
        let start = self.entries[id as usize].first as usize;
        let end = self
            .entries
            .get(id as usize + 1)
            .map_or(self.recs.len(), |e| e.first as usize);
        &self.recs[start..end]
    }

    /// Calls `f` with every entry whose value is exactly `v`.
    fn exact_ids(&self, v: &str, f: impl FnMut(u32, Kind)) {
        self.exact_ids_hashed(v, self.hasher.hash_one(v), f)
    }

    /// [`Index::exact_ids`] with `v`'s hash already computed.
    fn exact_ids_hashed(&self, v: &str, h: u64, mut f: impl FnMut(u32, Kind)) {
        let mask = self.slots.len() - 1;
        let tag = (h >> 32) as u32;
        let mut s = h as usize & mask;
        loop {
            let (id, t) = self.slots[s];
            if id == NONE {
                return;
            }
            if t == tag && self.value(id) == v {
                f(id, self.entries[id as usize].kind);
            }
            s = (s + 1) & mask;
        }
    }

    /// Whether a listed CIDR other than the entry itself contains this IP or CIDR entry (used to
    /// emit non-overlapping firewall sets).
    pub fn covered_by_other_cidr(&self, e: &EntryRef<'_>) -> bool {
        let net = match e.kind() {
            Kind::Ip => match e.value().parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return false,
            },
            Kind::Cidr => match e.value().parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => return false,
            },
            _ => return false,
        };
        match net {
            IpNet::V4(n) => self.v4.cover(&n).any(|(_, &id)| id != e.id),
            IpNet::V6(n) => self.v6.cover(&n).any(|(_, &id)| id != e.id),
        }
    }

    /// Looks a value up; see docs/query-api.md for the matching rules.
    pub fn lookup<'a>(&'a self, value: &'a str) -> Lookup<'a> {
        let mut m = Matches {
            index: self,
            found: Vec::new(),
        };
        let v = value.trim();
        // The canonical form already matched exactly, so the raw value is not tried twice.
        let mut tried: Option<Cow<'_, str>> = None;
        if let Some(ip) = normalize::ip(v) {
            // An IPv4 address that parses is written canonically already (std refuses leading
            // zeros and every other form), so it is not formatted again.
            let text = match ip {
                IpAddr::V4(_) => Cow::Borrowed(v),
                IpAddr::V6(_) => Cow::Owned(ip.to_string()),
            };
            self.ip_matches_as(ip, &text, None, &mut m);
            tried = Some(text);
        } else if let Some(net) = v.contains('/').then(|| v.parse::<IpNet>().ok()).flatten() {
            let net = net.trunc();
            let text = net.to_string();
            self.exact(&text, MatchKind::Exact, &mut m);
            self.cover_matches(net, MatchKind::Cidr, &mut m);
            tried = Some(text.into());
        } else if v.contains("://") {
            if let Some(parsed) = normalize::parsed_url(v) {
                let host = parsed.host().map(|h| h.to_owned());
                let u = String::from(parsed);
                self.exact(&u, MatchKind::Exact, &mut m);
                if let Some(host) = host {
                    self.url_host_matches(host, &mut m);
                }
                tried = Some(u.into());
            }
        } else if v.contains('@') {
            if let Some(e) = normalize::email(v) {
                self.exact(&e, MatchKind::Exact, &mut m);
                tried = Some(e.into());
            }
        } else {
            if let Some(h) = normalize::hex(v) {
                self.exact(&h, MatchKind::Exact, &mut m);
                tried = Some(h.into());
            }
            if looks_like_name(v) {
                if let Some(d) = normalize::domain(v) {
                    let done = tried.as_deref() == Some(d.as_str());
                    self.domain_matches(&d, None, !done, &mut m);
                    tried = Some(d.into());
                }
            }
        }
        // Values of other kinds are matched exactly as stored.
        if tried.as_deref() != Some(v) {
            self.exact(v, MatchKind::Exact, &mut m);
        }
        Lookup {
            value,
            listed: !m.found.is_empty(),
            matches: m.found,
            warninglists: Vec::new(),
        }
    }

    fn exact<'a>(&'a self, v: &str, how: MatchKind, m: &mut Matches<'a>) {
        self.exact_ids(v, |id, _| m.add(id, how));
    }

    /// The exact address, then every listed network containing it.
    fn ip_matches<'a>(&'a self, ip: IpAddr, forced: Option<MatchKind>, m: &mut Matches<'a>) {
        self.ip_matches_as(ip, &ip.to_string(), forced, m);
    }

    /// [`Index::ip_matches`] with the address's canonical text given.
    fn ip_matches_as<'a>(
        &'a self,
        ip: IpAddr,
        text: &str,
        forced: Option<MatchKind>,
        m: &mut Matches<'a>,
    ) {
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = v6.to_ipv4_mapped() {
                self.ip_matches(IpAddr::V4(v4), forced, m);
            }
        }
        self.exact(text, forced.unwrap_or(MatchKind::Exact), m);
        self.cover_matches(IpNet::from(ip), forced.unwrap_or(MatchKind::Cidr), m);
    }

    /// Every listed network containing `net` (itself included), most specific first.
    fn cover_matches<'a>(&'a self, net: IpNet, how: MatchKind, m: &mut Matches<'a>) {
        // At most one network per prefix length covers it: a stack buffer, no allocation.
        let mut ids = [0u32; 129];
        let mut n = 0;
        let mut keep = |id: u32| {
            ids[n] = id;
            n += 1;
        };
        match net {
            IpNet::V4(net) => self.v4.cover(&net).for_each(|(_, &id)| keep(id)),
            IpNet::V6(net) => self.v6.cover(&net).for_each(|(_, &id)| keep(id)),
        }
        for &id in ids[..n].iter().rev() {
            m.add(id, how);
        }
    }

    /// Exact (domain or hostname entries), then `Domain` entries on every parent name.
    fn domain_matches<'a>(
        &'a self,
        name: &str,
        forced: Option<MatchKind>,
        exact: bool,
        m: &mut Matches<'a>,
    ) {
        // The name's and its first parents' slots are all requested before any is read, so
        // their cache misses overlap instead of following one another.
        const AHEAD: usize = 8;
        let mut ahead = [0u64; AHEAD];
        let mask = self.slots.len() - 1;
        let own = exact.then(|| {
            let h = self.hasher.hash_one(name);
            crate::sys::prefetch(&self.slots[h as usize & mask]);
            h
        });
        let parents = || {
            let mut rest = name;
            std::iter::from_fn(move || {
                let (_, parent) = rest.split_once('.')?;
                rest = parent;
                (!parent.is_empty()).then_some(parent)
            })
        };
        for (h, parent) in ahead.iter_mut().zip(parents()) {
            *h = self.hasher.hash_one(parent);
            crate::sys::prefetch(&self.slots[*h as usize & mask]);
        }
        if let Some(h) = own {
            let how = forced.unwrap_or(MatchKind::Exact);
            self.exact_ids_hashed(name, h, |id, _| m.add(id, how));
        }
        let how = forced.unwrap_or(MatchKind::Subdomain);
        for (i, parent) in parents().enumerate() {
            let h = match ahead.get(i) {
                Some(&h) => h,
                None => self.hasher.hash_one(parent),
            };
            self.exact_ids_hashed(parent, h, |id, kind| {
                if kind == Kind::Domain {
                    m.add(id, how);
                }
            });
        }
    }

    /// The URL's host (from the one parse of the looked-up URL) matched as a name or address.
    fn url_host_matches<'a>(&'a self, host: url::Host, m: &mut Matches<'a>) {
        match host {
            // `www.evil.example.` (a fully qualified name) is the same host as without the dot.
            url::Host::Domain(d) if d.len() <= 254 => {
                let d = d.trim_end_matches('.');
                if !d.is_empty() {
                    self.domain_matches(d, Some(MatchKind::Url), true, m)
                }
            }
            url::Host::Ipv4(ip) => {
                self.ip_matches(IpAddr::V4(ip), Some(MatchKind::Url), m);
            }
            url::Host::Ipv6(ip) => {
                self.ip_matches(IpAddr::V6(ip), Some(MatchKind::Url), m);
            }
            _ => {}
        }
    }
}

/// Names are tried as domains only when they could be one: at most 253 bytes (the DNS limit,
/// which also bounds the parent walk), no spaces, slashes, colons.
fn looks_like_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 254
        && !v
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | ':' | '@' | '\\' | '?' | '#'))
}

struct Matches<'a> {
    index: &'a Index,
    found: Vec<Match<'a>>,
}

impl<'a> Matches<'a> {
    fn add(&mut self, entry: u32, how: MatchKind) {
        if !self.found.iter().any(|m| m.entry == entry) {
            self.found.push(Match {
                index: self.index,
                entry,
                how,
            });
        }
    }
}

/// One entry of the index, for exports and diffs.
#[derive(Clone, Copy)]
pub struct EntryRef<'a> {
    index: &'a Index,
    id: u32,
}

impl<'a> EntryRef<'a> {
    pub fn value(&self) -> &'a str {
        self.index.value(self.id)
    }

    pub fn kind(&self) -> Kind {
        self.index.entries[self.id as usize].kind
    }

    /// The MISP type of the first record (records of one value usually agree).
    pub fn misp_type(&self) -> &'a str {
        let r = &self.index.recs_of(self.id)[0];
        &self.index.strings[r.misp_type as usize]
    }

    pub fn sources(&self) -> impl Iterator<Item = SourceRef<'a>> + 'a {
        let index = self.index;
        index.recs_of(self.id).iter().map(move |r| SourceRef {
            index,
            rec: r,
            source: &index.strings[r.source as usize],
            event_uuid: (r.event != NONE).then(|| &index.strings[r.event as usize]),
            misp_type: &index.strings[r.misp_type as usize],
            category: &index.strings[r.category as usize],
            tags: &index.tag_sets[r.tags as usize],
            notes: &index.note_sets[r.notes as usize],
            timestamp: r.timestamp,
            to_ids: r.flags & TO_IDS != 0,
        })
    }

    /// Whether any record comes from this source.
    pub fn has_source(&self, source: &str) -> bool {
        self.sources().any(|s| &**s.source == source)
    }

    /// Whether the kind name (`ip`, `domain`...) or any record's MISP type equals `t`.
    pub fn has_type(&self, t: &str) -> bool {
        self.kind().as_str() == t || self.sources().any(|s| &**s.misp_type == t)
    }
}

/// One source's record behind a match.
#[derive(Clone, Copy)]
pub struct SourceRef<'a> {
    index: &'a Index,
    rec: &'a Rec,
    pub source: &'a Arc<str>,
    pub event_uuid: Option<&'a Arc<str>>,
    pub misp_type: &'a Arc<str>,
    pub category: &'a Arc<str>,
    pub tags: &'a Arc<[Arc<str>]>,
    pub notes: &'a [Box<str>],
    pub timestamp: i64,
    pub to_ids: bool,
}

impl<'a> SourceRef<'a> {
    /// The attribute uuid without allocating: formatted into `buf`, or the stored text.
    pub fn attribute_uuid_in<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str
    where
        'a: 'b,
    {
        if self.rec.flags & ATTR_TEXT != 0 {
            let a = &self.rec.attr;
            let off = u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as usize;
            let len = u32::from_le_bytes([a[4], a[5], a[6], a[7]]) as usize;
            &self.index.arena[off..off + len]
        } else {
            *buf = format_uuid(&self.rec.attr);
            std::str::from_utf8(buf).unwrap_or("")
        }
    }

    pub fn attribute_uuid(&self) -> String {
        if self.rec.flags & ATTR_TEXT != 0 {
            let a = &self.rec.attr;
            let off = u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as usize;
            let len = u32::from_le_bytes([a[4], a[5], a[6], a[7]]) as usize;
            self.index.arena[off..off + len].to_string()
        } else {
            let f = format_uuid(&self.rec.attr);
            String::from_utf8_lossy(&f).into_owned()
        }
    }
}

impl Serialize for SourceRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("source", &**self.source)?;
        m.serialize_entry("event_uuid", &self.event_uuid.map(|e| &**e))?;
        if self.rec.flags & ATTR_TEXT != 0 {
            m.serialize_entry("attribute_uuid", &self.attribute_uuid())?;
        } else {
            let f = format_uuid(&self.rec.attr);
            m.serialize_entry("attribute_uuid", std::str::from_utf8(&f).unwrap_or(""))?;
        }
        m.serialize_entry("category", &**self.category)?;
        m.serialize_entry("tags", &**self.tags)?;
        m.serialize_entry("timestamp", &self.timestamp)?;
        m.serialize_entry("to_ids", &self.to_ids)?;
        m.end()
    }
}

/// One matched entry.
#[derive(Clone, Copy)]
pub struct Match<'a> {
    index: &'a Index,
    entry: u32,
    pub how: MatchKind,
}

impl<'a> Match<'a> {
    pub fn entry(&self) -> EntryRef<'a> {
        EntryRef {
            index: self.index,
            id: self.entry,
        }
    }
}

impl std::fmt::Debug for Match<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.entry();
        write!(f, "{:?} {} {:?}", self.how, e.value(), e.kind())
    }
}

struct Sources<'a>(EntryRef<'a>);

impl Serialize for Sources<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.sources())
    }
}

impl Serialize for Match<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.entry();
        let mut notes: Vec<&str> = Vec::new();
        for src in e.sources() {
            for n in src.notes {
                if !notes.contains(&&**n) {
                    notes.push(n);
                }
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("indicator", e.value())?;
        m.serialize_entry("type", e.misp_type())?;
        m.serialize_entry("kind", &e.kind())?;
        m.serialize_entry("match", &self.how)?;
        m.serialize_entry("sources", &Sources(e))?;
        if !notes.is_empty() {
            m.serialize_entry("notes", &notes)?;
        }
        m.end()
    }
}

/// A warninglist the queried value itself is on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WarninglistHit {
    /// The list's own name, shared with the loaded list.
    pub name: Arc<str>,
    pub category: &'static str,
}

/// The answer to one lookup, serialised as the `/v1/lookup` response body.
#[derive(Debug)]
pub struct Lookup<'a> {
    pub value: &'a str,
    pub listed: bool,
    pub matches: Vec<Match<'a>>,
    /// Filled by the query service from the warninglist oracle, when one is wired.
    pub warninglists: Vec<WarninglistHit>,
}

impl Serialize for Lookup<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("value", self.value)?;
        m.serialize_entry("listed", &self.listed)?;
        m.serialize_entry("matches", &MatchList(&self.matches))?;
        if !self.warninglists.is_empty() {
            m.serialize_entry("warninglists", &self.warninglists)?;
        }
        m.end()
    }
}

struct MatchList<'s, 'a>(&'s [Match<'a>]);

impl Serialize for MatchList<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for m in self.0 {
            seq.serialize_element(m)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ind(value: &str, kind: Kind, misp_type: &str, source: &str) -> Indicator {
        Indicator {
            value: value.into(),
            kind,
            provenance: Provenance {
                source: source.into(),
                event_uuid: Some("5f1a0c3e-0000-4000-8000-000000000001".into()),
                attribute_uuid: "5f1a0c3e-0000-4000-8000-0000000000aa".into(),
                misp_type: misp_type.into(),
                category: "Network activity".into(),
                tags: Arc::from(vec![Arc::<str>::from("tlp:green")]),
                timestamp: 1_700_000_000,
                to_ids: true,
            },
            notes: Vec::new(),
        }
    }

    fn sample() -> Index {
        let mut odd = ind("evil.example", Kind::Domain, "domain", "b");
        odd.provenance.attribute_uuid = "NOT-A-UUID".into();
        odd.notes = vec!["refanged".into()];
        Index::build(vec![
            ind("evil.example", Kind::Domain, "domain", "a"),
            odd,
            ind("host.bad.example", Kind::Hostname, "hostname", "a"),
            ind("192.0.2.7", Kind::Ip, "ip-dst", "a"),
            ind("10.0.0.0/8", Kind::Cidr, "ip-dst", "a"),
            ind("10.1.0.0/16", Kind::Cidr, "ip-src", "a"),
            ind("2001:db8::/32", Kind::Cidr, "ip-dst", "a"),
            ind("https://phish.example/login", Kind::Url, "url", "a"),
            ind("d41d8cd98f00b204e9800998ecf8427e", Kind::Hash, "md5", "a"),
            ind("bad@mail.example", Kind::Email, "email-src", "a"),
            ind("Global\\Mutex1", Kind::Other, "mutex", "a"),
        ])
    }

    fn hows(l: &Lookup<'_>) -> Vec<(String, MatchKind)> {
        l.matches
            .iter()
            .map(|m| (m.entry().value().to_string(), m.how))
            .collect()
    }

    #[test]
    fn domains_match_subdomains_hostnames_do_not() {
        let ix = sample();
        let l = ix.lookup("A.B.Evil.Example.");
        assert_eq!(
            hows(&l),
            vec![("evil.example".into(), MatchKind::Subdomain)]
        );
        assert!(ix.lookup("x.host.bad.example").matches.is_empty());
        let l = ix.lookup("HOST.bad.example");
        assert_eq!(
            hows(&l),
            vec![("host.bad.example".into(), MatchKind::Exact)]
        );
        assert!(!ix.lookup("notevil.example").listed);
    }

    #[test]
    fn one_value_many_sources_is_one_match() {
        let ix = sample();
        let l = ix.lookup("evil.example");
        assert_eq!(l.matches.len(), 1);
        let srcs: Vec<String> = l.matches[0]
            .entry()
            .sources()
            .map(|s| s.source.to_string())
            .collect();
        assert_eq!(srcs, vec!["a", "b"]);
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(
            json["matches"][0]["sources"][1]["attribute_uuid"],
            "NOT-A-UUID"
        );
        assert_eq!(
            json["matches"][0]["sources"][0]["attribute_uuid"],
            "5f1a0c3e-0000-4000-8000-0000000000aa"
        );
        assert_eq!(json["matches"][0]["notes"][0], "refanged");
        assert_eq!(json["matches"][0]["type"], "domain");
        assert_eq!(json["matches"][0]["match"], "exact");
        assert!(json.get("warninglists").is_none());
        assert_eq!(ix.len(), 11);
        assert_eq!(ix.values(), 10);
    }

    #[test]
    fn ips_match_exact_and_every_containing_cidr_longest_first() {
        let ix = sample();
        let l = ix.lookup("10.1.2.3");
        assert_eq!(
            hows(&l),
            vec![
                ("10.1.0.0/16".into(), MatchKind::Cidr),
                ("10.0.0.0/8".into(), MatchKind::Cidr)
            ]
        );
        assert_eq!(
            hows(&ix.lookup(" 192.0.2.7 ")),
            vec![("192.0.2.7".into(), MatchKind::Exact)]
        );
        assert_eq!(
            hows(&ix.lookup("::ffff:192.0.2.7")),
            vec![("192.0.2.7".into(), MatchKind::Exact)]
        );
        assert_eq!(
            hows(&ix.lookup("2001:DB8:0:0::1")),
            vec![("2001:db8::/32".into(), MatchKind::Cidr)]
        );
        assert_eq!(
            hows(&ix.lookup("10.1.0.0/16")),
            vec![
                ("10.1.0.0/16".into(), MatchKind::Exact),
                ("10.0.0.0/8".into(), MatchKind::Cidr)
            ]
        );
        assert!(!ix.lookup("11.0.0.1").listed);
    }

    #[test]
    fn urls_match_exactly_and_through_their_host() {
        let ix = sample();
        assert_eq!(
            hows(&ix.lookup("HTTPS://Phish.Example:443/login#x")),
            vec![("https://phish.example/login".into(), MatchKind::Exact)]
        );
        assert_eq!(
            hows(&ix.lookup("http://www.evil.example/x")),
            vec![("evil.example".into(), MatchKind::Url)]
        );
        assert_eq!(
            hows(&ix.lookup("http://10.9.9.9:8080/")),
            vec![("10.0.0.0/8".into(), MatchKind::Url)]
        );
        assert_eq!(
            hows(&ix.lookup("http://[2001:db8::7]/a")),
            vec![("2001:db8::/32".into(), MatchKind::Url)]
        );
        // An upper-case host, written fully qualified, reaches the name tables in its
        // normalised form.
        assert_eq!(
            hows(&ix.lookup("http://WWW.Evil.Example./")),
            vec![("evil.example".into(), MatchKind::Url)]
        );
        assert!(!ix.lookup("https://phish.example/other").listed);
    }

    #[test]
    fn hashes_emails_and_others() {
        let ix = sample();
        assert!(ix.lookup("D41D8CD98F00B204E9800998ECF8427E").listed);
        assert!(ix.lookup("Bad@Mail.Example").listed);
        assert!(ix.lookup("Global\\Mutex1").listed);
        assert!(!ix.lookup("global\\mutex1").listed);
        assert!(!ix.lookup("").listed);
        // Over-long names are not walked label by label (that would be quadratic).
        let long = format!("{}evil.example", "a.".repeat(200_000));
        assert!(!ix.lookup(&long).listed);
    }

    #[test]
    fn round_trips_and_coverage() {
        let ix = sample();
        let back = Index::build(ix.to_indicators());
        assert_eq!(back.len(), ix.len());
        let e = ix.entries().find(|e| e.value() == "10.1.0.0/16").unwrap();
        assert!(ix.covered_by_other_cidr(&e));
        let e = ix.entries().find(|e| e.value() == "10.0.0.0/8").unwrap();
        assert!(!ix.covered_by_other_cidr(&e));
        let empty = Index::default();
        assert!(!empty.lookup("evil.example").listed);
    }

    #[test]
    fn entries_are_sorted_and_records_keep_input_order() {
        // The larger set is sorted in two halves on two threads, then merged.
        for n in [2000, PARALLEL_SORT] {
            let mut input = Vec::new();
            let mut rng = fastrand::Rng::with_seed(3);
            for i in 0..n {
                let v = format!("http://x{}.example/{}", rng.u32(..50), "\0".repeat(i % 3));
                input.push(ind(&v, Kind::Url, "url", &format!("s{i}")));
                input.push(ind("ab", Kind::Other, "text", &format!("t{i}")));
            }
            let ix = Index::build(input);
            let keys: Vec<(Kind, &str)> = ix.entries().map(|e| (e.kind(), e.value())).collect();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "strictly sorted, no duplicates"
            );
            let e = ix.entries().find(|e| e.value() == "ab").unwrap();
            let order: Vec<usize> = e
                .sources()
                .map(|s| s.source[1..].parse().unwrap())
                .collect();
            assert_eq!(order.len(), n);
            assert!(order.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn merge_keeps_order_across_runs() {
        let cmp = |a: &u32, b: &u32| a.cmp(b);
        assert_eq!(
            merge(vec![1, 4, 9], vec![2, 3, 10, 11], cmp),
            [1, 2, 3, 4, 9, 10, 11]
        );
        assert_eq!(merge(vec![], vec![2], cmp), [2]);
        assert_eq!(merge(vec![5, 6], vec![], cmp), [5, 6]);
    }

    #[test]
    fn strings_are_interned_by_text_whether_or_not_their_arcs_are_shared() {
        let a = ind("1.example", Kind::Domain, "domain", "s");
        let mut b = a.clone();
        b.value = "2.example".into();
        let c = ind("3.example", Kind::Domain, "domain", "s");
        let input = vec![a, b, c];
        let ix = Index::build(input.clone());
        assert_eq!(ix.strings.len(), 4, "source, event, type, category");
        assert_eq!(ix.tag_sets.len(), 1);
        assert_eq!(ix.to_indicators(), input);
    }

    /// Differential check against a plain scan over the list, on small random universes where
    /// networks nest and names share suffixes.
    #[test]
    fn lookups_agree_with_a_linear_scan() {
        let mut rng = fastrand::Rng::with_seed(99);
        let labels = ["a", "b", "c"];
        let name = |rng: &mut fastrand::Rng| {
            (0..rng.usize(1..=4))
                .map(|_| labels[rng.usize(..3)])
                .collect::<Vec<_>>()
                .join(".")
        };
        let addr = |rng: &mut fastrand::Rng| {
            std::net::Ipv4Addr::new(10, rng.u8(0..4), rng.u8(0..4), rng.u8(0..8))
        };
        for _round in 0..20 {
            let mut list = Vec::new();
            for _ in 0..40 {
                list.push(match rng.u8(0..4) {
                    0 => ind(&addr(&mut rng).to_string(), Kind::Ip, "ip-dst", "s"),
                    1 => {
                        let net = ipnet::Ipv4Net::new(addr(&mut rng), rng.u8(8..=32)).unwrap();
                        ind(&net.trunc().to_string(), Kind::Cidr, "ip-dst", "s")
                    }
                    2 => ind(&name(&mut rng), Kind::Domain, "domain", "s"),
                    _ => ind(&name(&mut rng), Kind::Hostname, "hostname", "s"),
                });
            }
            let ix = Index::build(list.clone());
            for _ in 0..200 {
                let q = if rng.bool() {
                    addr(&mut rng).to_string()
                } else {
                    name(&mut rng)
                };
                let mut expected: Vec<(Kind, String)> = list
                    .iter()
                    .filter(|i| {
                        let v = &*i.value;
                        match i.kind {
                            Kind::Ip => v == q,
                            Kind::Cidr => q
                                .parse::<IpAddr>()
                                .is_ok_and(|a| v.parse::<IpNet>().is_ok_and(|n| n.contains(&a))),
                            Kind::Domain => q == v || q.ends_with(&format!(".{v}")),
                            Kind::Hostname => q == v,
                            _ => false,
                        }
                    })
                    .map(|i| (i.kind, i.value.to_string()))
                    .collect();
                expected.sort();
                expected.dedup();
                let l = ix.lookup(&q);
                let prefixes: Vec<u8> = l
                    .matches
                    .iter()
                    .filter(|m| m.how == MatchKind::Cidr)
                    .map(|m| m.entry().value().parse::<IpNet>().unwrap().prefix_len())
                    .collect();
                assert!(
                    prefixes.windows(2).all(|w| w[0] > w[1]),
                    "most specific network first: {prefixes:?}"
                );
                let mut got: Vec<(Kind, String)> = l
                    .matches
                    .iter()
                    .map(|m| (m.entry().kind(), m.entry().value().to_string()))
                    .collect();
                got.sort();
                assert_eq!(got, expected, "query {q}");
            }
        }
    }

    /// The lookup takes a parsed IPv4 address's own text as its canonical form.
    #[test]
    fn parsed_ipv4_text_is_canonical() {
        let mut rng = fastrand::Rng::with_seed(4);
        let mut parsed = 0;
        for _ in 0..200_000 {
            let s: String = (0..rng.usize(7..16))
                .map(|_| if rng.u8(..4) == 0 { '.' } else { rng.digit(10) })
                .collect();
            if let Ok(a) = s.parse::<std::net::Ipv4Addr>() {
                assert_eq!(a.to_string(), s);
                parsed += 1;
            }
        }
        assert!(parsed > 100, "{parsed}");
        for s in ["01.2.3.4", "1.2.3.04", "1.2.3"] {
            assert!(s.parse::<std::net::Ipv4Addr>().is_err(), "{s}");
        }
    }

    #[test]
    fn uuid_text_round_trip() {
        let s = "5f1a0c3e-0000-4000-8000-0000000000aa";
        assert_eq!(&format_uuid(&parse_uuid(s).unwrap())[..], s.as_bytes());
        assert!(parse_uuid("5F1A0C3E-0000-4000-8000-0000000000AA").is_none());
    }
}
