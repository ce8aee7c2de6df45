//! The reconcile rules of `plan`, on hand-built cluster states.

use serde_json::{Value, json};

use super::options::{RenderOptions, Resources};
use super::plan::{Deletion, contains, plan};
use crate::status::ControllerName;

const NOW: &str = "2026-12-03T00:00:00Z";

fn options() -> RenderOptions {
    RenderOptions {
        controller: ControllerName::default(),
        image: "img".into(),
        trust_domain: "cluster.local".into(),
        ca_address: "ca:15012".into(),
        cluster_domain: "cluster.local".into(),
        replicas: 1,
        resources: Resources::default(),
    }
}

fn class(controller: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "waypoint", "generation": 1},
        "spec": {"controllerName": controller}})
}

fn gateway(name: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": "apps", "uid": format!("uid-{name}"), "generation": 2},
        "spec": {"gatewayClassName": "waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})
}

fn ready_pod(gateway: &str) -> Value {
    json!({"metadata": {"name": "p", "namespace": "apps",
            "labels": {"gateway.networking.k8s.io/gateway-name": gateway}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

/// Slots in `WATCHED` order: classes, gateways, pods, SAs, Services, Deployments, bindings.
fn slots(
    classes: Vec<Value>,
    gateways: Vec<Value>,
    pods: Vec<Value>,
    provisioned: [Vec<Value>; 4],
) -> Vec<Vec<Value>> {
    let mut all = vec![classes, gateways, pods];
    all.extend(provisioned);
    all
}

/// The state after the plan for `gateway` was applied once.
fn applied(gateway: &Value) -> [Vec<Value>; 4] {
    let first = plan(
        &slots(
            vec![class("waypoint.dev/gateway-controller")],
            vec![gateway.clone()],
            vec![],
            Default::default(),
        ),
        &options(),
        NOW,
    );
    let mut out: [Vec<Value>; 4] = Default::default();
    for (resource, object) in first.apply {
        let slot = [
            "ServiceAccount",
            "Service",
            "Deployment",
            "ClusterRoleBinding",
        ]
        .iter()
        .position(|k| *k == resource.kind)
        .expect("a provisioned kind");
        out[slot].push(object);
    }
    out
}

#[test]
fn a_new_gateway_gets_its_four_objects_and_its_class_is_accepted() {
    let p = plan(
        &slots(
            vec![class("waypoint.dev/gateway-controller")],
            vec![gateway("wp")],
            vec![],
            Default::default(),
        ),
        &options(),
        NOW,
    );
    let kinds: Vec<&str> = p.apply.iter().map(|(r, _)| r.kind).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Service",
            "Deployment",
            "ClusterRoleBinding"
        ]
    );
    assert_eq!(p.status.len(), 1);
    assert_eq!(p.status[0].resource.kind, "GatewayClass");
    assert!(p.delete.is_empty());
}

#[test]
fn gateways_of_other_controllers_classes_are_left_alone() {
    let p = plan(
        &slots(
            vec![class("example.com/other")],
            vec![gateway("wp")],
            vec![],
            Default::default(),
        ),
        &options(),
        NOW,
    );
    assert_eq!(p, Default::default());
}

#[test]
fn applied_objects_with_server_defaults_are_not_applied_again_but_edits_are() {
    let gw = gateway("wp");
    let mut live = applied(&gw);
    // The server fills in what we did not set.
    live[1][0]["spec"]["clusterIP"] = json!("10.96.0.9");
    live[2][0]["spec"]["strategy"] = json!({"type": "RollingUpdate"});
    live[0][0]["metadata"]["resourceVersion"] = json!("12");
    let state = |live: [Vec<Value>; 4]| {
        slots(
            vec![class("waypoint.dev/gateway-controller")],
            vec![gw.clone()],
            vec![],
            live,
        )
    };
    assert!(plan(&state(live.clone()), &options(), NOW).apply.is_empty());
    live[2][0]["spec"]["replicas"] = json!(5);
    let again = plan(&state(live), &options(), NOW);
    assert_eq!(again.apply.len(), 1);
    assert_eq!(again.apply[0].0.kind, "Deployment");
}

#[test]
fn addresses_appear_with_a_ready_pod_hostname_first_and_are_kept_without_one() {
    let gw = gateway("wp");
    let mut live = applied(&gw);
    live[1][0]["spec"]["clusterIPs"] = json!(["10.96.0.9", "fd00::9"]);
    let classes = vec![class("waypoint.dev/gateway-controller")];
    let unready = plan(
        &slots(classes.clone(), vec![gw.clone()], vec![], live.clone()),
        &options(),
        NOW,
    );
    assert!(unready.status.iter().all(|s| s.resource.kind != "Gateway"));
    let ready = plan(
        &slots(
            classes.clone(),
            vec![gw.clone()],
            vec![ready_pod("wp")],
            live.clone(),
        ),
        &options(),
        NOW,
    );
    let write = ready
        .status
        .iter()
        .find(|s| s.resource.kind == "Gateway")
        .expect("addresses");
    let expected = json!([
        {"type": "Hostname", "value": "wp.apps.svc.cluster.local"},
        {"type": "IPAddress", "value": "10.96.0.9"},
        {"type": "IPAddress", "value": "fd00::9"},
    ]);
    assert_eq!(write.fields, json!({"addresses": expected}));
    // Published, and the pod went away: nothing is written (in particular, nothing removed).
    let mut published = gw.clone();
    published["status"] = json!({"addresses": expected});
    let later = plan(
        &slots(classes, vec![published], vec![], live),
        &options(),
        NOW,
    );
    assert!(later.status.iter().all(|s| s.resource.kind != "Gateway"));
}

#[test]
fn a_pod_of_another_namespace_or_gateway_does_not_count_as_ready() {
    let gw = gateway("wp");
    let mut elsewhere = ready_pod("wp");
    elsewhere["metadata"]["namespace"] = json!("other");
    let classes = vec![class("waypoint.dev/gateway-controller")];
    for pod in [elsewhere, ready_pod("another")] {
        let p = plan(
            &slots(classes.clone(), vec![gw.clone()], vec![pod], applied(&gw)),
            &options(),
            NOW,
        );
        assert!(p.status.iter().all(|s| s.resource.kind != "Gateway"));
    }
}

#[test]
fn objects_of_a_removed_gateway_are_deleted_and_foreign_ones_never() {
    let gw = gateway("wp");
    let mut live = applied(&gw);
    let mut foreign = live[1][0].clone();
    foreign["metadata"]["name"] = json!("users-own");
    foreign["metadata"]["labels"] = json!({"app": "x"});
    live[1].push(foreign);
    let mut other_controller = live[3][0].clone();
    other_controller["metadata"]["name"] = json!("waypoint-proxy.apps.theirs");
    other_controller["metadata"]["labels"]["waypoint.dev/controller"] = json!("example.com.other");
    live[3].push(other_controller);
    let p = plan(
        &slots(
            vec![class("waypoint.dev/gateway-controller")],
            vec![],
            vec![],
            live,
        ),
        &options(),
        NOW,
    );
    let deleted: Vec<(&str, &str)> = p
        .delete
        .iter()
        .map(|Deletion { resource, name, .. }| (*resource, name.as_str()))
        .collect();
    assert_eq!(
        deleted,
        [
            ("ClusterRoleBinding", "waypoint-proxy.apps.wp"),
            ("Deployment", "wp"),
            ("Service", "wp"),
            ("ServiceAccount", "wp")
        ]
    );
}

#[test]
fn a_name_taken_by_an_object_we_did_not_create_refuses_the_gateway() {
    let gw = gateway("wp");
    let users_service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "wp", "namespace": "apps"}, "spec": {"ports": [{"port": 80}]}});
    let p = plan(
        &slots(
            vec![class("waypoint.dev/gateway-controller")],
            vec![gw],
            vec![],
            [vec![], vec![users_service], vec![], vec![]],
        ),
        &options(),
        NOW,
    );
    assert!(p.apply.is_empty() && p.delete.is_empty());
    let write = p
        .status
        .iter()
        .find(|s| s.resource.kind == "Gateway")
        .expect("refusal");
    let accepted = &write.fields["conditions"][0];
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["observedGeneration"], 2);
    assert!(
        accepted["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Service apps/wp exists")
    );
}

#[test]
fn containment_ignores_added_fields_but_not_changed_values_or_list_lengths() {
    let want = json!({"a": {"b": 1, "empty": {}}, "list": [{"x": 1}]});
    assert!(contains(
        &json!({"a": {"b": 1, "extra": 2}, "list": [{"x": 1, "y": 2}]}),
        &want
    ));
    assert!(!contains(
        &json!({"a": {"b": 2}, "list": [{"x": 1}]}),
        &want
    ));
    assert!(!contains(
        &json!({"a": {"b": 1}, "list": [{"x": 1}, {"x": 2}]}),
        &want
    ));
    assert!(!contains(&json!({"a": {"b": 1}}), &want));
}
