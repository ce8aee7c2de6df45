//! Parsing case files: the TCP and TLS connection parts.

use super::*;

const HEAD: &str = "name: TCPRouteMultipleRoutesAttachment\nsource: s.go\nfeatures: [Gateway, TCPRoute]\nmanifests: []\n";

#[test]
fn a_tls_connection_to_a_passthrough_listener_parses_with_what_the_backend_must_see() {
    let case = Case::parse(&format!(
        "{HEAD}gateway: infra/gw:443\nconnections:\n  - tls: {{serverName: abc.example.com, caConfigMap: infra/ca}}\n    backend: tcp-backend\n    namespace: infra\n    backendIsTls: true\n    serverName: abc.example.com\n  - gateway: infra/gw:443\n    tls: {{serverName: non.matching.com}}\n    expect: rejected\n"
    ))
    .unwrap();
    let [echo, rejected] = &case.connections[..] else {
        panic!("{:?}", case.connections)
    };
    assert_eq!(echo.expect, ConnectionExpect::Echo);
    assert!(echo.backend_is_tls);
    assert_eq!(
        echo.tls.as_ref().unwrap().ca_config_map.as_deref(),
        Some("infra/ca")
    );
    assert_eq!(rejected.expect, ConnectionExpect::Rejected);
}

#[test]
fn a_step_creates_deletes_and_connects_after_waiting() {
    let case = Case::parse(&format!(
        "{HEAD}then:\n  - waitSeconds: 1\n    create:\n      - {{apiVersion: gateway.networking.k8s.io/v1, kind: TCPRoute, metadata: {{name: r, namespace: infra}}}}\n    delete: [ReferenceGrant web/g]\n    connections:\n      - {{gateway: 'infra/gw:8080', backend: b, samples: 100}}\n"
    ))
    .unwrap();
    let step = &case.then[0];
    assert_eq!(step.wait_seconds, 1);
    assert_eq!(step.create[0]["kind"], "TCPRoute");
    assert_eq!(step.delete, ["ReferenceGrant web/g"]);
    assert_eq!(step.connections[0].samples, Some(100));
}

#[test]
fn inconsistent_connections_are_refused_with_the_reason() {
    let bad = |body: &str| Case::parse(&format!("{HEAD}{body}")).unwrap_err();
    assert!(bad("connections: [{backend: b}]\n").contains("needs a gateway"));
    assert!(
        bad("connections: [{gateway: infra/gw, backend: b}]\n").contains("namespace/name:port")
    );
    assert!(
        bad("connections: [{gateway: 'infra/gw:1', expect: rejected}]\n").contains("needs `tls`")
    );
    assert!(bad("connections: [{gateway: 'infra/gw:1'}]\n").contains("backend or weights"));
    assert!(
        bad("connections: [{gateway: 'infra/gw:1', backend: b, tls: {serverName: x}}]\n")
            .contains("exactly one")
    );
    assert!(
        bad("connections: [{gateway: 'infra/gw:1', backend: b, expect: sometimes}]\n")
            .contains("sometimes")
    );
    assert!(
        bad("connections: [{gateway: 'infra/gw:1', backend: b, colour: red}]\n").contains("colour")
    );
}

#[test]
fn a_misspelt_feature_name_fails_the_case_instead_of_skipping_it() {
    let case = |name: &str, features: &str| {
        Case::parse(&format!(
            "name: {name}\nsource: s.go\nfeatures: [{features}]\nmanifests: []\n"
        ))
    };
    let err = case("HTTPRouteRetry", "Gateway, HTTPRoute, HTTPRouteRetries").unwrap_err();
    assert!(err.contains("\"HTTPRouteRetries\""), "{err}");
    assert!(err.contains("misspelt"), "{err}");
    // Declared ones and ones listed as unsupported (with why) are both fine to name.
    assert!(case("HTTPRouteRetry", "Gateway, HTTPRoute, HTTPRouteRetry").is_ok());
    let terminate = "TLSRouteListenerTerminateSupportedKinds";
    assert!(case(terminate, "Gateway, TLSRoute, TLSRouteModeTerminate").is_ok());
}

#[test]
fn a_case_names_an_upstream_test_with_exactly_its_features() {
    let case = |name: &str, features: &str, more: &str| {
        Case::parse(&format!(
            "name: {name}\nsource: s.go\nfeatures: [{features}]\nmanifests: []\n{more}"
        ))
    };
    let unknown = case("HTTPRouteSimpleSameNamespaec", "Gateway, HTTPRoute", "").unwrap_err();
    assert!(
        unknown.contains("not a test of the upstream suite"),
        "{unknown}"
    );
    // A feature left out would move the test to another profile or level.
    let short = case("HTTPRouteRetry", "Gateway, HTTPRoute", "").unwrap_err();
    assert!(short.contains("upstream HTTPRouteRetry lists"), "{short}");
    let order = case("HTTPRouteRetry", "HTTPRouteRetry, HTTPRoute, Gateway", "");
    assert!(order.is_ok(), "{order:?}");
    let provisional = "TCPRouteWeightedRouting";
    assert!(case(provisional, "Gateway, TCPRoute", "").is_err());
    assert!(case(provisional, "Gateway, TCPRoute", "provisional: true\n").is_ok());
}

#[test]
fn every_checked_in_case_file_reads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    let cases = Case::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() > 100, "{} cases", cases.len());
}

#[test]
fn a_condition_check_names_a_real_type_and_the_reason_upstream_requires() {
    let status = |condition: &str| {
        Case::parse(&format!(
            "name: HTTPRouteRetry\nsource: s.go\nfeatures: [Gateway, HTTPRoute, HTTPRouteRetry]\nmanifests: []\nstatus:\n  - route: HTTPRoute infra/r\n    parent: Gateway infra/gw\n    conditions: [{condition}]\n"
        ))
    };
    let typo = status("{type: Acepted, status: true}").unwrap_err();
    assert!(typo.contains("\"Acepted\""), "{typo}");
    let vague = status("{type: Accepted, status: false}").unwrap_err();
    assert!(vague.contains("name the reason"), "{vague}");
    // A True standard condition defaults to its own name as reason, as upstream requires.
    let case = status("{type: ResolvedRefs, status: true}").unwrap();
    let check = &case.status[0].conditions[0];
    assert_eq!(check.expected_reason(), Some("ResolvedRefs"));
    let any = status("{type: Accepted, status: false, anyReason: true}").unwrap();
    assert_eq!(any.status[0].conditions[0].expected_reason(), None);
    assert!(status("{type: Accepted, status: false, reason: X, anyReason: true}").is_err());
}

#[test]
fn every_upstream_test_waypoint_can_run_has_a_case() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    let cases = Case::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let unrun: Vec<&str> = crate::upstream::TESTS
        .iter()
        .filter(|t| t.features.iter().all(|f| crate::features::supported(f)))
        .filter(|t| !cases.iter().any(|c| c.name == t.name))
        .map(|t| t.name)
        .collect();
    assert!(
        unrun.is_empty(),
        "upstream tests of declared features without a case file: {unrun:?}"
    );
}
