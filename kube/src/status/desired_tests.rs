//! Which objects and parents are ours, and what their desired status says.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use waypoint_core::config::{Condition, Config, ResourceRef, parse_manifests};
use waypoint_core::filter::FilterChain;
use waypoint_core::route_status::{GatewayStatus, ListenerStatus, ParentRefKey, RouteParentStatus};
use waypoint_core::snapshot::Snapshot;

use super::desired::*;

const MANIFESTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours, generation: 3}
spec: {controllerName: waypoint.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: theirs, generation: 1}
spec: {controllerName: istio.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: infra, generation: 2}
spec:
  gatewayClassName: ours
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: grpc-only, port: 81, protocol: HTTP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: second, namespace: infra, generation: 1}
spec:
  gatewayClassName: ours
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: istio, namespace: infra, generation: 1}
spec:
  gatewayClassName: theirs
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra, generation: 7}
spec:
  parentRefs:
  - {name: waypoint, sectionName: http}
  - {name: istio}
  - {group: "", kind: Service, name: svc, port: 80}
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: infra, generation: 1}
spec:
  parentRefs: [{name: istio}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
"#;

pub(super) fn cond(kind: &str, status: bool, reason: &str) -> Condition {
    Condition {
        kind: kind.into(),
        status,
        reason: reason.into(),
        message: format!("{kind} {reason}"),
    }
}

fn gateway_parent(name: &str, section: Option<&str>) -> ParentRefKey {
    ParentRefKey {
        group: "gateway.networking.k8s.io".into(),
        kind: "Gateway".into(),
        namespace: "infra".into(),
        name: name.into(),
        section_name: section.map(Into::into),
        port: None,
    }
}

fn route_parent(route: &str, parent: ParentRefKey, generation: i64) -> RouteParentStatus {
    RouteParentStatus {
        route: ResourceRef::new("HTTPRoute", "infra", route),
        parent,
        conditions: vec![
            cond("Accepted", true, "Accepted"),
            cond("ResolvedRefs", true, "ResolvedRefs"),
        ],
        observed_generation: Some(generation),
    }
}

/// The status of Gateway `infra/name` with these listeners, each taking the route kinds its
/// listener in `config` takes (as the routing filter computes them).
fn gateway_status(config: &Config, name: &str, listeners: &[&str]) -> GatewayStatus {
    let gateway = config
        .resources
        .gateways
        .iter()
        .find(|g| g.metadata.name == name && g.metadata.namespace() == "infra");
    let kinds = |listener: &str| {
        gateway
            .and_then(|g| g.spec.listeners.iter().find(|l| l.name == listener))
            .map(|l| l.supported_route_kinds())
            .unwrap_or_default()
    };
    GatewayStatus {
        gateway: ResourceRef::new("Gateway", "infra", name),
        addresses: vec!["10.0.0.1".into()],
        conditions: vec![
            cond("Accepted", true, "Accepted"),
            cond("Programmed", true, "Programmed"),
        ],
        listeners: listeners
            .iter()
            .map(|l| ListenerStatus {
                name: (*l).into(),
                port: 80,
                attached_routes: 2,
                supported_kinds: kinds(l),
                conditions: vec![cond("Accepted", true, "Accepted")],
            })
            .collect(),
        observed_generation: gateway.and_then(|g| g.metadata.generation),
    }
}

pub(super) fn snapshot() -> Snapshot {
    let config = parse_manifests(MANIFESTS, "test.yaml").expect("the manifests parse");
    let gateways = vec![
        gateway_status(&config, "waypoint", &["http", "grpc-only", "mesh"]),
        gateway_status(&config, "second", &["http"]),
        gateway_status(&config, "istio", &["http"]),
    ];
    let service = ParentRefKey {
        group: String::new(),
        kind: "Service".into(),
        namespace: "infra".into(),
        name: "svc".into(),
        section_name: None,
        port: Some(80),
    };
    Snapshot {
        config: Arc::new(config),
        chain: FilterChain::new(Vec::new()),
        reports: Vec::new(),
        route_parents: vec![
            route_parent("web", gateway_parent("waypoint", Some("http")), 7),
            route_parent("web", gateway_parent("istio", None), 7),
            route_parent("web", service, 7),
            route_parent("elsewhere", gateway_parent("istio", None), 1),
        ],
        gateways,
        version: 1,
        applied_at: SystemTime::now(),
    }
}

pub(super) fn key(kind: StatusKind, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: namespace.map(Into::into),
        name: name.into(),
    }
}

fn fields(desired: &DesiredStatus, key: &ObjectKey) -> Value {
    match desired.objects.get(key) {
        Some(Desired::Fields(v)) => v.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

fn entries(desired: &DesiredStatus, key: &ObjectKey) -> Vec<Value> {
    match desired.objects.get(key) {
        Some(Desired::RouteParents { ours, .. }) => ours.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn only_classes_naming_our_controller_and_their_gateways_are_ours() {
    let desired = desired_status(&snapshot(), &Scope::default());
    let owned: Vec<String> = desired
        .objects
        .iter()
        .filter(|(_, d)| matches!(d, Desired::Fields(_)))
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(
        owned,
        [
            "GatewayClass ours",
            "Gateway infra/second",
            "Gateway infra/waypoint"
        ]
    );
    let class = fields(&desired, &key(StatusKind::GatewayClass, None, "ours"));
    assert_eq!(class["conditions"][0]["type"], "Accepted");
    assert_eq!(class["conditions"][0]["status"], "True");
    assert_eq!(class["conditions"][0]["observedGeneration"], 3);
}

#[test]
fn the_gateway_flag_restricts_gateways_to_the_one_named() {
    let scope = Scope {
        gateway: Some(("infra".into(), "waypoint".into())),
        ..Scope::default()
    };
    let desired = desired_status(&snapshot(), &scope);
    assert!(
        desired
            .objects
            .contains_key(&key(StatusKind::Gateway, Some("infra"), "waypoint"))
    );
    assert!(
        !desired
            .objects
            .contains_key(&key(StatusKind::Gateway, Some("infra"), "second"))
    );
}

#[test]
fn gateway_status_has_generations_listeners_supported_kinds_and_attached_routes() {
    let desired = desired_status(&snapshot(), &Scope::default());
    let gw = fields(
        &desired,
        &key(StatusKind::Gateway, Some("infra"), "waypoint"),
    );
    let types: Vec<&Value> = gw["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["type"])
        .collect();
    assert_eq!(types, ["Accepted", "Programmed"]);
    assert!(
        gw["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["observedGeneration"] == 2)
    );
    assert!(
        gw.get("addresses").is_none(),
        "addresses are the deploying controller's"
    );
    let listeners = gw["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 3);
    assert_eq!(listeners[0]["name"], "http");
    assert_eq!(listeners[0]["attachedRoutes"], 2);
    assert_eq!(listeners[0]["conditions"][0]["observedGeneration"], 2);
    let group = "gateway.networking.k8s.io";
    assert_eq!(
        listeners[0]["supportedKinds"],
        json!([{"group": group, "kind": "HTTPRoute"}, {"group": group, "kind": "GRPCRoute"}])
    );
    assert_eq!(
        listeners[1]["supportedKinds"],
        json!([{"group": group, "kind": "GRPCRoute"}])
    );
    assert_eq!(
        listeners[2]["supportedKinds"],
        json!([]),
        "HBONE takes no route kind"
    );
}

#[test]
fn route_entries_are_ours_for_our_gateways_and_served_services_only() {
    let desired = desired_status(&snapshot(), &Scope::default());
    let web = entries(&desired, &key(StatusKind::HttpRoute, Some("infra"), "web"));
    let parents: Vec<&Value> = web.iter().map(|e| &e["parentRef"]).collect();
    assert_eq!(
        parents,
        [
            &json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra",
                    "name": "waypoint", "sectionName": "http"}),
            &json!({"group": "", "kind": "Service", "namespace": "infra", "name": "svc", "port": 80}),
        ]
    );
    for entry in &web {
        assert_eq!(entry["controllerName"], "waypoint.dev/gateway-controller");
        let conditions = entry["conditions"].as_array().expect("conditions");
        assert_eq!(conditions.len(), 2);
        assert!(conditions.iter().all(|c| c["observedGeneration"] == 7));
        assert!(
            conditions
                .iter()
                .all(|c| c.get("lastTransitionTime").is_none())
        );
    }
}

#[test]
fn a_route_with_no_parent_of_ours_wants_no_entries_so_stale_ones_go() {
    let desired = desired_status(&snapshot(), &Scope::default());
    let elsewhere = entries(
        &desired,
        &key(StatusKind::HttpRoute, Some("infra"), "elsewhere"),
    );
    assert!(elsewhere.is_empty());
}

#[test]
fn another_controller_name_owns_other_classes() {
    let scope = Scope {
        controller: "example.com/other".parse().expect("valid"),
        gateway: None,
    };
    let desired = desired_status(&snapshot(), &scope);
    assert!(
        desired
            .objects
            .values()
            .all(|d| matches!(d, Desired::RouteParents { ours, .. } if ours.iter().all(|e| e["parentRef"]["kind"] == "Service")))
    );
}

#[test]
fn with_binding_enforced_a_service_parent_not_bound_to_us_is_not_ours() {
    use waypoint_core::config::build::{EndpointStatsCache, MeshOptions};
    use waypoint_core::config::load::parse_manifests_with;
    let service = "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: infra}\nspec: {clusterIP: 10.0.0.9, ports: [{port: 80}]}\n";
    let bound_namespace = "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: infra, labels: {istio.io/use-waypoint: waypoint}}\n";
    let mut scoped = snapshot();
    let cache = EndpointStatsCache::with_mesh(MeshOptions {
        gateway: Some(("infra".into(), "waypoint".into())),
        ..MeshOptions::default()
    });
    let scope = Scope {
        gateway: Some(("infra".into(), "waypoint".into())),
        ..Scope::default()
    };
    let service_parents = |snapshot: &Snapshot| {
        entries(
            &desired_status(snapshot, &scope),
            &key(StatusKind::HttpRoute, Some("infra"), "web"),
        )
        .into_iter()
        .filter(|e| e["parentRef"]["kind"] == "Service")
        .count()
    };
    // No use-waypoint label anywhere: svc is not bound to us, so its entry is not ours.
    let text = format!("{MANIFESTS}{service}");
    let unbound = parse_manifests_with(&text, "test.yaml", &cache).expect("parse");
    scoped.config = Arc::new(unbound);
    assert_eq!(service_parents(&scoped), 0);
    let text = format!("{MANIFESTS}{service}{bound_namespace}");
    let bound = parse_manifests_with(&text, "test.yaml", &cache).expect("parse");
    scoped.config = Arc::new(bound);
    assert_eq!(service_parents(&scoped), 1);
}

#[test]
fn tcp_and_tls_routes_get_their_parent_entries_and_l4_listeners_their_supported_kinds() {
    let manifests = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours}
spec: {controllerName: waypoint.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra, generation: 1}
spec:
  gatewayClassName: ours
  listeners:
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: TLSRoute}]}}
  - {name: term, port: 8443, protocol: TLS}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: db, namespace: infra, generation: 4}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: web, namespace: infra, generation: 5}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [a.example.com]
  rules: [{backendRefs: [{name: web, port: 443}]}]
"#;
    let config = parse_manifests(manifests, "test.yaml").expect("the manifests parse");
    let gateways = vec![gateway_status(&config, "edge", &["tcp", "tls", "term"])];
    let parent = |kind: &str, route: &str, section: &str, generation: i64| RouteParentStatus {
        route: ResourceRef::new(kind, "infra", route),
        ..route_parent(route, gateway_parent("edge", Some(section)), generation)
    };
    let snapshot = Snapshot {
        config: Arc::new(config),
        chain: FilterChain::new(Vec::new()),
        reports: Vec::new(),
        route_parents: vec![
            parent("TCPRoute", "db", "tcp", 4),
            parent("TLSRoute", "web", "tls", 5),
        ],
        gateways,
        version: 1,
        applied_at: SystemTime::now(),
    };
    let desired = desired_status(&snapshot, &Scope::default());
    for (kind, name, section, generation) in [
        (StatusKind::TcpRoute, "db", "tcp", 4),
        (StatusKind::TlsRoute, "web", "tls", 5),
    ] {
        let ours = entries(&desired, &key(kind, Some("infra"), name));
        assert_eq!(ours.len(), 1, "{name}");
        assert_eq!(ours[0]["parentRef"]["sectionName"], section);
        assert_eq!(ours[0]["conditions"][0]["observedGeneration"], generation);
    }
    assert_eq!(StatusKind::TcpRoute.resource().plural, "tcproutes");
    assert_eq!(StatusKind::TlsRoute.resource().plural, "tlsroutes");
    let gw = fields(&desired, &key(StatusKind::Gateway, Some("infra"), "edge"));
    let group = "gateway.networking.k8s.io";
    let kinds: Vec<&Value> = gw["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| &l["supportedKinds"])
        .collect();
    assert_eq!(
        kinds,
        [
            &json!([{"group": group, "kind": "TCPRoute"}]),
            &json!([{"group": group, "kind": "TLSRoute"}]),
            &json!([]),
        ]
    );
}
