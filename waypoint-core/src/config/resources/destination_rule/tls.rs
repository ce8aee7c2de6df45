//! TLS from the waypoint to the endpoints (`tls`): Istio's `ClientTLSSettings`, field for field.
//!
//! What each mode does at a waypoint:
//!
//! - `DISABLE` (the default): no TLS of the waypoint's own.
//! - `SIMPLE`: the waypoint originates TLS to the endpoint and verifies the server
//!   (`upstream::origination` has the details: server name, SNI, trust).
//! - `MUTUAL`: `SIMPLE` plus a client certificate (`clientCertificate`/`privateKey` files, or
//!   the `credentialName` Secret's `tls.crt`/`tls.key`).
//! - `ISTIO_MUTUAL`: the mesh's own mTLS, which at a waypoint is HBONE: what the waypoint (or
//!   the ztunnel beside it) already does for mesh endpoints. The waypoint never originates TLS
//!   itself for it, so an endpoint outside the mesh is reached as without a rule: a sidecar's
//!   Istio mTLS has no meaning in ambient, and failing such requests would break the
//!   "ISTIO_MUTUAL everywhere" rules written for sidecars. The files, `sni` and
//!   `subjectAltNames` of such a block are accepted (Istio accepts them) and not used: HBONE
//!   checks the endpoint's SPIFFE identity instead.
//!
//! `SIMPLE` and `MUTUAL` apply whatever carries the connection: for an endpoint reached over
//! HBONE, the user's TLS runs inside the tunnel, as Istio double-wraps it.
//!
//! `check` holds Istio's validation (`ValidateTLS`); whether files and Secrets can be read is
//! decided when the config is built (`config::build`), so `waypoint check` reports both.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::upstream::{Origination, OriginationSpec};

/// TLS from the waypoint to the endpoints (`tls`). It serializes (for `/config_dump`) with
/// the fields as written; file paths and Secret names are shown, never their contents.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// Whether and how the connection is secured.
    #[serde(default, skip_serializing_if = "ClientTlsMode::is_disable")]
    pub mode: ClientTlsMode,
    /// The client certificate chain file (PEM), for `MUTUAL`.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate: Option<String>,
    /// The client private key file (PEM), for `MUTUAL`.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub private_key: Option<String>,
    /// The CA certificates file (PEM) the server's certificate must chain to; unset, the
    /// Web-PKI roots compiled into waypoint.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_certificates: Option<String>,
    /// A Secret in the waypoint's namespace holding the client certificate, key and CA
    /// (`tls.crt`, `tls.key`, `ca.crt`, `ca.crl`, or Opaque `cert`, `key`, `cacert`, `crl`;
    /// the CA may be in a Secret `<name>-cacert`).
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub credential_name: Option<String>,
    /// Names the server certificate must carry one of (instead of the server name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// The SNI to send; unset, the request's host.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub sni: Option<String>,
    /// Skip verifying the server's certificate chain and names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// A certificate revocation list file (PEM) to check the server's chain against.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_crl: Option<String>,
    /// The rustls configuration made from the fields at config build (`SIMPLE`/`MUTUAL`).
    #[serde(skip)]
    pub(crate) compiled: CompiledOrigination,
}

/// `tls.mode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// No TLS of the waypoint's own.
    #[default]
    Disable,
    /// TLS to the endpoint, the server verified.
    Simple,
    /// TLS with a client certificate.
    Mutual,
    /// The mesh's mTLS (HBONE at a waypoint).
    IstioMutual,
}

impl ClientTlsMode {
    /// The default, left out when a block is shown.
    fn is_disable(&self) -> bool {
        *self == ClientTlsMode::Disable
    }
}

/// Istio writes unset strings as `""`: the same as absent.
fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// The compiled form of a `SIMPLE`/`MUTUAL` block, filled by the config build. It is derived
/// from the fields (and the files and Secrets they name), so it takes no part in comparisons.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledOrigination(pub(crate) Option<Arc<Origination>>);

impl PartialEq for CompiledOrigination {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ClientTlsSettings {
    /// Why the block is invalid, naming the field inside it; the caller adds the path to it.
    pub(crate) fn check(&self) -> Result<(), String> {
        let insecure = self.insecure_skip_verify == Some(true);
        let sans = !self.subject_alt_names.is_empty();
        // Istio's rule: with verification off, naming what to verify against is a mistake.
        // MUTUAL may keep credentialName, which also carries the client certificate.
        let conflicts = match self.mode {
            ClientTlsMode::Simple => {
                self.ca_certificates.is_some() || self.credential_name.is_some() || sans
            }
            ClientTlsMode::Mutual => self.ca_certificates.is_some() || sans,
            _ => false,
        };
        if insecure && conflicts {
            let with = match self.mode {
                ClientTlsMode::Simple => "caCertificates, credentialName or subjectAltNames",
                _ => "caCertificates or subjectAltNames",
            };
            return Err(format!("insecureSkipVerify: cannot be true with {with}"));
        }
        if !matches!(self.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) {
            return Ok(());
        }
        if self.credential_name.is_some() {
            if self.client_certificate.is_some()
                || self.private_key.is_some()
                || self.ca_certificates.is_some()
                || self.ca_crl.is_some()
            {
                return Err("credentialName: cannot be set with clientCertificate, privateKey, caCertificates or caCrl".into());
            }
        } else if self.mode == ClientTlsMode::Mutual {
            if self.client_certificate.is_none() {
                return Err("clientCertificate: required for MUTUAL".into());
            }
            if self.private_key.is_none() {
                return Err("privateKey: required for MUTUAL".into());
            }
        }
        if let Some(sni) = &self.sni
            && rustls_pki_types::ServerName::try_from(sni.as_str()).is_err()
        {
            return Err(format!("sni: {sni:?} is not a valid DNS name"));
        }
        for (i, san) in self.subject_alt_names.iter().enumerate() {
            if san.is_empty() {
                return Err(format!("subjectAltNames[{i}]: empty"));
            }
        }
        Ok(())
    }

    /// True for a block the waypoint originates TLS for (`SIMPLE`, `MUTUAL`).
    pub(crate) fn originates(&self) -> bool {
        matches!(self.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
    }

    /// The fields as the TLS client side reads them.
    pub(crate) fn spec(&self) -> OriginationSpec<'_> {
        OriginationSpec {
            mutual: self.mode == ClientTlsMode::Mutual,
            client_certificate: self.client_certificate.as_deref(),
            private_key: self.private_key.as_deref(),
            ca_certificates: self.ca_certificates.as_deref(),
            ca_crl: self.ca_crl.as_deref(),
            credential_name: self.credential_name.as_deref(),
            subject_alt_names: &self.subject_alt_names,
            sni: self.sni.as_deref(),
            insecure_skip_verify: self.insecure_skip_verify == Some(true),
        }
    }

    /// The compiled origination, once the config build made it.
    pub(crate) fn origination(&self) -> Option<&Arc<Origination>> {
        self.compiled.0.as_ref()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn read(yaml: &str) -> Result<ClientTlsSettings, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn every_field_reads_with_istio_names_and_empty_strings_are_unset() {
        let tls = read(
            "{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, \
             credentialName: \"\", subjectAltNames: [a.example], sni: a.example, \
             insecureSkipVerify: false, caCrl: /crl.pem}",
        )
        .unwrap();
        assert_eq!(tls.mode, ClientTlsMode::Mutual);
        assert_eq!(tls.client_certificate.as_deref(), Some("/c.pem"));
        assert_eq!(tls.private_key.as_deref(), Some("/k.pem"));
        assert_eq!(tls.ca_certificates.as_deref(), Some("/ca.pem"));
        assert_eq!(tls.credential_name, None);
        assert_eq!(tls.subject_alt_names, ["a.example"]);
        assert_eq!(tls.sni.as_deref(), Some("a.example"));
        assert_eq!(tls.insecure_skip_verify, Some(false));
        assert_eq!(tls.ca_crl.as_deref(), Some("/crl.pem"));
        assert_eq!(tls.check(), Ok(()));
        assert_eq!(read("{}").unwrap().mode, ClientTlsMode::Disable);
        // `/config_dump` shows what was written, in Istio's spelling (the default mode left out).
        assert_eq!(
            serde_json::to_value(read("{}").unwrap()).unwrap(),
            serde_json::json!({})
        );
        let shown = serde_json::to_value(read("{mode: ISTIO_MUTUAL, sni: a.example}").unwrap());
        assert_eq!(
            shown.unwrap(),
            serde_json::json!({"mode": "ISTIO_MUTUAL", "sni": "a.example"})
        );
        assert!(
            read("{mode: SIMPLE, clientCert: x}").is_err(),
            "unknown field"
        );
        assert!(read("{mode: STRICT}").is_err(), "unknown mode");
    }

    #[test]
    fn istio_validation_rules_name_the_field() {
        let cases = [
            (
                "{mode: MUTUAL, privateKey: k}",
                "clientCertificate: required for MUTUAL",
            ),
            (
                "{mode: MUTUAL, clientCertificate: c}",
                "privateKey: required for MUTUAL",
            ),
            (
                "{mode: SIMPLE, credentialName: s, caCertificates: ca}",
                "credentialName: cannot be set with",
            ),
            (
                "{mode: MUTUAL, credentialName: s, clientCertificate: c}",
                "credentialName: cannot be set with",
            ),
            (
                "{mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}",
                "insecureSkipVerify: cannot be true",
            ),
            (
                "{mode: SIMPLE, insecureSkipVerify: true, credentialName: s}",
                "insecureSkipVerify: cannot be true",
            ),
            (
                "{mode: MUTUAL, insecureSkipVerify: true, caCertificates: ca, credentialName: s}",
                "insecureSkipVerify: cannot be true",
            ),
            (
                "{mode: SIMPLE, sni: \"a b\"}",
                "sni: \"a b\" is not a valid DNS name",
            ),
            (
                "{mode: SIMPLE, subjectAltNames: [\"\"]}",
                "subjectAltNames[0]: empty",
            ),
        ];
        for (yaml, want) in cases {
            let got = read(yaml).unwrap().check().unwrap_err();
            assert!(got.starts_with(want), "{yaml}: {got}");
        }
        // Accepted as Istio accepts them: MUTUAL from a Secret alone, ISTIO_MUTUAL with fields
        // it does not use, DISABLE with leftovers.
        for yaml in [
            "{mode: MUTUAL, credentialName: s}",
            "{mode: MUTUAL, credentialName: s, insecureSkipVerify: true}",
            "{mode: ISTIO_MUTUAL, sni: x, subjectAltNames: [spiffe://a]}",
            "{mode: DISABLE, caCertificates: ca}",
            "{mode: SIMPLE}",
        ] {
            assert_eq!(read(yaml).unwrap().check(), Ok(()), "{yaml}");
        }
    }
}
