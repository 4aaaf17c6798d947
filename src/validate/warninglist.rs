//! MISP warninglists applied locally, with MISP's matching semantics (Warninglist::checkValue):
//!
//! - `string`: the value equals an entry (case-sensitive).
//! - `substring`: an entry occurs anywhere in the value.
//! - `hostname`: the host part of the value (before the first `/`, or the third `/`-segment
//!   when the value has `//`) or any of its label suffixes (`c`, `b.c`, `a.b.c`) is an entry.
//! - `cidr`: the address or network overlaps an entry; entries without a mask are single hosts.
//! - `regex`: a PCRE `/pattern/flags` matches anywhere in the value.
//!
//! A list applies only to the MISP types in its `matching_attributes` (all types when absent);
//! composites are tested per half. Deliberate differences from MISP, all towards catching more:
//! hostname entries lose leading dots as well as trailing ones (dynamic-dns lists are written
//! `.duckdns.org`), the extracted host loses a `user@` prefix and a `:port` suffix, a CIDR value
//! also matches when it *contains* a listed range (MISP only checks the other way, MISP/MISP#3156),
//! a `string` entry written `.example.com` (misp-warninglists#299: the `google` and `microsoft`
//! lists) matches that domain and the names under it instead of nothing, a hostname entry that
//! is a public suffix of the value (PSL, private section included: `blogspot.com`, `github.io`,
//! `duckdns.org`) does not clear the tenants under it in a false-positive list (tranco10k lists
//! blogspot.com; 230 real Infoblox phishing names sit under such platforms), and the `/g` flag that PHP rejects is ignored rather than failing the list.
//!
//! All lists are merged into one structure per list type (hash maps keyed by entry, a prefix
//! trie per address family, one Aho-Corasick automaton, one RegexSet); each entry records which
//! lists hold it, and a per-MISP-type bit mask says which lists apply.

use super::fxhash::FxHashMap as HashMap;
use super::types::INDEXED_TYPES;
use aho_corasick::AhoCorasick;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use regex::RegexSet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a hit on a list does to an indicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Quarantine with reason `warninglist`.
    Block,
    /// Publish with a `warninglist:<list>` note, unless the value is (or covers) the listed
    /// entry itself.
    Inform,
}

/// MISP's two warninglist categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Values that are benign and commonly reported by mistake (top sites, cloud ranges...).
    FalsePositive,
    /// Known services that attackers also use (dynamic DNS, URL shorteners, VPN exits...):
    /// a listed entry itself is benign, a name or URL under it may be malicious.
    Known,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::FalsePositive => "false-positive",
            Category::Known => "known",
        }
    }
}

/// Lists treated as `known` when the list file does not say (the shipped snapshot carries no
/// `category` field): services hosting many unrelated parties, where an indicator *under* the
/// listed name is often genuinely malicious (Infoblox reports phishing on dynamic DNS names).
pub const KNOWN_LISTS: &[&str] = &[
    "dynamic-dns",
    "url-shortener",
    "link-in-bio",
    "lots-project",
    "disposable-email",
    "parking-domain",
    "parking-domain-ns",
    "vpn-ipv4",
    "vpn-ipv6",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListType {
    String,
    Substring,
    Hostname,
    Cidr,
    Regex,
}

impl ListType {
    fn parse(s: &str) -> Option<ListType> {
        Some(match s {
            "string" => ListType::String,
            "substring" => ListType::Substring,
            "hostname" => ListType::Hostname,
            "cidr" => ListType::Cidr,
            "regex" => ListType::Regex,
            _ => return None,
        })
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ListType::String => "string",
            ListType::Substring => "substring",
            ListType::Hostname => "hostname",
            ListType::Cidr => "cidr",
            ListType::Regex => "regex",
        }
    }
}

/// One loaded list.
#[derive(Debug, Clone)]
pub(crate) struct ListMeta {
    /// Folder name, e.g. `amazon-aws`: the name settings use.
    pub id: Box<str>,
    /// The list's own `name`.
    pub name: Arc<str>,
    pub kind: ListType,
    pub category: Category,
    pub action: Action,
    pub entries: usize,
}

/// The list ids holding one entry (almost always one).
#[derive(Debug, Clone)]
enum Ids {
    One(u16),
    Many(Box<[u16]>),
}

impl Ids {
    fn add(&mut self, id: u16) {
        match self {
            Ids::One(x) if *x == id => {}
            Ids::One(x) => *self = Ids::Many(vec![*x, id].into()),
            Ids::Many(v) if v.contains(&id) => {}
            Ids::Many(v) => {
                let mut n = v.to_vec();
                n.push(id);
                *v = n.into();
            }
        }
    }
    fn slice(&self) -> &[u16] {
        match self {
            Ids::One(x) => std::slice::from_ref(x),
            Ids::Many(v) => v,
        }
    }
}

/// Set on an id in [`Warninglists::entries`] for a string-list entry written `.domain`, which
/// is matched like a hostname entry.
const SUFFIX: u16 = 0x8000;

/// A bit per list.
pub(crate) type Mask = Box<[u64]>;

fn mask_has(mask: &[u64], id: u16) -> bool {
    mask.get(id as usize / 64)
        .is_some_and(|w| w & (1 << (id % 64)) != 0)
}

/// One hit before actions are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawHit {
    pub list: u16,
    /// The value is the listed entry itself or covers it (equal string, hostname equal to the
    /// entry, network containing the listed range): publishing it would block the listed thing.
    pub covers: bool,
}

/// The shape of a raw value looked up on the query socket, which has no MISP type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LookupKind {
    Address = 0,
    Url = 1,
    Name = 2,
    Email = 3,
    Hash = 4,
}

impl LookupKind {
    const ALL: [LookupKind; 5] = [
        LookupKind::Address,
        LookupKind::Url,
        LookupKind::Name,
        LookupKind::Email,
        LookupKind::Hash,
    ];

    /// The MISP types a value of this shape is stored as.
    pub(crate) fn misp_types(self) -> &'static [&'static str] {
        match self {
            LookupKind::Address => &[
                "ip-src",
                "ip-dst",
                "ip-src|port",
                "ip-dst|port",
                "domain|ip",
            ],
            LookupKind::Url => &["url", "uri", "link"],
            LookupKind::Name => &["domain", "hostname", "domain|ip", "hostname|port"],
            LookupKind::Email => &[
                "email",
                "email-src",
                "email-dst",
                "target-email",
                "whois-registrant-email",
                "dns-soa-email",
            ],
            LookupKind::Hash => &[
                "md5",
                "sha1",
                "sha224",
                "sha256",
                "sha384",
                "sha512",
                "filename|md5",
                "filename|sha1",
                "filename|sha256",
            ],
        }
    }
}

/// What is tested: the canonical text, and the network when the value is an address.
pub(crate) struct Probe<'a> {
    pub text: &'a str,
    pub net: Option<IpNet>,
    /// Whether the value is itself a name (domain/hostname), so a hostname hit on the whole
    /// value covers the entry.
    pub is_name: bool,
    /// Length of the value's registrable domain (0 when unknown). A hostname entry shorter than
    /// it is a platform the value is a tenant of (`blogspot.com` for `evil.blogspot.com`).
    pub registrable: usize,
}

/// What applies to one MISP type: the lists (as a mask), and which substring automaton and
/// regex set hold exactly the patterns of those lists.
#[derive(Debug, Default, Clone)]
pub(crate) struct TypeTables {
    mask: Mask,
    strings: bool,
    hostnames: bool,
    cidrs: bool,
    substrings: Option<usize>,
    regexes: Option<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct Warninglists {
    pub lists: Vec<ListMeta>,
    /// Entries of `string` and `hostname` lists in one map (a name's exact lookup serves both
    /// kinds, saving a cache miss); each id's list type says how the entry counts.
    entries: HashMap<Box<str>, Ids>,
    /// Some string list has `.domain` entries, stored as ids with [`SUFFIX`] set.
    suffix_strings: bool,
    v4: PrefixMap<Ipv4Net, Ids>,
    v6: PrefixMap<Ipv6Net, Ids>,
    /// One automaton per distinct group of substring lists that apply to some type.
    substrings: Vec<(AhoCorasick, Vec<u16>)>,
    /// One regex set per distinct group of regex lists that apply to some type.
    regexes: Vec<(RegexSet, Vec<u16>)>,
    /// Per indexed MISP type.
    types: HashMap<&'static str, TypeTables>,
    /// Every list (types mispd does not index, lookups of values of no known shape).
    all: TypeTables,
    /// For lookups of raw values, per [`LookupKind`]: every exact list (string, hostname,
    /// CIDR), and the pattern lists (substring, regex) that apply to some MISP type a value of
    /// that shape has. An address or a hash is not run through the phone-number regexes, nor a
    /// URL through the disposable-e-mail substrings (which MISP applies to e-mail addresses
    /// and to `domain|ip`, so to names too).
    by_shape: Vec<TypeTables>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entries {
    Seq(Vec<String>),
    Map(BTreeMap<String, serde_json::Value>),
}

#[derive(Deserialize)]
struct RawList {
    name: String,
    #[serde(rename = "type")]
    kind: OneOrMany,
    list: Entries,
    matching_attributes: Option<Vec<String>>,
    category: Option<String>,
}

/// Every `list.json` under a directory in MISP layout (`lists/<name>/list.json`) or flat
/// (`<name>/list.json`), sorted by list name.
pub(crate) fn list_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let base = if dir.join("lists").is_dir() {
        dir.join("lists")
    } else {
        dir.to_path_buf()
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&base)? {
        let e = e?;
        let file = e.path().join("list.json");
        if file.is_file() {
            out.push((e.file_name().to_string_lossy().into_owned(), file));
        }
    }
    out.sort();
    Ok(out)
}

/// Turn a PCRE `/pattern/flags` into a Rust regex. Flags `i m s x` map to inline flags; `g`,
/// `u` and `D` have no meaning for a single is-match and are ignored; others are refused.
pub(crate) fn translate_pcre(p: &str) -> Result<String, String> {
    let delim = p.chars().next().ok_or("empty regex")?;
    if delim.is_alphanumeric() || delim == '\\' || delim.is_whitespace() {
        return Err(format!("`{p}` has no PCRE delimiter"));
    }
    let close = match delim {
        '(' => ')',
        '{' => '}',
        '[' => ']',
        '<' => '>',
        d => d,
    };
    let end = p
        .rfind(close)
        .filter(|&e| e > 0)
        .ok_or("unterminated regex")?;
    let body = &p[delim.len_utf8()..end];
    let mut flags = String::new();
    for f in p[end + close.len_utf8()..].chars() {
        match f {
            'i' | 'm' | 's' | 'x' => flags.push(f),
            'g' | 'u' | 'D' => {}
            other => return Err(format!("unsupported PCRE flag `{other}` in `{p}`")),
        }
    }
    Ok(if flags.is_empty() {
        body.to_string()
    } else {
        format!("(?{flags}){body}")
    })
}

/// Hostname extraction as MISP does it, plus dropping `user@` and `:port`.
pub(crate) fn extract_host(v: &str) -> &str {
    let h = if v.contains("//") {
        v.split('/').nth(2).unwrap_or("")
    } else {
        v.split('/').next().unwrap_or("")
    };
    let h = h.rsplit_once('@').map_or(h, |(_, h)| h);
    let h = if h.starts_with('[') {
        h
    } else {
        h.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(h, _)| h)
    };
    h.trim_end_matches('.')
}

impl Warninglists {
    /// Load every list in `dirs`. Problems are returned as warnings; a bad list is skipped.
    pub(crate) fn load(
        dirs: &[PathBuf],
        actions: &BTreeMap<String, Action>,
        disabled: &[String],
        warnings: &mut Vec<String>,
    ) -> Warninglists {
        let mut items = Vec::new();
        for dir in dirs {
            match list_files(dir) {
                Ok(files) => {
                    for (id, file) in files {
                        if disabled.contains(&id) {
                            continue;
                        }
                        let bytes = std::fs::read(&file).map_err(|e| e.to_string());
                        items.push((id, file.display().to_string(), bytes));
                    }
                }
                Err(e) => warnings.push(format!(
                    "warninglist directory {} cannot be read ({e}): its lists are not applied",
                    dir.display()
                )),
            }
        }
        Self::from_items(items, actions, disabled, warnings)
    }

    /// One list from its `list.json` bytes (the fuzz target's way in; same rules as a file).
    pub(crate) fn from_bytes(id: &str, bytes: &[u8], warnings: &mut Vec<String>) -> Warninglists {
        let items = vec![(
            id.to_string(),
            format!("{id}/list.json"),
            Ok(bytes.to_vec()),
        )];
        Self::from_items(items, &BTreeMap::new(), &[], warnings)
    }

    /// Build the tables from (list id, where it came from, its bytes or why they could not be read).
    fn from_items(
        items: Vec<(String, String, Result<Vec<u8>, String>)>,
        actions: &BTreeMap<String, Action>,
        disabled: &[String],
        warnings: &mut Vec<String>,
    ) -> Warninglists {
        let mut w = Warninglists::default();
        let mut substrings: Vec<(String, u16)> = Vec::new();
        let mut regexes: Vec<(String, u16)> = Vec::new();
        let mut applies: Vec<Option<Vec<String>>> = Vec::new();
        {
            for (id, file, bytes) in items {
                if w.lists.iter().any(|l| *l.id == *id) {
                    warnings.push(format!(
                        "warninglist {id} in {file} ignored: a list with that name is already loaded"
                    ));
                    continue;
                }
                let raw: RawList = match bytes
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                {
                    Ok(r) => r,
                    Err(e) => {
                        warnings.push(format!("warninglist {file} skipped: malformed ({e})"));
                        continue;
                    }
                };
                if disabled.contains(&raw.name) {
                    continue;
                }
                if w.lists.len() >= SUFFIX as usize {
                    warnings.push("more than 32767 warninglists: the rest are skipped".into());
                    break;
                }
                let lid = w.lists.len() as u16;
                let kind_str = match &raw.kind {
                    OneOrMany::One(s) => s.as_str(),
                    OneOrMany::Many(v) => v.first().map(String::as_str).unwrap_or(""),
                };
                let Some(kind) = ListType::parse(kind_str) else {
                    warnings.push(format!(
                        "warninglist {id} skipped: unknown type `{kind_str}`"
                    ));
                    continue;
                };
                let entries: Vec<String> = match raw.list {
                    Entries::Seq(v) => v,
                    Entries::Map(m) => m.into_keys().collect(),
                };
                let category = match raw.category.as_deref() {
                    Some("known") => Category::Known,
                    Some(_) => Category::FalsePositive,
                    None if KNOWN_LISTS.contains(&id.as_str()) => Category::Known,
                    None => Category::FalsePositive,
                };
                let action = actions
                    .get(&id)
                    .or_else(|| actions.get(&raw.name))
                    .copied()
                    .unwrap_or(match category {
                        Category::FalsePositive => Action::Block,
                        Category::Known => Action::Inform,
                    });
                let mut count = 0usize;
                let mut bad = 0usize;
                match kind {
                    ListType::String => {
                        for e in entries {
                            let e = e.trim();
                            if let Some(d) = e.strip_prefix('.') {
                                // `.example.com` in a string list (misp-warninglists#299): the
                                // author meant the domain and every name under it
                                let d = d.trim_end_matches('.').to_ascii_lowercase();
                                if !d.is_empty() {
                                    add(&mut w.entries, &d, lid | SUFFIX);
                                    w.suffix_strings = true;
                                    count += 1;
                                }
                            } else if !e.is_empty() {
                                add(&mut w.entries, e, lid);
                                count += 1;
                            }
                        }
                    }
                    ListType::Hostname => {
                        for e in entries {
                            let e = e.trim().trim_matches('.').to_ascii_lowercase();
                            if !e.is_empty() {
                                add(&mut w.entries, &e, lid);
                                count += 1;
                            }
                        }
                    }
                    ListType::Cidr => {
                        for e in entries {
                            // `::ffff:a.b.c.d` entries are IPv4 entries, as probes are
                            let net = super::syntax::parse_net(e.trim(), true);
                            match net.map(super::sanity::as_v4) {
                                Ok(IpNet::V4(n)) => add_net(&mut w.v4, n, lid),
                                Ok(IpNet::V6(n)) => add_net(&mut w.v6, n, lid),
                                Err(_) => {
                                    bad += 1;
                                    continue;
                                }
                            }
                            count += 1;
                        }
                    }
                    ListType::Substring => {
                        for e in entries {
                            if !e.is_empty() {
                                substrings.push((e, lid));
                                count += 1;
                            }
                        }
                    }
                    ListType::Regex => {
                        let mut translated = Vec::new();
                        let mut failed = None;
                        for e in &entries {
                            match translate_pcre(e.trim()).and_then(|r| {
                                regex::Regex::new(&r).map(|_| r).map_err(|e| e.to_string())
                            }) {
                                Ok(r) => translated.push((r, lid)),
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        if let Some(e) = failed {
                            warnings.push(format!(
                                "warninglist {id} skipped: a regex does not compile ({e})"
                            ));
                            continue;
                        }
                        count = translated.len();
                        regexes.extend(translated);
                    }
                }
                if bad > 0 {
                    warnings.push(format!(
                        "warninglist {id}: {bad} entries are not IP networks and were skipped"
                    ));
                }
                w.lists.push(ListMeta {
                    id: id.into(),
                    name: raw.name.into(),
                    kind,
                    category,
                    action,
                    entries: count,
                });
                applies.push(raw.matching_attributes);
            }
        }
        w.build_tables(&applies, &substrings, &regexes, warnings);
        w
    }

    fn build_tables(
        &mut self,
        applies: &[Option<Vec<String>>],
        substrings: &[(String, u16)],
        regexes: &[(String, u16)],
        warnings: &mut Vec<String>,
    ) {
        let words = self.lists.len().div_ceil(64).max(1);
        let mut sub_groups: BTreeMap<Vec<u64>, usize> = BTreeMap::new();
        let mut re_groups: BTreeMap<Vec<u64>, usize> = BTreeMap::new();
        let mut tables = |mask: Vec<u64>, w: &mut Warninglists| {
            let of = |k: ListType| -> Vec<u64> {
                let mut m = mask.clone();
                for (i, l) in w.lists.iter().enumerate() {
                    if l.kind != k {
                        m[i / 64] &= !(1 << (i % 64));
                    }
                }
                m
            };
            let any = |m: &[u64]| m.iter().any(|&x| x != 0);
            let sub = of(ListType::Substring);
            let substrings_group = if any(&sub) {
                let n = sub_groups.len();
                let g = *sub_groups.entry(sub.clone()).or_insert(n);
                if g == w.substrings.len() {
                    let (pats, ids): (Vec<&str>, Vec<u16>) = substrings
                        .iter()
                        .filter(|(_, id)| mask_has(&sub, *id))
                        .map(|(p, id)| (p.as_str(), *id))
                        .unzip();
                    // a DFA is fastest to scan and small enough for the per-type groups
                    let kind = (pats.len() <= 2000).then_some(aho_corasick::AhoCorasickKind::DFA);
                    match aho_corasick::AhoCorasickBuilder::new()
                        .kind(kind)
                        .build(&pats)
                    {
                        Ok(ac) => w.substrings.push((ac, ids)),
                        Err(e) => {
                            warnings.push(format!("substring warninglists not applied: {e}"));
                            w.substrings
                                .push((AhoCorasick::new([""; 0]).expect("empty"), vec![]));
                        }
                    }
                }
                Some(g)
            } else {
                None
            };
            let re = of(ListType::Regex);
            let regexes_group = if any(&re) {
                let n = re_groups.len();
                let g = *re_groups.entry(re.clone()).or_insert(n);
                if g == w.regexes.len() {
                    let (pats, ids): (Vec<&str>, Vec<u16>) = regexes
                        .iter()
                        .filter(|(_, id)| mask_has(&re, *id))
                        .map(|(p, id)| (p.as_str(), *id))
                        .unzip();
                    match RegexSet::new(&pats) {
                        Ok(set) => w.regexes.push((set, ids)),
                        Err(e) => {
                            warnings.push(format!("regex warninglists not applied: {e}"));
                            w.regexes.push((RegexSet::empty(), vec![]));
                        }
                    }
                }
                Some(g)
            } else {
                None
            };
            TypeTables {
                strings: any(&of(ListType::String)),
                hostnames: any(&of(ListType::Hostname)),
                cidrs: any(&of(ListType::Cidr)),
                substrings: substrings_group,
                regexes: regexes_group,
                mask: mask.into(),
            }
        };
        let mut all = vec![0u64; words];
        for i in 0..self.lists.len() {
            all[i / 64] |= 1 << (i % 64);
        }
        self.all = tables(all, self);
        for shape in LookupKind::ALL {
            let mut m = vec![0u64; words];
            for (i, a) in applies.iter().enumerate() {
                let pattern = matches!(self.lists[i].kind, ListType::Substring | ListType::Regex);
                let applies = a
                    .as_ref()
                    .is_none_or(|v| v.iter().any(|x| shape.misp_types().contains(&x.as_str())));
                if !pattern || applies {
                    m[i / 64] |= 1 << (i % 64);
                }
            }
            let tt = tables(m, self);
            self.by_shape.push(tt);
        }
        for t in INDEXED_TYPES {
            let mut m = vec![0u64; words];
            for (i, a) in applies.iter().enumerate() {
                if a.as_ref().is_none_or(|v| v.iter().any(|x| x == t)) {
                    m[i / 64] |= 1 << (i % 64);
                }
            }
            let tt = tables(m, self);
            self.types.insert(t, tt);
        }
    }

    /// What applies to a MISP type (every list for a type mispd does not index).
    pub(crate) fn tables(&self, misp_type: &str) -> &TypeTables {
        self.types.get(misp_type).unwrap_or(&self.all)
    }

    /// What applies to a raw value of this shape (every list when the shape is unknown).
    pub(crate) fn for_shape(&self, shape: Option<LookupKind>) -> &TypeTables {
        shape
            .and_then(|k| self.by_shape.get(k as usize))
            .unwrap_or(&self.all)
    }

    /// Every list in `mask` the probe hits, in list order, each once.
    pub(crate) fn check(&self, p: &Probe<'_>, t: &TypeTables, out: &mut Vec<RawHit>) {
        let start = out.len();
        let mask = &t.mask[..];
        let push = |out: &mut Vec<RawHit>, ids: &[u16], covers: bool| {
            for &id in ids {
                if mask_has(mask, id) {
                    out.push(RawHit { list: id, covers });
                }
            }
        };
        if t.strings || t.hostnames {
            let host = if p.is_name {
                p.text
            } else {
                extract_host(p.text)
            };
            let kind = |id: u16| self.lists[id as usize].kind;
            let exact = if t.strings {
                self.entries.get(p.text)
            } else {
                None
            };
            for &id in exact.map_or(&[][..], Ids::slice) {
                if id & SUFFIX == 0 && kind(id) == ListType::String {
                    push(out, &[id], true);
                }
            }
            if t.hostnames || t.strings && self.suffix_strings {
                let mut rest = host;
                loop {
                    // a name's full host was looked up above already
                    let ids = if t.strings && rest.len() == p.text.len() {
                        exact
                    } else {
                        self.entries.get(rest)
                    };
                    let covers = p.is_name && rest.len() == host.len();
                    let tenant = rest.len() < p.registrable;
                    for &id in ids.map_or(&[][..], Ids::slice) {
                        let suffix_entry = id & SUFFIX != 0;
                        let id = id & !SUFFIX;
                        // a popular platform does not vouch for its tenants; a known-services
                        // list (dynamic DNS) is about exactly those tenants
                        if tenant && self.lists[id as usize].category != Category::Known {
                            continue;
                        }
                        if suffix_entry && t.strings
                            || !suffix_entry && t.hostnames && kind(id) == ListType::Hostname
                        {
                            push(out, &[id], covers);
                        }
                    }
                    match rest.split_once('.') {
                        Some((_, r)) => rest = r,
                        None => break,
                    }
                }
            }
        }
        if let (Some(net), true) = (p.net, t.cidrs) {
            // A single address has no networks inside it but itself, which `cover` yields: the
            // second walk down the trie is only for networks.
            match super::sanity::as_v4(net) {
                IpNet::V4(n) => {
                    for (k, ids) in self.v4.cover(&n) {
                        push(out, ids.slice(), k == n);
                    }
                    if n.prefix_len() < n.max_prefix_len() {
                        for (k, ids) in self.v4.children(&n) {
                            if k != n {
                                push(out, ids.slice(), true);
                            }
                        }
                    }
                }
                IpNet::V6(n) => {
                    for (k, ids) in self.v6.cover(&n) {
                        push(out, ids.slice(), k == n);
                    }
                    if n.prefix_len() < n.max_prefix_len() {
                        for (k, ids) in self.v6.children(&n) {
                            if k != n {
                                push(out, ids.slice(), true);
                            }
                        }
                    }
                }
            }
        }
        if let Some((ac, ids)) = t.substrings.map(|g| &self.substrings[g]) {
            if ac.is_match(p.text) {
                for m in ac.find_overlapping_iter(p.text) {
                    let covers = m.start() == 0 && m.end() == p.text.len();
                    push(out, &[ids[m.pattern().as_usize()]], covers);
                }
            }
        }
        if let Some((set, ids)) = t.regexes.map(|g| &self.regexes[g]) {
            for i in set.matches(p.text).iter() {
                push(out, &[ids[i]], false);
            }
        }
        if out.len() - start < 2 {
            return;
        }
        // one hit per list, keeping `covers` if any of its hits covers
        let hits = &mut out[start..];
        hits.sort_by_key(|h| (h.list, !h.covers));
        let mut kept = start;
        for i in start..out.len() {
            if i == start || out[i].list != out[kept - 1].list {
                out[kept] = out[i];
                kept += 1;
            }
        }
        out.truncate(kept);
    }

    pub(crate) fn entries_by_type(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for l in &self.lists {
            *m.entry(l.kind.as_str()).or_default() += l.entries;
        }
        m
    }
}

fn add(map: &mut HashMap<Box<str>, Ids>, key: &str, id: u16) {
    match map.get_mut(key) {
        Some(ids) => ids.add(id),
        None => {
            map.insert(key.into(), Ids::One(id));
        }
    }
}

fn add_net<P: prefix_trie::Prefix>(map: &mut PrefixMap<P, Ids>, net: P, id: u16) {
    match map.get_mut(&net) {
        Some(ids) => ids.add(id),
        None => {
            map.insert(net, Ids::One(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcre_translation() {
        assert_eq!(
            translate_pcre(r"/^(security|noc)\@.*\..*$/i").unwrap(),
            r"(?i)^(security|noc)\@.*\..*$"
        );
        assert_eq!(translate_pcre("/a(b)c/g").unwrap(), "a(b)c");
        assert_eq!(translate_pcre("#x/y#").unwrap(), "x/y");
        assert!(translate_pcre("/a/e").is_err());
        assert!(translate_pcre("abc").is_err());
        assert!(
            regex::Regex::new(&translate_pcre(r"/^(security|noc)\@.*\..*$/i").unwrap()).is_ok()
        );
    }

    #[test]
    fn host_extraction() {
        assert_eq!(extract_host("evil.example.com"), "evil.example.com");
        assert_eq!(extract_host("evil.example.com/x/y"), "evil.example.com");
        assert_eq!(extract_host("https://u@Evil.com:8443/p"), "Evil.com");
        assert_eq!(extract_host("http://evil.com./"), "evil.com");
        assert_eq!(extract_host("http://[2001:db8::1]/"), "[2001:db8::1]");
    }

    fn write_list(dir: &Path, id: &str, json: &str) {
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(dir.join(id).join("list.json"), json).unwrap();
    }

    #[test]
    fn quirky_lists_load_and_bad_ones_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        write_list(
            d.path(),
            "arr",
            r#"{"name":"Array type","type":["string"],"list":{"evil.example.com":"x"},"description":"d","version":1}"#,
        );
        write_list(d.path(), "broken", r#"{"name": "#);
        write_list(
            d.path(),
            "dotted",
            r#"{"name":"Dotted","type":"string","list":[".Google.ad", "exact.example"],"description":"d","version":1}"#,
        );
        write_list(
            d.path(),
            "badre",
            r#"{"name":"Bad","type":"regex","list":["/(/"],"description":"d","version":1}"#,
        );
        write_list(
            d.path(),
            "host",
            r#"{"name":"Hosts","type":"hostname","list":[".DuckDNS.org."],"matching_attributes":["domain","url"],"description":"d","version":1}"#,
        );
        write_list(
            d.path(),
            "nets",
            r#"{"name":"Nets","type":"cidr","list":["8.8.8.8","8.8.4.0/24","junk"],"description":"d","version":1}"#,
        );
        let mut warn = vec![];
        let w = Warninglists::load(&[d.path().to_path_buf()], &BTreeMap::new(), &[], &mut warn);
        assert_eq!(w.lists.len(), 4, "{warn:?}");
        assert_eq!(warn.len(), 3, "{warn:?}");
        let hits = |text: &str, net: Option<&str>, t: &str| {
            let mut out = vec![];
            let p = Probe {
                text,
                net: net.map(|n| super::super::syntax::parse_net(n, true).unwrap()),
                is_name: !text.contains('/'),
                registrable: 0,
            };
            w.check(&p, w.tables(t), &mut out);
            out.iter()
                .map(|h| (w.lists[h.list as usize].id.to_string(), h.covers))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hits("evil.example.com", None, "domain"),
            vec![("arr".into(), true)]
        );
        assert_eq!(
            hits("www.google.ad", None, "domain"),
            vec![("dotted".into(), false)]
        );
        assert_eq!(
            hits("google.ad", None, "domain"),
            vec![("dotted".into(), true)]
        );
        assert_eq!(
            hits("exact.example", None, "domain"),
            vec![("dotted".into(), true)]
        );
        assert!(hits("a.exact.example", None, "domain").is_empty());
        assert_eq!(
            hits("x.duckdns.org", None, "domain"),
            vec![("host".into(), false)]
        );
        assert_eq!(
            hits("duckdns.org", None, "domain"),
            vec![("host".into(), true)]
        );
        assert_eq!(
            hits("http://a.duckdns.org:81/x", None, "url"),
            vec![("host".into(), false)]
        );
        assert!(
            hits("x.duckdns.org", None, "hostname").is_empty(),
            "matching_attributes"
        );
        assert_eq!(
            hits("8.8.8.8", Some("8.8.8.8"), "ip-dst"),
            vec![("nets".into(), true)]
        );
        assert_eq!(
            hits("8.8.4.4", Some("8.8.4.4"), "ip-dst"),
            vec![("nets".into(), false)]
        );
        assert_eq!(
            hits("8.8.0.0/16", Some("8.8.0.0/16"), "ip-dst"),
            vec![("nets".into(), true)]
        );
        assert!(hits("9.9.9.9", Some("9.9.9.9"), "ip-dst").is_empty());
    }
}
