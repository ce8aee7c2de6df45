//! Serves HTTP on any byte stream a transport produced.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::body::Body;
use crate::conn::ConnInfo;
use crate::overload::Overload;
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
        }
    }
}

/// Serves HTTP/1.1 and h2c connections, handing each request with its connection's
/// [`ConnInfo`] to a request handler.
#[derive(Clone)]
pub struct HttpServer {
    builder: Arc<auto::Builder<TokioExecutor>>,
    overload: Option<Arc<Overload>>,
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
        HttpServer {
            builder: Arc::new(builder),
            overload: None,
        }
    }

    /// Enters every connection in `overload`'s registry, with whether it is handling a
    /// request, so the memory watermark can ask it to close (idle ones first).
    pub fn with_overload(mut self, overload: Arc<Overload>) -> Self {
        self.overload = Some(overload);
        self
    }

    /// Serves one connection until the client closes it, or until `shutdown` fires or the
    /// memory watermark asks it to close: then in-flight requests finish and the connection
    /// closes gracefully (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`).
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
        let registration = self.overload.as_ref().map(|o| o.connections().register());
        let tracked = registration.as_ref().map(|r| r.conn().clone());
        let service = {
            let tracked = tracked.clone();
            hyper::service::service_fn(move |req| {
                let (handler, conn) = (handler.clone(), conn.clone());
                // Busy from the head until the response head: an idle connection is one
                // waiting for its next request (or streaming out a response body, which a
                // graceful close lets finish anyway).
                let busy = tracked.as_ref().map(|t| t.busy());
                async move {
                    let resp = handler(req, conn).await;
                    drop(busy);
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let close_requested = async {
            match &tracked {
                Some(t) => t.close_requested().await,
                None => std::future::pending().await,
            }
        };
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
            () = close_requested => {
                tracing::debug!(?peer, "memory over the limit: closing connection gracefully");
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        drop(registration);
        if let Err(err) = result {
            let too_large = err
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_parse_too_large);
            if too_large {
                // hyper has answered 431 and closed the connection.
                if let Some(overload) = &self.overload {
                    overload.metrics().inc_request_refused("headers_too_large");
                }
                tracing::debug!(
                    ?peer,
                    "request head over the size limit: 431, connection closed"
                );
            } else {
                // Clients that vanish mid-request are routine; debug keeps the logs useful.
                tracing::debug!(?peer, error = %err, "connection ended with an error");
            }
        }
    }
}
