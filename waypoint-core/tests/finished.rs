//! The end-of-request filter phase through the proxy: a filter's `on_finished` runs once per
//! request, after the response body is over, with the status, flags and byte counts the client
//! saw — including when the client goes away mid-body (`DC`).

// Tests may unwrap (house rule); the lint only spares #[test] functions, not their helpers.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use waypoint_core::body::{self, Body};
use waypoint_core::config::{AppProtocol, Config};
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::filter::{
    BuildContext, Decision, ExtensionRegistry, Filter, FilterFactory, Finished, RequestContext,
    UpstreamTarget,
};
use waypoint_core::flags::ResponseFlag;
use waypoint_core::http::{HttpServer, HttpServerConfig};
use waypoint_core::pipeline::Pipeline;
use waypoint_core::snapshot::SnapshotStore;
use waypoint_core::telemetry::{Telemetry, TelemetryOptions};
use waypoint_core::upstream::{Upstream, UpstreamConfig};

/// What one `on_finished` call saw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    flags: Vec<ResponseFlag>,
    request_bytes: u64,
    response_bytes: u64,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Routes every request to the backend (but answers `/deny` itself) and writes down each end
/// of request.
struct Recorder {
    backend: SocketAddr,
    log: Log,
}

#[async_trait::async_trait]
impl Filter for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn on_request(&self, req: &mut Request<Body>, ctx: &mut RequestContext) -> Decision {
        if req.uri().path() == "/deny" {
            return Decision::Respond(body::local_reply(StatusCode::FORBIDDEN, "denied"));
        }
        let backend = common::service_backend("echo", AppProtocol::Http1, &[self.backend]);
        ctx.upstream = Some(UpstreamTarget::new(backend));
        Decision::Continue
    }

    fn on_finished(&self, finished: &Finished<'_>) {
        self.log.lock().unwrap().push(Seen {
            status: finished.status,
            flags: finished.ctx.response_flags.clone(),
            request_bytes: finished.request_bytes,
            response_bytes: finished.response_bytes,
        });
    }
}

struct RecorderFactory(SocketAddr, Log);

impl FilterFactory for RecorderFactory {
    fn name(&self) -> &str {
        "recorder"
    }

    fn build(&self, _cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(Recorder {
            backend: self.0,
            log: self.1.clone(),
        })
    }
}

/// A response body that sends one chunk and then never ends.
struct Stalls(Option<Bytes>);

impl http_body::Body for Stalls {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Pending,
        }
    }
}

/// A backend answering `/stall` with a body that stops after `part`, anything else with
/// `hello`.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                let body = match req.uri().path() {
                    "/stall" => Stalls(Some(Bytes::from_static(b"part"))).boxed_unsync(),
                    _ => Full::new(Bytes::from_static(b"hello"))
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                };
                Ok::<_, Infallible>(Response::new(body))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// A pipeline routing to a fresh backend, and the log its recorder filter writes.
async fn proxy() -> (Arc<Pipeline>, Log) {
    let log = Log::default();
    let factory = RecorderFactory(backend().await, log.clone());
    let store = Arc::new(SnapshotStore::new(
        vec![Arc::new(factory)],
        ExtensionRegistry::default(),
    ));
    store.apply(Config::default());
    let telemetry = Telemetry::new(&mut Registry::default(), TelemetryOptions::default()).unwrap();
    let upstream = Arc::new(Upstream::new(UpstreamConfig::default()));
    let http = HttpServer::new(&HttpServerConfig::default());
    (
        Arc::new(Pipeline::new(store, http, upstream, telemetry)),
        log,
    )
}

/// A client connection served by `pipeline`, as the listeners hand it one, over an
/// in-memory pipe.
async fn client(pipeline: Arc<Pipeline>) -> hyper::client::conn::http1::SendRequest<Body> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let conn = ConnInfo::new(Binding::Plain {
        listener: "test".into(),
    });
    let (trigger, shutdown) = waypoint_core::shutdown::channel();
    // The trigger lives as long as the connection task: dropping it would stop the connection.
    tokio::spawn(async move {
        pipeline
            .serve_connection(Box::new(server_io), conn, shutdown)
            .await;
        drop(trigger);
    });
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Waits until the log holds `n` entries (the phase runs on the server's side of the pipe).
async fn settled(log: &Log, n: usize) -> Vec<Seen> {
    for _ in 0..200 {
        if log.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A moment more, so a second (wrong) call would show.
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn on_finished_runs_once_with_the_status_and_bytes_of_a_whole_exchange() {
    let (proxy, log) = proxy().await;
    let mut sender = client(proxy).await;
    let req = Request::post("/whole")
        .header("host", "echo.default")
        .body(body::full("abc"))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"hello");
    let seen = settled(&log, 1).await;
    assert_eq!(
        seen,
        [Seen {
            status: StatusCode::OK,
            flags: vec![],
            request_bytes: 3,
            response_bytes: 5,
        }]
    );
}

#[tokio::test]
async fn on_finished_runs_once_with_dc_when_the_client_goes_away_mid_body() {
    let (proxy, log) = proxy().await;
    let mut sender = client(proxy).await;
    let req = Request::get("/stall")
        .header("host", "echo.default")
        .body(body::empty())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"part");
    assert!(
        log.lock().unwrap().is_empty(),
        "not over while the body streams"
    );
    // The client goes away: its connection closes with the body unfinished.
    drop(body);
    drop(sender);
    let seen = settled(&log, 1).await;
    assert_eq!(
        seen,
        [Seen {
            status: StatusCode::OK,
            flags: vec![ResponseFlag::DownstreamConnectionTermination],
            request_bytes: 0,
            response_bytes: 4,
        }]
    );
}

#[tokio::test]
async fn on_finished_runs_for_a_request_a_filter_answers() {
    let (proxy, log) = proxy().await;
    let mut sender = client(proxy).await;
    let req = Request::get("/deny")
        .header("host", "echo.default")
        .body(body::empty())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = settled(&log, 1).await;
    assert_eq!(
        seen,
        [Seen {
            status: StatusCode::FORBIDDEN,
            flags: vec![],
            request_bytes: 0,
            response_bytes: text.len() as u64,
        }]
    );
}
