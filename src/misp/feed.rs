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
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
