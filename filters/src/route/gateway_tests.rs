//! Gateway parents and GRPCRoute, in memory: manifests, a request to a Gateway address with a
//! Host header, the chosen upstream, and the per-parent / Gateway status reported.

use std::sync::Arc;

use http::StatusCode;
use waypoint_core::body;
use waypoint_core::config::Config;
use waypoint_core::conn::TlsInfo;
use waypoint_core::filter::BuildOutput;
use waypoint_core::filter::testing::{TestChain, conn};

use super::RouteFactory;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: web, labels: {team: web}}
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: infra}
spec: {clusterIP: 10.96.1.1, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: infra}
spec: {clusterIP: 10.96.1.2, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v3, namespace: infra}
spec: {clusterIP: 10.96.1.3, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: w1, namespace: web}
spec: {clusterIP: 10.96.2.1, ports: [{name: http, port: 8080}]}
"#;

pub(super) struct Gw {
    pub(super) config: Arc<Config>,
    harness: TestChain,
}

/// The routing factory over `text` as a waypoint run with `--gateway namespace/name`.
pub(super) fn named_gateway_chain(text: &str, namespace: &str, name: &str) -> TestChain {
    use waypoint_core::config::build::{EndpointStatsCache, MeshOptions};
    use waypoint_core::config::load::parse_manifests_with;
    let cache = EndpointStatsCache::with_mesh(MeshOptions {
        gateway: Some((namespace.into(), name.into())),
        ..Default::default()
    });
    let config = parse_manifests_with(text, "test.yaml", &cache).expect("manifests parse");
    TestChain::from_config(config, |filters: &mut waypoint_core::filter::FilterSet| {
        filters.factory(RouteFactory);
    })
}

pub(super) fn gw(manifests: &str) -> Gw {
    let harness = TestChain::new(
        &format!("{BASE}\n---\n{manifests}"),
        |filters: &mut waypoint_core::filter::FilterSet| {
            filters.factory(RouteFactory);
        },
    )
    .expect("manifests parse");
    Gw {
        config: harness.config().clone(),
        harness,
    }
}

impl Gw {
    /// Everything the routing factory reported.
    pub(super) fn out(&self) -> &BuildOutput {
        self.harness.output()
    }

    async fn send(&self, dest: &str, req: http::request::Builder) -> (Option<StatusCode>, String) {
        self.send_on(dest, None, req).await.0
    }

    /// Sends on a connection to `dest`, TLS-terminated when `tls` is given; also returns the
    /// `Location` header, when there is one.
    pub(super) async fn send_on(
        &self,
        dest: &str,
        tls: Option<TlsInfo>,
        req: http::request::Builder,
    ) -> ((Option<StatusCode>, String), Option<String>) {
        let mut conn = conn(dest);
        conn.tls = tls;
        let exchange = self
            .harness
            .send(conn, req.body(body::empty()).unwrap())
            .await;
        match exchange.response {
            Some(resp) => {
                let grpc = resp
                    .headers()
                    .get("grpc-status")
                    .map(|v| format!("grpc-status {}", v.to_str().unwrap()));
                let location = resp
                    .headers()
                    .get("location")
                    .map(|v| v.to_str().unwrap().to_owned());
                ((Some(resp.status()), grpc.unwrap_or_default()), location)
            }
            None => {
                let u = exchange.ctx.upstream.expect("an upstream");
                ((None, u.backend.service.name.clone()), None)
            }
        }
    }

    /// The backend name, or the status code as a string.
    pub(super) async fn get(&self, dest: &str, host: &str, path: &str) -> String {
        match self
            .send(dest, http::Request::get(path).header("host", host))
            .await
        {
            (None, name) => name,
            (Some(status), _) => status.as_u16().to_string(),
        }
    }

    /// `Accepted/<reason> ResolvedRefs/<reason>` of `route` for its parent `gateway`.
    fn parent(&self, route: &str, gateway: &str) -> String {
        let p = self
            .out()
            .route_parents
            .iter()
            .find(|p| p.route.name == route && p.parent.name == gateway)
            .unwrap_or_else(|| {
                panic!(
                    "no status of {route} for {gateway}: {:?}",
                    self.out().route_parents
                )
            });
        p.conditions
            .iter()
            .map(|c| format!("{}={}/{}", c.kind, c.status, c.reason))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn attached(&self, gateway: &str, listener: &str) -> u32 {
        let g = self
            .out()
            .gateways
            .iter()
            .find(|g| g.gateway.name == gateway)
            .unwrap();
        g.listeners
            .iter()
            .find(|l| l.name == listener)
            .unwrap()
            .attached_routes
    }
}

pub(super) fn gateway(name: &str, ip: &str, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  gatewayClassName: waypoint\n  listeners:\n{listeners}\nstatus:\n  addresses: [{{type: IPAddress, value: \"{ip}\"}}]\n"
    )
}

pub(super) fn http_route(
    name: &str,
    ns: &str,
    parents: &str,
    hostnames: &str,
    rules: &str,
) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: {parents}\n  hostnames: {hostnames}\n  rules:\n{rules}"
    )
}

pub(super) fn to(backend: &str) -> String {
    format!("  - backendRefs: [{{name: {backend}, port: 8080}}]\n")
}

pub(super) fn docs(parts: &[String]) -> String {
    parts.join("\n---\n")
}

#[tokio::test]
async fn listener_chosen_by_host_exact_then_longest_wildcard() {
    let listeners = "  - {name: l1, port: 80, protocol: HTTP, hostname: bar.com}\n  - {name: l2, port: 80, protocol: HTTP, hostname: foo.bar.com}\n  - {name: l3, port: 80, protocol: HTTP, hostname: \"*.bar.com\"}\n  - {name: l4, port: 80, protocol: HTTP, hostname: \"*.foo.com\"}\n";
    let g = gw(&docs(&[
        gateway("hm", "10.0.0.1", listeners),
        http_route(
            "r1",
            "infra",
            "[{name: hm, sectionName: l1}]",
            "[]",
            &to("v1"),
        ),
        http_route(
            "r2",
            "infra",
            "[{name: hm, sectionName: l2}]",
            "[]",
            &to("v2"),
        ),
        http_route(
            "r3",
            "infra",
            "[{name: hm, sectionName: l3}, {name: hm, sectionName: l4}]",
            "[]",
            &to("v3"),
        ),
    ]));
    let d = "10.0.0.1:80";
    assert_eq!(g.get(d, "bar.com", "/").await, "v1");
    assert_eq!(g.get(d, "foo.bar.com", "/").await, "v2");
    assert_eq!(g.get(d, "baz.bar.com", "/").await, "v3");
    assert_eq!(g.get(d, "multiple.prefixes.foo.com:8080", "/").await, "v3");
    assert_eq!(g.get(d, "foo.com", "/").await, "404");
    assert_eq!(g.get(d, "no.matching.host", "/").await, "404");
    // Another port of the same address is not a listener.
    assert_eq!(g.get("10.0.0.1:8080", "bar.com", "/").await, "404");
    assert_eq!(
        g.parent("r3", "hm"),
        "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs"
    );
    assert_eq!((g.attached("hm", "l3"), g.attached("hm", "l4")), (1, 1));
    // Service destinations keep working beside Gateways.
    assert_eq!(g.get("10.96.1.2:8080", "anything", "/").await, "v2");
}

#[tokio::test]
async fn hostname_intersection_and_no_matching_listener_hostname() {
    let listeners = "  - {name: l1, port: 80, protocol: HTTP, hostname: very.specific.com}\n  - {name: l2, port: 80, protocol: HTTP, hostname: \"*.wildcard.io\"}\n";
    let rule = |path: &str, b: &str| {
        format!(
            "  - matches: [{{path: {{value: {path}}}}}]\n    backendRefs: [{{name: {b}, port: 8080}}]\n"
        )
    };
    let g = gw(&docs(&[
        gateway("hi", "10.0.0.2", listeners),
        http_route(
            "specific",
            "infra",
            "[{name: hi}]",
            "[non.matching.com, very.specific.com]",
            &rule("/s1", "v1"),
        ),
        http_route(
            "wild-route",
            "infra",
            "[{name: hi}]",
            "[\"*.specific.com\"]",
            &rule("/s3", "v3"),
        ),
        http_route(
            "in-wild",
            "infra",
            "[{name: hi}]",
            "[wildcard.io, foo.wildcard.io]",
            &rule("/s2", "v2"),
        ),
        http_route(
            "none",
            "infra",
            "[{name: hi}]",
            "[specific.but.wrong.com, wildcard.io]",
            &rule("/s5", "v2"),
        ),
    ]));
    let d = "10.0.0.2:80";
    assert_eq!(g.get(d, "very.specific.com:1234", "/s1").await, "v1");
    assert_eq!(g.get(d, "very.specific.com", "/s3").await, "v3");
    assert_eq!(g.get(d, "non.matching.com", "/s1").await, "404");
    assert_eq!(g.get(d, "foo.wildcard.io", "/s1").await, "404");
    assert_eq!(g.get(d, "foo.wildcard.io", "/s2").await, "v2");
    assert_eq!(g.get(d, "wildcard.io", "/s2").await, "404");
    assert_eq!(g.get(d, "foo.specific.com", "/s3").await, "404");
    assert_eq!(
        g.parent("none", "hi"),
        "Accepted=false/NoMatchingListenerHostname ResolvedRefs=true/ResolvedRefs"
    );
    assert_eq!((g.attached("hi", "l1"), g.attached("hi", "l2")), (2, 1));
}

#[tokio::test]
async fn more_specific_route_hostname_wins_then_precedence_across_routes() {
    let listeners = "  - {name: http, port: 80, protocol: HTTP}\n";
    let g = gw(&docs(&[
        gateway("p", "10.0.0.3", listeners),
        http_route("any", "infra", "[{name: p}]", "[]", &to("v1")),
        http_route(
            "wild",
            "infra",
            "[{name: p}]",
            "[\"*.example.com\"]",
            &to("v2"),
        ),
        http_route(
            "exact",
            "infra",
            "[{name: p}]",
            "[a.example.com]",
            "  - matches: [{path: {value: /x}}]\n    backendRefs: [{name: v3, port: 8080}]\n",
        ),
        http_route(
            "exact-long",
            "infra",
            "[{name: p}]",
            "[a.example.com]",
            "  - matches: [{path: {value: /x/y}}]\n    backendRefs: [{name: v1, port: 8080}]\n",
        ),
    ]));
    let d = "10.0.0.3:80";
    assert_eq!(g.get(d, "other.org", "/").await, "v1");
    assert_eq!(g.get(d, "b.example.com", "/").await, "v2");
    assert_eq!(g.get(d, "a.example.com", "/x").await, "v3");
    // Longest prefix across the two routes of that hostname.
    assert_eq!(g.get(d, "a.example.com", "/x/y/z").await, "v1");
    // The most specific hostname decides: no fall back to less specific routes.
    assert_eq!(g.get(d, "a.example.com", "/other").await, "404");
}

#[tokio::test]
async fn section_name_and_port_select_listeners() {
    let listeners =
        "  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 8080, protocol: HTTP}\n";
    let g = gw(&docs(&[
        gateway("sp", "10.0.0.4", listeners),
        http_route(
            "by-port",
            "infra",
            "[{name: sp, port: 8080}]",
            "[]",
            &to("v2"),
        ),
        http_route(
            "by-name",
            "infra",
            "[{name: sp, sectionName: a}]",
            "[]",
            &to("v1"),
        ),
        http_route(
            "bad-port",
            "infra",
            "[{name: sp, port: 81}]",
            "[]",
            &to("v1"),
        ),
        http_route(
            "bad-name",
            "infra",
            "[{name: sp, sectionName: zz}]",
            "[]",
            &to("v1"),
        ),
        http_route(
            "name-not-port",
            "infra",
            "[{name: sp, sectionName: a, port: 8080}]",
            "[]",
            &to("v1"),
        ),
        http_route("other-gw", "infra", "[{name: not-ours}]", "[]", &to("v1")),
    ]));
    assert_eq!(g.get("10.0.0.4:8080", "x", "/").await, "v2");
    assert_eq!(g.get("10.0.0.4:80", "x", "/").await, "v1");
    for r in ["bad-port", "bad-name", "name-not-port"] {
        assert_eq!(
            g.parent(r, "sp"),
            "Accepted=false/NoMatchingParent ResolvedRefs=true/ResolvedRefs",
            "{r}"
        );
    }
    assert!(
        g.out()
            .route_parents
            .iter()
            .all(|p| p.route.name != "other-gw")
    );
    assert_eq!((g.attached("sp", "a"), g.attached("sp", "b")), (1, 1));
}

#[tokio::test]
async fn allowed_routes_namespaces_and_kinds() {
    let listeners = "  - {name: same, port: 80, protocol: HTTP}\n  - name: all\n    port: 81\n    protocol: HTTP\n    allowedRoutes: {namespaces: {from: All}}\n  - name: sel\n    port: 82\n    protocol: HTTP\n    allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: team, operator: In, values: [web]}]}}}\n  - name: tls-only\n    port: 83\n    protocol: HTTP\n    allowedRoutes: {kinds: [{kind: TLSRoute}]}\n";
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: infra}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\n  to: [{group: \"\", kind: Service}]\n".to_owned();
    let g = gw(&docs(&[
        gateway("ar", "10.0.0.5", listeners),
        grant,
        http_route(
            "web-same",
            "web",
            "[{name: ar, namespace: infra, sectionName: same}]",
            "[]",
            &to("w1"),
        ),
        http_route(
            "web-all",
            "web",
            "[{name: ar, namespace: infra, sectionName: all}]",
            "[]",
            &to("w1"),
        ),
        http_route(
            "web-sel",
            "web",
            "[{name: ar, namespace: infra, sectionName: sel}]",
            "[]",
            &to("w1"),
        ),
        http_route(
            "infra-sel",
            "infra",
            "[{name: ar, sectionName: sel}]",
            "[]",
            &to("v1"),
        ),
        http_route(
            "kind",
            "infra",
            "[{name: ar, sectionName: tls-only}]",
            "[]",
            &to("v1"),
        ),
    ]));
    let ok = "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs";
    let not_allowed = "Accepted=false/NotAllowedByListeners ResolvedRefs=true/ResolvedRefs";
    assert_eq!(g.parent("web-same", "ar"), not_allowed);
    assert_eq!(g.parent("web-all", "ar"), ok);
    assert_eq!(g.parent("web-sel", "ar"), ok);
    assert_eq!(g.parent("infra-sel", "ar"), not_allowed);
    assert_eq!(g.parent("kind", "ar"), not_allowed);
    assert_eq!(g.get("10.0.0.5:81", "x", "/").await, "w1");
    assert_eq!(g.get("10.0.0.5:82", "x", "/").await, "w1");
    assert_eq!(g.get("10.0.0.5:80", "x", "/").await, "404");
    assert_eq!(g.attached("ar", "same"), 0);
    let tls = g.out().gateways[0]
        .listeners
        .iter()
        .find(|l| l.name == "tls-only")
        .unwrap();
    assert_eq!(tls.conditions[1].reason, "InvalidRouteKinds");
}

#[tokio::test]
async fn backend_problems_are_resolved_refs_per_parent() {
    let listeners = "  - {name: http, port: 80, protocol: HTTP}\n";
    let rules = "  - matches: [{path: {value: /v2}}]\n    backendRefs: [{name: w1, namespace: web, port: 8080}]\n  - backendRefs: [{name: v1, port: 8080}]\n";
    let g = gw(&docs(&[
        gateway("rr", "10.0.0.6", listeners),
        http_route(
            "partly",
            "infra",
            "[{name: rr}, {group: \"\", kind: Service, name: v3, port: 8080}]",
            "[]",
            rules,
        ),
        http_route(
            "kind",
            "infra",
            "[{name: rr}]",
            "[]",
            "  - matches: [{path: {value: /k}}]\n    backendRefs: [{group: example.com, kind: Thing, name: x}]\n",
        ),
        http_route(
            "omitted",
            "infra",
            "[{name: rr}]",
            "[]",
            "  - matches: [{path: {value: /o}}]\n",
        ),
    ]));
    let d = "10.0.0.6:80";
    assert_eq!(
        g.parent("partly", "rr"),
        "Accepted=true/Accepted ResolvedRefs=false/RefNotPermitted"
    );
    assert_eq!(
        g.parent("partly", "v3"),
        "Accepted=true/Accepted ResolvedRefs=false/RefNotPermitted"
    );
    assert_eq!(
        g.parent("kind", "rr"),
        "Accepted=true/Accepted ResolvedRefs=false/InvalidKind"
    );
    assert_eq!(
        g.parent("omitted", "rr"),
        "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs"
    );
    assert_eq!(g.get(d, "x", "/v2").await, "500");
    assert_eq!(g.get(d, "x", "/").await, "v1");
    assert_eq!(g.get(d, "x", "/k").await, "500");
    assert_eq!(g.get(d, "x", "/o").await, "500");
    let svc = g
        .out()
        .route_parents
        .iter()
        .find(|p| p.parent.kind == "Service")
        .unwrap();
    assert_eq!(
        (svc.parent.group.as_str(), svc.parent.port),
        ("", Some(8080))
    );
}

#[tokio::test]
async fn gateway_without_address_is_reported_not_served() {
    let g = gw(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: bare, namespace: infra}\nspec:\n  gatewayClassName: w\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n",
    );
    let status = &g.out().gateways[0];
    assert!(status.addresses.is_empty());
    assert_eq!(status.conditions[1].reason, "AddressNotAssigned");
    assert_eq!(status.listeners[0].conditions[2].reason, "Pending");
}

const GRPC_SVC: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

fn grpc_route(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  parentRefs: [{{name: gg}}]\n  rules:\n{rules}"
    )
}

impl Gw {
    async fn call(&self, method: &str, headers: &[(&str, &str)]) -> String {
        let mut req = http::Request::post(format!("/{GRPC_SVC}/{method}"))
            .header("host", "grpc.example")
            .header("content-type", "application/grpc");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match self.send("10.0.0.7:80", req).await {
            (None, name) => name,
            (Some(status), grpc) => format!("{} {grpc}", status.as_u16()),
        }
    }
}

#[tokio::test]
async fn grpc_method_and_header_matching_and_unimplemented() {
    let rules = format!(
        r#"  - matches: [{{method: {{service: {GRPC_SVC}, method: Echo}}}}]
    backendRefs: [{{name: v1, port: 8080}}]
  - matches: [{{method: {{service: {GRPC_SVC}, method: EchoTwo}}}}]
    backendRefs: [{{name: v2, port: 8080}}]
  - matches: [{{method: {{type: RegularExpression, service: ".*GrpcEcho", method: "Echo.*"}}, headers: [{{name: version, value: "three|3", type: RegularExpression}}]}}]
    backendRefs: [{{name: v3, port: 8080}}]
  - matches: [{{headers: [{{name: version, value: two}}]}}]
    backendRefs: [{{name: v2, port: 8080}}]
"#
    );
    let g = gw(&docs(&[
        gateway(
            "gg",
            "10.0.0.7",
            "  - {name: http, port: 80, protocol: HTTP}\n",
        ),
        grpc_route("exact", &rules),
        http_route("plain", "infra", "[{name: gg}]", "[]", &to("v3")),
    ]));
    assert!(g.out().reports.is_empty(), "{:?}", g.out().reports);
    assert_eq!(g.call("Echo", &[]).await, "v1");
    assert_eq!(g.call("EchoTwo", &[]).await, "v2");
    assert_eq!(g.call("EchoThree", &[]).await, "200 grpc-status 12");
    // Exact service+method has more characters than the regex rule, so it wins.
    assert_eq!(g.call("Echo", &[("version", "3")]).await, "v1");
    assert_eq!(g.call("EchoThree", &[("version", "three")]).await, "v3");
    // Regexes are anchored: `xthree` is not `three`.
    assert_eq!(
        g.call("EchoThree", &[("version", "xthree")]).await,
        "200 grpc-status 12"
    );
    assert_eq!(g.call("EchoThree", &[("version", "two")]).await, "v2");
    // Non-gRPC requests on the same hostname go to HTTPRoutes.
    assert_eq!(g.get("10.0.0.7:80", "grpc.example", "/").await, "v3");
    assert_eq!(
        g.parent("exact", "gg"),
        "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs"
    );
    assert_eq!(g.attached("gg", "http"), 2);
}

#[tokio::test]
async fn grpc_weights_and_reference_grant_kind() {
    let rules = "  - backendRefs: [{name: v1, port: 8080, weight: 3}, {name: v2, port: 8080, weight: 1}, {name: v3, port: 8080, weight: 0}]\n  - matches: [{method: {service: other.Svc}}]\n    backendRefs: [{name: w1, namespace: web, port: 8080}]\n";
    // A grant for HTTPRoutes does not cover GRPCRoutes.
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: web}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]\n  to: [{group: \"\", kind: Service}]\n".to_owned();
    let g = gw(&docs(&[
        gateway(
            "gg",
            "10.0.0.7",
            "  - {name: http, port: 80, protocol: HTTP}\n",
        ),
        grpc_route("weighted", rules),
        grant,
    ]));
    assert_eq!(
        g.parent("weighted", "gg"),
        "Accepted=true/Accepted ResolvedRefs=false/RefNotPermitted"
    );
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..1000 {
        match g.call("Echo", &[]).await.as_str() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!((650..=850).contains(&v1), "v1 {v1} v2 {v2}");
}

impl Gw {
    /// `Accepted=<status>/<reason> Programmed=<status>/<reason>` of Gateway `name` itself.
    fn gateway_conditions(&self, name: &str) -> String {
        let g = self
            .out()
            .gateways
            .iter()
            .find(|g| g.gateway.name == name)
            .unwrap_or_else(|| panic!("no status for Gateway {name}"));
        g.conditions
            .iter()
            .map(|c| format!("{}={}/{}", c.kind, c.status, c.reason))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[tokio::test]
async fn a_gateway_is_accepted_while_one_of_its_listeners_is() {
    let g = gw(&docs(&[
        gateway(
            "all",
            "10.0.0.11",
            "  - {name: http, port: 80, protocol: HTTP}\n",
        ),
        gateway(
            "some",
            "10.0.0.12",
            "  - {name: http, port: 80, protocol: HTTP}\n  - {name: invalid, port: 1111, protocol: INVALID}\n",
        ),
        gateway(
            "none",
            "10.0.0.13",
            "  - {name: invalid, port: 1111, protocol: INVALID}\n",
        ),
        http_route("r", "infra", "[{name: some}]", "[]", &to("v1")),
    ]));
    assert_eq!(
        g.gateway_conditions("all"),
        "Accepted=true/Accepted Programmed=true/Programmed"
    );
    assert_eq!(
        g.gateway_conditions("some"),
        "Accepted=true/ListenersNotValid Programmed=true/Programmed"
    );
    let some = g.out().gateways.iter().find(|s| s.gateway.name == "some");
    let message = &some.unwrap().conditions[0].message;
    assert!(message.contains("invalid"), "{message}");
    // The accepted listener still serves.
    assert_eq!(g.get("10.0.0.12:80", "x", "/").await, "v1");
    assert_eq!(
        g.gateway_conditions("none"),
        "Accepted=false/ListenersNotValid Programmed=false/Invalid"
    );
}

#[tokio::test]
async fn a_parameters_ref_refuses_the_gateway_but_its_listeners_are_still_served() {
    let manifest = gateway(
        "params",
        "10.0.0.14",
        "  - {name: http, port: 80, protocol: HTTP}\n",
    )
    .replace(
        "  gatewayClassName: waypoint\n",
        "  gatewayClassName: waypoint\n  infrastructure:\n    parametersRef: {group: invalid.io, kind: InvalidParameters, name: invalid}\n",
    );
    let g = gw(&docs(&[
        manifest,
        http_route("r", "infra", "[{name: params}]", "[]", &to("v1")),
    ]));
    assert_eq!(
        g.gateway_conditions("params"),
        "Accepted=false/InvalidParameters Programmed=true/Programmed"
    );
    let status = g.out().gateways.iter().find(|s| s.gateway.name == "params");
    let message = &status.unwrap().conditions[0].message;
    assert!(
        message.contains("invalid.io InvalidParameters invalid"),
        "{message}"
    );
    assert_eq!(g.get("10.0.0.14:80", "x", "/").await, "v1");
    assert_eq!(
        g.parent("r", "params"),
        "Accepted=true/Accepted ResolvedRefs=true/ResolvedRefs"
    );
}

#[tokio::test]
async fn a_malformed_inbound_binding_refuses_this_waypoints_gateway_in_its_written_status() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: mesh, annotations: {ambient.istio.io/waypoint-inbound-binding: 'HTTP/15088'}}\nspec:\n  gatewayClassName: wpc\n  addresses: [{value: 10.0.0.30}]\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n";
    let harness = named_gateway_chain(text, "mesh", "wp");
    let g = Gw {
        config: harness.config().clone(),
        harness,
    };
    assert_eq!(
        g.gateway_conditions("wp"),
        "Accepted=false/Invalid Programmed=true/Programmed"
    );
    let status = g.out().gateways.iter().find(|s| s.gateway.name == "wp");
    let message = &status.expect("wp").conditions[0].message;
    assert!(
        message.contains("\"HTTP\" is not NONE or PROXY"),
        "{message}"
    );
}
