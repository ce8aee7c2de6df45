//! End to end: a real waypoint (listeners, config file, routing, upstream pool) between a
//! ztunnel-like client and echo backends on loopback.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::io::AsyncWriteExt;
use waypoint_bin::tools::send::{self, ProxyClaims, RequestSpec};
use waypoint_core::body::local_reply;
use waypoint_core::conn::ConnInfo;
use waypoint_core::filter::{
    BuildContext, Decision, Filter, FilterFactory, Request, RequestContext, Response,
};
use waypoint_core::runtime::{RunningWaypoint, Waypoint, WaypointOptions};
use waypoint_core::transport::listener::ListenAddr;
use waypoint_filters::Builtins;

const IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const BAGGAGE: &str = "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=cart,service.name=cart,service.version=v3";

/// Services `echo` (10.96.0.10:80) and `slow` (10.96.0.20:80), with endpoints given per test.
fn manifests(echo_port: u16, slow_port: u16, extra: &str) -> String {
    format!(
        "{}---\n{}{extra}",
        common::service("echo", "10.96.0.10", echo_port),
        common::service("slow", "10.96.0.20", slow_port)
    )
}

/// Records what the chain saw about each connection, rewrites headers both ways, and answers
/// `/blocked` itself.
#[derive(Default)]
struct Probe {
    seen: Mutex<Vec<ConnInfo>>,
}

#[async_trait::async_trait]
impl Filter for ProbeFilter {
    fn name(&self) -> &str {
        "probe"
    }
    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        self.0.seen.lock().unwrap().push((*ctx.conn).clone());
        if req.uri().path() == "/blocked" {
            return Decision::Respond(local_reply(StatusCode::IM_A_TEAPOT, "blocked by probe"));
        }
        req.headers_mut()
            .insert("x-probe", HeaderValue::from_static("request"));
        req.headers_mut().remove("x-drop-me");
        Decision::Continue
    }
    async fn on_response(&self, resp: &mut Response, _ctx: &mut RequestContext) {
        resp.headers_mut()
            .insert("x-probe", HeaderValue::from_static("response"));
    }
}

struct ProbeFilter(Arc<Probe>);

struct ProbeFactory(Arc<Probe>);

impl FilterFactory for ProbeFactory {
    fn name(&self) -> &str {
        "probe"
    }
    fn build(&self, _cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(ProbeFilter(self.0.clone()))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    config: PathBuf,
    probe: Arc<Probe>,
    waypoint: Option<RunningWaypoint>,
    echo_port: u16,
    slow_port: u16,
}

impl Harness {
    async fn start(request_timeout: Duration) -> Harness {
        Self::start_with(|o| o.upstream.request_timeout = request_timeout).await
    }

    async fn start_with(adjust: impl FnOnce(&mut WaypointOptions)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let echo_addr = common::echo_in_process("echo-1").await;
        let slow_addr = common::echo_in_process("slow-1").await;
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, manifests(echo_addr.port(), slow_addr.port(), "")).unwrap();
        let probe = Arc::new(Probe::default());
        let mut options = WaypointOptions::new(&config);
        options.sandwich = vec![
            ListenAddr::Unix(dir.path().join("waypoint.sock")),
            ListenAddr::Tcp(([127, 0, 0, 1], 0).into()),
        ];
        options.reload_interval = Duration::from_millis(100);
        options.admin = Some(([127, 0, 0, 1], 0).into());
        adjust(&mut options);
        let waypoint = Waypoint::builder(options)
            .install(Builtins::default())
            .factory(Arc::new(ProbeFactory(probe.clone())))
            .start()
            .await
            .unwrap();
        Harness {
            config,
            probe,
            waypoint: Some(waypoint),
            echo_port: echo_addr.port(),
            slow_port: slow_addr.port(),
            _dir: dir,
        }
    }

    fn waypoint(&self) -> &RunningWaypoint {
        self.waypoint.as_ref().unwrap()
    }

    fn unix(&self) -> ListenAddr {
        self.waypoint().sandwich_addrs()[0].clone()
    }

    fn tcp(&self) -> ListenAddr {
        self.waypoint().sandwich_addrs()[1].clone()
    }

    async fn wait_for_version(&self, version: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.waypoint().store().load().version < version {
            assert!(
                Instant::now() < deadline,
                "config version {version} never applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn claims(destination: &str) -> ProxyClaims {
    ProxyClaims {
        source: "10.244.1.5:40000".parse().unwrap(),
        destination: destination.parse().unwrap(),
        identity: Some(IDENTITY.into()),
        baggage: Some(BAGGAGE.into()),
    }
}

fn get(path: &str) -> RequestSpec {
    RequestSpec {
        method: http::Method::GET,
        path: path.into(),
        host: Some("echo.default.svc.cluster.local".into()),
        headers: vec![("x-drop-me".into(), "1".into())],
        body: Bytes::new(),
        h2c: false,
    }
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

async fn assert_routed_with_identity(h: &Harness, to: &ListenAddr) {
    let resp = send::send(to, &claims("10.96.0.10:80"), &get("/hello?x=1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    assert_eq!(resp.headers()["x-probe"], "response");
    let echoed = json(resp.body());
    assert_eq!(echoed["pod"], "echo-1");
    assert_eq!(echoed["path"], "/hello?x=1");
    assert_eq!(echoed["host"], "echo.default.svc.cluster.local");
    assert_eq!(echoed["headers"]["X-Probe"][0], "request");
    assert!(echoed["headers"].get("X-Drop-Me").is_none());

    let seen = h.probe.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.peer_identity.unwrap().as_str(), IDENTITY);
    assert_eq!(seen.source, Some("10.244.1.5:40000".parse().unwrap()));
    assert_eq!(seen.destination, Some("10.96.0.10:80".parse().unwrap()));
    assert_eq!(seen.source_workload.namespace.as_deref(), Some("shop"));
    assert_eq!(seen.source_workload.workload_name.as_deref(), Some("cart"));
    assert_eq!(seen.source_workload.service_version.as_deref(), Some("v3"));
}

#[tokio::test]
async fn http1_over_unix_socket_and_tcp_carries_identity_and_metadata() {
    let h = Harness::start(Duration::from_secs(5)).await;
    assert_routed_with_identity(&h, &h.unix()).await;
    assert_routed_with_identity(&h, &h.tcp()).await;
}

#[tokio::test]
async fn filter_short_circuits() {
    let h = Harness::start(Duration::from_secs(5)).await;
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &get("/blocked"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    // The response phase ran for the filter that answered.
    assert_eq!(resp.headers()["x-probe"], "response");
}

#[tokio::test]
async fn h2c_serves_many_concurrent_streams_on_one_connection() {
    use http_body_util::{BodyExt, Empty};
    let h = Harness::start(Duration::from_secs(5)).await;
    let io = send::connect(&h.unix(), &claims("10.96.0.10:80"))
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://echo/stream/{i}?delay=200ms"))
                .version(http::Version::HTTP_2)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(json(&body)["path"], format!("/stream/{i}?delay=200ms"));
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    // 64 requests that each wait 200 ms finish together only if they ran concurrently.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // One client connection carried them all.
    assert_eq!(h.waypoint().transport_metrics().accepted("sandwich"), 1);
}

#[tokio::test]
async fn missing_proxy_header_is_refused_and_others_keep_working() {
    let h = Harness::start(Duration::from_secs(5)).await;
    let ListenAddr::Tcp(addr) = h.tcp() else {
        unreachable!()
    };
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut buf)
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed without an answer");
    assert_routed_with_identity(&h, &h.unix()).await;
    assert!(h.waypoint().transport_metrics().rejected("not_proxy") >= 1);
}

#[tokio::test]
async fn upstream_refused_is_503_and_slow_upstream_is_504() {
    let h = Harness::start(Duration::from_millis(300)).await;
    // A port nobody listens on: bind, learn the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(&h.config, manifests(closed, h.slow_port, "")).unwrap();
    h.wait_for_version(2).await;
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &get("/"))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        resp.body()
    );

    let started = Instant::now();
    let resp = send::send(&h.unix(), &claims("10.96.0.20:80"), &get("/?delay=3s"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reloads_keep_the_last_good_config_and_never_drop_requests_in_flight() {
    let h = Harness::start(Duration::from_secs(10)).await;
    let route_to_slow = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-slow, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - backendRefs: [{name: slow, port: 80}]
"#;
    // A request in flight across the reload finishes with the config it started with.
    let in_flight = tokio::spawn({
        let to = h.unix();
        async move {
            send::send(&to, &claims("10.96.0.10:80"), &get("/?delay=800ms"))
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(
        &h.config,
        manifests(h.echo_port, h.slow_port, route_to_slow),
    )
    .unwrap();
    h.wait_for_version(2).await;
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &get("/"))
        .await
        .unwrap();
    assert_eq!(
        json(resp.body())["pod"],
        "slow-1",
        "the new route applies to new requests"
    );
    let old = in_flight.await.unwrap();
    assert_eq!(old.status(), StatusCode::OK);
    assert_eq!(json(old.body())["pod"], "echo-1");

    // A broken file is refused; the last good config keeps serving.
    let good = h.waypoint().store().load().version;
    std::fs::write(&h.config, "kind: [unclosed").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.waypoint().store().load().version, good);
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &get("/"))
        .await
        .unwrap();
    assert_eq!(json(resp.body())["pod"], "slow-1");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let mut h = Harness::start(Duration::from_secs(10)).await;
    let to = h.unix();
    let in_flight = tokio::spawn(async move {
        send::send(&to, &claims("10.96.0.10:80"), &get("/?delay=500ms")).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = h
        .waypoint
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await;
    assert!(drained);
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // New connections are refused once stopped.
    assert!(
        send::send(&h_addr(&h), &claims("10.96.0.10:80"), &get("/"))
            .await
            .is_err()
    );
}

fn h_addr(h: &Harness) -> ListenAddr {
    ListenAddr::Unix(h._dir.path().join("waypoint.sock"))
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_oversized_headers_get_431() {
    use tokio::io::AsyncReadExt;
    let h = Harness::start_with(|o| o.http.header_read_timeout = Duration::from_millis(300)).await;

    // A client that sends half a request head and stalls is disconnected.
    let mut slow = send::connect(&h.unix(), &claims("10.96.0.10:80"))
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: echo\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cut off after {:?}",
        started.elapsed()
    );

    // A request head over the limit is refused with 431; the waypoint keeps serving.
    let mut spec = get("/");
    spec.headers.push(("x-huge".into(), "a".repeat(100 * 1024)));
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &spec)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_routed_with_identity(&h, &h.unix()).await;
}

#[tokio::test]
async fn istio_metrics_and_trace_context_reach_operators_and_upstreams() {
    let h = Harness::start(Duration::from_secs(5)).await;
    let admin = h.waypoint().admin_addr().unwrap();
    assert!(
        common::http_get(admin, "/healthz/ready")
            .await
            .starts_with("HTTP/1.1 200")
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut spec = get("/traced");
    spec.headers.push((
        "traceparent".into(),
        format!("00-{trace_id}-00f067aa0ba902b7-01"),
    ));
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &spec)
        .await
        .unwrap();
    let upstream_sees = json(resp.body())["headers"]["Traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = upstream_sees.split('-').collect();
    assert_eq!(parts[1], trace_id, "same trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the waypoint's own span");
    assert_eq!(parts[3], "01", "sampling kept");
    send::send(&h.unix(), &claims("10.96.0.10:80"), &get("/blocked"))
        .await
        .unwrap();

    let metrics = common::http_get(admin, "/metrics").await;
    let line = |code: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains(&format!("response_code=\"{code}\""))
            })
            .unwrap_or_else(|| panic!("no istio_requests_total for {code}:\n{metrics}"))
            .to_owned()
    };
    let ok = line("200");
    for label in [
        "reporter=\"waypoint\"",
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/cart\"",
        "source_workload=\"cart\"",
        "source_workload_namespace=\"shop\"",
        "source_version=\"v3\"",
        "source_cluster=\"c1\"",
        "destination_service_name=\"echo\"",
        "destination_service_namespace=\"default\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(ok.contains(label), "{label} missing in {ok}");
    }
    assert!(ok.trim_end().ends_with(" 1"), "{ok}");
    assert!(line("418").trim_end().ends_with(" 1"));
    assert!(metrics.contains("istio_request_duration_milliseconds_count{"));
    assert!(metrics.contains("waypoint_connections_accepted_total{binding=\"sandwich\"}"));
}

#[tokio::test]
async fn authorization_policy_decides_on_the_identity_ztunnel_vouched_for() {
    let h = Harness::start(Duration::from_secs(5)).await;
    std::fs::write(
        &h.config,
        manifests(h.echo_port, h.slow_port, common::ONLY_CART),
    )
    .unwrap();
    h.wait_for_version(2).await;

    // The identity in TLV 0xD0 is allowed...
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &get("/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // ...another identity is denied with Istio's answer...
    let mut other = claims("10.96.0.10:80");
    other.identity = Some("spiffe://cluster.local/ns/shop/sa/intruder".into());
    let resp = send::send(&h.unix(), &other, &get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.body().as_ref(), b"RBAC: access denied");
    // ...and so is a connection without an identity.
    let mut anonymous = claims("10.96.0.10:80");
    anonymous.identity = None;
    let resp = send::send(&h.unix(), &anonymous, &get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Another Service has no policy: the same identity is allowed there.
    other.destination = "10.96.0.20:80".parse().unwrap();
    let resp = send::send(&h.unix(), &other, &get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Operators see the decisions, by deciding policy.
    let metrics = common::http_get(h.waypoint().admin_addr().unwrap(), "/metrics").await;
    for line in [
        "waypoint_authz_decisions_total{decision=\"allow\",action=\"ALLOW\",policy=\"default/only-cart\"} 1",
        "waypoint_authz_decisions_total{decision=\"deny\",action=\"ALLOW\",policy=\"-\"} 2",
        "waypoint_authz_decisions_total{decision=\"allow\",action=\"NONE\",policy=\"-\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("response_code=\"403\""));
}

const REDIRECT_AND_REWRITE: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: moved, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    - type: CORS
      cors: {allowOrigins: ["https://*.shop.example"], allowCredentials: true}
    backendRefs: [{name: echo, port: 80}]
"#;

#[tokio::test]
async fn redirects_rewrites_and_cors_over_the_wire() {
    let h = Harness::start(Duration::from_secs(5)).await;
    std::fs::write(
        &h.config,
        manifests(h.echo_port, h.slow_port, REDIRECT_AND_REWRITE),
    )
    .unwrap();
    h.wait_for_version(2).await;

    // Answered by the waypoint, the backend never asked.
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &get("/old/page?id=7"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        resp.headers()["location"],
        "https://echo.default.svc.cluster.local/new/page?id=7"
    );

    let mut req = get("/api/v1/items?q=x");
    req.headers
        .push(("origin".into(), "https://web.shop.example".into()));
    let resp = send::send(&h.unix(), &claims("10.96.0.10:80"), &req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    let echoed = json(resp.body());
    assert_eq!(echoed["path"], "/v1/items?q=x");
    assert_eq!(echoed["host"], "internal.example");
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://web.shop.example"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
}
