//! An end-of-request filter: the vendor's own access log line.
//!
//! `on_finished` runs once per request when the response body has ended (or the client went
//! away), with the final status, the response flags, the duration and the body byte counts.
//! It is synchronous and must not block: this one formats a line and hands it to a sink (a
//! channel in real life; a vector here, so the test can read it).
//!
//! Run it with `cargo run -p waypoint-examples --example access_log`.

use std::sync::{Arc, Mutex};

use http::StatusCode;
use waypoint_core::filter::testing::{TestChain, conn_as, service};
use waypoint_core::filter::{
    Decision, Filter, FilterSet, Finished, Request, RequestContext, async_trait,
};
use waypoint_filters::Builtins;

/// Writes one line per finished request.
struct AccessLog {
    lines: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Filter for AccessLog {
    fn name(&self) -> &str {
        "vendor-access-log"
    }

    async fn on_request(&self, _req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        Decision::Continue
    }

    fn on_finished(&self, finished: &Finished<'_>) {
        let ctx = finished.ctx;
        let caller = ctx
            .conn
            .peer_identity
            .as_ref()
            .map_or("-", |id| id.as_str());
        let route = ctx
            .route
            .as_ref()
            .map_or("-".to_owned(), |r| format!("{}#{}", r.route.name, r.rule));
        let flags: Vec<String> = ctx.response_flags.iter().map(|f| f.to_string()).collect();
        let line = format!(
            "{caller} {route} {} flags={} bytes={}/{}",
            finished.status.as_u16(),
            if flags.is_empty() {
                "-".into()
            } else {
                flags.join(",")
            },
            finished.request_bytes,
            finished.response_bytes,
        );
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
    }
}

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: echo, port: 80}]
"#;

/// A chain with the built-ins and the access log, and the log's lines.
fn chain() -> (TestChain, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut filters = FilterSet::new();
    filters.install(Builtins::default()).filter(AccessLog {
        lines: lines.clone(),
    });
    let chain = TestChain::new(
        &format!("{}---\n{ROUTE}", service("echo", "10.96.0.10", 80)),
        filters,
    )
    .expect("manifests parse");
    (chain, lines)
}

const SLEEP: &str = "spiffe://cluster.local/ns/default/sa/sleep";

async fn request(chain: &TestChain, path: &str) {
    let req = http::Request::get(path)
        .body(waypoint_core::body::empty())
        .expect("valid request");
    let exchange = chain.send(conn_as("10.96.0.10:80", SLEEP), req).await;
    // The pipeline calls the end-of-request phase when the body ends; the harness lets a test
    // say how it ended.
    let status = exchange.status().unwrap_or(StatusCode::OK);
    exchange.finish(status, 0, 12);
}

#[tokio::main]
async fn main() {
    let (chain, lines) = chain();
    request(&chain, "/api/users").await;
    request(&chain, "/elsewhere").await;
    for line in lines.lock().expect("not poisoned").iter() {
        println!("{line}");
    }
}

#[tokio::test]
async fn every_finished_request_leaves_one_line_with_status_route_and_flags() {
    let (chain, lines) = chain();
    request(&chain, "/api/users").await;
    request(&chain, "/elsewhere").await;
    let lines = lines.lock().expect("not poisoned").clone();
    assert_eq!(
        lines,
        [
            format!("{SLEEP} echo#0 200 flags=- bytes=0/12"),
            format!("{SLEEP} - 404 flags=NR bytes=0/12"),
        ]
    );
}
