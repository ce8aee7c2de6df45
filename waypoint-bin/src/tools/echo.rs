//! An echo backend that answers like the Gateway API conformance echo server (echo-basic), so a
//! person or a test can see what the waypoint sent. One port serves HTTP/1.1 and h2c, and, when
//! enabled, the conformance gRPC echo service.
//!
//! Paths, as upstream: `/health` answers `OK`; `/status/NNN` answers status NNN with no body;
//! `/retry/?uuid=U&succeedAfter=N[&responseCode=C][&delayRetry=D]` fails the first N requests
//! of uuid U (with status C, or by resetting the connection when C is absent), then echoes;
//! `/ws` is a WebSocket echo; anything else echoes the request as JSON (`path`, `host`,
//! `method`, `proto`, `headers`, `httpPort`, `namespace`, `ingress`, `service`, `pod`).
//! `?delay=D` (Go duration: `500ms`, `1.5s`, `1m`) waits before echoing; request header
//! `X-Echo-Set-Header: Name:Val,Name2:Val2` becomes response headers.
//!
//! With a TLS configuration the backend terminates TLS itself (its own certificate, as
//! upstream's `TLS_SERVER_CERT` backends do) and reports what it saw under `tls`. In TCP mode
//! ([`tcp`], upstream's `TCP_ECHO_SERVER`) it speaks upstream's line protocol instead of HTTP.

pub mod grpc;
pub mod proto;
mod record;
mod retry;
pub mod tcp;
mod ws;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use waypoint_core::http::authority;

pub use record::{DEFAULT_CAPACITY as DEFAULT_LOG_CAPACITY, LoggedRequest, RequestLog};
pub use retry::DEFAULT_RETRY_UUIDS;

/// The response body type of the echo backend.
type EchoBody = BoxBody<Bytes, Infallible>;

/// Who the echo backend says it is (the conformance tests look at `pod` to tell backends apart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoIdentity {
    /// Reported as `pod`.
    pub pod: String,
    /// Reported as `namespace`.
    pub namespace: String,
    /// Reported as `service`.
    pub service: String,
}

/// How an echo backend behaves beyond its identity.
#[derive(Clone, Debug)]
pub struct EchoOptions {
    /// Serve the gRPC echo service (h2c requests with content type `application/grpc`).
    pub grpc: bool,
    /// Where to record every request served (shared with the caller).
    pub log: Option<RequestLog>,
    /// How many `/retry/` uuids are remembered at once (the oldest is forgotten past this).
    pub retry_uuids: usize,
    /// Terminate TLS with this configuration before serving (HTTP or TCP mode).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Speak upstream's TCP line protocol instead of HTTP, reporting these ports.
    pub tcp: Option<tcp::TcpEcho>,
    /// Answer only HTTP/2 (or an `Upgrade: h2c` request), as upstream's h2c port does: any
    /// other request gets 400 `Expected h2c request`.
    pub h2c_only: bool,
}

impl Default for EchoOptions {
    fn default() -> Self {
        Self {
            grpc: false,
            log: None,
            retry_uuids: DEFAULT_RETRY_UUIDS,
            tls: None,
            tcp: None,
            h2c_only: false,
        }
    }
}

impl EchoOptions {
    /// Turns the gRPC echo service on or off.
    pub fn with_grpc(mut self, grpc: bool) -> Self {
        self.grpc = grpc;
        self
    }

    /// Records every request in `log`.
    pub fn with_log(mut self, log: RequestLog) -> Self {
        self.log = Some(log);
        self
    }

    /// Terminates TLS with `config` on every connection before serving it.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Serves upstream's TCP line protocol instead of HTTP.
    pub fn with_tcp(mut self, ports: tcp::TcpEcho) -> Self {
        self.tcp = Some(ports);
        self
    }

    /// Refuses requests that are neither HTTP/2 nor an h2c upgrade (see
    /// [`EchoOptions::h2c_only`]).
    pub fn with_h2c_only(mut self, h2c_only: bool) -> Self {
        self.h2c_only = h2c_only;
        self
    }
}

/// A running echo backend started by [`spawn_with`]; dropping it stops the backend and closes
/// its connections.
#[derive(Debug)]
#[must_use = "dropping the handle stops the echo backend"]
pub struct EchoServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// The address the backend listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Keeps the backend running until the process ends, giving up the handle.
    pub fn detach(self) -> SocketAddr {
        let addr = self.addr;
        std::mem::forget(self);
        addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every connection of one backend shares.
struct Backend {
    identity: Arc<EchoIdentity>,
    grpc: bool,
    log: Option<RequestLog>,
    retry: retry::RetryCounters,
    http_port: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tcp: Option<tcp::TcpEcho>,
    h2c_only: bool,
    /// Resolves (with an error) when the backend stops: upgraded WebSocket tasks watch it.
    stopped: watch::Receiver<()>,
}

/// Serves the echo backend (HTTP only) on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, identity: EchoIdentity) {
    serve_with(listener, identity, EchoOptions::default()).await
}

/// Serves the echo backend on `listener` with `options` until the future is dropped; dropping
/// it also closes every connection it accepted.
pub async fn serve_with(listener: TcpListener, identity: EchoIdentity, options: EchoOptions) {
    let (_stop, stopped) = watch::channel(());
    let backend = Arc::new(Backend {
        identity: Arc::new(identity),
        grpc: options.grpc,
        log: options.log,
        retry: retry::RetryCounters::new(options.retry_uuids),
        http_port: listener
            .local_addr()
            .map(|a| a.port().to_string())
            .unwrap_or_default(),
        tls: options.tls.map(tokio_rustls::TlsAcceptor::from),
        tcp: options.tcp,
        h2c_only: options.h2c_only,
        stopped,
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, backend.clone()));
                }
                // Out of file descriptors and the like: wait instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Binds `addr` and serves the echo backend (HTTP only) on it in a background task that lives
/// as long as the runtime; returns the bound address.
pub async fn spawn(addr: SocketAddr, identity: EchoIdentity) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    Ok(spawn_with(listener, identity, EchoOptions::default())?.detach())
}

/// Serves the echo backend on an already-bound `listener` in a background task; the returned
/// handle stops it when dropped.
pub fn spawn_with(
    listener: TcpListener,
    identity: EchoIdentity,
    options: EchoOptions,
) -> io::Result<EchoServer> {
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve_with(listener, identity, options));
    Ok(EchoServer { addr, task })
}

/// A TCP stream that can be told to end with a reset (RST) instead of a FIN when dropped, as
/// upstream's `/retry/` does for its connection-failure mode.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // Zero linger makes close() send RST; done only now so normal closes stay clean.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The service's error: abort the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection reset on purpose (/retry/)")]
struct ResetConnection;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection(stream: TcpStream, backend: Arc<Backend>) {
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(AtomicBool::new(false));
    let io = ResettableStream {
        inner: stream,
        reset: reset.clone(),
    };
    let Some(acceptor) = backend.tls.clone() else {
        match &backend.tcp {
            Some(ports) => tcp::serve(io, &backend.identity, ports, None).await,
            None => serve_http(io, backend, reset, None).await,
        }
        return;
    };
    // A failed or stalled handshake just ends the connection, as Go's server drops it.
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await else {
        return;
    };
    let seen = tcp::TlsSeen::of(tls.get_ref().1);
    match &backend.tcp {
        Some(ports) => tcp::serve(tls, &backend.identity, ports, Some(seen)).await,
        None => serve_http(tls, backend, reset, Some(Arc::new(seen))).await,
    }
}

async fn serve_http<I>(
    io: I,
    backend: Arc<Backend>,
    reset: Arc<AtomicBool>,
    tls: Option<Arc<tcp::TlsSeen>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let backend = backend.clone();
        let reset = reset.clone();
        let tls = tls.clone();
        async move { handle(req, &backend, &reset, tls.as_deref()).await }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    backend: &Backend,
    reset: &AtomicBool,
    tls: Option<&tcp::TlsSeen>,
) -> Result<Response<EchoBody>, ResetConnection> {
    // Upstream's h2c port checks before its echo handler, so a refused request is not logged.
    let h2c_upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .is_some_and(|u| u == "h2c");
    if backend.h2c_only && req.version() != Version::HTTP_2 && !h2c_upgrade {
        return Ok(plain(StatusCode::BAD_REQUEST, "Expected h2c request"));
    }
    if let Some(log) = &backend.log {
        log.record(logged(&req, &backend.identity));
    }
    if backend.grpc && req.version() == Version::HTTP_2 && grpc::is_grpc(req.headers()) {
        return Ok(grpc::answer(req, &backend.identity).await);
    }
    // Upstream routes on the path with `//` collapsed (its "preserveSlashes" wrapper) but
    // reports the request target unchanged.
    let path = req.uri().path();
    let route = if path.contains("//") {
        path.replace("//", "/")
    } else {
        path.to_owned()
    };
    match route.as_str() {
        "/health" => Ok(plain(StatusCode::OK, "OK")),
        "/ws" => Ok(websocket(req, backend)),
        r if r.starts_with("/status/") => Ok(status(&req)),
        r if r.starts_with("/retry/") => retry(req, backend, reset, tls).await,
        _ => Ok(echo(req, backend, tls).await),
    }
}

fn logged(req: &Request<Incoming>, identity: &Arc<EchoIdentity>) -> LoggedRequest {
    LoggedRequest {
        at: Instant::now(),
        backend: identity.clone(),
        method: req.method().as_str().to_owned(),
        path: target(req).to_owned(),
        host: host(req),
        proto: proto(req.version()).to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    }
}

/// The request target as received (Go's `RequestURI`).
fn target<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// Go's `r.Host`: the URI authority (HTTP/2 `:authority`, HTTP/1.1 absolute form) without
/// userinfo, else the `Host` header; the waypoint reads a request's host the same way.
fn host<B>(req: &Request<B>) -> String {
    authority::request_authority(req)
        .unwrap_or_default()
        .to_owned()
}

/// Go's `r.Proto`.
fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<EchoBody> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *resp.status_mut() = status;
    resp
}

/// An error as upstream reports one: JSON `{"message": ...}`.
fn json_error(status: StatusCode, message: &str) -> Response<EchoBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    json_headers(&mut resp);
    resp
}

fn json_headers(resp: &mut Response<EchoBody>) {
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

/// `/status/NNN`: exactly three digits and no query, else 400; no body.
fn status<B>(req: &Request<B>) -> Response<EchoBody> {
    let code = target(req)
        .strip_prefix("/status/")
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .map_or(StatusCode::BAD_REQUEST, status_as_go_sends);
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = code;
    resp
}

/// The final status Go's server sends for `WriteHeader(code)`: 1xx codes are informational,
/// so the answer becomes 200; codes below 100 are refused (400 here).
fn status_as_go_sends(code: u16) -> StatusCode {
    match code {
        100..=199 => StatusCode::OK,
        _ => StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
    }
}

/// The first value of query parameter `key`, decoded as Go's `url.Values.Get` does.
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (url_decode(k) == key).then(|| url_decode(v))
        })
        .next()
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `time.ParseDuration`, for `delay=` and `delayRetry=`: a sequence of decimal numbers
/// with units (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), optionally signed. Negative durations
/// are accepted and wait for nothing, as in Go.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration \"{value}\"");
    let (negative, mut rest) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration \"{value}\""))?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => {
                return Err(format!(
                    "time: unknown unit \"{unit}\" in duration \"{value}\""
                ));
            }
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// Waits for query parameter `key`'s duration, if present; the error names the bad value.
async fn delay(query: &str, key: &str) -> Result<(), String> {
    if let Some(value) = query_value(query, key).filter(|v| !v.is_empty()) {
        tokio::time::sleep(parse_duration(&value)?).await;
    }
    Ok(())
}

async fn retry(
    req: Request<Incoming>,
    backend: &Backend,
    reset: &AtomicBool,
    tls: Option<&tcp::TlsSeen>,
) -> Result<Response<EchoBody>, ResetConnection> {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let Some(uuid) = query_value(&query, "uuid").filter(|u| !u.is_empty()) else {
        return Ok(plain(StatusCode::BAD_REQUEST, "uuid is required"));
    };
    let Some(succeed_after) =
        query_value(&query, "succeedAfter").and_then(|n| n.parse::<i64>().ok())
    else {
        return Ok(plain(StatusCode::BAD_REQUEST, "succeedAfter is required"));
    };
    let response_code = query_value(&query, "responseCode").and_then(|c| c.parse::<i64>().ok());
    if !backend.retry.attempt_fails(&uuid, succeed_after) {
        return Ok(echo(req, backend, tls).await);
    }
    if let Err(message) = delay(&query, "delayRetry").await {
        return Ok(json_error(StatusCode::INTERNAL_SERVER_ERROR, &message));
    }
    match response_code {
        Some(code) => {
            let code = u16::try_from(code).ok().filter(|c| *c >= 100);
            let Some(code) = code.map(status_as_go_sends) else {
                return Ok(plain(StatusCode::BAD_REQUEST, "responseCode is invalid"));
            };
            let mut resp = Response::new(Full::new(Bytes::new()).boxed());
            *resp.status_mut() = code;
            Ok(resp)
        }
        // Upstream hijacks the connection, which Go allows only for HTTP/1.
        None if req.version() == Version::HTTP_2 => Ok(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response writer does not support hijacking",
        )),
        None => {
            reset.store(true, Ordering::Relaxed);
            Err(ResetConnection)
        }
    }
}

/// `/ws`: the opening handshake; the frame echo runs on the upgraded connection.
fn websocket(mut req: Request<Incoming>, backend: &Backend) -> Response<EchoBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_owned);
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let (Some(key), true, true) = (key, version_ok, ws::wants_upgrade(req.headers())) else {
        let mut resp = plain(StatusCode::BAD_REQUEST, "Bad Request");
        resp.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return resp;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut stopped = backend.stopped.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stopped.changed() => {}
            _ = async {
                if let Ok(upgraded) = on_upgrade.await {
                    let _ = ws::echo_frames(TokioIo::new(upgraded)).await;
                }
            } => {}
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(accept) = HeaderValue::from_str(&ws::accept_key(&key)) {
        headers.insert("sec-websocket-accept", accept);
    }
    resp
}

async fn echo(
    req: Request<Incoming>,
    backend: &Backend,
    tls: Option<&tcp::TlsSeen>,
) -> Response<EchoBody> {
    let (parts, body) = req.into_parts();
    // Drain the request body so the client's upload completes; its size is reported.
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    if let Err(message) = delay(parts.uri.query().unwrap_or_default(), "delay").await {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, &message);
    }
    let req = Request::from_parts(parts, ());

    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        // Go keeps Host out of r.Header.
        if name == http::header::HOST {
            continue;
        }
        headers
            .entry(canonical(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let identity = &backend.identity;
    let mut json = serde_json::json!({
        "path": target(&req),
        "host": host(&req),
        "method": req.method().as_str(),
        "proto": proto(req.version()),
        "headers": headers,
        "httpPort": backend.http_port,
        "namespace": identity.namespace,
        "ingress": "",
        "service": identity.service,
        "pod": identity.pod,
        "bodyLength": body_len,
    });
    if let Some(seen) = tls {
        let mut fields = serde_json::json!({
            "version": seen.http_version_name(),
            "serverName": seen.server_name,
            "cipherSuite": seen.cipher_suite,
        });
        if !seen.negotiated_protocol.is_empty() {
            fields["negotiatedProtocol"] = serde_json::json!(seen.negotiated_protocol);
        }
        json["tls"] = fields;
    }
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())).boxed());
    set_echo_headers(&req, &mut resp);
    json_headers(&mut resp);
    resp
}

/// `X-Echo-Set-Header: A:1,B:2` becomes response headers; a name given twice gets its values
/// joined with commas, as upstream.
fn set_echo_headers<B>(req: &Request<B>, resp: &mut Response<EchoBody>) {
    let mut set: Vec<(HeaderName, String)> = Vec::new();
    for value in req.headers().get_all("x-echo-set-header") {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(',') {
            let (name, value) = pair.trim().split_once(':').unwrap_or((pair.trim(), ""));
            let Ok(name) = HeaderName::try_from(name) else {
                continue;
            };
            match set.iter_mut().find(|(n, _)| *n == name) {
                Some((_, joined)) => {
                    joined.push(',');
                    joined.push_str(value.trim());
                }
                None => set.push((name, value.trim().to_owned())),
            }
        }
    }
    for (name, value) in set {
        if let Ok(value) = HeaderValue::try_from(value) {
            resp.headers_mut().insert(name, value);
        }
    }
}

/// `X-Forwarded-For` style capitalisation, as Go's echo server reports header names.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests;
