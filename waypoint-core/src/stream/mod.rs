//! Connections proxied as bytes: TCP, and TLS the client originates, passed through
//! unterminated. The steps are in [`Pipeline::proxy_stream`](crate::pipeline::Pipeline);
//! this module holds what they use:
//!
//! ```text
//!  accepted ─▶ Config::protocol(destination): tcp / tls / detect (transport::detect)
//!     │
//!     ▼
//!  binding check ─▶ (tls: SNI from the ClientHello) ─▶ FilterChain::run_connection
//!     │                                                 (authorization, TCPRoute/TLSRoute)
//!     ▼
//!  upstream: the route's backend, else the Service or Pod the client dialled
//!     ▼
//!  Upstream::connect_stream (balancer, plain / HBONE / ztunnel socket) ─▶ splice (half-close,
//!  idle timeout) ─▶ istio_tcp_* metrics and one access log line
//! ```
//!
//! Every refusal closes the client connection before a byte is forwarded, logs why, and sets
//! the response flag (`NR` nothing to send it to, `UH` no endpoint, `UF` connect failed, and
//! the closing filter's own, e.g. `RBAC`).
//!
//! - `hello`: reading the ClientHello of a TLS passthrough connection (its SNI).
//! - `splice`: copying both ways.

pub(crate) mod hello;
pub(crate) mod splice;

use std::sync::Arc;
use std::time::Duration;

use crate::config::binding::Destination;
use crate::filter::{ConnectionContext, UpstreamTarget};

/// How long a client may take to show whether it speaks HTTP, by default: Istio's former
/// default for its protocol sniffing (`PILOT_INBOUND_PROTOCOL_DETECTION_TIMEOUT`).
pub const DEFAULT_DETECTION_TIMEOUT: Duration = Duration::from_millis(100);

/// How long a proxied connection may carry no byte either way, by default: Envoy's
/// `tcp_proxy` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Settings of the byte-stream path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// How long detection waits for a client's first bytes (ports no protocol was named
    /// for). Zero disables detection: such ports are served as HTTP, as before detection
    /// existed.
    pub detection_timeout: Duration,
    /// A proxied connection that carries no byte either way for this long is closed. Zero
    /// disables it.
    pub idle_timeout: Duration,
}

impl Default for StreamConfig {
    /// [`DEFAULT_DETECTION_TIMEOUT`], [`DEFAULT_IDLE_TIMEOUT`].
    fn default() -> Self {
        StreamConfig {
            detection_timeout: DEFAULT_DETECTION_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The upstream when no filter chose one: the Service or bound Pod the client dialled, as an
/// HTTP request with no route attached goes to its Service. `None` for anything else (a
/// Gateway listener needs a route).
pub(crate) fn dialled_upstream(ctx: &ConnectionContext) -> Option<UpstreamTarget> {
    let destination = ctx.conn.destination?;
    match ctx.config.destination(Some(destination)) {
        Destination::Service(service) => Some(UpstreamTarget::new(Arc::clone(service))),
        Destination::Workload(workload) => Some(UpstreamTarget::new(workload.backend(destination))),
        Destination::Gateway | Destination::Unbound(_) => None,
    }
}
