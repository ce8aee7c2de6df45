//! The status we want the API server to hold, computed from one snapshot: pure functions, no
//! I/O, so every decision (which objects are ours, which parents we own, what each condition
//! says) is unit tested without a fake API server.
//!
//! The result holds only what *we* decide. Times (`lastTransitionTime`) and everything other
//! controllers own are added when merging with the object as read (see `merge`), so two
//! desired states compare equal exactly when there is nothing new to write.
//!
//! Which objects are ours:
//! - GatewayClasses whose `spec.controllerName` is our controller name;
//! - Gateways of those classes, restricted to `--gateway ns/name` when set;
//! - on routes, the `status.parents` entries for parents that are our Gateways, and for Service
//!   parents we serve ([`serves_service_parent`]).
//!
//! Every route of the snapshot gets a desired entry list, possibly empty: empty means "none of
//! ours", so entries we wrote before (a parent removed from the spec, a Gateway that is no
//! longer ours) are removed. With `--gateway`, waypoints of other Gateways may share our
//! controller name: their entries (for their Gateway, or Services we do not serve) are kept.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};
use waypoint_core::config::ResourceRef;
use waypoint_core::config::resources::{
    GATEWAY_API_GROUP, Gateway, ISTIO_NETWORKING_GROUP, Listener, Object,
};
use waypoint_core::route_status::{
    GatewayStatus, ListenerStatus, ParentRefKey, RouteParentStatus, gateway_class_accepted,
    gateway_classes_of, supported_kinds_json,
};
use waypoint_core::snapshot::Snapshot;

use crate::api::{ApiResource, kinds};

use super::controller::ControllerName;
use super::schema::{api_attached_routes, api_condition, api_conditions};

/// The kinds whose status we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusKind {
    /// `GatewayClass` (cluster-scoped).
    GatewayClass,
    /// `Gateway`.
    Gateway,
    /// `HTTPRoute`.
    HttpRoute,
    /// `GRPCRoute`.
    GrpcRoute,
    /// `TCPRoute`.
    TcpRoute,
    /// `TLSRoute`.
    TlsRoute,
}

impl StatusKind {
    /// The API resource of this kind.
    pub fn resource(self) -> ApiResource {
        match self {
            StatusKind::GatewayClass => kinds::GATEWAY_CLASS,
            StatusKind::Gateway => kinds::GATEWAY,
            StatusKind::HttpRoute => kinds::HTTP_ROUTE,
            StatusKind::GrpcRoute => kinds::GRPC_ROUTE,
            StatusKind::TcpRoute => kinds::TCP_ROUTE,
            StatusKind::TlsRoute => kinds::TLS_ROUTE,
        }
    }

    fn route(kind: &str) -> Option<StatusKind> {
        match kind {
            "HTTPRoute" => Some(StatusKind::HttpRoute),
            "GRPCRoute" => Some(StatusKind::GrpcRoute),
            "TCPRoute" => Some(StatusKind::TcpRoute),
            "TLSRoute" => Some(StatusKind::TlsRoute),
            _ => None,
        }
    }
}

/// One object whose status we write.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Its kind.
    pub kind: StatusKind,
    /// Its namespace; `None` for GatewayClasses.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind.resource().kind;
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// What we want in one object's status.
#[derive(Clone, Debug, PartialEq)]
pub enum Desired {
    /// The fields of `status` we own (GatewayClass, Gateway): `conditions`, and `listeners` for
    /// Gateways. Other fields (a Gateway's `addresses`) are kept as read.
    Fields(Value),
    /// Our entries of a route's shared `status.parents`.
    RouteParents {
        /// The entries we want (possibly none: then ours are removed).
        ours: Vec<Value>,
        /// `--gateway`: other waypoints may run under the same controller name for other
        /// Gateways, so an entry of our controller for another Gateway (or for a Service we do
        /// not serve) is theirs and kept. `None`: every entry of our controller is ours.
        only_gateway: Option<(String, String)>,
    },
}

/// The status of every object we write, for one snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredStatus {
    /// By object, in a stable order (classes, Gateways, then routes).
    pub objects: BTreeMap<ObjectKey, Desired>,
}

/// Whose status we write: our controller name, and the one Gateway we serve when named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Our controller name.
    pub controller: ControllerName,
    /// `--gateway`: `(namespace, name)`; `None` = every Gateway of our classes.
    pub gateway: Option<(String, String)>,
}

/// The status of one of our GatewayClasses: `Accepted`. Written by the waypoints and by
/// `waypoint controller` alike, so both must write exactly this (else they would take turns
/// rewriting it).
pub(crate) fn class_fields(generation: Option<i64>) -> Value {
    json!({ "conditions": [api_condition(&gateway_class_accepted(), generation)] })
}

/// Computes the status we want for `snapshot`.
pub fn desired_status(snapshot: &Snapshot, scope: &Scope) -> DesiredStatus {
    let resources = &snapshot.config.resources;
    let mut objects = BTreeMap::new();
    let mut classes = HashSet::new();
    for class in gateway_classes_of(resources, scope.controller.as_str()) {
        classes.insert(class.metadata.name.as_str());
        let key = ObjectKey {
            kind: StatusKind::GatewayClass,
            namespace: None,
            name: class.metadata.name.clone(),
        };
        objects.insert(
            key,
            Desired::Fields(class_fields(class.metadata.generation)),
        );
    }
    let mut our_gateways = HashSet::new();
    for gateway in resources.gateways.iter().map(|g| &g.resource) {
        let named = scope.gateway.as_ref().is_none_or(|(ns, name)| {
            gateway.metadata.namespace() == ns && &gateway.metadata.name == name
        });
        if !named || !classes.contains(gateway.spec.gateway_class_name.as_str()) {
            continue;
        }
        let reference = gateway.resource_ref();
        let Some(computed) = snapshot.gateways.iter().find(|g| g.gateway == reference) else {
            tracing::warn!(gateway = %reference, "no status computed for our Gateway: not written");
            continue;
        };
        our_gateways.insert(reference.clone());
        let key = ObjectKey {
            kind: StatusKind::Gateway,
            namespace: Some(reference.namespace.clone()),
            name: reference.name.clone(),
        };
        objects.insert(key, Desired::Fields(gateway_fields(gateway, computed)));
    }
    // Each route's reported parents, gathered once rather than searched for every route.
    let mut parents_of: HashMap<&ResourceRef, Vec<&RouteParentStatus>> = HashMap::new();
    for p in &snapshot.route_parents {
        parents_of.entry(&p.route).or_default().push(p);
    }
    let routes = resources
        .http_routes
        .iter()
        .map(|r| r.resource_ref())
        .chain(resources.grpc_routes.iter().map(|r| r.resource_ref()))
        .chain(resources.tcp_routes.iter().map(|r| r.resource_ref()))
        .chain(resources.tls_routes.iter().map(|r| r.resource_ref()));
    for route in routes {
        let Some(kind) = StatusKind::route(&route.kind) else {
            continue;
        };
        let entries = parents_of
            .get(&route)
            .into_iter()
            .flatten()
            .filter(|p| owns_parent(snapshot, &our_gateways, &p.parent))
            .filter_map(|p| {
                let conditions = api_conditions(&p.conditions, p.observed_generation);
                if conditions.is_empty() {
                    // The API refuses a parent entry without a condition.
                    tracing::warn!(%route, parent = %p.parent.name, "route parent without conditions: not written");
                    return None;
                }
                Some(json!({
                    "parentRef": parent_ref_json(&p.parent),
                    "controllerName": scope.controller.as_str(),
                    "conditions": conditions,
                }))
            })
            .collect();
        let key = ObjectKey {
            kind,
            namespace: Some(route.namespace.clone()),
            name: route.name.clone(),
        };
        let desired = Desired::RouteParents {
            ours: entries,
            only_gateway: scope.gateway.clone(),
        };
        objects.insert(key, desired);
    }
    DesiredStatus { objects }
}

/// Whether a route's entry for `parent` is ours to write.
fn owns_parent(
    snapshot: &Snapshot,
    our_gateways: &HashSet<ResourceRef>,
    parent: &ParentRefKey,
) -> bool {
    match (parent.group.as_str(), parent.kind.as_str()) {
        (GATEWAY_API_GROUP, "Gateway") => our_gateways.contains(&ResourceRef::new(
            "Gateway",
            parent.namespace.clone(),
            parent.name.clone(),
        )),
        ("" | "core", "Service") => serves_service_parent(snapshot, parent),
        (ISTIO_NETWORKING_GROUP, "ServiceEntry") => snapshot
            .config
            .binding()
            .service_entry_bound(&parent.namespace, &parent.name),
        _ => false,
    }
}

/// Whether this waypoint serves the Service parent `parent` (GAMMA) that the snapshot reports,
/// so the route's entry for it is ours: always, unless binding is enforced (`--gateway`) and the
/// Service is not bound to our Gateway. A route on a Service another waypoint serves is that
/// waypoint's to report.
pub fn serves_service_parent(snapshot: &Snapshot, parent: &ParentRefKey) -> bool {
    snapshot
        .config
        .binding()
        .service_bound(&parent.namespace, &parent.name)
}

/// The parentRef of a status entry: the route's reference with defaults applied (namespace
/// filled in), optional fields left out rather than `null` (the CRD schema refuses nulls).
pub fn parent_ref_json(parent: &ParentRefKey) -> Value {
    let mut out = Map::new();
    out.insert("group".into(), json!(parent.group));
    out.insert("kind".into(), json!(parent.kind));
    out.insert("namespace".into(), json!(parent.namespace));
    out.insert("name".into(), json!(parent.name));
    if let Some(section) = &parent.section_name {
        out.insert("sectionName".into(), json!(section));
    }
    if let Some(port) = parent.port {
        out.insert("port".into(), json!(port));
    }
    Value::Object(out)
}

/// Our fields of a Gateway's status.
fn gateway_fields(gateway: &Gateway, computed: &GatewayStatus) -> Value {
    let generation = gateway.metadata.generation;
    let conditions = api_conditions(&computed.conditions, generation);
    let listeners: Vec<Value> = gateway
        .spec
        .listeners
        .iter()
        .filter_map(|l| {
            let status = computed.listeners.iter().find(|s| s.name == l.name)?;
            Some(listener_json(l, status, generation))
        })
        .collect();
    json!({ "conditions": conditions, "listeners": listeners })
}

fn listener_json(listener: &Listener, status: &ListenerStatus, generation: Option<i64>) -> Value {
    json!({
        "name": listener.name,
        "supportedKinds": supported_kinds_json(&status.supported_kinds),
        "attachedRoutes": api_attached_routes(status.attached_routes),
        "conditions": api_conditions(&status.conditions, generation),
    })
}
