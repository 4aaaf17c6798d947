//! The index's stored arrays as bytes, for the snapshot. Reading them back is a copy and a
//! check, not a rebuild: no sort, no interning, only the hash table, the CIDR tries and the
//! counts are derived again. That is what makes a cold start with a million indicators fast.
//!
//! Layout (little-endian; `str` is a u32 length then UTF-8 bytes):
//!
//! ```text
//! u32 n, n × str                      strings (sources, event uuids, types, categories)
//! u32 n, n × (u32 k, k × str)         tag sets
//! u32 n, n × (u32 k, k × str)         note sets after the empty set 0
//! u32 len, len bytes                  the value arena (UTF-8)
//! u32 n, n × (off u32, len u32, first u32, kind u8)            entries
//! u32 n, n × (attr [16], timestamp i64, source u32, event u32,
//!             type u32, category u32, tags u32, notes u32, flags u8)   records
//! ```
//!
//! The bytes come from our own state directory, but a damaged or hostile file must still be
//! refused rather than trusted: [`read`] checks every offset, id and ordering the lookups rely
//! on, so an index it returns is as sound as one [`Index::build`] made.

use super::{Entry, Index, Parts, Rec, ATTR_TEXT, NONE};
use crate::model::Kind;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;

const KINDS: [Kind; 8] = [
    Kind::Ip,
    Kind::Cidr,
    Kind::Domain,
    Kind::Hostname,
    Kind::Url,
    Kind::Email,
    Kind::Hash,
    Kind::Other,
];

const ENTRY_BYTES: usize = 13;
const REC_BYTES: usize = 16 + 8 + 6 * 4 + 1;

fn kind_byte(k: Kind) -> u8 {
    KINDS.iter().position(|&x| x == k).unwrap_or(7) as u8
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("index arrays stay below 4 G elements");
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

impl Index {
    /// Appends the stored arrays (see the module docs).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(
            self.arena.len()
                + self.entries.len() * ENTRY_BYTES
                + self.recs.len() * REC_BYTES
                + 4096,
        );
        put_u32(out, self.strings.len());
        for s in &self.strings {
            put_str(out, s);
        }
        put_u32(out, self.tag_sets.len());
        for set in &self.tag_sets {
            put_u32(out, set.len());
            for t in set.iter() {
                put_str(out, t);
            }
        }
        put_u32(out, self.note_sets.len() - 1);
        for set in &self.note_sets[1..] {
            put_u32(out, set.len());
            for n in set.iter() {
                put_str(out, n);
            }
        }
        put_str(out, &self.arena);
        put_u32(out, self.entries.len());
        for e in &self.entries {
            out.extend_from_slice(&e.off.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
            out.extend_from_slice(&e.first.to_le_bytes());
            out.push(kind_byte(e.kind));
        }
        put_u32(out, self.recs.len());
        for r in &self.recs {
            out.extend_from_slice(&r.attr);
            out.extend_from_slice(&r.timestamp.to_le_bytes());
            for id in [r.source, r.event, r.misp_type, r.category, r.tags, r.notes] {
                out.extend_from_slice(&id.to_le_bytes());
            }
            out.push(r.flags);
        }
    }

    /// Reads what [`Index::write_to`] wrote from the front of `input`, advancing it. Any
    /// inconsistency is an error naming what is wrong; nothing is trusted unchecked.
    pub fn read_from(input: &mut &[u8]) -> Result<Index, String> {
        let size = input.len();
        let mut r = Reader(input);
        let parts = read_parts(&mut r)?;
        let consumed = size - r.0.len();
        *input = r.0;
        check(&parts, consumed)?;
        Ok(Index::assemble(parts))
    }
}

struct Reader<'a, 'b>(&'b mut &'a [u8]);

impl<'a> Reader<'a, '_> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("index data ends early".into());
        }
        let (head, tail) = self.0.split_at(n);
        *self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of items of at least `min_bytes` each: refused when the rest of the input could
    /// not hold them, so a damaged count never makes a huge allocation.
    fn count(&mut self, min_bytes: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.0.len() {
            return Err(format!("count {n} larger than the data"));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| "a string is not UTF-8".to_string())
    }

    fn string_sets(&mut self) -> Result<Vec<Vec<&'a str>>, String> {
        let n = self.count(4)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.count(4)?;
            let mut set = Vec::with_capacity(k);
            for _ in 0..k {
                set.push(self.string()?);
            }
            out.push(set);
        }
        Ok(out)
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn read_parts(r: &mut Reader<'_, '_>) -> Result<Parts, String> {
    let n = r.count(4)?;
    let mut strings = Vec::with_capacity(n);
    for _ in 0..n {
        strings.push(Arc::<str>::from(r.string()?));
    }
    let tag_sets = r
        .string_sets()?
        .into_iter()
        .map(|set| set.into_iter().map(Arc::<str>::from).collect())
        .collect();
    let mut note_sets: Vec<Box<[Box<str>]>> = vec![Box::new([])];
    note_sets.extend(
        r.string_sets()?
            .into_iter()
            .map(|set| set.into_iter().map(Box::<str>::from).collect()),
    );
    let arena = r.string()?.to_string();
    let n = r.count(ENTRY_BYTES)?;
    let raw = r.bytes(n * ENTRY_BYTES)?;
    let mut entries = Vec::with_capacity(n);
    for b in raw.chunks_exact(ENTRY_BYTES) {
        let kind = *KINDS
            .get(b[12] as usize)
            .ok_or_else(|| format!("unknown kind {}", b[12]))?;
        entries.push(Entry {
            off: le_u32(&b[0..]),
            len: le_u32(&b[4..]),
            first: le_u32(&b[8..]),
            kind,
        });
    }
    let n = r.count(REC_BYTES)?;
    let raw = r.bytes(n * REC_BYTES)?;
    let mut recs = Vec::with_capacity(n);
    for b in raw.chunks_exact(REC_BYTES) {
        let mut attr = [0u8; 16];
        attr.copy_from_slice(&b[..16]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[16..24]);
        let id = |i: usize| le_u32(&b[24 + 4 * i..]);
        recs.push(Rec {
            attr,
            timestamp: i64::from_le_bytes(ts),
            source: id(0),
            event: id(1),
            misp_type: id(2),
            category: id(3),
            tags: id(4),
            notes: id(5),
            flags: b[48],
        });
    }
    Ok(Parts {
        arena,
        entries,
        recs,
        strings,
        tag_sets,
        note_sets,
    })
}

/// How many bytes of text the records may stand for (values, text uuids, notes), beyond
/// [`EXPANSION_BASE`]: a record repeats its entry's value when it is turned back into an
/// indicator, so a small hostile file could otherwise ask for gigabytes.
const EXPANSION_PER_BYTE: u64 = 64;
const EXPANSION_BASE: u64 = 64 << 20;

/// What the lookups and exports rely on: every text slice inside the arena on character
/// boundaries; entries strictly ordered by `(kind, value)` (so no value twice); every entry
/// owning at least one record, the records in order; every id in range; every string once in
/// the table (sources are found by name); addresses, networks, names and hashes in the
/// canonical form validation gives them (exports write them into firewall and DNS files as
/// they are); and a bounded expansion into indicators (`size`: the bytes read).
fn check(p: &Parts, size: usize) -> Result<(), String> {
    let text = |off: u32, len: u32| -> Result<&str, String> {
        let end = (off as usize).checked_add(len as usize);
        end.and_then(|end| p.arena.get(off as usize..end))
            .ok_or_else(|| format!("text {off}+{len} outside the arena"))
    };
    if p.entries.is_empty() != p.recs.is_empty() {
        return Err("records without entries, or entries without records".into());
    }
    let mut seen = std::collections::HashSet::with_capacity(p.strings.len());
    if !p.strings.iter().all(|s| seen.insert(&**s)) {
        return Err("a string is in the table twice".into());
    }
    let note_bytes: Vec<u64> = p
        .note_sets
        .iter()
        .map(|set| set.iter().map(|n| n.len() as u64).sum())
        .collect();
    let mut expanded: u64 = 0;
    let mut prev: Option<(u8, &str)> = None;
    for (i, e) in p.entries.iter().enumerate() {
        let v = text(e.off, e.len)?;
        if !canonical(e.kind, v) {
            return Err(format!(
                "entry {i} is not a canonical {} value",
                e.kind.as_str()
            ));
        }
        let end = p
            .entries
            .get(i + 1)
            .map_or(p.recs.len(), |n| n.first as usize);
        expanded += v.len() as u64 * end.saturating_sub(e.first as usize) as u64;
        let key = (kind_byte(e.kind), v);
        if prev.is_some_and(|p| p >= key) {
            return Err(format!("entry {i} out of order"));
        }
        prev = Some(key);
        let expected_first = if i == 0 {
            0
        } else {
            p.entries[i - 1].first as usize + 1
        };
        let last_ok = (e.first as usize) < p.recs.len();
        if (e.first as usize) < expected_first || !last_ok {
            return Err(format!("entry {i} has no records of its own"));
        }
        if i == 0 && e.first != 0 {
            return Err("records before the first entry".into());
        }
    }
    let strings = p.strings.len() as u32;
    for (i, r) in p.recs.iter().enumerate() {
        let ids_ok = r.source < strings
            && (r.event == NONE || r.event < strings)
            && r.misp_type < strings
            && r.category < strings
            && (r.tags as usize) < p.tag_sets.len()
            && (r.notes as usize) < p.note_sets.len();
        if !ids_ok {
            return Err(format!(
                "record {i} names a string or set that is not there"
            ));
        }
        if r.flags & ATTR_TEXT != 0 {
            expanded += text(le_u32(&r.attr[0..]), le_u32(&r.attr[4..]))?.len() as u64;
        }
        expanded += note_bytes[r.notes as usize];
    }
    if expanded > EXPANSION_BASE + EXPANSION_PER_BYTE * size as u64 {
        return Err(format!(
            "the records stand for {expanded} bytes of text, too many for {size} bytes of data"
        ));
    }
    Ok(())
}

/// Whether a value is in the form validation publishes for its kind.
fn canonical(kind: Kind, v: &str) -> bool {
    match kind {
        Kind::Ip => v.parse::<IpAddr>().is_ok_and(|ip| ip.to_string() == v),
        Kind::Cidr => v.parse::<IpNet>().is_ok_and(|n| n.to_string() == v),
        Kind::Domain | Kind::Hostname => {
            !v.is_empty()
                && v.len() <= 254
                && v.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
        }
        Kind::Hash => !v.is_empty() && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        Kind::Url | Kind::Email => {
            !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        Kind::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::ind;

    fn sample() -> Index {
        let mut input = vec![
            ind("evil.example", Kind::Domain, "domain", "a"),
            ind("evil.example", Kind::Domain, "domain", "b"),
            ind("10.1.0.0/16", Kind::Cidr, "ip-dst", "a"),
            ind("2001:db8::/48", Kind::Cidr, "ip-dst", "b"),
            ind("198.51.100.7", Kind::Ip, "ip-src", "a"),
            ind("http://x.example/é?q=1", Kind::Url, "url", "b"),
        ];
        input[1].notes = vec!["refanged".into()];
        input[1].provenance.attribute_uuid = "not a uuid".into();
        input[2].provenance.event_uuid = None;
        Index::build(input)
    }

    fn bytes(ix: &Index) -> Vec<u8> {
        let mut out = Vec::new();
        ix.write_to(&mut out);
        out
    }

    #[test]
    fn round_trip_is_exact_and_lookups_work() {
        let ix = sample();
        let data = bytes(&ix);
        let mut input = &data[..];
        let back = Index::read_from(&mut input).unwrap();
        assert!(input.is_empty(), "everything consumed");
        assert_eq!(back.to_indicators(), ix.to_indicators());
        assert_eq!(bytes(&back), data, "stable: written again, the same bytes");
        for q in ["a.evil.example", "10.1.2.3", "2001:db8::1", "198.51.100.7"] {
            assert!(back.lookup(q).listed, "{q}");
        }
        assert_eq!(
            back.counts().collect::<Vec<_>>(),
            ix.counts().collect::<Vec<_>>()
        );
        let empty = Index::default();
        let back = Index::read_from(&mut &bytes(&empty)[..]).unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn per_source_views_agree_with_the_input() {
        let ix = sample();
        let b = ix.source_indicators("b");
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|i| &*i.provenance.source == "b"));
        assert_eq!(ix.source_len("a"), 3);
        assert_eq!(ix.source_len("nobody"), 0);
        assert!(ix.source_indicators("nobody").is_empty());
        let keys = ix.source_keys("b");
        assert!(keys.contains(&("evil.example", Kind::Domain)));
        assert_eq!(keys.len(), 3);
        assert_eq!(ix.source_names().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn every_truncation_and_many_corruptions_are_refused_without_panic() {
        let data = bytes(&sample());
        for n in 0..data.len() {
            assert!(Index::read_from(&mut &data[..n]).is_err(), "cut at {n}");
        }
        let mut refused = 0;
        for i in 0..data.len() {
            for bit in [0x01u8, 0x80] {
                let mut d = data.clone();
                d[i] ^= bit;
                // A flipped bit may still be a valid index (a timestamp, a uuid byte); it must
                // never panic, and an accepted one must answer lookups.
                match Index::read_from(&mut &d[..]) {
                    Ok(ix) => {
                        let _ = ix.lookup("evil.example");
                        let _ = ix.to_indicators();
                    }
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(
            refused > data.len() / 2,
            "most corruptions are caught: {refused}"
        );
    }

    #[test]
    fn out_of_order_or_shared_records_are_refused() {
        let mut p = parts_of(&sample());
        assert_eq!(check(&p, 1000), Ok(()));
        // Two values trade places, their records stay: the table is no longer sorted.
        let (a, b) = (p.entries[0], p.entries[1]);
        (p.entries[0].off, p.entries[0].len, p.entries[0].kind) = (b.off, b.len, b.kind);
        (p.entries[1].off, p.entries[1].len, p.entries[1].kind) = (a.off, a.len, a.kind);
        assert!(check(&p, 1000).unwrap_err().contains("order"));
        p.entries[0] = a;
        p.entries[1] = b;
        p.entries[2].first = p.entries[1].first;
        assert!(check(&p, 1000).unwrap_err().contains("no records"));
    }

    fn parts_of(ix: &Index) -> Parts {
        Parts {
            arena: ix.arena.clone(),
            entries: ix.entries.clone(),
            recs: ix.recs.clone(),
            strings: ix.strings.clone(),
            tag_sets: ix.tag_sets.clone(),
            note_sets: ix.note_sets.clone(),
        }
    }

    #[test]
    fn values_must_be_canonical_strings_unique_and_expansion_bounded() {
        // A forged address would be written as it is into an nft script by the export.
        for (value, kind) in [
            ("198.51.100.7; flush ruleset", Kind::Ip),
            ("198.051.100.7", Kind::Ip),
            ("10.1.0.0/16\nadd", Kind::Cidr),
            ("evil.example\n@ IN SOA", Kind::Domain),
            ("Evil.example", Kind::Hostname),
            ("ABCDEF", Kind::Hash),
            ("http://a b", Kind::Url),
        ] {
            let ix = Index::build(vec![ind(value, kind, "t", "a")]);
            let err = check(&parts_of(&ix), 1000).unwrap_err();
            assert!(err.contains("canonical"), "{value:?}: {err}");
        }
        let ix = Index::build(vec![ind("anything at all\t", Kind::Other, "t", "a")]);
        assert_eq!(check(&parts_of(&ix), 1000), Ok(()));

        let mut p = parts_of(&sample());
        p.strings.push(p.strings[0].clone());
        assert!(check(&p, 1000).unwrap_err().contains("twice"));

        // One 64 KiB value behind many records: refused for a small file, not for a large one.
        let big = format!("{}.example", "a".repeat(65_536));
        let many: Vec<crate::model::Indicator> = (0..2000)
            .map(|_| ind(&big, Kind::Other, "t", "a"))
            .collect();
        let p = parts_of(&Index::build(many));
        assert!(check(&p, 200_000).unwrap_err().contains("too many"));
        assert_eq!(check(&p, 2_000_000), Ok(()));
    }
}
