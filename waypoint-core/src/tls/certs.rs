//! Loading and checking the waypoint's own certificate chain, key and trust bundle.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use super::TlsError;
use super::verify::provider;
use crate::identity::SpiffeId;

/// Where the three workload files live. Istio mounts them under these names (see
/// [`CertPaths::in_dir`]); other layouts can set each path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    /// The leaf certificate first, then any intermediates (PEM).
    pub cert_chain: PathBuf,
    /// The leaf's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The trust bundle peers' chains must root in (PEM, one or more certificates).
    pub roots: PathBuf,
}

impl CertPaths {
    /// The Istio names inside `dir`: `cert-chain.pem`, `key.pem`, `root-cert.pem`.
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        CertPaths {
            cert_chain: dir.join("cert-chain.pem"),
            key: dir.join("key.pem"),
            roots: dir.join("root-cert.pem"),
        }
    }
}

/// The waypoint's own credentials, checked: the key matches the leaf, the leaf is currently
/// valid and names exactly one SPIFFE identity, and the trust bundle is not empty.
#[derive(Debug)]
pub struct WorkloadCerts {
    /// The leaf certificate first, then intermediates, as presented to peers.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// The trust bundle peers' chains must root in.
    pub roots: Vec<CertificateDer<'static>>,
    /// The identity the leaf certifies: the waypoint's own.
    pub identity: SpiffeId,
    /// When the leaf expires; rotation must happen before.
    pub not_after: SystemTime,
}

impl Clone for WorkloadCerts {
    fn clone(&self) -> Self {
        WorkloadCerts {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            identity: self.identity.clone(),
            not_after: self.not_after,
        }
    }
}

impl WorkloadCerts {
    /// Reads and checks the three files. Errors name the file at fault.
    pub fn load(paths: &CertPaths) -> Result<Self, TlsError> {
        let chain = read(&paths.cert_chain)?;
        let key = read(&paths.key)?;
        let roots = read(&paths.roots)?;
        Self::parse(
            (&chain, &paths.cert_chain.display().to_string()),
            (&key, &paths.key.display().to_string()),
            (&roots, &paths.roots.display().to_string()),
        )
    }

    /// Checks credentials given as PEM text (the same checks as [`WorkloadCerts::load`]).
    pub fn from_pem(chain: &[u8], key: &[u8], roots: &[u8]) -> Result<Self, TlsError> {
        Self::parse(
            (chain, "certificate chain PEM"),
            (key, "private key PEM"),
            (roots, "root certificates PEM"),
        )
    }

    fn parse(
        (chain_pem, chain_src): (&[u8], &str),
        (key_pem, key_src): (&[u8], &str),
        (roots_pem, roots_src): (&[u8], &str),
    ) -> Result<Self, TlsError> {
        let chain = parse_certs(chain_pem, chain_src)?;
        let roots = parse_certs(roots_pem, roots_src)?;
        if roots.is_empty() {
            return Err(TlsError::NoRoots {
                origin: roots_src.to_owned(),
            });
        }
        let Some(leaf) = chain.first() else {
            return Err(TlsError::Pem {
                origin: chain_src.to_owned(),
                reason: "no CERTIFICATE item".to_owned(),
            });
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            origin: key_src.to_owned(),
            reason: e.to_string(),
        })?;

        let x509 = parse_x509(leaf, chain_src)?;
        let not_after = check_validity(&x509, chain_src)?;
        let identity = single_identity(leaf, chain_src)?;
        check_key_matches(&chain, &key, key_src, chain_src)?;

        Ok(WorkloadCerts {
            chain,
            key,
            roots,
            identity,
            not_after,
        })
    }

    /// True when both hold the same bytes (chain, key and roots): a reload that changes nothing.
    pub(crate) fn same_material(&self, other: &WorkloadCerts) -> bool {
        self.chain == other.chain
            && self.roots == other.roots
            && self.key.secret_der() == other.key.secret_der()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn parse_certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })
}

pub(super) fn parse_x509<'a>(
    cert: &'a CertificateDer<'_>,
    origin: &str,
) -> Result<X509Certificate<'a>, TlsError> {
    match X509Certificate::from_der(cert.as_ref()) {
        Ok((_, x509)) => Ok(x509),
        Err(e) => Err(TlsError::Certificate {
            origin: origin.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn check_validity(x509: &X509Certificate<'_>, origin: &str) -> Result<SystemTime, TlsError> {
    let validity = x509.validity();
    let now = ASN1Time::now();
    if now < validity.not_before {
        return Err(TlsError::NotYetValid {
            origin: origin.to_owned(),
            not_before: validity.not_before.to_string(),
            now: now.to_string(),
        });
    }
    if now > validity.not_after {
        return Err(TlsError::Expired {
            origin: origin.to_owned(),
            not_after: validity.not_after.to_string(),
            now: now.to_string(),
        });
    }
    // Validity already contains `now`, so notAfter is after the epoch.
    let secs = u64::try_from(validity.not_after.timestamp()).unwrap_or(0);
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    key_src: &str,
    chain_src: &str,
) -> Result<(), TlsError> {
    let signing_key = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Pem {
            origin: key_src.to_owned(),
            reason: format!("unusable private key: {e}"),
        })?;
    // A key whose public half cannot be derived is refused rather than trusted unchecked:
    // presenting a certificate we cannot sign for fails every handshake much later.
    CertifiedKey::new(chain.to_vec(), signing_key)
        .keys_match()
        .map_err(|_| TlsError::KeyMismatch {
            key: key_src.to_owned(),
            chain: chain_src.to_owned(),
        })
}

/// Every `spiffe://` URI SAN of `cert`, as written (valid Istio identity or not).
pub(super) fn spiffe_uris(
    cert: &CertificateDer<'_>,
    origin: &str,
) -> Result<Vec<String>, TlsError> {
    let x509 = parse_x509(cert, origin)?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| TlsError::Certificate {
            origin: origin.to_owned(),
            reason: format!("subjectAltName: {e}"),
        })?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                        Some((*uri).to_owned())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The SPIFFE identities a certificate carries: its `spiffe://` URI SANs, parsed. Other URI
/// SANs are ignored; a `spiffe://` URI that is not an Istio identity is an error, because a
/// certificate that claims an identity we cannot read must not be half-trusted.
pub fn spiffe_identities(cert: &CertificateDer<'_>) -> Result<Vec<SpiffeId>, TlsError> {
    let origin = "peer certificate";
    spiffe_uris(cert, origin)?
        .into_iter()
        .map(|uri| {
            uri.parse().map_err(|error| TlsError::InvalidSpiffeId {
                origin: origin.to_owned(),
                error,
            })
        })
        .collect()
}

/// The one identity of a leaf certificate: exactly one `spiffe://` URI SAN, and valid.
pub(super) fn single_identity(
    cert: &CertificateDer<'_>,
    origin: &str,
) -> Result<SpiffeId, TlsError> {
    let mut uris = spiffe_uris(cert, origin)?;
    match uris.len() {
        0 => Err(TlsError::NoSpiffeId {
            origin: origin.to_owned(),
        }),
        1 => uris
            .remove(0)
            .parse()
            .map_err(|error| TlsError::InvalidSpiffeId {
                origin: origin.to_owned(),
                error,
            }),
        _ => Err(TlsError::MultipleSpiffeIds {
            origin: origin.to_owned(),
            ids: uris,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::DevCa;

    #[test]
    fn in_dir_uses_istio_names() {
        let p = CertPaths::in_dir("/var/run/secrets/workload-spiffe-credentials");
        assert!(p.cert_chain.ends_with("cert-chain.pem"));
        assert!(p.key.ends_with("key.pem"));
        assert!(p.roots.ends_with("root-cert.pem"));
    }

    #[test]
    fn from_pem_reads_identity_and_expiry() {
        let ca = DevCa::generate("cluster.local").unwrap();
        let id = SpiffeId::new("cluster.local", "istio-system", "waypoint").unwrap();
        let issued = ca.issue(&id, Duration::from_secs(3600)).unwrap();
        let certs = WorkloadCerts::from_pem(
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca.root_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(certs.identity, id);
        let left = certs.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));
        assert!(certs.clone().same_material(&certs));
    }

    #[test]
    fn empty_roots_and_garbage_are_refused() {
        let ca = DevCa::generate("cluster.local").unwrap();
        let id = SpiffeId::new("cluster.local", "ns", "sa").unwrap();
        let issued = ca.issue(&id, Duration::from_secs(3600)).unwrap();
        let err =
            WorkloadCerts::from_pem(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes(), b"")
                .unwrap_err();
        assert!(matches!(err, TlsError::NoRoots { .. }), "{err}");
        let err = WorkloadCerts::from_pem(b"", issued.key_pem.as_bytes(), ca.root_pem().as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("certificate chain PEM"), "{err}");
        let err = WorkloadCerts::from_pem(
            issued.chain_pem.as_bytes(),
            b"not a key",
            ca.root_pem().as_bytes(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("private key PEM"), "{err}");
    }

    #[test]
    fn invalid_spiffe_uri_is_an_error() {
        let ca = DevCa::generate("cluster.local").unwrap();
        let issued = ca
            .issue_with_sans(
                &["spiffe://cluster.local/not/istio".to_owned()],
                Duration::from_secs(60),
            )
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(issued.chain_pem.as_bytes()).unwrap();
        assert!(matches!(
            spiffe_identities(&leaf),
            Err(TlsError::InvalidSpiffeId { .. })
        ));
        assert!(matches!(
            single_identity(&leaf, "x"),
            Err(TlsError::InvalidSpiffeId { .. })
        ));
    }
}
