//! `waypoint controller` against the API emulator, from synchronous tests: start it, wait for
//! objects, play the kubelet (pod readiness), and read its requests as RBAC names them.
#![allow(clippy::unwrap_used, dead_code)]

use std::process::Stdio;

use serde_json::{Value, json};
use waypoint_kube_emulator::Emulator;

use super::kube::eventually;
use super::{Guard, admin_get, free_port, waypoint};

pub(crate) const GW_API: &str = "gateway.networking.k8s.io/v1";
pub(crate) const RBAC: &str = "rbac.authorization.k8s.io/v1";

pub(crate) const CLASS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: waypoint}
spec: {controllerName: waypoint.dev/gateway-controller}
"#;

pub(crate) fn native_gateway(name: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: apps}}
spec:
  gatewayClassName: waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
"#
    )
}

pub(crate) struct Running {
    pub(crate) _guard: Guard,
    pub(crate) admin: u16,
    pub(crate) pid: u32,
}

/// `waypoint controller` against `emulator` with `args` (an image is always given).
pub(crate) fn controller(
    emulator: &Emulator,
    dir: &std::path::Path,
    args: &[&str],
    pod: &str,
) -> Running {
    let kubeconfig = dir.join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig).unwrap();
    let admin = free_port();
    let child = waypoint()
        .arg("controller")
        .args(["--image", "example.com/waypoint:test"])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", "waypoint-system")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let running = Running {
        _guard: Guard(child),
        admin,
        pid,
    };
    eventually("controller ready", || {
        let up = std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok();
        let ready = up && admin_get(admin, "/healthz/ready").starts_with("HTTP/1.1 200");
        (!ready).then(String::new)
    });
    running
}

pub(crate) fn get(emulator: &Emulator, api_version: &str, kind: &str, name: &str) -> Option<Value> {
    emulator.get(api_version, kind, "apps", name)
}

pub(crate) fn wait_for(emulator: &Emulator, api_version: &str, kind: &str, name: &str) -> Value {
    let mut found = None;
    eventually(&format!("{kind} {name} exists"), || {
        found = get(emulator, api_version, kind, name);
        found.is_none().then(String::new)
    });
    found.unwrap()
}

/// Waits for the ClusterRoleBinding `name`.
pub(crate) fn wait_for_binding(emulator: &Emulator, name: &str) -> Value {
    let mut found = None;
    eventually(&format!("ClusterRoleBinding {name} exists"), || {
        found = emulator.get(RBAC, "ClusterRoleBinding", "", name);
        found.is_none().then(String::new)
    });
    found.unwrap()
}

pub(crate) fn wait_gone(emulator: &Emulator, api_version: &str, kind: &str, name: &str) {
    eventually(&format!("{kind} {name} deleted"), || {
        get(emulator, api_version, kind, name).map(|o| o.to_string())
    });
}

pub(crate) fn set_ready(emulator: &Emulator, pod: &str, gateway: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    emulator
        .apply(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "apps",
                "labels": {"gateway.networking.k8s.io/gateway-name": gateway}},
            "spec": {"serviceAccountName": gateway},
            "status": {"podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": status}]},
        }))
        .unwrap();
}

pub(crate) fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Each request the controller made, as RBAC names it, is granted by `CONTROLLER_PERMISSIONS`
/// (an apply needs `create` as well as `patch`: it creates missing objects).
pub(crate) fn every_request_is_in_the_controllers_permissions(emulator: &Emulator) {
    let requests = emulator.requests();
    assert!(
        requests.iter().any(|r| r.method == "PATCH"),
        "the scenario applied objects"
    );
    for request in requests {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _, rest @ ..] => ("", rest),
            ["apis", group, _, rest @ ..] => (*group, rest),
            _ => panic!("not an API path: {}", request.path),
        };
        let rest = match rest {
            ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
            _ => rest,
        };
        let (resource, named) = match rest {
            [plural] => (plural.to_string(), false),
            [plural, _] => (plural.to_string(), true),
            [plural, _, sub] => (format!("{plural}/{sub}"), true),
            _ => panic!("unexpected path {}", request.path),
        };
        let verbs: &[&str] = match (request.method.as_str(), named) {
            ("GET", false) if request.is_watch() => &["watch"],
            ("GET", false) => &["list"],
            ("GET", true) => &["get"],
            ("POST", _) => &["create"],
            ("PUT", _) => &["update"],
            ("PATCH", _) => &["patch", "create"],
            ("DELETE", _) => &["delete"],
            (method, _) => panic!("unexpected {method} {}", request.path),
        };
        for verb in verbs {
            assert!(
                waypoint_kube::controller::rbac::allows(group, &resource, verb),
                "{verb} {group}/{resource} ({} {}) is not in CONTROLLER_PERMISSIONS",
                request.method,
                request.path
            );
        }
    }
}
