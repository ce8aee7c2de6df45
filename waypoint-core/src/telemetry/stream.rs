//! The telemetry of a connection proxied as bytes: Istio's TCP metrics with labels known once
//! the connection phase decided (destination, response flags), one access log line when it
//! ends, and its authorization decision counted once.
//!
//! HTTP connections are counted in `istio_tcp_*` as they are accepted (or detected), TCP and
//! TLS ones after their upstream is known or refused; each connection is counted once.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::SystemTime;

use super::access_log::AccessLogEntry;
use super::metrics::{SourceLabels, TcpLabels, UNKNOWN, flags_label, security_policy};
use super::{Telemetry, authz_log_fields};
use crate::config::{Endpoint, PortProtocol};
use crate::filter::{AuthzDecision, ConnectionContext};

/// What the access log line of a proxied connection says beyond its context.
#[derive(Debug)]
pub(crate) struct StreamEnd {
    /// When the connection was accepted.
    pub(crate) start_time: SystemTime,
    /// The endpoint it was spliced to, if any.
    pub(crate) upstream_host: Option<SocketAddr>,
    /// Bytes read from the client and sent upstream.
    pub(crate) bytes_received: u64,
    /// Bytes sent to the client.
    pub(crate) bytes_sent: u64,
}

impl Telemetry {
    /// Istio's TCP labels of a proxied connection: the destination is the chosen backend (or
    /// the Service or Pod dialled), the flags those of its connection phase and connect.
    pub(crate) fn stream_labels(
        &self,
        ctx: &ConnectionContext,
        endpoint: Option<&Endpoint>,
    ) -> TcpLabels {
        let destination =
            self.destination_labels(ctx.upstream.as_ref(), &ctx.conn, &ctx.config, endpoint);
        TcpLabels {
            reporter: Cow::Borrowed("waypoint"),
            source: SourceLabels::from_conn(&ctx.conn),
            destination,
            request_protocol: Cow::Borrowed("tcp"),
            connection_security_policy: security_policy(&ctx.conn),
            response_flags: flags_label(&ctx.response_flags),
        }
    }

    /// Records the end of a proxied connection: its authorization decision (if a policy
    /// filter left one) and its access log line.
    pub(crate) fn record_stream(
        &self,
        ctx: &ConnectionContext,
        labels: &TcpLabels,
        end: StreamEnd,
    ) {
        let authz = ctx.extensions.get::<AuthzDecision>();
        if let Some(decision) = authz {
            self.count_authz(decision);
        }
        let Some(logger) = self.inner.access_log.as_ref().filter(|l| l.sampled()) else {
            return;
        };
        let service = &labels.destination.destination_service;
        let authz = authz.map(authz_log_fields);
        logger.log(&AccessLogEntry {
            start_time: end.start_time,
            source_principal: ctx
                .conn
                .peer_identity
                .as_ref()
                .map(|id| id.as_str().to_owned()),
            source_address: ctx.conn.source,
            destination_address: ctx.conn.destination,
            destination_service: (service != UNKNOWN).then(|| service.to_string()),
            method: "-".to_owned(),
            authority: ctx.sni.clone(),
            path: "-".to_owned(),
            protocol: match ctx.protocol {
                PortProtocol::Tls => "TLS",
                _ => "TCP",
            },
            // Envoy logs 0 for connections that carry no HTTP response.
            response_code: 0,
            response_flags: labels.response_flags.to_string(),
            upstream_host: end.upstream_host,
            bytes_received: end.bytes_received,
            bytes_sent: end.bytes_sent,
            duration_ms: ctx
                .started
                .elapsed()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            trace_id: "-".to_owned(),
            route: ctx
                .route
                .as_ref()
                .map(|r| format!("{}/{}#{}", r.route.namespace, r.route.name, r.rule)),
            authz: authz.as_ref().map(|a| a.0),
            authz_policy: authz.and_then(|a| a.1),
        });
    }
}
