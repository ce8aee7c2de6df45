//! Embedding waypoint with a vendor filter.
//!
//! The filter below tells the backend who called it (the SPIFFE identity ztunnel vouched for, in
//! `x-caller-identity`) and refuses `/admin` to everyone but the `ops` namespace. It runs in the
//! same chain as the built-in routing filter, through the same public API.
//!
//! Run it with `cargo run -p waypoint-examples --example custom_filter`: it starts an echo
//! backend and a waypoint on a Unix socket, sends two requests as ztunnel would, and prints the
//! answers.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use waypoint_bin::tools::{echo, send};
use waypoint_core::body::local_reply;
use waypoint_core::filter::{
    BuildContext, Decision, Filter, FilterFactory, Request, RequestContext,
};
use waypoint_core::runtime::{Waypoint, WaypointOptions};
use waypoint_core::transport::listener::ListenAddr;
use waypoint_filters::{BuiltinSettings, Builtins};

/// The vendor filter: one job, continue or stop.
struct CallerIdentity;

#[async_trait::async_trait]
impl Filter for CallerIdentity {
    fn name(&self) -> &str {
        "caller-identity"
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let identity = ctx.conn.peer_identity.as_ref();
        if req.uri().path().starts_with("/admin")
            && identity.map(|id| id.namespace()) != Some("ops")
        {
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

/// Builds the filter for each config snapshot (it has no config of its own).
struct CallerIdentityFactory;

impl FilterFactory for CallerIdentityFactory {
    fn name(&self) -> &str {
        "caller-identity"
    }
    fn build(&self, _cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(CallerIdentity)
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

/// Starts everything, sends a request as `identity` to `path`, returns (status, body).
async fn demo(dir: &std::path::Path, identity: &str, path: &str) -> (StatusCode, String) {
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
    options.admin = None;
    // Vendor filters sit in the same chain as the built-ins, here after routing.
    let running = Waypoint::builder(options)
        .filters(Builtins::new(BuiltinSettings::default()).factories())
        .filter(Arc::new(CallerIdentityFactory))
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
    running.shutdown(std::time::Duration::from_secs(1)).await;
    (
        resp.status(),
        String::from_utf8_lossy(resp.body()).into_owned(),
    )
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (identity, path) in [
        ("spiffe://cluster.local/ns/default/sa/sleep", "/hello"),
        ("spiffe://cluster.local/ns/default/sa/sleep", "/admin/users"),
        ("spiffe://cluster.local/ns/ops/sa/oncall", "/admin/users"),
    ] {
        let (status, body) = demo(dir.path(), identity, path).await;
        println!("{identity} GET {path} -> {status}\n{body}\n");
    }
}

#[tokio::test]
async fn vendor_filter_sees_identity_and_can_refuse() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (status, body) = demo(
        dir.path(),
        "spiffe://cluster.local/ns/default/sa/sleep",
        "/hello",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("spiffe://cluster.local/ns/default/sa/sleep"),
        "backend saw the identity header: {body}"
    );
    let (status, _) = demo(
        dir.path(),
        "spiffe://cluster.local/ns/default/sa/sleep",
        "/admin/x",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = demo(
        dir.path(),
        "spiffe://cluster.local/ns/ops/sa/oncall",
        "/admin/x",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
