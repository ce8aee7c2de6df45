//! The load generator: N connections that each start the way a co-located ztunnel starts them
//! (a PROXY v2 header naming the source, the original destination and the source identity in
//! TLV 0xD0), or over an HBONE tunnel, then carry HTTP/1.1 keep-alive
//! requests or h2c streams.
//!
//! Closed loop: each connection (or h2 stream) sends its next request when the previous answer
//! is complete, for a fixed time. Open loop: requests are scheduled at a fixed rate by a thread of
//! their own ([`super::open_loop`]), which measures each latency from the *scheduled* send time
//! (a stalled proxy is charged for the requests that queued behind the stall: no coordinated
//! omission) and from the actual send, and its own lateness.
//!
//! Only requests that complete inside the measurement window count; a warm-up before it opens
//! the connections and fills the proxy's pools.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use waypoint_core::tls::ExpectedIdentity;
use waypoint_core::transport::BoxedIo;
use waypoint_core::upstream::{HbonePool, TunnelSource};

use super::hist::Histogram;
use super::open_loop::{self, OpenStats};

/// How a load connection reaches the system under test.
#[derive(Clone)]
pub enum Dialer {
    /// Plain TCP, optionally starting with a PROXY v2 header (the sandwich handoff).
    Tcp {
        /// Where to connect.
        addr: SocketAddr,
        /// The PROXY v2 header to write first, if any.
        proxy_header: Option<Arc<Vec<u8>>>,
    },
    /// Plain TCP to whichever address is current, optionally with a PROXY v2 header: a load
    /// balancer whose endpoint the caller changes (as kube-proxy does when readiness changes).
    Shared {
        /// The current address.
        addr: Arc<std::sync::RwLock<SocketAddr>>,
        /// The PROXY v2 header to write first, if any.
        proxy_header: Option<Arc<Vec<u8>>>,
    },
    /// One HBONE `CONNECT` tunnel per load connection, pooled onto HTTP/2 connections as a
    /// client ztunnel does.
    Hbone {
        /// The client ztunnel's pool (its certificate).
        pool: Arc<HbonePool>,
        /// The HBONE peer (waypoint or destination ztunnel).
        via: SocketAddr,
        /// The `CONNECT` authority.
        target: SocketAddr,
        /// The identity the peer must present.
        expected: Vec<ExpectedIdentity>,
    },
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dialer::Tcp { addr, proxy_header } => write!(
                f,
                "tcp {addr}{}",
                if proxy_header.is_some() {
                    " + PROXY v2"
                } else {
                    ""
                }
            ),
            Dialer::Shared { addr, .. } => write!(f, "tcp to the current one of {addr:?}"),
            Dialer::Hbone { via, target, .. } => write!(f, "HBONE via {via} to {target}"),
        }
    }
}

impl Dialer {
    /// Opens one connection, ready for HTTP bytes.
    pub async fn dial(&self) -> Result<BoxedIo, String> {
        match self {
            Dialer::Tcp { addr, proxy_header } => tcp(*addr, proxy_header.as_deref()).await,
            Dialer::Shared { addr, proxy_header } => {
                let addr = *addr.read().unwrap_or_else(|p| p.into_inner());
                tcp(addr, proxy_header.as_deref()).await
            }
            Dialer::Hbone {
                pool,
                via,
                target,
                expected,
            } => {
                let source = TunnelSource {
                    address: Some(SocketAddr::from(([10, 244, 1, 5], 40000))),
                    ..Default::default()
                };
                let s = pool
                    .connect_via(*via, *target, expected, &source)
                    .await
                    .map_err(|e| format!("HBONE via {via}: {e}"))?;
                Ok(Box::new(s))
            }
        }
    }
}

async fn tcp(addr: SocketAddr, proxy_header: Option<&Vec<u8>>) -> Result<BoxedIo, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    if let Some(h) = proxy_header {
        s.write_all(h)
            .await
            .map_err(|e| format!("PROXY header to {addr}: {e}"))?;
    }
    Ok(Box::new(s))
}

/// HTTP flavour of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 keep-alive, one request in flight per connection.
    Http1,
    /// HTTP/2 with prior knowledge, `streams` requests in flight per connection.
    H2c {
        /// Concurrent streams per connection.
        streams: usize,
    },
}

/// Closed or open loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Next request as soon as the previous answer is complete.
    Closed,
    /// Requests scheduled at this many per second, latency from the scheduled time and from the
    /// actual send (HTTP/1.1 over plain TCP only: [`super::open_loop`]).
    Open {
        /// Requests per second.
        rate: f64,
    },
}

/// One load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Connections to open.
    pub connections: usize,
    /// HTTP flavour.
    pub protocol: Protocol,
    /// Loop.
    pub mode: Mode,
    /// Load before measuring (connections open, pools fill).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Request path.
    pub path: String,
    /// Host header / `:authority`.
    pub authority: String,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Latencies of the successful requests completed in the window.
    pub hist: Histogram,
    /// Successful (2xx) requests completed in the window.
    pub ok: u64,
    /// Failed requests (I/O errors, non-2xx answers) in the window.
    pub errors: u64,
    /// The first failure seen, to say why.
    pub first_error: Option<String>,
    /// Length of the window.
    pub elapsed: Duration,
    /// Open loop only: latency from the actual send and the generator's lateness.
    pub open: Option<OpenStats>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn merge(&mut self, other: LoadResult) {
        self.hist.merge(&other.hist);
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if let Some(o) = other.open {
            self.open.get_or_insert_with(OpenStats::default).merge(&o);
        }
    }

    fn fail(&mut self, counted: bool, why: String) {
        if counted {
            self.errors += 1;
        }
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }
}

/// Called when the measured window opens and closes (to sample the proxy's CPU time).
pub trait Window: Send {
    /// The window opens.
    fn begin(&mut self);
    /// The window closes.
    fn end(&mut self);
}

/// A window that samples nothing.
#[derive(Debug, Default)]
pub struct NoWindow;

impl Window for NoWindow {
    fn begin(&mut self) {}
    fn end(&mut self) {}
}

#[derive(Clone, Copy)]
struct Times {
    start: Instant,
    stop: Instant,
}

impl Times {
    fn counts(&self, done: Instant) -> bool {
        done >= self.start && done <= self.stop
    }
}

/// One HTTP/1.1 or HTTP/2 client connection.
pub(crate) enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

pub(crate) async fn handshake(io: BoxedIo, protocol: Protocol) -> Result<Sender, String> {
    let io = TokioIo::new(io);
    match protocol {
        Protocol::Http1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
        Protocol::H2c { .. } => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2c handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        }
    }
}

/// How one request went, told apart the way a zero-loss count needs it.
#[derive(Debug)]
pub(crate) enum Exchange {
    /// A complete answer (any status); `close`: it asked the client to close the connection.
    Answered {
        /// The status.
        status: http::StatusCode,
        /// `Connection: close` was on the answer.
        close: bool,
    },
    /// The request never left (the connection was already closed or going away after a
    /// `Connection: close` answer or a GOAWAY), or the server said it did not process it
    /// ([`unprocessed`]). Safe to send again on a new connection.
    NotSent(String),
    /// Sent, then the connection failed before the answer was complete (reset, closed early).
    Broken(String),
}

/// Sends one GET and reads the whole answer.
pub(crate) async fn exchange(sender: &mut Sender, path: &str, authority: &str) -> Exchange {
    let sent = match sender {
        Sender::H1(s) => {
            if let Err(e) = s.ready().await {
                return Exchange::NotSent(format!("connection: {e}"));
            }
            let req = http::Request::get(path)
                .header(http::header::HOST, authority)
                .body(Empty::new());
            match req {
                Ok(req) => s.try_send_request(req).await,
                Err(e) => return Exchange::NotSent(e.to_string()),
            }
        }
        Sender::H2(s) => {
            if let Err(e) = s.ready().await {
                return Exchange::NotSent(format!("connection: {e}"));
            }
            let req = http::Request::get(format!("http://{authority}{path}"))
                .version(http::Version::HTTP_2)
                .body(Empty::new());
            match req {
                Ok(req) => s.try_send_request(req).await,
                Err(e) => return Exchange::NotSent(e.to_string()),
            }
        }
    };
    let resp = match sent {
        Ok(resp) => resp,
        Err(mut e) => {
            let why = format!("request: {}", e.error());
            return match e.take_message() {
                Some(_) => Exchange::NotSent(why),
                None if unprocessed(e.error()) => Exchange::NotSent(format!("{why} (unprocessed)")),
                None => Exchange::Broken(why),
            };
        }
    };
    let status = resp.status();
    let close = resp
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    match resp.into_body().collect().await {
        Ok(_) => Exchange::Answered { status, close },
        Err(e) => Exchange::Broken(format!("body: {e}")),
    }
}

/// True when an HTTP/2 server said it did not process the request: a GOAWAY without error
/// whose last stream id is below the request's stream, or REFUSED_STREAM. RFC 9113 (sections
/// 6.8 and 8.7) makes both safe to retry, and clients do; a drained server's final GOAWAY
/// leaves streams the client opened in the meantime in this state. hyper reports them as sent
/// (the stream was handed to h2), so they are recognised by the h2 error underneath.
pub(crate) fn unprocessed(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            let no_error_goaway =
                h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            return no_error_goaway || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// Sends one GET and reads the whole answer; `Err` on I/O failure or a non-2xx status.
async fn request(sender: &mut Sender, path: &str, authority: &str) -> Result<(), String> {
    match exchange(sender, path, authority).await {
        Exchange::Answered { status, .. } if status.is_success() => Ok(()),
        Exchange::Answered { status, .. } => Err(format!("status {status}")),
        Exchange::NotSent(e) | Exchange::Broken(e) => Err(e),
    }
}

/// Runs `spec` against `dialer`; `window` is told when the measured window opens and closes.
pub async fn run(dialer: &Dialer, spec: &LoadSpec, window: &mut dyn Window) -> LoadResult {
    if let Mode::Open { rate } = spec.mode {
        return open_loop::run(dialer, spec, rate, window).await;
    }
    let t0 = Instant::now();
    let times = Times {
        start: t0 + spec.warmup,
        stop: t0 + spec.warmup + spec.duration,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..spec.connections.max(1) {
        tasks.spawn(closed_connection(dialer.clone(), spec.clone(), times));
    }
    tokio::time::sleep_until(times.start.into()).await;
    window.begin();
    tokio::time::sleep_until(times.stop.into()).await;
    window.end();
    let mut total = LoadResult {
        elapsed: spec.duration,
        ..Default::default()
    };
    // Requests still in flight at the end do not count; give workers a moment to notice.
    let deadline = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(r)) => total.merge(r),
                Some(Err(_)) => {}
                None => break,
            },
            _ = &mut deadline => {
                tasks.abort_all();
                break;
            }
        }
    }
    total
}

async fn closed_connection(dialer: Dialer, spec: LoadSpec, times: Times) -> LoadResult {
    let mut out = LoadResult::default();
    while Instant::now() < times.stop {
        let sender = match dialer.dial().await {
            Ok(io) => handshake(io, spec.protocol).await,
            Err(e) => Err(e),
        };
        let sender = match sender {
            Ok(s) => s,
            Err(e) => {
                out.fail(times.counts(Instant::now()), e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match (sender, spec.protocol) {
            (Sender::H2(h2), Protocol::H2c { streams }) => {
                let mut streams_set = JoinSet::new();
                for _ in 0..streams.max(1) {
                    let mut sender = Sender::H2(h2.clone());
                    let spec = spec.clone();
                    streams_set.spawn(async move {
                        let mut out = LoadResult::default();
                        closed_loop(&mut sender, &spec, times, &mut out).await;
                        out
                    });
                }
                drop(h2);
                while let Some(r) = streams_set.join_next().await {
                    if let Ok(r) = r {
                        out.merge(r);
                    }
                }
            }
            (mut sender, _) => closed_loop(&mut sender, &spec, times, &mut out).await,
        }
    }
    out
}

/// Sends requests back to back until the window closes or the connection fails.
async fn closed_loop(sender: &mut Sender, spec: &LoadSpec, times: Times, out: &mut LoadResult) {
    while Instant::now() < times.stop {
        let sent = Instant::now();
        let result = request(sender, &spec.path, &spec.authority).await;
        let done = Instant::now();
        match result {
            Ok(()) if times.counts(done) => {
                out.ok += 1;
                out.hist.record(done - sent);
            }
            Ok(()) => {}
            Err(e) => {
                let broken = !e.starts_with("status");
                out.fail(times.counts(done), e);
                if broken {
                    return;
                }
            }
        }
    }
}

/// Connections opened by [`open_idle`]; they stay open until this is dropped.
pub struct IdleConnections {
    _senders: Vec<Sender>,
}

impl std::fmt::Debug for IdleConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdleConnections({})", self._senders.len())
    }
}

impl IdleConnections {
    /// How many are open.
    pub fn len(&self) -> usize {
        self._senders.len()
    }

    /// True when none could be opened.
    pub fn is_empty(&self) -> bool {
        self._senders.is_empty()
    }
}

/// Opens `n` HTTP/1.1 keep-alive connections, `parallel` at a time, sends one request on each
/// and keeps them open. Returns them with the latencies of those requests.
pub async fn open_idle(
    dialer: &Dialer,
    n: usize,
    parallel: usize,
    path: &str,
    authority: &str,
) -> (IdleConnections, LoadResult) {
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let dialer = dialer.clone();
        let sem = sem.clone();
        let (path, authority) = (path.to_owned(), authority.to_owned());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.ok();
            let io = dialer.dial().await?;
            let mut sender = handshake(io, Protocol::Http1).await?;
            let sent = Instant::now();
            request(&mut sender, &path, &authority).await?;
            Ok::<_, String>((sender, sent.elapsed()))
        });
    }
    let mut senders = Vec::with_capacity(n);
    let mut result = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((sender, latency))) => {
                result.ok += 1;
                result.hist.record(latency);
                senders.push(sender);
            }
            Ok(Err(e)) => result.fail(true, e),
            Err(e) => result.fail(true, e.to_string()),
        }
    }
    result.elapsed = started.elapsed();
    (IdleConnections { _senders: senders }, result)
}

/// One request on a new connection: the status code, or why it failed. Used to check that a
/// proxy is configured as expected (routing, policy) before measuring it.
pub async fn probe(dialer: &Dialer, path: &str, authority: &str) -> Result<u16, String> {
    let io = dialer.dial().await?;
    let mut sender = handshake(io, Protocol::Http1).await?;
    match request(&mut sender, path, authority).await {
        Ok(()) => Ok(200),
        Err(e) => match e.strip_prefix("status ") {
            Some(code) => code
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or(e),
            None => Err(e),
        },
    }
}
