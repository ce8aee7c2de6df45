//! Routing decisions, in memory: a config from manifests, a request, the chosen upstream.

use std::sync::Arc;
use waypoint_core::flags::ResponseFlag;

use http::StatusCode;
use waypoint_core::body;
use waypoint_core::config::Config;
use waypoint_core::filter::testing::{TestChain, conn, conn_as};
use waypoint_core::filter::{
    BuildReport, Decision, ExtensionRegistry, Filter, FilterChain, FilterSet, Request,
    RequestContext, Response,
};

use super::RouteFactory;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: default}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: default}
spec:
  clusterIP: 10.96.0.12
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: elsewhere}
spec:
  clusterIP: 10.96.0.13
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v1-a, namespace: default, labels: {kubernetes.io/service-name: v1}}
addressType: IPv4
ports: [{name: http, port: 8081}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v2-a, namespace: default, labels: {kubernetes.io/service-name: v2}}
addressType: IPv4
ports: [{name: http, port: 8082}]
endpoints: [{addresses: ["127.0.0.2"]}]
"#;

pub(super) const ECHO: &str = "10.96.0.10:80";

pub(super) struct Routed {
    pub(super) config: Arc<Config>,
    pub(super) chain: FilterChain,
    pub(super) reports: Vec<BuildReport>,
    harness: TestChain,
}

/// The routing filter alone over the shared Services and `routes`, with `registry`'s
/// `ExtensionRef` filters.
pub(super) fn routed(routes: &str, registry: &ExtensionRegistry) -> Routed {
    let registry = registry.clone();
    let harness = TestChain::new(
        &format!("{SERVICES}\n---\n{routes}"),
        move |filters: &mut FilterSet| {
            filters.factory(RouteFactory).add_extensions(registry);
        },
    )
    .expect("manifests parse");
    Routed {
        config: harness.config().clone(),
        chain: harness.chain().clone(),
        reports: harness.reports().to_vec(),
        harness,
    }
}

pub(super) struct Outcome {
    pub(super) status: Option<StatusCode>,
    pub(super) upstream: Option<String>,
    pub(super) request: Request,
    pub(super) ctx: RequestContext,
    /// The local reply, when the chain answered itself.
    pub(super) response: Option<Response>,
}

impl Routed {
    pub(super) async fn send(
        &self,
        destination: &str,
        identity: Option<&str>,
        req: http::request::Builder,
    ) -> Outcome {
        let conn = match identity {
            Some(identity) => conn_as(destination, identity),
            None => conn(destination),
        };
        let exchange = self
            .harness
            .send(conn, req.body(body::empty()).unwrap())
            .await;
        Outcome {
            status: exchange.status(),
            upstream: exchange.upstream_service(),
            request: exchange.request,
            ctx: exchange.ctx,
            response: exchange.response,
        }
    }

    pub(super) async fn upstream_of(&self, path: &str) -> Option<String> {
        self.send(ECHO, None, http::Request::get(path))
            .await
            .upstream
    }
}

pub(super) fn route(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo, port: 80}}]\n  rules:\n{rules}"
    )
}

#[tokio::test]
async fn service_without_routes_goes_to_itself() {
    let r = routed("", &ExtensionRegistry::new());
    let out = r
        .send("10.96.0.11:80", None, http::Request::get("/x"))
        .await;
    assert_eq!(out.status, None);
    assert_eq!(out.upstream.as_deref(), Some("default/v1"));
}

#[tokio::test]
async fn unknown_destination_is_404_naming_it() {
    let r = routed("", &ExtensionRegistry::new());
    let out = r.send("10.1.2.3:80", None, http::Request::get("/")).await;
    assert_eq!(out.status, Some(StatusCode::NOT_FOUND));
    assert_eq!(out.ctx.response_flags, [ResponseFlag::NoRoute]);
}

#[tokio::test]
async fn path_prefix_and_exact_choose_backends() {
    let r = routed(
        &route(
            "split",
            r#"  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: Exact, value: /v2/exact}}]
    backendRefs: [{name: v1, port: 80}]
  - backendRefs: [{name: v1, port: 80}]
"#,
        ),
        &ExtensionRegistry::new(),
    );
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    assert_eq!(r.upstream_of("/v2").await.as_deref(), Some("default/v2"));
    assert_eq!(r.upstream_of("/v2/a").await.as_deref(), Some("default/v2"));
    assert_eq!(r.upstream_of("/v2x").await.as_deref(), Some("default/v1"));
    // Exact beats a prefix even though the prefix rule comes first.
    assert_eq!(
        r.upstream_of("/v2/exact").await.as_deref(),
        Some("default/v1")
    );
    assert_eq!(r.upstream_of("/").await.as_deref(), Some("default/v1"));
}

#[tokio::test]
async fn no_matching_rule_is_404() {
    let r = routed(
        &route(
            "only-api",
            "  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: v1, port: 80}]\n",
        ),
        &ExtensionRegistry::new(),
    );
    let out = r.send(ECHO, None, http::Request::get("/other")).await;
    assert_eq!(out.status, Some(StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn longer_prefix_wins_across_routes() {
    let routes = format!(
        "{}\n---\n{}",
        route(
            "short",
            "  - matches: [{path: {value: /a}}]\n    backendRefs: [{name: v1, port: 80}]\n"
        ),
        route(
            "long",
            "  - matches: [{path: {value: /a/b}}]\n    backendRefs: [{name: v2, port: 80}]\n"
        ),
    );
    let r = routed(&routes, &ExtensionRegistry::new());
    assert_eq!(r.upstream_of("/a/b/c").await.as_deref(), Some("default/v2"));
    assert_eq!(r.upstream_of("/a/c").await.as_deref(), Some("default/v1"));
}

#[tokio::test]
async fn weights_split_traffic_and_zero_gets_none() {
    let r = routed(
        &route(
            "weights",
            "  - backendRefs: [{name: v1, port: 80, weight: 3}, {name: v2, port: 80, weight: 1}, {name: echo, port: 80, weight: 0}]\n",
        ),
        &ExtensionRegistry::new(),
    );
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..2000 {
        match r.upstream_of("/").await.as_deref() {
            Some("default/v1") => v1 += 1,
            Some("default/v2") => v2 += 1,
            other => panic!("unexpected upstream {other:?}"),
        }
    }
    // 3:1 within a generous margin (expected 1500/500).
    assert!((1350..=1650).contains(&v1), "v1 got {v1}, v2 got {v2}");
}

#[tokio::test]
async fn missing_backend_is_500_and_reported() {
    let r = routed(
        &route("broken", "  - backendRefs: [{name: nope, port: 80}]\n"),
        &ExtensionRegistry::new(),
    );
    let out = r.send(ECHO, None, http::Request::get("/")).await;
    assert_eq!(out.status, Some(StatusCode::INTERNAL_SERVER_ERROR));
    let report = &r.reports[0];
    assert_eq!(
        (report.condition.as_str(), report.reason.as_str()),
        ("ResolvedRefs", "BackendNotFound")
    );
    assert!(
        report.message.contains("spec.rules[0].backendRefs[0]"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn mesh_routes_reach_other_namespaces_without_a_reference_grant() {
    // GEP-1294: a route attached to a Service only augments traffic clients can already send,
    // so its backends may be in any namespace. (Gateway parents need a ReferenceGrant:
    // gateway_tests.rs.)
    let rules = "  - backendRefs: [{name: other, namespace: elsewhere, port: 80}]\n";
    let r = routed(&route("cross", rules), &ExtensionRegistry::new());
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    assert_eq!(r.upstream_of("/").await.as_deref(), Some("elsewhere/other"));
}

#[tokio::test]
async fn consumer_routes_apply_only_to_their_namespace() {
    let consumer = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mine, namespace: client-ns}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, namespace: default, port: 80}]
  rules:
  - backendRefs: [{name: v2, namespace: default, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-client, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: client-ns}]
  to: [{group: "", kind: Service}]
"#;
    let routes = format!(
        "{}\n---\n{consumer}",
        route("producer", "  - backendRefs: [{name: v1, port: 80}]\n")
    );
    let r = routed(&routes, &ExtensionRegistry::new());
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    let client = r
        .send(
            ECHO,
            Some("spiffe://cluster.local/ns/client-ns/sa/app"),
            http::Request::get("/"),
        )
        .await;
    assert_eq!(client.upstream.as_deref(), Some("default/v2"));
    let other = r
        .send(
            ECHO,
            Some("spiffe://cluster.local/ns/someone/sa/app"),
            http::Request::get("/"),
        )
        .await;
    assert_eq!(other.upstream.as_deref(), Some("default/v1"));
}

#[tokio::test]
async fn header_modifiers_edit_request_and_response() {
    let r = routed(
        &route(
            "headers",
            r#"  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: yes}], remove: [x-secret]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-served-by, value: waypoint}]}
    backendRefs: [{name: v1, port: 80}]
"#,
        ),
        &ExtensionRegistry::new(),
    );
    let mut out = r
        .send(
            ECHO,
            None,
            http::Request::get("/")
                .header("x-secret", "s")
                .header("x-set", "no"),
        )
        .await;
    assert_eq!(out.request.headers()["x-set"], "yes");
    assert!(!out.request.headers().contains_key("x-secret"));
    let mut resp = http::Response::new(body::empty());
    r.chain.run_response(&mut resp, &mut out.ctx).await;
    assert_eq!(resp.headers()["x-served-by"], "waypoint");
}

struct Tag(String);

#[async_trait::async_trait]
impl Filter for Tag {
    fn name(&self) -> &str {
        "tag"
    }
    async fn on_request(&self, req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        req.headers_mut().insert("x-tag", self.0.parse().unwrap());
        Decision::Continue
    }
}

#[tokio::test]
async fn extension_ref_builds_vendor_filters_and_unknown_kinds_fail_closed() {
    let rules = r#"  - filters:
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: Tagger, name: blue}
    backendRefs: [{name: v1, port: 80}]
"#;
    let tagger = r#"
apiVersion: example.com/v1
kind: Tagger
metadata: {name: blue, namespace: default}
spec: {tag: blue-team}
"#;
    let mut registry = ExtensionRegistry::new();
    registry.register(
        "example.com",
        "Tagger",
        |_name: &str, _ns: &str, object: Option<&serde_json::Value>| {
            let tag = object
                .and_then(|o| o.pointer("/spec/tag"))
                .and_then(|t| t.as_str())
                .ok_or("spec.tag is required")?;
            Ok(Arc::new(Tag(tag.to_owned())) as Arc<dyn Filter>)
        },
    );
    let r = routed(
        &format!("{}\n---\n{tagger}", route("ext", rules)),
        &registry,
    );
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    let out = r.send(ECHO, None, http::Request::get("/")).await;
    assert_eq!(out.request.headers()["x-tag"], "blue-team");

    let r = routed(&route("ext", rules), &ExtensionRegistry::new());
    assert_eq!(
        r.send(ECHO, None, http::Request::get("/")).await.status,
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert_eq!(r.reports[0].reason, "UnsupportedValue");
}

#[tokio::test]
async fn regular_expression_matches_for_path_headers_and_query() {
    let r = routed(
        &route(
            "regex",
            r#"  - matches: [{path: {type: RegularExpression, value: "/v[0-9]+/items"}}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{headers: [{type: RegularExpression, name: x-version, value: "2\\.[0-9]+"}]}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{queryParams: [{type: RegularExpression, name: user, value: "adm.n"}]}]
    backendRefs: [{name: echo, port: 80}]
"#,
        ),
        &ExtensionRegistry::new(),
    );
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    let send = |path: &'static str, header: Option<&'static str>| {
        let mut req = http::Request::get(path);
        if let Some(v) = header {
            req = req.header("x-version", v);
        }
        r.send(ECHO, None, req)
    };
    let upstream = |out: Outcome| out.upstream.unwrap_or_else(|| format!("{:?}", out.status));
    assert_eq!(upstream(send("/v12/items", None).await), "default/v2");
    // Anchored: a regex match is a full match, not a search.
    assert_eq!(upstream(send("/v12/items/x", None).await), "Some(404)");
    assert_eq!(upstream(send("/x/v12/items", None).await), "Some(404)");
    assert_eq!(upstream(send("/", Some("2.13")).await), "default/v1");
    assert_eq!(upstream(send("/", Some("2.13-rc")).await), "Some(404)");
    assert_eq!(upstream(send("/", Some("12.1")).await), "Some(404)");
    assert_eq!(upstream(send("/?user=admin", None).await), "default/echo");
    assert_eq!(
        upstream(send("/?user=administrator", None).await),
        "Some(404)"
    );
    // The header rule's implicit `PathPrefix /` outranks the regex path rule.
    assert_eq!(upstream(send("/v1/items", Some("2.0")).await), "default/v1");
}

#[tokio::test]
async fn regex_path_ranks_after_prefix_and_exact() {
    let routes = format!(
        "{}\n---\n{}",
        route(
            "a-regex",
            "  - matches: [{path: {type: RegularExpression, value: \"/api/.*\"}}]\n    backendRefs: [{name: v2, port: 80}]\n"
        ),
        route(
            "b-prefix",
            "  - matches: [{path: {value: /}}]\n    backendRefs: [{name: v1, port: 80}]\n  - matches: [{path: {type: Exact, value: /api/exact}}]\n    backendRefs: [{name: echo, port: 80}]\n"
        ),
    );
    let r = routed(&routes, &ExtensionRegistry::new());
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    // Even the shortest prefix beats a regex, and the regex route is older by name order.
    assert_eq!(r.upstream_of("/api/x").await.as_deref(), Some("default/v1"));
    assert_eq!(
        r.upstream_of("/api/exact").await.as_deref(),
        Some("default/echo")
    );
}

#[tokio::test]
async fn invalid_regex_is_reported_and_its_match_ignored() {
    let r = routed(
        &route(
            "bad-regex",
            r#"  - matches: [{path: {type: PathPrefix, value: /ok}}, {headers: [{type: RegularExpression, name: x-a, value: "(open"}]}]
    backendRefs: [{name: v2, port: 80}]
"#,
        ),
        &ExtensionRegistry::new(),
    );
    let report = &r.reports[0];
    assert_eq!(report.reason, "UnsupportedValue");
    assert!(
        report
            .message
            .contains("spec.rules[0].matches[1].headers[0].value"),
        "{}",
        report.message
    );
    // The valid match of the rule still serves; the broken one never matches.
    assert_eq!(r.upstream_of("/ok").await.as_deref(), Some("default/v2"));
    let out = r
        .send(
            ECHO,
            None,
            http::Request::get("/other").header("x-a", "(open"),
        )
        .await;
    assert_eq!(out.status, Some(StatusCode::NOT_FOUND));
}

mod upstream;
