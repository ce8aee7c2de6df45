//! The chain's phases in memory: body observers, whole-body reads, the request head, typed
//! extensions and the end-of-request phase, driven through the test harness.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::StatusCode;
use http_body::Body as _;
use serde::Deserialize;

use super::testing::{TestChain, collect, conn, text};
use super::*;
use crate::body::{full, local_reply};
use crate::config::parse_manifests;

/// Appends its mark to every data frame and records what it saw.
struct Mark {
    mark: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
}

impl BodyObserver for Mark {
    fn on_data(&mut self, data: &mut Bytes) -> Result<(), BodyRejected> {
        let mut changed = data.to_vec();
        changed.extend_from_slice(self.mark.as_bytes());
        *data = Bytes::from(changed);
        Ok(())
    }
    fn on_end(&mut self) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(format!("end {}", self.mark));
        }
    }
}

/// A filter that attaches a [`Mark`] to the request body and another to the response body.
struct Marks {
    mark: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Filter for Marks {
    fn name(&self) -> &str {
        self.mark
    }
    async fn on_request(&self, _req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let (mark, seen) = (self.mark, self.seen.clone());
        ctx.observe_request_body(Mark { mark, seen });
        Decision::Continue
    }
    async fn on_response(&self, _resp: &mut Response, ctx: &mut RequestContext) {
        let (mark, seen) = (self.mark, self.seen.clone());
        ctx.observe_response_body(Mark { mark, seen });
    }
}

fn marks(seen: Arc<Mutex<Vec<String>>>) -> impl Install {
    move |filters: &mut FilterSet| {
        filters
            .filter(Marks {
                mark: "1",
                seen: seen.clone(),
            })
            .filter(Marks { mark: "2", seen });
    }
}

fn post(body: &'static str) -> Request {
    http::Request::post("/").body(full(body)).unwrap()
}

#[tokio::test]
async fn request_observers_see_frames_in_chain_order_and_response_observers_upstream_first() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let chain = TestChain::new("", marks(seen.clone())).unwrap();
    let mut exchange = chain.send(conn("10.0.0.1:80"), post("req")).await;
    assert_eq!(exchange.forwarded_body().await.unwrap(), "req12");
    let resp = exchange.respond(http::Response::new(full("resp"))).await;
    // The response phase runs filter 2 first: its observer sees the backend's bytes first.
    assert_eq!(text(resp).await, "resp21");
    assert_eq!(*seen.lock().unwrap(), ["end 1", "end 2", "end 2", "end 1"]);
}

#[tokio::test]
async fn a_body_no_filter_observes_is_not_wrapped() {
    let chain = TestChain::new("", |_: &mut FilterSet| {}).unwrap();
    let exchange = chain.send(conn("10.0.0.1:80"), post("12345")).await;
    // A wrapped body would have lost its exact length.
    assert_eq!(exchange.request.body().size_hint().exact(), Some(5));
}

/// Runs a nested chain (as the routing filter runs a rule's filters) and records whether the
/// request body was still unwrapped when the nested chain returned.
struct Nesting {
    inner: FilterChain,
    unwrapped_after_inner: Arc<Mutex<Option<bool>>>,
}

#[async_trait]
impl Filter for Nesting {
    fn name(&self) -> &str {
        "nesting"
    }
    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let decision = self.inner.run_request(req, ctx).await;
        let unwrapped = req.body().size_hint().exact().is_some();
        *self.unwrapped_after_inner.lock().unwrap() = Some(unwrapped);
        decision
    }
}

#[tokio::test]
async fn only_the_outermost_chain_wraps_the_body_with_every_observer() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut inner = FilterSet::new();
    inner.install(marks(seen.clone()));
    let (inner, _) = inner.build(&crate::config::Config::default());
    let unwrapped_after_inner = Arc::new(Mutex::new(None));
    let nesting = Nesting {
        inner,
        unwrapped_after_inner: unwrapped_after_inner.clone(),
    };
    let chain = TestChain::new("", move |filters: &mut FilterSet| {
        filters.filter(nesting);
    })
    .unwrap();
    let mut exchange = chain.send(conn("10.0.0.1:80"), post("x")).await;
    assert_eq!(*unwrapped_after_inner.lock().unwrap(), Some(true));
    assert_eq!(exchange.forwarded_body().await.unwrap(), "x12");
}

/// Rejects any frame holding `bad`.
struct Reject;

impl BodyObserver for Reject {
    fn on_data(&mut self, data: &mut Bytes) -> Result<(), BodyRejected> {
        match data.windows(3).any(|w| w == b"bad") {
            true => Err(BodyRejected("bad bytes".into())),
            false => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_rejecting_observer_fails_the_body_instead_of_truncating_it() {
    let chain = TestChain::new("", |filters: &mut FilterSet| {
        filters.filter(request_fn("reject", |_req, ctx| {
            ctx.observe_request_body(Reject);
            Decision::Continue
        }));
    })
    .unwrap();
    let mut exchange = chain.send(conn("10.0.0.1:80"), post("a bad body")).await;
    let error = exchange.forwarded_body().await.unwrap_err();
    assert!(error.to_string().contains("bad bytes"), "{error}");
}

#[tokio::test]
async fn reading_a_request_body_whole_puts_it_back_or_answers_413_over_the_limit() {
    let mut req = post("0123456789");
    assert_eq!(
        body::read_request_body(&mut req, 10).await.unwrap(),
        "0123456789"
    );
    assert_eq!(collect(req.into_body()).await.unwrap(), "0123456789");
    let mut req = post("0123456789");
    let answer = body::read_request_body(&mut req, 9).await.unwrap_err();
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn reading_a_response_body_over_the_limit_replaces_it_with_502() {
    let mut resp = http::Response::new(full("0123456789"));
    assert_eq!(
        body::read_response_body(&mut resp, 100).await.unwrap(),
        "0123456789"
    );
    assert_eq!(text(resp).await, "0123456789");
    let mut resp = http::Response::new(full("0123456789"));
    assert!(body::read_response_body(&mut resp, 3).await.is_none());
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
}

/// Copies the request's path onto the response, from the kept head.
struct PathOnResponse;

#[async_trait]
impl Filter for PathOnResponse {
    fn name(&self) -> &str {
        "path-on-response"
    }
    async fn on_request(&self, req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        // Changed on the way: the head keeps what arrived.
        *req.uri_mut() = http::Uri::from_static("/rewritten");
        Decision::Continue
    }
    async fn on_response(&self, resp: &mut Response, ctx: &mut RequestContext) {
        if let Some(head) = ctx.request_head() {
            let path = head.uri.path().parse().unwrap();
            resp.headers_mut().insert("x-path", path);
        }
    }
    fn wants_request_head(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn the_request_head_as_it_arrived_is_kept_only_when_a_filter_asks() {
    let chain = TestChain::new("", |filters: &mut FilterSet| {
        filters.filter(PathOnResponse);
    })
    .unwrap();
    let req = http::Request::get("/original")
        .body(crate::body::empty())
        .unwrap();
    let mut exchange = chain.send(conn("10.0.0.1:80"), req).await;
    let resp = exchange
        .respond(http::Response::new(crate::body::empty()))
        .await;
    assert_eq!(resp.headers()["x-path"], "/original");

    let chain = TestChain::new("", |filters: &mut FilterSet| {
        filters.filter(request_fn("plain", |_, _| Decision::Continue));
    })
    .unwrap();
    let exchange = chain.get("10.0.0.1:80", "/").await;
    assert!(exchange.ctx.request_head().is_none());
}

#[derive(Debug, Deserialize)]
struct Spec {
    #[serde(rename = "limits")]
    _limits: Limits,
}

#[derive(Debug, Deserialize)]
struct Limits {
    #[serde(rename = "perMinute")]
    _per_minute: u32,
}

const LIMITER: &str = r#"
apiVersion: example.com/v1
kind: Limiter
metadata: {name: slow, namespace: default}
spec: {limits: {perMinute: many}}
"#;

fn registry() -> ExtensionRegistry {
    let mut registry = ExtensionRegistry::new();
    registry.register_typed("example.com", "Limiter", |_ext: Extension<'_, Spec>| {
        Ok(Arc::new(request_fn("limiter", |_, _| Decision::Continue)) as Arc<dyn Filter>)
    });
    registry
}

#[test]
fn a_typed_spec_that_does_not_fit_names_the_field_and_is_reported_on_the_object() {
    let config = parse_manifests(LIMITER, "test.yaml").unwrap();
    let registry = registry();
    let mut cx = BuildContext::new(&config, &registry);
    let error = match cx.build_extension("example.com", "Limiter", "slow", "default") {
        Err(error) => error,
        Ok(_) => panic!("a string is not a u32"),
    };
    assert!(
        matches!(&error, ExtensionError::InvalidSpec { path, .. } if path == "spec.limits.perMinute"),
        "{error}"
    );
    let reports = cx.into_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].resource.kind, "Limiter");
    assert_eq!(reports[0].reason, "Invalid");
    assert!(reports[0].message.contains("spec.limits.perMinute"));
}

#[test]
fn a_missing_object_or_kind_is_an_error_naming_it() {
    let config = parse_manifests("", "test.yaml").unwrap();
    let registry = registry();
    let mut cx = BuildContext::new(&config, &registry);
    let missing = cx.build_extension("example.com", "Limiter", "slow", "default");
    assert!(matches!(
        missing,
        Err(ExtensionError::ObjectNotFound { .. })
    ));
    let unknown = cx.build_extension("example.com", "Other", "x", "default");
    assert!(matches!(unknown, Err(ExtensionError::NotRegistered { .. })));
    // Nothing to report on: the object is not in the config.
    assert!(cx.reports().is_empty());
}

#[tokio::test]
async fn the_end_of_request_phase_reaches_every_filter_with_the_final_status() {
    let statuses = Arc::new(Mutex::new(Vec::new()));
    struct Log(Arc<Mutex<Vec<u16>>>);
    #[async_trait]
    impl Filter for Log {
        fn name(&self) -> &str {
            "log"
        }
        async fn on_request(&self, _: &mut Request, _: &mut RequestContext) -> Decision {
            Decision::Respond(local_reply(StatusCode::IM_A_TEAPOT, "short and stout"))
        }
        fn on_finished(&self, finished: &Finished<'_>) {
            self.0.lock().unwrap().push(finished.status.as_u16());
        }
    }
    let log = Log(statuses.clone());
    let chain = TestChain::new("", move |filters: &mut FilterSet| {
        filters.filter(log);
    })
    .unwrap();
    let exchange = chain.get("10.0.0.1:80", "/").await;
    assert_eq!(exchange.status(), Some(StatusCode::IM_A_TEAPOT));
    exchange.finish(StatusCode::IM_A_TEAPOT, 0, 16);
    assert_eq!(*statuses.lock().unwrap(), [418]);
}

#[test]
fn bundles_install_in_order_and_a_set_installs_into_another() {
    let noop = |name: &'static str| request_fn(name, |_, _| Decision::Continue);
    let mut vendor = FilterSet::new();
    vendor.filter(noop("b")).filter(noop("c"));
    let mut filters = FilterSet::new();
    filters
        .install(|set: &mut FilterSet| {
            set.filter(noop("a"));
        })
        .install(vendor)
        .build_with("d", move |_cx| Arc::new(noop("d")));
    assert_eq!(filters.names(), ["a", "b", "c", "d"]);
    let (chain, _) = filters.build(&crate::config::Config::default());
    let built: Vec<&str> = chain.filters().iter().map(|f| f.name()).collect();
    assert_eq!(built, ["a", "b", "c", "d"]);
}

#[test]
fn an_untyped_factory_that_refuses_is_reported_on_its_object_too() {
    let config = parse_manifests(LIMITER, "test.yaml").unwrap();
    let mut registry = ExtensionRegistry::new();
    registry.register(
        "example.com",
        "Limiter",
        |_name: &str, _ns: &str, object: Option<&serde_json::Value>| {
            assert!(object.is_some(), "the manifest is handed over");
            Err::<Arc<dyn Filter>, _>("limits are not supported".to_owned())
        },
    );
    let mut cx = BuildContext::new(&config, &registry);
    let refused = cx.build_extension("example.com", "Limiter", "slow", "default");
    assert!(matches!(refused, Err(ExtensionError::Refused(_))));
    let reports = cx.into_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (
            reports[0].resource.name.as_str(),
            reports[0].message.as_str()
        ),
        ("slow", "limits are not supported")
    );
}
