//! Differential test: the validator's warninglist verdicts against a slow, obviously-correct
//! reference written from MISP's semantics (docs/validation.md, MISP-API-NOTES §I) plus the
//! documented mispd deviations, over values drawn from the shipped lists and the fixtures.

#[path = "validation_support/mod.rs"]
mod common;

use common::{attr, event_attributes, root, warninglists_dir};
use ipnet::IpNet;
use mispd::validate::{Protected, Settings, Validator, KNOWN_LISTS};
use regex::Regex;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

enum Entries {
    /// exact entries, and `.domain` entries matched as hostnames
    String(HashSet<String>, HashSet<String>),
    Hostname(HashSet<String>),
    /// (is IPv4, first address, last address) of each network
    Cidr(Vec<(bool, u128, u128)>),
    Substring(Vec<String>),
    Regex(Vec<Regex>),
}

struct RefList {
    id: String,
    known: bool,
    matching: Option<Vec<String>>,
    entries: Entries,
}

fn to_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<IpNet>().ok()?
    } else {
        IpNet::from(s.parse::<IpAddr>().ok()?)
    };
    Some(unmap(net.trunc()))
}

/// `::ffff:a.b.c.d/n` as the IPv4 network it stands for.
fn unmap(n: IpNet) -> IpNet {
    if let IpNet::V6(v6) = n {
        if let (Some(a), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            return IpNet::V4(ipnet::Ipv4Net::new(a, v6.prefix_len() - 96).unwrap());
        }
    }
    n
}

fn range(n: IpNet) -> (bool, u128, u128) {
    match n {
        IpNet::V4(n) => (
            true,
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn pcre(p: &str) -> Option<Regex> {
    let p = p.trim();
    let d = p.chars().next()?;
    let end = p.rfind(d)?;
    let flags = &p[end + 1..];
    let mut inline = String::new();
    for f in flags.chars() {
        match f {
            'i' | 'm' | 's' | 'x' => inline.push(f),
            'g' | 'u' | 'D' => {}
            _ => return None,
        }
    }
    let body = &p[1..end];
    let re = if inline.is_empty() {
        body.to_string()
    } else {
        format!("(?{inline}){body}")
    };
    Regex::new(&re).ok()
}

fn load_reference() -> Vec<RefList> {
    let mut dirs: Vec<_> = std::fs::read_dir(warninglists_dir().join("lists"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for d in dirs {
        let Ok(bytes) = std::fs::read(d.join("list.json")) else {
            continue;
        };
        let j: Value = serde_json::from_slice(&bytes).unwrap();
        let id = d.file_name().unwrap().to_string_lossy().to_string();
        let kind = match &j["type"] {
            Value::Array(a) => a[0].as_str().unwrap().to_string(),
            v => v.as_str().unwrap().to_string(),
        };
        let list: Vec<String> = match &j["list"] {
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
            Value::Object(m) => m.keys().cloned().collect(),
            _ => panic!(),
        };
        let entries = match kind.as_str() {
            "string" => Entries::String(
                list.iter()
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.starts_with('.'))
                    .collect(),
                list.iter()
                    .filter(|e| e.trim().starts_with('.'))
                    .map(|e| e.trim().trim_matches('.').to_lowercase())
                    .collect(),
            ),
            "hostname" => Entries::Hostname(
                list.iter()
                    .map(|e| e.trim().trim_matches('.').to_lowercase())
                    .collect(),
            ),
            "cidr" => Entries::Cidr(list.iter().filter_map(|e| to_net(e)).map(range).collect()),
            "substring" => Entries::Substring(list),
            "regex" => match list.iter().map(|p| pcre(p)).collect::<Option<Vec<_>>>() {
                Some(r) => Entries::Regex(r),
                None => continue,
            },
            _ => continue,
        };
        let known = match j["category"].as_str() {
            Some(c) => c == "known",
            None => KNOWN_LISTS.contains(&id.as_str()),
        };
        let matching = j["matching_attributes"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect());
        out.push(RefList {
            id,
            known,
            matching,
            entries,
        });
    }
    out
}

/// MISP's host extraction, then `user@` and `:port` dropped, trailing dots trimmed.
fn host_of(v: &str) -> String {
    let parts: Vec<&str> = v.split('/').collect();
    let mut h = if v.contains("//") {
        parts.get(2).copied().unwrap_or("")
    } else {
        parts[0]
    };
    if let Some(i) = h.rfind('@') {
        h = &h[i + 1..];
    }
    if !h.starts_with('[') {
        if let Some(i) = h.rfind(':') {
            if h[i + 1..].chars().all(|c| c.is_ascii_digit()) {
                h = &h[..i];
            }
        }
    }
    h.trim_end_matches('.').to_string()
}

fn looks_like_name(v: &str) -> bool {
    let labels: Vec<&str> = v.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        && v.len() <= 253
        && v.parse::<IpAddr>().is_err()
        && {
            let t = labels[labels.len() - 1];
            t.len() >= 2 && !t.chars().all(|c| c.is_ascii_digit()) && !t.contains('_')
        }
}

/// The MISP types a raw value of this shape is stored as, for the pattern lists (substring,
/// regex), which a lookup applies only to values of a shape their `matching_attributes` name
/// (docs/query-api.md). `None`: no known shape, every list applies.
fn shape_types(v: &str) -> Option<&'static [&'static str]> {
    let hex = !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit());
    if to_net(v).is_some() {
        Some(&[
            "ip-src",
            "ip-dst",
            "ip-src|port",
            "ip-dst|port",
            "domain|ip",
        ])
    } else if v.contains("://") {
        Some(&["url", "uri", "link"])
    } else if looks_like_name(v) {
        Some(&["domain", "hostname", "domain|ip", "hostname|port"])
    } else if v.contains('@') {
        Some(&[
            "email",
            "email-src",
            "email-dst",
            "target-email",
            "whois-registrant-email",
            "dns-soa-email",
        ])
    } else if hex && [32, 40, 56, 64, 96, 128].contains(&v.len()) {
        Some(&[
            "md5",
            "sha1",
            "sha224",
            "sha256",
            "sha384",
            "sha512",
            "filename|md5",
            "filename|sha1",
            "filename|sha256",
        ])
    } else {
        None
    }
}

/// (list id, covers) for every list hit by a canonical value.
fn reference_hits(lists: &[RefList], v: &str) -> Vec<(usize, bool)> {
    let net = to_net(v);
    let shape = shape_types(v);
    let pattern_applies = |l: &RefList| match (shape, &l.matching) {
        (Some(types), Some(m)) => m.iter().any(|t| types.contains(&t.as_str())),
        _ => true,
    };
    let is_name = net.is_none() && looks_like_name(v);
    let host = host_of(v);
    // the registrable domain of the value's host (names and URLs)
    let registrable = if net.is_none() && looks_like_name(&host) && (is_name || v.contains("://")) {
        psl::domain_str(&host).map_or(0, |d| d.len())
    } else {
        0
    };
    let labels: Vec<&str> = host.split('.').collect();
    let suffix_hit = |set: &HashSet<String>, known: bool| -> Option<bool> {
        let mut best: Option<bool> = None;
        for i in 0..labels.len() {
            let s = labels[i..].join(".");
            // a false-positive entry above the registrable domain does not clear tenants
            if set.contains(&s) && (known || s.len() >= registrable) {
                let covers = is_name && i == 0;
                best = Some(best.unwrap_or(false) || covers);
            }
        }
        best
    };
    let mut out = Vec::new();
    for (i, l) in lists.iter().enumerate() {
        let hit: Option<bool> = match &l.entries {
            Entries::String(exact, dotted) => {
                let e = exact.contains(v).then_some(true);
                let d = suffix_hit(dotted, l.known);
                match (e, d) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
                }
            }
            Entries::Hostname(set) => suffix_hit(set, l.known),
            Entries::Cidr(nets) => net.map(range).and_then(|(v4, a, b)| {
                // prefixes overlap only by one containing the other
                let hits: Vec<bool> = nets
                    .iter()
                    .filter(|(f, x, y)| *f == v4 && *x <= b && a <= *y)
                    .map(|(_, x, y)| a <= *x && *y <= b)
                    .collect();
                (!hits.is_empty()).then(|| hits.iter().any(|&c| c))
            }),
            Entries::Substring(_) | Entries::Regex(_) if !pattern_applies(l) => None,
            Entries::Substring(subs) => {
                let hits: Vec<bool> = subs
                    .iter()
                    .filter(|s| v.contains(s.as_str()))
                    .map(|s| s == v)
                    .collect();
                (!hits.is_empty()).then(|| hits.iter().any(|&c| c))
            }
            Entries::Regex(res) => res.iter().any(|r| r.is_match(v)).then_some(false),
        };
        if let Some(c) = hit {
            out.push((i, c));
        }
    }
    out
}

/// Values in canonical form, so that normalisation is not what is being compared.
fn canonical(v: &str) -> bool {
    if v.is_empty()
        || v != v.trim()
        || v.chars()
            .any(|c| c.is_uppercase() || c.is_whitespace() || c == '|')
    {
        return false;
    }
    if v.contains('[') || v.contains('(') || v.starts_with("hxxp") {
        return false;
    }
    if let Ok(n) = v.parse::<IpNet>() {
        return n.trunc() == n && n.prefix_len() < n.max_prefix_len() && n.to_string() == v;
    }
    if let Ok(a) = v.parse::<IpAddr>() {
        return a.to_string() == v;
    }
    if v.contains("://") {
        return mispd::normalize::url(v).as_deref() == Some(v);
    }
    true
}

fn cases(lists: &[RefList]) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for l in lists {
        let sample = |all: Vec<String>| {
            let step = (all.len() / 12).max(1);
            all.into_iter().step_by(step).take(12).collect::<Vec<_>>()
        };
        match &l.entries {
            Entries::String(exact, dotted) => {
                let mut e: Vec<String> = exact.iter().cloned().collect();
                e.sort();
                out.extend(sample(e));
                let mut d: Vec<String> = dotted.iter().cloned().collect();
                d.sort();
                for d in sample(d) {
                    out.insert(format!("evilsub.{d}"));
                    out.insert(d);
                }
            }
            Entries::Hostname(set) => {
                let mut e: Vec<String> = set.iter().cloned().collect();
                e.sort();
                for h in sample(e) {
                    out.insert(format!("evilsub.{h}"));
                    out.insert(format!("x{h}"));
                    out.insert(format!("http://evilsub.{h}/login.php"));
                    out.insert(h);
                }
            }
            Entries::Cidr(nets) => {
                let mut n: Vec<IpNet> = nets
                    .iter()
                    .map(|&(v4, a, b)| {
                        let len = if v4 {
                            32 - (b - a + 1).trailing_zeros() as u8
                        } else {
                            128 - (b - a).count_ones() as u8
                        };
                        let addr: IpAddr = if v4 {
                            std::net::Ipv4Addr::from(a as u32).into()
                        } else {
                            std::net::Ipv6Addr::from(a).into()
                        };
                        IpNet::new(addr, len).unwrap()
                    })
                    .collect();
                n.sort();
                for n in sample(n.iter().map(|n| n.to_string()).collect()) {
                    let n: IpNet = n.parse().unwrap();
                    out.insert(n.network().to_string());
                    if n.prefix_len() < n.max_prefix_len() {
                        out.insert(n.to_string());
                        if let Some(h) = n.hosts().nth(3) {
                            out.insert(h.to_string());
                        }
                        if let Ok(sub) = n.subnets(n.prefix_len() + 1) {
                            out.extend(sub.take(1).map(|s| s.to_string()));
                        }
                    }
                    if n.prefix_len() > 18 && n.addr().is_ipv4() || n.prefix_len() > 34 {
                        if let Some(s) = n.supernet().and_then(|s| s.supernet()) {
                            out.insert(s.to_string());
                        }
                    }
                }
            }
            Entries::Substring(subs) => {
                for s in sample(subs.clone()) {
                    out.insert(format!("a{s}b"));
                    out.insert(format!("user@{s}"));
                }
            }
            Entries::Regex(_) => {
                for e in [
                    "security@evil-example.com",
                    "abuse@isp.example.net",
                    "phish@evil-example.com",
                    "+15555501234",
                ] {
                    out.insert(e.to_string());
                }
            }
        }
    }
    // indicators from the fixtures, in the canonical form validation publishes
    let (v, _) = Validator::load(
        &Settings {
            warninglists: vec![],
            allowlist: None,
            ..Settings::default()
        },
        Protected::default(),
    );
    let src: Arc<str> = Arc::from("t");
    for f in [
        "infoblox-sample.json",
        "PyMISP_reportlab_testfiles_long_event.json",
    ] {
        for a in event_attributes(&root().join("tests/fixtures").join(f)) {
            for i in v.judge(&src, &a, 0).accepted {
                out.insert(i.value.to_string());
            }
        }
    }
    out.into_iter().filter(|c| canonical(c)).collect()
}

fn misp_type_for(v: &str) -> Option<&'static str> {
    if to_net(v).is_some() {
        Some("ip-dst")
    } else if v.contains("://") {
        Some("url")
    } else if v.contains('@') {
        Some("email-src")
    } else if looks_like_name(v) {
        Some("domain")
    } else {
        None
    }
}

#[test]
fn warninglist_verdicts_match_the_reference() {
    let lists = load_reference();
    let settings = Settings {
        warninglists: vec![warninglists_dir()],
        allowlist: None,
        ..Settings::default()
    };
    let (v, warnings) = Validator::load(&settings, Protected::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(lists.len(), v.stats().warninglists);
    let cases = cases(&lists);
    assert!(cases.len() > 2500, "{} cases", cases.len());
    let src: Arc<str> = Arc::from("t");
    let (mut compared_hits, mut compared_verdicts, mut with_hits) = (0, 0, 0);
    for c in &cases {
        let want = reference_hits(&lists, c);
        let want_ids: BTreeSet<&str> = want.iter().map(|(i, _)| lists[*i].id.as_str()).collect();
        let got = v.warninglist_hits(c);
        let got_ids: BTreeSet<&str> = got.iter().map(|h| h.list.as_str()).collect();
        assert_eq!(got_ids, want_ids, "lists hit by `{c}`");
        compared_hits += 1;
        with_hits += !want.is_empty() as usize;

        // the verdict for a typed attribute: matching_attributes, block / inform / covers
        let Some(t) = misp_type_for(c) else { continue };
        let j = v.judge(&src, &attr(t, c), 0);
        let code = j.rejected.first().map(|r| r.reason.code.to_string());
        if !(code.is_none() || code.as_deref() == Some("warninglist")) {
            continue; // held back by an earlier check (bogon, too-broad, syntax...)
        }
        let applicable: Vec<&(usize, bool)> = want
            .iter()
            .filter(|(i, _)| {
                lists[*i]
                    .matching
                    .as_ref()
                    .is_none_or(|m| m.iter().any(|x| x == t))
            })
            .collect();
        let blocked = applicable
            .iter()
            .any(|(i, covers)| !lists[*i].known || *covers);
        assert_eq!(code.is_some(), blocked, "verdict for {t} `{c}`: {j:?}");
        if !blocked {
            let notes: BTreeSet<String> = j.accepted[0]
                .notes
                .iter()
                .filter_map(|n| n.strip_prefix("warninglist:").map(String::from))
                .collect();
            let want_notes: BTreeSet<String> = applicable
                .iter()
                .map(|(i, _)| lists[*i].id.clone())
                .collect();
            assert_eq!(notes, want_notes, "inform notes for {t} `{c}`");
        }
        compared_verdicts += 1;
    }
    println!(
        "{compared_hits} values compared ({with_hits} on some list), {compared_verdicts} verdicts"
    );
    assert!(
        with_hits > 1000 && compared_verdicts > 2000,
        "{with_hits} {compared_verdicts}"
    );
}

/// Pattern lists apply by shape: the disposable-e-mail substrings to e-mail addresses (and
/// names, as halves of `domain|ip`), not to a URL that merely contains one; the phone-number
/// regexes not to a hash; exact lists to every value, whatever else it could be.
#[test]
fn lookups_apply_pattern_lists_by_shape() {
    let settings = Settings {
        warninglists: vec![warninglists_dir()],
        allowlist: None,
        ..Settings::default()
    };
    let (v, _) = Validator::load(&settings, Protected::default());
    let ids = |value: &str| -> BTreeSet<String> {
        v.warninglist_hits(value)
            .into_iter()
            .map(|h| h.list)
            .collect()
    };
    assert!(ids("someone@0815.ru").contains("disposable-email"));
    assert!(ids("login-1230815.ru").contains("disposable-email"));
    assert!(!ids("http://login-1230815.ru/a").contains("disposable-email"));
    // A URL that does not normalise (port out of range) still has a URL's shape.
    assert!(!ids("http://login-1230815.ru:99999/a").contains("disposable-email"));
    assert!(ids("+11235550199").contains("phone_numbers"));
    assert!(!ids("aaaaaaaaaaaaaaaaaaaaaa1235550199").contains("phone_numbers"));
    // `3::` is an IPv6 address and the ssdeep of an empty file: an exact list still applies.
    assert!(ids("3::").contains("empty-hashes"));
}
