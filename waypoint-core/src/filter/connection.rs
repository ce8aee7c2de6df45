//! The connection phase: what filters see of a connection the waypoint proxies as bytes (TCP,
//! or TLS it passes through unterminated) rather than as HTTP requests.
//!
//! ```text
//!  accepted ─▶ protocol: TCP or TLS (SNI read from the ClientHello, nothing terminated)
//!     │
//!     ▼
//!  filter 1 ──▶ filter 2 ──▶ … ──▶ filter N ──▶ splice to ctx.upstream's endpoint
//!     on_connection: Continue / Close(reason) ── stop: closed, not a byte forwarded
//! ```
//!
//! Each filter's [`Filter::on_connection`](super::Filter::on_connection) runs once, in chain
//! order, before a byte goes upstream. It may read the connection and the config, choose the
//! upstream ([`ConnectionContext::upstream`]: the routing filter does for TCPRoute and
//! TLSRoute, and a Service with no route goes to itself), record decisions, or close the
//! connection. A closed connection reaches no later filter and no backend. HTTP connections
//! never see this phase: their requests go through `on_request`.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, PortProtocol};
use crate::conn::ConnInfo;
use crate::flags::ResponseFlag;

use super::{RouteMatch, UpstreamTarget};

/// Per-connection state shared by the filters of one proxied byte stream.
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectionContext {
    /// The connection: source, original destination, peer identity, workload metadata.
    pub conn: Arc<ConnInfo>,
    /// The config snapshot the connection is served with, start to finish.
    pub config: Arc<Config>,
    /// How the waypoint carries the connection: [`PortProtocol::Tcp`] or
    /// [`PortProtocol::Tls`] (passthrough).
    pub protocol: PortProtocol,
    /// The server name of the client's TLS ClientHello, when the connection is TLS passed
    /// through and the client sent one.
    pub sni: Option<String>,
    /// Where the bytes go (set by routing; the Service the client dialled when no route is
    /// attached to it). Only the backend matters here: timeouts, retries and mirrors are HTTP.
    pub upstream: Option<UpstreamTarget>,
    /// The route rule that chose the upstream, for logs and metrics.
    pub route: Option<RouteMatch>,
    /// Envoy-style flags for the access log and metrics.
    pub response_flags: Vec<ResponseFlag>,
    /// When the connection was accepted.
    pub started: Instant,
    /// Typed values filters leave for each other, as for requests.
    pub extensions: http::Extensions,
}

impl ConnectionContext {
    /// A fresh context for `conn`, served with `config` and carried as `protocol`.
    pub fn new(conn: Arc<ConnInfo>, config: Arc<Config>, protocol: PortProtocol) -> Self {
        ConnectionContext {
            conn,
            config,
            protocol,
            sni: None,
            upstream: None,
            route: None,
            response_flags: Vec::new(),
            started: Instant::now(),
            extensions: http::Extensions::new(),
        }
    }

    /// The same context with the ClientHello's server name.
    pub fn with_sni(mut self, sni: Option<String>) -> Self {
        self.sni = sni;
        self
    }
}

/// What a filter says after seeing a connection.
#[derive(Clone, PartialEq, Eq)]
pub enum ConnectionDecision {
    /// Go on to the next filter (and finally the upstream).
    Continue,
    /// Close the connection without forwarding a byte; the reason is logged. A filter that
    /// closes also pushes the response flag that says why (`RBAC`, `NR`, ...).
    Close(String),
}

impl fmt::Debug for ConnectionDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionDecision::Continue => f.write_str("Continue"),
            ConnectionDecision::Close(why) => write!(f, "Close({why:?})"),
        }
    }
}
