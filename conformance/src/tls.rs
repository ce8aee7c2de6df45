//! TLS for HTTPS and TLS-over-TCP cases: the certificate Secrets (and the CA ConfigMap)
//! upstream's suite creates in code rather than in manifests, the server side the echo pods
//! that mount a Secret present, and the client side of a connection that trusts exactly one
//! certificate (as upstream's client uses a Secret's `tls.crt` or a ConfigMap's `ca.crt` as
//! its only root).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde_json::{Value, json};
use waypoint_core::tls::{CheckedServerVerifier, ServerCertCheck};

/// The self-signed certificate Secrets of upstream's suite setup: `(namespace, name, hosts)`.
const SUITE_SECRETS: [(&str, &str, &[&str]); 2] = [
    ("gateway-conformance-web-backend", "certificate", &["*"]),
    (
        "gateway-conformance-infra",
        "tls-validity-checks-certificate",
        &["*", "*.org", "*.wildcard.org"],
    ),
];

/// The CA of upstream's `tls-checks-ca-certificate` ConfigMap and the Secrets it signs:
/// `(namespace, name, hosts)` (a `spiffe://` host is a URI name).
const CA_SIGNED_SECRETS: [(&str, &str, &[&str]); 4] = [
    (
        "gateway-conformance-infra",
        "tls-checks-certificate",
        &[
            "abc.example.com",
            "spiffe://abc.example.com/test-identity",
            "other.example.com",
        ],
    ),
    // What the TCP and TLS backends present for passthrough.
    (
        "gateway-conformance-infra",
        "tls-passthrough-checks-certificate",
        &["abc.example.com"],
    ),
    (
        "gateway-conformance-app-backend",
        "tls-passthrough-checks-certificate",
        &["abc.example.com"],
    ),
    (
        "gateway-conformance-infra",
        "tls-terminate-checks-certificate",
        &["tls.example.com"],
    ),
];

/// The ConfigMap (`namespace/name`) holding the CA that signed the passthrough and checks
/// Secrets (upstream's `tls-checks-ca-certificate`).
pub const CHECKS_CA: &str = "gateway-conformance-infra/tls-checks-ca-certificate";

/// Certificates the harness generated, by `namespace/name` of their Secret, and CA
/// certificates by `namespace/name` of their ConfigMap.
#[derive(Debug, Default)]
pub struct Certificates {
    by_secret: BTreeMap<String, (String, String)>,
    by_config_map: BTreeMap<String, String>,
}

/// Signs a certificate for `hosts` with `issuer`: (certificate PEM, key PEM).
fn ca_signed(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    hosts: &[&str],
) -> Result<(String, String), rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    for host in hosts {
        params.subject_alt_names.push(if host.contains("://") {
            rcgen::SanType::URI((*host).try_into()?)
        } else {
            rcgen::SanType::DnsName((*host).try_into()?)
        });
    }
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Certificates {
    /// Generates the suite's Secrets (fresh keys every run, as upstream does).
    pub fn generate() -> Result<Certificates, String> {
        let mut by_secret = BTreeMap::new();
        for (ns, name, hosts) in SUITE_SECRETS {
            let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
            let c = rcgen::generate_simple_self_signed(hosts)
                .map_err(|e| format!("certificate for Secret {ns}/{name}: {e}"))?;
            by_secret.insert(
                format!("{ns}/{name}"),
                (c.cert.pem(), c.signing_key.serialize_pem()),
            );
        }
        let ca_err = |e: rcgen::Error| format!("CA of ConfigMap {CHECKS_CA}: {e}");
        let ca_key = rcgen::KeyPair::generate().map_err(ca_err)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "conformance checks CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(ca_err)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        for (ns, name, hosts) in CA_SIGNED_SECRETS {
            let pair = ca_signed(&issuer, hosts)
                .map_err(|e| format!("certificate for Secret {ns}/{name}: {e}"))?;
            by_secret.insert(format!("{ns}/{name}"), pair);
        }
        let by_config_map = BTreeMap::from([(CHECKS_CA.to_owned(), ca_cert.pem())]);
        Ok(Certificates {
            by_secret,
            by_config_map,
        })
    }

    /// The Secrets as manifests (`kubernetes.io/tls`, base64 `data`), to apply with the base.
    pub fn secrets(&self) -> Vec<Value> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.by_secret
            .iter()
            .map(|(key, (cert, private))| {
                let (ns, name) = key.split_once('/').unwrap_or(("default", key));
                json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns},
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": b64(cert), "tls.key": b64(private)},
                })
            })
            .collect()
    }

    /// The certificate (PEM) of Secret `namespace/name`.
    pub fn certificate(&self, secret: &str) -> Option<&str> {
        self.by_secret.get(secret).map(|(cert, _)| cert.as_str())
    }

    /// The `ca.crt` (PEM) of ConfigMap `namespace/name`.
    pub fn ca_certificate(&self, config_map: &str) -> Option<&str> {
        self.by_config_map.get(config_map).map(String::as_str)
    }

    /// A data key (`tls.crt` or `tls.key`) of Secret `namespace/name`, as a pod mounting it
    /// reads the file.
    pub fn secret_data(&self, secret: &str, key: &str) -> Option<&str> {
        let (cert, private) = self.by_secret.get(secret)?;
        match key {
            "tls.crt" => Some(cert),
            "tls.key" => Some(private),
            _ => None,
        }
    }
}

/// The server side of a pod that serves TLS with `cert_pem` and `key_pem` (upstream's echo
/// server offers no ALPN on its TCP listener and `h2`/`http/1.1` on HTTPS; `alpn` says which).
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("server certificate: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client that trusts the CA `ca_pem` and checks the server's name against the certificate,
/// as Go's client with `RootCAs` does; no ALPN, as upstream's TCP dialer offers none.
pub fn ca_client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| format!("CA certificate: {e}"))?)
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client that trusts nothing: upstream's rejection probe dials with the system roots, which
/// never hold the test certificates, so a handshake that completes still fails the probe.
pub fn refusing_client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(CheckedServerVerifier::with_check(
        PinnedCert {
            trusted: CertificateDer::from(Vec::new()),
        },
        provider.signature_verification_algorithms,
    ));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that accepts exactly the certificate `cert_pem` (and a handshake
/// signed by its key), offering the protocols in `alpn` (none when empty).
pub fn client_config(cert_pem: &str, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, String> {
    let trusted = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("trusted certificate: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(CheckedServerVerifier::with_check(
        PinnedCert { trusted },
        provider.signature_verification_algorithms,
    ));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Trusts one self-signed certificate. Host names are not checked against it: upstream's
/// certificates use names (`*`, `*.org`) that Go accepts and WebPKI rules refuse, and what the
/// tests check is that the listener presents the Secret's certificate.
#[derive(Debug)]
struct PinnedCert {
    trusted: CertificateDer<'static>,
}

impl ServerCertCheck for PinnedCert {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        if end_entity.as_ref() == self.trusted.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_secrets_are_valid_tls_secrets_for_the_waypoint() {
        let certs = Certificates::generate().unwrap();
        let text: String = certs
            .secrets()
            .iter()
            .map(|s| format!("{s}\n---\n"))
            .collect();
        let config = waypoint_core::config::parse_manifests(&text, "secrets").unwrap();
        assert_eq!(config.resources.secrets.len(), 6);
        assert!(
            config.statuses.iter().all(|s| s.is_ok()),
            "{:?}",
            config.statuses
        );
        let pem = certs
            .certificate("gateway-conformance-infra/tls-validity-checks-certificate")
            .unwrap();
        assert!(client_config(pem, &[b"h2"]).is_ok());
        assert!(client_config("junk", &[b"h2"]).is_err());
    }

    #[tokio::test]
    async fn a_passthrough_certificate_is_trusted_through_the_checks_ca_for_its_name_only() {
        let certs = Certificates::generate().unwrap();
        let secret = "gateway-conformance-infra/tls-passthrough-checks-certificate";
        let server = server_config(
            certs.secret_data(secret, "tls.crt").unwrap(),
            certs.secret_data(secret, "tls.key").unwrap(),
            &[],
        )
        .unwrap();
        let ca = certs.ca_certificate(CHECKS_CA).unwrap();
        let handshake = |name: &'static str, client: Arc<rustls::ClientConfig>| {
            let server = server.clone();
            async move {
                let (a, b) = tokio::io::duplex(64 * 1024);
                let accept =
                    tokio::spawn(
                        async move { tokio_rustls::TlsAcceptor::from(server).accept(b).await },
                    );
                let name = rustls_pki_types::ServerName::try_from(name).unwrap();
                let client = tokio_rustls::TlsConnector::from(client)
                    .connect(name, a)
                    .await;
                drop(accept);
                client.map(|_| ())
            }
        };
        let trusting = ca_client_config(ca).unwrap();
        assert!(handshake("abc.example.com", trusting.clone()).await.is_ok());
        assert!(handshake("other.example.com", trusting).await.is_err());
        let refusing = refusing_client_config().unwrap();
        assert!(handshake("abc.example.com", refusing).await.is_err());
        assert!(server_config("junk", "junk", &[]).is_err());
    }
}
