//! The upstream TCPRoute and TLSRoute conformance cases (Gateway API v1.6.1), case by case:
//! each test loads the case's manifest with the base manifests, as the suite applies them, and
//! checks the route and listener status the Go test waits for, and where the Go test sends
//! traffic, where a connection goes. The manifests are read from the shared copy of the
//! release (`WAYPOINT_CONFORMANCE_DIR`, else `../shared/conformance/gateway-api-v1.6.1`).

use std::path::PathBuf;

use waypoint_core::config::resources::Gateway;

use super::l4_tests::L4;

fn conformance_dir() -> Option<PathBuf> {
    let root = std::env::var_os("WAYPOINT_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/gateway-api-v1.6.1")
        });
    let dir = root.join("conformance");
    if dir.is_dir() {
        return Some(dir);
    }
    // In CI the manifests must be there: a silent skip would hide a broken setup.
    assert!(
        std::env::var_os("CI").is_none(),
        "no conformance manifests at {} (set WAYPOINT_CONFORMANCE_DIR)",
        dir.display()
    );
    println!("skipping: no conformance manifests at {}", dir.display());
    None
}

/// The base manifests and the case's `tests/<file>`, each Gateway given the address `10.9.0.N`
/// (Nth Gateway) so its listeners are served, plus `extra` documents.
fn case(file: &str, extra: &str) -> Option<L4> {
    let dir = conformance_dir()?;
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let base = read(dir.join("base/manifests.yaml"));
    let test = read(dir.join("tests").join(file));
    let mut gateways = 0;
    let docs: Vec<String> = format!("{base}\n---\n{test}\n---\n{extra}")
        .replace("{GATEWAY_CLASS_NAME}", "waypoint")
        .split("\n---")
        .map(|doc| {
            // The API server stamps every object; the oldest route wins ties.
            let doc = if doc.contains("Route\nmetadata:\n") && !doc.contains("creationTimestamp") {
                doc.replacen(
                    "\nmetadata:\n",
                    "\nmetadata:\n  creationTimestamp: \"2026-01-01T00:00:00Z\"\n",
                    1,
                )
            } else {
                doc.to_owned()
            };
            if doc.contains("\nkind: Gateway\n") && !doc.contains("\nstatus:") {
                gateways += 1;
                format!(
                    "{doc}\nstatus:\n  addresses: [{{type: IPAddress, value: 10.9.0.{gateways}}}]\n"
                )
            } else {
                doc
            }
        })
        .collect();
    Some(L4::new(&docs.join("\n---")))
}

/// The address the Gateway `name` was given by [`case`], with `port`.
fn address(l4: &L4, name: &str, port: u16) -> String {
    let gw: &Gateway = l4
        .harness
        .config()
        .resources
        .gateways
        .iter()
        .find(|g| g.metadata.name == name)
        .unwrap_or_else(|| panic!("no Gateway {name}"));
    format!("{}:{port}", gw.ip_addresses()[0])
}

fn listener_spec<'a>(
    l4: &'a L4,
    gateway: &str,
    listener: &str,
) -> &'a waypoint_core::config::resources::Listener {
    l4.harness
        .config()
        .resources
        .gateways
        .iter()
        .find(|g| g.metadata.name == gateway)
        .and_then(|g| g.spec.listeners.iter().find(|l| l.name == listener))
        .unwrap_or_else(|| panic!("no listener {gateway}/{listener}"))
}

const INFRA: &str = "gateway-conformance-infra";

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
