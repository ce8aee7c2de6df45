//! The waypoint's own upstream settings: how endpoints are reached, and the limits of pools,
//! timeouts, replay and mirrors. Flags fill them (`waypoint run`); Kubernetes resources never do.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::HboneClientOptions;

/// How the waypoint reaches endpoints (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Plain TCP to endpoint addresses, always. The sandwich default: the in-pod ztunnel
    /// captures the connection and sends it as HBONE.
    #[default]
    Plain,
    /// HBONE to endpoints in the mesh when a workload certificate is configured, plain TCP to
    /// the others (and to every endpoint without a certificate).
    Auto,
    /// Every connection through the co-located ztunnel's Unix socket at this path, behind a
    /// PROXY v2 header naming the endpoint (our extension).
    ZtunnelUnix(PathBuf),
}

/// The waypoint's own upstream settings (flags, not Kubernetes resources).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// How long to wait for a connection to an endpoint (TCP, or every handshake of a tunnel).
    pub connect_timeout: Duration,
    /// The timeout until response headers when the route sets none (Envoy's default is 15 s).
    /// Zero disables it.
    pub request_timeout: Duration,
    /// How long an unused pooled HTTP connection stays open (zero: none is kept).
    pub idle_timeout: Duration,
    /// The most idle HTTP/1.1 connections kept per endpoint (and, over tunnels, per client).
    pub max_idle_per_endpoint: usize,
    /// Which transport carries the HTTP connections.
    pub mode: UpstreamMode,
    /// HBONE client settings (used in [`UpstreamMode::Auto`]).
    pub hbone: HboneClientOptions,
    /// The waypoint's own IP, named as PROXY source toward the co-located ztunnel when the
    /// original client is unknown. Unset, the unspecified address is sent.
    pub own_ip: Option<IpAddr>,
    /// The largest request body kept in memory so the request can be retried or mirrored
    /// (its length must be known up front); larger bodies stream once, unretried, unmirrored.
    pub max_replay_body: usize,
    /// The most mirrored copies in flight at once; more are dropped (and counted).
    pub max_mirrors_in_flight: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(90),
            // High enough that a burst of concurrent requests does not churn connections (each
            // new one costs a handshake and, under load, can overflow the backend's accept
            // queue); idle ones are still closed after `idle_timeout`.
            max_idle_per_endpoint: 1024,
            mode: UpstreamMode::Plain,
            hbone: HboneClientOptions::default(),
            own_ip: None,
            max_replay_body: 64 * 1024,
            max_mirrors_in_flight: 1024,
        }
    }
}
