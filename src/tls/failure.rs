//! Why a TLS connection failed, in the operator's terms, dug out of hyper's and rustls's error
//! wrappers.

use super::{Pin, PinMismatch};
use rustls::CertificateError;
use std::fmt;

/// Why a TLS connection was refused, in the operator's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    PinMismatch {
        presented: Pin,
        expected: Vec<Pin>,
    },
    UnknownIssuer,
    Expired,
    NotYetValid,
    HostnameMismatch {
        detail: String,
    },
    /// Protocol version, cipher, alert, bad handshake signature...
    Handshake {
        detail: String,
    },
    Timeout,
    /// A TLS error not in the classes above.
    Other {
        detail: String,
    },
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::PinMismatch { presented, expected } => {
                let expected: Vec<String> = expected.iter().map(Pin::to_string).collect();
                write!(
                    f,
                    "certificate pin mismatch: the server presented {presented}, configured pins are [{}]; \
                     if the server's key was rotated on purpose, check it out of band and add the new pin \
                     (`mispctl pin URL`), otherwise treat this as a possible interception",
                    expected.join(", ")
                )
            }
            TlsFailure::UnknownIssuer => f.write_str(
                "certificate issuer unknown: the chain does not lead to a system root or to `ca-file`; \
                 set `ca-file` to the issuing CA, or pin the server's key (`mispctl pin URL`)",
            ),
            TlsFailure::Expired => f.write_str("the server's certificate has expired (or the clock is wrong); renew it"),
            TlsFailure::NotYetValid => {
                f.write_str("the server's certificate is not valid yet; check this host's clock and the certificate's dates")
            }
            TlsFailure::HostnameMismatch { detail } => write!(
                f,
                "the certificate is not valid for the host name in the URL ({detail}); use the name the certificate was issued for"
            ),
            TlsFailure::Handshake { detail } => write!(
                f,
                "TLS handshake failed ({detail}); mispd speaks TLS 1.2 and 1.3 only, check the server's TLS settings"
            ),
            TlsFailure::Timeout => f.write_str("timed out"),
            TlsFailure::Other { detail } => write!(f, "TLS error: {detail}"),
        }
    }
}

impl TlsFailure {
    /// A short stable label for status output and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            TlsFailure::PinMismatch { .. } => "pin-mismatch",
            TlsFailure::UnknownIssuer => "unknown-issuer",
            TlsFailure::Expired => "expired",
            TlsFailure::NotYetValid => "not-yet-valid",
            TlsFailure::HostnameMismatch { .. } => "hostname-mismatch",
            TlsFailure::Handshake { .. } => "handshake",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Other { .. } => "tls",
        }
    }
}

pub(super) fn from_rustls(err: &rustls::Error) -> TlsFailure {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsFailure::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => TlsFailure::NotYetValid,
            CertificateError::NotValidForName => TlsFailure::HostnameMismatch { detail: "no matching name".into() },
            CertificateError::NotValidForNameContext { expected, presented } => TlsFailure::HostnameMismatch {
                detail: format!("expected {expected:?}, certificate names {presented:?}"),
            },
            CertificateError::Other(o) => match o.0.downcast_ref::<PinMismatch>() {
                Some(p) => TlsFailure::PinMismatch { presented: p.presented, expected: p.expected.clone() },
                None if format!("{o:?}").contains("CaUsedAsEndEntity") => TlsFailure::Other {
                    detail: "the server's certificate is a CA certificate (typical of `openssl req -x509`); \
                             pin its key (`mispctl pin URL`) or give it a proper server certificate"
                        .into(),
                },
                None => TlsFailure::Other { detail: format!("invalid certificate: {o:?}") },
            },
            other => TlsFailure::Other { detail: format!("invalid certificate: {other:?}") },
        },
        E::AlertReceived(alert) => TlsFailure::Handshake { detail: format!("the server sent alert {alert:?}") },
        E::PeerIncompatible(p) => TlsFailure::Handshake { detail: format!("incompatible server: {p:?}") },
        E::PeerMisbehaved(p) => TlsFailure::Handshake { detail: format!("server misbehaved: {p:?}") },
        E::InvalidMessage(m) => TlsFailure::Handshake { detail: format!("invalid TLS message: {m:?}") },
        other => TlsFailure::Handshake { detail: other.to_string() },
    }
}

/// Finds the TLS failure inside an error chain (hyper wraps rustls errors twice in
/// `io::Error`, whose `source()` skips the wrapped error: `get_ref()` is needed). `None` when
/// the chain holds no TLS error (connection refused, DNS...).
pub fn find_tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut depth = 0;
    while let Some(e) = cur {
        depth += 1;
        if depth > 32 {
            break;
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(from_rustls(r));
        }
        if let Some(p) = e.downcast_ref::<PinMismatch>() {
            return Some(TlsFailure::PinMismatch {
                presented: p.presented,
                expected: p.expected.clone(),
            });
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                cur = Some(inner as &(dyn std::error::Error + 'static));
                continue;
            }
        }
        cur = e.source();
    }
    None
}

/// Classifies any error from a TLS connection attempt; errors with no TLS cause become `Other`
/// (or `Timeout` for a timed-out I/O error).
pub fn classify(err: &(dyn std::error::Error + 'static)) -> TlsFailure {
    if let Some(f) = find_tls_failure(err) {
        return f;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return TlsFailure::Timeout;
            }
        }
        cur = e.source();
    }
    TlsFailure::Other {
        detail: error_chain(err),
    }
}

/// `a: b: c` for an error and its sources (io::Error wrappers unwrapped).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if parts.last() != Some(&s) && !s.is_empty() {
            parts.push(s);
        }
        if parts.len() > 8 {
            break;
        }
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn classify_walks_io_wrappers() {
        let pin = Pin::of_spki(b"x");
        let rustls_err = rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch {
                presented: pin,
                expected: vec![Pin::of_spki(b"y")],
            })),
        ));
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let outer = std::io::Error::other(inner);
        match classify(&outer) {
            TlsFailure::PinMismatch {
                presented,
                expected,
            } => {
                assert_eq!(presented, pin);
                assert_eq!(expected, vec![Pin::of_spki(b"y")]);
            }
            other => panic!("{other:?}"),
        }
        let expired =
            std::io::Error::other(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert_eq!(classify(&expired), TlsFailure::Expired);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(find_tls_failure(&refused), None);
        assert_eq!(
            classify(&std::io::Error::from(std::io::ErrorKind::TimedOut)),
            TlsFailure::Timeout
        );
    }
}
