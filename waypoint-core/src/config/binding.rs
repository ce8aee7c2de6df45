//! Binding: which Services and Pods send their traffic to this waypoint, decided the way istiod
//! decides it (`pilot/pkg/serviceregistry/ambient/waypoints.go`), so the waypoint serves exactly
//! what ztunnel will send it and refuses the rest.
//!
//! Why the waypoint computes this itself: ztunnel sends a bound Service's traffic here with the
//! Service VIP as destination, and a bound Pod's traffic with the pod IP. Anything else arriving
//! is a mistake or an attempt to use the waypoint as an open relay (it holds an mTLS identity
//! many workloads trust); serving it would also let a client pick Service-targeted policies that
//! are not this waypoint's to enforce. So with a named Gateway (`--gateway`) the request path
//! asks [`Config::destination`] once per request, and refuses what is not bound.
//!
//! The rules, as istiod applies them:
//! - The object's own `istio.io/use-waypoint` label, else its Namespace's, names the waypoint;
//!   `none` opts out. `istio.io/use-waypoint-namespace` (read beside the label that named the
//!   waypoint) gives the Gateway's namespace; default: the object's namespace.
//! - The traffic type is the Gateway's `istio.io/waypoint-for` label, else its GatewayClass's,
//!   default `service`. Services bind for `service`/`all`, Pods for `workload`/`all`.
//! - The bound listener: with `ambient.istio.io/waypoint-inbound-binding` (Gateway over
//!   GatewayClass) `PROXY/<port>`, the listener on that port (`PROXY` alone: the `istio.io/PROXY`
//!   listener); otherwise the `HBONE` listener on 15008; none found: `from: Same`. Its
//!   `allowedRoutes.namespaces` must admit the object's namespace, else `AttachmentDenied`.
//! - istiod checks attachment before traffic type, and a Pod that inherits a service-only
//!   waypoint from its Namespace is simply not bound (no error); both are mirrored here.
//!
//! Without `--gateway` nothing is enforced: every Service in the config is served, as before
//! binding existed (the quickstart and the file-mode conformance harness rely on it). The
//! process then stands in for every Gateway in the config, so a Pod whose waypoint is one of
//! them, for `workload`/`all` traffic, is served by pod IP as it would be with that Gateway
//! named; other pod IPs stay unknown (see `compute::bind_pods_of_every_gateway`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{Config, Endpoint, EndpointTransport, ProtocolSelection, ResourceRef, ServiceBackend};

/// The label naming the waypoint of a Service, Pod or Namespace.
pub(crate) const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// The label naming the namespace of the waypoint `istio.io/use-waypoint` names.
pub(crate) const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// The Gateway / GatewayClass label saying which traffic the waypoint takes.
pub(crate) const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// The Gateway / GatewayClass annotation choosing how ztunnel hands traffic over.
pub(crate) const INBOUND_BINDING_ANNOTATION: &str = "ambient.istio.io/waypoint-inbound-binding";
/// istiod's label on waypoints it manages; such a Service never binds to a waypoint itself.
const MANAGED_LABEL: &str = "gateway.istio.io/managed";
const MESH_CONTROLLER: &str = "istio.io-mesh-controller";

/// Which traffic a waypoint takes (`istio.io/waypoint-for`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrafficType {
    /// Service-addressed traffic (the default).
    #[default]
    Service,
    /// Workload-addressed traffic (pod IPs).
    Workload,
    /// Both.
    All,
    /// Neither (also any value istiod does not know: it matches none of its cases).
    None,
}

impl TrafficType {
    fn parse(value: &str) -> Self {
        match value {
            "service" => TrafficType::Service,
            "workload" => TrafficType::Workload,
            "all" => TrafficType::All,
            _ => TrafficType::None,
        }
    }

    fn takes(self, kind: ObjectKind) -> bool {
        matches!(
            (self, kind),
            (TrafficType::All, _)
                | (TrafficType::Service, ObjectKind::Service)
                | (TrafficType::Workload, ObjectKind::Pod)
        )
    }
}

impl fmt::Display for TrafficType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrafficType::Service => "service",
            TrafficType::Workload => "workload",
            TrafficType::All => "all",
            TrafficType::None => "none",
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Service,
    Pod,
}

/// What became of one Service or Pod that names a waypoint (or opts out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingDecision {
    /// The Service or Pod.
    pub object: ResourceRef,
    /// True when its traffic is this waypoint's.
    pub bound: bool,
    /// `Bound`, `OptedOut`, `OtherWaypoint`, `AttachmentDenied` or `UnsupportedTrafficType`.
    pub reason: &'static str,
    /// Why, for people (names the label or listener that decided).
    pub message: String,
}

/// A Pod bound to this waypoint: its traffic, addressed to a pod IP, is served here.
#[derive(Clone, Debug)]
pub struct BoundWorkload {
    /// The Pod.
    pub pod: ResourceRef,
    /// Its `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    /// Its IPs (`status.podIP`, `status.podIPs`).
    pub ips: Vec<IpAddr>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// How the waypoint reaches it (plain, or HBONE with its identity when in the mesh).
    pub transport: EndpointTransport,
    /// The protocol of ports a Service of the pod selects (see [`ProtocolSelection`]); other
    /// ports are detected.
    protocols: HashMap<u16, ProtocolSelection>,
}

impl BoundWorkload {
    /// A one-endpoint backend for exactly `destination` (this pod's IP and the port the client
    /// dialled): what the upstream connects to. No Service is involved.
    pub fn backend(&self, destination: SocketAddr) -> Arc<ServiceBackend> {
        let protocol = self.protocols.get(&destination.port()).cloned();
        Arc::new(ServiceBackend {
            policy: Default::default(),
            service: self.pod.clone(),
            port: destination.port(),
            cluster_ips: Vec::new(),
            protocol: protocol.unwrap_or_else(ProtocolSelection::detected),
            endpoints: vec![Endpoint {
                address: destination,
                stats: Arc::default(),
                transport: self.transport.clone(),
            }],
        })
    }
}

/// The binding of one config build (see the module documentation).
#[derive(Debug, Default)]
pub struct Binding {
    gateway: Option<ResourceRef>,
    traffic_type: TrafficType,
    listener: Option<String>,
    /// Bound Services: namespace → names (borrowed lookups on the request path).
    services: HashMap<String, HashSet<String>>,
    /// Bound ServiceEntries: namespace → names.
    entries: HashMap<String, HashSet<String>>,
    workloads: HashMap<IpAddr, Arc<BoundWorkload>>,
    gateway_addresses: HashSet<SocketAddr>,
    decisions: Vec<BindingDecision>,
    /// Index into `decisions` of each Service's and ServiceEntry's: (kind, namespace) → name
    /// → index.
    service_decisions: HashMap<(String, String), HashMap<String, usize>>,
    problems: Vec<String>,
    /// Why this waypoint's Gateway's inbound-binding annotation is malformed, if it is.
    malformed_inbound_binding: Option<String>,
}

impl Binding {
    /// True when a Gateway was named: only what is bound to it is served.
    pub fn enforced(&self) -> bool {
        self.gateway.is_some()
    }

    /// This waypoint's Gateway, when one was named.
    pub fn gateway(&self) -> Option<&ResourceRef> {
        self.gateway.as_ref()
    }

    /// The traffic type of this waypoint's Gateway.
    pub fn traffic_type(&self) -> TrafficType {
        self.traffic_type
    }

    /// The name of the listener whose `allowedRoutes` decides attachment, if one was found.
    pub fn bound_listener(&self) -> Option<&str> {
        self.listener.as_deref()
    }

    /// Whether Service `namespace`/`name` is served (always, when binding is not enforced).
    pub fn service_bound(&self, namespace: &str, name: &str) -> bool {
        !self.enforced()
            || self
                .services
                .get(namespace)
                .is_some_and(|names| names.contains(name))
    }

    /// Whether ServiceEntry `namespace`/`name` is served (always, when binding is not
    /// enforced). A ServiceEntry binds exactly as a Service does.
    pub fn service_entry_bound(&self, namespace: &str, name: &str) -> bool {
        !self.enforced()
            || self
                .entries
                .get(namespace)
                .is_some_and(|names| names.contains(name))
    }

    /// Whether the Service or ServiceEntry `service` is served.
    pub fn backend_bound(&self, service: &ResourceRef) -> bool {
        match service.kind.as_str() {
            "ServiceEntry" => self.service_entry_bound(&service.namespace, &service.name),
            _ => self.service_bound(&service.namespace, &service.name),
        }
    }

    /// The bound Pod with IP `ip`.
    pub(crate) fn workload_at(&self, ip: IpAddr) -> Option<&Arc<BoundWorkload>> {
        self.workloads.get(&ip)
    }

    /// Every bound Pod, once each, by name.
    pub fn workloads(&self) -> Vec<&Arc<BoundWorkload>> {
        let mut out: Vec<_> = self.workloads.values().collect();
        out.sort_by(|a, b| a.pod.cmp(&b.pod));
        out.dedup_by(|a, b| a.pod == b.pod);
        out
    }

    /// Whether `address` is a listener (IP and port) of this waypoint's Gateway (of any
    /// Gateway in the config when binding is not enforced).
    pub(crate) fn is_gateway_address(&self, address: SocketAddr) -> bool {
        self.gateway_addresses.contains(&address)
    }

    /// What was decided for each Service and Pod that names a waypoint or opts out, sorted.
    pub fn decisions(&self) -> &[BindingDecision] {
        &self.decisions
    }

    /// Problems with this waypoint's Gateway (missing, malformed inbound binding, ...).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Why Gateway `gateway` may not be accepted: it is this waypoint's Gateway and its
    /// `ambient.istio.io/waypoint-inbound-binding` (its own or its class's) is malformed.
    pub fn malformed_inbound_binding(&self, gateway: &ResourceRef) -> Option<&str> {
        (self.gateway.as_ref() == Some(gateway))
            .then_some(self.malformed_inbound_binding.as_deref())
            .flatten()
    }

    /// The decision about Service (or ServiceEntry) `service`, when it names a waypoint.
    pub(crate) fn service_decision(&self, service: &ResourceRef) -> Option<&BindingDecision> {
        let key = (service.kind.clone(), service.namespace.clone());
        let i = self.service_decisions.get(&key)?.get(&service.name)?;
        self.decisions.get(*i)
    }
}

/// What a connection's original destination is to this waypoint: the one place that decides.
#[derive(Clone, Debug)]
pub enum Destination<'a> {
    /// A listener address of this waypoint's Gateway: Gateway-parent routing.
    Gateway,
    /// A served Service's (or ServiceEntry's) VIP and port.
    Service(&'a Arc<ServiceBackend>),
    /// A bound Pod's IP (any port): served without Service routing.
    Workload(&'a Arc<BoundWorkload>),
    /// Nothing this waypoint serves.
    Unbound(Unbound<'a>),
}

/// Why a destination is not served.
#[derive(Clone, Debug)]
pub enum Unbound<'a> {
    /// The connection carries no original destination.
    NoDestination,
    /// A Service's VIP, but the Service is not bound to this waypoint.
    ServiceNotBound(&'a Arc<ServiceBackend>, Option<&'a BindingDecision>),
    /// Neither a served Service, a bound Pod nor this waypoint's Gateway.
    Unknown(SocketAddr),
}

impl Unbound<'_> {
    /// The `reason` label of `waypoint_unbound_destination_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Unbound::NoDestination => "no_destination",
            Unbound::ServiceNotBound(..) => "service_not_bound",
            Unbound::Unknown(_) => "unknown_destination",
        }
    }
}

impl fmt::Display for Unbound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unbound::NoDestination => f.write_str("the connection carries no original destination"),
            Unbound::ServiceNotBound(backend, decision) => {
                let why = decision.map_or("it names no waypoint", |d| d.message.as_str());
                write!(
                    f,
                    "{} is not bound to this waypoint: {why}",
                    backend.service
                )
            }
            Unbound::Unknown(d) => write!(
                f,
                "{d} is neither a bound Service, a bound workload nor this waypoint's Gateway"
            ),
        }
    }
}

impl Config {
    /// What this waypoint makes of a connection whose original destination is `destination`.
    pub fn destination(&self, destination: Option<SocketAddr>) -> Destination<'_> {
        let Some(d) = destination else {
            return Destination::Unbound(Unbound::NoDestination);
        };
        let binding = &self.binding;
        if binding.is_gateway_address(d) {
            return Destination::Gateway;
        }
        if let Some(s) = self.service_at(d) {
            return if binding.backend_bound(&s.service) {
                Destination::Service(s)
            } else {
                let decision = binding.service_decision(&s.service);
                Destination::Unbound(Unbound::ServiceNotBound(s, decision))
            };
        }
        match binding.workload_at(d.ip()) {
            Some(w) => Destination::Workload(w),
            None => Destination::Unbound(Unbound::Unknown(d)),
        }
    }

    /// The binding of this config to the waypoint's Gateway.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }
}

mod compute;
mod protocol;
pub(crate) use compute::{compute, pod_ips};
pub use protocol::terminates_tls_for_bytes;

#[cfg(test)]
mod tests;
