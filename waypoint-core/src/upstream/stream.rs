//! The upstream of a connection proxied as bytes (TCP, TLS passed through): one endpoint of
//! the backend, chosen by the same balancer as HTTP requests (of the consistent-hash keys, only
//! the source IP applies to bytes), reached over the same transports (plain TCP, HBONE, the
//! co-located ztunnel's socket), but not pooled: the stream belongs to the one client
//! connection, so nothing about it is shared or reused. Endpoints ejected by outlier detection
//! are left out, and whether the connection opened is reported to it.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::Upstream;
use super::balance::InFlight;
use super::limits::{Limit, Slot};
use super::outlier::{self, TryOutcome};
use crate::config::{Endpoint, ServiceBackend};
use crate::conn::ConnInfo;
use crate::flags::ResponseFlag;
use crate::wire::BoxedIo;

/// A connected byte stream to one endpoint. The endpoint counts as busy (for the balancer's
/// least-request choice) while this lives.
pub(crate) struct StreamUpstream {
    /// The stream, ready for the client's bytes.
    pub(crate) io: BoxedIo,
    /// The endpoint it reaches.
    pub(crate) endpoint: Endpoint,
    _busy: InFlight,
    /// Counts the stream toward its backend's `maxConnections`.
    _connection: Slot,
}

/// Why no stream to the backend could be opened.
#[derive(Debug)]
pub(crate) struct StreamConnectError {
    /// `UH` (no endpoint), `UO` (`maxConnections` reached) or `UF` (the connection failed).
    pub(crate) flag: ResponseFlag,
    /// The endpoint tried, if one was.
    pub(crate) endpoint: Option<Endpoint>,
    /// Why, in words.
    pub(crate) reason: String,
}

impl fmt::Display for StreamConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(e) => write!(f, "connecting to {}: {}", e.address, self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl Upstream {
    /// Opens a byte stream to an endpoint of `backend` for the client of `conn` (whom a
    /// tunnel names, as for HTTP), within the connect timeout. One try: the client's bytes
    /// have not been sent anywhere yet, but a byte protocol gives no safe point to retry later.
    /// Each stream is a connection of the backend: over `maxConnections` it is refused (`UO`),
    /// as Envoy's TCP proxy does.
    pub(crate) async fn connect_stream(
        &self,
        backend: &Arc<ServiceBackend>,
        conn: &ConnInfo,
    ) -> Result<StreamUpstream, StreamConnectError> {
        if let Some(rule) = &backend.policy.tls_refused_by {
            return Err(StreamConnectError {
                flag: ResponseFlag::UpstreamConnectionFailure,
                endpoint: None,
                reason: format!(
                    "{rule} sets tls for this port but was refused: not sending in plain text"
                ),
            });
        }
        let outlier = outlier::settings_of(backend);
        let endpoints = self
            .outliers
            .eligible(backend, outlier.as_ref(), Instant::now());
        let choice = self.balancers.for_stream(backend, conn);
        let Some(endpoint) = choice.pick(&endpoints, None) else {
            return Err(StreamConnectError {
                flag: ResponseFlag::NoHealthyUpstream,
                endpoint: None,
                reason: format!("{} has no ready endpoint", backend.service),
            });
        };
        let limits = self.limits_of(backend);
        let Some(connection) = limits.take_or_overflow(Limit::Connections) else {
            return Err(StreamConnectError {
                flag: ResponseFlag::UpstreamOverflow,
                endpoint: None,
                reason: format!(
                    "upstream overflow: {} of {} reached",
                    Limit::Connections.field(),
                    backend.service
                ),
            });
        };
        let busy = InFlight::start(&endpoint.stats);
        let path = super::origination::conn_target(self.dial_path(endpoint, conn), backend, None);
        let dialed = self.pool.dialer().dial(&path, &limits.limits.conn).await;
        let outcome = match &dialed {
            Ok(_) => TryOutcome::Connected,
            Err(_) => TryOutcome::ConnectionFailed,
        };
        self.outliers
            .record(backend, outlier.as_ref(), endpoint.address, outcome);
        match dialed {
            Ok(io) => Ok(StreamUpstream {
                io,
                endpoint: endpoint.clone(),
                _busy: busy,
                _connection: connection,
            }),
            Err(reason) => Err(StreamConnectError {
                flag: ResponseFlag::UpstreamConnectionFailure,
                endpoint: Some(endpoint.clone()),
                reason,
            }),
        }
    }
}
