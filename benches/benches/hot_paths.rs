//! Hot functions of the request path, timed with criterion:
//!
//! - PROXY v2 decoding of a header as ztunnel writes it (identity TLV) plus workload metadata;
//! - route selection with 10, 1,000 and 10,000 HTTPRoute rules attached to one Service, for a
//!   request that matches the rule of lowest precedence (the worst case of the scan);
//! - header modification as a `RequestHeaderModifier` does it.
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
use waypoint_core::transport::proxy_protocol::{
    Decoded, ProxyConfig, conn_info, decode, encode_v2,
};

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
    let mut out = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: default}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: echo-1, namespace: default, labels: {kubernetes.io/service-name: echo}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [\"127.0.0.1\"]}]\n",
    );
    // 100 rules per route, as a large tenant would write them.
    for route in 0..rules.div_ceil(100) {
        write!(out, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{route}, namespace: default}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo, port: 80}}]\n  rules:\n").unwrap();
        for rule in 0..100.min(rules - route * 100) {
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

criterion_group!(benches, proxy_decode, route_select, header_edits);
criterion_main!(benches);
