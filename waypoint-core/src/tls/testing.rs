//! An in-process stand-in for istiod's CA (feature `test-helpers`): the
//! `IstioCertificateService/CreateCertificate` call over gRPC, HTTP/2 and TLS on loopback,
//! signing with a [`DevCa`]. Tests point an [`IstiodCa`](super::IstiodCa) (or `waypoint run
//! --ca-address`) at it, read what it was sent, and make it misbehave: sign another identity,
//! answer with a gRPC error.
//!
//! Like istiod, it signs the CSR's public key for an identity of its choosing (here the CSR's own
//! SAN unless told otherwise), for the validity asked (24 h when none), and answers the chain
//! leaf first, root last. Its serving certificate names `127.0.0.1` and `localhost`, signed by
//! the same CA, so the CA's root file verifies it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::istiod::{CREATE_CERTIFICATE_PATH, decode_request, encode_response};
use super::{DevCa, TlsError};
use crate::identity::SpiffeId;

const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// One `CreateCertificate` call as the fake CA received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaRequest {
    /// The `authorization` header (`Bearer <token>`).
    pub authorization: Option<String>,
    /// The `clusterid` header.
    pub cluster_id: Option<String>,
    /// The URI SAN of the CSR.
    pub csr_identity: Option<String>,
    /// `validity_duration`, in seconds.
    pub validity_secs: i64,
}

#[derive(Default)]
struct Behaviour {
    requests: Vec<CaRequest>,
    issue_as: Option<SpiffeId>,
    failures: VecDeque<(u32, String)>,
}

/// A fake istiod CA serving on `127.0.0.1`; stops accepting when dropped.
pub struct FakeIstiod {
    addr: SocketAddr,
    ca: Arc<DevCa>,
    behaviour: Arc<Mutex<Behaviour>>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeIstiod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIstiod")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeIstiod {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeIstiod {
    /// Starts serving on a free loopback port, signing with `ca`.
    pub async fn start(ca: DevCa) -> Result<Self, TlsError> {
        let serving = ca.loopback_server_cert()?;
        let chain = CertificateDer::pem_slice_iter(serving.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Ca(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
            .map_err(|e| TlsError::Ca(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        tls.alpn_protocols = vec![super::ALPN_H2.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| TlsError::Ca(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TlsError::Ca(e.to_string()))?;
        let ca = Arc::new(ca);
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let accept = tokio::spawn(serve(listener, acceptor, ca.clone(), behaviour.clone()));
        Ok(FakeIstiod {
            addr,
            ca,
            behaviour,
            accept,
        })
    }

    /// Where it listens (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root certificate: what the root file must hold to trust it and its certificates.
    pub fn root_pem(&self) -> String {
        self.ca.root_pem()
    }

    /// The calls received so far, in order.
    pub fn requests(&self) -> Vec<CaRequest> {
        self.lock().requests.clone()
    }

    /// Signs `id` from now on instead of the CSR's identity (`None`: the CSR's again), as istiod
    /// signs the token's identity.
    pub fn issue_as(&self, id: Option<SpiffeId>) {
        self.lock().issue_as = id;
    }

    /// Answers the next call with gRPC status `code` and `message` (queued: call again for
    /// several failures).
    pub fn fail_next(&self, code: u32, message: &str) {
        self.lock().failures.push_back((code, message.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ca: Arc<DevCa>,
    behaviour: Arc<Mutex<Behaviour>>,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, ca, behaviour) = (acceptor.clone(), ca.clone(), behaviour.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let (ca, behaviour) = (ca.clone(), behaviour.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(request, &ca, &behaviour).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

type GrpcBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn answer(
    request: http::Request<hyper::body::Incoming>,
    ca: &DevCa,
    behaviour: &Mutex<Behaviour>,
) -> http::Response<GrpcBody> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (authorization, cluster_id) = (header("authorization"), header("clusterid"));
    if request.uri().path() != CREATE_CERTIFICATE_PATH {
        return status_only(12, "unknown method");
    }
    let Ok(body) = request.into_body().collect().await else {
        return status_only(13, "unreadable request body");
    };
    let (csr, validity_secs) = match decode_request(&body.to_bytes()) {
        Ok(decoded) => decoded,
        Err(reason) => return status_only(3, &reason),
    };
    let csr_identity = csr_uri(&csr);
    let (failure, issue_as) = {
        let mut behaviour = behaviour.lock().unwrap_or_else(PoisonError::into_inner);
        behaviour.requests.push(CaRequest {
            authorization,
            cluster_id,
            csr_identity: csr_identity.clone(),
            validity_secs,
        });
        (behaviour.failures.pop_front(), behaviour.issue_as.clone())
    };
    if let Some((code, message)) = failure {
        return status_only(code, &message);
    }
    let Some(identity) = issue_as.map(|id| id.to_string()).or(csr_identity) else {
        return status_only(3, "the CSR names no identity");
    };
    let validity = u64::try_from(validity_secs)
        .ok()
        .filter(|s| *s > 0)
        .map_or(DEFAULT_VALIDITY, Duration::from_secs);
    let leaf = match ca.sign_csr(&csr, &identity, validity) {
        Ok(leaf) => leaf,
        Err(error) => return status_only(3, &error.to_string()),
    };
    let body = Full::new(encode_response(&[leaf, ca.root_pem()]))
        .with_trailers(async {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            Some(Ok(trailers))
        })
        .boxed();
    grpc_response(body)
}

/// The URI SAN of a PEM CSR, if it parses and has one.
fn csr_uri(csr: &str) -> Option<String> {
    let params = rcgen::CertificateSigningRequestParams::from_pem(csr).ok()?;
    params
        .params
        .subject_alt_names
        .into_iter()
        .find_map(|san| match san {
            rcgen::SanType::URI(uri) => Some(uri.as_str().to_owned()),
            _ => None,
        })
}

/// gRPC's "Trailers-Only" answer: the status in the headers and no body.
fn status_only(code: u32, message: &str) -> http::Response<GrpcBody> {
    let mut response = grpc_response(Full::new(Bytes::new()).boxed());
    let encoded =
        percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let headers = response.headers_mut();
    headers.insert("grpc-status", http::HeaderValue::from(code));
    if let Ok(value) = http::HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
    response
}

fn grpc_response(body: GrpcBody) -> http::Response<GrpcBody> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}
