//! The HTTP machinery shared by the MISP client and the https feed reader: a pinned-TLS
//! connection pool, one deadline per request, a streamed body with a size cap, no redirects,
//! and the mapping of MISP's answers to [`ClientError`]s with server text made safe.

use super::error::ClientError;
use crate::tls::{self, TlsSettings};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

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

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

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
}
