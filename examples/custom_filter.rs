//! Embedding waypoint with a vendor filter and the vendor's own metrics registry.
//!
//! The filter below tells the backend who called it (the SPIFFE identity ztunnel vouched for, in
//! `x-caller-identity`) and refuses `/admin` to everyone but the `ops` namespace, counting
//! refusals in a metric of its own. It runs in the same chain as the built-in routing filter,
//! through the same public API; it needs nothing from config, so it is installed as one shared
//! instance, without a factory. The vendor's registry is handed to the waypoint, which adds its
//! own metrics to it: the admin server's `/metrics` serves both.
//!
//! Run it with `cargo run -p waypoint-examples --example custom_filter`: it starts an echo
//! backend and a waypoint on a Unix socket, sends two requests as ztunnel would, and prints the
//! answers.

use http::{HeaderValue, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint_bin::tools::{echo, send};
use waypoint_core::body::local_reply;
use waypoint_core::filter::{Decision, Filter, FilterSet, Request, RequestContext, async_trait};
use waypoint_core::runtime::{Waypoint, WaypointOptions};
use waypoint_core::transport::listener::ListenAddr;
use waypoint_filters::{BuiltinSettings, Builtins};

/// The vendor filter: one job, continue or stop.
struct CallerIdentity {
    /// Requests refused, in the vendor's registry.
    refused: Counter,
}

#[async_trait]
impl Filter for CallerIdentity {
    fn name(&self) -> &str {
        "caller-identity"
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let identity = ctx.conn.peer_identity.as_ref();
        if req.uri().path().starts_with("/admin")
            && identity.map(|id| id.namespace()) != Some("ops")
        {
            self.refused.inc();
            return Decision::Respond(local_reply(
                StatusCode::FORBIDDEN,
                "admin is for the ops namespace",
            ));
        }
        if let Some(value) = identity.and_then(|id| HeaderValue::from_str(id.as_str()).ok()) {
            req.headers_mut().insert("x-caller-identity", value);
        }
        Decision::Continue
    }
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: http, port: ECHO_PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
"#;

/// What one run of the demo saw.
struct Seen {
    status: StatusCode,
    body: String,
    /// The admin server's `/metrics` page after the request.
    metrics: String,
}

/// Starts everything, sends a request as `identity` to `path`, reads `/metrics`.
async fn demo(dir: &std::path::Path, identity: &str, path: &str) -> Seen {
    let echo_addr = echo::spawn(([127, 0, 0, 1], 0).into(), echo::EchoIdentity::default())
        .await
        .expect("echo backend listens");
    let config = dir.join("manifests.yaml");
    std::fs::write(
        &config,
        MANIFESTS.replace("ECHO_PORT", &echo_addr.port().to_string()),
    )
    .expect("config written");

    let mut options = WaypointOptions::new(&config);
    options.sandwich = vec![ListenAddr::Unix(dir.join("waypoint.sock"))];
    options.admin = Some(([127, 0, 0, 1], 0).into());
    // The vendor's registry, with the vendor's metric in it; the waypoint adds its own.
    let mut registry = Registry::default();
    let refused = Counter::default();
    registry.register(
        "vendor_admin_refused",
        "Requests to /admin refused",
        refused.clone(),
    );
    // Vendor filters sit in the same chain as the built-ins, here after routing.
    let running = Waypoint::builder(options)
        .install(Builtins::new(BuiltinSettings::default()))
        .install(move |filters: &mut FilterSet| {
            filters.filter(CallerIdentity { refused });
        })
        .metrics_registry(registry)
        .start()
        .await
        .expect("waypoint starts");

    let claims = send::ProxyClaims {
        source: ([10, 244, 0, 7], 43210).into(),
        destination: ([10, 96, 0, 10], 80).into(),
        identity: Some(identity.to_owned()),
        baggage: None,
    };
    let spec = send::RequestSpec {
        method: http::Method::GET,
        path: path.to_owned(),
        host: Some("echo".into()),
        headers: vec![],
        body: Default::default(),
        h2c: false,
    };
    let resp = send::send(&running.sandwich_addrs()[0], &claims, &spec)
        .await
        .expect("request sent");
    let metrics = scrape(running.admin_addr().expect("admin is on")).await;
    running.shutdown(std::time::Duration::from_secs(1)).await;
    Seen {
        status: resp.status(),
        body: String::from_utf8_lossy(resp.body()).into_owned(),
        metrics,
    }
}

/// `GET /metrics` from the admin server, the whole answer as text.
async fn scrape(admin: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("admin accepts");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .expect("request written");
    let mut page = String::new();
    stream
        .read_to_string(&mut page)
        .await
        .expect("metrics read");
    page
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (identity, path) in [
        ("spiffe://cluster.local/ns/default/sa/sleep", "/hello"),
        ("spiffe://cluster.local/ns/default/sa/sleep", "/admin/users"),
        ("spiffe://cluster.local/ns/ops/sa/oncall", "/admin/users"),
    ] {
        let seen = demo(dir.path(), identity, path).await;
        println!("{identity} GET {path} -> {}\n{}\n", seen.status, seen.body);
        for line in seen.metrics.lines().filter(|l| l.starts_with("vendor_")) {
            println!("  /metrics: {line}");
        }
    }
}

#[tokio::test]
async fn vendor_filter_sees_identity_and_can_refuse() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seen = demo(
        dir.path(),
        "spiffe://cluster.local/ns/default/sa/sleep",
        "/hello",
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert!(
        seen.body
            .contains("spiffe://cluster.local/ns/default/sa/sleep"),
        "backend saw the identity header: {}",
        seen.body
    );
    let seen = demo(
        dir.path(),
        "spiffe://cluster.local/ns/default/sa/sleep",
        "/admin/x",
    )
    .await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    let seen = demo(
        dir.path(),
        "spiffe://cluster.local/ns/ops/sa/oncall",
        "/admin/x",
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
}

#[tokio::test]
async fn the_vendor_registry_serves_vendor_and_waypoint_metrics_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seen = demo(
        dir.path(),
        "spiffe://cluster.local/ns/default/sa/sleep",
        "/admin/x",
    )
    .await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert!(
        seen.metrics.contains("vendor_admin_refused_total 1"),
        "{}",
        seen.metrics
    );
    assert!(
        seen.metrics.contains("istio_requests_total"),
        "{}",
        seen.metrics
    );
}
