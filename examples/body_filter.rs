//! Body filters: one streams the response body frame by frame, one reads the request body whole.
//!
//! - `Redact` replaces every `secret` in the response body with `******` as frames pass. It
//!   attaches a `BodyObserver` from `on_response`; the observer owns its state and runs inside
//!   the body's `poll_frame`, so it is synchronous. (A word split across two frames is not
//!   caught: a real redactor keeps a tail of the last frame.)
//! - `Signed` reads the request body whole, up to 1 KiB, and refuses it unless it ends with
//!   `-- signed`. Over the limit the client gets 413 before anything is forwarded; within it the
//!   body is put back and the backend sees it unchanged.
//!
//! Run it with `cargo run -p waypoint-examples --example body_filter`.

use bytes::Bytes;
use http::StatusCode;
use waypoint_core::body::{full, local_reply};
use waypoint_core::filter::body::read_request_body;
use waypoint_core::filter::testing::{TestChain, conn, text};
use waypoint_core::filter::{
    BodyObserver, BodyRejected, Decision, Filter, FilterSet, Request, RequestContext, Response,
    async_trait,
};

/// Streams the response body through [`Redactor`].
struct Redact;

/// The per-response state of [`Redact`]: how many words it replaced.
struct Redactor {
    replaced: usize,
}

impl BodyObserver for Redactor {
    fn on_data(&mut self, data: &mut Bytes) -> Result<(), BodyRejected> {
        let text = String::from_utf8_lossy(data);
        if text.contains("secret") {
            self.replaced += text.matches("secret").count();
            *data = Bytes::from(text.replace("secret", "******"));
        }
        Ok(())
    }

    fn on_end(&mut self) {
        println!("redacted {} word(s)", self.replaced);
    }
}

#[async_trait]
impl Filter for Redact {
    fn name(&self) -> &str {
        "redact"
    }

    async fn on_request(&self, _req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        Decision::Continue
    }

    async fn on_response(&self, resp: &mut Response, ctx: &mut RequestContext) {
        // The body changes size: the length the backend sent no longer holds.
        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
        ctx.observe_response_body(Redactor { replaced: 0 });
    }
}

/// Reads the request body whole and checks its signature line.
struct Signed;

/// The most a signed request body may hold.
const SIGNED_LIMIT: usize = 1024;

#[async_trait]
impl Filter for Signed {
    fn name(&self) -> &str {
        "signed"
    }

    async fn on_request(&self, req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        let body = match read_request_body(req, SIGNED_LIMIT).await {
            Ok(body) => body,
            Err(answer) => return Decision::Respond(answer),
        };
        if body.ends_with(b"-- signed") {
            Decision::Continue
        } else {
            Decision::Respond(local_reply(StatusCode::UNAUTHORIZED, "unsigned body"))
        }
    }
}

fn chain() -> TestChain {
    let mut filters = FilterSet::new();
    filters.filter(Signed).filter(Redact);
    TestChain::new("", filters).expect("manifests parse")
}

fn post(body: impl Into<Bytes>) -> Request {
    http::Request::post("/upload")
        .body(full(body))
        .expect("valid request")
}

#[tokio::main]
async fn main() {
    let chain = chain();
    let mut exchange = chain
        .send(conn("10.96.0.10:80"), post("hello -- signed"))
        .await;
    let answer = exchange
        .respond(http::Response::new(full("the secret is 42")))
        .await;
    println!("client reads: {}", text(answer).await);
}

#[tokio::test]
async fn the_response_body_is_redacted_frame_by_frame() {
    let chain = chain();
    let mut exchange = chain
        .send(conn("10.96.0.10:80"), post("hello -- signed"))
        .await;
    assert!(exchange.forwarded());
    let answer = exchange
        .respond(http::Response::new(full("secret: the secret is 42")))
        .await;
    assert_eq!(text(answer).await, "******: the ****** is 42");
}

#[tokio::test]
async fn a_body_read_whole_reaches_the_backend_unchanged() {
    let chain = chain();
    let mut exchange = chain
        .send(conn("10.96.0.10:80"), post("hello -- signed"))
        .await;
    let forwarded = exchange.forwarded_body().await.expect("body reads");
    assert_eq!(forwarded, "hello -- signed");
}

#[tokio::test]
async fn an_unsigned_body_is_refused_and_an_oversized_one_is_413() {
    let chain = chain();
    let exchange = chain.send(conn("10.96.0.10:80"), post("hello")).await;
    assert_eq!(exchange.status(), Some(StatusCode::UNAUTHORIZED));
    let big = vec![b'x'; SIGNED_LIMIT + 1];
    let exchange = chain.send(conn("10.96.0.10:80"), post(big)).await;
    assert_eq!(exchange.status(), Some(StatusCode::PAYLOAD_TOO_LARGE));
}
