//! Binding through the real binary: with `--gateway`, only what is bound to that Gateway is
//! served (bound Service VIPs, bound Pods by IP, the Gateway's own listeners); the rest is
//! refused, logged and counted. Without it, every Service is served as before, and the Pods
//! whose waypoint is a Gateway in the config taking workload traffic.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::run::{Echo, Running, check, policy, rbac_denied, served};

/// The "pod": an echo server on its own loopback address.
const POD_IP: &str = "127.0.0.2";
const SOURCE: &str = "10.244.0.7:40000";

/// The Gateway `default/wp` (for `all` traffic, at 10.0.0.1 with an HTTP listener on 80) and
/// another, `elsewhere` (10.0.0.2), both parents of an HTTPRoute to `echo`; the
/// Services `echo` (bound), `other` (names no waypoint) and `podsvc` (bound, its endpoint is the
/// pod), the bound Pod `echo-pod-1` at [`POD_IP`], the Pod `stray` that opts out, and `extra`
/// documents.
fn manifests(echo: &Echo, pod: &Echo, extra: &str) -> String {
    let bound = |svc: String, name: &str| {
        svc.replace(
            &format!("metadata: {{name: {name}, namespace: default}}"),
            &format!(
                "metadata: {{name: {name}, namespace: default, labels: {{istio.io/use-waypoint: wp}}}}"
            ),
        )
    };
    let echo_svc = bound(common::service("echo", "10.96.0.10", echo.port), "echo");
    let other_svc = common::service("other", "10.96.0.11", echo.port);
    let pod_svc = bound(common::service("podsvc", "10.96.0.12", pod.port), "podsvc")
        .replace("127.0.0.1", POD_IP);
    format!(
        r#"{echo_svc}---
{other_svc}---
{pod_svc}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: wp, namespace: default, labels: {{istio.io/waypoint-for: all}}}}
spec:
  gatewayClassName: waypoint
  addresses: [{{type: IPAddress, value: 10.0.0.1}}]
  listeners:
  - {{name: mesh, port: 15008, protocol: HBONE}}
  - {{name: http, port: 80, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: elsewhere, namespace: default}}
spec:
  gatewayClassName: waypoint
  addresses: [{{type: IPAddress, value: 10.0.0.2}}]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: via-gateway, namespace: default}}
spec:
  parentRefs: [{{name: wp, sectionName: http}}, {{name: elsewhere, sectionName: http}}]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-pod-1, namespace: default, labels: {{istio.io/use-waypoint: wp}}}}
spec: {{serviceAccountName: echo}}
status: {{podIP: {POD_IP}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: stray, namespace: default, labels: {{istio.io/use-waypoint: none}}}}
status: {{podIP: 127.0.0.3}}
{extra}"#
    )
}

fn not_served(response: &str) -> bool {
    response.contains("404") && !response.contains("\"pod\"")
}

/// The value of counter `waypoint_unbound_destination_total{reason}`, 0 when absent.
fn unbound_count(running: &Running, reason: &str) -> u64 {
    let metrics = running.admin("/metrics");
    let series = format!("waypoint_unbound_destination_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn with_a_gateway_a_bound_service_is_served_and_an_unbound_one_refused_and_counted() {
    let (echo, pod) = (Echo::start(), Echo::start_on(POD_IP));
    let config = manifests(&echo, &pod, "");
    let (wp, _dir) = Running::start(&config, &["--gateway", "default/wp"], &[]);

    let out = wp.send_to("10.96.0.10:80", SOURCE, "/", &[]);
    assert!(served(&out), "{out}");
    assert_eq!(unbound_count(&wp, "service_not_bound"), 0);

    let out = wp.send_to("10.96.0.11:80", SOURCE, "/", &[]);
    assert!(not_served(&out), "{out}");
    assert!(out.contains("Service default/other is not bound"), "{out}");
    assert_eq!(unbound_count(&wp, "service_not_bound"), 1);

    let out = wp.send_to("10.96.0.99:80", SOURCE, "/", &[]);
    assert!(not_served(&out), "{out}");
    assert_eq!(unbound_count(&wp, "unknown_destination"), 1);
    // A Pod that opted out is no workload of ours.
    let out = wp.send_to("127.0.0.3:8080", SOURCE, "/", &[]);
    assert!(not_served(&out), "{out}");
    assert_eq!(unbound_count(&wp, "unknown_destination"), 2);

    // Our Gateway's own listener keeps serving its routes; another Gateway's does not.
    let out = wp.send_to("10.0.0.1:80", SOURCE, "/", &[]);
    assert!(served(&out), "{out}");
    let out = wp.send_to("10.0.0.2:80", SOURCE, "/", &[]);
    assert!(not_served(&out), "{out}");
    assert_eq!(unbound_count(&wp, "unknown_destination"), 3);

    let dump = wp.admin("/config_dump");
    assert!(dump.contains("\"enforced\": true"), "{dump}");
    assert!(dump.contains("\"gateway\": \"default/wp\""), "{dump}");
    assert!(dump.contains("\"reason\": \"OptedOut\""), "{dump}");
}

#[test]
fn a_bound_workload_is_reached_by_pod_ip_and_port_without_service_routing() {
    let (echo, pod) = (Echo::start(), Echo::start_on(POD_IP));
    let config = manifests(&echo, &pod, "");
    let (wp, _dir) = Running::start(&config, &[], &[("WAYPOINT_GATEWAY", "default/wp")]);
    let pod_addr = format!("{POD_IP}:{}", pod.port);
    let out = wp.send_to(&pod_addr, SOURCE, "/direct", &[]);
    assert!(served(&out), "{out}");
    assert_eq!(unbound_count(&wp, "unknown_destination"), 0);
    // Istio's metrics name the pod as the destination workload, and no Service.
    let metrics = wp.admin("/metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        line.contains("destination_workload=\"echo-pod-1\""),
        "{line}"
    );
    assert!(
        line.contains("destination_service_name=\"unknown\""),
        "{line}"
    );
    // Another port of the same pod goes to exactly that port: nothing listens there.
    let closed = format!("{POD_IP}:{}", common::free_port());
    let out = wp.send_to(&closed, SOURCE, "/", &[]);
    assert!(!out.contains("200 OK") && !out.contains("404"), "{out}");
}

#[test]
fn a_service_targeted_deny_spares_pod_addressed_traffic_while_a_gateway_targeted_one_does_not() {
    let (echo, pod) = (Echo::start(), Echo::start_on(POD_IP));
    let deny_service = policy(
        "default",
        "deny-podsvc",
        r#"{kind: Service, group: "", name: podsvc}"#,
        "  action: DENY\n  rules: [{}]\n",
    );
    let deny_gateway_path = policy(
        "default",
        "deny-gw-path",
        "{kind: Gateway, group: gateway.networking.k8s.io, name: wp}",
        "  action: DENY\n  rules: [{to: [{operation: {paths: [\"/gw\"]}}]}]\n",
    );
    let policies = format!("---\n{deny_service}---\n{deny_gateway_path}");
    let config = manifests(&echo, &pod, &policies);
    let (wp, _dir) = Running::start(&config, &["--gateway", "default/wp"], &[]);
    let pod_addr = format!("{POD_IP}:{}", pod.port);

    // The same pod through its Service: the Service's DENY applies.
    let out = wp.send_to("10.96.0.12:80", SOURCE, "/", &[]);
    assert!(rbac_denied(&out), "{out}");
    // Addressed by pod IP: only the Gateway's policies apply.
    let out = wp.send_to(&pod_addr, SOURCE, "/", &[]);
    assert!(served(&out), "{out}");
    let out = wp.send_to(&pod_addr, SOURCE, "/gw", &[]);
    assert!(rbac_denied(&out), "{out}");
}

#[test]
fn without_a_gateway_every_service_is_served_and_only_pods_of_a_workload_waypoint_here() {
    let (echo, pod) = (Echo::start(), Echo::start_on(POD_IP));
    let config = manifests(&echo, &pod, "");
    let (wp, _dir) = Running::start(&config, &[], &[]);
    for vip in [
        "10.96.0.10:80",
        "10.96.0.11:80",
        "10.0.0.1:80",
        "10.0.0.2:80",
    ] {
        let out = wp.send_to(vip, SOURCE, "/", &[]);
        assert!(served(&out), "{vip}: {out}");
    }
    // `echo-pod-1` names `wp`, a Gateway in the config taking `all` traffic: served by pod
    // IP, as with `--gateway default/wp`. `stray` opted out: its IP is no address of ours.
    let out = wp.send_to(&format!("{POD_IP}:{}", pod.port), SOURCE, "/", &[]);
    assert!(served(&out), "{out}");
    let out = wp.send_to("127.0.0.3:80", SOURCE, "/", &[]);
    assert!(out.contains("no Service is known"), "{out}");
    assert!(
        !wp.admin("/metrics")
            .contains("waypoint_unbound_destination_total{")
    );
    assert!(wp.admin("/config_dump").contains("\"enforced\": false"));
}

#[test]
fn check_shows_what_is_bound_and_why_the_rest_is_not() {
    let (echo, pod) = (Echo::start(), Echo::start_on(POD_IP));
    let foreign = "---\napiVersion: v1\nkind: Service\nmetadata: {name: theirs, namespace: default, labels: {istio.io/use-waypoint: elsewhere}}\nspec:\n  clusterIP: 10.96.0.13\n  ports: [{port: 80}]\n";
    let config = manifests(&echo, &pod, foreign);

    let (ok, out) = check(&config, &["--gateway", "default/wp"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("binding: Gateway default/wp, traffic type all, listener mesh"),
        "{out}"
    );
    assert!(
        out.contains("serves  Service default/echo (Bound)"),
        "{out}"
    );
    assert!(
        out.contains("serves  Pod default/echo-pod-1 at 127.0.0.2 (Bound)"),
        "{out}"
    );
    assert!(
        out.contains("not bound Pod default/stray (OptedOut)"),
        "{out}"
    );
    assert!(
        out.contains("not bound Service default/theirs (OtherWaypoint): its label istio.io/use-waypoint names waypoint default/elsewhere"),
        "{out}"
    );

    let (ok, out) = check(&config, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("binding: off"), "{out}");

    // A Gateway that is not in the config binds nothing, and check says so.
    let (ok, out) = check(&config, &["--gateway", "default/nope"]);
    assert!(!ok, "{out}");
    assert!(out.contains("PROBLEM Gateway default/nope"), "{out}");
}
