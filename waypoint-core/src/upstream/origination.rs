//! TLS origination: the client side of a DestinationRule's `tls` block (`SIMPLE`, `MUTUAL`).
//!
//! # Where the TLS layer sits
//!
//! The [`Dialer`](super::dial::Dialer) opens a byte stream for a dial path (plain TCP, an HBONE
//! tunnel, the ztunnel socket); when the backend's policy originates TLS, a TLS client
//! handshake runs over that stream before HTTP starts. The layer does not care what carries it,
//! so a `SIMPLE`/`MUTUAL` rule for a mesh endpoint gives TLS *inside* the HBONE tunnel, as
//! Istio does (a double wrap: the mesh's mTLS hop by hop, the user's TLS end to end).
//!
//! # What is decided when
//!
//! Everything that can fail for reasons of configuration fails at config build
//! ([`Origination::build`]): certificate, key, CA and CRL files are read, the `credentialName`
//! Secret's keys decoded, and the rustls client configurations made, so a DestinationRule whose
//! material cannot be used is rejected with the field named, and the request path only picks a
//! server name and handshakes. What is left to fail at request time is the peer: a refused
//! handshake, an unknown CA, a certificate without the expected name. Each is a connect
//! failure (503 `UF`) with rustls' reason in the log and the local reply.
//!
//! # Server name, SNI and what the certificate must name
//!
//! - `sni` set: it is the SNI sent, and (without `subjectAltNames`) the name the certificate
//!   must carry. Envoy checks only the chain in that case; we also check the name, since a
//!   name the operator typed is the one they expect to reach.
//! - `sni` unset: the request's host (`Host`/`:authority`, port dropped), as Envoy's `auto_sni`
//!   and `auto_san_validation` do in Istio's egress setups; a host that is an IP address is
//!   matched against the certificate's IP SANs and no SNI is sent (TLS forbids IPs in SNI);
//!   without any host, the endpoint's IP is used the same way.
//! - `subjectAltNames`: the certificate must carry one of them (DNS, URI or IP SAN, exact; a
//!   wildcard DNS SAN `*.example.com` covers one label), instead of the server name.
//! - `insecureSkipVerify`: neither the chain nor the names are checked (the handshake's own
//!   signatures still are); config build logs a warning for each rule that says so.
//!
//! # Trust
//!
//! `caCertificates` (a PEM file) or the CA of the `credentialName` Secret; otherwise the
//! Web-PKI roots compiled into the binary ([`crate::tls::web_pki_roots`]): there is no
//! dependency on the system's certificate store. `caCrl` adds a revocation list (PEM); as in
//! Envoy, once a CRL is given every CA of the chain needs one.
//!
//! # ALPN
//!
//! `h2` when the backend speaks HTTP/2, nothing for HTTP/1.1 (as Istio configures Envoy).
//!
//! Connections with TLS are pooled apart from plain ones, and per (configuration, server name):
//! a connection made for `a.example.com` never carries a request for `b.example.com`.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ResolvesClientCert};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

use super::dial::{ConnTarget, DialPath};
use crate::config::resources::{Secret, Sourced};
use crate::config::{AppProtocol, ServiceBackend};
use crate::tls::{CheckedServerVerifier, ServerCertCheck};
use crate::wire::BoxedIo;

/// What a `SIMPLE` or `MUTUAL` tls block asks for, as plain values: the config side
/// (`ClientTlsSettings`) fills it, so this module does not depend on the resource types.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginationSpec<'a> {
    /// `MUTUAL`: a client certificate is presented.
    pub(crate) mutual: bool,
    pub(crate) client_certificate: Option<&'a str>,
    pub(crate) private_key: Option<&'a str>,
    pub(crate) ca_certificates: Option<&'a str>,
    pub(crate) ca_crl: Option<&'a str>,
    pub(crate) credential_name: Option<&'a str>,
    pub(crate) subject_alt_names: &'a [String],
    pub(crate) sni: Option<&'a str>,
    pub(crate) insecure_skip_verify: bool,
}

/// Where `credentialName` Secrets are looked up: the proxy's own namespace (Istio: the Secret
/// "must exist in the namespace of the proxy using the certificates").
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecretScope<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) secrets: &'a [Sourced<Secret>],
}

impl<'a> SecretScope<'a> {
    fn get(&self, name: &str) -> Option<&'a Secret> {
        self.secrets
            .iter()
            .map(|s| &s.resource)
            .find(|s| s.metadata.namespace() == self.namespace && s.metadata.name == name)
    }
}

/// A compiled `SIMPLE`/`MUTUAL` origination: the rustls client configurations (one per ALPN
/// choice) and the explicit SNI, ready for the request path.
pub(crate) struct Origination {
    h1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
    sni: Option<ServerName<'static>>,
}

impl fmt::Debug for Origination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origination")
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// One key material read from a file or a Secret, with the field it came from for messages.
struct Material {
    bytes: Vec<u8>,
    field: String,
}

fn read_file(field: &str, path: &str) -> Result<Material, String> {
    std::fs::read(Path::new(path))
        .map(|bytes| Material {
            bytes,
            field: field.to_owned(),
        })
        .map_err(|e| format!("{field}: cannot read {path}: {e}"))
}

/// The value of the first of `keys` present in `secret`, with the field it came from.
fn secret_value(secret: &Secret, what: &str, keys: &[&str]) -> Result<Option<Material>, String> {
    for key in keys {
        let found = secret
            .value(key)
            .map_err(|e| format!("credentialName: Secret {what}: {e}"))?;
        if let Some((bytes, field)) = found {
            return Ok(Some(Material {
                bytes,
                field: format!("credentialName: Secret {what} {field}"),
            }));
        }
    }
    Ok(None)
}

/// Every input of a compiled origination: what [`Origination::build`] reuses a live one by.
#[derive(PartialEq, Eq, Hash)]
struct Fingerprint {
    mutual: bool,
    sni: Option<String>,
    subject_alt_names: Vec<String>,
    insecure_skip_verify: bool,
    material: [Option<Vec<u8>>; 4],
}

impl Fingerprint {
    fn of(spec: &OriginationSpec<'_>, loaded: &Loaded) -> Self {
        let bytes = |m: Option<&Material>| m.map(|m| m.bytes.clone());
        Fingerprint {
            mutual: spec.mutual,
            sni: spec.sni.map(str::to_owned),
            subject_alt_names: spec.subject_alt_names.to_vec(),
            insecure_skip_verify: spec.insecure_skip_verify,
            material: [
                bytes(loaded.client.as_ref().map(|(c, _)| c)),
                bytes(loaded.client.as_ref().map(|(_, k)| k)),
                bytes(loaded.ca.as_ref()),
                bytes(loaded.crl.as_ref()),
            ],
        }
    }
}

/// The live compiled originations by their inputs (entries die with their last config).
static COMPILED: LazyLock<Mutex<HashMap<Fingerprint, Weak<Origination>>>> =
    LazyLock::new(Mutex::default);

/// Key material for the rule: client certificate and key (MUTUAL), CA, CRL.
#[derive(Default)]
struct Loaded {
    client: Option<(Material, Material)>,
    ca: Option<Material>,
    crl: Option<Material>,
}

fn load(spec: &OriginationSpec<'_>, scope: Option<SecretScope<'_>>) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    if let Some(name) = spec.credential_name {
        let Some(scope) = scope else {
            return Err("credentialName: no Secrets are available to this waypoint".to_owned());
        };
        let what = format!("{}/{name}", scope.namespace);
        let Some(secret) = scope.get(name) else {
            return Err(format!(
                "credentialName: Secret {what} does not exist (it must be in the waypoint's own namespace, {})",
                scope.namespace
            ));
        };
        // Istio reads a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt, ca.crl) or an
        // Opaque one (cert, key, cacert, crl); the CA may also be in `<name>-cacert`.
        loaded.ca = secret_value(secret, &what, &["ca.crt", "cacert"])?;
        if loaded.ca.is_none()
            && let Some(ca_secret) = scope.get(&format!("{name}-cacert"))
        {
            let ca_what = format!("{what}-cacert");
            loaded.ca = secret_value(ca_secret, &ca_what, &["ca.crt", "cacert"])?;
        }
        loaded.crl = secret_value(secret, &what, &["ca.crl", "crl"])?;
        if spec.mutual {
            let cert = secret_value(secret, &what, &["tls.crt", "cert"])?;
            let key = secret_value(secret, &what, &["tls.key", "key"])?;
            match (cert, key) {
                (Some(cert), Some(key)) => loaded.client = Some((cert, key)),
                _ => {
                    return Err(format!(
                        "credentialName: Secret {what} needs tls.crt and tls.key (or cert and key) for MUTUAL"
                    ));
                }
            }
        }
        return Ok(loaded);
    }
    if spec.mutual {
        match (spec.client_certificate, spec.private_key) {
            (Some(cert), Some(key)) => {
                loaded.client = Some((
                    read_file("clientCertificate", cert)?,
                    read_file("privateKey", key)?,
                ));
            }
            (None, _) => return Err("clientCertificate: required for MUTUAL".to_owned()),
            (_, None) => return Err("privateKey: required for MUTUAL".to_owned()),
        }
    }
    if let Some(path) = spec.ca_certificates {
        loaded.ca = Some(read_file("caCertificates", path)?);
    }
    if let Some(path) = spec.ca_crl {
        loaded.crl = Some(read_file("caCrl", path)?);
    }
    Ok(loaded)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

fn roots(ca: Option<&Material>) -> Result<Arc<RootCertStore>, String> {
    let Some(ca) = ca else {
        return Ok(crate::tls::web_pki_roots());
    };
    let certs = CertificateDer::pem_slice_iter(&ca.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", ca.field))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in the PEM", ca.field));
    }
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        store
            .add(cert)
            .map_err(|e| format!("{}: certificate {i} is not a usable CA: {e}", ca.field))?;
    }
    Ok(Arc::new(store))
}

fn crls(crl: Option<&Material>) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let Some(crl) = crl else {
        return Ok(Vec::new());
    };
    let list = CertificateRevocationListDer::pem_slice_iter(&crl.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", crl.field))?;
    if list.is_empty() {
        return Err(format!("{}: no X509 CRL in the PEM", crl.field));
    }
    Ok(list)
}

/// Parses an explicit `sni`: a DNS name or an IP address.
fn parse_sni(sni: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(sni.to_owned())
        .map_err(|_| format!("sni: {sni:?} is not a valid DNS name"))
}

impl Origination {
    /// Loads the material `spec` names (files, or the `credentialName` Secret from `scope`)
    /// and makes the client configurations. The error names the field at fault.
    ///
    /// Equal inputs (the fields and the bytes of every file and Secret value) give the same
    /// `Origination` as long as one is alive, so a config reload that changes nothing about a
    /// rule keeps its pooled TLS connections (they are pooled per configuration).
    pub(crate) fn build(
        spec: &OriginationSpec<'_>,
        scope: Option<SecretScope<'_>>,
    ) -> Result<Arc<Self>, String> {
        let sni = spec.sni.map(parse_sni).transpose()?;
        let loaded = load(spec, scope)?;
        let key = Fingerprint::of(spec, &loaded);
        let mut cache = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = cache.get(&key).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let built = Arc::new(Self::compile(spec, sni, &loaded)?);
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&built));
        Ok(built)
    }

    fn compile(
        spec: &OriginationSpec<'_>,
        sni: Option<ServerName<'static>>,
        loaded: &Loaded,
    ) -> Result<Self, String> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = if spec.insecure_skip_verify {
            let algorithms = provider.signature_verification_algorithms;
            Arc::new(CheckedServerVerifier::with_check(AcceptAny, algorithms))
        } else {
            let roots = roots(loaded.ca.as_ref())?;
            let crls = crls(loaded.crl.as_ref())?;
            let chain = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .with_crls(crls)
                .build()
                .map_err(|e| match &loaded.crl {
                    Some(crl) => format!("{}: {e}", crl.field),
                    None => format!("caCertificates: {e}"),
                })?;
            if spec.subject_alt_names.is_empty() {
                chain
            } else {
                Arc::new(SanVerifier {
                    chain,
                    names: spec.subject_alt_names.to_vec(),
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let h1 = match &loaded.client {
            Some((cert, key)) => {
                let certified = crate::tls::frontend::certified_key(
                    &cert.bytes,
                    &cert.field,
                    &key.bytes,
                    &key.field,
                )?;
                builder.with_client_cert_resolver(Arc::new(ClientKey(certified)))
            }
            None => builder.with_no_client_auth(),
        };
        let mut h2 = h1.clone();
        h2.alpn_protocols = vec![crate::tls::ALPN_H2.to_vec()];
        Ok(Origination {
            h1: Arc::new(h1),
            h2: Arc::new(h2),
            sni,
        })
    }

    /// The TLS layer for one connection: the configuration for `protocol` and the server name
    /// (explicit `sni`, else the request's `host`, else the endpoint's IP; see the module
    /// documentation).
    pub(crate) fn layer(
        &self,
        protocol: AppProtocol,
        host: Option<&str>,
        endpoint: SocketAddr,
    ) -> TlsLayer {
        let config = match protocol {
            AppProtocol::Http1 => self.h1.clone(),
            AppProtocol::H2c => self.h2.clone(),
        };
        let server_name = self
            .sni
            .clone()
            .or_else(|| host.and_then(host_server_name))
            .unwrap_or_else(|| ServerName::IpAddress(endpoint.ip().into()));
        TlsLayer {
            config,
            server_name,
        }
    }
}

/// The connection for `path` to an endpoint of `backend`: with the TLS layer of the backend's
/// DestinationRule when it originates TLS (`SIMPLE`, `MUTUAL`), plain otherwise (no rule,
/// `DISABLE`, and `ISTIO_MUTUAL`, which is the mesh transport's business). `host` is the
/// request's host, for the server name when the rule sets no `sni` (none for byte streams).
pub(crate) fn conn_target(
    path: DialPath,
    backend: &ServiceBackend,
    host: Option<&str>,
) -> ConnTarget {
    let origination = backend
        .policy
        .tls
        .as_ref()
        .and_then(|applied| applied.settings.origination());
    let tls = origination.map(|o| o.layer(backend.protocol.upstream, host, path.endpoint()));
    ConnTarget { path, tls }
}

/// The host a request is for: its `Host` header, else its URI's authority.
pub(crate) fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// The server name of a request's host (`Host`/`:authority`, port dropped, IPv6 brackets
/// removed); `None` when it is neither a DNS name nor an IP.
pub(crate) fn host_server_name(host: &str) -> Option<ServerName<'static>> {
    let name = match host.rsplit_once(':') {
        // `[v6]:port` or `name:port`; a bare IPv6 address has several colons and no brackets.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.contains(':') => {
            name
        }
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && name.starts_with('[') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_ascii_lowercase()).ok()
}

/// The TLS client side of one pooled connection: which configuration, and which server name.
/// Connections are pooled per layer: equal when made from the same compiled rule (the same
/// configuration object) for the same name.
#[derive(Clone)]
pub(crate) struct TlsLayer {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsLayer {
    /// Runs the client handshake over `io`. The error is a reason in words, for a local reply
    /// and the log ("TLS handshake with <name>: invalid peer certificate: ...").
    pub(crate) async fn handshake(&self, io: BoxedIo) -> Result<BoxedIo, String> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = self.server_name.clone();
        match connector.connect(name, io).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => Err(format!(
                "TLS handshake with {}: {}",
                self.server_name.to_str(),
                describe_tls(&e)
            )),
        }
    }
}

/// rustls' own error, when the I/O error carries one (it says what was wrong with the peer),
/// else the I/O error.
fn describe_tls(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "connection closed during the handshake".to_owned()
        }
        None => e.to_string(),
    }
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLayer")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .finish()
    }
}

impl PartialEq for TlsLayer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for TlsLayer {}

impl Hash for TlsLayer {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.config), state);
        self.server_name.to_str().hash(state);
    }
}

/// Presents one client certificate, whatever the server asks for (as Envoy does).
#[derive(Debug)]
struct ClientKey(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `insecureSkipVerify`: any certificate is accepted.
#[derive(Debug)]
struct AcceptAny;

impl ServerCertCheck for AcceptAny {
    fn check(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        Ok(())
    }
}

/// `subjectAltNames`: the chain is verified as usual (roots, validity, revocation), and the
/// certificate must carry one of the names instead of the server name.
#[derive(Debug)]
struct SanVerifier {
    chain: Arc<WebPkiServerVerifier>,
    names: Vec<String>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The webpki verifier checks the chain (and revocation) before the name, so a name
        // mismatch means everything else passed: the name is what we decide instead.
        match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        let sans = certificate_sans(end_entity);
        if self
            .names
            .iter()
            .any(|want| sans.iter().any(|have| san_matches(have, want)))
        {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(SanMismatch(format!(
                "certificate names [{}] match none of subjectAltNames [{}]",
                sans.join(", "),
                self.names.join(", ")
            )))),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct SanMismatch(String);

impl fmt::Display for SanMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SanMismatch {}

/// The DNS, URI and IP SANs of a certificate, as text; none when it does not parse (the chain
/// check has already accepted it, so that does not happen).
fn certificate_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::URI(u) => Some((*u).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether certificate name `have` satisfies configured name `want`: exact (DNS names without
/// regard to case), or a wildcard DNS SAN covering exactly one leftmost label.
fn san_matches(have: &str, want: &str) -> bool {
    if have.eq_ignore_ascii_case(want) {
        return true;
    }
    let Some(suffix) = have.strip_prefix("*.") else {
        return false;
    };
    match want.split_once('.') {
        Some((label, rest)) => {
            !label.is_empty() && !label.contains('*') && rest.eq_ignore_ascii_case(suffix)
        }
        None => false,
    }
}

#[cfg(test)]
#[path = "origination_tests.rs"]
mod tests;
