//! `waypoint controller` end to end: the real binary against the in-process API emulator (TLS,
//! a bearer token). A Gateway gets its objects with owner references; `status.addresses`
//! appears once a pod is Ready and stays when it is not; objects deleted or edited by hand are
//! re-applied, also after the API server was away; deleting the Gateway removes everything
//! (and every request made is in the controller's RBAC); a malformed binding is refused with
//! its reason; the waypoint's status writer and the controller share the Gateway's status.
//! Replicas, pruning and flags: `controller_lease.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::admin_get;
use common::controller::*;
use common::kube::{emulator, eventually};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_is_provisioned_published_when_ready_repaired_and_removed_with_its_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator.apply_yaml(CLASS).unwrap();
    emulator.apply_yaml(&native_gateway("waypoint")).unwrap();
    let controller_a = controller(
        &emulator,
        dir.path(),
        &[
            "--trust-domain",
            "corp.example",
            "--ca-address",
            "ca.example:15012",
            "--cluster-domain",
            "k8s.example",
            "--lease-name",
            "ctl-lease",
            "--lease-namespace",
            "ops",
            "--default-replicas",
            "2",
            "--default-cpu-request",
            "250m",
            "--default-memory-request",
            "64Mi",
            "--default-cpu-limit",
            "2",
            "--default-memory-limit",
            "none",
        ],
        "ctl-a",
    );
    assert!(admin_get(controller_a.admin, "/healthz/live").starts_with("HTTP/1.1 200"));
    let gateway = emulator.get(GW_API, "Gateway", "apps", "waypoint").unwrap();
    let uid = gateway["metadata"]["uid"].clone();
    for kind in ["ServiceAccount", "Service"] {
        let object = wait_for(&emulator, "v1", kind, "waypoint");
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["uid"], uid,
            "{kind}"
        );
        assert_eq!(object["metadata"]["ownerReferences"][0]["controller"], true);
    }
    let deployment = wait_for(&emulator, "apps/v1", "Deployment", "waypoint");
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["uid"], uid);
    // Every flag shows in what is applied.
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "example.com/waypoint:test");
    assert_eq!(
        container["resources"],
        json!({"limits": {"cpu": "2"}, "requests": {"cpu": "250m", "memory": "64Mi"}})
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for pair in [
        ["--trust-domain", "corp.example"],
        ["--cluster-domain", "k8s.example"],
        ["--gateway", "apps/waypoint"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "CA_ADDRESS", "value": "ca.example:15012"}))
    );
    // Applied after the Deployment, in the same pass.
    wait_for_binding(&emulator, "waypoint-proxy.apps.waypoint");
    let lease = emulator
        .get("coordination.k8s.io/v1", "Lease", "ops", "ctl-lease")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "ctl-a");
    eventually("GatewayClass accepted", || {
        let class = emulator
            .get(GW_API, "GatewayClass", "", "waypoint")
            .unwrap();
        (condition(&class, "Accepted").map(|c| &c["status"]) != Some(&json!("True")))
            .then(|| class.to_string())
    });

    // The waypoint writes its conditions; no pod is ready yet: no addresses.
    emulator
        .patch_status(GW_API, "Gateway", "apps", "waypoint", &json!({"conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed", "message": "by the waypoint", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let gateway = emulator.get(GW_API, "Gateway", "apps", "waypoint").unwrap();
    assert!(gateway["status"].get("addresses").is_none(), "{gateway}");

    set_ready(&emulator, "waypoint-1", "waypoint", true);
    let service = emulator.get("v1", "Service", "apps", "waypoint").unwrap();
    let ip = service["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let expected = json!([
        {"type": "Hostname", "value": "waypoint.apps.svc.k8s.example"},
        {"type": "IPAddress", "value": ip},
    ]);
    eventually("addresses published", || {
        let gateway = emulator.get(GW_API, "Gateway", "apps", "waypoint").unwrap();
        (gateway["status"]["addresses"] != expected).then(|| gateway.to_string())
    });
    let gateway = emulator.get(GW_API, "Gateway", "apps", "waypoint").unwrap();
    assert_eq!(
        condition(&gateway, "Programmed").unwrap()["message"],
        "by the waypoint",
        "the waypoint's conditions are kept"
    );

    // Unready: the addresses stay.
    set_ready(&emulator, "waypoint-1", "waypoint", false);
    std::thread::sleep(Duration::from_secs(1));
    let gateway = emulator.get(GW_API, "Gateway", "apps", "waypoint").unwrap();
    assert_eq!(gateway["status"]["addresses"], expected);

    // Deleted and edited by hand: put back.
    emulator
        .delete("apps/v1", "Deployment", "apps", "waypoint")
        .unwrap();
    wait_for(&emulator, "apps/v1", "Deployment", "waypoint");
    let mut edited = emulator.get("v1", "Service", "apps", "waypoint").unwrap();
    edited["metadata"]["labels"]["istio.io/use-waypoint"] = json!("waypoint");
    emulator.apply(edited).unwrap();
    eventually("label restored", || {
        let service = emulator.get("v1", "Service", "apps", "waypoint").unwrap();
        (service["metadata"]["labels"]["istio.io/use-waypoint"] != "none")
            .then(|| service.to_string())
    });

    // The API server goes away and comes back (history compacted): still repairing.
    emulator.set_unavailable(true);
    std::thread::sleep(Duration::from_millis(500));
    emulator.set_unavailable(false);
    emulator.compact();
    emulator
        .delete("v1", "ServiceAccount", "apps", "waypoint")
        .unwrap();
    wait_for(&emulator, "v1", "ServiceAccount", "waypoint");

    // The Gateway goes: its objects go (owner references), and so does its binding.
    emulator
        .delete(GW_API, "Gateway", "apps", "waypoint")
        .unwrap();
    for (api, kind) in [
        ("v1", "ServiceAccount"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
    ] {
        wait_gone(&emulator, api, kind, "waypoint");
    }
    eventually("ClusterRoleBinding deleted", || {
        emulator
            .get(
                RBAC,
                "ClusterRoleBinding",
                "",
                "waypoint-proxy.apps.waypoint",
            )
            .map(|o| o.to_string())
    });
    every_request_is_in_the_controllers_permissions(&emulator);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_binding_is_refused_with_its_reason_and_nothing_is_provisioned() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator.apply_yaml(CLASS).unwrap();
    emulator
        .apply_yaml(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: broken
  namespace: apps
  annotations: {ambient.istio.io/waypoint-inbound-binding: PROXY/abc}
spec:
  gatewayClassName: waypoint
  listeners: [{name: proxy, port: 15088, protocol: istio.io/PROXY}]
"#,
        )
        .unwrap();
    emulator.apply_yaml(&native_gateway("fine")).unwrap();
    let _controller = controller(&emulator, dir.path(), &[], "ctl-a");
    // The valid Gateway next to it is provisioned: the pass did run.
    wait_for(&emulator, "apps/v1", "Deployment", "fine");
    eventually("refusal reported", || {
        let gateway = emulator.get(GW_API, "Gateway", "apps", "broken").unwrap();
        let accepted = condition(&gateway, "Accepted");
        let refused = accepted.is_some_and(|c| {
            c["status"] == "False"
                && c["reason"] == "Invalid"
                && c["message"]
                    .as_str()
                    .unwrap()
                    .contains("ambient.istio.io/waypoint-inbound-binding")
                && c["message"].as_str().unwrap().contains("PROXY/abc")
        });
        let programmed = condition(&gateway, "Programmed").is_some_and(|c| c["status"] == "False");
        (!(refused && programmed)).then(|| gateway.to_string())
    });
    for (api, kind) in [
        ("v1", "ServiceAccount"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
    ] {
        assert!(get(&emulator, api, kind, "broken").is_none(), "{kind}");
    }
    assert!(
        emulator
            .get(RBAC, "ClusterRoleBinding", "", "waypoint-proxy.apps.broken")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_waypoint_and_the_controller_share_the_gateway_status_without_undoing_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator.apply_yaml(CLASS).unwrap();
    emulator.apply_yaml(&native_gateway("waypoint")).unwrap();
    let _controller = controller(&emulator, dir.path(), &[], "ctl-a");
    wait_for(&emulator, "apps/v1", "Deployment", "waypoint");
    // The data plane of this Gateway, as the Deployment runs it (status writer included).
    let _waypoint = common::kube::run_kube_args(
        &emulator,
        dir.path(),
        &["--gateway", "apps/waypoint"],
        &[("POD_NAME", "waypoint-1"), ("POD_NAMESPACE", "apps")],
    );
    set_ready(&emulator, "waypoint-1", "waypoint", true);
    eventually(
        "addresses and the waypoint's listener status, together",
        || {
            let gateway = emulator.get(GW_API, "Gateway", "apps", "waypoint").unwrap();
            let status = &gateway["status"];
            let both = status["addresses"].as_array().is_some_and(|a| a.len() == 2)
                && status["listeners"]
                    .as_array()
                    .is_some_and(|l| !l.is_empty())
                && condition(&gateway, "Accepted").is_some();
            (!both).then(|| gateway.to_string())
        },
    );
    // Settled: neither rewrites the other's fields, so nobody writes the status again.
    std::thread::sleep(Duration::from_secs(1));
    emulator.clear_requests();
    std::thread::sleep(Duration::from_secs(3));
    let status_writes: Vec<String> = emulator
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/gateways/waypoint/status"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(status_writes.is_empty(), "{status_writes:?}");
    let gateway = emulator.get(GW_API, "Gateway", "apps", "waypoint").unwrap();
    assert_eq!(gateway["status"]["addresses"][0]["type"], "Hostname");
}
