//! Serves HTTP on any byte stream a transport produced.
//!
//! # Draining without losing a request
//!
//! When a shutdown starts draining (see [`crate::shutdown`]), a connection is told to go
//! elsewhere in the way its protocol allows without racing the client:
//!
//! - HTTP/2: GOAWAY at once (hyper sends it in two steps, so streams the client opened before
//!   seeing it are still served); in-flight streams finish.
//! - HTTP/1.1: nothing is closed yet. Each response from now on carries `Connection: close`, so
//!   the client closes after reading it and opens its next connection elsewhere. Closing an
//!   idle keep-alive connection here instead would race with a request the client is writing
//!   at that moment, which would be lost. Idle connections are closed only when the stopping
//!   phase begins.
//! - A connection that has sent no request yet is treated as HTTP/1.1 until it does: calling
//!   hyper's graceful shutdown before the protocol is known would drop it unserved.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::Notify;

use super::upgrade::AllowedUpgrades;
use crate::body::Body;
use crate::conn::ConnInfo;
use crate::shutdown::Shutdown;
use crate::transport::BoxedIo;

/// Limits of the HTTP server side. The defaults follow the HBONE settings of DESIGN.md §2 where
/// they apply, and protect against slow or abusive clients elsewhere.
#[derive(Clone, Debug)]
pub struct HttpServerConfig {
    /// HTTP/1.1: the whole request head must arrive within this time, or the connection closes.
    pub header_read_timeout: Duration,
    /// HTTP/1.1: the largest request head accepted (larger: 431).
    pub max_header_bytes: usize,
    /// HTTP/2: the largest header list accepted.
    pub h2_max_header_list_bytes: u32,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: PING interval; `None` disables keepalive.
    pub h2_keepalive_interval: Option<Duration>,
    /// HTTP/2: close the connection when a PING is not answered within this time.
    pub h2_keepalive_timeout: Duration,
    /// HTTP/1.1 upgrades carried to backends (default: `websocket`); never `h2c`. See
    /// [`crate::http::upgrade`].
    pub allowed_upgrades: AllowedUpgrades,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            h2_max_header_list_bytes: 64 * 1024,
            h2_max_concurrent_streams: 200,
            h2_keepalive_interval: Some(Duration::from_secs(10)),
            h2_keepalive_timeout: Duration::from_secs(20),
            allowed_upgrades: AllowedUpgrades::default(),
        }
    }
}

/// Serves HTTP/1.1 and h2c connections, handing each request with its connection's
/// [`ConnInfo`] to a request handler.
#[derive(Clone)]
pub struct HttpServer {
    builder: Arc<auto::Builder<TokioExecutor>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpServer")
    }
}

impl HttpServer {
    /// A server with the given limits.
    pub fn new(cfg: &HttpServerConfig) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(cfg.h2_max_header_list_bytes)
            .max_concurrent_streams(cfg.h2_max_concurrent_streams)
            .keep_alive_interval(cfg.h2_keepalive_interval)
            .keep_alive_timeout(cfg.h2_keepalive_timeout);
        // Deliberately no `enable_connect_protocol()`: SETTINGS_ENABLE_CONNECT_PROTOCOL stays
        // unadvertised, so RFC 8441 extended CONNECT (`:protocol`) is refused by the HTTP/2
        // layer with a stream reset and never becomes a tunnel (see `upgrade`).
        HttpServer {
            builder: Arc::new(builder),
        }
    }

    /// Serves one connection until the client closes it, or until `shutdown` stops it. While
    /// `shutdown` drains, HTTP/2 gets GOAWAY and HTTP/1.1 responses `Connection: close` (see the
    /// module documentation); once it stops, in-flight requests finish and the connection
    /// closes.
    pub async fn serve<H, F>(
        &self,
        io: BoxedIo,
        conn: Arc<ConnInfo>,
        handler: H,
        shutdown: Shutdown,
    ) where
        H: Fn(hyper::Request<Incoming>, Arc<ConnInfo>) -> F + Send + Sync + 'static,
        F: Future<Output = http::Response<Body>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let peer = conn.source;
        let state = Arc::new(ConnState::default());
        let service = {
            let state = state.clone();
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (handler, conn, state) = (handler.clone(), conn.clone(), state.clone());
                async move {
                    let version = req.version();
                    state.learn(version);
                    let mut resp = handler(req, conn).await;
                    state.mark_draining(&mut resp, version);
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let (mut draining, mut closing) = (false, false);
        let result = loop {
            // Biased, shutdown first: a request that wakes this task after the drain began is
            // answered as draining, never as if nothing had happened.
            tokio::select! {
                biased;
                () = shutdown.wait_draining(), if !draining => {
                    draining = true;
                    state.draining.store(true, Ordering::Release);
                }
                () = shutdown.wait(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = state.learned.notified(), if draining && !closing => {}
                result = connection.as_mut() => break result,
            }
            // HTTP/2 is told as soon as both the drain and the protocol are known.
            if draining && !closing && state.is_h2() {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        };
        if let Err(err) = result {
            // Clients that vanish mid-request are routine; log at debug to keep logs useful.
            tracing::debug!(?peer, error = %err, "connection ended with an error");
        }
    }
}

/// What the serving loop and the request handler of one connection share.
#[derive(Debug, Default)]
struct ConnState {
    /// 0 until the first request, then 1 (HTTP/1.x) or 2 (HTTP/2).
    protocol: AtomicU8,
    /// Told when the protocol becomes known.
    learned: Notify,
    /// Set when the shutdown drains.
    draining: AtomicBool,
}

impl ConnState {
    fn learn(&self, version: http::Version) {
        let protocol = if version == http::Version::HTTP_2 {
            2
        } else {
            1
        };
        if self.protocol.swap(protocol, Ordering::AcqRel) != protocol {
            self.learned.notify_one();
        }
    }

    fn is_h2(&self) -> bool {
        self.protocol.load(Ordering::Acquire) == 2
    }

    /// While draining, an HTTP/1.x response (other than a protocol switch, which keeps the
    /// connection by definition) asks the client to close: hyper then closes after writing it.
    fn mark_draining(&self, resp: &mut http::Response<Body>, version: http::Version) {
        if self.draining.load(Ordering::Acquire)
            && version < http::Version::HTTP_2
            && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
        {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
}
