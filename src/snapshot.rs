//! The on-disk snapshot of what is served: every source's last known-good validated set, its
//! quarantine and any held change. Written atomically (temp file, fsync, rename, fsync of the
//! directory) after each applied change; loaded before `READY=1` so a restart with MISP down
//! serves at once. A file that fails its version or checksum check is moved aside, never half-used.
//!
//! Format: a first line `mispd-snapshot <version> <sha256-hex of the body> <body length>`, then a
//! JSON body in which repeated provenance strings are interned in a table.

use crate::model::{HeldChange, Indicator, Kind, Provenance, Rejection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const FILE_NAME: &str = "snapshot";
const MAGIC: &str = "mispd-snapshot";
const VERSION: u32 = 1;

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
    pub sources: Vec<SourceSnapshot>,
}

pub struct SourceSnapshot {
    pub name: String,
    pub indicators: Arc<Vec<Indicator>>,
    pub quarantine: Vec<Rejection>,
    pub held: Option<Vec<Indicator>>,
    pub held_change: Option<HeldChange>,
    pub last_success: Option<i64>,
}

/// What a successful load gives back.
#[derive(Debug, Default)]
pub struct Restored {
    pub generation: u64,
    pub sources: HashMap<String, RestoredSource>,
}

#[derive(Debug, Default)]
pub struct RestoredSource {
    pub indicators: Vec<Indicator>,
    pub quarantine: Vec<Rejection>,
    pub held: Option<Vec<Indicator>>,
    pub held_change: Option<HeldChange>,
    pub last_success: Option<i64>,
}

// ---- wire form ----

/// One indicator: value, kind, then indexes into the string table for event uuid (or u32::MAX),
/// attribute uuid, MISP type, category, tag set, then timestamp, to_ids and notes.
type Row = (
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

#[derive(Serialize, Deserialize)]
struct Body {
    generation: u64,
    strings: Vec<Arc<str>>,
    tag_sets: Vec<Vec<u32>>,
    sources: Vec<SourceBody>,
}

#[derive(Serialize, Deserialize)]
struct SourceBody {
    name: String,
    indicators: Vec<Row>,
    quarantine: Vec<Rejection>,
    held: Option<Vec<Row>>,
    held_change: Option<HeldChange>,
    last_success: Option<i64>,
}

#[derive(Default)]
struct Interner {
    strings: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
    tag_sets: Vec<Vec<u32>>,
    tag_ids: HashMap<Vec<u32>, u32>,
}

impl Interner {
    fn s(&mut self, s: &Arc<str>) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.clone());
        self.ids.insert(s.clone(), i);
        i
    }

    fn row(&mut self, ind: &Indicator) -> Row {
        let p = &ind.provenance;
        let tags: Vec<u32> = p.tags.iter().map(|t| self.s(t)).collect();
        let tag_set = match self.tag_ids.get(&tags) {
            Some(&i) => i,
            None => {
                let i = self.tag_sets.len() as u32;
                self.tag_sets.push(tags.clone());
                self.tag_ids.insert(tags, i);
                i
            }
        };
        let event = p.event_uuid.as_ref().map_or(u32::MAX, |e| self.s(e));
        (
            ind.value.clone(),
            ind.kind,
            event,
            self.s(&p.attribute_uuid),
            self.s(&p.misp_type),
            self.s(&p.category),
            tag_set,
            p.timestamp,
            p.to_ids,
            ind.notes.clone(),
        )
    }
}

/// Serialise, checksum and write atomically to `<dir>/snapshot`.
pub fn write(dir: &Path, snap: &Snapshot) -> Result<(), SnapshotError> {
    let mut interner = Interner::default();
    let sources: Vec<SourceBody> = snap
        .sources
        .iter()
        .map(|s| {
            let source: Arc<str> = Arc::from(s.name.as_str());
            interner.s(&source);
            SourceBody {
                name: s.name.clone(),
                indicators: s.indicators.iter().map(|i| interner.row(i)).collect(),
                quarantine: s.quarantine.clone(),
                held: s
                    .held
                    .as_ref()
                    .map(|h| h.iter().map(|i| interner.row(i)).collect()),
                held_change: s.held_change.clone(),
                last_success: s.last_success,
            }
        })
        .collect();
    let body = Body {
        generation: snap.generation,
        strings: interner.strings,
        tag_sets: interner.tag_sets,
        sources,
    };
    let bytes = serde_json::to_vec(&body).expect("snapshot body serialises");
    let digest = hex(&Sha256::digest(&bytes));
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SnapshotError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        writeln!(f, "{MAGIC} {VERSION} {digest} {}", bytes.len()).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
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
        Ok(r) => Ok(Some(r)),
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
    if version != VERSION.to_string() {
        return Err(format(&format!(
            "version {version}, this build reads {VERSION}"
        )));
    }
    let body = &data[nl + 1..];
    if len.parse::<usize>().ok() != Some(body.len()) || hex(&Sha256::digest(body)) != digest {
        return Err(Damage::Checksum);
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| format(&e.to_string()))?;
    decode(body).map_err(Damage::Format)
}

/// The file bytes [`write`] produces for a JSON body: the header line, then the body. For
/// tests and fuzzing, which need bodies that pass the checksum.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{MAGIC} {VERSION} {} {}\n",
        hex(&Sha256::digest(body)),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn decode(body: Body) -> Result<Restored, String> {
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
        sources: HashMap::new(),
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
            indicators: rows(s.indicators)?,
            quarantine: s.quarantine,
            held: s.held.map(rows).transpose()?,
            held_change: s.held_change,
            last_success: s.last_success,
        };
        out.sources.insert(s.name, restored);
    }
    Ok(out)
}

/// Move a damaged snapshot aside as `snapshot.corrupt-<epoch>` so it can be inspected.
pub fn quarantine_file(dir: &Path, now: i64) -> std::io::Result<PathBuf> {
    let to = dir.join(format!("{FILE_NAME}.corrupt-{now}"));
    std::fs::rename(dir.join(FILE_NAME), &to)?;
    Ok(to)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(v: &str, ev: &str) -> Indicator {
        Indicator {
            value: v.into(),
            kind: Kind::Domain,
            provenance: Provenance {
                source: "s".into(),
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

    fn snap() -> Snapshot {
        Snapshot {
            generation: 4,
            sources: vec![SourceSnapshot {
                name: "s".into(),
                indicators: Arc::new(vec![ind("evil.example", "e1"), ind("bad.example", "e1")]),
                quarantine: vec![],
                held: Some(vec![ind("new.example", "e2")]),
                held_change: None,
                last_success: Some(100),
            }],
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snap()).unwrap();
        let r = load(dir.path()).unwrap().unwrap();
        assert_eq!(r.generation, 4);
        let s = &r.sources["s"];
        assert_eq!(s.indicators, *snap().sources[0].indicators);
        assert_eq!(s.held.as_ref().unwrap()[0].value.as_ref(), "new.example");
        assert_eq!(s.last_success, Some(100));
        // interned: both indicators share one event uuid allocation
        assert!(Arc::ptr_eq(
            s.indicators[0].provenance.event_uuid.as_ref().unwrap(),
            s.indicators[1].provenance.event_uuid.as_ref().unwrap()
        ));
    }

    #[test]
    fn decode_bytes_reads_what_write_wrote_and_frame_matches_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snap()).unwrap();
        let data = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let r = decode_bytes(&data).unwrap();
        assert_eq!(r.sources["s"].indicators, *snap().sources[0].indicators);
        let body = &data[data.iter().position(|&b| b == b'\n').unwrap() + 1..];
        assert_eq!(frame(body), data);
        assert_eq!(
            decode_bytes(&data[1..]).unwrap_err(),
            Damage::Format("wrong magic".into())
        );
        assert_eq!(
            decode_bytes(&frame(b"{}")).unwrap_err(),
            Damage::Format("missing field `generation` at line 1 column 2".into())
        );
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
