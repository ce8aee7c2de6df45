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
/// (`k8s.cluster.name=c1,k8s.namespace.name=ns,k8s.deployment.name=app,...`).
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

/// Longest baggage string we parse; longer input is ignored rather than trusted in part.
const MAX_BAGGAGE: usize = 8 * 1024;

impl WorkloadMetadata {
    /// Parses a W3C baggage string. Unknown keys and malformed members are skipped; input over
    /// 8 KiB yields empty metadata. Values are percent-decoded as W3C baggage requires.
    ///
    /// ```
    /// use waypoint_core::conn::WorkloadMetadata;
    /// let m = WorkloadMetadata::from_baggage(
    ///     "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=cart,service.name=cart,service.version=v2",
    /// );
    /// assert_eq!(m.namespace.as_deref(), Some("shop"));
    /// assert_eq!(m.workload_kind.as_deref(), Some("deployment"));
    /// assert_eq!(m.workload_name.as_deref(), Some("cart"));
    /// assert_eq!(m.service_version.as_deref(), Some("v2"));
    /// ```
    pub fn from_baggage(baggage: &str) -> Self {
        let mut m = WorkloadMetadata::default();
        if baggage.len() > MAX_BAGGAGE {
            return m;
        }
        for member in baggage.split(',') {
            // A member may carry `;properties` after the value: they are not ours.
            let kv = member.split(';').next().unwrap_or_default();
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), percent_decode(value.trim()));
            if value.is_empty() {
                continue;
            }
            match key {
                "k8s.cluster.name" => m.cluster = Some(value),
                "k8s.namespace.name" => m.namespace = Some(value),
                "service.name" => m.service_name = Some(value),
                "service.version" => m.service_version = Some(value),
                "cloud.region" => m.region = Some(value),
                "cloud.availability_zone" => m.zone = Some(value),
                _ => {
                    if let Some(kind) = key
                        .strip_prefix("k8s.")
                        .and_then(|k| k.strip_suffix(".name"))
                        && !kind.is_empty()
                        && !kind.contains('.')
                    {
                        m.workload_kind = Some(kind.to_owned());
                        m.workload_name = Some(value);
                    }
                }
            }
        }
        m
    }

    /// True when nothing was learned.
    pub fn is_empty(&self) -> bool {
        *self == WorkloadMetadata::default()
    }
}

/// A percent-decoded baggage value or query parameter (an escape that is not `%` and two hex
/// digits stays as is; bytes that do not form UTF-8 become U+FFFD).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
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
        }
    }

    /// The raw value of the first TLV of `kind`, if present.
    pub fn tlv(&self, kind: u8) -> Option<&Bytes> {
        self.tlvs.iter().find(|t| t.kind == kind).map(|t| &t.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baggage_skips_garbage_and_decodes() {
        let m = WorkloadMetadata::from_baggage(
            "junk,=x,k8s.pod.name=p%2D1;prop=1, cloud.region = eu ,k8s..name=x",
        );
        assert_eq!(m.workload_kind.as_deref(), Some("pod"));
        assert_eq!(m.workload_name.as_deref(), Some("p-1"));
        assert_eq!(m.region.as_deref(), Some("eu"));
        assert!(WorkloadMetadata::from_baggage(&"a=b,".repeat(5000)).is_empty());
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
