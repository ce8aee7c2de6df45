//! DestinationRules as a user sees which one applies: `waypoint check` lists, per Service
//! port, each settings block with the rule it came from; `/config_dump` shows the same, from
//! files and from the Kubernetes API; `--root-namespace` and `--cluster-domain` change which
//! rule matches; an invalid rule is refused with the field named. What each block *does* is
//! tested in the `dr_*` test files.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

mod common;

use common::kube::{admin_up, emulator, eventually, run_kube};
use common::run::{Running, check};
use common::{admin_get, waypoint};
use serde_json::Value;

/// Service `shop/reviews` on port 9080 (no endpoints needed to resolve policy).
const REVIEWS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.1.1
  ports: [{name: http, port: 9080}]
"#;

/// A rule `ns/name` for `host` with a host-wide load balancer and a TLS block on port 9080.
fn rule(ns: &str, name: &str, host: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec:
  host: "{host}"
  trafficPolicy:
    loadBalancer: {{}}
    portLevelSettings:
    - port: {{number: 9080}}
      tls: {{}}
"#
    )
}

#[test]
fn check_shows_each_block_of_a_service_port_with_the_rule_it_came_from() {
    let (ok, out) = check(&format!("{REVIEWS}{}", rule("shop", "r", "reviews")), &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("loadBalancer {} from DestinationRule shop/r spec.trafficPolicy\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "tls {} from DestinationRule shop/r spec.trafficPolicy.portLevelSettings[port 9080]"
        ),
        "{out}"
    );
}

#[test]
fn the_cluster_domain_flag_decides_what_a_qualified_host_names() {
    let manifests = format!(
        "{REVIEWS}{}",
        rule("shop", "r", "reviews.shop.svc.corp.local")
    );
    let (_, default) = check(&manifests, &[]);
    assert!(!default.contains("from DestinationRule"), "{default}");
    let (_, flag) = check(&manifests, &["--cluster-domain", "corp.local"]);
    assert!(flag.contains("from DestinationRule shop/r"), "{flag}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, &manifests).unwrap();
    let env = waypoint()
        .env("WAYPOINT_CLUSTER_DOMAIN", "corp.local")
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&env.stdout);
    assert!(env.contains("from DestinationRule shop/r"), "{env}");
}

#[test]
fn the_root_namespace_flag_decides_where_mesh_wide_rules_live() {
    let manifests = format!("{REVIEWS}{}", rule("mesh-root", "all", "*"));
    let (_, default) = check(&manifests, &[]);
    assert!(!default.contains("from DestinationRule"), "{default}");
    let (_, flag) = check(&manifests, &["--root-namespace", "mesh-root"]);
    assert!(
        flag.contains("from DestinationRule mesh-root/all"),
        "{flag}"
    );
}

#[test]
fn an_invalid_rule_is_refused_with_the_field_named_and_applies_nowhere() {
    let bad = rule("shop", "bad", "reviews").replace("number: 9080", "number: 0");
    let (ok, out) = check(&format!("{REVIEWS}{bad}"), &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("REJECTED DestinationRule shop/bad"), "{out}");
    assert!(
        out.contains("spec.trafficPolicy.portLevelSettings[0].port.number: required"),
        "{out}"
    );
    assert!(!out.contains("from DestinationRule"), "{out}");
    let (ok, out) = check(
        &format!(
            "{REVIEWS}{}",
            rule("shop", "typo", "reviews").replace("loadBalancer", "loadBalancers")
        ),
        &[],
    );
    assert!(!ok && out.contains("loadBalancers"), "{out}");
}

#[test]
fn a_rule_shadowed_by_an_older_one_for_the_same_host_says_which_applies() {
    let old = rule("shop", "old", "reviews").replace(
        "namespace: shop}",
        "namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}",
    );
    let new = rule("shop", "new", "reviews.shop.svc.cluster.local").replace(
        "namespace: shop}",
        "namespace: shop, creationTimestamp: \"2026-02-01T00:00:00Z\"}",
    );
    let (ok, out) = check(&format!("{REVIEWS}{new}{old}"), &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("loadBalancer {} from DestinationRule shop/old"),
        "{out}"
    );
    assert!(
        out.contains(
            "DestinationRule shop/new is valid, but its trafficPolicy is not applied: \
             DestinationRule shop/old is older"
        ),
        "{out}"
    );
}

/// The `trafficPolicy` of `shop/reviews` port 9080 in the `/config_dump` at `admin`.
fn dumped_policy(admin: u16) -> Value {
    let text = admin_get(admin, "/config_dump");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let dump: Value = serde_json::from_str(body).unwrap_or_default();
    dump["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "reviews" && s["port"] == 9080)
        .map(|s| s["trafficPolicy"].clone())
        .unwrap_or_default()
}

#[test]
fn config_dump_shows_the_policy_from_files_as_run_flags_resolve_it() {
    // Both flags change the answer: the rule lives in a custom root namespace and names the
    // Service under a custom cluster domain.
    let manifests = format!(
        "{REVIEWS}{}",
        rule("mesh-root", "r", "reviews.shop.svc.corp.local")
    );
    let flags = [
        "--root-namespace",
        "mesh-root",
        "--cluster-domain",
        "corp.local",
    ];
    let (running, _dir) = Running::start(&manifests, &flags, &[]);
    let policy = dumped_policy(running.admin);
    assert_eq!(
        policy["loadBalancer"]["from"],
        "DestinationRule mesh-root/r spec.trafficPolicy"
    );
    assert_eq!(
        policy["tls"]["from"],
        "DestinationRule mesh-root/r spec.trafficPolicy.portLevelSettings[port 9080]"
    );
    let (plain, _dir) = Running::start(&manifests, &[], &[]);
    assert_eq!(dumped_policy(plain.admin), serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_shows_a_rule_applied_through_the_kubernetes_api() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator().await;
    emulator.apply_yaml(REVIEWS).unwrap();
    let kube = run_kube(&emulator, dir.path());
    eventually("admin server up", || {
        (!admin_up(kube.admin)).then(String::new)
    });
    eventually("reviews served without a rule", || {
        let p = dumped_policy(kube.admin);
        (p != serde_json::json!({})).then(|| p.to_string())
    });
    emulator.apply_yaml(&rule("shop", "r", "reviews")).unwrap();
    eventually("the rule applied", || {
        let p = dumped_policy(kube.admin);
        (p["loadBalancer"]["from"] != "DestinationRule shop/r spec.trafficPolicy")
            .then(|| p.to_string())
    });
}
