//! Computing a [`Binding`] from one config build's resources: the rules of the parent
//! module's documentation, one object at a time. Only here do labels, annotations and listeners
//! get read; the request path reads the indexes this fills.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::Value;

use super::{
    Binding, BindingDecision, BoundWorkload, INBOUND_BINDING_ANNOTATION, MANAGED_LABEL,
    MESH_CONTROLLER, ObjectKind, TrafficType, USE_WAYPOINT_LABEL, USE_WAYPOINT_NAMESPACE_LABEL,
    WAYPOINT_FOR_LABEL,
};
use crate::config::build::{MeshIndex, service_account};
use crate::config::resources::{
    FromNamespaces, GATEWAY_API_GROUP, Gateway, Listener, ObjectMeta, RawObject, Resources,
};
use crate::config::{ProtocolSelection, ResourceRef, ServiceBackend};

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
        bind_pods_of_every_gateway(&mut binding, resources, mesh, backends);
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
    let (traffic_type, listener, malformed) = waypoint_of(resources, gw);
    binding.traffic_type = traffic_type;
    if let Some(why) = &malformed {
        binding.problems.push(why.clone());
        binding.malformed_inbound_binding = Some(why.clone());
    }
    binding.listener = listener.map(|l| l.name.clone());

    let namespaces = namespaces_of(resources);
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
    for entry in &resources.service_entries {
        let meta = &entry.metadata;
        let rref = ResourceRef::new("ServiceEntry", meta.namespace(), &meta.name);
        // istiod binds a ServiceEntry by the same labels, as service traffic.
        if let Some(d) = rules.decide(rref, meta, ObjectKind::Service) {
            if d.bound {
                let names = binding.entries.entry(d.object.namespace.clone());
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
        if d.object.kind == "Service" || d.object.kind == "ServiceEntry" {
            let key = (d.object.kind.clone(), d.object.namespace.clone());
            let names = binding.service_decisions.entry(key);
            names.or_default().insert(d.object.name.clone(), i);
        }
    }
    let malformed = malformed.map(|m| (ResourceRef::new("Gateway", gw_ns, gw_name), m));
    Computed { binding, malformed }
}

/// A Gateway read as a waypoint: the traffic it takes (`istio.io/waypoint-for`, Gateway over
/// GatewayClass), the listener that decides attachment, and why its inbound-binding annotation
/// is malformed, if it is.
fn waypoint_of<'r>(
    resources: &'r Resources,
    gw: &'r Gateway,
) -> (TrafficType, Option<&'r Listener>, Option<String>) {
    let class = resources.others.iter().map(|o| &o.resource).find(|o| {
        o.group() == GATEWAY_API_GROUP
            && o.kind == "GatewayClass"
            && o.metadata.name == gw.spec.gateway_class_name
    });
    let from_gw_or_class = |read: fn(&ObjectMeta) -> &BTreeMap<String, String>, key: &str| {
        read(&gw.metadata)
            .get(key)
            .or_else(|| class.and_then(|c| read(&c.metadata).get(key)))
            .cloned()
    };
    let traffic_type = from_gw_or_class(|m| &m.labels, WAYPOINT_FOR_LABEL)
        .map_or(TrafficType::Service, |v| TrafficType::parse(&v));
    let (inbound, malformed) =
        match from_gw_or_class(|m| &m.annotations, INBOUND_BINDING_ANNOTATION) {
            Some(value) => parse_inbound_binding(&value),
            None => (None, None),
        };
    (traffic_type, bound_listener(gw, inbound), malformed)
}

fn namespaces_of(resources: &Resources) -> HashMap<&str, &ObjectMeta> {
    raw_of_kind(resources, "Namespace")
        .map(|n| (n.metadata.name.as_str(), &n.metadata))
        .collect()
}

/// Without `--gateway` the process stands in for every Gateway in the config: it serves all
/// their listeners and every Service (nothing is refused). Pods are the exception to "serve
/// everything": a pod IP is only an address this waypoint may be sent when some Gateway here is
/// the Pod's waypoint and takes `workload`/`all` traffic, so exactly those Pods are served, by
/// istiod's rules applied to the Gateway each one names. A Pod naming no waypoint, or one that
/// is not in the config, stays unknown (the waypoint never relays to arbitrary pod IPs). No
/// decisions are recorded: with nothing enforced there is no refusal to explain.
fn bind_pods_of_every_gateway(
    binding: &mut Binding,
    resources: &Resources,
    mesh: &MeshIndex<'_>,
    backends: &HashMap<(String, String, u16), Arc<ServiceBackend>>,
) {
    let mut pods = raw_of_kind(resources, "Pod").peekable();
    if pods.peek().is_none() {
        return;
    }
    let namespaces = namespaces_of(resources);
    let protocols = endpoint_protocols(backends);
    for pod in pods {
        let ns = pod.metadata.namespace();
        let named = match use_waypoint(&pod.metadata, ns) {
            UseWaypoint::Absent => namespaces.get(ns).map(|m| use_waypoint(m, ns)),
            own => Some(own),
        };
        let Some(UseWaypoint::Named(wp_ns, wp_name)) = named else {
            continue;
        };
        let Some(gw) = resources
            .gateways
            .iter()
            .find(|g| g.metadata.namespace() == wp_ns && g.metadata.name == wp_name)
        else {
            continue;
        };
        let (traffic_type, listener, _) = waypoint_of(resources, gw);
        let rules = Rules {
            gateway: (wp_ns.as_str(), wp_name.as_str()),
            traffic_type,
            listener,
            namespaces: &namespaces,
        };
        let rref = ResourceRef::new("Pod", ns, &pod.metadata.name);
        if let Some(d) = rules.decide(rref, &pod.metadata, ObjectKind::Pod)
            && d.bound
        {
            bind_workload(binding, pod, &d.object, mesh, &protocols);
        }
    }
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
) -> HashMap<SocketAddr, ProtocolSelection> {
    backends
        .values()
        .flat_map(|b| b.endpoints.iter().map(|e| (e.address, b.protocol.clone())))
        .collect()
}

/// A Pod's IPs: `status.podIPs[].ip`, then `status.podIP`, each once; bad ones skipped.
pub(crate) fn pod_ips(pod: &RawObject) -> Vec<IpAddr> {
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
    protocols: &HashMap<SocketAddr, ProtocolSelection>,
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
            .map(|(a, p)| (a.port(), p.clone()))
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
