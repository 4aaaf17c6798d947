//! The certificate verifier: webpki first (chain, dates, host name), then the pins. A pinned
//! self-signed server may pass on its pin alone; see `docs/security.md` for why and when.

use super::{der, Pin};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore};
use std::fmt;
use std::sync::Arc;

/// The presented certificate's key is not one of the configured pins. Travels through rustls as
/// `CertificateError::Other` so that [`super::classify`] can report both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMismatch {
    pub presented: Pin,
    pub expected: Vec<Pin>,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected: Vec<String> = self.expected.iter().map(Pin::to_string).collect();
        write!(
            f,
            "the server's public key pin is {} but the configured pins are [{}]",
            self.presented,
            expected.join(", ")
        )
    }
}

impl std::error::Error for PinMismatch {}

#[derive(Debug)]
pub(super) struct PinningVerifier {
    pub roots: Arc<RootCertStore>,
    pub pins: Vec<Pin>,
    pub provider: Arc<CryptoProvider>,
}

impl PinningVerifier {
    fn check_pin(&self, end_entity: &ParsedCertificate<'_>) -> Result<(), Error> {
        if self.pins.is_empty() {
            return Ok(());
        }
        let presented = Pin::of_spki(end_entity.subject_public_key_info().as_ref());
        if self.pins.contains(&presented) {
            Ok(())
        } else {
            Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    presented,
                    expected: self.pins.clone(),
                })),
            )))
        }
    }

    /// Pin-only acceptance: the chain could not be built, but the key is pinned. The host name
    /// and the leaf's validity dates are still checked (handshake signatures are checked by
    /// `verify_tls1x_signature` as for any server).
    fn pin_only(
        &self,
        cert: &ParsedCertificate<'_>,
        der_bytes: &[u8],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), Error> {
        self.check_pin(cert)?;
        rustls::client::verify_server_name(cert, server_name)?;
        let info = der::parse(der_bytes)
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let now = now.as_secs() as i64;
        if now < info.not_before {
            return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        if now > info.not_after {
            return Err(Error::InvalidCertificate(CertificateError::Expired));
        }
        Ok(())
    }
}

/// Chain errors after which a pinned key may still be accepted: nobody we trust issued the
/// certificate (self-signed, or a private CA we were not given), or a self-signed certificate
/// that calls itself a CA (what `openssl req -x509` makes by default). Nothing else: an expired
/// or misnamed certificate is refused whatever its pin.
fn pin_may_rescue(err: &Error) -> bool {
    match err {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => true,
        // webpki's CaUsedAsEndEntity reaches us only as an opaque `Other`.
        Error::InvalidCertificate(CertificateError::Other(o)) => {
            format!("{o:?}").contains("CaUsedAsEndEntity")
        }
        _ => false,
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        let chain = rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        );
        match chain {
            Ok(()) => {
                rustls::client::verify_server_name(&cert, server_name)?;
                self.check_pin(&cert)?;
            }
            Err(e) if !self.pins.is_empty() && pin_may_rescue(&e) => {
                self.pin_only(&cert, end_entity.as_ref(), server_name, now)?;
            }
            Err(e) => return Err(e),
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
