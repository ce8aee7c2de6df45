//! Serves HTTP on any byte stream a transport produced.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

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

    /// Serves one connection until the client closes it, or until `shutdown` fires: then
    /// in-flight requests finish and the connection closes gracefully (HTTP/2 GOAWAY, HTTP/1.1
    /// `Connection: close`).
    pub async fn serve<H, F>(
        &self,
        io: BoxedIo,
        conn: Arc<ConnInfo>,
        handler: H,
        mut shutdown: Shutdown,
    ) where
        H: Fn(hyper::Request<Incoming>, Arc<ConnInfo>) -> F + Send + Sync + 'static,
        F: Future<Output = http::Response<Body>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let peer = conn.source;
        let service = hyper::service::service_fn(move |req| {
            let (handler, conn) = (handler.clone(), conn.clone());
            async move { Ok::<_, Infallible>(handler(req, conn).await) }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.wait() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = result {
            // Clients that vanish mid-request are routine; log at debug to keep logs useful.
            tracing::debug!(?peer, error = %err, "connection ended with an error");
        }
    }
}
