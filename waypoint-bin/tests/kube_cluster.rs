//! A waypoint in an (emulated) ambient cluster: `waypoint run --kube --gateway` serves exactly
//! what is bound to its Gateway — a labelled Service by VIP, a labelled Pod by IP, and nothing
//! else — writes route status for the Service parents it serves under its controllerName, and
//! of two replicas only the Lease holder writes; the other takes over when the holder leaves.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::kube::{Kube, emulator, eventually, run_kube_args, served};
use common::run::Echo;
use serde_json::Value;
use waypoint_kube_emulator::Emulator;

const POD_IP: &str = "127.0.0.2";
const OURS: &str = "waypoint.dev/gateway-controller";
const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

/// Our class and Gateway `default/wp` (for all traffic, native HBONE); Services `echo`
/// (bound) and `other` (not), the bound Pod `echo-pod-1` at [`POD_IP`], and a route on each
/// Service.
fn cluster(echo: &Echo) -> String {
    let bound = common::service("echo", "10.96.0.10", echo.port).replace(
        "metadata: {name: echo, namespace: default}",
        "metadata: {name: echo, namespace: default, labels: {istio.io/use-waypoint: wp}}",
    );
    let unbound = common::service("other", "10.96.0.11", echo.port);
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: waypoint}}
spec: {{controllerName: {OURS}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: wp, namespace: default, labels: {{istio.io/waypoint-for: all}}}}
spec:
  gatewayClassName: waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
{bound}---
{unbound}---
apiVersion: v1
kind: Pod
metadata: {{name: echo-pod-1, namespace: default, labels: {{istio.io/use-waypoint: wp}}}}
spec: {{serviceAccountName: echo}}
status: {{podIP: {POD_IP}, podIPs: [{{ip: {POD_IP}}}]}}
---
{}---
{}"#,
        service_route("to-echo", "echo"),
        service_route("to-other", "other"),
    )
}

fn service_route(name: &str, service: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {service}, port: 80}}]
  rules: [{{backendRefs: [{{name: {service}, port: 80}}]}}]
"#
    )
}

/// The `status.parents` entries of route `name` written under `controller`.
fn entries(emulator: &Emulator, route: &str, controller: &str) -> Vec<Value> {
    let route = emulator.get(GATEWAY_API, "HTTPRoute", "default", route);
    route
        .map(|r| {
            r["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["controllerName"] == controller)
        .collect()
}

fn accepted(entry: &Value) -> bool {
    entry["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True")
    })
}

fn lease_holder(emulator: &Emulator, name: &str) -> Option<String> {
    let lease = emulator.get("coordination.k8s.io/v1", "Lease", "default", name)?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

fn replica(emulator: &Emulator, dir: &std::path::Path, pod: &str, controller: &str) -> Kube {
    run_kube_args(
        emulator,
        dir,
        &["--gateway", "default/wp", "--controller-name", controller],
        &[("POD_NAME", pod), ("WAYPOINT_STATUS_LEASE", "wp-status")],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_waypoint_serves_what_is_bound_to_its_gateway_and_reports_it() {
    let (echo, pod) = (Echo::start(), Echo::start_on(POD_IP));
    let emulator = emulator().await;
    emulator.apply_yaml(&cluster(&echo)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kube = replica(&emulator, dir.path(), "replica-a", OURS);

    served(&kube.sock, "10.96.0.10:80", "200 OK");
    // `other` names no waypoint: refused, never forwarded.
    served(&kube.sock, "10.96.0.11:80", "404");
    // The bound Pod by its IP and port: straight to it.
    served(&kube.sock, &format!("{POD_IP}:{}", pod.port), "200 OK");

    eventually("the bound Service's route reported under our name", || {
        let ours = entries(&emulator, "to-echo", OURS);
        (!(ours.len() == 1 && accepted(&ours[0]))).then(|| format!("{ours:?}"))
    });
    assert_eq!(entries(&emulator, "to-other", OURS), Vec::<Value>::new());
    assert_eq!(
        lease_holder(&emulator, "wp-status").as_deref(),
        Some("replica-a")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_replica_writes_nothing_until_the_lease_holder_leaves() {
    let echo = Echo::start();
    let emulator = emulator().await;
    emulator.apply_yaml(&cluster(&echo)).unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = replica(&emulator, dir_a.path(), "replica-a", OURS);
    eventually("the first replica holds the Lease and wrote", || {
        let holder = lease_holder(&emulator, "wp-status");
        let written = !entries(&emulator, "to-echo", OURS).is_empty();
        (!(holder.as_deref() == Some("replica-a") && written)).then(|| format!("{holder:?}"))
    });
    // The second replica writes under a name of its own, so anything it wrote would show.
    let theirs = "example.com/second-replica";
    let second = replica(&emulator, dir_b.path(), "replica-b", theirs);
    served(&second.sock, "10.96.0.10:80", "200 OK");
    // A change both replicas see: the holder reports it, the other stays silent.
    emulator
        .apply_yaml(&service_route("to-echo-2", "echo"))
        .unwrap();
    eventually("the holder reports the new route", || {
        entries(&emulator, "to-echo-2", OURS)
            .is_empty()
            .then(String::new)
    });
    std::thread::sleep(Duration::from_secs(2));
    for route in ["to-echo", "to-echo-2"] {
        assert_eq!(entries(&emulator, route, theirs), Vec::<Value>::new());
    }

    // The holder stops (SIGTERM: it releases the Lease); the second takes over and writes.
    let pid = first.guard.0.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    first.guard.0.wait().unwrap();
    eventually("the second replica takes the Lease and writes", || {
        let holder = lease_holder(&emulator, "wp-status");
        let written = !entries(&emulator, "to-echo", theirs).is_empty();
        (!(holder.as_deref() == Some("replica-b") && written)).then(|| format!("{holder:?}"))
    });
}
