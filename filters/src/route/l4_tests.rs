//! TCPRoute and TLSRoute routing through the connection phase: manifests in, a connection to
//! a Service or Gateway address with (or without) an SNI, the upstream chosen or the close.

use waypoint_core::config::PortProtocol;
use waypoint_core::filter::ConnectionDecision;

use super::l4_testing::L4;
const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: apps}
spec: {clusterIP: 10.96.0.1, ports: [{name: tcp-db, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: db-v1, namespace: apps}
spec: {clusterIP: 10.96.0.2, ports: [{name: tcp-db, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: db-v2, namespace: apps}
spec: {clusterIP: 10.96.0.3, ports: [{name: tcp-db, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec: {clusterIP: 10.96.0.4, ports: [{name: tls, port: 443}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-a, namespace: apps}
spec: {clusterIP: 10.96.0.5, ports: [{name: tls, port: 443}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-b, namespace: apps}
spec: {clusterIP: 10.96.0.6, ports: [{name: tls, port: 443}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-c, namespace: apps}
spec: {clusterIP: 10.96.0.7, ports: [{name: tls, port: 443}]}
"#;

fn tcp_route(name: &str, parents: &str, backends: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  parentRefs: {parents}\n  rules: [{{backendRefs: {backends}}}]\n"
    )
}

fn tls_route(name: &str, parents: &str, hostnames: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  parentRefs: {parents}\n  hostnames: {hostnames}\n  rules: [{{backendRefs: [{{name: {backend}, port: 443}}]}}]\n"
    )
}

fn with(parts: &[String]) -> String {
    format!("{SERVICES}---\n{}", parts.join("\n---\n"))
}

const DB_PARENT: &str = r#"[{group: "", kind: Service, name: db, port: 5432}]"#;
const WEB_PARENT: &str = r#"[{group: "", kind: Service, name: web, port: 443}]"#;

#[tokio::test]
async fn a_tcp_route_on_a_service_splits_connections_by_weight_and_weight_zero_gets_none() {
    let l4 = L4::new(&with(&[tcp_route(
        "split",
        DB_PARENT,
        "[{name: db-v1, port: 5432, weight: 70}, {name: db-v2, port: 5432, weight: 30}, {name: db, port: 5432, weight: 0}]",
    )]));
    assert_eq!(
        l4.parent("split", "db"),
        "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs"
    );
    let counts = l4.spread("10.96.0.1:5432", 1000).await;
    let v1 = counts.get("apps/db-v1").copied().unwrap_or(0);
    let v2 = counts.get("apps/db-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "only the weighted backends: {counts:?}");
    // 700 expected; 5 standard deviations (sqrt(1000 * 0.7 * 0.3) ≈ 14.5) either way.
    assert!((628..=772).contains(&v1), "{counts:?}");
}

#[tokio::test]
async fn the_chosen_rule_is_recorded_on_the_connection() {
    let l4 = L4::new(&with(&[tcp_route(
        "one",
        DB_PARENT,
        "[{name: db-v1, port: 5432}]",
    )]));
    let (decision, ctx) = l4.connect("10.96.0.1:5432", PortProtocol::Tcp, None).await;
    assert_eq!(decision, ConnectionDecision::Continue);
    let route = ctx.route.expect("the route rule");
    assert_eq!(route.route.to_string(), "TCPRoute apps/one");
    assert_eq!(route.rule, 0);
}

#[tokio::test]
async fn a_service_without_an_l4_route_is_its_own_upstream_and_http_routes_do_not_count() {
    let http_only = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h, namespace: apps}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: db, port: 5432}]\n  rules: [{backendRefs: [{name: db-v2, port: 5432}]}]\n".to_owned();
    let l4 = L4::new(&with(&[http_only]));
    assert_eq!(l4.backend("10.96.0.1:5432", None).await, "apps/db");
    let (_, ctx) = l4.connect("10.96.0.1:5432", PortProtocol::Tcp, None).await;
    assert!(ctx.route.is_none());
}

#[tokio::test]
async fn http_requests_to_a_service_with_only_a_tcp_route_still_go_to_the_service() {
    let g = super::gateway_tests::gw(&with(&[tcp_route(
        "t",
        DB_PARENT,
        "[{name: db-v1, port: 5432}]",
    )]));
    assert_eq!(g.get("10.96.0.1:5432", "db", "/").await, "db");
}

#[tokio::test]
async fn tls_routes_on_a_service_pick_by_sni_exact_then_longest_wildcard() {
    let l4 = L4::new(&with(&[
        tls_route("exact", WEB_PARENT, "[a.example.com]", "web-a"),
        tls_route("wide", WEB_PARENT, "[\"*.example.com\"]", "web-b"),
        tls_route("narrow", WEB_PARENT, "[\"*.b.example.com\"]", "web-c"),
    ]));
    let web = "10.96.0.4:443";
    assert_eq!(l4.backend(web, Some("a.example.com")).await, "apps/web-a");
    assert_eq!(l4.backend(web, Some("A.Example.COM.")).await, "apps/web-a");
    assert_eq!(l4.backend(web, Some("x.example.com")).await, "apps/web-b");
    assert_eq!(l4.backend(web, Some("x.b.example.com")).await, "apps/web-c");
    // A wildcard needs one more label.
    assert_eq!(l4.backend(web, Some("example.com")).await, "closed NR");
    assert_eq!(l4.backend(web, Some("other.org")).await, "closed NR");
}

#[tokio::test]
async fn a_tls_connection_without_sni_to_a_service_with_tls_routes_is_closed_no_route() {
    let l4 = L4::new(&with(&[tls_route(
        "exact",
        WEB_PARENT,
        "[a.example.com]",
        "web-a",
    )]));
    let (decision, ctx) = l4.connect("10.96.0.4:443", PortProtocol::Tls, None).await;
    let ConnectionDecision::Close(why) = decision else {
        panic!("not closed");
    };
    assert!(why.contains("without server name"), "{why}");
    assert_eq!(ctx.response_flags.len(), 1);
    assert_eq!(ctx.response_flags[0].as_str(), "NR");
}

#[tokio::test]
async fn sni_selects_nothing_on_a_connection_carried_as_tcp_so_the_tcp_route_takes_it() {
    let l4 = L4::new(&with(&[
        tls_route("exact", WEB_PARENT, "[a.example.com]", "web-a"),
        tcp_route("fallback", WEB_PARENT, "[{name: web-c, port: 443}]"),
    ]));
    let (decision, ctx) = l4
        .connect("10.96.0.4:443", PortProtocol::Tcp, Some("a.example.com"))
        .await;
    assert_eq!(decision, ConnectionDecision::Continue);
    assert_eq!(ctx.upstream.unwrap().backend.service.name, "web-c");
    // Carried as TLS, the TLSRoute's hostname wins; an unknown name falls to the TCPRoute.
    assert_eq!(
        l4.backend("10.96.0.4:443", Some("a.example.com")).await,
        "apps/web-a"
    );
    assert_eq!(
        l4.backend("10.96.0.4:443", Some("b.example.com")).await,
        "apps/web-c"
    );
}

#[tokio::test]
async fn a_backend_that_does_not_resolve_closes_its_share_of_connections() {
    let l4 = L4::new(&with(&[tcp_route(
        "half",
        DB_PARENT,
        "[{name: db-v1, port: 5432}, {name: missing, port: 5432}]",
    )]));
    assert_eq!(
        l4.parent("half", "db"),
        "Accepted=true/Accepted ResolvedRefs=false/BackendNotFound"
    );
    let counts = l4.spread("10.96.0.1:5432", 400).await;
    let closed = counts.get("closed NC").copied().unwrap_or(0);
    let served = counts.get("apps/db-v1").copied().unwrap_or(0);
    assert_eq!(closed + served, 400, "{counts:?}");
    assert!((140..=260).contains(&closed), "{counts:?}");
}

#[tokio::test]
async fn a_rule_whose_backends_all_weigh_zero_closes_every_connection() {
    let l4 = L4::new(&with(&[tcp_route(
        "zero",
        DB_PARENT,
        "[{name: db-v1, port: 5432, weight: 0}]",
    )]));
    let (decision, ctx) = l4.connect("10.96.0.1:5432", PortProtocol::Tcp, None).await;
    let ConnectionDecision::Close(why) = decision else {
        panic!("not closed");
    };
    assert!(why.contains("no backend with weight"), "{why}");
    assert_eq!(ctx.response_flags[0].as_str(), "NC");
}

#[tokio::test]
async fn a_connection_to_an_unknown_address_is_closed_no_route() {
    let l4 = L4::new(SERVICES);
    assert_eq!(l4.backend("10.1.2.3:5432", None).await, "closed NR");
}

const GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: apps}
spec:
  gatewayClassName: waypoint
  listeners:
  - {name: tcp, port: 5432, protocol: TCP}
  - {name: tls-a, port: 443, protocol: TLS, hostname: "*.a.example.com", tls: {mode: Passthrough}}
  - {name: tls-any, port: 443, protocol: TLS, tls: {mode: Passthrough}}
status:
  addresses: [{type: IPAddress, value: 10.0.0.9}]
"#;

#[tokio::test]
async fn a_gateway_tcp_listener_routes_to_its_tcp_route() {
    let l4 = L4::new(&with(&[
        GATEWAY.to_owned(),
        tcp_route(
            "gw-tcp",
            "[{name: edge, sectionName: tcp}]",
            "[{name: db-v2, port: 5432}]",
        ),
    ]));
    assert_eq!(
        l4.parent("gw-tcp", "edge"),
        "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs"
    );
    assert_eq!(l4.listener("edge", "tcp").0, 1);
    assert_eq!(l4.backend("10.0.0.9:5432", None).await, "apps/db-v2");
    // The Service parent and the Gateway parent are separate tables.
    assert_eq!(l4.backend("10.96.0.1:5432", None).await, "apps/db");
}

#[tokio::test]
async fn gateway_tls_listeners_are_chosen_by_sni_then_their_routes_by_effective_hostname() {
    let l4 = L4::new(&with(&[
        GATEWAY.to_owned(),
        // Attaches to both TLS listeners: on tls-a only x.a.example.com is left.
        tls_route(
            "both",
            "[{name: edge}]",
            "[x.a.example.com, y.example.org]",
            "web-a",
        ),
        tls_route(
            "wild",
            "[{name: edge, sectionName: tls-a}]",
            "[\"*.a.example.com\"]",
            "web-b",
        ),
    ]));
    assert_eq!(l4.listener("edge", "tls-a").0, 2);
    assert_eq!(l4.listener("edge", "tls-any").0, 1);
    let gw = "10.0.0.9:443";
    assert_eq!(l4.backend(gw, Some("x.a.example.com")).await, "apps/web-a");
    assert_eq!(l4.backend(gw, Some("z.a.example.com")).await, "apps/web-b");
    // tls-any takes the rest: y.example.org is served there, other names are not.
    assert_eq!(l4.backend(gw, Some("y.example.org")).await, "apps/web-a");
    assert_eq!(l4.backend(gw, Some("nope.example.org")).await, "closed NR");
    assert_eq!(l4.backend(gw, None).await, "closed NR");
}

#[tokio::test]
async fn the_oldest_of_several_tcp_routes_on_a_listener_takes_every_connection() {
    let route = |name: &str, created: &str, backend: &str| {
        tcp_route(
            name,
            "[{name: edge, sectionName: tcp}]",
            &format!("[{{name: {backend}, port: 5432}}]"),
        )
        .replace(
            &format!("name: {name}, namespace: apps"),
            &format!("name: {name}, namespace: apps, creationTimestamp: \"{created}\""),
        )
    };
    let l4 = L4::new(&with(&[
        GATEWAY.to_owned(),
        route("newer", "2026-01-02T00:00:00Z", "db-v2"),
        route("older", "2026-01-01T00:00:00Z", "db-v1"),
    ]));
    assert!(
        l4.parent("newer", "edge")
            .starts_with("Accepted=true/Accepted")
    );
    assert!(
        l4.parent("older", "edge")
            .starts_with("Accepted=true/Accepted")
    );
    assert_eq!(l4.listener("edge", "tcp").0, 2);
    let counts = l4.spread("10.0.0.9:5432", 50).await;
    assert_eq!(counts.get("apps/db-v1"), Some(&50), "{counts:?}");
}

#[tokio::test]
async fn a_pod_addressed_directly_is_its_own_upstream_whatever_routes_its_service_has() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: mesh, labels: {istio.io/waypoint-for: all}}\nspec:\n  gatewayClassName: wpc\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: mesh, labels: {istio.io/use-waypoint: wp}}\nspec: {serviceAccountName: p-sa}\nstatus: {podIP: 10.1.0.5}\n";
    let harness = super::gateway_tests::named_gateway_chain(text, "mesh", "wp");
    let l4 = L4 { harness };
    let (decision, ctx) = l4.connect("10.1.0.5:5432", PortProtocol::Tcp, None).await;
    assert_eq!(decision, ConnectionDecision::Continue);
    let upstream = ctx.upstream.expect("the pod");
    let addrs: Vec<String> = upstream
        .backend
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addrs, ["10.1.0.5:5432"]);
    assert!(ctx.route.is_none());
}

#[tokio::test]
async fn a_tcp_listener_ignores_its_hostname_and_takes_every_connection_at_its_port() {
    let gateway = GATEWAY.replace(
        "{name: tcp, port: 5432, protocol: TCP}",
        "{name: tcp, port: 5432, protocol: TCP, hostname: db.example.com}",
    );
    let l4 = L4::new(&with(&[
        gateway,
        tcp_route(
            "gw-tcp",
            "[{name: edge, sectionName: tcp}]",
            "[{name: db-v2, port: 5432}]",
        ),
    ]));
    assert_eq!(l4.backend("10.0.0.9:5432", None).await, "apps/db-v2");
}
