//! Lookups over many values with the memory each will touch requested a few values ahead.
//!
//! One lookup waits on a chain of cache misses in a million-entry index: the table slot, then
//! the entry, then its text and its records. A batch's values are independent, so while one is
//! resolved the next ones' slots, entries and texts are prefetched, a stage per value: the
//! misses overlap with work instead of following each other. The probes are guessed from the
//! raw value (itself, and a URL's host); a wrong guess only wastes a prefetch, it never
//! changes an answer (lookups still go through [`Index::lookup`]).

use super::{Index, NONE};
use std::hash::BuildHasher;

/// Table probes guessed per value: the value and a URL's host. A name's parents are left to
/// the lookup, which requests them all at once itself; hashing them here too cost more than
/// it saved.
const PROBES: usize = 2;

/// Slots walked per probe when looking for the entries to prefetch (load is at most 1/2, so a
/// probe almost always ends within two).
const WALK: usize = 4;

/// One value's guessed probes, carried from stage to stage.
#[derive(Clone, Copy)]
struct Ahead {
    hashes: [u64; PROBES],
    n: usize,
    ids: [u32; PROBES],
    found: usize,
}

const EMPTY: Ahead = Ahead {
    hashes: [0; PROBES],
    n: 0,
    ids: [NONE; PROBES],
    found: 0,
};

/// The texts a lookup of `v` is likely to probe the exact table with first, in the common
/// case that the value is already in canonical form: the value, and a URL's host.
fn guesses(v: &str, mut f: impl FnMut(&str)) {
    let v = v.trim();
    if v.is_empty() {
        return;
    }
    f(v);
    if let Some(i) = v.find("://") {
        let rest = &v[i + 3..];
        let end = rest.find(['/', '?', '#', ':']).unwrap_or(rest.len());
        let host = &rest[..end];
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if !host.is_empty() {
            f(host);
        }
    }
}

impl Index {
    /// Calls `f` with each value in order, as [`Index::lookup`] would be called on it, having
    /// prefetched the index memory the lookups of the next values will probably touch.
    pub fn prefetching<'v, S: AsRef<str>>(&self, values: &'v [S], mut f: impl FnMut(&'v str)) {
        // Stages, one value apart: hash and request the slots (value i + 3), read the slots and
        // request the entries (i + 2), read the entries and request text and records (i + 1).
        const RING: usize = 4;
        let mut ring = [EMPTY; RING];
        let n = values.len();
        for i in 0..n + 3 {
            if i < n {
                ring[i % RING] = self.request_slots(values[i].as_ref());
            }
            if (1..=n).contains(&i) {
                self.request_entries(&mut ring[(i - 1) % RING]);
            }
            if (2..n + 2).contains(&i) {
                self.request_texts(&ring[(i - 2) % RING]);
            }
            if i >= 3 {
                f(values[i - 3].as_ref());
            }
        }
    }

    fn request_slots(&self, v: &str) -> Ahead {
        let mut a = EMPTY;
        if self.entries.is_empty() {
            return a;
        }
        let mask = self.slots.len() - 1;
        guesses(v, |text| {
            let h = self.hasher.hash_one(text);
            crate::sys::prefetch(&self.slots[h as usize & mask]);
            a.hashes[a.n] = h;
            a.n += 1;
        });
        a
    }

    fn request_entries(&self, a: &mut Ahead) {
        let mask = self.slots.len().wrapping_sub(1);
        for &h in &a.hashes[..a.n] {
            let tag = (h >> 32) as u32;
            let mut s = h as usize & mask;
            for _ in 0..WALK {
                let (id, t) = self.slots[s];
                if id == NONE {
                    break;
                }
                if t == tag {
                    crate::sys::prefetch(&self.entries[id as usize]);
                    a.ids[a.found] = id;
                    a.found += 1;
                    break;
                }
                s = (s + 1) & mask;
            }
        }
    }

    fn request_texts(&self, a: &Ahead) {
        for &id in &a.ids[..a.found] {
            let e = &self.entries[id as usize];
            if let Some(b) = self.arena.as_bytes().get(e.off as usize) {
                crate::sys::prefetch(b);
            }
            if let Some(r) = self.recs.get(e.first as usize) {
                crate::sys::prefetch(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::ind;
    use crate::model::Kind;

    fn all(v: &str) -> Vec<String> {
        let mut out = Vec::new();
        guesses(v, |t| out.push(t.to_string()));
        out
    }

    #[test]
    fn guesses_follow_the_lookup_probes() {
        assert_eq!(all(" a.b.example "), ["a.b.example"]);
        assert_eq!(
            all("http://u@www.evil.example:8080/x"),
            ["http://u@www.evil.example:8080/x", "www.evil.example"]
        );
        assert_eq!(all("http://10.1.2.3/"), ["http://10.1.2.3/", "10.1.2.3"]);
        assert_eq!(all("http:///x"), ["http:///x"]);
        assert_eq!(all("10.0.0.0/8"), ["10.0.0.0/8"]);
        assert!(all("  ").is_empty());
    }

    /// The values come back in order and exactly once, whatever the batch's length.
    #[test]
    fn every_value_once_in_order() {
        let ix = Index::build(vec![ind("evil.example", Kind::Domain, "domain", "a")]);
        for n in 0..9 {
            let values: Vec<String> = (0..n).map(|i| format!("x{i}.evil.example")).collect();
            let mut seen = Vec::new();
            ix.prefetching(&values, |v| seen.push(v.to_string()));
            assert_eq!(seen, values);
        }
        let empty = Index::default();
        let mut seen = 0;
        empty.prefetching(&["evil.example"], |_| seen += 1);
        assert_eq!(seen, 1);
    }
}
