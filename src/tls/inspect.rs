//! `mispctl pin URL`: connect, complete a handshake (no request, no key), report the server's
//! pin, dates, and whether its chain validates without a pin.

use super::failure::{classify, from_rustls};
use super::{der, provider, root_store, verify, Pin, TlsError, TlsFailure};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
