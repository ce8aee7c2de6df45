//! The upstream TLSRoute conformance cases (Gateway API v1.6.1, passthrough only: the
//! Terminate and Mixed cases need features we do not claim), and HTTPRouteDisallowedKind,
//! case by case, as in `tcp_conformance_tests`.

use super::l4_testing::{INFRA, address, case, listener_spec};

#[tokio::test]
async fn tls_route_hostnames_intersect_listener_hostnames_and_sni_picks_the_backend() {
    let Some(l4) = case("tlsroute-hostname-intersection.yaml", "") else {
        return;
    };
    for (gw, routes, unmatched) in [
        (
            "gw-tlsroute-more-specific-wc-hostname-x-2",
            [
                "tlsroute-exact-hostname-x-2",
                "tlsroute-less-specific-wc-hostname-x-2",
            ],
            "non.matching.com",
        ),
        (
            "gw-tlsroute-less-specific-wc-hostname-x-3",
            [
                "tlsroute-exact-hostname-x-3",
                "tlsroute-more-specific-wc-hostname-x-3",
            ],
            "non.matching.com",
        ),
        (
            "gw-tlsroute-empty-hostname-x-4",
            [
                "tlsroute-exact-hostname-x-4",
                "tlsroute-less-specific-wc-hostname-x-4",
            ],
            "non.matching.org",
        ),
    ] {
        for route in routes {
            assert_eq!(
                l4.parent(route, gw),
                "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs",
                "{route}"
            );
        }
        let dest = address(&l4, gw, 443);
        assert_eq!(
            l4.backend(&dest, Some("abc.example.com")).await,
            format!("{INFRA}/tls-backend"),
            "{gw}"
        );
        assert_eq!(
            l4.backend(&dest, Some("other.example.com")).await,
            format!("{INFRA}/tls-backend-2"),
            "{gw}"
        );
        assert_eq!(
            l4.backend(&dest, Some(unmatched)).await,
            "closed NR",
            "{gw}"
        );
    }
}

#[tokio::test]
async fn tls_route_backend_problems_are_reported_and_their_connections_closed() {
    for (file, route, gw, reason) in [
        (
            "tlsroute-invalid-backendref-nonexistent.yaml",
            "invalid-backend-ref-nonexistent",
            "gateway-tlsroute-invalid-backend-ref-nonexistent",
            "BackendNotFound",
        ),
        (
            "tlsroute-invalid-backendref-unknown-kind.yaml",
            "invalid-backend-ref-unknown-kind",
            "gateway-tlsroute-invalid-backend-ref-unknown-kind",
            "InvalidKind",
        ),
    ] {
        let Some(l4) = case(file, "") else {
            return;
        };
        assert_eq!(
            l4.parent(route, gw),
            format!("Accepted=true/Accepted ResolvedRefs=false/{reason}")
        );
        let hostname = &l4
            .harness
            .config()
            .resources
            .tls_routes
            .iter()
            .find(|r| r.metadata.name == route)
            .unwrap()
            .spec
            .hostnames[0];
        let dest = address(&l4, gw, listener_spec(&l4, gw, "tls").port);
        assert_eq!(
            l4.backend(&dest, Some(hostname)).await,
            "closed NC",
            "{file}"
        );
    }
}

#[tokio::test]
async fn tls_routes_whose_hostnames_miss_the_listener_are_not_accepted_nor_counted() {
    let Some(l4) = case("tlsroute-invalid-no-matching-listener-hostname.yaml", "") else {
        return;
    };
    for (route, gw) in [
        ("tlsroute-hostname-mismatch-1", "gateway-tls-exact-hostname"),
        (
            "tlsroute-hostname-mismatch-2",
            "gateway-tls-wildcard-hostname",
        ),
    ] {
        assert!(
            l4.parent(route, gw)
                .starts_with("Accepted=false/NoMatchingListenerHostname"),
            "{route}"
        );
        let g = l4
            .harness
            .output()
            .gateways
            .iter()
            .find(|g| g.gateway.name == gw)
            .unwrap();
        assert!(g.listeners.iter().all(|l| l.attached_routes == 0), "{gw}");
    }
}

#[tokio::test]
async fn tls_routes_on_http_or_https_listeners_or_a_missing_section_are_refused() {
    let Some(l4) = case("tlsroute-invalid-no-matching-listener.yaml", "") else {
        return;
    };
    for (route, gw, reason) in [
        (
            "tlsroute-not-allowed-protocol-http",
            "gateway-tlsroute-http-only",
            "NotAllowedByListeners",
        ),
        (
            "tlsroute-not-allowed-protocol-https",
            "gateway-tlsroute-https-only",
            "NotAllowedByListeners",
        ),
        (
            "tlsroute-no-matching-section-name",
            "gateway-tlsroute-tls-passthrough-only",
            "NoMatchingParent",
        ),
    ] {
        let status = l4.parent(route, gw);
        assert!(
            status.starts_with(&format!("Accepted=false/{reason}")),
            "{route}: {status}"
        );
        let g = l4
            .harness
            .output()
            .gateways
            .iter()
            .find(|g| g.gateway.name == gw)
            .unwrap();
        assert!(g.listeners.iter().all(|l| l.attached_routes == 0), "{gw}");
    }
}

#[tokio::test]
async fn a_tls_route_backend_in_another_namespace_without_a_grant_is_ref_not_permitted() {
    let Some(l4) = case("tlsroute-invalid-reference-grant.yaml", "") else {
        return;
    };
    let status = l4.parent(
        "gateway-conformance-infra-test",
        "gateway-tlsroute-referencegrant",
    );
    assert_eq!(
        status,
        "Accepted=true/Accepted ResolvedRefs=false/RefNotPermitted"
    );
}

#[tokio::test]
async fn a_passthrough_listener_supports_tls_route_and_names_tcp_route_an_invalid_kind() {
    let Some(l4) = case("tlsroute-listener-passthrough-supported-kinds.yaml", "") else {
        return;
    };
    let gw = "gateway-tlsroute-passthrough-supported-kind";
    let (attached, conditions) = l4.listener(gw, "tls-passthrough");
    assert_eq!(attached, 0);
    assert!(
        conditions.contains("ResolvedRefs=false/InvalidRouteKinds"),
        "{conditions}"
    );
    assert_eq!(
        listener_spec(&l4, gw, "tls-passthrough").supported_route_kinds(),
        ["TLSRoute"]
    );
}

#[tokio::test]
async fn a_terminating_tls_listener_is_not_accepted_and_supports_no_kind() {
    let Some(l4) = case("tlsroute-listener-terminate-not-supported.yaml", "") else {
        return;
    };
    let gw = "gateway-tlsroute-terminate-unsupported";
    let (attached, conditions) = l4.listener(gw, "tls-terminate");
    assert_eq!(attached, 0);
    assert!(
        conditions.contains("Accepted=false/UnsupportedValue"),
        "{conditions}"
    );
    assert!(
        listener_spec(&l4, gw, "tls-terminate")
            .supported_route_kinds()
            .is_empty()
    );
}

#[tokio::test]
async fn a_tls_route_in_the_gateways_namespace_passes_tls_through_by_sni() {
    let Some(l4) = case("tlsroute-simple-same-namespace.yaml", "") else {
        return;
    };
    let gw = "gateway-tlsroute";
    let route = "gateway-conformance-infra-test";
    assert_eq!(
        l4.parent(route, gw),
        "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs"
    );
    let hostname = l4.harness.config().resources.tls_routes[0].spec.hostnames[0].clone();
    let dest = address(&l4, gw, listener_spec(&l4, gw, "https").port);
    assert_eq!(
        l4.backend(&dest, Some(&hostname)).await,
        format!("{INFRA}/tcp-backend")
    );
}

#[tokio::test]
async fn an_http_route_on_a_tls_only_listener_is_not_allowed_by_listeners() {
    let Some(l4) = case("httproute-disallowed-kind.yaml", "") else {
        return;
    };
    let status = l4.parent("disallowed-kind", "tlsroutes-only");
    assert!(
        status.starts_with("Accepted=false/NotAllowedByListeners"),
        "{status}"
    );
    assert_eq!(l4.listener("tlsroutes-only", "tls").0, 0);
}
