//! Certificates for the test servers, made with rcgen at test time.

use mispd::tls::Pin;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};

/// A server certificate (with its chain) and key.
pub struct TestCert {
    /// Leaf first, then intermediates to send.
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
}

impl TestCert {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn pin(&self) -> Pin {
        Pin::of_cert(self.leaf().as_ref()).expect("test certificate parses")
    }

    /// Writes the leaf certificate as PEM (to use it as a ca-file).
    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }

    /// Writes the leaf PEM and the key PEM (for `openssl s_server`).
    pub fn write_pem_and_key(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = self.write_pem(dir, "server.crt");
        let key = dir.join("server.key");
        let b64 = base64_lines(&self.key_der);
        std::fs::write(
            &key,
            format!("-----BEGIN PRIVATE KEY-----\n{b64}-----END PRIVATE KEY-----\n"),
        )
        .unwrap();
        (cert, key)
    }
}

fn base64_lines(data: &[u8]) -> String {
    use base64::Engine as _;
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect()
}

fn params(names: &[&str]) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("test"));
    p.distinguished_name
        .push(DnType::OrganizationName, "mispd tests");
    p
}

fn finish(p: CertificateParams) -> TestCert {
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    TestCert {
        chain: vec![cert.der().clone()],
        key_der: key.serialize_der(),
        cert_pem: cert.pem(),
    }
}

/// A self-signed server certificate for these names (use `localhost`).
pub fn self_signed(names: &[&str]) -> TestCert {
    finish(params(names))
}

/// A self-signed certificate that also says CA:TRUE, as `openssl req -x509` makes by default.
pub fn self_signed_ca_flag(names: &[&str]) -> TestCert {
    let mut p = params(names);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    finish(p)
}

/// A self-signed certificate that expired in 2020.
pub fn expired(names: &[&str]) -> TestCert {
    let mut p = params(names);
    p.not_before = rcgen::date_time_ymd(2019, 1, 1);
    p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    finish(p)
}

/// A self-signed certificate valid from 2090.
pub fn not_yet_valid(names: &[&str]) -> TestCert {
    let mut p = params(names);
    p.not_before = rcgen::date_time_ymd(2090, 1, 1);
    p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    finish(p)
}

/// A private CA that signs leaves.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        TestCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    pub fn pin(&self) -> Pin {
        Pin::of_cert(self.cert_der.as_ref()).unwrap()
    }

    /// A leaf for these names signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> TestCert {
        let key = KeyPair::generate().unwrap();
        let cert = params(names).signed_by(&key, &self.issuer).unwrap();
        TestCert {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
        }
    }

    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }
}
