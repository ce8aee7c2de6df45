//! Sending a test's requests the way traffic reaches a sandwiched waypoint: a TCP connection
//! to its PROXY listener, a PROXY v2 header naming the client and the original destination (a
//! Gateway address, a Service ClusterIP, or a pod IP for a mesh request addressed to a pod),
//! then one HTTP exchange: plain, or inside TLS for `https` requests to HTTPS listeners.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::Value;
use waypoint_bin::tools::send::{ProxyClaims, connect};
use waypoint_core::http::authority;
use waypoint_core::transport::BoxedIo;
use waypoint_core::transport::listener::ListenAddr;

use crate::case::Request;

/// How a request reaches the waypoint.
#[derive(Clone, Debug)]
pub struct Route {
    /// The waypoint's PROXY listener.
    pub waypoint: SocketAddr,
    /// What the PROXY header says.
    pub claims: ProxyClaims,
    /// The Host to send when the request names none.
    pub default_host: String,
    /// Straight to `claims.destination`, bypassing the waypoint: only for the harness's own
    /// checks of its echo servers. Test requests always pass the waypoint, pod-addressed ones
    /// included (ztunnel sends those to the pod's waypoint when it takes workload traffic).
    pub direct: bool,
    /// The pod `(namespace, name)` a mesh request is addressed to by IP, when it is: its PROXY
    /// destination is the pod IP and port, and the waypoint must count it as that workload's.
    pub pod: Option<(String, String)>,
    /// The certificate (PEM) `https` requests trust.
    pub certificate: Option<String>,
}

/// Opens the connection a request travels on: to the waypoint with a PROXY v2 header, or
/// straight to the destination when the route bypasses the waypoint.
pub async fn open(route: &Route) -> Result<BoxedIo, String> {
    if route.direct {
        let stream = tokio::net::TcpStream::connect(route.claims.destination)
            .await
            .map_err(|e| format!("connecting to {}: {e}", route.claims.destination))?;
        return Ok(Box::new(stream));
    }
    connect(&ListenAddr::Tcp(route.waypoint), &route.claims)
        .await
        .map_err(|e| e.to_string())
}

/// What came back.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Response status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The echo backend's description of the request it received, on 2xx from a backend.
    pub echo: Option<Value>,
    /// The body as text (for messages).
    pub body: String,
}

/// How long one exchange may take (timeout tests wait up to a few seconds).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends `req` (with `extra` headers added) and captures the response.
pub async fn send(
    route: &Route,
    req: &Request,
    extra: &[(String, String)],
) -> Result<Captured, String> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(route, req, extra))
        .await
        .map_err(|_| format!("no response within {} s", EXCHANGE_TIMEOUT.as_secs()))?
}

/// Wraps the PROXY'd stream in TLS: the request's SNI (default the host without its port), ALPN
/// `h2` for HTTP/2 else `http/1.1`, trusting only the case's certificate.
async fn tls_connect(
    io: BoxedIo,
    route: &Route,
    req: &Request,
    host: &str,
    http2: bool,
) -> Result<BoxedIo, String> {
    let cert = route
        .certificate
        .as_deref()
        .ok_or("an https request needs the case's certificate")?;
    let alpn: &[u8] = if http2 { b"h2" } else { b"http/1.1" };
    let config = crate::tls::client_config(cert, &[alpn])?;
    let sni = req
        .sni
        .clone()
        .unwrap_or_else(|| authority::strip_port(host).to_owned());
    let name = ServerName::try_from(sni.clone()).map_err(|e| format!("SNI `{sni}`: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(|e| format!("TLS handshake (SNI {sni}): {e}"))?;
    Ok(Box::new(stream))
}

async fn exchange(
    route: &Route,
    req: &Request,
    extra: &[(String, String)],
) -> Result<Captured, String> {
    let io = open(route).await?;
    let http2 = req
        .protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("HTTP/2"));
    let host = req
        .host
        .clone()
        .unwrap_or_else(|| route.default_host.clone());
    let io = if req.is_https() {
        tls_connect(io, route, req, &host, http2).await?
    } else {
        io
    };
    let scheme = if req.is_https() { "https" } else { "http" };
    let method = Method::from_bytes(req.method.as_deref().unwrap_or("GET").as_bytes())
        .map_err(|e| format!("method: {e}"))?;
    let mut builder = http::Request::builder().method(method);
    // A Host header among the request's headers overrides the host the request is sent to
    // (a mesh client calling one Service with another's name).
    let explicit_host = req.headers.keys().any(|k| k.eq_ignore_ascii_case("host"));
    if http2 {
        builder = builder.uri(format!("{scheme}://{host}{}", req.path));
    } else {
        builder = builder.uri(&req.path);
        if !explicit_host {
            builder = builder.header(http::header::HOST, &host);
        }
    }
    for (name, value) in req.headers.iter().chain(extra.iter().map(|(k, v)| (k, v))) {
        let name =
            HeaderName::try_from(name.as_str()).map_err(|e| format!("header {name}: {e}"))?;
        let value =
            HeaderValue::try_from(value.as_str()).map_err(|e| format!("header value: {e}"))?;
        builder = builder.header(name, value);
    }
    let body = Full::new(Bytes::from(req.body.clone().unwrap_or_default()));
    let request = builder.body(body).map_err(|e| format!("request: {e}"))?;
    let resp = if http2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP/2 exchange: {e}"))?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP/1.1 exchange: {e}"))?
    };
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    let echo = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(|v| v.get("pod").is_some());
    Ok(Captured {
        status: parts.status,
        headers: parts.headers,
        echo,
        body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
    })
}
