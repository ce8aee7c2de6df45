//! ServiceEntries through the real binary: an entry bound to the waypoint (`istio.io/use-waypoint`)
//! is served at its VIP like a Service; HTTPRoutes with the entry as parent route its traffic
//! (to `Hostname` backends too); AuthorizationPolicies that target it apply to it; an entry
//! bound elsewhere is refused.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::run::{Echo, Running, policy, rbac_denied, served};

const SOURCE: &str = "10.244.0.7:40000";
const VIP: &str = "240.240.0.1:80";

/// Gateway `default/wp` (service traffic), the ServiceEntry `api` (`api.example.com`, VIP
/// 240.240.0.1, STATIC endpoint: the echo on loopback) bound to it, the entry `elsewhere`
/// (240.240.0.2) bound to another waypoint, and `extra` documents.
fn manifests(echo: &Echo, extra: &str) -> String {
    let port = echo.port;
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: wp, namespace: default}}
spec:
  gatewayClassName: waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default, labels: {{istio.io/use-waypoint: wp}}}}
spec:
  hosts: [api.example.com]
  addresses: [240.240.0.1]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: elsewhere, namespace: default, labels: {{istio.io/use-waypoint: other}}}}
spec:
  hosts: [other.example.com]
  addresses: [240.240.0.2]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
{extra}"#
    )
}

/// One request as ztunnel sends it, from workload identity `sa` of namespace `default`.
fn send_as(wp: &Running, sa: &str, destination: &str, path: &str) -> String {
    let out = common::waypoint()
        .args(["send", "--to", &format!("127.0.0.1:{}", wp.sandwich)])
        .args(["--destination", destination, "--source", SOURCE])
        .args([
            "--identity",
            &format!("spiffe://cluster.local/ns/default/sa/{sa}"),
        ])
        .args(["--path", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_bound_service_entry_is_served_at_its_vip_and_one_bound_elsewhere_is_refused() {
    let echo = Echo::start();
    let (wp, _dir) = Running::start(&manifests(&echo, ""), &["--gateway", "default/wp"], &[]);

    let out = wp.send_to(VIP, SOURCE, "/hello", &[]);
    assert!(served(&out), "{out}");
    assert!(out.contains("\"path\":\"/hello\""), "{out}");

    let out = wp.send_to("240.240.0.2:80", SOURCE, "/", &[]);
    assert!(!served(&out), "{out}");
    assert!(
        out.contains("ServiceEntry default/elsewhere is not bound"),
        "{out}"
    );

    // Metrics name the entry by its host.
    let metrics = wp.admin("/metrics");
    assert!(
        metrics.contains("destination_service=\"api.example.com\""),
        "{metrics}"
    );
}

#[test]
fn an_http_route_with_the_service_entry_as_parent_rewrites_and_routes_by_hostname() {
    let echo = Echo::start();
    let route = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-v2, namespace: default}
spec:
  parentRefs: [{group: networking.istio.io, kind: ServiceEntry, name: api}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{group: networking.istio.io, kind: Hostname, name: api.example.com, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /blocked}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 302, path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}
"#;
    let (wp, _dir) = Running::start(&manifests(&echo, route), &["--gateway", "default/wp"], &[]);

    let out = wp.send_to(VIP, SOURCE, "/v1/users", &[]);
    assert!(served(&out), "{out}");
    assert!(out.contains("\"path\":\"/v2/users\""), "{out}");

    // The route, not the default backend, answers the other rule.
    let out = wp.send_to(VIP, SOURCE, "/blocked", &[]);
    assert!(out.contains("302"), "{out}");
    assert!(!served(&out), "{out}");
}

#[test]
fn an_authorization_policy_targeting_the_service_entry_allows_one_identity_and_denies_another() {
    let echo = Echo::start();
    let allow = policy(
        "default",
        "api-callers",
        "{group: networking.istio.io, kind: ServiceEntry, name: api}",
        "  rules:\n  - from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]\n",
    );
    let extra = format!("---\n{allow}");
    let (wp, _dir) = Running::start(&manifests(&echo, &extra), &["--gateway", "default/wp"], &[]);

    let out = send_as(&wp, "sleep", VIP, "/");
    assert!(served(&out), "{out}");
    let out = send_as(&wp, "intruder", VIP, "/");
    assert!(rbac_denied(&out), "{out}");
}
