//! Telemetry end to end: Istio metrics as Prometheus scrapes them, access log lines as a log
//! pipeline reads them, trace context as the upstream receives it, and the admin server over
//! loopback.

// Tests may unwrap (house rule); the lint only spares #[test] functions, not their helpers.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;
use waypoint_core::flags::ResponseFlag;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use waypoint_core::admin::{AdminServer, AdminState};
use waypoint_core::body::{self, Body, BoxError};
use waypoint_core::config::{Config, ResourceRef, load::parse_manifests};
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::filter::{
    AuthzDecision, ExtensionRegistry, RequestContext, RouteMatch, UpstreamTarget,
};
use waypoint_core::snapshot::SnapshotStore;
use waypoint_core::telemetry::access_log::{AccessLogFormat, AccessLogOptions};
use waypoint_core::telemetry::trace::{TraceParent, TraceSource, propagate};
use waypoint_core::telemetry::{Telemetry, TelemetryOptions};

const MESH: &str = "
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: shop, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.1.0.1]}]
";

fn config(text: &str) -> Config {
    parse_manifests(text, "test.yaml").unwrap()
}

fn client_conn(baggage: &str) -> ConnInfo {
    let mut conn = ConnInfo::new(Binding::Sandwich {
        listener: "tcp:127.0.0.1:15088".into(),
    });
    conn.source = Some("10.0.0.5:40000".parse().unwrap());
    conn.destination = Some("10.96.0.10:80".parse().unwrap());
    conn.peer_identity = Some("spiffe://cluster.local/ns/shop/sa/client".parse().unwrap());
    conn.source_workload = waypoint_core::wire::baggage::decode(baggage);
    conn
}

const BAGGAGE: &str = "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=client,service.name=client-app,service.version=v2";

fn routed_ctx(conn: ConnInfo, config: Arc<Config>) -> RequestContext {
    let backend = config.service("shop", "echo", 80).unwrap().clone();
    let mut ctx = RequestContext::new(Arc::new(conn), config);
    ctx.upstream = Some(UpstreamTarget::new(backend));
    ctx.route = Some(RouteMatch {
        route: ResourceRef::new("HTTPRoute", "shop", "echo"),
        rule: 0,
    });
    ctx
}

/// Sends one request through begin → (upstream reads the body) → finish → client reads the
/// response, as the proxy does.
async fn exchange(
    tel: &Telemetry,
    mut req: http::Request<Body>,
    ctx: &RequestContext,
    resp: http::Response<Body>,
) -> http::Response<Bytes> {
    let record = tel.begin(&mut req, &ctx.conn);
    let (_, body) = req.into_parts();
    body.collect().await.unwrap();
    let resp = tel.finish(record, ctx, resp);
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn request(uri: &str, body: &'static str) -> http::Request<Body> {
    http::Request::builder()
        .uri(uri)
        .header("host", "echo.shop")
        .body(body::full(body))
        .unwrap()
}

fn response(status: u16, body: &'static str) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .body(body::full(body))
        .unwrap()
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix} in\n{text}"))
}

const SOURCE: &str = "source_workload=\"client\",source_workload_namespace=\"shop\",source_principal=\"spiffe://cluster.local/ns/shop/sa/client\",source_app=\"client-app\",source_version=\"v2\",source_canonical_service=\"client-app\",source_canonical_revision=\"v2\",source_cluster=\"c1\"";
const DEST: &str = "destination_workload=\"unknown\",destination_workload_namespace=\"shop\",destination_principal=\"unknown\",destination_app=\"unknown\",destination_version=\"unknown\",destination_service=\"echo.shop.svc.cluster.local\",destination_service_name=\"echo\",destination_service_namespace=\"shop\",destination_canonical_service=\"unknown\",destination_canonical_revision=\"unknown\",destination_cluster=\"east\"";

fn labels(code: u16, flags: &str) -> String {
    format!(
        "reporter=\"waypoint\",{SOURCE},{DEST},request_protocol=\"http\",response_code=\"{code}\",grpc_response_status=\"\",connection_security_policy=\"mutual_tls\",response_flags=\"{flags}\""
    )
}

fn telemetry(registry: &mut Registry, access_log: Option<AccessLogOptions>) -> Telemetry {
    Telemetry::new(
        registry,
        TelemetryOptions {
            access_log,
            cluster: Some("east".into()),
            ..TelemetryOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn requests_are_counted_with_istio_labels() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let config = Arc::new(config(MESH));
    let ctx = routed_ctx(client_conn(BAGGAGE), config.clone());
    for _ in 0..2 {
        let resp = exchange(&tel, request("/a", "hello"), &ctx, response(200, "world!!")).await;
        assert_eq!(resp.body().as_ref(), b"world!!");
    }
    // Denied by policy before routing: no upstream, yet the dialled Service is known.
    let denied_ctx = RequestContext::new(Arc::new(client_conn(BAGGAGE)), config);
    exchange(
        &tel,
        request("/admin", ""),
        &denied_ctx,
        body::local_reply(StatusCode::FORBIDDEN, "RBAC: access denied"),
    )
    .await;

    let text = scrape(&registry);
    let ok = labels(200, "-");
    assert_eq!(
        line(&text, &format!("istio_requests_total{{{ok}}}")),
        format!("istio_requests_total{{{ok}}} 2")
    );
    let denied = labels(403, "-");
    assert_eq!(
        line(&text, &format!("istio_requests_total{{{denied}}}")),
        format!("istio_requests_total{{{denied}}} 1")
    );
    assert_eq!(
        line(
            &text,
            &format!("istio_request_duration_milliseconds_count{{{ok}}}")
        ),
        format!("istio_request_duration_milliseconds_count{{{ok}}} 2")
    );
    // Istio's duration buckets, all of them, ending at one hour.
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_request_duration_milliseconds_bucket{") && l.contains(&ok))
        .map(|l| l.split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        buckets,
        [
            "0.5",
            "1.0",
            "5.0",
            "10.0",
            "25.0",
            "50.0",
            "100.0",
            "250.0",
            "500.0",
            "1000.0",
            "2500.0",
            "5000.0",
            "10000.0",
            "30000.0",
            "60000.0",
            "300000.0",
            "600000.0",
            "1800000.0",
            "3600000.0",
            "+Inf"
        ]
    );
    assert!(
        text.contains(&format!(
            "istio_request_duration_milliseconds_bucket{{le=\"3600000.0\",{ok}}} 2"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("istio_request_bytes_sum{{{ok}}} 10.0")));
    assert!(text.contains(&format!("istio_request_bytes_bucket{{le=\"1.0\",{ok}}} 0")));
    assert!(text.contains(&format!("istio_request_bytes_bucket{{le=\"10.0\",{ok}}} 2")));
    assert!(text.contains(&format!("istio_response_bytes_sum{{{ok}}} 14.0")));
    assert!(text.contains(&format!(
        "istio_response_bytes_bucket{{le=\"1000000000.0\",{ok}}} 2"
    )));
    assert!(text.contains(&format!("istio_response_bytes_sum{{{denied}}} 20.0")));
}

/// A routed context for a request on `conn`, with `flags` and an ALLOW decision by `policy`.
fn ctx_on(
    conn: &Arc<ConnInfo>,
    config: &Arc<Config>,
    flags: &[ResponseFlag],
    policy: Option<&str>,
) -> RequestContext {
    let backend = config.service("shop", "echo", 80).unwrap().clone();
    let mut ctx = RequestContext::new(conn.clone(), config.clone());
    ctx.upstream = Some(UpstreamTarget::new(backend));
    ctx.response_flags = flags.to_vec();
    if let Some(name) = policy {
        ctx.extensions.insert(AuthzDecision {
            allowed: true,
            action: "ALLOW".into(),
            policy: Some(ResourceRef::new("AuthorizationPolicy", "shop", name)),
            rule: Some(0),
            dry_run: false,
        });
    }
    ctx
}

/// The `istio_*` and authorization lines of a scrape that do not depend on timing, sorted
/// (series of a family come out in hash order).
fn stable_lines(registry: &Registry) -> Vec<String> {
    let mut lines: Vec<String> = scrape(registry)
        .lines()
        .filter(|l| l.starts_with("istio_") || l.starts_with("waypoint_authz"))
        .filter(|l| {
            !l.starts_with("istio_request_duration_milliseconds")
                || l.starts_with("istio_request_duration_milliseconds_count")
        })
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn a_connection_reusing_its_label_sets_yields_the_metrics_of_fresh_connections() {
    let config = Arc::new(config(MESH));
    // More distinct outcomes than a connection remembers, some repeated after being
    // forgotten, with and without flags and decisions.
    let mut outcomes: Vec<(u16, Vec<ResponseFlag>, Option<&str>)> = Vec::new();
    for round in 0..3 {
        for status in [200u16, 201, 202, 204, 301, 404, 418, 500, 502, 503] {
            let flags = if status == 503 && round != 1 {
                vec![ResponseFlag::UpstreamConnectionFailure]
            } else {
                vec![]
            };
            let policy = match status % 3 {
                0 => None,
                1 => Some("allow-a"),
                _ => Some("allow-b"),
            };
            outcomes.push((status, flags, policy));
        }
    }
    let (mut kept, mut fresh) = (Registry::default(), Registry::default());
    let (kept_tel, fresh_tel) = (telemetry(&mut kept, None), telemetry(&mut fresh, None));
    let conn = Arc::new(client_conn(BAGGAGE));
    for (status, flags, policy) in &outcomes {
        let ctx = ctx_on(&conn, &config, flags, *policy);
        exchange(
            &kept_tel,
            request("/a", "hi"),
            &ctx,
            response(*status, "body"),
        )
        .await;
        let ctx = ctx_on(&Arc::new(client_conn(BAGGAGE)), &config, flags, *policy);
        exchange(
            &fresh_tel,
            request("/a", "hi"),
            &ctx,
            response(*status, "body"),
        )
        .await;
    }
    let kept = stable_lines(&kept);
    assert_eq!(kept, stable_lines(&fresh));
    let ok = labels(200, "-");
    assert!(
        kept.contains(&format!("istio_requests_total{{{ok}}} 3")),
        "{kept:#?}"
    );
    let uf = labels(503, "UF");
    assert!(
        kept.contains(&format!("istio_requests_total{{{uf}}} 2")),
        "{kept:#?}"
    );
    assert!(
        kept.contains(&"waypoint_authz_decisions_total{decision=\"allow\",action=\"ALLOW\",policy=\"shop/allow-a\"} 12".to_owned()),
        "{kept:#?}"
    );
}

#[tokio::test]
async fn a_copied_connection_is_labelled_as_changed_not_as_the_original() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let config = Arc::new(config(MESH));
    let original = Arc::new(client_conn(BAGGAGE));
    let ctx = ctx_on(&original, &config, &[], None);
    exchange(&tel, request("/a", ""), &ctx, response(200, "")).await;
    let mut copy = ConnInfo::clone(&original);
    copy.peer_identity = Some("spiffe://cluster.local/ns/shop/sa/other".parse().unwrap());
    let ctx = ctx_on(&Arc::new(copy), &config, &[], None);
    exchange(&tel, request("/a", ""), &ctx, response(200, "")).await;
    let text = scrape(&registry);
    let other = labels(200, "-").replace("sa/client", "sa/other");
    assert!(
        text.contains(&format!("istio_requests_total{{{other}}} 1")),
        "{text}"
    );
    assert!(text.contains(&format!("istio_requests_total{{{}}} 1", labels(200, "-"))));
}

#[tokio::test]
async fn two_telemetries_recording_one_connection_each_use_their_own_labels() {
    let (mut east, mut west) = (Registry::default(), Registry::default());
    let east_tel = telemetry(&mut east, None);
    let west_tel = Telemetry::new(
        &mut west,
        TelemetryOptions {
            cluster: Some("west".into()),
            ..TelemetryOptions::default()
        },
    )
    .unwrap();
    let config = Arc::new(config(MESH));
    let conn = Arc::new(client_conn(BAGGAGE));
    for _ in 0..2 {
        for tel in [&east_tel, &west_tel] {
            let ctx = ctx_on(&conn, &config, &[], Some("allow-a"));
            exchange(tel, request("/a", ""), &ctx, response(200, "")).await;
        }
    }
    let ok = labels(200, "-");
    assert!(scrape(&east).contains(&format!("istio_requests_total{{{ok}}} 2")));
    let west_ok = ok.replace(
        "destination_cluster=\"east\"",
        "destination_cluster=\"west\"",
    );
    let west = scrape(&west);
    assert!(
        west.contains(&format!("istio_requests_total{{{west_ok}}} 2")),
        "{west}"
    );
    assert!(west.contains("policy=\"shop/allow-a\"} 2"), "{west}");
}

#[tokio::test]
async fn unknown_source_and_flags_are_rendered_as_istio_does() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let mut conn = ConnInfo::new(Binding::Plain {
        listener: "x".into(),
    });
    conn.destination = Some("192.0.2.1:80".parse().unwrap());
    let mut ctx = RequestContext::new(Arc::new(conn), Arc::new(config(MESH)));
    ctx.response_flags = vec![ResponseFlag::NoRoute, ResponseFlag::NoHealthyUpstream];
    exchange(&tel, request("/", ""), &ctx, response(404, "")).await;
    let text = scrape(&registry);
    let l = line(&text, "istio_requests_total{");
    assert!(l.contains("source_workload=\"unknown\",source_workload_namespace=\"unknown\",source_principal=\"unknown\""), "{l}");
    assert!(l.contains("destination_service=\"unknown\""), "{l}");
    assert!(l.contains("connection_security_policy=\"none\""), "{l}");
    assert!(l.contains("response_code=\"404\""), "{l}");
    assert!(l.contains("response_flags=\"NR,UH\""), "{l}");
}

#[tokio::test]
async fn label_values_are_capped() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let long = "w".repeat(300);
    let conn = client_conn(&format!("k8s.deployment.name={long},service.name={long}"));
    let ctx = routed_ctx(conn, Arc::new(config(MESH)));
    exchange(&tel, request("/", ""), &ctx, response(200, "")).await;
    let text = scrape(&registry);
    let l = line(&text, "istio_requests_total{");
    let capped = "w".repeat(128);
    assert!(l.contains(&format!("source_workload=\"{capped}\"")), "{l}");
    assert!(l.contains(&format!("source_app=\"{capped}\"")), "{l}");
    assert!(!l.contains(&"w".repeat(129)), "{l}");
    // The path is never a label.
    assert!(!text.contains("/a"));
}

/// A body made of given frames, optionally never ending (a stream the client abandons).
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    endless: bool,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.frames.pop_front() {
            Some(f) => Poll::Ready(Some(Ok(f))),
            None if self.endless => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

fn frames(frames: Vec<Frame<Bytes>>, endless: bool) -> Body {
    UnsyncBoxBody::new(Frames {
        frames: frames.into(),
        endless,
    })
}

#[tokio::test]
async fn grpc_status_comes_from_trailers_and_abandoned_responses_count_once() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let ctx = routed_ctx(client_conn(BAGGAGE), Arc::new(config(MESH)));

    let mut req = request("/pkg.Svc/Call", "");
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("14"));
    let body = frames(
        vec![
            Frame::data(Bytes::from_static(b"12345")),
            Frame::trailers(trailers),
        ],
        false,
    );
    exchange(&tel, req, &ctx, http::Response::new(body)).await;

    // The client goes away mid-stream: recorded at drop, flagged DC, bytes so far.
    let mut req = request("/stream", "");
    let record = tel.begin(&mut req, &ctx.conn);
    let body = frames(vec![Frame::data(Bytes::from_static(b"abc"))], true);
    let mut resp = tel.finish(record, &ctx, http::Response::new(body));
    let first = resp.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "abc");
    drop(resp);

    // A HEAD response's body is never sent nor polled: dropping it is a normal end.
    let mut req = request("/", "");
    *req.method_mut() = http::Method::HEAD;
    let record = tel.begin(&mut req, &ctx.conn);
    drop(tel.finish(
        record,
        &ctx,
        body::local_reply(StatusCode::NOT_FOUND, "no route"),
    ));

    let text = scrape(&registry);
    let head = line(
        &text,
        &format!("istio_requests_total{{{}}}", labels(404, "-")),
    );
    assert!(head.ends_with(" 1"), "{head}");
    let grpc = line(&text, "istio_requests_total{");
    let grpc_lines: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert_eq!(grpc_lines.len(), 3, "{text}");
    assert!(
        grpc_lines
            .iter()
            .any(|l| l.contains("request_protocol=\"grpc\"")
                && l.contains("grpc_response_status=\"14\"")
                && l.ends_with(" 1")),
        "{grpc}"
    );
    let dc = grpc_lines
        .iter()
        .find(|l| l.contains("response_flags=\"DC\""))
        .unwrap();
    assert!(
        dc.contains("request_protocol=\"http\"") && dc.ends_with(" 1"),
        "{dc}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("istio_response_bytes_sum{")
                && l.contains("response_flags=\"DC\"")
                && l.ends_with(" 3.0"))
    );
}

/// An access log sink a test can read; tells the test when the writer thread let it go.
#[derive(Clone)]
struct Sink {
    buf: Arc<Mutex<Vec<u8>>>,
    gate: Option<Arc<Mutex<mpsc::Receiver<()>>>>,
    dropped: Arc<Mutex<Option<mpsc::Sender<()>>>>,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(gate) = self.gate.take() {
            // Blocks the writer thread until the test opens the gate.
            gate.lock().unwrap().recv().unwrap();
        }
        self.buf.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

struct SinkHandle {
    buf: Arc<Mutex<Vec<u8>>>,
    closed: mpsc::Receiver<()>,
}

impl SinkHandle {
    /// Waits for the writer thread to finish (the Telemetry and every body must be dropped).
    fn lines(self) -> Vec<String> {
        self.closed.recv_timeout(Duration::from_secs(5)).unwrap();
        let text = String::from_utf8(self.buf.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

fn sink(gate: Option<mpsc::Receiver<()>>) -> (Sink, SinkHandle) {
    let (tx, rx) = mpsc::channel();
    let buf = Arc::new(Mutex::new(Vec::new()));
    (
        Sink {
            buf: buf.clone(),
            gate: gate.map(|g| Arc::new(Mutex::new(g))),
            dropped: Arc::new(Mutex::new(Some(tx))),
        },
        SinkHandle { buf, closed: rx },
    )
}

fn log_opts(writer: Sink, format: AccessLogFormat, sample: f64, buffer: usize) -> AccessLogOptions {
    AccessLogOptions {
        format,
        sample,
        writer: Box::new(writer),
        buffer,
    }
}

#[tokio::test]
async fn access_log_lines_are_json_with_every_field() {
    let (writer, handle) = sink(None);
    let mut registry = Registry::default();
    let tel = telemetry(
        &mut registry,
        Some(log_opts(writer, AccessLogFormat::Json, 1.0, 16)),
    );
    let ctx = routed_ctx(client_conn(BAGGAGE), Arc::new(config(MESH)));
    let mut req = request("/v1/items?id=7", "hello");
    req.headers_mut().insert(
        "traceparent",
        HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    exchange(&tel, req, &ctx, response(201, "created")).await;
    let long = format!("/{}", "p".repeat(3000));
    exchange(&tel, request(&long, ""), &ctx, response(200, "")).await;
    drop(tel);

    let lines = handle.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let start = v["start_time"].as_str().unwrap();
    assert_eq!(start.len(), "2026-08-01T12:34:56.789Z".len(), "{start}");
    assert!(start.ends_with('Z') && start.as_bytes()[10] == b'T' && start.as_bytes()[19] == b'.');
    assert_eq!(
        v["source_principal"],
        "spiffe://cluster.local/ns/shop/sa/client"
    );
    assert_eq!(v["source_address"], "10.0.0.5:40000");
    assert_eq!(v["destination_address"], "10.96.0.10:80");
    assert_eq!(v["destination_service"], "echo.shop.svc.cluster.local");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["authority"], "echo.shop");
    assert_eq!(v["path"], "/v1/items?id=7");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["response_code"], 201);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["bytes_received"], 5);
    assert_eq!(v["bytes_sent"], 7);
    assert!(v["duration_ms"].as_u64().unwrap() < 5000);
    assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(v["route"], "shop/echo#0");

    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(v["path"].as_str().unwrap().len(), 1024);
    assert_eq!(v["trace_id"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn access_log_text_format_and_sampling() {
    let (writer, handle) = sink(None);
    let mut registry = Registry::default();
    let tel = telemetry(
        &mut registry,
        Some(log_opts(writer, AccessLogFormat::Text, 1.0, 16)),
    );
    let ctx = routed_ctx(client_conn(BAGGAGE), Arc::new(config(MESH)));
    exchange(&tel, request("/x", "ab"), &ctx, response(503, "no")).await;
    drop(tel);
    let lines = handle.lines();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("\"GET /x HTTP/1.1\" 503 - 2 2 "),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("\"spiffe://cluster.local/ns/shop/sa/client\""));
    assert!(lines[0].contains("\"shop/echo#0\""));

    let (writer, handle) = sink(None);
    let mut registry = Registry::default();
    let tel = telemetry(
        &mut registry,
        Some(log_opts(writer, AccessLogFormat::Json, 0.0, 16)),
    );
    for _ in 0..20 {
        exchange(&tel, request("/x", ""), &ctx, response(200, "")).await;
    }
    // Metrics are not sampled.
    assert!(
        scrape(&registry).contains(&format!("istio_requests_total{{{}}} 20", labels(200, "-")))
    );
    drop(tel);
    assert!(handle.lines().is_empty());
}

#[tokio::test]
async fn a_full_access_log_buffer_drops_and_counts() {
    let (open, gate) = mpsc::channel();
    let (writer, handle) = sink(Some(gate));
    let mut registry = Registry::default();
    let tel = telemetry(
        &mut registry,
        Some(log_opts(writer, AccessLogFormat::Json, 1.0, 1)),
    );
    let ctx = routed_ctx(client_conn(BAGGAGE), Arc::new(config(MESH)));
    for _ in 0..10 {
        exchange(&tel, request("/x", ""), &ctx, response(200, "")).await;
    }
    // At most one line is in the writer's hands and one in the buffer.
    let dropped = tel.access_log_dropped();
    assert!(dropped >= 8, "dropped {dropped}");
    assert!(
        scrape(&registry).contains(&format!("waypoint_access_log_dropped_total {dropped}")),
        "{}",
        scrape(&registry)
    );
    open.send(()).unwrap();
    drop(tel);
    assert_eq!(handle.lines().len() as u64, 10 - dropped);
}

#[test]
fn trace_context_propagation_table() {
    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const TUNNEL: &str = "00-11111111111111111111111111111111-2222222222222222-00";
    let trace = |s: &str| u128::from_str_radix(s, 16).unwrap();
    struct Case {
        name: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        tunnel: Option<&'static str>,
        source: TraceSource,
        trace_id: Option<u128>,
        parent: Option<u64>,
        flags: u8,
        keeps_tracestate: bool,
    }
    let cases = [
        Case {
            name: "request traceparent kept, tracestate passed",
            headers: vec![("traceparent", TP), ("tracestate", "vendor=x")],
            tunnel: Some(TUNNEL),
            source: TraceSource::Request,
            trace_id: Some(trace("0af7651916cd43dd8448eb211c80319c")),
            parent: Some(0xb7ad6b7169203331),
            flags: 1,
            keeps_tracestate: true,
        },
        Case {
            name: "a later version with extra fields is read",
            headers: vec![(
                "traceparent",
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra",
            )],
            tunnel: None,
            source: TraceSource::Request,
            trace_id: Some(trace("0af7651916cd43dd8448eb211c80319c")),
            parent: Some(0xb7ad6b7169203331),
            flags: 0,
            keeps_tracestate: true,
        },
        Case {
            name: "HBONE CONNECT traceparent continued",
            headers: vec![("tracestate", "orphan=1")],
            tunnel: Some(TUNNEL),
            source: TraceSource::Tunnel,
            trace_id: Some(trace("11111111111111111111111111111111")),
            parent: Some(0x2222222222222222),
            flags: 0,
            keeps_tracestate: false,
        },
        Case {
            name: "B3 multi-header, 64-bit trace id padded",
            headers: vec![
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-sampled", "1"),
            ],
            tunnel: None,
            source: TraceSource::B3,
            trace_id: Some(0x463ac35c9f6413ad),
            parent: Some(0xa2fb4a1d1a96d312),
            flags: 1,
            keeps_tracestate: false,
        },
        Case {
            name: "B3 single header",
            headers: vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")],
            tunnel: Some("garbage"),
            source: TraceSource::B3,
            trace_id: Some(trace("80f198ee56343ba864fe8b2a57d3eff7")),
            parent: Some(0xe457b5a2e4d86bd1),
            flags: 0,
            keeps_tracestate: false,
        },
        Case {
            name: "upper-case hex is invalid: new trace",
            headers: vec![
                (
                    "traceparent",
                    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
                ),
                ("tracestate", "a=b"),
            ],
            tunnel: None,
            source: TraceSource::New,
            trace_id: None,
            parent: None,
            flags: 0,
            keeps_tracestate: false,
        },
        Case {
            name: "all-zero trace id is invalid, tunnel used",
            headers: vec![(
                "traceparent",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            )],
            tunnel: Some(TUNNEL),
            source: TraceSource::Tunnel,
            trace_id: Some(trace("11111111111111111111111111111111")),
            parent: Some(0x2222222222222222),
            flags: 0,
            keeps_tracestate: false,
        },
        Case {
            name: "version ff, short and long v00 values are invalid",
            headers: vec![(
                "traceparent",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
            tunnel: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x"),
            source: TraceSource::New,
            trace_id: None,
            parent: None,
            flags: 0,
            keeps_tracestate: false,
        },
        Case {
            name: "two traceparent headers count as none",
            headers: vec![("traceparent", TP), ("traceparent", TP)],
            tunnel: None,
            source: TraceSource::New,
            trace_id: None,
            parent: None,
            flags: 0,
            keeps_tracestate: false,
        },
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for case in cases {
        let mut headers = HeaderMap::new();
        for (k, v) in &case.headers {
            headers.append(*k, HeaderValue::from_static(v));
        }
        let had_state = headers.contains_key("tracestate");
        let ctx = propagate(&mut headers, case.tunnel, &mut rng);
        let name = case.name;
        assert_eq!(ctx.source, case.source, "{name}");
        if let Some(id) = case.trace_id {
            assert_eq!(ctx.trace_id, id, "{name}");
        }
        assert_ne!(ctx.trace_id, 0, "{name}");
        assert_eq!(ctx.parent_span_id, case.parent, "{name}");
        assert_eq!(ctx.flags, case.flags, "{name}");
        assert_ne!(ctx.span_id, 0, "{name}");
        assert_ne!(Some(ctx.span_id), case.parent, "{name}: a new span id");
        // The upstream sees exactly one traceparent, whose parent is the waypoint's span.
        let sent: Vec<_> = headers.get_all("traceparent").iter().collect();
        assert_eq!(sent.len(), 1, "{name}");
        let sent = sent[0].to_str().unwrap();
        assert_eq!(
            sent,
            format!(
                "00-{:032x}-{:016x}-{:02x}",
                ctx.trace_id, ctx.span_id, ctx.flags
            ),
            "{name}"
        );
        assert_eq!(TraceParent::parse(sent), Some(ctx.traceparent()), "{name}");
        assert_eq!(
            headers.contains_key("tracestate"),
            had_state && case.keeps_tracestate,
            "{name}"
        );
    }
}

#[tokio::test]
async fn begin_rewrites_traceparent_and_continues_the_tunnel_trace() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let mut conn = client_conn(BAGGAGE);
    conn.traceparent = Some("00-11111111111111111111111111111111-2222222222222222-00".into());
    let mut req = request("/", "");
    let record = tel.begin(&mut req, &conn);
    assert_eq!(record.trace().source, TraceSource::Tunnel);
    assert_eq!(
        record.trace().trace_id_hex(),
        "11111111111111111111111111111111"
    );
    let sent = TraceParent::parse(req.headers()["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(sent.span_id, record.trace().span_id);
    assert_ne!(sent.span_id, 0x2222222222222222);
}

#[tokio::test]
async fn tcp_connections_and_bytes_are_counted() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let config = config(MESH);
    let conn = client_conn(BAGGAGE);
    let (a, mut b) = tokio::io::duplex(64);
    let mut counted = tel.counted(a, &conn, &config);
    let labels = tel.tcp_labels(&conn, &config);
    assert_eq!(tel.tcp_metrics().totals(&labels), (1, 0, 0, 0));
    b.write_all(b"ping!").await.unwrap();
    let mut buf = [0u8; 5];
    counted.read_exact(&mut buf).await.unwrap();
    counted.write_all(b"pong").await.unwrap();
    drop(counted);
    assert_eq!(tel.tcp_metrics().totals(&labels), (1, 1, 4, 5));
    let text = scrape(&registry);
    let l = line(&text, "istio_tcp_received_bytes_total{");
    assert!(l.contains("request_protocol=\"tcp\""), "{l}");
    assert!(
        l.contains("destination_service=\"echo.shop.svc.cluster.local\""),
        "{l}"
    );
    assert!(l.ends_with(" 5"), "{l}");
    assert!(line(&text, "istio_tcp_connections_closed_total{").ends_with(" 1"));
}

#[test]
fn config_and_process_metrics() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let before = scrape(&registry);
    assert!(before.contains("waypoint_config_reloads_total{result=\"failed\"} 0"));
    assert!(before.contains("waypoint_config_snapshot_version 0"));
    tel.reload(true, 1);
    tel.reload(false, 0);
    tel.reload(true, 3);
    let text = scrape(&registry);
    assert!(
        text.contains("waypoint_config_reloads_total{result=\"ok\"} 2"),
        "{text}"
    );
    assert!(text.contains("waypoint_config_reloads_total{result=\"failed\"} 1"));
    assert!(text.contains("waypoint_config_snapshot_version 3"));
    let ts: f64 = line(&text, "waypoint_config_last_reload_timestamp_seconds ")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ts > 1.7e9, "{ts}");
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
    ] {
        let value: f64 = line(&text, name)
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(value >= 0.0, "{name}");
    }
    assert!(line(&text, "process_resident_memory_bytes ") != "process_resident_memory_bytes 0");
}

/// One HTTP/1.1 request over a fresh connection: (status, content-type, body).
async fn http(addr: SocketAddr, method: &str, target: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {target} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body.to_owned())
}

const SECOND: &str = "
apiVersion: v1
kind: Service
metadata: {name: other, namespace: blue}
spec:
  clusterIP: 10.96.0.20
  ports: [{port: 8080, appProtocol: kubernetes.io/h2c}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-1, namespace: blue, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{port: 9090}]
endpoints: [{addresses: [10.2.0.7]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: blue}
spec:
  rules: [{backendRefs: [{name: missing, port: 80}]}]
";

#[tokio::test]
async fn admin_server_endpoints() {
    let mut registry = Registry::default();
    let tel = telemetry(&mut registry, None);
    let custom = Counter::<u64>::default();
    registry.register("vendor_things", "A vendor's counter", custom.clone());
    let store = Arc::new(SnapshotStore::new(vec![], ExtensionRegistry::new()));
    let ready = Arc::new(AtomicBool::new(false));
    let levels = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = levels.clone();
    let state = AdminState {
        registry: Arc::new(registry),
        store: store.clone(),
        ready: ready.clone(),
        set_log_level: Some(Arc::new(move |level: &str| {
            if level.contains('!') {
                return Err(format!("bad directive {level}"));
            }
            seen.lock().unwrap().push(level.to_owned());
            Ok(())
        })),
        overload: None,
        controller_name: None,
        upstream: None,
    };
    let (trigger, shutdown) = waypoint_core::shutdown::channel();
    let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), state.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(shutdown.clone()));
    let mut no_logging = state.clone();
    no_logging.set_log_level = None;
    let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), no_logging)
        .await
        .unwrap();
    let addr2 = server.local_addr();
    tokio::spawn(server.serve(shutdown.clone()));

    // Readiness needs both the flag and a real config.
    assert_eq!(http(addr, "GET", "/healthz/ready").await.0, 503);
    ready.store(true, Ordering::Release);
    let (status, _, body) = http(addr, "GET", "/healthz/ready").await;
    assert_eq!((status, body.trim()), (503, "not ready: no config loaded"));
    store.apply(config(MESH));
    tel.reload(true, 1);
    let (status, _, body) = http(addr, "GET", "/healthz/ready").await;
    assert_eq!((status, body.trim()), (200, "ready"));

    store.apply(config(SECOND));
    let (status, content_type, body) = http(addr, "GET", "/config_dump").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["version"], 2);
    assert!(dump["applied_at"].as_str().unwrap().ends_with('Z'));
    let services = dump["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{dump:#}");
    assert_eq!(services[0]["name"], "other");
    assert_eq!(services[0]["namespace"], "blue");
    assert_eq!(services[0]["protocol"], "h2c");
    assert_eq!(services[0]["endpoints"][0]["address"], "10.2.0.7:9090");
    assert_eq!(services[0]["endpoints"][0]["transport"], "plain");
    let resources = dump["resources"].as_array().unwrap();
    let broken = resources
        .iter()
        .find(|r| r["kind"] == "HTTPRoute" && r["name"] == "broken")
        .unwrap();
    assert_eq!(broken["namespace"], "blue");
    assert_eq!(broken["source"], "test.yaml#3");
    assert!(
        broken["conditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(resources.iter().all(|r| r["name"] != "echo"));

    custom.inc_by(3);
    let (status, content_type, body) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.contains("vendor_things_total 3"), "{body}");
    assert!(body.contains("waypoint_config_reloads_total{result=\"ok\"} 1"));
    assert!(body.trim_end().ends_with("# EOF"));

    let (status, _, _) = http(addr, "POST", "/logging?level=info%2Cwaypoint_core%3Ddebug").await;
    assert_eq!(status, 200);
    let (status, _, _) = http(addr, "PUT", "/logging?level=warn").await;
    assert_eq!(status, 200);
    let (status, _, body) = http(addr, "POST", "/logging?level=oops!").await;
    assert_eq!(status, 400);
    assert!(body.contains("bad directive oops!"), "{body}");
    assert_eq!(http(addr, "POST", "/logging").await.0, 400);
    assert_eq!(
        *levels.lock().unwrap(),
        vec!["info,waypoint_core=debug".to_owned(), "warn".to_owned()]
    );
    assert_eq!(http(addr2, "POST", "/logging?level=debug").await.0, 501);
    assert_eq!(http(addr, "GET", "/logging?level=debug").await.0, 405);
    assert_eq!(http(addr, "GET", "/nope").await.0, 404);

    drop(shutdown);
    assert!(trigger.shutdown(Duration::from_secs(5)).await);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
