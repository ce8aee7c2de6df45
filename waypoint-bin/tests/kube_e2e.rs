//! `waypoint run --kube` end to end: the real binary against the in-process API emulator over
//! TLS with a bearer token. Not ready (and no listener) until the API server answers; objects
//! applied are served through the sandwich listener; updates, deletions and a compacted,
//! broken watch converge; and the quickstart fixture gives the same `/config_dump` from files
//! and from the API.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::kube::{admin_up, emulator, eventually, run_kube, run_kube_with, send, served};
use common::{Guard, admin_get, free_port, waypoint};
use serde_json::Value;
use waypoint_kube_emulator::Emulator;

#[tokio::test(flavor = "multi_thread")]
async fn kube_mode_serves_applied_services_and_follows_updates_deletions_and_broken_watches() {
    let dir = tempfile::tempdir().unwrap();
    let echo_port = free_port();
    let _echo = common::echo(echo_port, "echo-kube");
    let emulator = emulator().await;
    emulator
        .apply_yaml(&common::service("echo", "10.96.0.10", echo_port))
        .unwrap();
    // The API server is away at start: the waypoint must wait, not ready, with no listener.
    emulator.set_unavailable(true);
    let kube = run_kube(&emulator, dir.path());
    eventually("admin server up", || {
        (!admin_up(kube.admin)).then(String::new)
    });
    std::thread::sleep(Duration::from_millis(500));
    let ready = admin_get(kube.admin, "/healthz/ready");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(!kube.sock.exists(), "no listener before the first sync");

    emulator.set_unavailable(false);
    eventually("ready after the API server is back", || {
        let ready = admin_get(kube.admin, "/healthz/ready");
        (!ready.starts_with("HTTP/1.1 200")).then_some(ready)
    });
    served(&kube.sock, "10.96.0.10:80", "200 OK");
    let out = String::from_utf8_lossy(&send(&kube.sock, "10.96.0.10:80").stdout).into_owned();
    assert!(out.contains("\"pod\":\"echo-kube\""), "{out}");

    // An update: the Service moves to another VIP.
    emulator
        .apply_yaml(&common::service("echo", "10.96.0.11", echo_port))
        .unwrap();
    served(&kube.sock, "10.96.0.11:80", "200 OK");
    served(&kube.sock, "10.96.0.10:80", "404");

    // A second Service, then a deletion.
    emulator
        .apply_yaml(&common::service("other", "10.96.0.12", echo_port))
        .unwrap();
    served(&kube.sock, "10.96.0.12:80", "200 OK");
    emulator
        .delete("v1", "Service", "default", "other")
        .unwrap();
    served(&kube.sock, "10.96.0.12:80", "404");

    // The connection breaks, the Service is deleted meanwhile and history is compacted: only
    // a re-list can see it, and the waypoint converges.
    let lists_before = service_lists(&emulator);
    emulator.break_watches();
    emulator.delete("v1", "Service", "default", "echo").unwrap();
    emulator.compact();
    served(&kube.sock, "10.96.0.11:80", "404");
    eventually("listed again after the broken watch", || {
        let lists = service_lists(&emulator);
        (lists <= lists_before).then(|| format!("{lists} lists"))
    });
    // And it keeps following changes afterwards.
    emulator
        .apply_yaml(&common::service("echo", "10.96.0.13", echo_port))
        .unwrap();
    served(&kube.sock, "10.96.0.13:80", "200 OK");
    // The config source never writes; the status writer writes only its Lease and status.
    for write in emulator.requests().iter().filter(|r| r.is_write()) {
        assert!(
            write.path.contains("/leases") || write.path.ends_with("/status"),
            "{} {}",
            write.method,
            write.path
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_mode_writes_gateway_status_under_our_controller_name() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator
        .apply_yaml(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: waypoint}\n\
             spec: {controllerName: waypoint.dev/gateway-controller}\n",
        )
        .unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/quickstart/manifests.yaml"
    );
    emulator
        .apply_yaml(&std::fs::read_to_string(fixture).unwrap())
        .unwrap();
    let _kube = run_kube(&emulator, dir.path());
    eventually("the Gateway's status written", || {
        let gateway = emulator.get(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            "default",
            "waypoint",
        );
        let conditions = gateway
            .as_ref()
            .and_then(|g| g["status"]["conditions"].as_array().cloned())
            .unwrap_or_default();
        let accepted = conditions
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True");
        (!accepted).then(|| format!("{gateway:?}"))
    });
    let class = emulator
        .get(
            "gateway.networking.k8s.io/v1",
            "GatewayClass",
            "",
            "waypoint",
        )
        .unwrap();
    assert!(
        class["status"]["conditions"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True")),
        "{class}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn waypoint_namespace_restricts_what_is_read_to_one_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let echo_port = free_port();
    let _echo = common::echo(echo_port, "echo-apps");
    let emulator = emulator().await;
    let in_apps = common::service("mine", "10.96.1.1", echo_port)
        .replace("namespace: default", "namespace: apps");
    emulator.apply_yaml(&in_apps).unwrap();
    emulator
        .apply_yaml(&common::service("theirs", "10.96.1.2", echo_port))
        .unwrap();
    let kube = run_kube_with(&emulator, dir.path(), &[("WAYPOINT_NAMESPACE", "apps")]);
    served(&kube.sock, "10.96.1.1:80", "200 OK");
    served(&kube.sock, "10.96.1.2:80", "404");
    let paths: Vec<String> = emulator.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "/api/v1/namespaces/apps/services"),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "/api/v1/services"), "{paths:?}");
    // Cluster-scoped kinds stay cluster-wide.
    assert!(paths.iter().any(|p| p == "/api/v1/namespaces"), "{paths:?}");
}

fn service_lists(emulator: &Emulator) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/services" && !r.is_watch())
        .count()
}

/// `/config_dump` without what legitimately differs between sources: version, time, source
/// labels, the order of the top-level lists, and `observedGeneration` (the API server sets
/// `metadata.generation`; manifest files have none).
fn normalized_dump(admin: u16) -> Value {
    let text = admin_get(admin, "/config_dump");
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let mut dump: Value = serde_json::from_str(body).unwrap();
    strip_observed_generation(&mut dump);
    let map = dump.as_object_mut().unwrap();
    map.remove("version");
    map.remove("applied_at");
    for (_, list) in map.iter_mut() {
        if let Value::Array(items) = list {
            for item in items.iter_mut() {
                if let Some(item) = item.as_object_mut() {
                    item.remove("source");
                }
            }
            items.sort_by_key(|item| item.to_string());
        }
    }
    dump
}

fn strip_observed_generation(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("observedGeneration");
            map.values_mut().for_each(strip_observed_generation);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_observed_generation),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_from_files_and_from_the_api_gives_the_same_config_dump() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/quickstart/manifests.yaml"
    );
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator
        .apply_yaml(&std::fs::read_to_string(fixture).unwrap())
        .unwrap();
    let kube = run_kube(&emulator, dir.path());
    let file_admin = free_port();
    let _files = Guard(
        waypoint()
            .args(["run", "--config", fixture])
            .args(["--admin-addr", &format!("127.0.0.1:{file_admin}")])
            .arg("--sandwich-listen")
            .arg(format!("unix:{}", dir.path().join("files.sock").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for admin in [kube.admin, file_admin] {
        eventually("ready", || {
            let ready = admin_up(admin).then(|| admin_get(admin, "/healthz/ready"));
            (!ready
                .as_deref()
                .is_some_and(|r| r.starts_with("HTTP/1.1 200")))
            .then(|| format!("{ready:?}"))
        });
    }
    let (from_files, from_api) = (normalized_dump(file_admin), normalized_dump(kube.admin));
    assert!(!from_files["services"].as_array().unwrap().is_empty());
    assert_eq!(from_files, from_api);
}
