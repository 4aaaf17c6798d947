//! Pinned TLS for every connection mispd opens (MISP servers, https feeds, `mispctl pin`).
//! rustls with the ring provider, TLS 1.2 and 1.3 only, system roots plus an optional CA file,
//! and SHA-256 public-key pins in curl's `sha256//BASE64` form. There is no switch that turns
//! verification off: a self-signed MISP is trusted by pinning it (see `docs/security.md`).

pub mod der;
mod failure;
mod inspect;
mod verify;

pub use failure::{classify, error_chain, find_tls_failure, TlsFailure};
pub use inspect::{fetch_pin, host_port, PinReport};
pub use verify::PinMismatch;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
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

pub(super) fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
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

pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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
}
