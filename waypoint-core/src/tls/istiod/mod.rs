//! The waypoint's workload certificate from istiod, for native HBONE mode in a cluster.
//!
//! A sidecar's agent and ztunnel get their certificates the same way, and so do we: generate a
//! fresh ECDSA P-256 key, send a CSR for our SPIFFE identity to
//! `istio.v1.auth.IstioCertificateService/CreateCertificate` (gRPC over HTTP/2 and TLS, istiod's
//! port 15012), authenticated by the pod's projected ServiceAccount token (audience `istio-ca`).
//! istiod signs the identity it reads from the token, whatever the CSR says, so the returned
//! leaf's SAN is checked against the identity we were configured with: a mismatch means the
//! flags and the pod disagree, and is refused with both identities named.
//!
//! | piece | where it comes from |
//! |---|---|
//! | server trust | the root file (`/var/run/secrets/istio/root-cert.pem`, ConfigMap `istio-ca-root-cert`) |
//! | `authorization: Bearer <token>` | the token file, read at every call (kubelet rotates it) |
//! | `clusterid: <id>` | configuration (Istio's default `Kubernetes`) |
//! | request | `csr` (PEM), `validity_duration` (seconds); see `grpc.rs` |
//! | response | the chain, leaf first, root last; we present leaf and intermediates |
//! | our trust bundle | the root file (what peers' chains must end in) |
//!
//! One call every half-life needs no channel kept open: each [`IstiodCa::fetch`] dials a new
//! connection, so the root file is re-read each time and a rotated root is used at once.
//! `renew.rs` keeps the [`CertStore`](super::CertStore) fed: renewal at half of the remaining
//! lifetime, retries with backoff that keep the current pair in service, and an early renewal
//! when the root file no longer matches the trust bundle in service.

mod grpc;
pub(crate) mod renew;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::{TlsError, WorkloadCerts};
use crate::identity::SpiffeId;

#[cfg(any(test, feature = "test-helpers"))]
pub(crate) use grpc::{CREATE_CERTIFICATE_PATH, decode_request, encode_response};

/// Time allowed for one call: connect, handshake, request and response.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to ask istiod for the waypoint's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstiodCa {
    /// `host:port` of istiod's CA (`istiod.istio-system.svc:15012`); the host is also the name
    /// istiod's serving certificate must carry.
    pub address: String,
    /// The projected ServiceAccount token (audience `istio-ca`), re-read at every call.
    pub token_path: PathBuf,
    /// The mesh's root certificates: they verify istiod, and are the waypoint's trust bundle.
    pub root_path: PathBuf,
    /// Sent as `clusterid` metadata: the cluster whose API server istiod asks to check the token.
    pub cluster_id: String,
    /// The identity we ask for and accept: `spiffe://<trust domain>/ns/<namespace>/sa/<sa>`.
    pub identity: SpiffeId,
    /// The validity asked for; istiod may shorten it to its maximum.
    pub validity: Duration,
}

/// Why a certificate could not be obtained from istiod.
#[derive(Debug, thiserror::Error)]
pub enum IstiodError {
    /// The token or root file could not be read.
    #[error("cannot read the CA {what} {}: {error}", path.display())]
    Read {
        /// `token` or `root certificate` file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// The token file is empty.
    #[error("the CA token file {} is empty", path.display())]
    EmptyToken {
        /// The file.
        path: PathBuf,
    },
    /// The root file holds no usable certificate.
    #[error("the CA root certificate file {}: {reason}", path.display())]
    Roots {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA address is not `host:port`.
    #[error("CA address {address:?}: {reason}")]
    Address {
        /// The address as configured.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key or CSR could not be generated.
    #[error("cannot generate the certificate signing request: {0}")]
    Csr(String),
    /// The connection, TLS handshake or HTTP/2 exchange with the CA failed.
    #[error("CA {address}: {reason}")]
    Transport {
        /// The CA address.
        address: String,
        /// What failed.
        reason: String,
    },
    /// The CA answered with a gRPC error.
    #[error("CA {address} refused: {} ({code}): {message}", grpc::status_name(*code))]
    Status {
        /// The CA address.
        address: String,
        /// The gRPC status code.
        code: u32,
        /// The `grpc-message` sent with it.
        message: String,
    },
    /// The CA's answer is not a well-formed response.
    #[error("CA {address} sent a malformed response: {reason}")]
    Protocol {
        /// The CA address.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The returned chain failed the checks every workload certificate passes.
    #[error("certificate from the CA: {0}")]
    Certificate(TlsError),
    /// The CA signed another identity than ours: istiod takes it from the token, so the
    /// configured trust domain, namespace or service account disagree with the pod's.
    #[error(
        "the CA issued a certificate for {issued}, but this waypoint is configured as {expected} (check --trust-domain, POD_NAMESPACE and SERVICE_ACCOUNT against the pod's service account token)"
    )]
    IdentityMismatch {
        /// The identity we asked for.
        expected: SpiffeId,
        /// The identity the certificate names.
        issued: SpiffeId,
    },
}

impl IstiodError {
    /// Whether asking again cannot help: the configuration is wrong.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(
            self,
            IstiodError::IdentityMismatch { .. } | IstiodError::Address { .. }
        )
    }
}

impl IstiodCa {
    /// Asks istiod once for a certificate: a new key, a CSR for [`IstiodCa::identity`], the
    /// call on a new connection. The result passed [`WorkloadCerts`]'s checks and names our
    /// identity; its trust bundle is the root file.
    pub async fn fetch(&self) -> Result<WorkloadCerts, IstiodError> {
        let transport = |reason: String| IstiodError::Transport {
            address: self.address.clone(),
            reason,
        };
        tokio::time::timeout(CALL_TIMEOUT, self.fetch_once())
            .await
            .map_err(|_| transport(format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    async fn fetch_once(&self) -> Result<WorkloadCerts, IstiodError> {
        let token = read(&self.token_path, "token").await?;
        let token = String::from_utf8_lossy(&token).trim().to_owned();
        if token.is_empty() {
            return Err(IstiodError::EmptyToken {
                path: self.token_path.clone(),
            });
        }
        let roots_pem = read(&self.root_path, "root certificate").await?;
        let roots = self.parse_roots(&roots_pem)?;
        let (key, csr) = self.csr()?;
        let body = grpc::create_certificate_request(
            &csr,
            i64::try_from(self.validity.as_secs()).unwrap_or(i64::MAX),
        );
        let chain = self.call(roots, &token, body).await?;
        self.accept(&chain, &key, &roots_pem)
    }

    fn parse_roots(&self, pem: &[u8]) -> Result<rustls::RootCertStore, IstiodError> {
        let err = |reason: String| IstiodError::Roots {
            path: self.root_path.clone(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| err(format!("bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| err(format!("bad certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(err("no certificate".to_owned()));
        }
        Ok(roots)
    }

    /// A P-256 key and a CSR with an empty subject and our SPIFFE id as its one URI SAN.
    fn csr(&self) -> Result<(KeyPair, String), IstiodError> {
        let csr_err = |e: rcgen::Error| IstiodError::Csr(e.to_string());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(csr_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            self.identity.to_string().try_into().map_err(csr_err)?,
        )];
        let csr = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(csr_err)?;
        Ok((key, csr))
    }

    fn host_port(&self) -> Result<(String, u16), IstiodError> {
        let err = |reason: &str| IstiodError::Address {
            address: self.address.clone(),
            reason: reason.to_owned(),
        };
        let (host, port) = self
            .address
            .rsplit_once(':')
            .ok_or_else(|| err("expected host:port"))?;
        let port = port.parse().map_err(|_| err("the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        Ok((host.to_owned(), port))
    }

    async fn call(
        &self,
        roots: rustls::RootCertStore,
        token: &str,
        body: Bytes,
    ) -> Result<Vec<String>, IstiodError> {
        let transport = |reason: String| IstiodError::Transport {
            address: self.address.clone(),
            reason,
        };
        let (host, port) = self.host_port()?;
        let server_name = ServerName::try_from(host.clone()).map_err(|e| IstiodError::Address {
            address: self.address.clone(),
            reason: e.to_string(),
        })?;
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| transport(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![super::ALPN_H2.to_vec()];
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| transport(format!("connect: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(server_name, tcp)
            .await
            .map_err(|e| transport(format!("TLS handshake: {e}")))?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| transport(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(connection);
        let request = http::Request::post(format!(
            "https://{}{}",
            self.address,
            grpc::CREATE_CERTIFICATE_PATH
        ))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header("clusterid", &self.cluster_id)
        .body(Full::new(body))
        .map_err(|e| transport(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(format!("request: {e}")))?;
        if response.status() != http::StatusCode::OK {
            return Err(transport(format!("HTTP status {}", response.status())));
        }
        // A call that fails at once answers with headers only ("Trailers-Only"), the status in
        // the headers.
        self.check_status(response.headers())?;
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(format!("response body: {e}")))?;
        match collected.trailers() {
            Some(trailers) => self.check_status(trailers)?,
            None => {
                return Err(IstiodError::Protocol {
                    address: self.address.clone(),
                    reason: "no grpc-status trailer".to_owned(),
                });
            }
        }
        grpc::create_certificate_response(&collected.to_bytes()).map_err(|reason| {
            IstiodError::Protocol {
                address: self.address.clone(),
                reason,
            }
        })
    }

    /// An error when `headers` carry a non-zero `grpc-status`.
    fn check_status(&self, headers: &http::HeaderMap) -> Result<(), IstiodError> {
        let Some(status) = headers.get("grpc-status") else {
            return Ok(());
        };
        let code = status
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| IstiodError::Protocol {
                address: self.address.clone(),
                reason: format!("grpc-status {status:?} is not a number"),
            })?;
        if code == 0 {
            return Ok(());
        }
        // grpc-message is percent-encoded UTF-8.
        let message = headers
            .get("grpc-message")
            .map(|m| {
                percent_encoding::percent_decode(m.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        Err(IstiodError::Status {
            address: self.address.clone(),
            code,
            message,
        })
    }

    /// Checks the returned chain and turns it into the waypoint's credentials.
    fn accept(
        &self,
        chain: &[String],
        key: &KeyPair,
        roots_pem: &[u8],
    ) -> Result<WorkloadCerts, IstiodError> {
        // Leaf first, root last: the root is in our trust bundle already and is not presented.
        let presented = match chain {
            [] => {
                return Err(IstiodError::Protocol {
                    address: self.address.clone(),
                    reason: "empty certificate chain".to_owned(),
                });
            }
            [leaf] => std::slice::from_ref(leaf),
            [without_root @ .., _root] => without_root,
        };
        let mut chain_pem = String::new();
        for pem in presented {
            chain_pem.push_str(pem.trim_end());
            chain_pem.push('\n');
        }
        let certs = WorkloadCerts::from_pem(
            chain_pem.as_bytes(),
            key.serialize_pem().as_bytes(),
            roots_pem,
        )
        .map_err(IstiodError::Certificate)?;
        if certs.identity != self.identity {
            return Err(IstiodError::IdentityMismatch {
                expected: self.identity.clone(),
                issued: certs.identity,
            });
        }
        Ok(certs)
    }
}

async fn read(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>, IstiodError> {
    tokio::fs::read(path)
        .await
        .map_err(|error| IstiodError::Read {
            what,
            path: path.to_owned(),
            error,
        })
}

#[cfg(test)]
mod tests;
