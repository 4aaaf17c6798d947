//! The MISP REST client: one pinned-TLS HTTP/1.1 connection pool per source, a deadline and a
//! size cap on every request, no redirects, and the API key added only to the request that
//! goes to the configured host.

use super::error::ClientError;
use super::http::{check_response, header_str, sanitize, RawResponse, Transport};
use super::wire;
use crate::credentials::ApiKey;
use crate::model::Attribute;
use crate::tls::TlsSettings;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use std::sync::Arc;
use std::time::Duration;

/// The API key, swappable at runtime (SIGHUP reload) without rebuilding the client.
pub type SharedKey = Arc<ArcSwap<ApiKey>>;

/// Wraps a key for [`MispClient::new`].
pub fn shared_key(key: ApiKey) -> SharedKey {
    Arc::new(ArcSwap::from_pointee(key))
}

/// One `/attributes/restSearch` page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Attributes decoded from the page (malformed rows left out).
    pub attributes: Vec<Attribute>,
    /// Rows in the JSON, good and bad: compare with the page size to detect the last page.
    pub returned: usize,
    /// `X-Skipped-Elements-Count` (rows MISP dropped server-side, e.g. warninglists).
    pub skipped_by_server: usize,
    /// Rows skipped because they were malformed.
    pub bad_rows: usize,
    /// `X-Result-Count` as sent (since 2.4.166 it is the page's row count + 1 when full).
    pub result_count: Option<usize>,
    /// `X-Auth-Key-Expiration`, when MISP says the key expires.
    pub key_expires: Option<String>,
}

/// `/servers/getVersion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: String,
    pub perm_sync: Option<bool>,
    pub uuid: Option<String>,
    pub key_expires: Option<String>,
}

/// A MISP server's REST API.
#[derive(Clone)]
pub struct MispClient {
    transport: Transport,
    key: SharedKey,
}

impl std::fmt::Debug for MispClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MispClient")
            .field("base", &self.transport.base.as_str())
            .finish_non_exhaustive()
    }
}

impl MispClient {
    /// `base_url` is MISP's root (`https://misp.example.org/`); `timeout` bounds each request
    /// from connect to the last body byte; `max_bytes` caps each response body.
    pub fn new(
        base_url: &str,
        tls: &TlsSettings,
        timeout: Duration,
        key: SharedKey,
        max_bytes: usize,
    ) -> Result<MispClient, ClientError> {
        Ok(MispClient {
            transport: Transport::new(base_url, tls, timeout, max_bytes)?,
            key,
        })
    }

    /// The key in use; store a new one to rotate it.
    pub fn key(&self) -> &SharedKey {
        &self.key
    }

    pub fn base_url(&self) -> &str {
        self.transport.base.as_str()
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(String, Request<Full<Bytes>>), ClientError> {
        let url = self.transport.url(path)?;
        let shown = url.to_string();
        let key = self.key.load();
        // Built here, right before sending, and marked sensitive so hyper never logs it.
        let mut auth = HeaderValue::from_str(key.expose()).map_err(|_| ClientError::BadKey)?;
        auth.set_sensitive(true);
        let mut builder = Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, auth)
            .header(
                hyper::header::USER_AGENT,
                concat!("mispd/", env!("CARGO_PKG_VERSION")),
            );
        let body = match body {
            Some(b) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let req = builder.body(body).map_err(|e| ClientError::BadUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        Ok((shown, req))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(String, RawResponse), ClientError> {
        let (url, req) = self.request(method, path, body)?;
        let resp = self.transport.send(req).await?;
        let key = self.key.load();
        check_response(&url, &resp, Some(key.expose()))?;
        Ok((url, resp))
    }

    /// POSTs one `/attributes/restSearch` query (see `MISP-API-NOTES.md` C for the body).
    pub async fn search_page(&self, body: &serde_json::Value) -> Result<Page, ClientError> {
        let payload = serde_json::to_vec(body).map_err(|e| ClientError::BadUrl {
            url: self.base_url().to_string(),
            reason: format!("query body: {e}"),
        })?;
        let (url, resp) = self
            .call(Method::POST, "attributes/restSearch", Some(payload))
            .await?;
        let decoded =
            wire::decode_rest_search(&resp.body).map_err(|e| ClientError::InvalidJson {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let count =
            |name: &str| header_str(&resp.headers, name).and_then(|v| v.parse::<usize>().ok());
        Ok(Page {
            attributes: decoded.attributes,
            returned: decoded.rows,
            skipped_by_server: count("x-skipped-elements-count").unwrap_or(0),
            bad_rows: decoded.bad_rows,
            result_count: count("x-result-count"),
            key_expires: header_str(&resp.headers, "x-auth-key-expiration")
                .map(|s| sanitize(s, None)),
        })
    }

    /// `GET /servers/getVersion`: cheap, and proves the key works.
    pub async fn version(&self) -> Result<Version, ClientError> {
        let (url, resp) = self.call(Method::GET, "servers/getVersion", None).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&resp.body).map_err(|e| ClientError::InvalidJson {
                url: url.clone(),
                detail: wire::WireError::from(e).to_string(),
            })?;
        let version =
            v.get("version")
                .and_then(|x| x.as_str())
                .ok_or_else(|| ClientError::InvalidJson {
                    url: url.clone(),
                    detail: "no `version` field".into(),
                })?;
        Ok(Version {
            version: sanitize(version, None),
            perm_sync: v.get("perm_sync").and_then(|x| x.as_bool()),
            uuid: v
                .get("uuid")
                .and_then(|x| x.as_str())
                .map(|s| sanitize(s, None)),
            key_expires: header_str(&resp.headers, "x-auth-key-expiration")
                .map(|s| sanitize(s, None)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let tls = TlsSettings {
            pins: vec![crate::tls::Pin::of_spki(b"x")],
            ca_file: None,
        };
        let key = shared_key(ApiKey::from_secret("a".repeat(40).into()));
        for bad in [
            "http://misp.example",
            "https://user:pw@misp.example",
            "https://misp.example/?a=1",
            "nonsense",
        ] {
            let err =
                MispClient::new(bad, &tls, Duration::from_secs(1), key.clone(), 1000).unwrap_err();
            assert!(matches!(err, ClientError::BadUrl { .. }), "{bad}: {err}");
        }
    }
}
