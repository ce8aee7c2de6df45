//! Hot functions of the request path, timed with criterion:
//!
//! - PROXY v2 decoding of a header as ztunnel writes it (identity TLV) plus workload metadata;
//! - route selection with 10, 1,000 and 10,000 HTTPRoute rules attached to one Service, for a
//!   request that matches one of the rules of lowest precedence;
//! - building the route table of 10,000 rules, what a reload pays for routing;
//! - header modification as a `RequestHeaderModifier` does it;
//! - an AuthorizationPolicy decision with 1, 100 and 10,000 policies attached to other Services
//!   plus 10 attached to the request's (the cost must not grow with the unrelated ones).
//!
//! `cargo bench -p waypoint-benches` prints time per operation; `cargo test --benches` runs each
//! once as a smoke test.
#![allow(missing_docs, clippy::unwrap_used)]

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use waypoint_core::body;
use waypoint_core::config::parse_manifests;
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::filter::{
    BuildContext, Decision, ExtensionRegistry, FilterChain, FilterFactory, RequestContext,
};
use waypoint_core::transport::{ProxyConfig, conn_info};
use waypoint_core::wire::proxy_protocol::{Decoded, decode, encode_v2};

fn proxy_decode(c: &mut Criterion) {
    let identity = b"spiffe://cluster.local/ns/default/sa/sleep";
    let baggage = b"k8s.cluster.name=c1,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep,service.version=v1";
    let header = encode_v2(
        "10.244.0.7:43210".parse().unwrap(),
        "10.96.0.10:80".parse().unwrap(),
        &[(0xD0, identity), (0xE0, baggage)],
    );
    let cfg = ProxyConfig::default();
    c.bench_function("proxy_v2_decode_identity_and_metadata", |b| {
        b.iter(|| {
            let Ok(Decoded::Complete { header, .. }) = decode(std::hint::black_box(&header), 4096)
            else {
                panic!("benchmark header must decode")
            };
            conn_info(
                &header,
                Binding::Sandwich {
                    listener: "bench".into(),
                },
                &cfg,
            )
            .unwrap()
        })
    });
}

fn manifests(rules: usize) -> String {
    // 100 rules per route, as a large tenant would write them.
    manifests_per_route(rules, 100)
}

/// One Service and `rules` HTTPRoute rules attached to it, `per_route` rules per HTTPRoute.
fn manifests_per_route(rules: usize, per_route: usize) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: default}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: echo-1, namespace: default, labels: {kubernetes.io/service-name: echo}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [\"127.0.0.1\"]}]\n",
    );
    for route in 0..rules.div_ceil(per_route) {
        write!(out, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{route}, namespace: default}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo, port: 80}}]\n  rules:\n").unwrap();
        for rule in 0..per_route.min(rules - route * per_route) {
            write!(out, "  - matches: [{{path: {{type: PathPrefix, value: /r{route}/rule{rule}}}}}]\n    backendRefs: [{{name: echo, port: 80}}]\n").unwrap();
        }
    }
    out
}

fn route_select(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("route_select");
    for rules in [10usize, 1_000, 10_000] {
        let config = parse_manifests(&manifests(rules), "bench.yaml").unwrap();
        let registry = ExtensionRegistry::new();
        let mut cx = BuildContext::new(&config, &registry);
        let chain = FilterChain::new(vec![waypoint_filters::route::RouteFactory.build(&mut cx)]);
        assert!(cx.into_reports().is_empty());
        let config = Arc::new(config);
        let mut conn = ConnInfo::new(Binding::Sandwich {
            listener: "bench".into(),
        });
        conn.destination = Some("10.96.0.10:80".parse::<SocketAddr>().unwrap());
        let conn = Arc::new(conn);
        // Longer prefixes take precedence, so `/r0/rule0` (among the shortest) is one of the
        // last entries the scan reaches: close to the worst case.
        group.bench_with_input(BenchmarkId::from_parameter(rules), &rules, |b, _| {
            b.to_async(&runtime).iter(|| async {
                let mut req = http::Request::get("/r0/rule0/items?id=7")
                    .body(body::empty())
                    .unwrap();
                let mut ctx = RequestContext::new(conn.clone(), config.clone());
                let decision = chain.run_request(&mut req, &mut ctx).await;
                assert!(matches!(decision, Decision::Continue));
                ctx.upstream
            })
        });
    }
    group.finish();
}

/// What a reload pays for routing: compiling the route table of a parsed config (every
/// HTTPRoute compiled, attached and put in precedence order), for 10,000 rules written as 100
/// routes of 100 rules and as 10,000 routes of one rule. Parsing the manifests is not timed.
fn route_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_build");
    group.sample_size(10);
    for (label, per_route) in [("10000_rules_in_100_routes", 100), ("10000_routes", 1)] {
        let config =
            parse_manifests(&manifests_per_route(10_000, per_route), "bench.yaml").unwrap();
        let registry = ExtensionRegistry::new();
        group.bench_function(label, |b| {
            b.iter(|| {
                let mut cx = BuildContext::new(&config, &registry);
                let filter = waypoint_filters::route::RouteFactory.build(&mut cx);
                assert!(cx.into_reports().is_empty());
                filter
            })
        });
    }
    group.finish();
}

fn header_edits(c: &mut Criterion) {
    use waypoint_core::config::resources::{HeaderModifier, HttpHeader};
    let edits = waypoint_filters::route::HeaderEdits::compile(&HeaderModifier {
        set: vec![HttpHeader {
            name: "x-env".into(),
            value: "prod".into(),
        }],
        add: vec![HttpHeader {
            name: "x-trace".into(),
            value: "on".into(),
        }],
        remove: vec!["x-internal".into()],
    })
    .unwrap();
    let template = http::Request::get("/")
        .header("host", "echo")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .header("x-internal", "secret")
        .body(())
        .unwrap();
    c.bench_function("request_header_modifier", |b| {
        b.iter(|| {
            let mut headers = template.headers().clone();
            edits.apply(&mut headers);
            headers
        })
    });
}

/// `others` policies attached to other Services (each with its own Service), plus 10 attached
/// to `echo`, the request's destination.
fn policy_manifests(others: usize) -> String {
    let mut out = manifests(0);
    let policy = |out: &mut String, name: &str, service: &str, principal: &str| {
        write!(out, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [\"{principal}\"]}}}}]\n    to: [{{operation: {{methods: [GET], paths: [\"/api/*\"]}}}}]\n").unwrap();
    };
    for i in 0..others {
        write!(out, "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\nspec:\n  clusterIP: 10.97.{}.{}\n  ports: [{{name: http, port: 80}}]\n", i / 250, i % 250 + 1).unwrap();
        policy(
            &mut out,
            &format!("other-{i}"),
            &format!("svc-{i}"),
            "cluster.local/ns/x/sa/y",
        );
    }
    for i in 0..10 {
        // The last one matches the request: every policy of the Service is evaluated.
        let principal = if i == 9 {
            "cluster.local/ns/default/sa/sleep".to_owned()
        } else {
            format!("cluster.local/ns/default/sa/other-{i}")
        };
        policy(&mut out, &format!("mine-{i}"), "echo", &principal);
    }
    out
}

fn authz_decision(c: &mut Criterion) {
    use waypoint_filters::authz::{AuthzFactory, RequestAttributes, explain};
    let mut group = c.benchmark_group("authz_decision");
    let identity: waypoint_core::identity::SpiffeId = "spiffe://cluster.local/ns/default/sa/sleep"
        .parse()
        .unwrap();
    let headers = http::HeaderMap::new();
    for others in [1usize, 100, 10_000] {
        let config = parse_manifests(&policy_manifests(others), "bench.yaml").unwrap();
        let registry = ExtensionRegistry::new();
        let mut cx = BuildContext::new(&config, &registry);
        let policies = AuthzFactory::default().compile(&mut cx);
        let request = RequestAttributes {
            identity: Some(&identity),
            source: Some("10.244.0.7".parse().unwrap()),
            destination: Some("10.96.0.10:80".parse().unwrap()),
            method: "GET",
            host: "echo.default.svc.cluster.local",
            path: "/api/items?id=7",
            headers: &headers,
            request_principal: None,
        };
        assert!(
            explain(&policies, &config, &request)
                .unwrap()
                .decision
                .allowed
        );
        group.bench_with_input(BenchmarkId::from_parameter(others), &others, |b, _| {
            b.iter(|| {
                explain(&policies, &config, std::hint::black_box(&request))
                    .unwrap()
                    .decision
                    .allowed
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    proxy_decode,
    route_select,
    route_build,
    header_edits,
    authz_decision
);
criterion_main!(benches);
