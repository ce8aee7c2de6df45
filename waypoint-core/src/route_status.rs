//! Gateway API status the filter factories compute while building: per-parent route conditions
//! and Gateway/listener conditions. They live in the [`Snapshot`](crate::snapshot::Snapshot) and
//! are shown by `/config_dump` and `waypoint check`, in the shape a status writer needs.

use serde_json::{Value, json};

use crate::config::resources::{RawObject, Resources};
use crate::config::{Condition, ResourceRef};

/// One entry of a route's `spec.parentRefs`, with defaults applied, as status names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParentRefKey {
    /// `gateway.networking.k8s.io` for Gateways, `""` for Services.
    pub group: String,
    /// `Gateway` or `Service`.
    pub kind: String,
    /// The parent's namespace (the route's when the parentRef has none).
    pub namespace: String,
    /// The parent's name.
    pub name: String,
    /// The listener name, as given on the parentRef.
    pub section_name: Option<String>,
    /// The port, as given on the parentRef.
    pub port: Option<u16>,
}

impl std::fmt::Display for ParentRefKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)?;
        if let Some(section) = &self.section_name {
            write!(f, " sectionName={section}")?;
        }
        if let Some(port) = self.port {
            write!(f, " port={port}")?;
        }
        Ok(())
    }
}

/// The conditions of one route for one of its parents (`status.parents[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteParentStatus {
    /// The route (`HTTPRoute`, `GRPCRoute`, `TCPRoute` or `TLSRoute`).
    pub route: ResourceRef,
    /// The parent.
    pub parent: ParentRefKey,
    /// `Accepted` and `ResolvedRefs`, with the upstream reasons.
    pub conditions: Vec<Condition>,
    /// The route's `metadata.generation` these conditions were computed from.
    pub observed_generation: Option<i64>,
}

/// The status of one listener of a Gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    /// The listener name.
    pub name: String,
    /// The listener port.
    pub port: u16,
    /// How many routes are accepted on this listener.
    pub attached_routes: u32,
    /// The route kinds it takes (`supportedKinds`, all of group `gateway.networking.k8s.io`):
    /// see `Listener::supported_route_kinds`.
    pub supported_kinds: Vec<&'static str>,
    /// `Accepted`, `ResolvedRefs`, `Programmed`.
    pub conditions: Vec<Condition>,
}

/// The status of one Gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayStatus {
    /// The Gateway.
    pub gateway: ResourceRef,
    /// The IP addresses it is served at.
    pub addresses: Vec<String>,
    /// `Accepted`, `Programmed`.
    pub conditions: Vec<Condition>,
    /// One entry per listener, in spec order.
    pub listeners: Vec<ListenerStatus>,
    /// The Gateway's `metadata.generation` these conditions (its own and its listeners') were
    /// computed from.
    pub observed_generation: Option<i64>,
}

/// The one condition of a GatewayClass whose `spec.controllerName` is ours: `Accepted`. Every
/// status writer (each waypoint, `waypoint controller`) writes exactly this, else they would
/// take turns rewriting it; `/config_dump` shows the same.
pub fn gateway_class_accepted() -> Condition {
    Condition {
        kind: "Accepted".into(),
        status: true,
        reason: "Accepted".into(),
        message: "handled by this controller".into(),
    }
}

/// A condition with `status` spelt as Kubernetes does (`"True"`/`"False"`).
pub fn condition_json(c: &Condition) -> Value {
    json!({
        "type": c.kind,
        "status": if c.status { "True" } else { "False" },
        "reason": c.reason,
        "message": c.message,
    })
}

/// Conditions computed from generation `observed_generation` of their object, each carrying
/// it as Kubernetes status does (left out when the object has none, as in a hand-written file).
fn conditions_json(conditions: &[Condition], observed_generation: Option<i64>) -> Vec<Value> {
    conditions
        .iter()
        .map(|c| {
            let mut c = condition_json(c);
            if let Some(generation) = observed_generation {
                c["observedGeneration"] = json!(generation);
            }
            c
        })
        .collect()
}

/// The `routeParents` list of `/config_dump`: one entry per route, its parents in the order
/// reported.
pub(crate) fn route_parents_json(statuses: &[RouteParentStatus]) -> Value {
    let mut routes: Vec<(&ResourceRef, Vec<Value>)> = Vec::new();
    for s in statuses {
        let parent = json!({
            "parentRef": {
                "group": s.parent.group,
                "kind": s.parent.kind,
                "namespace": s.parent.namespace,
                "name": s.parent.name,
                "sectionName": s.parent.section_name,
                "port": s.parent.port,
            },
            "conditions": s.conditions.iter().map(|c| {
                let mut c = condition_json(c);
                c["observedGeneration"] = json!(s.observed_generation);
                c
            }).collect::<Vec<_>>(),
        });
        match routes.iter_mut().find(|(r, _)| **r == s.route) {
            Some((_, parents)) => parents.push(parent),
            None => routes.push((&s.route, vec![parent])),
        }
    }
    routes.sort_by(|a, b| a.0.cmp(b.0));
    Value::Array(
        routes
            .into_iter()
            .map(|(r, parents)| {
                json!({"kind": r.kind, "namespace": r.namespace, "name": r.name, "parents": parents})
            })
            .collect(),
    )
}

/// A listener's `supportedKinds` as the Gateway API spells them: `[{group, kind}]`.
pub fn supported_kinds_json(kinds: &[&str]) -> Value {
    let group = crate::config::resources::GATEWAY_API_GROUP;
    kinds
        .iter()
        .map(|kind| json!({ "group": group, "kind": kind }))
        .collect()
}

/// The `gateways` list of `/config_dump`.
pub(crate) fn gateways_json(gateways: &[GatewayStatus]) -> Value {
    Value::Array(
        gateways
            .iter()
            .map(|g| {
                json!({
                    "namespace": g.gateway.namespace,
                    "name": g.gateway.name,
                    "addresses": g.addresses,
                    "conditions": conditions_json(&g.conditions, g.observed_generation),
                    "listeners": g.listeners.iter().map(|l| json!({
                        "name": l.name,
                        "port": l.port,
                        "attachedRoutes": l.attached_routes,
                        "supportedKinds": supported_kinds_json(&l.supported_kinds),
                        "conditions": conditions_json(&l.conditions, g.observed_generation),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The `gatewayClasses` list of `/config_dump`: the config's GatewayClasses whose
/// `spec.controllerName` is `controller`, each with the status a status writer gives it
/// ([`gateway_class_accepted`], computed from the class's generation), so a config read from
/// files shows what the API server would hold. Without a controller name (an embedding that
/// writes no status) the list is empty: no class is ours.
pub(crate) fn gateway_classes_json(resources: &Resources, controller: Option<&str>) -> Value {
    let Some(controller) = controller else {
        return json!([]);
    };
    Value::Array(
        gateway_classes_of(resources, controller)
            .map(|c| {
                json!({
                    "name": c.metadata.name,
                    "conditions": conditions_json(&[gateway_class_accepted()], c.metadata.generation),
                })
            })
            .collect(),
    )
}

/// The config's GatewayClasses whose `spec.controllerName` is `controller`: the classes whose
/// status a process of that controller writes and shows.
pub fn gateway_classes_of<'r>(
    resources: &'r Resources,
    controller: &'r str,
) -> impl Iterator<Item = &'r RawObject> {
    resources
        .others
        .iter()
        .map(|o| &o.resource)
        .filter(move |c| {
            c.group() == crate::config::resources::GATEWAY_API_GROUP
                && c.kind == "GatewayClass"
                && c.body["spec"]["controllerName"] == controller
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::parse_manifests;

    const CLASSES: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours, generation: 3}
spec: {controllerName: example.com/ours}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: theirs, generation: 1}
spec: {controllerName: example.com/theirs}
";

    #[test]
    fn only_classes_of_our_controller_are_reported_accepted_at_their_generation() {
        let config = parse_manifests(CLASSES, "test").unwrap();
        let classes = gateway_classes_json(&config.resources, Some("example.com/ours"));
        assert_eq!(
            classes,
            json!([{"name": "ours", "conditions": [{"type": "Accepted", "status": "True",
                "reason": "Accepted", "message": "handled by this controller",
                "observedGeneration": 3}]}])
        );
    }

    #[test]
    fn without_a_controller_name_no_class_is_reported() {
        let config = parse_manifests(CLASSES, "test").unwrap();
        assert_eq!(gateway_classes_json(&config.resources, None), json!([]));
    }
}
