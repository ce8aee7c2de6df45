//! What the waypoint knows about a connection before it reads the first request.
//!
//! Every inbound binding (the sandwich PROXY listener, HBONE, a plain listener) ends by producing
//! a byte stream and a [`ConnInfo`]. Nothing after that point knows how the bytes arrived.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::identity::SpiffeId;

/// How a connection reached the waypoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// From a co-located ztunnel with a PROXY protocol header, on the named listener
    /// (`tcp:127.0.0.1:15088` or `unix:/path`).
    Sandwich {
        /// The listener the connection arrived on, as displayed in logs.
        listener: String,
    },
    /// An HTTP/2 CONNECT stream of an HBONE tunnel terminated by the waypoint itself.
    Hbone,
    /// A plain listener with no PROXY header: nothing is known beyond the socket.
    Plain {
        /// The listener the connection arrived on.
        listener: String,
    },
}

/// One PROXY protocol TLV, kept verbatim so vendor filters can read types waypoint does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlv {
    /// The TLV type byte.
    pub kind: u8,
    /// The raw value.
    pub value: Bytes,
}

/// Metadata about the source workload, in the W3C baggage form ztunnel sends on HBONE
/// (`k8s.cluster.name=c1,k8s.namespace.name=ns,k8s.deployment.name=app,...`). Its codec, both
/// ways, is [`crate::wire::baggage`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadMetadata {
    /// `k8s.cluster.name`.
    pub cluster: Option<String>,
    /// `k8s.namespace.name`.
    pub namespace: Option<String>,
    /// The workload kind from a `k8s.<kind>.name` key (`deployment`, `pod`, ...).
    pub workload_kind: Option<String>,
    /// The workload name from a `k8s.<kind>.name` key.
    pub workload_name: Option<String>,
    /// `service.name` (the canonical service, Istio's `app` label).
    pub service_name: Option<String>,
    /// `service.version`.
    pub service_version: Option<String>,
    /// `cloud.region`.
    pub region: Option<String>,
    /// `cloud.availability_zone`.
    pub zone: Option<String>,
}

impl WorkloadMetadata {
    /// True when nothing was learned.
    pub fn is_empty(&self) -> bool {
        *self == WorkloadMetadata::default()
    }
}

/// What the waypoint learned terminating TLS on a connection (a Gateway HTTPS listener).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The server name the client sent (SNI), as sent; `None` when it sent none.
    pub sni: Option<String>,
    /// The application protocol agreed by ALPN (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
}

/// Everything known about an inbound connection: who sent it and where it was going.
///
/// Filled by the transport (PROXY header TLVs, or the HBONE peer certificate and CONNECT
/// headers), read by filters through the request context.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// How the connection arrived.
    pub binding: Binding,
    /// The source address: the PROXY header's source, or the socket peer.
    pub source: Option<SocketAddr>,
    /// The original destination the client dialled (service VIP:port or workload ip:port).
    pub destination: Option<SocketAddr>,
    /// The peer's SPIFFE identity, when it was proven (PROXY TLV 0xD0 from a trusted ztunnel, or
    /// an HBONE client certificate). `None` means unauthenticated.
    pub peer_identity: Option<SpiffeId>,
    /// Source workload metadata (baggage), when sent.
    pub source_workload: WorkloadMetadata,
    /// The targeted service's hostname (PROXY TLV 0xD1), when sent.
    pub target_service: Option<String>,
    /// Every PROXY TLV as received, including the ones decoded above.
    pub tlvs: Vec<Tlv>,
    /// The W3C `traceparent` the tunnel was opened with (HBONE CONNECT header), if any.
    pub traceparent: Option<String>,
    /// Set when the waypoint terminated TLS on this connection (the destination is an HTTPS
    /// listener): requests on it were sent as `https`, and the SNI chose their listener.
    pub tls: Option<TlsInfo>,
    /// When the connection was accepted.
    pub accepted_at: Instant,
    /// The metric label sets its requests were recorded with (see `telemetry::series`); a
    /// clone starts empty.
    pub(crate) series: crate::telemetry::ConnSeries,
}

impl ConnInfo {
    /// A connection that arrived with nothing known beyond its binding.
    pub fn new(binding: Binding) -> Self {
        ConnInfo {
            binding,
            source: None,
            destination: None,
            peer_identity: None,
            source_workload: WorkloadMetadata::default(),
            target_service: None,
            tlvs: Vec::new(),
            traceparent: None,
            tls: None,
            accepted_at: Instant::now(),
            series: Default::default(),
        }
    }

    /// The raw value of the first TLV of `kind`, if present.
    pub fn tlv(&self, kind: u8) -> Option<&Bytes> {
        self.tlvs.iter().find(|t| t.kind == kind).map(|t| &t.value)
    }
}
