//! A rustls server-certificate verifier built from one decision: whether the certificate the
//! server presented is acceptable. rustls asks a verifier four things; three of them (the
//! handshake signatures and the schemes offered) have one right answer given a provider's
//! algorithms, so they are written once here and every client verifier in the workspace (the
//! HBONE SPIFFE check, the Kubernetes client's `insecure-skip-tls-verify`, the conformance
//! runner's pinned certificate) only says what it accepts.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// What a client accepts of the certificate chain a server presents. The server name is not
/// passed: none of our clients checks it (HBONE dials an IP and identifies by SPIFFE SAN).
pub trait ServerCertCheck: std::fmt::Debug + Send + Sync {
    /// `Ok` accepts the chain; an error (usually [`rustls::Error::InvalidCertificate`]) ends
    /// the handshake with it.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error>;
}

/// A [`ServerCertVerifier`] that accepts what its [`ServerCertCheck`] accepts and verifies the
/// handshake signatures with a provider's algorithms.
#[derive(Debug)]
pub struct CheckedServerVerifier<C> {
    check: C,
    algorithms: WebPkiSupportedAlgorithms,
}

impl<C> CheckedServerVerifier<C> {
    /// A verifier deciding with `check` and verifying signatures with `algorithms` (a
    /// provider's `signature_verification_algorithms`).
    pub fn with_check(check: C, algorithms: WebPkiSupportedAlgorithms) -> Self {
        CheckedServerVerifier { check, algorithms }
    }
}

impl<C: ServerCertCheck> ServerCertVerifier for CheckedServerVerifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check.check(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
