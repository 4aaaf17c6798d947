//! A source's sync state on disk: its store of live attributes, its cursor and its feed event
//! map, written after each sync so the worker need not keep a million attributes in memory
//! between syncs, and so a restart can go on incrementally. Holds MISP data only: no credential.
//!
//! Format: a first line `mispd-store <version> <sha256-hex of the body> <body length>` (framed
//! like the snapshot), then a binary body of LEB128 varints (signed ones zigzagged) and
//! length-prefixed UTF-8 strings:
//!
//! ```text
//! source name, identity digest (32 bytes)   whose store this is, and what it was asked for
//! cursor                                     max timestamp, last full sync (0 absent, 1 + value)
//! feed events                                count, then (event uuid, manifest timestamp)
//! strings                                    count, then each: event uuids, types, categories, tags
//! tag lists                                  count, then each: count, string numbers
//! attributes                                 count, then each: uuid, event (0 none, 1 + string
//!                                            number), type, category, value, flags, timestamp,
//!                                            tag list, last_seen when its flag says
//! ```

use super::plan::{Cursor, Store};
use super::worker::WorkerState;
use crate::config::SourceSettings;
use crate::model::Attribute;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &str = "mispd-store";
const VERSION: u32 = 1;
/// The store files' directory under the state directory.
pub const DIR: &str = "stores";

const TO_IDS: u8 = 1;
const DELETED: u8 = 2;
const LAST_SEEN: u8 = 4;
const PUBLISHED_KNOWN: u8 = 8;
const PUBLISHED: u8 = 16;

#[derive(Debug, thiserror::Error)]
pub enum StoreFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Damaged or of another version: to be moved aside.
    #[error("{path}: damaged or not a store file this build reads ({detail})")]
    Damaged { path: PathBuf, detail: String },
    /// Sound, but for another source or another configuration of it: to be replaced.
    #[error("{path}: {detail}")]
    Foreign { path: PathBuf, detail: String },
}

/// Why bytes were refused by [`decode`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Damaged(String),
    #[error("{0}")]
    Foreign(String),
}

/// Where the store file of source `name` lives.
pub fn path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(DIR).join(format!("{name}.store"))
}

/// A digest of what decides the contents of a source's store: where it syncs from and the
/// filters the server applies. A store synced under another identity must not be continued.
/// Client-side filters (tags, types, to_ids, max-age) are applied to the store, not in it.
pub fn identity(s: &SourceSettings) -> [u8; 32] {
    let mut b = Vec::new();
    put_str(&mut b, s.kind.as_str());
    put_str(&mut b, &s.url);
    b.push(u8::from(s.published_only));
    b.push(u8::from(s.exclude_decayed));
    put_u(&mut b, s.decaying_models.len() as u64);
    for m in &s.decaying_models {
        put_u(&mut b, u64::from(*m));
    }
    Sha256::digest(&b).into()
}

/// The file's bytes for this state, header line included.
pub fn encode(name: &str, identity: &[u8; 32], state: &WorkerState) -> Vec<u8> {
    encode_parts(name, identity, state).concat()
}

/// The header line, then the body in two parts, left apart so that the attributes' bytes (tens
/// of MB) are not copied again on their way to the file.
fn encode_parts(name: &str, identity: &[u8; 32], state: &WorkerState) -> [Vec<u8>; 3] {
    // Keyed by address: the store shares its repeated strings and tag lists, so one address
    // stands for one string, and no text is hashed per attribute.
    let mut strings: HashMap<usize, u64> = HashMap::new();
    let mut table: Vec<&str> = Vec::new();
    let mut tag_lists: HashMap<usize, u64> = HashMap::new();
    let mut lists: Vec<Vec<u64>> = Vec::new();
    let mut attrs = Vec::with_capacity(state.store.len() * 80);
    put_u(&mut attrs, state.store.len() as u64);
    for a in state.store.iter() {
        let mut str_no = |s| number(&mut strings, &mut table, s);
        put_str(&mut attrs, &a.uuid);
        let event = a.event_uuid.as_ref().map_or(0, |e| str_no(e) + 1);
        put_u(&mut attrs, event);
        put_u(&mut attrs, str_no(&a.misp_type));
        put_u(&mut attrs, str_no(&a.category));
        put_str(&mut attrs, &a.value);
        let mut flags = 0;
        if a.to_ids {
            flags |= TO_IDS;
        }
        if a.deleted {
            flags |= DELETED;
        }
        if a.last_seen.is_some() {
            flags |= LAST_SEEN;
        }
        if let Some(p) = a.event_published {
            flags |= PUBLISHED_KNOWN | if p { PUBLISHED } else { 0 };
        }
        attrs.push(flags);
        put_i(&mut attrs, a.timestamp);
        let key = Arc::as_ptr(&a.tags) as *const Arc<str> as usize;
        let list = match tag_lists.get(&key) {
            Some(&n) => n,
            None => {
                let nos = a.tags.iter().map(&mut str_no).collect();
                lists.push(nos);
                tag_lists.insert(key, lists.len() as u64 - 1);
                lists.len() as u64 - 1
            }
        };
        put_u(&mut attrs, list);
        if let Some(ls) = a.last_seen {
            put_i(&mut attrs, ls);
        }
    }
    let mut body = Vec::new();
    put_str(&mut body, name);
    body.extend_from_slice(identity);
    put_opt(&mut body, state.cursor.max_timestamp);
    put_opt(&mut body, state.cursor.last_full);
    put_u(&mut body, state.feed_events.len() as u64);
    for (uuid, ts) in &state.feed_events {
        put_str(&mut body, uuid);
        put_i(&mut body, *ts);
    }
    put_u(&mut body, table.len() as u64);
    for s in &table {
        put_str(&mut body, s);
    }
    put_u(&mut body, lists.len() as u64);
    for l in &lists {
        put_u(&mut body, l.len() as u64);
        for n in l {
            put_u(&mut body, *n);
        }
    }
    let digest = Sha256::new()
        .chain_update(&body)
        .chain_update(&attrs)
        .finalize();
    let header = format!(
        "{MAGIC} {VERSION} {} {}\n",
        crate::snapshot::hex(&digest),
        body.len() + attrs.len()
    );
    [header.into_bytes(), body, attrs]
}

/// The table number of a shared string, by its address.
fn number<'a>(strings: &mut HashMap<usize, u64>, table: &mut Vec<&'a str>, s: &'a Arc<str>) -> u64 {
    *strings
        .entry(Arc::as_ptr(s) as *const u8 as usize)
        .or_insert_with(|| {
            table.push(s);
            table.len() as u64 - 1
        })
}

fn frame_body(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{MAGIC} {VERSION} {} {}\n",
        crate::snapshot::hex(&Sha256::digest(body)),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A file whose header, checksum, source name and identity pass, followed by `rest` as the
/// state: for tests and fuzzing, which need [`decode`] to reach the state decoder.
pub fn frame(name: &str, identity: &[u8; 32], rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(rest.len() + name.len() + 40);
    put_str(&mut body, name);
    body.extend_from_slice(identity);
    body.extend_from_slice(rest);
    frame_body(&body)
}

/// Decode a file's bytes, checking header, checksum, source name and identity before anything
/// else. Never panics, whatever the bytes.
pub fn decode(data: &[u8], name: &str, identity: &[u8; 32]) -> Result<WorkerState, Refused> {
    let damaged = |d: &str| Refused::Damaged(d.to_string());
    let nl = data
        .iter()
        .take(200)
        .position(|&b| b == b'\n')
        .ok_or_else(|| damaged("no header line"))?;
    let header = std::str::from_utf8(&data[..nl]).map_err(|_| damaged("header is not text"))?;
    let [magic, version, digest, len] = header.split(' ').collect::<Vec<_>>()[..] else {
        return Err(damaged("malformed header"));
    };
    if magic != MAGIC {
        return Err(damaged("wrong magic"));
    }
    if version.parse::<u32>().ok() != Some(VERSION) {
        return Err(Refused::Damaged(format!(
            "version {version}, this build reads {VERSION}"
        )));
    }
    let body = &data[nl + 1..];
    if len.parse::<usize>().ok() != Some(body.len())
        || crate::snapshot::hex(&Sha256::digest(body)) != digest
    {
        return Err(damaged("checksum mismatch"));
    }
    let mut r = Reader(body);
    let owner = r.str().map_err(Refused::Damaged)?;
    if owner != name {
        return Err(Refused::Foreign(format!(
            "the store of source `{owner}`, not `{name}`"
        )));
    }
    if r.bytes(32).map_err(Refused::Damaged)? != identity {
        return Err(Refused::Foreign(
            "synced with another URL, kind or server-side filters".into(),
        ));
    }
    decode_state(&mut r).map_err(Refused::Damaged)
}

fn decode_state(r: &mut Reader) -> Result<WorkerState, String> {
    let cursor = Cursor {
        max_timestamp: r.opt()?,
        last_full: r.opt()?,
    };
    let n = r.count(2)?;
    let mut feed_events = HashMap::with_capacity(n);
    for _ in 0..n {
        let uuid = r.str()?.to_string();
        feed_events.insert(uuid, r.i()?);
    }
    let n = r.count(1)?;
    let mut strings: Vec<Arc<str>> = Vec::with_capacity(n);
    for _ in 0..n {
        strings.push(Arc::from(r.str()?));
    }
    let string = |n: u64| {
        usize::try_from(n)
            .ok()
            .and_then(|n| strings.get(n))
            .cloned()
            .ok_or_else(|| format!("string number {n} out of range"))
    };
    let n = r.count(1)?;
    let mut lists: Vec<Arc<[Arc<str>]>> = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.count(1)?;
        let list = (0..k)
            .map(|_| string(r.u()?))
            .collect::<Result<Vec<_>, _>>()?;
        lists.push(list.into());
    }
    let n = r.count(6)?;
    let mut store = Store::default();
    for _ in 0..n {
        let uuid: Box<str> = r.str()?.into();
        let event_uuid = match r.u()? {
            0 => None,
            e => Some(string(e - 1)?),
        };
        let misp_type = string(r.u()?)?;
        let category = string(r.u()?)?;
        let value: Box<str> = r.str()?.into();
        let flags = r.byte()?;
        if flags >= PUBLISHED << 1 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let timestamp = r.i()?;
        let tags = usize::try_from(r.u()?)
            .ok()
            .and_then(|n| lists.get(n))
            .cloned()
            .ok_or("tag list out of range")?;
        let last_seen = if flags & LAST_SEEN != 0 {
            Some(r.i()?)
        } else {
            None
        };
        store.apply(Attribute {
            uuid,
            event_uuid,
            misp_type,
            category,
            value,
            to_ids: flags & TO_IDS != 0,
            deleted: flags & DELETED != 0,
            timestamp,
            tags,
            last_seen,
            event_published: (flags & PUBLISHED_KNOWN != 0).then_some(flags & PUBLISHED != 0),
        });
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last attribute", r.0.len()));
    }
    if store.len() != n {
        return Err("an attribute is listed twice".into());
    }
    Ok(WorkerState {
        store,
        cursor,
        feed_events,
        on_disk: false,
    })
}

/// Write the state atomically (temp file, fsync, rename, fsync of the directory), creating the
/// stores directory when needed.
pub fn write(
    path: &Path,
    name: &str,
    identity: &[u8; 32],
    state: &WorkerState,
) -> Result<(), StoreFileError> {
    let [header, head, attrs] = encode_parts(name, identity, state);
    crate::snapshot::write_atomically(path, &[&header, &head, &attrs])
        .map_err(|(path, source)| StoreFileError::Io { path, source })
}

/// Load the state from `path`. `Ok(None)` when there is no file.
pub fn load(
    path: &Path,
    name: &str,
    identity: &[u8; 32],
) -> Result<Option<WorkerState>, StoreFileError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreFileError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let path = path.to_path_buf();
    match decode(&data, name, identity) {
        Ok(s) => Ok(Some(s)),
        Err(Refused::Damaged(detail)) => Err(StoreFileError::Damaged { path, detail }),
        Err(Refused::Foreign(detail)) => Err(StoreFileError::Foreign { path, detail }),
    }
}

/// Move a damaged store file aside as `<name>.store.corrupt-<epoch>` so it can be inspected.
pub fn quarantine(path: &Path, now: i64) -> std::io::Result<PathBuf> {
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".corrupt-{now}"));
    let to = PathBuf::from(to);
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// Delete the store files of sources not in `keep` (removed from the configuration), so their
/// MISP data does not linger. Files moved aside as damaged are left for the operator.
pub fn remove_others(state_dir: &Path, keep: &[&str]) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(state_dir.join(DIR)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let source = name
            .strip_suffix(".store")
            .or_else(|| name.strip_suffix(".store.tmp"));
        if source.is_some_and(|s| !keep.contains(&s)) {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_opt(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_i(out, v);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads the body; every method fails cleanly on bytes that end early or make no sense.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.0.split_first().ok_or("body ends early")?;
        self.0 = rest;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("body ends early".into());
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b)
    }

    fn u(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn i(&mut self) -> Result<i64, String> {
        let u = self.u()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn opt(&mut self) -> Result<Option<i64>, String> {
        match self.byte()? {
            0 => Ok(None),
            1 => Ok(Some(self.i()?)),
            t => Err(format!("bad option tag {t}")),
        }
    }

    /// A count of items each at least `min` bytes long, so a bad count cannot make us reserve
    /// more than the file could hold.
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u()?;
        usize::try_from(n)
            .ok()
            .filter(|n| n.saturating_mul(min) <= self.0.len())
            .ok_or_else(|| format!("count {n} larger than the rest of the body"))
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.count(1)?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| "a string is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(i: usize) -> Attribute {
        Attribute {
            uuid: format!("00000000-0000-4000-8000-{i:012x}").into(),
            event_uuid: (i % 4 != 3).then(|| Arc::from(format!("ev{}", i % 3))),
            misp_type: if i % 2 == 0 { "ip-dst" } else { "domain" }.into(),
            category: "Network activity".into(),
            value: format!("v{i}.example-c2.net").into(),
            to_ids: i % 5 != 0,
            deleted: false,
            timestamp: 1_700_000_000 + i as i64 - 3,
            tags: match i % 3 {
                0 => Arc::from(Vec::new()),
                1 => vec![Arc::from("tlp:white")].into(),
                _ => vec![Arc::from("tlp:white"), Arc::from("é-tag")].into(),
            },
            last_seen: (i % 2 == 1).then_some(-5 - i as i64),
            event_published: [None, Some(true), Some(false)][i % 3],
        }
    }

    fn state(n: usize) -> WorkerState {
        let mut s = WorkerState {
            cursor: Cursor {
                max_timestamp: Some(1_700_000_100),
                last_full: None,
            },
            feed_events: HashMap::from([("ev0".to_string(), 17), ("ev1".to_string(), -1)]),
            ..WorkerState::default()
        };
        for i in 0..n {
            s.store.apply(attr(i));
        }
        s
    }

    fn sorted(s: &WorkerState) -> Vec<Attribute> {
        let mut v: Vec<Attribute> = s.store.iter().cloned().collect();
        v.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        v
    }

    const ID: [u8; 32] = [7; 32];

    #[test]
    fn round_trips_store_cursor_and_feed_events() {
        let s = state(40);
        let back = decode(&encode("src-a", &ID, &s), "src-a", &ID).unwrap();
        assert_eq!(sorted(&back), sorted(&s));
        assert_eq!(back.cursor, s.cursor);
        assert_eq!(back.feed_events, s.feed_events);
        assert!(!back.on_disk);
        let empty = WorkerState::default();
        let back = decode(&encode("e", &ID, &empty), "e", &ID).unwrap();
        assert!(back.store.is_empty() && back.cursor == Cursor::default());
    }

    #[test]
    fn loaded_attributes_share_their_strings() {
        let back = decode(&encode("s", &ID, &state(8)), "s", &ID).unwrap();
        let v = sorted(&back);
        assert!(Arc::ptr_eq(&v[1].tags, &v[4].tags));
        assert!(Arc::ptr_eq(&v[0].category, &v[1].category));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let bytes = encode("s", &ID, &state(6));
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], "s", &ID).is_err(), "cut at {n}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    matches!(decode(&b, "s", &ID), Err(Refused::Damaged(_))),
                    "flip {i}.{bit}"
                );
            }
        }
    }

    #[test]
    fn a_damaged_body_with_a_good_checksum_is_refused_without_panic() {
        // What a bug (not the disk) could write: the checksum passes, the parser must hold.
        let bytes = encode("s", &ID, &state(6));
        // The state after the name ("s": 2 bytes) and the identity.
        let body = &bytes[bytes.iter().position(|&b| b == b'\n').unwrap() + 1 + 2 + 32..];
        let frame = |body: &[u8]| frame("s", &ID, body);
        assert!(decode(&frame(body), "s", &ID).is_ok());
        for n in 0..body.len() {
            assert!(decode(&frame(&body[..n]), "s", &ID).is_err(), "cut at {n}");
        }
        for i in 0..body.len() {
            let mut b = body.to_vec();
            b[i] = b[i].wrapping_add(0x55);
            let _ = decode(&frame(&b), "s", &ID);
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode(&frame(&longer), "s", &ID).is_err());
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let bytes = encode("a", &ID, &state(3));
        assert!(matches!(decode(&bytes, "b", &ID), Err(Refused::Foreign(_))));
        assert!(matches!(
            decode(&bytes, "a", &[8; 32]),
            Err(Refused::Foreign(_))
        ));
        let mut other = bytes.clone();
        other[MAGIC.len() + 1] = b'9';
        assert!(matches!(decode(&other, "a", &ID), Err(Refused::Damaged(_))));
    }

    #[test]
    fn identity_follows_what_decides_the_stores_contents() {
        let base: SourceSettings =
            toml::from_str("name='s'\nkind='misp'\nurl='https://misp.example.org'\napi-key='k'\n")
                .unwrap();
        let id = identity(&base);
        let mut same = base.clone();
        same.tags = vec!["tlp:white".into()];
        same.to_ids_only = false;
        same.interval = crate::config::HumanDuration(std::time::Duration::from_secs(9));
        same.api_key = Some("other".into());
        assert_eq!(identity(&same), id, "client-side filters and schedule");
        let changes: [&dyn Fn(&mut SourceSettings); 5] = [
            &|s| s.url = "https://misp2.example.org".into(),
            &|s| s.kind = crate::config::SourceKind::Feed,
            &|s| s.published_only = true,
            &|s| s.exclude_decayed = true,
            &|s| s.decaying_models = vec![3],
        ];
        for change in changes {
            let mut s = base.clone();
            change(&mut s);
            assert_ne!(identity(&s), id);
        }
    }

    #[test]
    fn only_the_store_files_of_removed_sources_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            remove_others(dir.path(), &[]).unwrap().is_empty(),
            "no directory yet"
        );
        for name in ["a", "b"] {
            write(&path(dir.path(), name), name, &ID, &state(1)).unwrap();
        }
        let stores = dir.path().join(DIR);
        std::fs::write(stores.join("c.store.tmp"), b"x").unwrap();
        std::fs::write(stores.join("b.store.corrupt-5"), b"x").unwrap();
        let mut removed = remove_others(dir.path(), &["a"]).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [stores.join("b.store"), stores.join("c.store.tmp")]
        );
        assert!(stores.join("a.store").exists());
        assert!(stores.join("b.store.corrupt-5").exists());
    }

    #[test]
    fn files_are_written_loaded_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "src-a");
        assert!(load(&p, "src-a", &ID).unwrap().is_none());
        let s = state(5);
        write(&p, "src-a", &ID, &s).unwrap();
        assert_eq!(p, dir.path().join("stores/src-a.store"));
        assert!(!dir.path().join("stores/src-a.store.tmp").exists());
        let back = load(&p, "src-a", &ID).unwrap().unwrap();
        assert_eq!(sorted(&back), sorted(&s));
        assert!(matches!(
            load(&p, "src-b", &ID),
            Err(StoreFileError::Foreign { .. })
        ));
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(matches!(
            load(&p, "src-a", &ID),
            Err(StoreFileError::Damaged { .. })
        ));
        let to = quarantine(&p, 42).unwrap();
        assert_eq!(to, dir.path().join("stores/src-a.store.corrupt-42"));
        assert!(!p.exists() && to.exists());
    }
}
