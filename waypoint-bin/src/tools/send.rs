//! A client that talks to a sandwich listener the way a co-located ztunnel does: it connects,
//! writes a PROXY v2 header naming the source, the original destination and the source's
//! SPIFFE identity, then sends HTTP requests on the same connection.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use waypoint_core::identity::SpiffeId;
use waypoint_core::tls::{CertPaths, CertStore, ExpectedIdentity};
use waypoint_core::transport::BoxedIo;
use waypoint_core::transport::listener::ListenAddr;
use waypoint_core::upstream::{HboneClientOptions, HbonePool, TunnelSource};
use waypoint_core::wire::proxy_protocol::encode_v2;

/// PROXY TLV type of the source SPIFFE identity (Istio's choice).
pub const TLV_IDENTITY: u8 = 0xD0;
/// Default PROXY TLV type of the source workload metadata (baggage).
pub const TLV_METADATA: u8 = 0xE0;

/// What the PROXY header says about the connection.
#[derive(Clone, Debug)]
pub struct ProxyClaims {
    /// Source address (the client ztunnel's address in a real mesh).
    pub source: SocketAddr,
    /// The original destination (the Service VIP:port the client dialled).
    pub destination: SocketAddr,
    /// Source identity for TLV 0xD0; `None` sends no identity (unauthenticated).
    pub identity: Option<String>,
    /// Source workload metadata as W3C baggage for the metadata TLV.
    pub baggage: Option<String>,
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connecting or writing failed.
    #[error("cannot reach {0}: {1}")]
    Io(String, std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Request(String),
    /// The HBONE tunnel could not be opened.
    #[error("HBONE tunnel through {0} failed: {1}")]
    Tunnel(String, String),
}

/// Connects to `to` and writes the PROXY v2 header for `claims`.
pub async fn connect(to: &ListenAddr, claims: &ProxyClaims) -> Result<BoxedIo, SendError> {
    let mut tlvs: Vec<(u8, &[u8])> = Vec::new();
    if let Some(id) = &claims.identity {
        tlvs.push((TLV_IDENTITY, id.as_bytes()));
    }
    if let Some(baggage) = &claims.baggage {
        tlvs.push((TLV_METADATA, baggage.as_bytes()));
    }
    let header = encode_v2(claims.source, claims.destination, &tlvs);
    let err = |e| SendError::Io(to.to_string(), e);
    let mut io: BoxedIo = match to {
        ListenAddr::Tcp(addr) => {
            let s = TcpStream::connect(addr).await.map_err(err)?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        ListenAddr::Unix(path) => Box::new(UnixStream::connect(path).await.map_err(err)?),
    };
    io.write_all(&header).await.map_err(err)?;
    Ok(io)
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Host header (defaults to the destination address).
    pub host: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
    /// Use HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub h2c: bool,
}

/// Sends one request over a new connection to `to` and returns the whole response.
pub async fn send(
    to: &ListenAddr,
    claims: &ProxyClaims,
    spec: &RequestSpec,
) -> Result<Response<Bytes>, SendError> {
    let io = connect(to, claims).await?;
    exchange(io, claims.destination, spec).await
}

/// How to reach a waypoint over HBONE, as a client ztunnel does.
#[derive(Clone, Debug)]
pub struct HboneClaims {
    /// The waypoint's HBONE address (`<waypoint ip>:15008`).
    pub via: SocketAddr,
    /// The client's certificates (Istio layout: `cert-chain.pem`, `key.pem`, `root-cert.pem`).
    pub certs: CertPaths,
    /// The identity the waypoint must present.
    pub server_identity: SpiffeId,
    /// The original destination (`CONNECT` authority: the Service VIP:port).
    pub destination: SocketAddr,
    /// The original client's address and metadata, sent as `forwarded` and `baggage`.
    pub source: TunnelSource,
}

/// Opens an HBONE tunnel to the waypoint and sends one request through it.
pub async fn send_hbone(
    claims: &HboneClaims,
    spec: &RequestSpec,
) -> Result<Response<Bytes>, SendError> {
    let via = claims.via.to_string();
    let certs = CertStore::load(claims.certs.clone(), Vec::new())
        .map_err(|e| SendError::Tunnel(via.clone(), e.to_string()))?;
    let pool = HbonePool::new(certs, HboneClientOptions::default());
    let expected = [ExpectedIdentity::Exact(claims.server_identity.clone())];
    let stream = pool
        .connect_via(claims.via, claims.destination, &expected, &claims.source)
        .await
        .map_err(|e| SendError::Tunnel(via, e.to_string()))?;
    exchange(Box::new(stream), claims.destination, spec).await
}

/// Sends `spec` as HTTP/1.1 (or h2c) on `io` and reads the whole response.
async fn exchange(
    io: BoxedIo,
    destination: SocketAddr,
    spec: &RequestSpec,
) -> Result<Response<Bytes>, SendError> {
    let host = spec.host.clone().unwrap_or_else(|| destination.to_string());
    let mut builder = Request::builder().method(spec.method.clone());
    builder = if spec.h2c {
        builder
            .uri(format!("http://{host}{}", spec.path))
            .version(http::Version::HTTP_2)
    } else {
        builder.uri(&spec.path).header(http::header::HOST, &host)
    };
    for (name, value) in &spec.headers {
        let name =
            HeaderName::try_from(name.as_str()).map_err(|e| SendError::Request(e.to_string()))?;
        let value =
            HeaderValue::try_from(value.as_str()).map_err(|e| SendError::Request(e.to_string()))?;
        builder = builder.header(name, value);
    }
    let req = builder
        .body(Full::new(spec.body.clone()))
        .map_err(|e| SendError::Request(e.to_string()))?;
    let io = TokioIo::new(io);
    let resp = if spec.h2c {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, body))
}
