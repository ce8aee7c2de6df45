//! Upstream forwarding against real backends on loopback.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

mod common;
use common::{get, text};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use waypoint_core::flags::ResponseFlag;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use waypoint_core::body::{Body, boxed, empty, full};
use waypoint_core::config::{AppProtocol, Config, ServiceBackend};
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::filter::{RequestContext, Timeout, UpstreamTarget};
use waypoint_core::upstream::{Upstream, UpstreamConfig};

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// A loopback backend; counts the connections it accepted and the requests it served.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

async fn backend(h2: bool, handler: Handler) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (conns, reqs) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            conns.fetch_add(1, Ordering::SeqCst);
            let (handler, reqs) = (handler.clone(), reqs.clone());
            let svc = service_fn(move |req| {
                reqs.fetch_add(1, Ordering::SeqCst);
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            common::serve_backend_connection(stream, svc, h2);
        }
    });
    Backend {
        addr,
        connections,
        requests,
    }
}

/// Answers with the request body streamed back, and what it saw in headers: `x-method`,
/// `x-uri`, `x-version`, `x-authority`, and every request header as `x-req-<name>`.
/// `x-send-hop: 1` asks for hop-by-hop headers on the response.
fn echo() -> Handler {
    Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let mut resp = Response::builder()
                .header("x-method", req.method().as_str())
                .header("x-uri", req.uri().to_string())
                .header("x-version", format!("{:?}", req.version()))
                .header(
                    "x-authority",
                    req.uri().authority().map_or("", |a| a.as_str()),
                );
            for (name, value) in req.headers() {
                resp = resp.header(format!("x-req-{name}"), value);
            }
            if req.headers().contains_key("x-send-hop") {
                resp = resp
                    .header("connection", "x-resp-private")
                    .header("x-resp-private", "1")
                    .header("keep-alive", "timeout=5")
                    .header("proxy-authenticate", "Basic")
                    .header("trailer", "x-sum");
            }
            resp.body(boxed(req.into_body())).unwrap()
        })
    })
}

fn service(protocol: AppProtocol, addrs: &[SocketAddr]) -> Arc<ServiceBackend> {
    common::service_backend("echo", protocol, addrs)
}

fn ctx_for(backend: Option<Arc<ServiceBackend>>, timeout: Option<Duration>) -> RequestContext {
    let mut conn = ConnInfo::new(Binding::Plain {
        listener: "test".into(),
    });
    conn.destination = Some(([10, 96, 0, 10], 80).into());
    let mut ctx = RequestContext::new(Arc::new(conn), Arc::new(Config::default()));
    ctx.upstream = backend.map(|backend| UpstreamTarget {
        request_timeout: timeout.map_or(Timeout::Default, Timeout::from_gateway),
        ..UpstreamTarget::new(backend)
    });
    ctx
}

fn in_flight(backend: &ServiceBackend, i: usize) -> usize {
    backend.endpoints[i].stats.in_flight.load(Ordering::SeqCst)
}

#[tokio::test]
async fn forwards_method_path_query_headers_and_body() {
    let b = backend(false, echo()).await;
    let up = Upstream::new(UpstreamConfig::default());
    let mut ctx = ctx_for(Some(service(AppProtocol::Http1, &[b.addr])), None);
    let req = Request::builder()
        .method("PUT")
        .uri("/items/7?color=red&size=L")
        .header("host", "echo.test:8080")
        .header("x-custom", "yes")
        .header("authorization", "Bearer abc")
        .body(full("payload"))
        .unwrap();
    let resp = up.forward(req, &mut ctx).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-method"], "PUT");
    assert_eq!(h["x-uri"], "/items/7?color=red&size=L");
    assert_eq!(h["x-version"], "HTTP/1.1");
    assert_eq!(h["x-req-host"], "echo.test:8080");
    assert_eq!(h["x-req-x-custom"], "yes");
    assert_eq!(h["x-req-authorization"], "Bearer abc");
    // Transparent: nothing added on the way.
    assert!(h.get("x-req-x-forwarded-proto").is_none());
    assert!(h.get("x-req-x-forwarded-for").is_none());
    assert_eq!(text(resp).await, "payload");
    assert!(ctx.response_flags.is_empty());
}

#[tokio::test]
async fn http2_downstream_request_gets_host_from_authority() {
    let b = backend(false, echo()).await;
    let up = Upstream::new(UpstreamConfig::default());
    let mut ctx = ctx_for(Some(service(AppProtocol::Http1, &[b.addr])), None);
    let req = Request::builder()
        .version(Version::HTTP_2)
        .uri("http://echo.default.svc.cluster.local/h2?x=1")
        .body(empty())
        .unwrap();
    let resp = up.forward(req, &mut ctx).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-req-host"],
        "echo.default.svc.cluster.local"
    );
    assert_eq!(resp.headers()["x-uri"], "/h2?x=1");
    assert_eq!(resp.headers()["x-version"], "HTTP/1.1");
}

/// A request body fed through a channel, so the test controls when each chunk exists.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }
}

fn chunk(i: usize, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|j| ((i * 31 + j) % 251) as u8)
            .collect::<Vec<_>>(),
    )
}

async fn streams_8mib_both_ways(protocol: AppProtocol) {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 128; // 8 MiB
    let b = backend(protocol == AppProtocol::H2c, echo()).await;
    let up = Upstream::new(UpstreamConfig::default());
    let svc = service(protocol, &[b.addr]);
    let mut ctx = ctx_for(Some(svc.clone()), None);

    let (tx, rx) = mpsc::channel(2);
    tx.send(chunk(0, CHUNK)).await.unwrap();
    let req = Request::builder()
        .method("POST")
        .uri("/upload")
        .header("host", "echo.test")
        .body(boxed(ChannelBody(rx)))
        .unwrap();
    // Response headers come back while the request body is still open: nothing is buffered
    // whole on the way.
    let resp = tokio::time::timeout(Duration::from_secs(5), up.forward(req, &mut ctx))
        .await
        .expect("response headers before the request body ended");
    assert_eq!(resp.status(), 200);

    let sender = tokio::spawn(async move {
        for i in 1..CHUNKS {
            tx.send(chunk(i, CHUNK)).await.unwrap();
        }
    });
    let mut expected = Vec::with_capacity(CHUNK * CHUNKS);
    for i in 0..CHUNKS {
        expected.extend_from_slice(&chunk(i, CHUNK));
    }
    let mut body = resp.into_body();
    let mut received = 0;
    let mut mismatch = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            if mismatch.is_none() && expected[received..received + data.len()] != data[..] {
                mismatch = Some(received);
            }
            received += data.len();
        }
    }
    sender.await.unwrap();
    assert_eq!(received, CHUNK * CHUNKS);
    assert_eq!(mismatch, None, "bytes differ from offset");
    assert_eq!(in_flight(&svc, 0), 0);
}

#[tokio::test]
async fn streams_a_large_body_both_ways_http1() {
    streams_8mib_both_ways(AppProtocol::Http1).await;
}

#[tokio::test]
async fn streams_a_large_body_both_ways_h2c() {
    streams_8mib_both_ways(AppProtocol::H2c).await;
}

#[tokio::test]
async fn refused_port_is_503_uf() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let up = Upstream::new(UpstreamConfig::default());
    for protocol in [AppProtocol::Http1, AppProtocol::H2c] {
        let svc = service(protocol, &[closed]);
        let mut ctx = ctx_for(Some(svc.clone()), None);
        let resp = up.forward(get("/"), &mut ctx).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(
            ctx.response_flags,
            [ResponseFlag::UpstreamConnectionFailure]
        );
        assert_eq!(
            text(resp).await,
            format!("upstream connect error to {closed}: connection refused\n")
        );
        assert_eq!(in_flight(&svc, 0), 0);
    }
}

#[tokio::test]
async fn reset_before_response_is_503_uf() {
    // A backend that reads the request and hangs up without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        }
    });
    let up = Upstream::new(UpstreamConfig::default());
    let mut ctx = ctx_for(Some(service(AppProtocol::Http1, &[addr])), None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        ctx.response_flags,
        [ResponseFlag::UpstreamConnectionFailure]
    );
    let body = text(resp).await;
    assert!(
        body.starts_with(&format!("upstream connect error to {addr}: connection")),
        "{body}"
    );
}

#[tokio::test]
async fn slow_upstream_times_out_with_504_ut() {
    let slow: Handler = Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Response::new(full("late"))
        })
    });
    let b = backend(false, slow).await;
    let up = Upstream::new(UpstreamConfig::default());
    let svc = service(AppProtocol::Http1, &[b.addr]);
    let mut ctx = ctx_for(Some(svc.clone()), Some(Duration::from_millis(300)));
    let start = Instant::now();
    let resp = up.forward(get("/slow"), &mut ctx).await;
    let took = start.elapsed();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(ctx.response_flags, [ResponseFlag::UpstreamRequestTimeout]);
    assert_eq!(
        text(resp).await,
        format!("upstream request timeout after 300ms to {}\n", b.addr)
    );
    assert_eq!(in_flight(&svc, 0), 0);

    // The waypoint default applies when the route sets none.
    let up = Upstream::new(UpstreamConfig {
        request_timeout: Duration::from_millis(200),
        ..UpstreamConfig::default()
    });
    let mut ctx = ctx_for(Some(svc), None);
    let resp = up.forward(get("/slow"), &mut ctx).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(ctx.response_flags, [ResponseFlag::UpstreamRequestTimeout]);
}

#[tokio::test]
async fn no_endpoints_is_503_uh_and_no_target_is_404_nr() {
    let up = Upstream::new(UpstreamConfig::default());
    let mut ctx = ctx_for(Some(service(AppProtocol::Http1, &[])), None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(ctx.response_flags, [ResponseFlag::NoHealthyUpstream]);
    assert_eq!(
        text(resp).await,
        "no healthy upstream for Service default/echo:80\n"
    );

    let mut ctx = ctx_for(None, None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(ctx.response_flags, [ResponseFlag::NoRoute]);
    assert!(text(resp).await.contains("10.96.0.10:80"));
}

#[tokio::test]
async fn h2c_backend_receives_http2_with_the_host_as_authority() {
    let b = backend(true, echo()).await;
    let up = Upstream::new(UpstreamConfig::default());
    let svc = service(AppProtocol::H2c, &[b.addr]);
    for _ in 0..5 {
        let mut ctx = ctx_for(Some(svc.clone()), None);
        let mut req = get("/grpc.Echo/Say?x=1");
        req.headers_mut()
            .insert("te", HeaderValue::from_static("trailers"));
        req.headers_mut()
            .insert("connection", HeaderValue::from_static("keep-alive"));
        let resp = up.forward(req, &mut ctx).await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["x-version"], "HTTP/2.0");
        assert_eq!(h["x-authority"], "echo.test");
        assert_eq!(h["x-uri"], "http://echo.test/grpc.Echo/Say?x=1");
        assert_eq!(h["x-req-te"], "trailers");
        text(resp).await;
    }
    // HTTP/2 multiplexes: one connection serves them all.
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    assert_eq!(in_flight(&svc, 0), 0);
}

#[tokio::test]
async fn p2c_spreads_load_over_two_endpoints() {
    let (a, b) = (backend(false, echo()).await, backend(false, echo()).await);
    let up = Upstream::new(UpstreamConfig::default());
    let svc = service(AppProtocol::Http1, &[a.addr, b.addr]);
    for _ in 0..200 {
        let mut ctx = ctx_for(Some(svc.clone()), None);
        let resp = up.forward(get("/"), &mut ctx).await;
        assert_eq!(resp.status(), 200);
        text(resp).await;
    }
    let (na, nb) = (
        a.requests.load(Ordering::SeqCst),
        b.requests.load(Ordering::SeqCst),
    );
    assert_eq!(na + nb, 200);
    assert!(na > 50 && nb > 50, "{na} / {nb}");
}

#[tokio::test]
async fn p2c_avoids_the_endpoint_with_requests_in_flight() {
    let (a, b) = (backend(false, echo()).await, backend(false, echo()).await);
    let up = Upstream::new(UpstreamConfig::default());
    let svc = service(AppProtocol::Http1, &[a.addr, b.addr]);
    // Hold an unread response from endpoint a: b has fewer in flight from then on.
    let mut held = None;
    while held.is_none() {
        let mut ctx = ctx_for(Some(svc.clone()), None);
        let resp = up.forward(get("/"), &mut ctx).await;
        if in_flight(&svc, 0) == 1 {
            held = Some(resp);
        } else {
            text(resp).await;
        }
    }
    let before = a.requests.load(Ordering::SeqCst);
    for _ in 0..20 {
        let mut ctx = ctx_for(Some(svc.clone()), None);
        text(up.forward(get("/"), &mut ctx).await).await;
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), before);
    drop(held);
    assert_eq!(in_flight(&svc, 0), 0);
}

#[tokio::test]
async fn in_flight_returns_to_zero_when_consumed_or_dropped() {
    let b = backend(false, echo()).await;
    let up = Upstream::new(UpstreamConfig::default());
    let svc = service(AppProtocol::Http1, &[b.addr]);

    let mut ctx = ctx_for(Some(svc.clone()), None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(in_flight(&svc, 0), 1, "counted until the body is read");
    text(resp).await;
    assert_eq!(in_flight(&svc, 0), 0);

    let mut ctx = ctx_for(Some(svc.clone()), None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(in_flight(&svc, 0), 1);
    drop(resp);
    assert_eq!(in_flight(&svc, 0), 0);
}

#[tokio::test]
async fn connections_are_reused() {
    let b = backend(false, echo()).await;
    let up = Upstream::new(UpstreamConfig::default());
    let svc = service(AppProtocol::Http1, &[b.addr]);
    for i in 0..20 {
        let mut ctx = ctx_for(Some(svc.clone()), None);
        let resp = up.forward(get(&format!("/{i}")), &mut ctx).await;
        assert_eq!(resp.status(), 200);
        text(resp).await;
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 20);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let b = backend(false, echo()).await;
    let up = Upstream::new(UpstreamConfig::default());
    let mut ctx = ctx_for(Some(service(AppProtocol::Http1, &[b.addr])), None);
    let req = Request::builder()
        .uri("/")
        .header("host", "echo.test")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("upgrade", "h2c")
        .header("te", "trailers")
        .header("x-send-hop", "1")
        .body(full("x"))
        .unwrap();
    let resp = up.forward(req, &mut ctx).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    for gone in [
        "x-req-x-private",
        "x-req-keep-alive",
        "x-req-proxy-connection",
        "x-req-proxy-authorization",
        "x-req-upgrade",
        "x-req-transfer-encoding",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the backend");
    }
    assert_eq!(h["x-req-te"], "trailers");
    assert_eq!(h["x-req-x-send-hop"], "1");
    for gone in [
        "connection",
        "x-resp-private",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "transfer-encoding",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the client");
    }
}

/// A proxy in front of `svc`: a hyper HTTP/1.1 server whose service calls `forward`.
async fn proxy(up: Arc<Upstream>, svc: Arc<ServiceBackend>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (up, svc) = (up.clone(), svc.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                let (up, svc) = (up.clone(), svc.clone());
                async move {
                    let mut ctx = ctx_for(Some(svc), None);
                    Ok::<_, Infallible>(up.forward(req.map(boxed), &mut ctx).await)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades(),
            );
        }
    });
    addr
}

#[tokio::test]
async fn websocket_style_upgrade_passes_bytes_both_ways() {
    // Answers 101, then echoes what it reads in upper case.
    let ws: Handler = Arc::new(|mut req: Request<Incoming>| {
        Box::pin(async move {
            if req.headers().get("upgrade").map(|v| v.as_bytes()) != Some(b"websocket") {
                return Response::builder().status(400).body(empty()).unwrap();
            }
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.unwrap());
                let mut buf = [0u8; 1024];
                loop {
                    let n = io.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    io.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                .body(empty())
                .unwrap()
        })
    });
    let b = backend(false, ws).await;
    let svc = service(AppProtocol::Http1, &[b.addr]);
    let up = Arc::new(Upstream::new(UpstreamConfig::default()));
    let proxy = proxy(up, svc.clone()).await;

    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="));

    for msg in [&b"hello"[..], b"second frame"] {
        client.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg.to_ascii_uppercase());
    }
    // The tunnel counts as a request in flight until it closes.
    assert_eq!(in_flight(&svc, 0), 1);
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight(&svc, 0) != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight(&svc, 0), 0);
}
