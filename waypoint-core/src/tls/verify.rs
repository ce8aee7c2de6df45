//! rustls configurations for HBONE and the SPIFFE-aware certificate verifiers they use.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::{Resumption, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::certs::{single_identity, spiffe_uris};
use super::server_check::{CheckedServerVerifier, ServerCertCheck};
use super::{ALPN_H2, TlsError, WorkloadCerts};
use crate::identity::SpiffeId;

/// The aws-lc-rs provider restricted to the HBONE cipher suites (TLS 1.3 AES-256-GCM and
/// AES-128-GCM, as ztunnel offers).
pub(super) fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        ..aws_lc_rs::default_provider()
    }
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    Ok(Arc::new(store))
}

fn reject(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        TlsError::PeerIdentity(reason),
    ))))
}

/// The identity a client expects the server to prove.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedIdentity {
    /// Exactly this workload identity.
    Exact(SpiffeId),
    /// Any service account of this namespace: for endpoints whose service account is unknown.
    Namespace {
        /// The trust domain the identity must belong to.
        trust_domain: String,
        /// The namespace the identity must belong to.
        namespace: String,
    },
}

impl ExpectedIdentity {
    /// True when `id` is acceptable.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            ExpectedIdentity::Exact(want) => want == id,
            ExpectedIdentity::Namespace {
                trust_domain,
                namespace,
            } => id.trust_domain() == trust_domain && id.namespace() == namespace,
        }
    }
}

impl std::fmt::Display for ExpectedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedIdentity::Exact(id) => write!(f, "{id}"),
            ExpectedIdentity::Namespace {
                trust_domain,
                namespace,
            } => write!(f, "spiffe://{trust_domain}/ns/{namespace}/sa/*"),
        }
    }
}

/// Server-side verifier of client certificates: the chain must root in the trust bundle
/// (rustls/webpki path validation, including validity dates and the clientAuth usage), and the
/// leaf must carry exactly one Istio SPIFFE identity from an allowed trust domain.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domains: Vec<String>,
}

impl SpiffeClientVerifier {
    /// A verifier trusting `roots` and accepting identities of `trust_domains` (not empty).
    pub(super) fn new(
        roots: &[CertificateDer<'static>],
        trust_domains: Vec<String>,
    ) -> Result<Self, TlsError> {
        if trust_domains.is_empty() {
            return Err(TlsError::Rustls(rustls::Error::General(
                "client verifier needs at least one trust domain".to_owned(),
            )));
        }
        let inner =
            WebPkiClientVerifier::builder_with_provider(root_store(roots)?, Arc::new(provider()))
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        Ok(SpiffeClientVerifier {
            inner,
            trust_domains,
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The signature path first: nothing in an unverified certificate is worth reading.
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let id =
            single_identity(end_entity, "client certificate").map_err(|e| reject(e.to_string()))?;
        if !self.trust_domains.iter().any(|td| td == id.trust_domain()) {
            return Err(reject(format!(
                "client identity {id} is not in an accepted trust domain ({})",
                self.trust_domains.join(", ")
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the HBONE client accepts of a server: the chain must root in the trust bundle, and
/// some SPIFFE URI SAN of the leaf must match one of the expected identities. The server name
/// is deliberately not checked: HBONE dials an IP and sends no SNI, so identity is the SAN.
#[derive(Debug)]
pub struct SpiffeServerCheck {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    expected: Vec<ExpectedIdentity>,
}

/// Client-side verifier of server certificates: [`SpiffeServerCheck`] with the handshake
/// signatures verified by the HBONE provider's algorithms.
pub type SpiffeServerVerifier = CheckedServerVerifier<SpiffeServerCheck>;

impl SpiffeServerVerifier {
    /// A verifier trusting `roots` and accepting a server proving one of `expected`.
    pub fn new(
        roots: &[CertificateDer<'static>],
        expected: Vec<ExpectedIdentity>,
    ) -> Result<Self, TlsError> {
        let algorithms = provider().signature_verification_algorithms;
        let check = SpiffeServerCheck {
            roots: root_store(roots)?,
            algorithms,
            expected,
        };
        Ok(CheckedServerVerifier::with_check(check, algorithms))
    }
}

impl ServerCertCheck for SpiffeServerCheck {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented =
            spiffe_uris(end_entity, "server certificate").map_err(|e| reject(e.to_string()))?;
        // URIs that are not Istio identities can never match; they are still shown in the error.
        let ok = presented
            .iter()
            .filter_map(|uri| uri.parse::<SpiffeId>().ok())
            .any(|id| self.expected.iter().any(|want| want.matches(&id)));
        if ok {
            return Ok(());
        }
        let shown = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        Err(reject(format!(
            "server presented identities [{}], expected one of [{}]",
            shown(presented),
            shown(self.expected.iter().map(ToString::to_string).collect()),
        )))
    }
}

/// The HBONE server configuration: TLS 1.3 with AES-GCM, ALPN exactly `h2`, a client
/// certificate required and checked by `SpiffeClientVerifier`, no session resumption.
///
/// `trust_domains` lists the trust domains clients may belong to; empty means the server's own
/// trust domain only (what ztunnel enforces).
///
/// rustls lets a client that offers no ALPN at all finish the handshake; the HBONE server should
/// refuse such connections with [`negotiated_h2`].
pub fn server_config(
    certs: &WorkloadCerts,
    trust_domains: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let trust_domains = if trust_domains.is_empty() {
        vec![certs.identity.trust_domain().to_owned()]
    } else {
        trust_domains.to_vec()
    };
    let verifier = SpiffeClientVerifier::new(&certs.roots, trust_domains)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(certs.chain.clone(), certs.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The HBONE client configuration: TLS 1.3 with AES-GCM, ALPN `h2`, no SNI, no resumption,
/// `certs` presented as the client certificate, and the server checked by
/// [`SpiffeServerVerifier`] against `expected`. The server name given to the connector is
/// ignored by the verifier (pass the destination IP).
pub fn client_config(
    certs: &WorkloadCerts,
    expected: Vec<ExpectedIdentity>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let verifier = SpiffeServerVerifier::new(&certs.roots, expected)?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(certs.chain.clone(), certs.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The single SPIFFE identity of the peer's leaf certificate, once the handshake is done.
/// `None` when the peer sent no certificate or its leaf does not carry exactly one valid id
/// (which the verifiers above already refuse).
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    single_identity(leaf, "peer certificate").ok()
}

/// True when the handshake settled on ALPN `h2`, the only protocol HBONE speaks.
pub fn negotiated_h2(conn: &CommonState) -> bool {
    conn.alpn_protocol() == Some(ALPN_H2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_identity_matching() {
        let id = SpiffeId::new("cluster.local", "shop", "cart").unwrap();
        assert!(ExpectedIdentity::Exact(id.clone()).matches(&id));
        let other = SpiffeId::new("cluster.local", "shop", "web").unwrap();
        assert!(!ExpectedIdentity::Exact(id.clone()).matches(&other));
        let ns = ExpectedIdentity::Namespace {
            trust_domain: "cluster.local".to_owned(),
            namespace: "shop".to_owned(),
        };
        assert!(ns.matches(&id) && ns.matches(&other));
        assert!(!ns.matches(&SpiffeId::new("other.td", "shop", "cart").unwrap()));
        assert!(!ns.matches(&SpiffeId::new("cluster.local", "shop2", "cart").unwrap()));
        assert_eq!(ns.to_string(), "spiffe://cluster.local/ns/shop/sa/*");
    }

    #[test]
    fn provider_offers_only_hbone_suites() {
        let names: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            names,
            [
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            ]
        );
    }
}
