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
//! binding existed (the quickstart and the file-mode conformance harness rely on it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::Value;

use super::build::{MeshIndex, service_account};
use super::resources::{FromNamespaces, Gateway, Listener, ObjectMeta, RawObject, Resources};
use super::{AppProtocol, Config, Endpoint, EndpointTransport, ResourceRef, ServiceBackend};

/// The label naming the waypoint of a Service, Pod or Namespace.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// The label naming the namespace of the waypoint `istio.io/use-waypoint` names.
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// The Gateway / GatewayClass label saying which traffic the waypoint takes.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// The Gateway / GatewayClass annotation choosing how ztunnel hands traffic over.
pub const INBOUND_BINDING_ANNOTATION: &str = "ambient.istio.io/waypoint-inbound-binding";
/// istiod's label on waypoints it manages; such a Service never binds to a waypoint itself.
const MANAGED_LABEL: &str = "gateway.istio.io/managed";
const MESH_CONTROLLER: &str = "istio.io-mesh-controller";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

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
    /// The protocol of ports a Service says it serves (`appProtocol`); other ports: HTTP/1.1.
    protocols: HashMap<u16, AppProtocol>,
}

impl BoundWorkload {
    /// A one-endpoint backend for exactly `destination` (this pod's IP and the port the client
    /// dialled): what the upstream connects to. No Service is involved.
    pub fn backend(&self, destination: SocketAddr) -> Arc<ServiceBackend> {
        let protocol = self.protocols.get(&destination.port()).copied();
        Arc::new(ServiceBackend {
            service: self.pod.clone(),
            port: destination.port(),
            cluster_ips: Vec::new(),
            protocol: protocol.unwrap_or(AppProtocol::Http1),
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
    workloads: HashMap<IpAddr, Arc<BoundWorkload>>,
    gateway_addresses: HashSet<SocketAddr>,
    decisions: Vec<BindingDecision>,
    /// Index into `decisions` of each Service's: namespace → name → index.
    service_decisions: HashMap<String, HashMap<String, usize>>,
    problems: Vec<String>,
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

    /// The bound Pod with IP `ip`.
    pub fn workload_at(&self, ip: IpAddr) -> Option<&Arc<BoundWorkload>> {
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
    pub fn is_gateway_address(&self, address: SocketAddr) -> bool {
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

    /// The decision about Service `namespace`/`name`, when it names a waypoint.
    pub fn service_decision(&self, namespace: &str, name: &str) -> Option<&BindingDecision> {
        let i = self.service_decisions.get(namespace)?.get(name)?;
        self.decisions.get(*i)
    }
}

/// What a connection's original destination is to this waypoint: the one place that decides.
#[derive(Clone, Debug)]
pub enum Destination<'a> {
    /// A listener address of this waypoint's Gateway: Gateway-parent routing.
    Gateway,
    /// A served Service's VIP and port.
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
                write!(f, "{} is not bound to this waypoint: {why}", backend.service)
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
            let (ns, name) = (&s.service.namespace, &s.service.name);
            return if binding.service_bound(ns, name) {
                Destination::Service(s)
            } else {
                let decision = binding.service_decision(ns, name);
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

/// The Gateway the binding was computed for, what is bound to it, and a malformed inbound
/// binding annotation (the Gateway is then reported not accepted).
pub(crate) struct Computed {
    pub(crate) binding: Binding,
    pub(crate) malformed: Option<(ResourceRef, String)>,
}

/// Computes the binding of `resources` to `gateway` (`None`: not enforced).
pub(crate) fn compute(
    resources: &Resources,
    gateway: Option<&(String, String)>,
    mesh: &MeshIndex<'_>,
    backends: &HashMap<(String, String, u16), Arc<ServiceBackend>>,
) -> Computed {
    let mut binding = Binding::default();
    let Some((gw_ns, gw_name)) = gateway else {
        for gw in &resources.gateways {
            binding.gateway_addresses.extend(listener_addresses(gw));
        }
        return Computed {
            binding,
            malformed: None,
        };
    };
    binding.gateway = Some(ResourceRef::new("Gateway", gw_ns, gw_name));
    let Some(gw) = resources
        .gateways
        .iter()
        .find(|g| g.metadata.namespace() == gw_ns && &g.metadata.name == gw_name)
    else {
        binding.problems.push(format!(
            "Gateway {gw_ns}/{gw_name} (--gateway) is not in the config (or was rejected): \
             nothing is bound"
        ));
        return Computed {
            binding,
            malformed: None,
        };
    };
    binding.gateway_addresses.extend(listener_addresses(gw));
    let class = resources.others.iter().map(|o| &o.resource).find(|o| {
        o.group() == GATEWAY_GROUP
            && o.kind == "GatewayClass"
            && o.metadata.name == gw.spec.gateway_class_name
    });
    let from_gw_or_class = |read: fn(&ObjectMeta) -> &BTreeMap<String, String>, key: &str| {
        read(&gw.metadata)
            .get(key)
            .or_else(|| class.and_then(|c| read(&c.metadata).get(key)))
            .cloned()
    };
    binding.traffic_type = from_gw_or_class(|m| &m.labels, WAYPOINT_FOR_LABEL)
        .map_or(TrafficType::Service, |v| TrafficType::parse(&v));
    let (inbound, malformed) =
        match from_gw_or_class(|m| &m.annotations, INBOUND_BINDING_ANNOTATION) {
            Some(value) => parse_inbound_binding(&value),
            None => (None, None),
        };
    if let Some(why) = &malformed {
        binding.problems.push(why.clone());
    }
    let listener = bound_listener(gw, inbound);
    binding.listener = listener.map(|l| l.name.clone());

    let namespaces: HashMap<&str, &ObjectMeta> = raw_of_kind(resources, "Namespace")
        .map(|n| (n.metadata.name.as_str(), &n.metadata))
        .collect();
    let rules = Rules {
        gateway: (gw_ns, gw_name),
        traffic_type: binding.traffic_type,
        listener,
        namespaces: &namespaces,
    };
    for svc in &resources.services {
        if svc.metadata.labels.get(MANAGED_LABEL).map(String::as_str) == Some(MESH_CONTROLLER) {
            continue;
        }
        let rref = ResourceRef::new("Service", svc.metadata.namespace(), &svc.metadata.name);
        if let Some(d) = rules.decide(rref, &svc.metadata, ObjectKind::Service) {
            if d.bound {
                let names = binding.services.entry(d.object.namespace.clone());
                names.or_default().insert(d.object.name.clone());
            }
            binding.decisions.push(d);
        }
    }
    let protocols = endpoint_protocols(backends);
    for pod in raw_of_kind(resources, "Pod") {
        let rref = ResourceRef::new("Pod", pod.metadata.namespace(), &pod.metadata.name);
        let Some(d) = rules.decide(rref, &pod.metadata, ObjectKind::Pod) else {
            continue;
        };
        if d.bound {
            bind_workload(&mut binding, pod, &d.object, mesh, &protocols);
        }
        binding.decisions.push(d);
    }
    // Sorted for stable listings; the service index follows the sort.
    binding.decisions.sort_by(|a, b| a.object.cmp(&b.object));
    for (i, d) in binding.decisions.iter().enumerate() {
        if d.object.kind == "Service" {
            let names = binding.service_decisions.entry(d.object.namespace.clone());
            names.or_default().insert(d.object.name.clone(), i);
        }
    }
    let malformed = malformed.map(|m| (ResourceRef::new("Gateway", gw_ns, gw_name), m));
    Computed { binding, malformed }
}

/// The binding rules for one Gateway.
struct Rules<'a> {
    gateway: (&'a str, &'a str),
    traffic_type: TrafficType,
    listener: Option<&'a Listener>,
    namespaces: &'a HashMap<&'a str, &'a ObjectMeta>,
}

impl Rules<'_> {
    /// The decision for one object, `None` when neither it nor its namespace names a waypoint.
    fn decide(
        &self,
        object: ResourceRef,
        meta: &ObjectMeta,
        kind: ObjectKind,
    ) -> Option<BindingDecision> {
        let ns = object.namespace.clone();
        let decision = |bound, reason, message| {
            Some(BindingDecision {
                object: object.clone(),
                bound,
                reason,
                message,
            })
        };
        let (named, from_namespace) = match use_waypoint(meta, &ns) {
            UseWaypoint::Absent => {
                let ns_meta = self.namespaces.get(ns.as_str())?;
                (use_waypoint(ns_meta, &ns), true)
            }
            own => (own, false),
        };
        let whose = if from_namespace {
            format!("its Namespace {ns}'s label {USE_WAYPOINT_LABEL}")
        } else {
            format!("its label {USE_WAYPOINT_LABEL}")
        };
        let (wp_ns, wp_name) = match named {
            UseWaypoint::Absent => return None,
            UseWaypoint::OptOut => {
                return decision(false, "OptedOut", format!("{whose} is `none`"));
            }
            UseWaypoint::Named(wp_ns, wp_name) => (wp_ns, wp_name),
        };
        if (wp_ns.as_str(), wp_name.as_str()) != self.gateway {
            let message = format!("{whose} names waypoint {wp_ns}/{wp_name}, not this one");
            return decision(false, "OtherWaypoint", message);
        }
        let (gw_ns, gw_name) = self.gateway;
        if !self.admits(&ns) {
            let listener = self.listener.map_or("(none found)", |l| l.name.as_str());
            let message = format!(
                "namespace {ns} not allowed by listener {listener} of Gateway {gw_ns}/{gw_name} \
                 (spec.listeners[].allowedRoutes.namespaces)"
            );
            return decision(false, "AttachmentDenied", message);
        }
        let wanted = match kind {
            ObjectKind::Service => "service",
            ObjectKind::Pod => "workload",
        };
        if !self.traffic_type.takes(kind) {
            // istiod: a Pod inheriting a service waypoint from its Namespace is no error.
            let message = format!(
                "Gateway {gw_ns}/{gw_name} is for `{}` traffic ({WAYPOINT_FOR_LABEL}), not \
                 {wanted}",
                self.traffic_type
            );
            return decision(false, "UnsupportedTrafficType", message);
        }
        decision(true, "Bound", format!("bound by {whose}"))
    }

    /// Whether the bound listener's `allowedRoutes.namespaces` admits namespace `ns`.
    fn admits(&self, ns: &str) -> bool {
        let Some(listener) = self.listener else {
            return ns == self.gateway.0;
        };
        let allowed = &listener.allowed_routes.namespaces;
        match allowed.from {
            FromNamespaces::All => true,
            FromNamespaces::Same => ns == self.gateway.0,
            FromNamespaces::Selector => allowed.selector.as_ref().is_some_and(|s| {
                s.selects_namespace(ns, self.namespaces.get(ns).map(|m| &m.labels))
            }),
        }
    }
}

/// What an object's (or Namespace's) `istio.io/use-waypoint` label says.
enum UseWaypoint {
    Absent,
    OptOut,
    /// (namespace, name)
    Named(String, String),
}

fn use_waypoint(meta: &ObjectMeta, object_ns: &str) -> UseWaypoint {
    match meta.labels.get(USE_WAYPOINT_LABEL).map(String::as_str) {
        None => UseWaypoint::Absent,
        Some("none") => UseWaypoint::OptOut,
        Some(name) => {
            let ns = meta
                .labels
                .get(USE_WAYPOINT_NAMESPACE_LABEL)
                .map_or(object_ns, String::as_str);
            UseWaypoint::Named(ns.to_owned(), name.to_owned())
        }
    }
}

/// An inbound binding: `(protocol is PROXY, port; 0 = none given)`.
type InboundBinding = (bool, u16);

/// Parses the inbound-binding annotation as istiod does (`<protocol>` or `<protocol>/<port>`,
/// protocol `NONE` or `PROXY`). An unknown protocol or shape is ignored by istiod (the waypoint
/// stays native); a bad port keeps the protocol with port 0. Both are reported.
fn parse_inbound_binding(value: &str) -> (Option<InboundBinding>, Option<String>) {
    let field = format!("metadata.annotations[{INBOUND_BINDING_ANNOTATION:?}]");
    let parts: Vec<&str> = value.split('/').collect();
    if parts.len() > 2 {
        let why = format!("{field}: {value:?} is not `<protocol>` or `<protocol>/<port>`; ignored");
        return (None, Some(why));
    }
    let proxy = match parts[0] {
        "PROXY" => true,
        "NONE" => false,
        other => {
            let why = format!("{field}: protocol {other:?} is not NONE or PROXY; ignored");
            return (None, Some(why));
        }
    };
    match parts.get(1).map(|p| p.parse::<u16>()) {
        None => (Some((proxy, 0)), None),
        Some(Ok(port)) => (Some((proxy, port)), None),
        Some(Err(_)) => {
            let why = format!(
                "{field}: port {:?} is not a port number; istiod keeps {} with port 0",
                parts[1], parts[0]
            );
            (Some((proxy, 0)), Some(why))
        }
    }
}

/// The listener whose `allowedRoutes` decides attachment (istiod's `makeAllowedRoutes`).
fn bound_listener(gw: &Gateway, inbound: Option<InboundBinding>) -> Option<&Listener> {
    let listeners = &gw.spec.listeners;
    let by_binding = inbound.and_then(|(proxy, port)| {
        if port != 0 {
            listeners.iter().find(|l| l.port == port)
        } else if proxy {
            listeners.iter().find(|l| l.protocol == "istio.io/PROXY")
        } else {
            None
        }
    });
    by_binding.or_else(|| {
        listeners
            .iter()
            .find(|l| l.protocol == "HBONE" && l.port == 15008)
    })
}

/// Every (address, listener port) of a Gateway.
fn listener_addresses(gw: &Gateway) -> Vec<SocketAddr> {
    let ips = gw.ip_addresses();
    ips.iter()
        .flat_map(|ip| {
            gw.spec
                .listeners
                .iter()
                .map(|l| SocketAddr::new(*ip, l.port))
        })
        .collect()
}

fn raw_of_kind<'a>(resources: &'a Resources, kind: &'a str) -> impl Iterator<Item = &'a RawObject> {
    resources
        .others
        .iter()
        .map(|o| &o.resource)
        .filter(move |o| o.group().is_empty() && o.kind == kind)
}

/// The protocol of every endpoint address some Service port names.
fn endpoint_protocols(
    backends: &HashMap<(String, String, u16), Arc<ServiceBackend>>,
) -> HashMap<SocketAddr, AppProtocol> {
    backends
        .values()
        .flat_map(|b| b.endpoints.iter().map(|e| (e.address, b.protocol)))
        .collect()
}

/// A Pod's IPs: `status.podIPs[].ip`, then `status.podIP`, each once; bad ones skipped.
fn pod_ips(pod: &RawObject) -> Vec<IpAddr> {
    let status = pod.body.get("status");
    let listed = status
        .and_then(|s| s.get("podIPs"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("ip"));
    let single = status.and_then(|s| s.get("podIP"));
    let mut ips = Vec::new();
    for ip in listed
        .chain(single)
        .filter_map(Value::as_str)
        .filter_map(|s| s.parse().ok())
    {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

fn bind_workload(
    binding: &mut Binding,
    pod: &RawObject,
    rref: &ResourceRef,
    mesh: &MeshIndex<'_>,
    protocols: &HashMap<SocketAddr, AppProtocol>,
) {
    let ips = pod_ips(pod);
    let workload = Arc::new(BoundWorkload {
        pod: rref.clone(),
        service_account: service_account(pod).to_owned(),
        transport: mesh.pod_transport(&rref.namespace, &rref.namespace, Some(pod)),
        labels: pod.metadata.labels.clone(),
        protocols: protocols
            .iter()
            .filter(|(a, _)| ips.contains(&a.ip()))
            .map(|(a, p)| (a.port(), *p))
            .collect(),
        ips,
    });
    for ip in &workload.ips {
        if let Some(first) = binding.workloads.get(ip) {
            tracing::warn!(%ip, pod = %rref, taken_by = %first.pod,
                "two bound Pods share an IP (host network?); keeping the first");
            continue;
        }
        binding.workloads.insert(*ip, workload.clone());
    }
}

#[cfg(test)]
mod tests;
