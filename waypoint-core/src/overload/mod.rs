//! Overload protection: how much the waypoint takes on before it says no, and how it says it.
//!
//! A proxy that accepts everything fails everyone when it runs out of memory or file
//! descriptors; one that refuses early and cheaply keeps serving what it has. The limits here
//! are checked where refusing costs least:
//!
//! - **Connections** ([`ListenerGate`]): counted per listener (`ListenerOptions::max_connections`)
//!   and in total at `accept()`, before
//!   a PROXY header is read or a TLS handshake started. Over a limit the socket is closed at
//!   once. An HBONE listener counts its TCP/TLS connections *and* each CONNECT stream (every
//!   stream is a connection to the HTTP server, with its own buffers); a stream over the limit
//!   is answered 503, which a ztunnel reports as a refused connection.
//! - **Requests in flight** (`RequestLimits`): counted from the request head until the
//!   response body ends. Over the limit: 503 `overloaded`, response flag `OM` (Envoy's flag for a
//!   request its overload manager refused).
//! - **Request body size** (`RequestLimits`): a declared `content-length` over the limit is
//!   answered 413 before anything is sent upstream; a body without one is counted as it
//!   streams and aborted when it passes the limit, so the upstream sees a broken request,
//!   never a truncated one presented as complete.
//! - **Memory** (`memory`): the process's resident set is read once a second. At or above the
//!   limit new connections are refused, the readiness probe fails and idle keep-alive
//!   connections are closed gracefully (busy ones only when no idle one is left); below 90 % of
//!   the limit it accepts again. Header sizes and HTTP/2 streams per connection are limits of
//!   the HTTP server ([`crate::http::HttpServerConfig`]).
//!
//! Everything is counted in Prometheus metrics (see [`Overload::register`]); the hot path
//! pays an atomic add and subtract per connection and per request, and takes no lock except
//! once per connection to enter and leave the registry of live HTTP connections.

mod conns;
pub(crate) mod memory;
mod metrics;
mod requests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;

pub(crate) use conns::ConnRegistry;
pub use conns::ListenerGate;
pub(crate) use metrics::OverloadMetrics;
pub(crate) use requests::{RequestGuard, RequestLimits};

/// The limits an operator sets. `None` means no limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadOptions {
    /// Downstream connections open at once, all listeners together (HBONE connections and
    /// their CONNECT streams included). Default 100,000: far above what one waypoint replica
    /// serves well, low enough to stop a connection flood before the file table or memory runs
    /// out. Envoy sets none by default (Istio configures 2^31-1 to silence its warning).
    pub max_connections: Option<usize>,
    /// Requests in flight at once (request head received, response body not yet finished).
    /// Default none: Envoy has no downstream request limit either, and long-lived gRPC streams
    /// would make any fixed number wrong for someone; the memory limit is the backstop.
    pub max_requests_in_flight: Option<usize>,
    /// The largest request body accepted, in bytes. Default none (bodies stream through), as
    /// in Envoy, which limits only bodies it buffers.
    pub max_request_body_bytes: Option<u64>,
    /// The resident memory above which the waypoint sheds load, in bytes. Default none; set it
    /// to about 90 % of the container's memory limit.
    pub memory_limit: Option<u64>,
    /// How often the resident memory is read when `memory_limit` is set (default 1 s).
    pub memory_check_interval: Duration,
}

impl Default for OverloadOptions {
    fn default() -> Self {
        OverloadOptions {
            max_connections: Some(100_000),
            max_requests_in_flight: None,
            max_request_body_bytes: None,
            memory_limit: None,
            memory_check_interval: Duration::from_secs(1),
        }
    }
}

/// The state every listener, connection and request of one waypoint shares.
#[derive(Debug)]
pub struct Overload {
    opts: OverloadOptions,
    open_connections: AtomicUsize,
    memory_overloaded: AtomicBool,
    registry: ConnRegistry,
    requests: RequestLimits,
    metrics: OverloadMetrics,
}

impl Overload {
    /// Shared overload state for `opts`, with fresh metrics (see [`Overload::register`]).
    pub fn new(opts: OverloadOptions) -> Arc<Self> {
        let metrics = OverloadMetrics::new(opts.memory_limit);
        Arc::new(Overload {
            requests: RequestLimits::new(
                opts.max_requests_in_flight,
                opts.max_request_body_bytes,
                metrics.clone(),
            ),
            opts,
            open_connections: AtomicUsize::new(0),
            memory_overloaded: AtomicBool::new(false),
            registry: ConnRegistry::default(),
            metrics,
        })
    }

    /// Registers the overload metrics into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// The limits in force.
    pub fn options(&self) -> &OverloadOptions {
        &self.opts
    }

    /// The metrics (for tests and embedders reading counts).
    pub fn metrics(&self) -> &OverloadMetrics {
        &self.metrics
    }

    /// A gate for one listener, labelled `listener` in metrics and logs, admitting at most
    /// `limit` connections of its own (the per-listener limit,
    /// [`ListenerOptions::max_connections`](crate::transport::ListenerOptions)).
    pub fn gate(
        self: &Arc<Self>,
        listener: impl Into<String>,
        limit: Option<usize>,
    ) -> ListenerGate {
        ListenerGate::new(self.clone(), listener.into(), limit)
    }

    /// The per-request limits (in-flight count and body size).
    pub fn requests(&self) -> &RequestLimits {
        &self.requests
    }

    /// The registry of live HTTP connections, which the memory watermark closes.
    pub fn connections(&self) -> &ConnRegistry {
        &self.registry
    }

    /// Downstream connections open now, all listeners together.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// True while the resident memory is over the watermark: new connections are refused and
    /// the readiness probe fails.
    pub(crate) fn memory_overloaded(&self) -> bool {
        self.memory_overloaded.load(Ordering::Relaxed)
    }

    fn set_memory_overloaded(&self, on: bool) {
        self.memory_overloaded.store(on, Ordering::Relaxed);
        self.metrics.set_memory_overloaded(on);
    }
}
