//! Header filters: one written as a closure, one as a type with a response phase that reads the
//! request.
//!
//! - `stamp` tags every request for the backend (`x-waypoint-hop: 1`): a synchronous closure
//!   through `request_fn`, no trait and no `async_trait`.
//! - `Echo` copies the request's method and path onto the response (`x-request: GET /hello`),
//!   so a client sees what the backend was asked. It reads the request head in `on_response`;
//!   it says so with `wants_request_head`, and only then does the chain keep a copy of the head
//!   per request. It uses `async_trait` through `waypoint_core`'s re-export.
//!
//! Run it with `cargo run -p waypoint-examples --example header_filter`.

use http::HeaderValue;
use waypoint_core::body::empty;
use waypoint_core::filter::testing::{TestChain, conn, service};
use waypoint_core::filter::{
    Decision, Filter, FilterSet, Request, RequestContext, Response, async_trait, request_fn,
};
use waypoint_filters::Builtins;

/// Shows the client which request its response answers.
struct Echo;

#[async_trait]
impl Filter for Echo {
    fn name(&self) -> &str {
        "echo-request"
    }

    async fn on_request(&self, _req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        Decision::Continue
    }

    async fn on_response(&self, resp: &mut Response, ctx: &mut RequestContext) {
        let Some(head) = ctx.request_head() else {
            return;
        };
        let line = format!("{} {}", head.method, head.uri.path());
        if let Ok(value) = HeaderValue::from_str(&line) {
            resp.headers_mut().insert("x-request", value);
        }
    }

    fn wants_request_head(&self) -> bool {
        true
    }
}

/// The vendor's filters, installed after the built-ins.
fn vendor(filters: &mut FilterSet) {
    filters
        .filter(request_fn("stamp", |req, _ctx| {
            req.headers_mut()
                .insert("x-waypoint-hop", HeaderValue::from_static("1"));
            Decision::Continue
        }))
        .filter(Echo);
}

/// The Service the requests are for.
fn manifests() -> String {
    service("echo", "10.96.0.10", 80)
}

fn chain() -> TestChain {
    let mut filters = FilterSet::new();
    filters.install(Builtins::default()).install(vendor);
    TestChain::new(&manifests(), filters).expect("manifests parse")
}

async fn round_trip(path: &str) -> (http::HeaderMap, http::HeaderMap) {
    let chain = chain();
    let req = http::Request::post(path)
        .body(empty())
        .expect("valid request");
    let mut exchange = chain.send(conn("10.96.0.10:80"), req).await;
    let sent = exchange.request.headers().clone();
    let resp = exchange.respond(http::Response::new(empty())).await;
    (sent, resp.headers().clone())
}

#[tokio::main]
async fn main() {
    let (sent, returned) = round_trip("/hello?x=1").await;
    println!("the backend got: {sent:?}\nthe client got: {returned:?}");
}

#[tokio::test]
async fn the_closure_filter_stamps_the_request_for_the_backend() {
    let (sent, _) = round_trip("/hello").await;
    assert_eq!(sent["x-waypoint-hop"], "1");
}

#[tokio::test]
async fn the_response_phase_reads_the_request_head() {
    let (_, returned) = round_trip("/hello?x=1").await;
    assert_eq!(returned["x-request"], "POST /hello");
}

#[tokio::test]
async fn no_filter_asking_means_no_request_head_is_kept() {
    let mut filters = FilterSet::new();
    filters.install(Builtins::default());
    let chain = TestChain::new(&manifests(), filters).expect("manifests parse");
    let exchange = chain.get("10.96.0.10:80", "/").await;
    assert!(exchange.forwarded(), "{:?}", exchange.status());
    assert!(exchange.ctx.request_head().is_none());
}
