//! The MISP REST client: one pinned-TLS HTTP/1.1 connection pool per source, a deadline and a
//! size cap on every request, no redirects, and the API key added only to the request that
//! goes to the configured host.

use super::error::ClientError;
use super::wire;
use crate::credentials::ApiKey;
use crate::model::Attribute;
use crate::tls::{self, TlsSettings};
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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

/// What came back, before interpretation.
pub(crate) struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Environment variables naming a proxy that would apply to `host` (mispd refuses them; see
/// docs/security.md).
pub fn proxy_env_for(host: &str) -> Option<String> {
    // Loopback never goes through a proxy.
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return None;
    }
    let no_proxy = std::env::var("no_proxy")
        .or_else(|_| std::env::var("NO_PROXY"))
        .unwrap_or_default();
    let exempt = no_proxy.split(',').map(str::trim).any(|n| {
        !n.is_empty()
            && (n == "*"
                || host == n.trim_start_matches('.')
                || host.ends_with(&format!(".{}", n.trim_start_matches('.'))))
    });
    if exempt {
        return None;
    }
    ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
        .into_iter()
        .find(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
        .map(str::to_string)
}

/// The shared HTTP machinery of the MISP client and the https feed reader.
#[derive(Clone)]
pub(crate) struct Transport {
    pub base: url::Url,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub timeout: Duration,
    pub max_bytes: usize,
}

impl Transport {
    pub fn new(
        base_url: &str,
        tls: &TlsSettings,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let mut base = url::Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if base.scheme() != "https" {
            return Err(bad(
                "only https:// is supported (the API key and the data need TLS)",
            ));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad(
                "credentials in the URL are not allowed; use the credential file",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("no query or fragment, just the MISP base URL"));
        }
        let host = base.host_str().ok_or_else(|| bad("no host"))?.to_string();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        if let Some(var) = proxy_env_for(&host) {
            return Err(ClientError::ProxyUnsupported { var });
        }
        let config = tls::client_config(tls).map_err(|e| ClientError::TlsConfig {
            url: base_url.to_string(),
            message: e.to_string(),
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(https);
        Ok(Transport {
            base,
            client,
            timeout,
            max_bytes,
        })
    }

    pub fn url(&self, path: &str) -> Result<url::Url, ClientError> {
        self.base.join(path).map_err(|e| ClientError::BadUrl {
            url: self.base.to_string(),
            reason: e.to_string(),
        })
    }

    /// Sends the request and reads the whole body, all within the deadline and the size cap.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<RawResponse, ClientError> {
        let url = display_url(req.uri());
        let limit = self.max_bytes;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| request_error(&url, &e))?;
            let (parts, mut body) = resp.into_parts();
            if let Some(len) = parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            {
                if len > limit as u64 {
                    return Err(ClientError::TooLarge {
                        url: url.clone(),
                        limit,
                    });
                }
            }
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    message: tls::error_chain(&e),
                })?;
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err(ClientError::TooLarge {
                            url: url.clone(),
                            limit,
                        });
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok(RawResponse {
                status: parts.status,
                headers: parts.headers,
                body: buf.freeze(),
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                url,
                after: self.timeout,
            }),
        }
    }
}

/// The URL without anything but scheme, host, port and path, for messages.
fn display_url(uri: &hyper::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    )
}

fn request_error(url: &str, err: &hyper_util::client::legacy::Error) -> ClientError {
    if let Some(failure) = tls::find_tls_failure(err) {
        return ClientError::Tls {
            url: url.to_string(),
            failure,
        };
    }
    let message = tls::error_chain(err);
    if err.is_connect() {
        ClientError::Connect {
            url: url.to_string(),
            message,
        }
    } else {
        ClientError::Transport {
            url: url.to_string(),
            message,
        }
    }
}

/// Makes server-supplied text safe for a message: the key (should a hostile server echo it)
/// becomes `***`, control characters go, and it is shortened.
pub(crate) fn sanitize(text: &str, key: Option<&str>) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if let Some(k) = key.filter(|k| !k.is_empty()) {
        s = s.replace(k, "***");
    }
    const MAX: usize = 300;
    if s.chars().count() > MAX {
        s = s.chars().take(MAX).collect::<String>() + "...";
    }
    s.trim().to_string()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// MISP's error body `{"name":..,"message":..,"url":..}`, or a snippet of whatever came.
fn error_message(body: &[u8], key: Option<&str>) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let m = v
                .get("message")
                .and_then(|m| m.as_str())
                .or_else(|| v.get("name").and_then(|m| m.as_str()))?;
            Some(m.to_string())
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    let s = sanitize(&text, key);
    if s.is_empty() {
        "no message".into()
    } else {
        s
    }
}

fn retry_after(headers: &HeaderMap) -> Duration {
    let now = crate::model::now_epoch();
    let secs = header_str(headers, "retry-after")
        .and_then(|v| v.parse::<i64>().ok())
        .or_else(|| {
            // MISP sends seconds until the window resets; accept an epoch time as well.
            header_str(headers, "x-rate-limit-reset")
                .and_then(|v| v.parse::<i64>().ok())
                .map(|v| if v > 1_000_000_000 { v - now } else { v })
        })
        .unwrap_or(60);
    Duration::from_secs(secs.clamp(1, 3600) as u64)
}

/// Maps a non-success answer (or a non-JSON success) to an error; `Ok` for a JSON 2xx.
pub(crate) fn check_response(
    url: &str,
    resp: &RawResponse,
    key: Option<&str>,
) -> Result<(), ClientError> {
    let status = resp.status;
    if status.is_redirection() {
        let location = header_str(&resp.headers, LOCATION.as_str()).unwrap_or("");
        return Err(ClientError::Redirect {
            url: url.to_string(),
            status: status.as_u16(),
            location: sanitize(location, key),
        });
    }
    if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
        let message = error_message(&resp.body, key);
        let key_expired = message.to_ascii_lowercase().contains("expired");
        return Err(ClientError::AuthFailed {
            message,
            key_expired,
        });
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ClientError::RateLimited {
            retry_after: retry_after(&resp.headers),
        });
    }
    if status.is_server_error() {
        return Err(ClientError::Server {
            status: status.as_u16(),
            message: error_message(&resp.body, key),
        });
    }
    if !status.is_success() {
        return Err(ClientError::Http {
            url: url.to_string(),
            status: status.as_u16(),
            message: error_message(&resp.body, key),
        });
    }
    let content_type = header_str(&resp.headers, CONTENT_TYPE.as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.contains("json") {
        // Feeds served as text/plain or octet-stream are still JSON if they parse; an HTML
        // page is the classic login-page-instead-of-API mistake.
        let looks_html = content_type.contains("html")
            || resp
                .body
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'<');
        if looks_html || content_type.is_empty() && resp.body.is_empty() {
            return Err(ClientError::NotJson {
                url: url.to_string(),
                status: status.as_u16(),
                content_type,
            });
        }
    }
    Ok(())
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
    fn sanitize_hides_key_and_controls() {
        let key = "k".repeat(40);
        let s = sanitize(&format!("bad key {key}\n\x1b[31m"), Some(&key));
        assert_eq!(s, "bad key ***  [31m");
        assert!(sanitize(&"x".repeat(1000), None).len() < 310);
    }

    #[test]
    fn retry_after_sources() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(60));
        h.insert("x-rate-limit-reset", HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h), Duration::from_secs(120));
        h.insert("retry-after", HeaderValue::from_static("5"));
        assert_eq!(retry_after(&h), Duration::from_secs(5));
    }

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
