//! The upstream TCPRoute conformance cases (Gateway API v1.6.1), case by case: each loads the
//! case's manifest with the base manifests and checks the route and listener status the Go test
//! waits for and, where it sends traffic, where a connection goes.

use super::l4_testing::{INFRA, L4, address, case, conformance_dir, listener_spec};

#[tokio::test]
async fn tcp_route_invalid_backend_ref_nonexistent_is_backend_not_found() {
    let Some(l4) = case("tcproute-invalid-backendref-nonexistent.yaml", "") else {
        return;
    };
    let status = l4.parent(
        "tcp-route-invalid-backend-ref-nonexistent",
        "tcp-gateway-invalid-backend",
    );
    assert!(
        status.contains("ResolvedRefs=false/BackendNotFound"),
        "{status}"
    );
}

#[tokio::test]
async fn tcp_route_invalid_cross_namespace_backend_ref_is_accepted_and_ref_not_permitted() {
    let Some(l4) = case("tcproute-invalid-cross-namespace-backend-ref.yaml", "") else {
        return;
    };
    let status = l4.parent(
        "tcp-invalid-cross-namespace-backend-ref",
        "tcp-invalid-cross-namespace-backend-ref-gateway",
    );
    assert_eq!(
        status,
        "Accepted=true/Accepted ResolvedRefs=false/RefNotPermitted"
    );
}

#[tokio::test]
async fn tcp_route_on_an_http_listener_is_not_allowed_by_listeners() {
    let Some(l4) = case("tcproute-invalid-non-tcp-listener.yaml", "") else {
        return;
    };
    let status = l4.parent("tcp-route", "tcp-mixed-protocol-gateway");
    assert!(
        status.starts_with("Accepted=false/NotAllowedByListeners"),
        "{status}"
    );
    assert_eq!(
        l4.listener("tcp-mixed-protocol-gateway", "only-allow-http-routes")
            .0,
        0
    );
}

#[tokio::test]
async fn tcp_routes_on_one_listener_are_all_accepted_and_counted_and_the_oldest_serves() {
    // The Go test creates the newer route itself, a second after the older one is accepted.
    let newer = "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: tcproute-attach-newer, namespace: gateway-conformance-infra, creationTimestamp: \"2099-01-01T00:00:00Z\"}\nspec:\n  parentRefs: [{name: tcp-multi-route-attach-gateway, sectionName: tcp}]\n  rules: [{backendRefs: [{name: tcp-attach-backend-2, port: 3000}]}]\n";
    let Some(l4) = case("tcproute-multiple-routes-attachment.yaml", newer) else {
        return;
    };
    let gw = "tcp-multi-route-attach-gateway";
    for route in ["tcproute-attach-older", "tcproute-attach-newer"] {
        assert!(
            l4.parent(route, gw).starts_with("Accepted=true/Accepted"),
            "{route}"
        );
    }
    let (attached, conditions) = l4.listener(gw, "tcp");
    assert_eq!(attached, 2);
    assert!(
        conditions.contains("Accepted=true/Accepted"),
        "{conditions}"
    );
    assert_eq!(
        listener_spec(&l4, gw, "tcp").supported_route_kinds(),
        ["TCPRoute"]
    );
    let port = listener_spec(&l4, gw, "tcp").port;
    let dest = address(&l4, gw, port);
    let counts = l4.spread(&dest, 100).await;
    assert_eq!(
        counts.get(&format!("{INFRA}/tcp-attach-backend-1")),
        Some(&100),
        "{counts:?}"
    );
}

#[tokio::test]
async fn a_tcp_route_without_section_name_or_port_attaches_to_every_tcp_listener() {
    let Some(l4) = case("tcproute-parentref-attach-all.yaml", "") else {
        return;
    };
    let gw = "tcp-attach-all-gateway";
    assert!(
        l4.parent("tcp-route-attach-all", gw)
            .starts_with("Accepted=true/Accepted")
    );
    for listener in ["one", "two", "three", "four"] {
        assert_eq!(l4.listener(gw, listener).0, 1, "{listener}");
        let dest = address(&l4, gw, listener_spec(&l4, gw, listener).port);
        assert_eq!(
            l4.backend(&dest, None).await,
            format!("{INFRA}/tcp-echo-attach-all")
        );
    }
}

#[tokio::test]
async fn tcp_routes_attach_by_port_by_section_name_and_by_both() {
    let Some(l4) = case("tcproute-parentref-port-and-section-name.yaml", "") else {
        return;
    };
    let gw = "tcp-multi-listener-gateway";
    for (route, listener, backend) in [
        ("tcp-route-by-port", "one", "tcp-echo-one"),
        ("tcp-route-by-section", "two", "tcp-echo-two"),
        ("tcp-route-by-section-and-port", "three", "tcp-echo-three"),
    ] {
        assert!(
            l4.parent(route, gw).starts_with("Accepted=true/Accepted"),
            "{route}"
        );
        let dest = address(&l4, gw, listener_spec(&l4, gw, listener).port);
        assert_eq!(l4.backend(&dest, None).await, format!("{INFRA}/{backend}"));
    }
}

#[tokio::test]
async fn a_reference_grant_lets_a_tcp_route_reach_another_namespace_and_its_removal_does_not() {
    let Some(l4) = case("tcproute-reference-grant.yaml", "") else {
        return;
    };
    let (route, gw) = ("tcp-reference-grant", "tcp-reference-grant-gateway");
    assert_eq!(
        l4.parent(route, gw),
        "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs"
    );
    let dest = address(&l4, gw, listener_spec(&l4, gw, "tcp").port);
    assert_eq!(
        l4.backend(&dest, None).await,
        "gateway-conformance-web-backend/tcp-reference-grant-backend"
    );
    // The Go test then deletes the grant.
    let dir = conformance_dir().unwrap();
    let text = std::fs::read_to_string(dir.join("tests/tcproute-reference-grant.yaml")).unwrap();
    let without: Vec<&str> = text
        .split("\n---")
        .filter(|doc| !doc.contains("kind: ReferenceGrant"))
        .collect();
    let base = std::fs::read_to_string(dir.join("base/manifests.yaml")).unwrap();
    let l4 = L4::new(
        &format!("{base}\n---\n{}", without.join("\n---"))
            .replace("{GATEWAY_CLASS_NAME}", "waypoint"),
    );
    assert_eq!(
        l4.parent(route, gw),
        "Accepted=true/Accepted ResolvedRefs=false/RefNotPermitted"
    );
}

#[tokio::test]
async fn tcp_weighted_routing_follows_the_weights_and_weight_zero_gets_nothing() {
    let Some(l4) = case("tcproute-weighted-routing.yaml", "") else {
        return;
    };
    let gw = "tcp-weighted-gateway";
    assert!(
        l4.parent("tcp-weighted-route", gw)
            .starts_with("Accepted=true/Accepted")
    );
    let dest = address(&l4, gw, listener_spec(&l4, gw, "tcp").port);
    let counts = l4.spread(&dest, 1000).await;
    let v1 = counts
        .get(&format!("{INFRA}/tcp-backend-v1"))
        .copied()
        .unwrap_or(0);
    let v2 = counts
        .get(&format!("{INFRA}/tcp-backend-v2"))
        .copied()
        .unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "{counts:?}");
    assert!((628..=772).contains(&v1), "{counts:?}");
}
