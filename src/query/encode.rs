//! The lookup answer written straight into a byte buffer: the hot path of `/v1/lookup`.
//!
//! The text is the same, byte for byte, as serde_json's rendering of
//! [`Lookup`](crate::index::Lookup) (a unit test holds the two together), but without serde's
//! per-field dispatch, intermediate `String`s for UUIDs or a `Vec` for notes: a batch of a
//! thousand answers is one growing buffer.

use crate::index::{Lookup, Match};
use crate::state::View;

/// Looks `value` up in the view (index and warninglist oracle) and appends the JSON answer.
pub fn write_lookup(out: &mut Vec<u8>, view: &View, value: &str) -> bool {
    let l = lookup_in(view, value);
    write(out, &l);
    l.listed
}

/// Appends the answers for a batch's `values`, comma-separated, in order; returns how many were
/// listed. The same text as [`write_lookup`] per value, with each next value's index memory
/// requested ahead of its lookup ([`crate::index::Index::prefetching`]).
pub fn write_lookups<S: AsRef<str>>(out: &mut Vec<u8>, view: &View, values: &[S]) -> usize {
    let mut hits = 0;
    let mut first = true;
    view.index.prefetching(values, |v| {
        if !first {
            out.push(b',');
        }
        first = false;
        hits += usize::from(write_lookup(out, view, v));
    });
    hits
}

/// Looks a value up in the view and adds warninglist hits when an oracle is wired.
pub(crate) fn lookup_in<'a>(view: &'a View, value: &'a str) -> Lookup<'a> {
    let mut l = view.index.lookup(value);
    if let Some(w) = &view.warninglists {
        w.hits(value.trim(), &mut l.warninglists);
    }
    l
}

/// Appends one lookup answer.
pub fn write(out: &mut Vec<u8>, l: &Lookup<'_>) {
    out.extend_from_slice(b"{\"value\":");
    string(out, l.value);
    out.extend_from_slice(if l.listed {
        b",\"listed\":true,\"matches\":["
    } else {
        b",\"listed\":false,\"matches\":["
    });
    for (i, m) in l.matches.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_match(out, m);
    }
    out.push(b']');
    if !l.warninglists.is_empty() {
        out.extend_from_slice(b",\"warninglists\":[");
        for (i, h) in l.warninglists.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            string(out, &h.name);
            out.extend_from_slice(b",\"category\":");
            string(out, h.category);
            out.push(b'}');
        }
        out.push(b']');
    }
    out.push(b'}');
}

fn write_match(out: &mut Vec<u8>, m: &Match<'_>) {
    let e = m.entry();
    out.extend_from_slice(b"{\"indicator\":");
    string(out, e.value());
    out.extend_from_slice(b",\"type\":");
    string(out, e.misp_type());
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(e.kind().as_str().as_bytes());
    out.extend_from_slice(b"\",\"match\":\"");
    out.extend_from_slice(m.how.as_str().as_bytes());
    out.extend_from_slice(b"\",\"sources\":[");
    let mut any_notes = false;
    let mut uuid = [0u8; 36];
    for (i, s) in e.sources().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        any_notes |= !s.notes.is_empty();
        out.extend_from_slice(b"{\"source\":");
        string(out, s.source);
        out.extend_from_slice(b",\"event_uuid\":");
        match s.event_uuid {
            Some(ev) => string(out, ev),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"attribute_uuid\":");
        string(out, s.attribute_uuid_in(&mut uuid));
        out.extend_from_slice(b",\"category\":");
        string(out, s.category);
        out.extend_from_slice(b",\"tags\":[");
        for (j, t) in s.tags.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            string(out, t);
        }
        out.extend_from_slice(b"],\"timestamp\":");
        out.extend_from_slice(itoa::Buffer::new().format(s.timestamp).as_bytes());
        out.extend_from_slice(if s.to_ids {
            b",\"to_ids\":true}"
        } else {
            b",\"to_ids\":false}"
        });
    }
    out.push(b']');
    if any_notes {
        // Each distinct note once, in first-seen order across the sources.
        let mut seen: Vec<&str> = Vec::new();
        for s in e.sources() {
            for n in s.notes {
                if !seen.contains(&&**n) {
                    seen.push(n);
                }
            }
        }
        out.extend_from_slice(b",\"notes\":[");
        for (i, n) in seen.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, n);
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it (`\"`, `\\`, the short forms
/// of `\b \f \n \r \t`, `\u00XX` for the other control characters; everything else verbatim).
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Almost every string (UUIDs, sources, tags, canonical values) needs no escape: one
    // pass without an early exit (so the compiler may vectorise it) settles that, and the text
    // is then copied whole.
    let plain = !bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::model::{Indicator, Kind, Provenance};
    use std::sync::Arc;

    fn ind(value: &str, kind: Kind, source: &str, attr: &str, notes: &[&str]) -> Indicator {
        Indicator {
            value: value.into(),
            kind,
            provenance: Provenance {
                source: source.into(),
                event_uuid: (source != "feed-b")
                    .then(|| "5f1a0c3e-0000-4000-8000-00000000e1e1".into()),
                attribute_uuid: attr.into(),
                misp_type: "domain".into(),
                category: "Network \"activity\"".into(),
                tags: Arc::from(vec![Arc::<str>::from("tlp:green"), Arc::from("x\ty\u{1}é")]),
                timestamp: -5 + value.len() as i64 * 1_000_000_007,
                to_ids: value.len() % 2 == 0,
            },
            notes: notes.iter().map(|n| Box::from(*n)).collect(),
        }
    }

    #[test]
    fn strings_escape_like_serde_json() {
        let mut all = String::new();
        for c in (0u32..0x80).chain([0xe9, 0x2028, 0x1f600]) {
            all.push(char::from_u32(c).unwrap());
        }
        for s in ["", "plain", "a\"b\\c", "\u{7f}\u{0}\n", &all] {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn answers_are_byte_identical_to_the_serde_rendering() {
        let index = Index::build(vec![
            ind(
                "evil.example",
                Kind::Domain,
                "feed-a",
                "5f1a0c3e-0000-4000-8000-0000000000aa",
                &[],
            ),
            ind(
                "evil.example",
                Kind::Domain,
                "feed-b",
                "not-a-uuid \"quoted\"",
                &["refanged"],
            ),
            ind(
                "evil.example",
                Kind::Domain,
                "feed-c",
                "5f1a0c3e-0000-4000-8000-0000000000ab",
                &["refanged", "scheme-added"],
            ),
            ind(
                "198.51.100.0/24",
                Kind::Cidr,
                "feed-a",
                "5f1a0c3e-0000-4000-8000-0000000000ac",
                &[],
            ),
            ind(
                "198.51.100.7",
                Kind::Ip,
                "feed-a",
                "5f1a0c3e-0000-4000-8000-0000000000ad",
                &[],
            ),
            ind(
                "http://evil.example/x?a=1",
                Kind::Url,
                "feed-b",
                "5f1a0c3e-0000-4000-8000-0000000000ae",
                &[],
            ),
        ]);
        let queries = [
            "evil.example",
            "a.b.evil.example",
            "198.51.100.7",
            "198.51.100.9",
            "http://evil.example/x?a=1",
            "http://evil.example/other",
            "not listed \"at\" all\n",
            "",
        ];
        for q in queries {
            let mut l = index.lookup(q);
            if q.starts_with("198") {
                l.warninglists = vec![crate::index::WarninglistHit {
                    name: "List of \"known\" ranges".into(),
                    category: "false-positive",
                }];
            }
            let mut out = Vec::new();
            write(&mut out, &l);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&l).unwrap(),
                "query {q:?}"
            );
        }
    }

    /// A batch's answers are the single answers, in order, joined by commas: over many random
    /// values (listed, their parents and children, other shapes, upper case, defanged text),
    /// batches of every length up to a few stages of the prefetching pipeline and beyond.
    #[test]
    fn batches_answer_like_single_lookups() {
        let mut rng = fastrand::Rng::with_seed(5);
        let word = |rng: &mut fastrand::Rng| {
            let n = rng.usize(1..4);
            (0..n)
                .map(|_| rng.alphabetic())
                .collect::<String>()
                .to_lowercase()
        };
        let mut listed = Vec::new();
        for i in 0..600 {
            let (v, kind) = match i % 6 {
                0 => (
                    format!("{}.{}.example", word(&mut rng), word(&mut rng)),
                    Kind::Domain,
                ),
                1 => (
                    format!("{}.{}.test", word(&mut rng), word(&mut rng)),
                    Kind::Hostname,
                ),
                2 => (
                    format!("10.{}.{}.{}", rng.u8(..4), rng.u8(..4), rng.u8(..4)),
                    Kind::Ip,
                ),
                3 => (format!("10.{}.0.0/16", rng.u8(..4)), Kind::Cidr),
                4 => (
                    format!("http://{}.example/{}", word(&mut rng), word(&mut rng)),
                    Kind::Url,
                ),
                _ => (
                    format!("{}@{}.example", word(&mut rng), word(&mut rng)),
                    Kind::Email,
                ),
            };
            let attr = format!("5f1a0c3e-0000-4000-8000-{i:012}");
            listed.push(ind(&v, kind, &format!("feed-{}", i % 3), &attr, &[]));
        }
        let values: Vec<String> = listed.iter().map(|l| l.value.to_string()).collect();
        let view = View {
            index: Arc::new(Index::build(listed)),
            ..View::default()
        };
        let mut queries = Vec::new();
        for _ in 0..3000 {
            let v = &values[rng.usize(..values.len())];
            queries.push(match rng.u8(..8) {
                0 => v.clone(),
                1 => format!("{}.{v}", word(&mut rng)),
                2 => v.split_once('.').map_or(v.clone(), |(_, p)| p.to_string()),
                3 => v.to_uppercase(),
                4 => format!(" http://{v}/x "),
                5 => v.replace('.', "[.]"),
                6 => format!("{}.unlisted.example", word(&mut rng)),
                _ => format!("{:032x}", rng.u128(..)),
            });
        }
        let mut listed_seen = 0;
        let mut start = 0;
        while start < queries.len() {
            let n = rng.usize(0..12).min(queries.len() - start);
            let batch = &queries[start..start + n];
            let mut want = Vec::new();
            let mut want_hits = 0;
            for (i, q) in batch.iter().enumerate() {
                if i > 0 {
                    want.push(b',');
                }
                want_hits += usize::from(write_lookup(&mut want, &view, q));
            }
            let mut got = Vec::new();
            assert_eq!(write_lookups(&mut got, &view, batch), want_hits);
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap()
            );
            listed_seen += want_hits;
            start += n.max(1);
        }
        assert!(
            listed_seen > 500,
            "the queries hit the index: {listed_seen}"
        );
    }
}
