//! `waypoint controller` replicas and flags: two replicas write one at a time and the second
//! takes over when the first stops; leftover ClusterRoleBindings are pruned, another
//! controller's kept; bad flags are refused naming the flag.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::controller::*;
use common::kube::{emulator, eventually};
use common::waypoint;
use serde_json::json;
use waypoint_kube_emulator::Emulator;

fn applies_of(emulator: &Emulator, path_end: &str) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(path_end))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_write_one_at_a_time_and_the_second_takes_over_when_the_first_stops() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator.apply_yaml(CLASS).unwrap();
    emulator.apply_yaml(&native_gateway("waypoint")).unwrap();
    let a = controller(&emulator, dir_a.path(), &[], "ctl-a");
    wait_for(&emulator, "apps/v1", "Deployment", "waypoint");
    let b = controller(&emulator, dir_b.path(), &[], "ctl-b");
    std::thread::sleep(Duration::from_secs(1));

    // Both see the deletion; only the holder re-applies.
    emulator.clear_requests();
    emulator
        .delete("apps/v1", "Deployment", "apps", "waypoint")
        .unwrap();
    wait_for(&emulator, "apps/v1", "Deployment", "waypoint");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        applies_of(&emulator, "/deployments/waypoint"),
        1,
        "one writer"
    );
    let lease = emulator
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "waypoint-system",
            "waypoint-controller",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "ctl-a");

    // The holder stops (and releases the Lease): the other takes over and repairs.
    let status = Command::new("kill")
        .args(["-TERM", &a.pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("ctl-b holds the Lease", || {
        let lease = emulator
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                "waypoint-system",
                "waypoint-controller",
            )
            .unwrap();
        (lease["spec"]["holderIdentity"] != "ctl-b").then(|| lease.to_string())
    });
    emulator
        .delete("v1", "Service", "apps", "waypoint")
        .unwrap();
    wait_for(&emulator, "v1", "Service", "waypoint");
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn leftover_bindings_are_pruned_at_startup_and_another_controllers_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    let binding = |name: &str, controller: &str| {
        json!({
            "apiVersion": RBAC, "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {
                "app.kubernetes.io/managed-by": "waypoint-controller",
                "waypoint.dev/controller": controller,
            }},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "waypoint-proxy"},
            "subjects": [],
        })
    };
    emulator
        .apply(binding(
            "waypoint-proxy.apps.gone",
            "waypoint.dev.gateway-controller",
        ))
        .unwrap();
    emulator
        .apply(binding("waypoint-proxy.apps.theirs", "example.com.other"))
        .unwrap();
    let _controller = controller(&emulator, dir.path(), &[], "ctl-a");
    eventually("orphan pruned", || {
        emulator
            .get(RBAC, "ClusterRoleBinding", "", "waypoint-proxy.apps.gone")
            .map(|o| o.to_string())
    });
    assert!(
        emulator
            .get(RBAC, "ClusterRoleBinding", "", "waypoint-proxy.apps.theirs")
            .is_some()
    );
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    for (flag, value, says) in [
        ("--default-cpu-request", "12MB", "not a Kubernetes quantity"),
        (
            "--controller-name",
            "istio.io/gateway-controller",
            "istiod provisions and owns",
        ),
        ("--lease-name", "Not_A_Name", "not a Lease name"),
        ("--admin-addr", "nowhere", "not an address"),
    ] {
        let out = waypoint()
            .args(["controller", "--image", "x", flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains(says),
            "{flag}: {stderr}"
        );
    }
    let out = waypoint().arg("controller").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--image"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_name_decides_which_classes_gateways_are_provisioned() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator.apply_yaml(CLASS).unwrap();
    emulator
        .apply_yaml(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: mine}
spec: {controllerName: example.com/mine}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: picked, namespace: apps}
spec:
  gatewayClassName: mine
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#,
        )
        .unwrap();
    emulator
        .apply_yaml(&native_gateway("default-class"))
        .unwrap();
    let _controller = controller(
        &emulator,
        dir.path(),
        &["--controller-name", "example.com/mine"],
        "ctl-a",
    );
    let deployment = wait_for(&emulator, "apps/v1", "Deployment", "picked");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--controller-name", "example.com/mine"]),
        "{args:?}"
    );
    let binding = wait_for_binding(&emulator, "waypoint-proxy.apps.picked");
    assert_eq!(
        binding["metadata"]["labels"]["waypoint.dev/controller"],
        "example.com.mine"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(get(&emulator, "apps/v1", "Deployment", "default-class").is_none());
    let class = emulator
        .get(GW_API, "GatewayClass", "", "waypoint")
        .unwrap();
    assert!(
        class["status"].get("conditions").is_none(),
        "not our class: {class}"
    );
}

#[test]
fn the_installed_controllers_arguments_are_flags_waypoint_controller_accepts() {
    use clap::Parser;
    let installs = [
        ("deploy/", common::deploy::plain_manifests()),
        ("helm default", common::deploy::helm_rendering("default")),
        ("helm custom", common::deploy::helm_rendering("custom")),
        ("helm no-class", common::deploy::helm_rendering("no-class")),
    ];
    for (source, objects) in installs {
        let controllers: Vec<&serde_json::Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .filter(|o| o["spec"]["template"]["spec"]["containers"][0]["args"][0] == "controller")
            .collect();
        assert_eq!(controllers.len(), 1, "{source}");
        let args = controllers[0]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned());
        let parsed = waypoint_bin::cli::Cli::try_parse_from(
            std::iter::once("waypoint".to_owned()).chain(args),
        );
        assert!(
            parsed.is_ok(),
            "{source}: {}",
            parsed.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}
