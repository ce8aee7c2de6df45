//! TCPRoute and TLSRoute as config: each served version read, the CRD's limits enforced with
//! the field named, and a bad route left out with `Accepted=False` while the rest is served.

#![allow(clippy::unwrap_used)]

use waypoint_core::config::build::EndpointStatsCache;
use waypoint_core::config::load::parse_manifests_with;
use waypoint_core::config::resources::Listener;
use waypoint_core::config::{Config, parse_manifests};

fn parse(text: &str) -> Config {
    parse_manifests_with(text, "test.yaml", &EndpointStatsCache::new()).unwrap()
}

/// The message of the one rejected resource.
fn rejection(config: &Config) -> String {
    let rejected: Vec<_> = config.statuses.iter().filter(|s| !s.is_ok()).collect();
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    rejected[0].conditions[0].message.clone()
}

fn tcp(version: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/{version}\nkind: TCPRoute\nmetadata: {{name: t, namespace: apps}}\nspec:\n{spec}"
    )
}

fn tls(version: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/{version}\nkind: TLSRoute\nmetadata: {{name: s, namespace: apps}}\nspec:\n{spec}"
    )
}

const RULE: &str = "  rules: [{backendRefs: [{name: db, port: 5432, weight: 3}]}]\n";

#[test]
fn tcp_routes_are_read_in_v1_and_v1alpha2_with_parents_and_weighted_backends() {
    for version in ["v1", "v1alpha2"] {
        let spec = format!("  parentRefs: [{{name: gw, sectionName: tcp, port: 9000}}]\n{RULE}");
        let config = parse(&tcp(version, &spec));
        assert!(
            config.statuses.iter().all(|s| s.is_ok()),
            "{:?}",
            config.statuses
        );
        let route = &config.resources.tcp_routes[0];
        assert_eq!(
            route.spec.parent_refs[0].section_name.as_deref(),
            Some("tcp")
        );
        assert_eq!(route.spec.parent_refs[0].port, Some(9000));
        let backend = &route.spec.rules[0].backend_refs[0];
        assert_eq!(
            (backend.kind.as_str(), backend.port, backend.weight),
            ("Service", Some(5432), 3)
        );
    }
}

#[test]
fn tls_routes_are_read_in_v1_v1alpha3_and_v1alpha2_and_other_versions_are_refused() {
    for version in ["v1", "v1alpha3", "v1alpha2"] {
        let config = parse(&tls(
            version,
            &format!("  hostnames: [a.example.com]\n{RULE}"),
        ));
        assert!(
            config.statuses.iter().all(|s| s.is_ok()),
            "{:?}",
            config.statuses
        );
        assert_eq!(
            config.resources.tls_routes[0].spec.hostnames,
            ["a.example.com"]
        );
    }
    let err = parse_manifests(&tls("v9", RULE), "t.yaml").unwrap();
    assert!(rejection(&err).contains("apiVersion `gateway.networking.k8s.io/v9` is not supported"));
}

#[test]
fn a_backend_ref_with_filters_is_refused_naming_the_field() {
    let config = parse(&tcp(
        "v1",
        "  rules: [{backendRefs: [{name: db, port: 5432, filters: [{type: RequestHeaderModifier}]}]}]\n",
    ));
    let message = rejection(&config);
    assert!(message.contains("TCPRoute apps/t"), "{message}");
    assert!(
        message.contains("spec.rules[0].backendRefs[0].filters"),
        "{message}"
    );
    assert!(config.resources.tcp_routes.is_empty());
}

#[test]
fn the_crd_limits_are_enforced_with_the_field_named() {
    let cases = [
        (
            tcp("v1", "  rules: []\n"),
            "spec.rules: needs 1 to 16 rules, has 0",
        ),
        (
            tcp("v1", "  rules: [{backendRefs: []}]\n"),
            "spec.rules[0].backendRefs: needs 1 to 16 entries, has 0",
        ),
        (
            tcp(
                "v1",
                "  rules: [{backendRefs: [{name: db, port: 5432, weight: 1000001}]}]\n",
            ),
            "spec.rules[0].backendRefs[0].weight: must be 0-1000000",
        ),
        (
            tcp("v1", "  rules: [{backendRefs: [{name: db}]}]\n"),
            "spec.rules[0].backendRefs[0].port",
        ),
        (
            tcp(
                "v1",
                &format!("  parentRefs: [{{name: gw, port: 0}}]\n{RULE}"),
            ),
            "spec.parentRefs[0].port: must be 1-65535",
        ),
        (
            tcp(
                "v1alpha2",
                "  rules: [{name: a, backendRefs: [{name: db, port: 1}]}, {name: a, backendRefs: [{name: db, port: 1}]}]\n",
            ),
            "spec.rules[1].name: duplicate rule name `a`",
        ),
        (
            tls("v1", &format!("  hostnames: [\"10.0.0.1\"]\n{RULE}")),
            "spec.hostnames[0]: `10.0.0.1` is not a valid hostname (IP addresses are not allowed)",
        ),
        (
            tls("v1", &format!("  hostnames: [\"a.*.com\"]\n{RULE}")),
            "spec.hostnames[0]",
        ),
    ];
    for (manifest, expected) in cases {
        let config = parse(&manifest);
        let message = rejection(&config);
        assert!(message.contains(expected), "{message} (wanted {expected})");
    }
    let many: Vec<String> = (0..17)
        .map(|i| format!("{{name: db, port: {}}}", i + 1))
        .collect();
    let config = parse(&tcp(
        "v1",
        &format!("  rules: [{{backendRefs: [{}]}}]\n", many.join(", ")),
    ));
    assert!(rejection(&config).contains("needs 1 to 16 entries, has 17"));
}

#[test]
fn listeners_support_the_route_kinds_their_protocol_carries() {
    let listener = |yaml: &str| -> Listener { serde_saphyr::from_str(yaml).unwrap() };
    let cases = [
        (
            "{name: a, port: 80, protocol: HTTP}",
            vec!["HTTPRoute", "GRPCRoute"],
            0,
        ),
        (
            "{name: a, port: 443, protocol: HTTPS}",
            vec!["HTTPRoute", "GRPCRoute"],
            0,
        ),
        ("{name: a, port: 9000, protocol: TCP}", vec!["TCPRoute"], 0),
        (
            "{name: a, port: 443, protocol: TLS, tls: {mode: Passthrough}}",
            vec!["TLSRoute"],
            0,
        ),
        // Terminating TLS listeners are not supported: no kind, and the one named is invalid.
        (
            "{name: a, port: 443, protocol: TLS, allowedRoutes: {kinds: [{kind: TLSRoute}]}}",
            vec![],
            1,
        ),
        ("{name: a, port: 15008, protocol: HBONE}", vec![], 0),
        (
            "{name: a, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: TLSRoute}]}}",
            vec!["TLSRoute"],
            1,
        ),
        (
            "{name: a, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}",
            vec!["GRPCRoute"],
            0,
        ),
    ];
    for (yaml, supported, invalid) in cases {
        let l = listener(yaml);
        assert_eq!(l.supported_route_kinds(), supported, "{yaml}");
        assert_eq!(l.invalid_route_kinds().len(), invalid, "{yaml}");
    }
}
