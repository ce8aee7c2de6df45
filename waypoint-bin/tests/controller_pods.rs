//! The pods `waypoint controller` renders must start: the arguments and environment of the
//! golden Deployments (`kube/tests/golden/`, pinned to what the controller applies) are run as
//! the real binary against the API emulator, and, in native mode, an in-process istiod CA. Only
//! what a test process cannot have is changed: listen addresses move to free loopback ports,
//! downward-API values get the pod's would-be values, the CA address and the token and root
//! files point at the fake CA.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::ca::CaFixture;
use common::kube::emulator;
use common::run::admin_get_when_up;
use common::{Guard, free_port, waypoint};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../kube/tests/golden/{name}"))
}

/// The one Deployment of a golden rendering.
fn rendered_deployment(case: &str) -> Value {
    common::deploy::documents(&golden(&format!("{case}.yaml")))
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap()
}

/// The container's arguments, with every `0.0.0.0:<port>` moved to a free loopback port; and
/// the admin port among them.
fn args_on_free_ports(container: &Value) -> (Vec<String>, u16) {
    let mut admin = None;
    let mut previous = String::new();
    let args = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let arg = a.as_str().unwrap().to_owned();
            let moved = if arg.starts_with("0.0.0.0:") {
                let port = free_port();
                if previous == "--admin-addr" {
                    admin = Some(port);
                }
                format!("127.0.0.1:{port}")
            } else {
                arg
            };
            previous = moved.clone();
            moved
        })
        .collect();
    (args, admin.expect("the rendered pod sets --admin-addr"))
}

/// The container's environment: literal values as rendered, downward-API ones as the kubelet
/// would fill them for this pod.
fn environment(deployment: &Value) -> Vec<(String, String)> {
    let pod = &deployment["spec"]["template"]["spec"];
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                None => e["value"].as_str().unwrap().to_owned(),
                Some("metadata.name") => "waypoint-0".to_owned(),
                Some("metadata.namespace") => namespace.to_owned(),
                Some("spec.serviceAccountName") => {
                    pod["serviceAccountName"].as_str().unwrap().to_owned()
                }
                Some("status.podIP") => "127.0.0.1".to_owned(),
                Some(other) => panic!("no value for the downward API field {other}"),
            };
            (name, value)
        })
        .collect()
}

/// Starts the rendered pod's command with `extra` arguments and environment overrides, and
/// waits until its readiness probe passes.
async fn start_rendered(
    case: &str,
    dir: &Path,
    extra: &[String],
    overrides: &[(&str, String)],
) -> Guard {
    let emulator = emulator().await;
    emulator
        .apply_yaml(&std::fs::read_to_string(golden(&format!("{case}.input.yaml"))).unwrap())
        .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig).unwrap();
    let deployment = rendered_deployment(case);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let (args, admin) = args_on_free_ports(container);
    let mut command = waypoint();
    command
        .args(&args)
        .args(extra)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in environment(&deployment) {
        command.env(name, value);
    }
    for (name, value) in overrides {
        command.env(name, value);
    }
    let guard = Guard(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer =
            tokio::task::spawn_blocking(move || admin_get_when_up(admin, "/healthz/ready"))
                .await
                .unwrap();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rendered {case} pod never became ready: {args:?}\n{answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    guard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_native_pod_gets_its_certificate_from_istiod_and_becomes_ready() {
    let ca = CaFixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        "--ca-token-path".to_owned(),
        ca.token_path.display().to_string(),
        "--ca-root-path".to_owned(),
        ca.root_path.display().to_string(),
    ];
    let _pod = start_rendered(
        "native",
        dir.path(),
        &extra,
        &[("CA_ADDRESS", ca.fake.addr().to_string())],
    )
    .await;
    let requests = ca.fake.requests();
    assert_eq!(
        requests[0].csr_identity.as_deref(),
        Some("spiffe://cluster.local/ns/apps/sa/waypoint"),
        "the pod asks for its ServiceAccount's identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_sandwich_pod_becomes_ready_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let _pod = start_rendered("sandwich", dir.path(), &[], &[]).await;
}
