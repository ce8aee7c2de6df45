#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use super::*;

/// A rule `ns/name` for `host` with a host-wide `loadBalancer` and `tls` and an override of
/// `loadBalancer` on port 9080; `extra` adds spec fields, `created` orders rules.
fn rule(ns: &str, name: &str, host: &str, extra: &str, created: &str) -> Sourced<DestinationRule> {
    let yaml = format!(
        "metadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\n\
         spec:\n  host: \"{host}\"\n  trafficPolicy:\n    loadBalancer: {{}}\n    tls: {{}}\n    \
         portLevelSettings: [{{port: {{number: 9080}}, loadBalancer: {{}}}}]\n{extra}"
    );
    Sourced {
        source: "test".into(),
        resource: serde_saphyr::from_str(&yaml).unwrap(),
    }
}

fn mesh(own: Option<&str>) -> MeshOptions {
    MeshOptions {
        gateway: own.map(|ns| (ns.to_owned(), "waypoint".to_owned())),
        ..MeshOptions::default()
    }
}

/// The rule (`ns/name`) giving the host-wide load balancer of `host` in `ns`, port 80.
fn winner(
    rules: &[Sourced<DestinationRule>],
    own: Option<&str>,
    host: &str,
    ns: &str,
) -> Option<String> {
    let mesh = mesh(own);
    let index = PolicyIndex::new(rules, &[], &mesh);
    let policy = index.for_port(host, ns, 80);
    policy
        .load_balancer
        .map(|lb| format!("{}/{}", lb.from.rule.namespace, lb.from.rule.name))
}

const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-01-02T00:00:00Z";

/// A description, the rules, the waypoint's namespace and the expected winner.
type Case = (
    &'static str,
    Vec<Sourced<DestinationRule>>,
    Option<&'static str>,
    Option<&'static str>,
);

#[test]
fn precedence_follows_istio_namespace_then_host_specificity() {
    // (description, rules, waypoint namespace, expected winner)
    let cases: Vec<Case> = vec![
        ("no rule", vec![], Some("wp"), None),
        (
            "short name in the Service's namespace",
            vec![rule("shop", "a", "reviews", "", T1)],
            Some("wp"),
            Some("shop/a"),
        ),
        (
            "short name elsewhere means another host",
            vec![rule("other", "a", "reviews", "", T1)],
            Some("wp"),
            None,
        ),
        (
            "the waypoint's namespace beats the Service's",
            vec![
                rule("shop", "svc", REVIEWS, "", T1),
                rule("wp", "own", REVIEWS, "", T2),
            ],
            Some("wp"),
            Some("wp/own"),
        ),
        (
            "the Service's namespace beats the root namespace",
            vec![
                rule("istio-system", "root", REVIEWS, "", T1),
                rule("shop", "svc", "*.svc.cluster.local", "", T2),
            ],
            Some("wp"),
            Some("shop/svc"),
        ),
        (
            "root namespace as last resort",
            vec![rule("istio-system", "root", "*", "", T1)],
            Some("wp"),
            Some("istio-system/root"),
        ),
        (
            "exact beats wildcard in one namespace",
            vec![
                rule("shop", "wild", "*.shop.svc.cluster.local", "", T1),
                rule("shop", "exact", REVIEWS, "", T2),
            ],
            Some("wp"),
            Some("shop/exact"),
        ),
        (
            "longer wildcard beats shorter",
            vec![
                rule("shop", "short", "*.cluster.local", "", T1),
                rule("shop", "long", "*.svc.cluster.local", "", T2),
            ],
            Some("wp"),
            Some("shop/long"),
        ),
        (
            "same host twice: the oldest rule's policy",
            vec![
                rule("shop", "new", REVIEWS, "", T2),
                rule("shop", "old", REVIEWS, "", T1),
            ],
            Some("wp"),
            Some("shop/old"),
        ),
        (
            "exportTo . hides a rule from the waypoint's namespace",
            vec![
                rule("shop", "private", REVIEWS, "  exportTo: [\".\"]\n", T1),
                rule("istio-system", "root", "*", "", T2),
            ],
            Some("wp"),
            Some("istio-system/root"),
        ),
        (
            "exportTo naming the waypoint's namespace shows it",
            vec![rule("shop", "named", REVIEWS, "  exportTo: [wp]\n", T1)],
            Some("wp"),
            Some("shop/named"),
        ),
        (
            "exportTo . in the waypoint's own namespace applies",
            vec![rule("wp", "local", REVIEWS, "  exportTo: [\".\"]\n", T1)],
            Some("wp"),
            Some("wp/local"),
        ),
        (
            "without --gateway only rules exported everywhere apply",
            vec![
                rule("shop", "named", REVIEWS, "  exportTo: [wp]\n", T1),
                rule("istio-system", "root", "*", "", T2),
            ],
            None,
            Some("istio-system/root"),
        ),
        (
            "a workloadSelector rule is for sidecars",
            vec![rule(
                "shop",
                "sidecar",
                REVIEWS,
                "  workloadSelector: {matchLabels: {app: x}}\n",
                T1,
            )],
            Some("wp"),
            None,
        ),
        (
            "a waypoint in the root namespace: the Service's rules before the root's public ones",
            vec![
                rule("istio-system", "public", "*", "", T1),
                rule("shop", "svc", REVIEWS, "", T2),
            ],
            Some("istio-system"),
            Some("shop/svc"),
        ),
        (
            "a waypoint in the root namespace: the root's private rules first",
            vec![
                rule("istio-system", "private", "*", "  exportTo: [\".\"]\n", T1),
                rule("shop", "svc", REVIEWS, "", T2),
            ],
            Some("istio-system"),
            Some("istio-system/private"),
        ),
        (
            "a rule exported to its own namespace and the waypoint's is seen",
            vec![rule(
                "shop",
                "both",
                REVIEWS,
                "  exportTo: [\".\", wp]\n",
                T1,
            )],
            Some("wp"),
            Some("shop/both"),
        ),
        (
            "a rule exported to another namespace only is not seen",
            vec![rule(
                "shop",
                "elsewhere",
                REVIEWS,
                "  exportTo: [other]\n",
                T1,
            )],
            Some("wp"),
            None,
        ),
        (
            "wildcard does not cover its own suffix",
            vec![rule(
                "shop",
                "w",
                "*.reviews.shop.svc.cluster.local",
                "",
                T1,
            )],
            Some("wp"),
            None,
        ),
    ];
    for (what, rules, own, want) in cases {
        assert_eq!(
            winner(&rules, own, REVIEWS, "shop").as_deref(),
            want,
            "{what}"
        );
    }
}

#[test]
fn a_port_override_replaces_only_its_blocks_and_says_so() {
    let rules = [rule("shop", "r", "reviews", "", T1)];
    let mesh = mesh(Some("wp"));
    let index = PolicyIndex::new(&rules, &[], &mesh);
    let at_9080 = index.for_port(REVIEWS, "shop", 9080);
    let lb = at_9080.load_balancer.unwrap();
    assert_eq!(lb.from.port_level, Some(9080));
    assert_eq!(
        lb.from.to_string(),
        "DestinationRule shop/r spec.trafficPolicy.portLevelSettings[port 9080]"
    );
    // tls was not overridden: still the host-wide block.
    assert_eq!(at_9080.tls.unwrap().from.port_level, None);
    assert!(at_9080.connection_pool.is_none());
    let at_80 = index.for_port(REVIEWS, "shop", 80);
    assert_eq!(at_80.load_balancer.unwrap().from.port_level, None);
}

#[test]
fn merged_rules_take_the_first_traffic_policy_found() {
    let bare: Sourced<DestinationRule> = Sourced {
        source: "test".into(),
        resource: serde_saphyr::from_str(&format!(
            "metadata: {{name: bare, namespace: shop, creationTimestamp: \"{T1}\"}}\nspec: {{host: reviews}}\n"
        ))
        .unwrap(),
    };
    let rules = [bare, rule("shop", "later", REVIEWS, "", T2)];
    assert_eq!(
        winner(&rules, Some("wp"), REVIEWS, "shop").as_deref(),
        Some("shop/later")
    );
}

#[test]
fn hosts_qualify_and_match_as_istio_reads_them() {
    assert_eq!(qualified_host("reviews", "shop", "cluster.local"), REVIEWS);
    assert_eq!(
        qualified_host("reviews.shop", "x", "cluster.local"),
        "reviews.shop"
    );
    assert_eq!(qualified_host("*", "x", "cluster.local"), "*");
    assert!(host_matches("*.example.com", "api.example.com"));
    assert!(host_matches("*.example.com", "a.b.example.com"));
    assert!(!host_matches("*.example.com", "example.com"));
    assert!(!host_matches("api.example.com", "www.example.com"));
    assert!(host_matches("*", "anything"));
}

#[test]
fn a_refused_rule_setting_tls_for_a_port_fails_it_closed_and_others_pass_over_it() {
    // `rule` sets host-wide tls: refused, it claims every port of its host.
    let refused = [rule("shop", "bad", "reviews", "", T1)];
    let mesh = mesh(Some("wp"));
    let index = PolicyIndex::new(&[], &refused, &mesh);
    let policy = index.for_port(REVIEWS, "shop", 80);
    assert_eq!(
        policy.tls_refused_by.map(|r| r.name),
        Some("bad".to_owned())
    );
    assert!(policy.load_balancer.is_none());

    // Without tls, a refused rule is passed over: the next rule (here a valid, newer one)
    // applies, as if the refused one did not exist.
    let no_tls: Sourced<DestinationRule> = Sourced {
        source: "test".into(),
        resource: serde_saphyr::from_str(&format!(
            "metadata: {{name: lb-only, namespace: shop, creationTimestamp: \"{T1}\"}}\n\
             spec: {{host: reviews, trafficPolicy: {{loadBalancer: {{}}}}}}\n"
        ))
        .unwrap(),
    };
    let valid = [rule("shop", "good", "reviews", "", T2)];
    let index = PolicyIndex::new(&valid, std::slice::from_ref(&no_tls), &mesh);
    let policy = index.for_port(REVIEWS, "shop", 80);
    assert_eq!(policy.tls_refused_by, None);
    assert_eq!(policy.load_balancer.unwrap().from.rule.name, "good");
}
