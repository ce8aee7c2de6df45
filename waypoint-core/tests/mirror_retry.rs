//! Request mirrors and retries against real backends on loopback: what each backend receives,
//! what the client gets, and how long it takes.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

mod common;
use common::{get, text};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use waypoint_core::flags::ResponseFlag;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use waypoint_core::body::full;
use waypoint_core::config::{AppProtocol, Config, ServiceBackend};
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::filter::{MirrorTarget, RequestContext, RetryPolicy, Timeout, UpstreamTarget};
use waypoint_core::upstream::{Upstream, UpstreamConfig, UpstreamStats};

/// What a backend saw of one request.
#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A loopback backend that records every request and answers the `n`th (from 0) as
/// `answer(n)` says: a status, after a delay.
struct Backend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

async fn backend(
    name: &'static str,
    answer: impl Fn(usize) -> (u16, Duration) + Send + Sync + 'static,
) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let (tx, seen) = mpsc::unbounded_channel();
    let (count, answer) = (requests.clone(), Arc::new(answer));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (count, answer, tx) = (count.clone(), answer.clone(), tx.clone());
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (status, delay) = answer(n);
                let tx = tx.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let _ = tx.send(Seen {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts.headers,
                        body,
                    });
                    tokio::time::sleep(delay).await;
                    let resp = Response::builder()
                        .status(status)
                        .header("x-served-by", name)
                        .body(full(format!("{name} #{n}")))
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        requests,
        seen,
    }
}

fn ok(_: usize) -> (u16, Duration) {
    (200, Duration::ZERO)
}

/// A port nothing listens on.
async fn refused() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn service(name: &str, addrs: &[SocketAddr]) -> Arc<ServiceBackend> {
    common::service_backend(name, AppProtocol::Http1, addrs)
}

fn context(target: UpstreamTarget) -> RequestContext {
    let mut conn = ConnInfo::new(Binding::Plain {
        listener: "test".into(),
    });
    conn.destination = Some(([10, 96, 0, 10], 80).into());
    let mut ctx = RequestContext::new(Arc::new(conn), Arc::new(Config::default()));
    ctx.upstream = Some(target);
    ctx
}

async fn next_seen(b: &mut Backend) -> Seen {
    tokio::time::timeout(Duration::from_secs(5), b.seen.recv())
        .await
        .expect("the backend got a request")
        .unwrap()
}

/// Waits until no mirrored copy is in flight, then returns the counters.
async fn settled(up: &Upstream) -> UpstreamStats {
    let start = Instant::now();
    while up.stats().mirrors_in_flight > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mirrors never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    up.stats()
}

fn retry(codes: &[u16], attempts: u32, backoff_ms: u64) -> Option<Arc<RetryPolicy>> {
    Some(Arc::new(RetryPolicy {
        codes: codes
            .iter()
            .map(|&c| StatusCode::from_u16(c).unwrap())
            .collect(),
        attempts,
        backoff: Duration::from_millis(backoff_ms),
    }))
}

#[tokio::test]
async fn mirrors_get_the_request_while_the_client_gets_the_main_response() {
    let main = backend("main", ok).await;
    let mut m1 = backend("m1", ok).await;
    let mut m2 = backend("m2", ok).await;
    let up = Upstream::new(UpstreamConfig::default());
    let target = UpstreamTarget {
        mirrors: vec![
            MirrorTarget::new(service("m1", &[m1.addr])),
            MirrorTarget::new(service("m2", &[m2.addr])),
        ],
        ..UpstreamTarget::new(service("main", &[main.addr]))
    };
    let req = Request::post("/mirror/a?x=1")
        .header("host", "echo.test:8080")
        .header("x-custom", "yes")
        .header("content-length", "7")
        .body(full("payload"))
        .unwrap();
    let mut ctx = context(target);
    let resp = up.forward(req, &mut ctx).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-by"], "main");
    assert_eq!(text(resp).await, "main #0");
    assert!(ctx.response_flags.is_empty());

    for mirror in [&mut m1, &mut m2] {
        let seen = next_seen(mirror).await;
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.uri, "/mirror/a?x=1");
        assert_eq!(seen.headers["host"], "echo.test:8080");
        assert_eq!(seen.headers["x-custom"], "yes");
        assert_eq!(seen.body, "payload");
    }
    let stats = settled(&up).await;
    assert_eq!(stats.mirrors_sent, 2);
    assert_eq!(main.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_mirror_down_or_slow_does_not_touch_the_client() {
    let main = backend("main", ok).await;
    let slow = backend("slow", |_| (200, Duration::from_secs(3))).await;
    let up = Upstream::new(UpstreamConfig::default());
    let target = UpstreamTarget {
        request_timeout: Timeout::After(Duration::from_millis(400)),
        mirrors: vec![
            MirrorTarget::new(service("down", &[refused().await])),
            MirrorTarget::new(service("slow", &[slow.addr])),
            MirrorTarget::new(service("empty", &[])),
        ],
        ..UpstreamTarget::new(service("main", &[main.addr]))
    };
    for _ in 0..3 {
        let start = Instant::now();
        let mut ctx = context(target.clone());
        let resp = up.forward(get("/"), &mut ctx).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-served-by"], "main");
        assert!(
            start.elapsed() < Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
        assert!(ctx.response_flags.is_empty());
    }
    // The slow mirror's copies end at the request's own timeout, as failures.
    let stats = settled(&up).await;
    assert_eq!(stats.mirrors_failed, 9, "{stats:?}");
    assert_eq!(stats.mirrors_sent, 0);
}

#[tokio::test]
async fn a_share_of_requests_is_mirrored() {
    let main = backend("main", ok).await;
    let pct = backend("pct", ok).await;
    let frac = backend("frac", ok).await;
    let up = Upstream::new(UpstreamConfig::default());
    let target = UpstreamTarget {
        mirrors: vec![
            MirrorTarget::new(service("pct", &[pct.addr])).percent(20),
            MirrorTarget::new(service("frac", &[frac.addr])).fraction(25, 50),
            MirrorTarget::new(service("never", &[pct.addr])).percent(0),
        ],
        ..UpstreamTarget::new(service("main", &[main.addr]))
    };
    const N: usize = 1000;
    for _ in 0..N {
        let mut ctx = context(target.clone());
        let resp = up.forward(get("/percent"), &mut ctx).await;
        assert_eq!(resp.status(), 200);
        text(resp).await;
    }
    settled(&up).await;
    // Binomial: 4 standard deviations either side (sd 12.6 at 20 %, 15.8 at 50 %).
    let p = pct.requests.load(Ordering::SeqCst);
    let f = frac.requests.load(Ordering::SeqCst);
    assert!((150..=250).contains(&p), "20 % mirror got {p} of {N}");
    assert!((437..=563).contains(&f), "25/50 mirror got {f} of {N}");
    assert_eq!(main.requests.load(Ordering::SeqCst), N);
}

#[tokio::test]
async fn a_large_body_is_forwarded_whole_but_neither_mirrored_nor_retried() {
    let mut main = backend("main", |_| (500, Duration::ZERO)).await;
    let mirror = backend("mirror", ok).await;
    let up = Upstream::new(UpstreamConfig {
        max_replay_body: 1024,
        ..UpstreamConfig::default()
    });
    let target = UpstreamTarget {
        retry: retry(&[500], 3, 1),
        mirrors: vec![MirrorTarget::new(service("mirror", &[mirror.addr]))],
        ..UpstreamTarget::new(service("main", &[main.addr]))
    };
    let body = vec![b'x'; 1025];
    let req = Request::post("/upload")
        .header("content-length", "1025")
        .body(full(body.clone()))
        .unwrap();
    let mut ctx = context(target.clone());
    let resp = up.forward(req, &mut ctx).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(next_seen(&mut main).await.body, body);
    let stats = settled(&up).await;
    assert_eq!(main.requests.load(Ordering::SeqCst), 1);
    assert_eq!(mirror.requests.load(Ordering::SeqCst), 0);
    assert_eq!((stats.mirrors_skipped, stats.retries), (1, 0));

    // At the limit it is kept: mirrored and retried.
    let req = Request::post("/upload")
        .body(full(vec![b'y'; 1024]))
        .unwrap();
    let mut ctx = context(target);
    let resp = up.forward(req, &mut ctx).await;
    assert_eq!(resp.status(), 500);
    for _ in 0..4 {
        assert_eq!(next_seen(&mut main).await.body.len(), 1024);
    }
    let stats = settled(&up).await;
    assert_eq!((stats.mirrors_sent, stats.retries), (1, 3));
}

#[tokio::test]
async fn mirrors_beyond_the_bound_are_dropped() {
    let main = backend("main", ok).await;
    let slow = backend("slow", |_| (200, Duration::from_millis(300))).await;
    let up = Upstream::new(UpstreamConfig {
        max_mirrors_in_flight: 2,
        ..UpstreamConfig::default()
    });
    let target = UpstreamTarget {
        mirrors: vec![MirrorTarget::new(service("slow", &[slow.addr]))],
        ..UpstreamTarget::new(service("main", &[main.addr]))
    };
    for _ in 0..5 {
        let resp = up.forward(get("/"), &mut context(target.clone())).await;
        assert_eq!(resp.status(), 200);
    }
    let stats = settled(&up).await;
    assert_eq!(
        (stats.mirrors_sent, stats.mirrors_dropped),
        (2, 3),
        "{stats:?}"
    );
}

/// Fails the first `n` requests with `code`, then answers 200 (the conformance echo's
/// `/retry/?succeedAfter=n&responseCode=code`).
fn fail_first(n: usize, code: u16) -> impl Fn(usize) -> (u16, Duration) + Send + Sync + 'static {
    move |i| (if i < n { code } else { 200 }, Duration::ZERO)
}

#[tokio::test]
async fn retries_listed_codes_up_to_the_attempts() {
    let up = Upstream::new(UpstreamConfig::default());
    // (fails before success, code, expected status, requests the backend sees, flags)
    let cases: [(usize, u16, u16, usize, &[ResponseFlag]); 4] = [
        (2, 500, 200, 3, &[]),
        (3, 500, 200, 4, &[]),
        (4, 500, 500, 4, &[ResponseFlag::UpstreamRetryLimitExceeded]),
        (2, 503, 503, 1, &[]),
    ];
    for (fails, code, want, sent, flags) in cases {
        let b = backend("b", fail_first(fails, code)).await;
        let target = UpstreamTarget {
            retry: retry(&[500, 502], 3, 1),
            ..UpstreamTarget::new(service("b", &[b.addr]))
        };
        let mut ctx = context(target);
        let resp = up.forward(get("/retry"), &mut ctx).await;
        assert_eq!(resp.status(), want, "fails {fails} with {code}");
        assert_eq!(b.requests.load(Ordering::SeqCst), sent, "fails {fails}");
        assert_eq!(ctx.response_flags, flags);
        // The final answer is the last try's own.
        assert_eq!(text(resp).await, format!("b #{}", sent - 1));
    }
    assert_eq!(up.stats().retries, 2 + 3 + 3);

    // Without a policy, one try only.
    let b = backend("b", fail_first(1, 500)).await;
    let resp = up
        .forward(
            get("/"),
            &mut context(UpstreamTarget::new(service("b", &[b.addr]))),
        )
        .await;
    assert_eq!(resp.status(), 500);
    assert_eq!(b.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn backoff_is_waited_before_each_retry() {
    let b = backend("b", fail_first(2, 502)).await;
    let up = Upstream::new(UpstreamConfig::default());
    let target = UpstreamTarget {
        retry: retry(&[502], 2, 150),
        ..UpstreamTarget::new(service("b", &[b.addr]))
    };
    let start = Instant::now();
    let resp = up.forward(get("/"), &mut context(target)).await;
    assert_eq!(resp.status(), 200);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn the_request_timeout_caps_all_tries_with_504() {
    let b = backend("b", |_| (500, Duration::from_millis(50))).await;
    let up = Upstream::new(UpstreamConfig::default());
    let target = UpstreamTarget {
        request_timeout: Timeout::After(Duration::from_millis(400)),
        retry: retry(&[500], 100, 50),
        ..UpstreamTarget::new(service("b", &[b.addr]))
    };
    let start = Instant::now();
    let mut ctx = context(target);
    let resp = up.forward(get("/"), &mut ctx).await;
    let took = start.elapsed();
    assert_eq!(resp.status(), 504);
    assert_eq!(
        ctx.response_flags,
        [
            ResponseFlag::UpstreamRequestTimeout,
            ResponseFlag::UpstreamRetryLimitExceeded
        ]
    );
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_millis(700),
        "{took:?}"
    );
    // About 400 / (50 + 50) tries, far from the 101 allowed.
    let tries = b.requests.load(Ordering::SeqCst);
    assert!((2..=5).contains(&tries), "{tries}");
    assert!(text(resp).await.contains("after 400ms"));
}

#[tokio::test]
async fn a_try_past_the_backend_timeout_is_retried() {
    let b = backend("b", |i| {
        (200, Duration::from_millis(if i == 0 { 2000 } else { 0 }))
    })
    .await;
    let up = Upstream::new(UpstreamConfig::default());
    let target = UpstreamTarget {
        request_timeout: Timeout::After(Duration::from_secs(1)),
        backend_timeout: Timeout::After(Duration::from_millis(150)),
        retry: retry(&[], 1, 10),
        ..UpstreamTarget::new(service("b", &[b.addr]))
    };
    let start = Instant::now();
    let mut ctx = context(target.clone());
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "b #1");
    assert!(start.elapsed() < Duration::from_millis(900));

    // Without retries the backend timeout answers 504 naming it.
    let b = backend("b", |_| (200, Duration::from_millis(2000))).await;
    let target = UpstreamTarget {
        retry: None,
        ..UpstreamTarget {
            backend: service("b", &[b.addr]),
            ..target
        }
    };
    let mut ctx = context(target);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(ctx.response_flags, [ResponseFlag::UpstreamRequestTimeout]);
    assert!(text(resp).await.contains("after 150ms"));
}

#[tokio::test]
async fn a_connection_failure_is_retried_on_another_endpoint() {
    let b = backend("b", ok).await;
    let down = refused().await;
    let up = Upstream::new(UpstreamConfig::default());
    let svc = service("b", &[down, b.addr]);
    let target = UpstreamTarget {
        retry: retry(&[], 1, 1),
        ..UpstreamTarget::new(svc.clone())
    };
    for _ in 0..20 {
        let mut ctx = context(target.clone());
        let resp = up.forward(get("/"), &mut ctx).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(ctx.endpoint.as_ref().unwrap().address, b.addr);
    }
    // Without the policy the refused endpoint answers 503 for its share.
    let failures = count_503(&up, UpstreamTarget::new(svc), 40).await;
    assert!(failures > 0, "{failures}");
}

/// Sends `n` requests, counting the 503s.
async fn count_503(up: &Upstream, target: UpstreamTarget, n: usize) -> usize {
    let mut failures = 0;
    for _ in 0..n {
        let mut ctx = context(target.clone());
        if up.forward(get("/"), &mut ctx).await.status() == 503 {
            assert_eq!(
                ctx.response_flags,
                [ResponseFlag::UpstreamConnectionFailure]
            );
            failures += 1;
        }
    }
    failures
}
