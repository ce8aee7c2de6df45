//! The RBAC in `deploy/` against what the code does: `waypoint run --kube` runs against the API
//! emulator through a Gateway's life (lists and watches, status of its class, Gateway and
//! routes, its Lease taken and released), every request it made becomes a permission, and
//! the `waypoint-proxy` ClusterRole must allow each one and grant nothing the run did not use.
//! The same check runs on the Helm chart's rendering.
//!
//! `waypoint controller` is checked both ways: against the permissions its interface promises,
//! and by running it through a Gateway's life against the emulator, every request it made
//! becoming a permission its ServiceAccount must hold.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::deploy::{helm_rendering, plain_manifests};
use common::kube::{emulator, eventually, run_kube_args};
use common::rbac::{Grant, Permission, allows, granted, granted_to, required_permissions};
use serde_json::Value;
use waypoint_kube_emulator::{Emulator, RecordedRequest};

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
const NAMESPACE: &str = "apps";

/// The cluster the data plane runs in: the class and native Gateway of deploy/, the bound
/// namespace, a Service with an HTTPRoute and a GRPCRoute on it.
fn cluster() -> String {
    let examples = common::deploy::deploy_dir().join("examples");
    let read = |name: &str| std::fs::read_to_string(examples.join(name)).unwrap();
    let class =
        std::fs::read_to_string(common::deploy::deploy_dir().join("40-gatewayclass.yaml")).unwrap();
    let service = common::service("echo", "10.96.0.10", 8080)
        .replace("namespace: default", "namespace: apps");
    format!(
        "{class}---\n{}---\n{}---\n{service}---\n{}",
        read("namespace-binding.yaml"),
        read("gateway-native.yaml"),
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-http, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-grpc, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: echo-tcp, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: echo-tls, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  hostnames: [echo.apps.example]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
"#
    )
}

fn has_status(emulator: &Emulator, kind: &str, namespace: &str, name: &str) -> bool {
    emulator
        .get(GATEWAY_API, kind, namespace, name)
        .is_some_and(|o| o["status"]["conditions"].is_array() || o["status"]["parents"].is_array())
}

/// Everything `waypoint run --kube --gateway apps/waypoint` asks of the API server, from start
/// to a graceful stop, after it has written every status it owns.
async fn waypoint_run_kube_requests() -> Vec<RecordedRequest> {
    let emulator = emulator().await;
    emulator.apply_yaml(&cluster()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut kube = run_kube_args(
        &emulator,
        dir.path(),
        &["--gateway", "apps/waypoint"],
        &[("POD_NAME", "waypoint-0"), ("POD_NAMESPACE", NAMESPACE)],
    );
    let owned = [
        ("GatewayClass", "default", "waypoint"),
        ("Gateway", NAMESPACE, "waypoint"),
        ("HTTPRoute", NAMESPACE, "echo-http"),
        ("GRPCRoute", NAMESPACE, "echo-grpc"),
        ("TCPRoute", NAMESPACE, "echo-tcp"),
        ("TLSRoute", NAMESPACE, "echo-tls"),
    ];
    eventually("every status written", || {
        let missing: Vec<_> = owned
            .iter()
            .filter(|(kind, ns, name)| !has_status(&emulator, kind, ns, name))
            .collect();
        (!missing.is_empty()).then(|| format!("no status yet on {missing:?}"))
    });
    // SIGTERM: the waypoint releases its Lease on the way out.
    let pid = kube.guard.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    kube.guard.0.wait().unwrap();
    let lease = emulator
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            NAMESPACE,
            "waypoint-status-waypoint",
        )
        .unwrap();
    assert_eq!(
        lease["spec"]["holderIdentity"],
        Value::Null,
        "released: {lease}"
    );
    emulator.requests()
}

/// The proxy's rules as the controller binds them: cluster-wide.
fn proxy_grants(manifests: &[Value]) -> Vec<Grant> {
    granted(manifests, "ClusterRole", "waypoint-proxy", None)
}

/// The permissions of `required` that `grants` do not allow.
fn missing(grants: &[Grant], required: &BTreeSet<Permission>) -> Vec<Permission> {
    required
        .iter()
        .filter(|p| !allows(grants, p))
        .cloned()
        .collect()
}

/// The (verb, group, resource) triples `grants` give that no permission of `required` used.
/// `get` next to `list` on the same resource counts as used: it reveals nothing the list
/// does not, and clients expect it.
fn unused(grants: &[Grant], required: &BTreeSet<Permission>) -> Vec<String> {
    let used: BTreeSet<(String, String, String)> = required
        .iter()
        .map(|p| (p.verb.clone(), p.group.clone(), p.resource.clone()))
        .collect();
    let mut unused = Vec::new();
    for grant in grants {
        for (verb, group, resource) in grant
            .verbs
            .iter()
            .flat_map(|v| grant.groups.iter().map(move |g| (v, g)))
            .flat_map(|(v, g)| grant.resources.iter().map(move |r| (v, g, r)))
        {
            let key = |verb: &str| (verb.to_owned(), group.clone(), resource.clone());
            let get_beside_list = verb == "get" && used.contains(&key("list"));
            if !(used.contains(&key(verb)) || get_beside_list) {
                unused.push(format!("{verb} {group}/{resource}"));
            }
        }
    }
    unused
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_role_allows_every_request_of_waypoint_run_kube_and_nothing_more() {
    let log = waypoint_run_kube_requests().await;
    let required = required_permissions(&log);
    // The run did what a waypoint does: watched, wrote status and took its Lease.
    for expected in [
        Permission::new("watch", "", "secrets", None),
        Permission::new(
            "update",
            "gateway.networking.k8s.io",
            "gateways/status",
            Some(NAMESPACE),
        )
        .named("waypoint"),
        Permission::new(
            "update",
            "gateway.networking.k8s.io",
            "grpcroutes/status",
            Some(NAMESPACE),
        )
        .named("echo-grpc"),
        Permission::new("create", "coordination.k8s.io", "leases", Some(NAMESPACE)),
    ] {
        assert!(
            required.contains(&expected),
            "{expected:?} not in {required:#?}"
        );
    }
    for (source, manifests) in [
        ("deploy/", plain_manifests()),
        ("helm default", helm_rendering("default")),
        ("helm custom", helm_rendering("custom")),
    ] {
        let grants = proxy_grants(&manifests);
        assert_eq!(
            missing(&grants, &required),
            vec![],
            "{source}: waypoint-proxy lacks these"
        );
        assert_eq!(
            unused(&grants, &required),
            Vec::<String>::new(),
            "{source}: waypoint-proxy grants more than waypoint uses"
        );
    }
}

/// What `waypoint controller` does, by its interface: read Gateways and classes, apply each
/// waypoint's objects, write Gateway and class status, hold its Lease, bind `waypoint-proxy`.
fn controller_contract(lease_namespace: &str) -> BTreeSet<Permission> {
    let mut wanted = BTreeSet::new();
    let mut add = |verbs: &[&str], group: &str, resources: &[&str], ns: Option<&str>| {
        for verb in verbs {
            for resource in resources {
                wanted.insert(Permission::new(verb, group, resource, ns));
            }
        }
    };
    let gateway_api = "gateway.networking.k8s.io";
    let read = ["get", "list", "watch"];
    let write = ["create", "patch", "delete"];
    add(&read, gateway_api, &["gatewayclasses", "gateways"], None);
    add(&read, "", &["pods", "services", "serviceaccounts"], None);
    add(&read, "apps", &["deployments"], None);
    add(
        &read,
        "rbac.authorization.k8s.io",
        &["clusterrolebindings"],
        None,
    );
    add(&write, "", &["services", "serviceaccounts"], Some("apps"));
    add(&write, "apps", &["deployments"], Some("apps"));
    add(
        &write,
        "rbac.authorization.k8s.io",
        &["clusterrolebindings"],
        None,
    );
    add(
        &["get", "patch", "update"],
        gateway_api,
        &["gateways/status", "gatewayclasses/status"],
        None,
    );
    add(
        &["get", "create", "update"],
        "coordination.k8s.io",
        &["leases"],
        Some(lease_namespace),
    );
    wanted.insert(
        Permission::new("bind", "rbac.authorization.k8s.io", "clusterroles", None)
            .named("waypoint-proxy"),
    );
    wanted
}

#[test]
fn the_controller_service_account_holds_what_the_controller_interface_needs() {
    for (source, manifests, namespace) in [
        ("deploy/", plain_manifests(), "waypoint-system"),
        ("helm default", helm_rendering("default"), "waypoint-system"),
        ("helm custom", helm_rendering("custom"), "mesh-system"),
    ] {
        let grants = granted_to(&manifests, namespace, "waypoint-controller");
        let contract = controller_contract(namespace);
        assert_eq!(
            missing(&grants, &contract),
            vec![],
            "{source}: the controller lacks these"
        );
        // Its Lease rights stop at its own namespace, and it may bind no other ClusterRole.
        let elsewhere = Permission::new("update", "coordination.k8s.io", "leases", Some("apps"));
        assert!(!allows(&grants, &elsewhere), "{source}: Leases everywhere");
        let admin = Permission::new("bind", "rbac.authorization.k8s.io", "clusterroles", None)
            .named("cluster-admin");
        assert!(!allows(&grants, &admin), "{source}: may bind cluster-admin");
        let secrets = Permission::new("list", "", "secrets", None);
        assert!(
            !allows(&grants, &secrets),
            "{source}: the controller reads Secrets"
        );
    }
}

#[test]
fn requests_map_to_the_verbs_and_resources_the_authorizer_checks() {
    let of = |method, path, query| Permission::of_request(method, path, query);
    let core = |verb, resource, ns: Option<&str>| Permission::new(verb, "", resource, ns);
    assert_eq!(
        of("GET", "/api/v1/pods", "watch=1&resourceVersion=3"),
        Some(core("watch", "pods", None))
    );
    assert_eq!(
        of("GET", "/api/v1/namespaces", "limit=500"),
        Some(core("list", "namespaces", None))
    );
    assert_eq!(
        of("GET", "/api/v1/namespaces/apps", ""),
        Some(core("get", "namespaces", None).named("apps"))
    );
    assert_eq!(
        of(
            "PUT",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/gateways/wp/status",
            ""
        ),
        Some(
            Permission::new(
                "update",
                "gateway.networking.k8s.io",
                "gateways/status",
                Some("apps")
            )
            .named("wp")
        )
    );
    assert_eq!(
        of(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/apps/leases",
            ""
        ),
        Some(Permission::new(
            "create",
            "coordination.k8s.io",
            "leases",
            Some("apps")
        ))
    );
    assert_eq!(
        of("DELETE", "/api/v1/namespaces/apps/services", ""),
        Some(core("deletecollection", "services", Some("apps")))
    );
    assert_eq!(
        of("PATCH", "/api/v1/namespaces/apps/services/s", ""),
        Some(core("patch", "services", Some("apps")).named("s"))
    );
    assert_eq!(of("GET", "/healthz", ""), None);
    assert_eq!(of("GET", "/version", ""), None);
}

#[test]
fn grants_follow_the_authorizers_scope_name_and_wildcard_rules() {
    let manifests: Vec<Value> = serde_saphyr::from_multiple(
        r#"
kind: Role
metadata: {name: r, namespace: apps}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get], resourceNames: [one]}]
---
kind: ClusterRole
metadata: {name: c}
rules: [{apiGroups: ["*"], resources: ["*/status"], verbs: ["*"]}]
---
kind: RoleBinding
metadata: {name: b, namespace: apps}
roleRef: {kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: sa, namespace: apps}]
---
kind: RoleBinding
metadata: {name: b2, namespace: other}
roleRef: {kind: ClusterRole, name: c}
subjects: [{kind: ServiceAccount, name: sa, namespace: apps}]
"#,
    )
    .unwrap();
    let grants = granted_to(&manifests, "apps", "sa");
    let cm = |ns: &str| Permission::new("get", "", "configmaps", Some(ns));
    assert!(allows(&grants, &cm("apps").named("one")));
    assert!(
        !allows(&grants, &cm("apps").named("two")),
        "resourceNames restrict"
    );
    assert!(
        !allows(&grants, &cm("apps")),
        "a named rule does not allow an unnamed get"
    );
    assert!(
        !allows(&grants, &cm("other").named("one")),
        "a Role stays in its namespace"
    );
    let status =
        |ns: &str| Permission::new("update", "x.io", "widgets/status", Some(ns)).named("w");
    assert!(
        allows(&grants, &status("other")),
        "*/status and * verbs and groups"
    );
    assert!(
        !allows(&grants, &status("apps")),
        "a RoleBinding scopes a ClusterRole to its namespace"
    );
    assert!(!allows(
        &grants,
        &Permission::new("update", "x.io", "widgets", Some("other")).named("w")
    ));
    assert!(granted_to(&manifests, "apps", "nobody").is_empty());
}

/// `waypoint controller` through a Gateway's life: provisioned, a pod Ready (addresses
/// published), an object deleted by hand and re-applied, the Gateway deleted.
async fn waypoint_controller_requests() -> Vec<RecordedRequest> {
    use common::controller::{CLASS, controller, native_gateway, set_ready, wait_for, wait_gone};
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator.apply_yaml(CLASS).unwrap();
    emulator.apply_yaml(&native_gateway("waypoint")).unwrap();
    let _controller = controller(
        &emulator,
        dir.path(),
        &["--lease-namespace", "waypoint-system"],
        "ctl",
    );
    wait_for(&emulator, "apps/v1", "Deployment", "waypoint");
    set_ready(&emulator, "waypoint-1", "waypoint", true);
    eventually("addresses published", || {
        let gateway = emulator
            .get(GATEWAY_API, "Gateway", NAMESPACE, "waypoint")
            .unwrap();
        gateway["status"]
            .get("addresses")
            .is_none()
            .then(|| gateway.to_string())
    });
    emulator
        .delete("v1", "Service", NAMESPACE, "waypoint")
        .unwrap();
    wait_for(&emulator, "v1", "Service", "waypoint");
    emulator
        .delete(GATEWAY_API, "Gateway", NAMESPACE, "waypoint")
        .unwrap();
    eventually("binding deleted", || {
        emulator
            .get(
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "",
                "waypoint-proxy.apps.waypoint",
            )
            .map(|o| o.to_string())
    });
    wait_gone(&emulator, "apps/v1", "Deployment", "waypoint");
    emulator.requests()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_service_account_allows_every_request_of_waypoint_controller() {
    let required = required_permissions(&waypoint_controller_requests().await);
    assert!(required.iter().any(|p| p.verb == "patch"), "{required:?}");
    for (source, manifests) in [
        ("deploy/", plain_manifests()),
        ("helm default", helm_rendering("default")),
    ] {
        let grants = granted_to(&manifests, "waypoint-system", "waypoint-controller");
        assert_eq!(
            missing(&grants, &required),
            vec![],
            "{source}: the controller was refused these"
        );
    }
}
