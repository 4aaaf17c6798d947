//! Pinned TLS for every connection mispd opens (MISP servers, https feeds, `mispctl pin`).
//! rustls with the ring provider, TLS 1.2 and 1.3 only, system roots plus an optional CA file,
//! and SHA-256 public-key pins in curl's `sha256//BASE64` form. There is no switch that turns
//! verification off: a self-signed MISP is trusted by pinning it (see `docs/security.md`).

pub mod der;
mod verify;

pub use verify::PinMismatch;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// SHA-256 of a certificate's DER SubjectPublicKeyInfo: what `curl --pinnedpubkey sha256//...`
/// and `openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary |
/// base64` compute. Pinning the key (not the certificate) survives renewals that keep the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin([u8; 32]);

impl Pin {
    /// The pin of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Pin {
        Pin(Sha256::digest(spki_der).into())
    }

    /// The pin of a DER certificate's public key.
    pub fn of_cert(cert_der: &[u8]) -> Result<Pin, TlsError> {
        let der = CertificateDer::from(cert_der);
        let parsed = rustls::server::ParsedCertificate::try_from(&der).map_err(|e| {
            TlsError::BadCertificate {
                reason: e.to_string(),
            }
        })?;
        Ok(Pin::of_spki(parsed.subject_public_key_info().as_ref()))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256//{}", B64.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

impl FromStr for Pin {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Pin, TlsError> {
        let bad = |reason: &str| TlsError::InvalidPin {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let b64 = s.trim().strip_prefix("sha256//").ok_or_else(|| {
            bad("a pin starts with `sha256//` followed by base64 (get it with `mispctl pin URL`)")
        })?;
        let bytes = B64
            .decode(b64)
            .map_err(|_| bad("the part after `sha256//` is not valid base64"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("a SHA-256 pin is 32 bytes (44 base64 characters)"))?;
        Ok(Pin(arr))
    }
}

impl serde::Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pin, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a source's TLS trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// When non-empty, the server's key must match one of these (several allow rotation).
    pub pins: Vec<Pin>,
    /// PEM certificates trusted in addition to the system roots (a private CA, or the server's
    /// own self-signed certificate).
    pub ca_file: Option<PathBuf>,
}

/// Errors building a TLS configuration or inspecting a server.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid pin {input:?}: {reason}")]
    InvalidPin { input: String, reason: String },
    #[error("cannot read ca-file {}: {source}; check the path and that mispd may read it", path.display())]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ca-file {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    CaFileEmpty { path: PathBuf },
    #[error("ca-file {}: {reason}", path.display())]
    CaFileBad { path: PathBuf, reason: String },
    #[error("no trust anchors: the system has no CA certificates and neither `ca-file` nor `pins` is set; set one of them")]
    NoTrustAnchors,
    #[error("cannot parse the certificate: {reason}")]
    BadCertificate { reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("TLS with {addr} failed: {failure}")]
    Handshake { addr: String, failure: TlsFailure },
    #[error("no answer from {addr} within {}", humantime::format_duration(*timeout))]
    Timeout { addr: String, timeout: Duration },
    #[error("the server {addr} sent no certificate")]
    NoCertificate { addr: String },
}

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

fn from_rustls(err: &rustls::Error) -> TlsFailure {
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

fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let result = rustls_native_certs::load_native_certs();
        for e in &result.errors {
            tracing::warn!("loading system CA certificates: {e}");
        }
        result.certs
    })
}

/// Reads the PEM certificates of a ca-file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::CaFileBad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::CaFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_ca_file(path)? {
            roots.add(cert).map_err(|e| TlsError::CaFileBad {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for one source: TLS 1.2/1.3, system roots + ca-file, pins.
pub fn client_config(settings: &TlsSettings) -> Result<ClientConfig, TlsError> {
    let roots = root_store(settings.ca_file.as_deref())?;
    if roots.is_empty() && settings.pins.is_empty() {
        return Err(TlsError::NoTrustAnchors);
    }
    let provider = provider();
    let verifier = verify::PinningVerifier {
        roots: Arc::new(roots),
        pins: settings.pins.clone(),
        provider: provider.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// What `mispctl pin URL` reports about a server.
#[derive(Clone, Debug)]
pub struct PinReport {
    pub host: String,
    pub port: u16,
    /// The leaf's pin: what to put in `pins`.
    pub pin: Pin,
    /// How many certificates the server sent (leaf included).
    pub chain_len: usize,
    pub info: Option<der::CertInfo>,
    /// `None` if the chain validates against the system roots (+ ca-file) for this host name.
    pub verification_error: Option<TlsFailure>,
}

impl fmt::Display for PinReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "server:     {}:{}", self.host, self.port)?;
        writeln!(f, "pin:        {}", self.pin)?;
        if let Some(info) = &self.info {
            writeln!(f, "subject:    {}", info.subject)?;
            writeln!(f, "issuer:     {}", info.issuer)?;
            writeln!(f, "not before: {}", crate::model::rfc3339(info.not_before))?;
            writeln!(f, "not after:  {}", crate::model::rfc3339(info.not_after))?;
        }
        writeln!(f, "sent:       {} certificate(s)", self.chain_len)?;
        match &self.verification_error {
            None => writeln!(
                f,
                "chain:      valid for this host name against the system roots (+ ca-file)"
            ),
            Some(e) => writeln!(f, "chain:      NOT valid without a pin: {e}"),
        }?;
        write!(
            f,
            "Check this pin out of band (e.g. `openssl x509 -pubkey` on the MISP host) before trusting it."
        )
    }
}

/// Accepts any certificate but records what the real verification says, for `mispctl pin`.
/// It never carries data: the connection is closed right after the handshake.
#[derive(Debug)]
struct Inspector {
    real: verify::PinningVerifier,
    seen: Mutex<Option<(Vec<CertificateDer<'static>>, Option<TlsFailure>)>>,
}

impl rustls::client::danger::ServerCertVerifier for Inspector {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verdict = self
            .real
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .err()
            .map(|e| from_rustls(&e));
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((chain, verdict));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.real.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.real.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.real.supported_verify_schemes()
    }
}

/// Host and port of an `https://` URL.
pub fn host_port(url: &str) -> Result<(String, u16), TlsError> {
    let bad = |reason: &str| TlsError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(bad("only https:// URLs are supported"));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(bad("no host")),
    };
    Ok((host, parsed.port_or_known_default().unwrap_or(443)))
}

/// Connects to `url`, completes a TLS handshake and reports the leaf's pin and whether the
/// chain validates against the system roots (+ `ca_file`).
pub async fn fetch_pin(
    url: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<PinReport, TlsError> {
    let (host, port) = host_port(url)?;
    let addr = format!("{host}:{port}");
    let server_name = ServerName::try_from(host.clone()).map_err(|e| TlsError::Url {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let provider = provider();
    let inspector = Arc::new(Inspector {
        real: verify::PinningVerifier {
            roots: Arc::new(root_store(ca_file)?),
            pins: Vec::new(),
            provider: provider.clone(),
        },
        seen: Mutex::new(None),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(inspector.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| TlsError::Connect {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| TlsError::Handshake {
                addr: addr.clone(),
                failure: classify(&e),
            })
    };
    let stream = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| TlsError::Timeout {
            addr: addr.clone(),
            timeout,
        })??;
    drop(stream);
    let seen = inspector.seen.lock().ok().and_then(|mut s| s.take());
    let Some((chain, verification_error)) = seen else {
        return Err(TlsError::NoCertificate { addr });
    };
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::NoCertificate { addr: addr.clone() })?;
    let pin = Pin::of_cert(leaf.as_ref())?;
    Ok(PinReport {
        host,
        port,
        pin,
        chain_len: chain.len(),
        info: der::parse(leaf.as_ref()),
        verification_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_round_trip() {
        let pin = Pin::of_spki(b"not really an spki");
        let text = pin.to_string();
        assert!(text.starts_with("sha256//"));
        assert_eq!(text.len(), "sha256//".len() + 44);
        assert_eq!(text.parse::<Pin>().unwrap(), pin);
    }

    #[test]
    fn bad_pins_are_refused_with_reason() {
        for (input, needle) in [
            ("abc", "starts with `sha256//`"),
            ("sha1//AAAA", "starts with `sha256//`"),
            ("sha256//!!!", "not valid base64"),
            ("sha256//AAAA", "32 bytes"),
        ] {
            let err = input.parse::<Pin>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

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

    #[test]
    fn ca_file_problems_name_the_file() {
        let dir = std::env::temp_dir().join(format!("mispd-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = client_config(&TlsSettings {
            pins: vec![],
            ca_file: Some(missing.clone()),
        })
        .unwrap_err();
        assert!(
            matches!(err, TlsError::CaFile { .. }) && err.to_string().contains("missing.pem"),
            "{err}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(
            &empty,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = client_config(&TlsSettings {
            pins: vec![],
            ca_file: Some(empty),
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::CaFileEmpty { .. }), "{err:?}");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config(&TlsSettings {
            pins: vec![],
            ca_file: Some(garbage),
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::CaFileBad { .. }), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_https_urls() {
        assert!(host_port("http://misp.example").is_err());
        assert_eq!(
            host_port("https://misp.example").unwrap(),
            ("misp.example".into(), 443)
        );
        assert_eq!(
            host_port("https://[::1]:8443/x").unwrap(),
            ("::1".into(), 8443)
        );
    }
}
