//! Errors of the MISP client and the feed reader. Every message says what to check or do, and
//! none ever contains the API key (server-supplied text is redacted and shortened).

use crate::tls::TlsFailure;
use std::path::PathBuf;
use std::time::Duration;

fn dur(d: &Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1)))
}

/// A failed request to a MISP server or an https feed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("invalid source URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "the API key contains characters that cannot go in an HTTP header; fix the credential file"
    )]
    BadKey,
    #[error("{var} is set, but mispd does not use HTTP proxies (the pinned TLS connection goes straight to the server); unset {var} in mispd's environment or list the host in no_proxy")]
    ProxyUnsupported { var: String },
    #[error("TLS configuration for {url}: {message}")]
    TlsConfig { url: String, message: String },
    #[error("TLS with {url} refused: {failure}")]
    Tls { url: String, failure: TlsFailure },
    #[error("{url} did not answer within {} (connect, TLS, headers and body together); check that the server is up, or raise `timeout`", dur(.after))]
    Timeout { url: String, after: Duration },
    #[error("cannot connect to {url}: {message}; check the host name, port, DNS and firewall")]
    Connect { url: String, message: String },
    #[error("the connection to {url} broke during the response: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered {status} redirecting to {location:?}; mispd does not follow redirects (the API key must not go elsewhere); use the final URL, or if it is /users/login the request lacked JSON headers or the URL is not MISP's API root")]
    Redirect {
        url: String,
        status: u16,
        location: String,
    },
    #[error("MISP refused the API key (403: {message}){}", if *.key_expired { "; the key has expired: create a new one in MISP and rotate the credential" } else { "; check the key, that its user is enabled and may use the API, and any IP restriction on the key" })]
    AuthFailed { message: String, key_expired: bool },
    #[error("MISP rate limit reached (429); retrying in {}", dur(.retry_after))]
    RateLimited { retry_after: Duration },
    #[error("MISP server error {status}: {message}; MISP may be out of memory or time for this query (lower `page-size`) or down")]
    Server { status: u16, message: String },
    #[error("{url} answered {status} with {content_type:?} instead of JSON; is the URL MISP's API root (not a login page or a proxy)?")]
    NotJson {
        url: String,
        status: u16,
        content_type: String,
    },
    #[error("invalid JSON from {url}: {detail}")]
    InvalidJson { url: String, detail: String },
    #[error("the response from {url} exceeds {limit} bytes; lower `page-size` or raise `max-response-bytes`")]
    TooLarge { url: String, limit: usize },
    #[error("{url} answered HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
}

impl ClientError {
    /// The TLS failure, if this is one (for status output).
    pub fn tls_failure(&self) -> Option<&TlsFailure> {
        match self {
            ClientError::Tls { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// Whether retrying later can help (as opposed to a configuration or trust problem).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. }
                | ClientError::Connect { .. }
                | ClientError::Transport { .. }
                | ClientError::RateLimited { .. }
                | ClientError::Server { .. }
                | ClientError::InvalidJson { .. }
        )
    }
}

/// A failure reading a static feed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("feed location {location:?}: {reason}")]
    BadLocation { location: String, reason: String },
    #[error("refusing event id {uuid:?}: feed events are named by UUID")]
    BadUuid { uuid: String },
    #[error("feed file {} cannot be read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("feed file {what} is larger than {limit} bytes; raise `max-response-bytes` if the feed is legitimate")]
    TooLarge { what: String, limit: usize },
    #[error("feed file {what} is not valid MISP JSON: {detail}")]
    Invalid { what: String, detail: String },
    #[error("feed event {uuid} is not in the feed (404)")]
    EventMissing { uuid: String },
}
