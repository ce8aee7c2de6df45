//! TLS for HTTPS cases: the certificate Secrets upstream's suite creates in code rather than in
//! manifests, and the client side of a TLS connection that trusts exactly one of them (as
//! upstream's client uses the Secret's `tls.crt` as its only CA).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
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

/// Certificates the harness generated, by `namespace/name` of their Secret.
#[derive(Debug, Default)]
pub struct Certificates {
    by_secret: BTreeMap<String, (String, String)>,
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
        Ok(Certificates { by_secret })
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
}

/// A client configuration that accepts exactly the certificate `cert_pem` (and a handshake
/// signed by its key), offering `alpn`.
pub fn client_config(cert_pem: &str, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
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
    config.alpn_protocols = vec![alpn.to_vec()];
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
        assert_eq!(config.resources.secrets.len(), 2);
        assert!(
            config.statuses.iter().all(|s| s.is_ok()),
            "{:?}",
            config.statuses
        );
        let pem = certs
            .certificate("gateway-conformance-infra/tls-validity-checks-certificate")
            .unwrap();
        assert!(client_config(pem, b"h2").is_ok());
        assert!(client_config("junk", b"h2").is_err());
    }
}
