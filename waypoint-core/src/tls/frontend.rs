//! TLS termination for Gateway HTTPS listeners: one rustls `ServerConfig` per (Gateway address,
//! listener port), whose certificate resolver picks the listener by SNI. Built with the config
//! snapshot and immutable; the serving layer only looks a connection's destination up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::TlsInfo;

/// ALPN protocols an HTTPS listener offers, preferred first.
pub(crate) const FRONTEND_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS server configurations of every TLS-terminating Gateway address and port.
#[derive(Clone, Debug, Default)]
pub struct FrontendTls {
    by_destination: HashMap<SocketAddr, Arc<ServerConfig>>,
}

impl FrontendTls {
    /// A lookup over `configs`.
    pub fn new(configs: HashMap<SocketAddr, Arc<ServerConfig>>) -> Self {
        FrontendTls {
            by_destination: configs,
        }
    }

    /// The TLS configuration of connections to `destination`, when they are TLS-terminated.
    pub fn get(&self, destination: SocketAddr) -> Option<&Arc<ServerConfig>> {
        self.by_destination.get(&destination)
    }

    /// Every TLS-terminating destination, in no particular order.
    pub fn destinations(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.by_destination.keys().copied()
    }

    /// True when no listener terminates TLS.
    pub fn is_empty(&self) -> bool {
        self.by_destination.is_empty()
    }
}

/// Parses a PEM certificate chain and private key into a key rustls can serve, checking that
/// the key belongs to the first certificate. Errors name `chain_field`/`key_field`.
pub(crate) fn certified_key(
    chain_pem: &[u8],
    chain_field: &str,
    key_pem: &[u8],
    key_field: &str,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{chain_field}: bad PEM: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{chain_field}: no CERTIFICATE in the PEM"));
    }
    for (i, cert) in chain.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("{chain_field}: certificate {i} is not X.509: {e}"))?;
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("{key_field}: no usable PRIVATE KEY in the PEM: {e}"))?;
    let signing = aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_field}: unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        format!("{key_field}: the key does not belong to the {chain_field} certificate")
    })?;
    Ok(Arc::new(certified))
}

/// Picks the certificate of the listener a client names in SNI: exact hostname, else the
/// longest matching wildcard, else the listener without hostname. Hostnames are lower case.
#[derive(Debug, Default)]
pub(crate) struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)` for `*.example.com`, longest suffix first.
    wildcards: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Adds the certificate of a listener with `hostname` (`None`: every other name). The first
    /// listener added for a hostname keeps it.
    pub(crate) fn add(&mut self, hostname: Option<&str>, key: Arc<CertifiedKey>) {
        match hostname.map(str::to_ascii_lowercase) {
            None => {
                self.default.get_or_insert(key);
            }
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => {
                    if !self.wildcards.iter().any(|(s, _)| s == suffix) {
                        self.wildcards.push((suffix.to_owned(), key));
                        self.wildcards
                            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
                    }
                }
                None => {
                    self.exact.entry(h).or_insert(key);
                }
            },
        }
    }

    /// The certificate for `sni` (`None` when the client sent none).
    pub(crate) fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = sni else {
            return self.default.clone();
        };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&sni) {
            return Some(key.clone());
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
            .map(|(_, key)| key.clone())
            .or_else(|| self.default.clone())
    }

    /// The server configuration of one address: TLS 1.2 and 1.3 (aws-lc-rs), ALPN h2 and
    /// http/1.1, no client certificates.
    pub(crate) fn into_server_config(self) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(self));
        config.alpn_protocols = FRONTEND_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.select(hello.server_name())
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The client did not finish within the time allowed.
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The handshake failed (bad client hello, unknown SNI without a default listener, ...).
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// Terminates TLS on `io` with `config`, within `timeout`, and says what the client asked for.
pub(crate) async fn accept<S>(
    io: S,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> Result<(tokio_rustls::server::TlsStream<S>, TlsInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = tokio::time::timeout(timeout, acceptor.accept(io))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
        .map_err(HandshakeError::Failed)?;
    let (_, session) = stream.get_ref();
    let info = TlsInfo {
        sni: session.server_name().map(str::to_owned),
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
    };
    Ok((stream, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let pem = c.signing_key.serialize_pem();
        certified_key(c.cert.pem().as_bytes(), "crt", pem.as_bytes(), "key").unwrap()
    }

    #[test]
    fn sni_picks_exact_then_longest_wildcard_then_default() {
        let (exact, short, long, default) = (key("a"), key("b"), key("c"), key("d"));
        let mut r = SniResolver::default();
        r.add(Some("*.example.com"), short.clone());
        r.add(Some("A.Example.com"), exact.clone());
        r.add(Some("*.b.example.com"), long.clone());
        r.add(None, default.clone());
        // A later listener with the same hostname does not take it over.
        r.add(Some("a.example.com"), default.clone());
        let pick = |sni: Option<&str>| r.select(sni).unwrap();
        assert!(Arc::ptr_eq(&pick(Some("a.example.com")), &exact));
        assert!(Arc::ptr_eq(&pick(Some("A.EXAMPLE.COM.")), &exact));
        assert!(Arc::ptr_eq(&pick(Some("x.b.example.com")), &long));
        assert!(Arc::ptr_eq(&pick(Some("b.example.com")), &short));
        assert!(Arc::ptr_eq(&pick(Some("example.com")), &default));
        assert!(Arc::ptr_eq(&pick(Some("unknown.org")), &default));
        assert!(Arc::ptr_eq(&pick(None), &default));

        let mut no_default = SniResolver::default();
        no_default.add(Some("a.example.com"), exact);
        assert!(no_default.select(Some("unknown.org")).is_none());
        assert!(no_default.select(None).is_none());
    }

    #[test]
    fn bad_pem_and_foreign_keys_are_refused() {
        let c = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b".to_owned()]).unwrap();
        let (crt, k) = (c.cert.pem(), c.signing_key.serialize_pem());
        let err = |crt: &str, k: &str| {
            certified_key(crt.as_bytes(), "crt", k.as_bytes(), "key")
                .err()
                .unwrap()
        };
        assert_eq!(err("", &k), "crt: no CERTIFICATE in the PEM");
        assert!(err(&crt, "junk").starts_with("key: no usable PRIVATE KEY"));
        assert_eq!(
            err(&crt, &other.signing_key.serialize_pem()),
            "key: the key does not belong to the crt certificate"
        );
    }
}
