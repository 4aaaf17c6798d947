//! Static MISP feeds (`manifest.json` + `<uuid>.json`), from an https URL (same pinned TLS as
//! MISP, no API key) or from a local directory (e.g. a feed mirrored by another tool).

use super::error::{ClientError, FeedError};
use super::http::{check_response, Transport};
use super::wire;
use crate::model::Attribute;
use crate::tls::TlsSettings;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, USER_AGENT};
use hyper::{Method, Request};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The attributes of one feed event.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub uuid: String,
    /// Event and object attributes, with the event's tags inherited.
    pub attributes: Vec<Attribute>,
    /// Malformed attributes skipped.
    pub bad_rows: usize,
}

#[derive(Clone)]
enum Location {
    Https(Box<Transport>),
    Dir(PathBuf),
}

/// A static MISP feed.
#[derive(Clone)]
pub struct FeedClient {
    location: Location,
    max_bytes: usize,
}

impl std::fmt::Debug for FeedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedClient(")?;
        match &self.location {
            Location::Https(t) => f.write_str(t.base.as_str())?,
            Location::Dir(d) => write!(f, "{}", d.display())?,
        }
        f.write_str(")")
    }
}

impl FeedClient {
    /// `location` is an `https://` URL (the folder holding manifest.json), a `file://` URL or
    /// an absolute directory path. Plain `http://` is refused: feed data decides what gets
    /// blocked, so it must be authenticated.
    pub fn new(
        location: &str,
        tls: &TlsSettings,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<FeedClient, FeedError> {
        let bad = |reason: &str| FeedError::BadLocation {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        let loc = if location.starts_with("https://") {
            Location::Https(Box::new(Transport::new(location, tls, timeout, max_bytes)?))
        } else if location.starts_with("http://") {
            return Err(bad(
                "plain http is not allowed; use https (pinned if needed) or a local directory",
            ));
        } else {
            let path = match location.strip_prefix("file://") {
                Some(p) => PathBuf::from(p),
                None => PathBuf::from(location),
            };
            if !path.is_absolute() {
                return Err(bad("a feed directory must be an absolute path"));
            }
            Location::Dir(path)
        };
        Ok(FeedClient {
            location: loc,
            max_bytes,
        })
    }

    async fn fetch(&self, name: &str) -> Result<Bytes, FeedError> {
        match &self.location {
            Location::Dir(dir) => {
                let path = dir.join(name);
                let meta = tokio::fs::metadata(&path)
                    .await
                    .map_err(|source| FeedError::Io {
                        path: path.clone(),
                        source,
                    })?;
                if meta.len() > self.max_bytes as u64 {
                    return Err(FeedError::TooLarge {
                        what: path.display().to_string(),
                        limit: self.max_bytes,
                    });
                }
                let data = tokio::fs::read(&path)
                    .await
                    .map_err(|source| FeedError::Io {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Bytes::from(data))
            }
            Location::Https(t) => {
                let url = t.url(name)?;
                let shown = url.to_string();
                let req = Request::builder()
                    .method(Method::GET)
                    .uri(url.as_str())
                    .header(ACCEPT, "application/json")
                    .header(USER_AGENT, concat!("mispd/", env!("CARGO_PKG_VERSION")))
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| ClientError::BadUrl {
                        url: shown.clone(),
                        reason: e.to_string(),
                    })?;
                let resp = t.send(req).await?;
                check_response(&shown, &resp, None)?;
                Ok(resp.body)
            }
        }
    }

    /// The feed's events: uuid -> event timestamp. Malformed entries are left out.
    pub async fn manifest(&self) -> Result<BTreeMap<String, i64>, FeedError> {
        let body = self.fetch("manifest.json").await?;
        let (map, bad) = wire::decode_manifest(&body).map_err(|e| FeedError::Invalid {
            what: "manifest.json".into(),
            detail: e.to_string(),
        })?;
        if bad > 0 {
            tracing::warn!(feed = ?self, bad, "manifest entries skipped (bad uuid or timestamp)");
        }
        Ok(map)
    }

    /// One event's attributes (event and object attributes).
    pub async fn event(&self, uuid: &str) -> Result<FeedEvent, FeedError> {
        if !wire::is_uuid(uuid) {
            return Err(FeedError::BadUuid {
                uuid: uuid.chars().take(64).collect(),
            });
        }
        let uuid = uuid.to_ascii_lowercase();
        let name = format!("{uuid}.json");
        let body = match self.fetch(&name).await {
            Err(FeedError::Client(ClientError::Http { status: 404, .. })) => {
                return Err(FeedError::EventMissing { uuid });
            }
            Err(FeedError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(FeedError::EventMissing { uuid });
            }
            other => other?,
        };
        let (inner, decoded) = wire::decode_feed_event(&body).map_err(|e| FeedError::Invalid {
            what: name.clone(),
            detail: e.to_string(),
        })?;
        // The file must hold the event it is named after (a misconfigured or hostile server
        // could answer every request with the same file).
        if !inner
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(&uuid))
        {
            let held: Option<String> = inner.map(|u| u.chars().take(64).collect());
            return Err(FeedError::Invalid {
                what: name,
                detail: format!("it holds event {held:?}, not {uuid}"),
            });
        }
        Ok(FeedEvent {
            uuid,
            attributes: decoded.attributes,
            bad_rows: decoded.bad_rows,
        })
    }
}

/// Events read a few at a time, each on a task of its own, so that decoding them (most of the
/// work of a local feed) spreads over the runtime's threads. Results come back in the order
/// asked for; dropping this stops the reads still running.
pub struct Prefetch {
    feed: FeedClient,
    todo: std::vec::IntoIter<String>,
    running: VecDeque<JoinHandle<Result<FeedEvent, FeedError>>>,
    width: usize,
}

/// Event files of a local feed read at once. A feed server gets one request at a time, as before.
const LOCAL_READS: usize = 4;

impl FeedClient {
    /// Reads these events: several at once from a directory, one at a time over https.
    pub fn prefetch(&self, uuids: Vec<String>) -> Prefetch {
        let width = match self.location {
            Location::Dir(_) => LOCAL_READS,
            Location::Https(_) => 1,
        };
        self.prefetch_width(uuids, width)
    }

    fn prefetch_width(&self, uuids: Vec<String>, width: usize) -> Prefetch {
        Prefetch {
            feed: self.clone(),
            todo: uuids.into_iter(),
            running: VecDeque::new(),
            width: width.max(1),
        }
    }
}

impl Prefetch {
    /// The next event in order, or `None` when all were read.
    pub async fn next(&mut self) -> Option<Result<FeedEvent, FeedError>> {
        while self.running.len() < self.width {
            let Some(uuid) = self.todo.next() else { break };
            let feed = self.feed.clone();
            self.running
                .push_back(tokio::spawn(async move { feed.event(&uuid).await }));
        }
        let task = self.running.pop_front()?;
        Some(match task.await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        })
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        for t in &self.running {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefetch_reads_events_in_the_order_asked_for() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/feed-infoblox");
        let feed = FeedClient::new(
            dir,
            &TlsSettings::default(),
            Duration::from_secs(5),
            8 << 20,
        )
        .unwrap();
        let uuids = vec![
            "f02183b6-33a0-4a69-bc22-7a0d5b034ab6".to_string(),
            "00000000-0000-4000-8000-000000000000".to_string(),
            "24e799ca-aad8-4244-8005-90b3ceb44540".to_string(),
            "dad88707-beb8-4a14-94e2-5ffecf5a5f85".to_string(),
        ];
        assert_eq!(feed.prefetch(uuids.clone()).width, LOCAL_READS);
        for width in [1, 2, 8] {
            let mut events = feed.prefetch_width(uuids.clone(), width);
            let mut got = Vec::new();
            while let Some(r) = events.next().await {
                got.push(match r {
                    Ok(ev) => {
                        assert!(!ev.attributes.is_empty());
                        ev.uuid
                    }
                    Err(FeedError::EventMissing { uuid }) => format!("missing {uuid}"),
                    Err(e) => panic!("{e}"),
                });
            }
            let mut want = uuids.clone();
            want[1] = format!("missing {}", uuids[1]);
            assert_eq!(got, want, "width {width}");
        }
    }
}
