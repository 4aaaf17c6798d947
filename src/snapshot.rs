//! The on-disk snapshot of what is served: the index itself, and for every source its
//! quarantine, any held change and, for a low-trust source, its whole published set (the index
//! holds only the part another source corroborates). Written atomically (temp file, fsync,
//! rename, fsync of the directory) after each applied change; loaded before `READY=1` so a
//! restart with MISP down serves at once. A file that fails its version or checksum check is
//! moved aside, never half-used.
//!
//! Format: a first line `mispd-snapshot <version> <sha256-hex of the body> <body length>`, then
//! the body. Version 2 (this build writes it):
//!
//! ```text
//! u32 length, JSON meta     generation; per source: name, quarantine, held change, last success,
//!                           whether an own set and a held set follow
//! index                     the served index's arrays (index::persist)
//! per source, in order:     its own set, then its held set, each as an index, when present
//! ```
//!
//! Loading the index's arrays is a copy and a check, so a cold start does not rebuild the index.
//! Version 1 (JSON rows, written before 0.2) is still read, once, on upgrade.

use crate::index::Index;
use crate::model::{HeldChange, Indicator, Kind, Provenance, Rejection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const FILE_NAME: &str = "snapshot";
const MAGIC: &str = "mispd-snapshot";
const VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a mispd snapshot of a version this build reads ({detail})")]
    Format { path: PathBuf, detail: String },
    #[error("{path}: checksum mismatch (the file is damaged)")]
    Checksum { path: PathBuf },
}

/// What the supervisor hands over to be written.
pub struct Snapshot {
    pub generation: u64,
    /// The served index: every normal-trust source's published set lives here.
    pub index: Arc<Index>,
    pub sources: Vec<SourceSnapshot>,
}

pub struct SourceSnapshot {
    pub name: String,
    /// The whole published set, when the index holds only part of it (low-trust sources).
    pub own: Option<Arc<Vec<Indicator>>>,
    pub quarantine: Vec<Rejection>,
    pub held: Option<Vec<Indicator>>,
    pub held_change: Option<HeldChange>,
    pub last_success: Option<i64>,
}

/// What a successful load gives back.
#[derive(Debug, Default)]
pub struct Restored {
    pub generation: u64,
    /// The served index as it was written (empty after an upgrade from version 1, whose sets are
    /// all in the sources' `own`).
    pub index: Index,
    pub sources: HashMap<String, RestoredSource>,
    /// When the file was written (its modification time), seconds since the epoch.
    pub written_at: Option<i64>,
}

#[derive(Debug, Default)]
pub struct RestoredSource {
    /// The source's whole published set when it is not (only) in the index.
    pub own: Option<Vec<Indicator>>,
    pub quarantine: Vec<Rejection>,
    pub held: Option<Vec<Indicator>>,
    pub held_change: Option<HeldChange>,
    pub last_success: Option<i64>,
}

impl Restored {
    /// How many indicator records the source had published.
    pub fn served(&self, source: &str) -> usize {
        match self.sources.get(source).and_then(|s| s.own.as_ref()) {
            Some(own) => own.len(),
            None => self.index.source_len(source),
        }
    }

    /// Every source's published records, counted once.
    pub fn total(&self) -> usize {
        self.sources.keys().map(|s| self.served(s)).sum()
    }
}

// ---- version 2 ----

#[derive(Serialize, Deserialize)]
struct Meta {
    generation: u64,
    sources: Vec<SourceMeta>,
}

#[derive(Serialize, Deserialize)]
struct SourceMeta {
    name: String,
    own_set: bool,
    held_set: bool,
    quarantine: Vec<Rejection>,
    held_change: Option<HeldChange>,
    last_success: Option<i64>,
}

/// The version 2 body for a snapshot.
pub fn encode(snap: &Snapshot) -> Vec<u8> {
    let meta = Meta {
        generation: snap.generation,
        sources: snap
            .sources
            .iter()
            .map(|s| SourceMeta {
                name: s.name.clone(),
                own_set: s.own.is_some(),
                held_set: s.held.is_some(),
                quarantine: s.quarantine.clone(),
                held_change: s.held_change.clone(),
                last_success: s.last_success,
            })
            .collect(),
    };
    let meta = serde_json::to_vec(&meta).expect("snapshot meta serialises");
    let mut out = Vec::new();
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    snap.index.write_to(&mut out);
    for s in &snap.sources {
        for set in [s.own.as_deref(), s.held.as_ref()].into_iter().flatten() {
            let refs: Vec<&Indicator> = set.iter().collect();
            Index::build_from(&refs).write_to(&mut out);
        }
    }
    out
}

fn decode_v2(body: &[u8]) -> Result<Restored, String> {
    let mut rest = body;
    if rest.len() < 4 {
        return Err("body ends early".into());
    }
    let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    rest = &rest[4..];
    if rest.len() < n {
        return Err("body ends early".into());
    }
    let meta: Meta = serde_json::from_slice(&rest[..n]).map_err(|e| e.to_string())?;
    rest = &rest[n..];
    let index = Index::read_from(&mut rest).map_err(|e| format!("index: {e}"))?;
    let mut out = Restored {
        generation: meta.generation,
        index,
        sources: HashMap::new(),
        written_at: None,
    };
    for s in meta.sources {
        let mut set = |present: bool| -> Result<Option<Vec<Indicator>>, String> {
            if !present {
                return Ok(None);
            }
            let ix = Index::read_from(&mut rest).map_err(|e| format!("source {}: {e}", s.name))?;
            if let Some(other) = ix.source_names().find(|n| *n != s.name) {
                return Err(format!("source {}: its set names source {other}", s.name));
            }
            Ok(Some(ix.to_indicators()))
        };
        let own = set(s.own_set)?;
        let held = set(s.held_set)?;
        let restored = RestoredSource {
            own,
            quarantine: s.quarantine,
            held,
            held_change: s.held_change,
            last_success: s.last_success,
        };
        if out.sources.insert(s.name.clone(), restored).is_some() {
            return Err(format!("source {} twice", s.name));
        }
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last set", rest.len()));
    }
    Ok(out)
}

/// Serialise, checksum and write atomically to `<dir>/snapshot`.
pub fn write(dir: &Path, snap: &Snapshot) -> Result<(), SnapshotError> {
    let body = encode(snap);
    let header = format!(
        "{MAGIC} {VERSION} {} {}\n",
        hex(&Sha256::digest(&body)),
        body.len()
    );
    write_atomically(&dir.join(FILE_NAME), &[header.as_bytes(), &body])
        .map_err(|(path, source)| SnapshotError::Io { path, source })
}

/// Write a file so that a crash leaves either the old or the new one, never a mix: a temp file
/// beside it, fsync, rename, fsync of the directory (created when missing). On error, the path
/// the failing step worked on. `parts` are written one after another.
pub fn write_atomically(path: &Path, parts: &[&[u8]]) -> Result<(), (PathBuf, std::io::Error)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        for part in parts {
            f.write_all(part).map_err(io(&tmp))?;
        }
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// Load `<dir>/snapshot`. `Ok(None)` when there is none. On a damaged or foreign file the
/// caller should call [`quarantine_file`] and start empty.
pub fn load(dir: &Path) -> Result<Option<Restored>, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    match decode_bytes(&data) {
        Ok(mut r) => {
            r.written_at = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            Ok(Some(r))
        }
        Err(Damage::Format(detail)) => Err(SnapshotError::Format { path, detail }),
        Err(Damage::Checksum) => Err(SnapshotError::Checksum { path }),
    }
}

/// Why the bytes of a snapshot file were refused by [`decode_bytes`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("{0}")]
    Format(String),
    #[error("checksum mismatch")]
    Checksum,
}

/// Decode the bytes of a snapshot file (header line and body), checking magic, version, length
/// and checksum before the body is parsed. Never panics, whatever the bytes.
pub fn decode_bytes(data: &[u8]) -> Result<Restored, Damage> {
    let format = |detail: &str| Damage::Format(detail.to_string());
    let nl = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| format("no header line"))?;
    let header = std::str::from_utf8(&data[..nl]).map_err(|_| format("header is not text"))?;
    let parts: Vec<&str> = header.split(' ').collect();
    let [magic, version, digest, len] = parts[..] else {
        return Err(format("malformed header"));
    };
    if magic != MAGIC {
        return Err(format("wrong magic"));
    }
    let version = match version.parse::<u32>() {
        Ok(v @ (1 | VERSION)) => v,
        _ => {
            return Err(format(&format!(
                "version {version}, this build reads 1 and {VERSION}"
            )))
        }
    };
    let body = &data[nl + 1..];
    if len.parse::<usize>().ok() != Some(body.len()) || hex(&Sha256::digest(body)) != digest {
        return Err(Damage::Checksum);
    }
    if version == 1 {
        return v1::decode(body).map_err(Damage::Format);
    }
    decode_v2(body).map_err(Damage::Format)
}

/// The file bytes [`write`] produces for a body: the header line, then the body. For tests and
/// fuzzing, which need bodies that pass the checksum.
pub fn frame(body: &[u8]) -> Vec<u8> {
    frame_version(VERSION, body)
}

fn frame_version(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{MAGIC} {version} {} {}\n",
        hex(&Sha256::digest(body)),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Version 1, read on upgrade: a JSON body in which repeated provenance strings are interned in
/// a table and every source's set is a list of rows. Every set comes back as the source's
/// `own`, so the supervisor rebuilds the index under the current configuration.
mod v1 {
    use super::*;

    /// Value, kind, then indexes into the string table for event uuid (or u32::MAX), attribute
    /// uuid, MISP type, category, tag set, then timestamp, to_ids and notes.
    pub(super) type Row = (
        Box<str>,
        Kind,
        u32,
        u32,
        u32,
        u32,
        u32,
        i64,
        bool,
        Vec<Box<str>>,
    );

    #[derive(Deserialize)]
    pub(super) struct Body {
        generation: u64,
        strings: Vec<Arc<str>>,
        tag_sets: Vec<Vec<u32>>,
        sources: Vec<SourceBody>,
    }

    #[derive(Deserialize)]
    struct SourceBody {
        name: String,
        indicators: Vec<Row>,
        quarantine: Vec<Rejection>,
        held: Option<Vec<Row>>,
        held_change: Option<HeldChange>,
        last_success: Option<i64>,
    }

    pub(super) fn decode(body: &[u8]) -> Result<Restored, String> {
        let body: Body = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let strings = body.strings;
        let get = |i: u32| {
            strings
                .get(i as usize)
                .cloned()
                .ok_or_else(|| format!("string index {i} out of range"))
        };
        let tag_sets: Vec<Arc<[Arc<str>]>> = body
            .tag_sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|&i| get(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Arc::from)
            })
            .collect::<Result<_, _>>()?;
        let mut out = Restored {
            generation: body.generation,
            ..Restored::default()
        };
        for s in body.sources {
            let source: Arc<str> = Arc::from(s.name.as_str());
            let rows = |rows: Vec<Row>| -> Result<Vec<Indicator>, String> {
                rows.into_iter()
                    .map(
                        |(value, kind, event, attr, ty, cat, tags, timestamp, to_ids, notes)| {
                            Ok(Indicator {
                                value,
                                kind,
                                provenance: Provenance {
                                    source: source.clone(),
                                    event_uuid: if event == u32::MAX {
                                        None
                                    } else {
                                        Some(get(event)?)
                                    },
                                    attribute_uuid: get(attr)?,
                                    misp_type: get(ty)?,
                                    category: get(cat)?,
                                    tags: tag_sets
                                        .get(tags as usize)
                                        .cloned()
                                        .ok_or("tag set out of range")?,
                                    timestamp,
                                    to_ids,
                                },
                                notes,
                            })
                        },
                    )
                    .collect()
            };
            let restored = RestoredSource {
                own: Some(rows(s.indicators)?),
                quarantine: s.quarantine,
                held: s.held.map(rows).transpose()?,
                held_change: s.held_change,
                last_success: s.last_success,
            };
            out.sources.insert(s.name, restored);
        }
        Ok(out)
    }
}

/// Move a damaged snapshot aside as `snapshot.corrupt-<epoch>` so it can be inspected.
pub fn quarantine_file(dir: &Path, now: i64) -> std::io::Result<PathBuf> {
    let to = dir.join(format!("{FILE_NAME}.corrupt-{now}"));
    std::fs::rename(dir.join(FILE_NAME), &to)?;
    Ok(to)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(source: &str, v: &str, ev: &str) -> Indicator {
        Indicator {
            value: v.into(),
            kind: Kind::Domain,
            provenance: Provenance {
                source: source.into(),
                event_uuid: Some(ev.into()),
                attribute_uuid: format!("a-{v}").into(),
                misp_type: "domain".into(),
                category: "Network activity".into(),
                tags: vec![Arc::from("tlp:white")].into(),
                timestamp: 7,
                to_ids: true,
            },
            notes: vec![],
        }
    }

    fn sorted(mut v: Vec<Indicator>) -> Vec<Indicator> {
        v.sort_by(|a, b| a.value.cmp(&b.value));
        v
    }

    fn snap() -> Snapshot {
        let served = vec![
            ind("s", "evil.example", "e1"),
            ind("s", "bad.example", "e1"),
            ind("low", "bad.example", "e3"),
        ];
        Snapshot {
            generation: 4,
            index: Arc::new(Index::build(served)),
            sources: vec![
                SourceSnapshot {
                    name: "s".into(),
                    own: None,
                    quarantine: vec![],
                    held: Some(vec![ind("s", "new.example", "e2")]),
                    held_change: None,
                    last_success: Some(100),
                },
                SourceSnapshot {
                    name: "low".into(),
                    own: Some(Arc::new(vec![
                        ind("low", "bad.example", "e3"),
                        ind("low", "only-low.example", "e3"),
                    ])),
                    quarantine: vec![],
                    held: None,
                    held_change: None,
                    last_success: None,
                },
            ],
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let original = snap();
        write(dir.path(), &original).unwrap();
        let r = load(dir.path()).unwrap().unwrap();
        assert_eq!(r.generation, 4);
        assert_eq!(r.index.to_indicators(), original.index.to_indicators());
        let s = &r.sources["s"];
        assert!(s.own.is_none(), "a normal source lives in the index");
        assert_eq!(s.held.as_ref().unwrap()[0].value.as_ref(), "new.example");
        assert_eq!(s.last_success, Some(100));
        assert_eq!(r.served("s"), 2);
        let low = &r.sources["low"];
        assert_eq!(
            sorted(low.own.clone().unwrap()),
            sorted(original.sources[1].own.as_deref().unwrap().clone())
        );
        assert_eq!(r.served("low"), 2);
        assert_eq!(r.total(), 4);
        assert!(r.index.lookup("evil.example").listed);
    }

    #[test]
    fn decode_bytes_reads_what_write_wrote_and_frame_matches_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snap()).unwrap();
        let data = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let r = decode_bytes(&data).unwrap();
        assert_eq!(r.served("s"), 2);
        let body = &data[data.iter().position(|&b| b == b'\n').unwrap() + 1..];
        assert_eq!(frame(body), data);
        assert_eq!(
            decode_bytes(&data[1..]).unwrap_err(),
            Damage::Format("wrong magic".into())
        );
        assert_eq!(
            decode_bytes(&frame(b"{}")).unwrap_err(),
            Damage::Format("body ends early".into())
        );
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(
            decode_bytes(&frame(&longer)).unwrap_err(),
            Damage::Format("1 bytes after the last set".into())
        );
        assert!(matches!(
            decode_bytes(&frame_version(3, body)).unwrap_err(),
            Damage::Format(d) if d.contains("version 3")
        ));
    }

    #[test]
    fn a_set_naming_another_source_is_refused() {
        let mut s = snap();
        s.sources[1].own = Some(Arc::new(vec![ind("s", "smuggled.example", "e3")]));
        let err = decode_bytes(&frame(&encode(&s))).unwrap_err();
        assert_eq!(
            err,
            Damage::Format("source low: its set names source s".into())
        );
    }

    #[test]
    fn every_truncated_body_is_refused() {
        let body = encode(&snap());
        for n in 0..body.len() {
            assert!(decode_bytes(&frame(&body[..n])).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn version_1_snapshots_are_read_on_upgrade() {
        let body = serde_json::json!({
            "generation": 9,
            "strings": ["e1", "a-1", "domain", "Network activity", "tlp:white"],
            "tag_sets": [[4]],
            "sources": [{
                "name": "s",
                "indicators": [["evil.example", "domain", 0, 1, 2, 3, 0, 7, true, ["refanged"]]],
                "quarantine": [],
                "held": null,
                "held_change": null,
                "last_success": 100
            }]
        });
        let r = decode_bytes(&frame_version(1, &serde_json::to_vec(&body).unwrap())).unwrap();
        assert_eq!(r.generation, 9);
        assert!(
            r.index.is_empty(),
            "rebuilt by the supervisor under the current config"
        );
        let own = r.sources["s"].own.as_ref().unwrap();
        assert_eq!(own.len(), 1);
        assert_eq!(&*own[0].provenance.attribute_uuid, "a-1");
        assert_eq!(&*own[0].provenance.tags[0], "tlp:white");
        assert_eq!(own[0].notes, vec![Box::from("refanged")]);
        assert_eq!(r.served("s"), 1);
    }

    #[test]
    fn damaged_file_is_refused_and_can_be_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snap()).unwrap();
        let p = dir.path().join(FILE_NAME);
        let mut data = std::fs::read(&p).unwrap();
        let n = data.len();
        data[n - 5] ^= 0x20;
        std::fs::write(&p, &data).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(SnapshotError::Checksum { .. })
        ));
        let moved = quarantine_file(dir.path(), 42).unwrap();
        assert!(moved.ends_with("snapshot.corrupt-42"));
        assert!(load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snap()).unwrap();
        let p = dir.path().join(FILE_NAME);
        let data = std::fs::read(&p).unwrap();
        std::fs::write(&p, &data[..data.len() / 2]).unwrap();
        assert!(load(dir.path()).is_err());
        std::fs::write(&p, b"hello\n{}").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(SnapshotError::Format { .. })
        ));
    }
}
