//! A development certificate authority: issues Istio-shaped workload certificates for
//! development clusters, tests and tooling. Production certificates come from istiod.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use super::TlsError;
use super::certs::{CertPaths, WorkloadCerts, parse_x509};
use crate::identity::SpiffeId;

/// Istio's default trust domain, assumed for an imported CA that does not name its own.
const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves start a minute in the past so that a peer whose clock lags a little accepts them.
const BACKDATE: Duration = Duration::from_secs(60);

/// A certificate and key issued by [`DevCa`], as PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The leaf certificate (the CA certificate is the trust bundle, not part of the chain).
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8.
    pub key_pem: String,
}

/// A certificate authority held in memory: a root certificate and its signing key.
pub struct DevCa {
    trust_domain: String,
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key stays out of logs.
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn ca_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Ca(e.to_string())
}

/// A time for rcgen, which takes the `time` crate's type; x509-parser converts for us.
fn datetime(t: SystemTime) -> Result<x509_parser::time::ASN1Time, TlsError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ca_err("time before 1970"))?
        .as_secs();
    let secs = i64::try_from(secs).map_err(ca_err)?;
    ASN1Time::from_timestamp(secs).map_err(ca_err)
}

impl DevCa {
    /// A new self-signed root for `trust_domain`: ECDSA P-256, CA:true, valid ten years. The
    /// root carries the URI SAN `spiffe://<trust_domain>` (as SPIFFE recommends for CAs), which
    /// is how [`DevCa::from_pem`] recovers the trust domain.
    pub fn generate(trust_domain: &str) -> Result<Self, TlsError> {
        // Validate the trust domain with the identity parser rather than a second copy of it.
        SpiffeId::new(trust_domain, "ns", "sa").map_err(ca_err)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "waypoint development root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}")
                .try_into()
                .map_err(ca_err)?,
        )];
        let now = SystemTime::now();
        params.not_before = datetime(now - BACKDATE)?.to_datetime();
        params.not_after = datetime(now + CA_VALIDITY)?.to_datetime();
        let cert = params.self_signed(&key).map_err(ca_err)?;
        Ok(DevCa {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA certificate and its key, e.g. a mesh's `cacerts` secret (`ca-cert.pem`,
    /// `ca-key.pem`). Issued certificates chain to it. The trust domain is read from a
    /// `spiffe://<td>` URI SAN of the certificate when it has one, else Istio's default
    /// `cluster.local`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem {
                origin: "CA certificate".to_owned(),
                reason: e.to_string(),
            })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Pem {
            origin: "CA key".to_owned(),
            reason: e.to_string(),
        })?;
        let x509 = parse_x509(&der, "CA certificate")?;
        if !x509.is_ca() {
            return Err(ca_err(
                "the certificate is not a CA (basicConstraints CA:false)",
            ));
        }
        if x509.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(TlsError::KeyMismatch {
                key: "CA key".to_owned(),
                chain: "CA certificate".to_owned(),
            });
        }
        let trust_domain = x509
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::URI(uri) => uri
                        .strip_prefix("spiffe://")
                        .filter(|td| !td.is_empty() && !td.contains('/'))
                        .map(str::to_owned),
                    _ => None,
                })
            })
            .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(ca_err)?;
        Ok(DevCa {
            trust_domain,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate as PEM: the trust bundle (`root-cert.pem`) of issued workloads.
    pub fn root_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The trust domain this CA was made for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// A workload certificate for `id`, valid from a minute ago for `validity`: ECDSA P-256,
    /// URI SAN = `id` and nothing else, digitalSignature + keyEncipherment, serverAuth +
    /// clientAuth (the same certificate serves both HBONE ends, as Istio's do).
    pub fn issue(&self, id: &SpiffeId, validity: Duration) -> Result<IssuedCert, TlsError> {
        self.issue_with_sans(&[id.to_string()], validity)
    }

    /// Issues a certificate for `id` and returns it loaded, with this CA as the trust bundle:
    /// an in-memory workload identity for tests and embedded tooling (no files written).
    pub fn workload_certs(
        &self,
        id: &SpiffeId,
        validity: Duration,
    ) -> Result<WorkloadCerts, TlsError> {
        let issued = self.issue(id, validity)?;
        WorkloadCerts::from_pem(
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            self.root_pem().as_bytes(),
        )
    }

    /// Like [`DevCa::issue`] with arbitrary URI SANs (none, several, not SPIFFE): for tests and
    /// tooling that need certificates Istio would not issue.
    pub fn issue_with_sans(
        &self,
        uris: &[String],
        validity: Duration,
    ) -> Result<IssuedCert, TlsError> {
        let now = SystemTime::now();
        self.issue_custom(uris, now - BACKDATE, now + validity)
    }

    /// Like [`DevCa::issue_with_sans`] with explicit validity dates (e.g. already expired): for
    /// tests and tooling.
    pub fn issue_custom(
        &self,
        uris: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
        let params = workload_params(uris, not_before, not_after)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(ca_err)?;
        Ok(IssuedCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a PEM certificate signing request the way istiod does: the CSR's public key, the
    /// SAN `uri` (istiod takes the identity from the caller's token, not from the CSR), the
    /// workload key usages, valid from a minute ago for `validity`. For the fake CA of
    /// [`testing`](super::testing).
    #[cfg(any(test, feature = "test-helpers"))]
    pub(crate) fn sign_csr(
        &self,
        csr_pem: &str,
        uri: &str,
        validity: Duration,
    ) -> Result<String, TlsError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(ca_err)?;
        let now = SystemTime::now();
        csr.params = workload_params(&[uri.to_owned()], now - BACKDATE, now + validity)?;
        Ok(csr.signed_by(&self.issuer).map_err(ca_err)?.pem())
    }

    /// A serving certificate and key for `127.0.0.1` and `localhost`, signed by this CA: what
    /// the fake CA of [`testing`](super::testing) presents, as istiod presents one for its
    /// Service name.
    #[cfg(any(test, feature = "test-helpers"))]
    pub(crate) fn loopback_server_cert(&self) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            SanType::DnsName("localhost".try_into().map_err(ca_err)?),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = datetime(now - BACKDATE)?.to_datetime();
        params.not_after = datetime(now + CA_VALIDITY)?.to_datetime();
        let cert = params.signed_by(&key, &self.issuer).map_err(ca_err)?;
        Ok(IssuedCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `id` and writes the three Istio-named files into `dir`
    /// (created if missing; the key with mode 0600). Each file is replaced atomically, so a
    /// watcher never reads half a file.
    pub fn write_workload_dir(
        &self,
        dir: &Path,
        id: &SpiffeId,
        validity: Duration,
    ) -> Result<CertPaths, TlsError> {
        let issued = self.issue(id, validity)?;
        create_dir(dir)?;
        let paths = CertPaths::in_dir(dir);
        write_file(&paths.key, issued.key_pem.as_bytes(), 0o600)?;
        write_file(&paths.cert_chain, issued.chain_pem.as_bytes(), 0o644)?;
        write_file(&paths.roots, self.cert_pem.as_bytes(), 0o644)?;
        Ok(paths)
    }

    /// Writes `ca-cert.pem` and `ca-key.pem` (mode 0600) into `dir`, the names of Istio's
    /// `cacerts` secret, so an operator can reuse this CA with [`DevCa::from_pem`].
    pub fn write_ca(&self, dir: &Path) -> Result<(), TlsError> {
        create_dir(dir)?;
        write_file(&dir.join("ca-cert.pem"), self.cert_pem.as_bytes(), 0o644)?;
        write_file(&dir.join("ca-key.pem"), self.key_pem.as_bytes(), 0o600)
    }
}

/// What every workload certificate we issue looks like: URI SANs `uris` and nothing else,
/// digitalSignature + keyEncipherment, serverAuth + clientAuth (the same certificate serves both
/// HBONE ends, as Istio's do).
fn workload_params(
    uris: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    // Istio workload certificates have an empty subject: the identity is the SAN.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris
        .iter()
        .map(|u| Ok(SanType::URI(u.clone().try_into().map_err(ca_err)?)))
        .collect::<Result<_, TlsError>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = datetime(not_before)?.to_datetime();
    params.not_after = datetime(not_after)?.to_datetime();
    Ok(params)
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|error| TlsError::Write {
        path: dir.to_owned(),
        error,
    })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |error| TlsError::Write {
        path: path.to_owned(),
        error,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    // A stale temporary file could carry looser permissions than `mode`: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn rejects_bad_trust_domain() {
        assert!(DevCa::generate("Not A Domain").is_err());
    }

    #[test]
    fn workload_dir_files_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("example.org").unwrap();
        assert_eq!(ca.trust_domain(), "example.org");
        let id = SpiffeId::new("example.org", "ns", "sa").unwrap();
        let paths = ca
            .write_workload_dir(dir.path(), &id, Duration::from_secs(600))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(
            std::fs::read_to_string(&paths.roots).unwrap(),
            ca.root_pem()
        );
        ca.write_ca(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join("ca-key.pem")), 0o600);
        assert!(!dir.path().join("key.pem.tmp").exists());
    }

    #[test]
    fn from_pem_refuses_mismatched_key_and_leaf_certificates() {
        let a = DevCa::generate("cluster.local").unwrap();
        let b = DevCa::generate("cluster.local").unwrap();
        let err = DevCa::from_pem(&a.root_pem(), &b.key_pem).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let id = SpiffeId::new("cluster.local", "ns", "sa").unwrap();
        let leaf = a.issue(&id, Duration::from_secs(60)).unwrap();
        let err = DevCa::from_pem(&leaf.chain_pem, &leaf.key_pem).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }
}
