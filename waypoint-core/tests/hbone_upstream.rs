//! Upstream transports toward the mesh: HBONE to a destination ztunnel (played by our own
//! `HboneListener`, or a bare h2 server where raw CONNECT headers matter), the co-located
//! ztunnel's Unix socket, and the per-endpoint transport choice made from manifests.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

mod common;
use common::text;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use waypoint_core::flags::ResponseFlag;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};

use waypoint_core::body::{Body, boxed, empty};
use waypoint_core::config::build::{EndpointStatsCache, MeshOptions};
use waypoint_core::config::load::parse_manifests_with;
use waypoint_core::config::{
    AppProtocol, Config, Endpoint, EndpointStats, EndpointTransport, ProtocolSelection,
    ResourceRef, ServiceBackend,
};
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::filter::{RequestContext, UpstreamTarget};
use waypoint_core::identity::SpiffeId;
use waypoint_core::shutdown::{self, ShutdownTrigger};
use waypoint_core::tls::{self, CertStore, DevCa, ExpectedIdentity, WorkloadCerts};
use waypoint_core::transport::hbone::{HboneListener, HboneOptions};
use waypoint_core::transport::{BoxedIo, TransportMetrics};
use waypoint_core::upstream::{HboneClientOptions, Upstream, UpstreamConfig, UpstreamMode};
use waypoint_core::wire::hbone::H2Stream;
use waypoint_core::wire::proxy_protocol::{Decoded, TLV_PEER_IDENTITY, decode, encode_v2};

const DAY: Duration = Duration::from_secs(86_400);

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn waypoint_id() -> SpiffeId {
    id("spiffe://cluster.local/ns/mesh/sa/waypoint")
}

fn backend_id() -> SpiffeId {
    id("spiffe://cluster.local/ns/shop/sa/cart")
}

fn certs_for(ca: &DevCa, who: &SpiffeId) -> WorkloadCerts {
    ca.workload_certs(who, DAY).unwrap()
}

fn store_for(ca: &DevCa, who: &SpiffeId) -> Arc<CertStore> {
    CertStore::from_certs(certs_for(ca, who), vec![]).unwrap()
}

/// An echo backend on loopback, HTTP/1.1 or h2c, answering with what it saw.
async fn echo_backend(h2: bool, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |req: Request<Incoming>| async move {
                tokio::time::sleep(delay).await;
                let resp = Response::builder()
                    .header("x-version", format!("{:?}", req.version()))
                    .header("x-uri", req.uri().to_string())
                    .header(
                        "x-host",
                        req.headers()
                            .get("host")
                            .cloned()
                            .unwrap_or(http::HeaderValue::from_static("")),
                    )
                    .body(boxed(req.into_body()))
                    .unwrap();
                Ok::<_, Infallible>(resp)
            });
            common::serve_backend_connection(stream, svc, h2);
        }
    });
    addr
}

/// Copies a tunnel to `to` both ways, as a destination ztunnel hands it to the pod.
async fn pipe(mut io: BoxedIo, to: SocketAddr) {
    if let Ok(mut tcp) = TcpStream::connect(to).await {
        let _ = tokio::io::copy_bidirectional(&mut io, &mut tcp).await;
    }
}

/// A TCP relay in front of `to` counting the connections it accepted: the TLS connections the
/// waypoint opened.
async fn counting_relay(to: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(to).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, count)
}

/// The destination ztunnel: an `HboneListener` presenting `server` that pipes every tunnel to
/// its authority and records the `ConnInfo` it built.
struct Ztunnel {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<ConnInfo>>>,
    _stop: ShutdownTrigger,
}

async fn ztunnel(ca: &DevCa, server: &SpiffeId) -> Ztunnel {
    let listener = HboneListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        store_for(ca, server),
        HboneOptions::default(),
        Arc::new(TransportMetrics::new()),
    )
    .await
    .unwrap();
    let addr = listener.local_addr();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let (stop, shutdown) = shutdown::channel();
    let handler = move |io: BoxedIo, conn: ConnInfo| {
        let to = conn.destination;
        recorded.lock().unwrap().push(conn);
        async move {
            if let Some(to) = to {
                pipe(io, to).await;
            }
        }
    };
    tokio::spawn(listener.serve(handler, shutdown));
    Ztunnel {
        addr,
        seen,
        _stop: stop,
    }
}

fn upstream(ca: &DevCa, hbone_port: u16) -> Upstream {
    let cfg = UpstreamConfig {
        mode: UpstreamMode::Auto,
        hbone: HboneClientOptions {
            port: hbone_port,
            ..HboneClientOptions::default()
        },
        ..UpstreamConfig::default()
    };
    Upstream::with_certs(cfg, Some(store_for(ca, &waypoint_id())))
}

fn mesh_service(
    protocol: AppProtocol,
    addr: SocketAddr,
    expect: ExpectedIdentity,
) -> Arc<ServiceBackend> {
    Arc::new(ServiceBackend {
        policy: Default::default(),
        service: ResourceRef::new("Service", "shop", "cart"),
        port: 80,
        cluster_ips: vec![[10, 96, 0, 20].into()],
        protocol: ProtocolSelection::http(protocol),
        endpoints: vec![Endpoint {
            address: addr,
            stats: Arc::new(EndpointStats::default()),
            transport: EndpointTransport::Hbone { identity: expect },
        }],
    })
}

const BAGGAGE: &str = "k8s.cluster.name=c1,k8s.namespace.name=front,k8s.deployment.name=web,\
                       service.name=web,service.version=v1";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A request context as if the client `web` (in `front`) had reached the waypoint over HBONE.
fn ctx(svc: &Arc<ServiceBackend>, traceparent: Option<&str>) -> RequestContext {
    let mut conn = ConnInfo::new(Binding::Hbone);
    conn.source = Some("10.1.2.3:4567".parse().unwrap());
    conn.destination = Some(([10, 96, 0, 20], 80).into());
    conn.source_workload = waypoint_core::wire::baggage::decode(BAGGAGE);
    conn.traceparent = traceparent.map(str::to_owned);
    let mut ctx = RequestContext::new(Arc::new(conn), Arc::new(Config::default()));
    ctx.upstream = Some(UpstreamTarget::new(svc.clone()));
    ctx
}

fn get(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("host", "cart.shop.svc")
        .body(empty())
        .unwrap()
}

async fn through_hbone(h2c: bool) {
    let ca = DevCa::generate("cluster.local").unwrap();
    let zt = ztunnel(&ca, &backend_id()).await;
    let backend = echo_backend(h2c, Duration::ZERO).await;
    let up = upstream(&ca, zt.addr.port());
    let protocol = if h2c {
        AppProtocol::H2c
    } else {
        AppProtocol::Http1
    };
    let svc = mesh_service(protocol, backend, ExpectedIdentity::Exact(backend_id()));

    for i in 0..3 {
        let mut ctx = ctx(&svc, Some(TRACEPARENT));
        let resp = up.forward(get(&format!("/items/{i}?q=1")), &mut ctx).await;
        assert_eq!(resp.status(), 200, "{:?}", ctx.response_flags);
        let expected_version = if h2c { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(resp.headers()["x-version"], expected_version);
        assert_eq!(resp.headers()["x-host"], "cart.shop.svc");
        assert!(
            resp.headers()["x-uri"]
                .to_str()
                .unwrap()
                .ends_with(&format!("/items/{i}?q=1"))
        );
        text(resp).await;
        assert!(ctx.response_flags.is_empty());
    }
    // The inner HTTP connection is pooled: one tunnel served all three requests.
    let seen = zt.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let conn = &seen[0];
    assert_eq!(conn.destination, Some(backend));
    assert_eq!(conn.peer_identity, Some(waypoint_id()));
    assert_eq!(conn.source, Some("10.1.2.3:4567".parse().unwrap()));
    assert_eq!(
        conn.source_workload,
        waypoint_core::wire::baggage::decode(BAGGAGE)
    );
    assert_eq!(conn.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(svc.endpoints[0].stats.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http1_through_hbone() {
    through_hbone(false).await;
}

#[tokio::test]
async fn h2c_through_hbone() {
    through_hbone(true).await;
}

/// What a bare HTTP/2 server saw of each CONNECT.
#[derive(Clone, Debug)]
struct SeenConnect {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

/// A destination ztunnel written with `h2` directly, to see the CONNECT requests verbatim. It
/// answers `status`, and with 200 pipes the tunnel to its authority.
async fn raw_ztunnel(ca: &DevCa, status: StatusCode) -> (SocketAddr, Arc<Mutex<Vec<SeenConnect>>>) {
    let certs = certs_for(ca, &backend_id());
    let config = tls::server_config(&certs, &[]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, recorded) = (acceptor.clone(), recorded.clone());
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let mut conn = h2::server::handshake(tls).await.unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    recorded.lock().unwrap().push(SeenConnect {
                        method: req.method().clone(),
                        uri: req.uri().clone(),
                        headers: req.headers().clone(),
                    });
                    let resp = Response::builder().status(status).body(()).unwrap();
                    let refused = status != StatusCode::OK;
                    let send = respond.send_response(resp, refused).unwrap();
                    if refused {
                        continue;
                    }
                    let to: SocketAddr = req.uri().to_string().parse().unwrap();
                    let io: BoxedIo = Box::new(H2Stream::new(send, req.into_body()));
                    tokio::spawn(pipe(io, to));
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn connect_request_carries_ztunnel_headers() {
    let ca = DevCa::generate("cluster.local").unwrap();
    let (zt, seen) = raw_ztunnel(&ca, StatusCode::OK).await;
    let backend = echo_backend(false, Duration::ZERO).await;
    let up = upstream(&ca, zt.port());
    let svc = mesh_service(
        AppProtocol::Http1,
        backend,
        ExpectedIdentity::Exact(backend_id()),
    );

    let mut with_trace = ctx(&svc, Some(TRACEPARENT));
    let resp = up.forward(get("/a"), &mut with_trace).await;
    assert_eq!(resp.status(), 200);
    text(resp).await;

    let c = seen.lock().unwrap()[0].clone();
    assert_eq!(c.method, http::Method::CONNECT);
    assert_eq!(c.uri.authority().unwrap().as_str(), backend.to_string());
    // Authority-form: no scheme and no path, as RFC 9113 §8.5 wants for CONNECT.
    assert_eq!(c.uri.scheme(), None);
    assert_eq!(c.uri.path_and_query(), None);
    assert_eq!(c.headers["baggage"], BAGGAGE);
    assert_eq!(c.headers["forwarded"], "for=\"10.1.2.3:4567\"");
    assert_eq!(c.headers["traceparent"], TRACEPARENT);

    // Another client, IPv6, without trace context: its own tunnel, a fresh traceparent, and no
    // baggage since nothing is known of it.
    let mut conn = ConnInfo::new(Binding::Hbone);
    conn.source = Some("[fd00::9]:1234".parse().unwrap());
    let mut ctx = RequestContext::new(Arc::new(conn), Arc::new(Config::default()));
    ctx.upstream = with_trace.upstream.clone();
    let resp = up.forward(get("/b"), &mut ctx).await;
    assert_eq!(resp.status(), 200);
    text(resp).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let c = &seen[1];
    assert_eq!(c.headers["forwarded"], "for=\"[fd00::9]:1234\"");
    assert!(c.headers.get("baggage").is_none());
    let trace = c.headers["traceparent"].to_str().unwrap();
    assert!(
        waypoint_core::wire::hbone::is_valid_traceparent(trace) && trace.ends_with("-00"),
        "{trace}"
    );
    assert_ne!(trace, TRACEPARENT);
}

#[tokio::test]
async fn refused_connect_is_503_with_the_status() {
    let ca = DevCa::generate("cluster.local").unwrap();
    let (zt, _) = raw_ztunnel(&ca, StatusCode::UNAUTHORIZED).await;
    let up = upstream(&ca, zt.port());
    let backend: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let svc = mesh_service(
        AppProtocol::Http1,
        backend,
        ExpectedIdentity::Exact(backend_id()),
    );
    let mut ctx = ctx(&svc, None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        ctx.response_flags,
        [ResponseFlag::UpstreamConnectionFailure]
    );
    assert_eq!(
        text(resp).await,
        "upstream connect error to 127.0.0.1:9: HBONE CONNECT to 127.0.0.1:9 refused: \
         401 Unauthorized\n"
    );
    assert_eq!(svc.endpoints[0].stats.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unexpected_server_identity_is_503_naming_both() {
    let ca = DevCa::generate("cluster.local").unwrap();
    let imposter = id("spiffe://cluster.local/ns/shop/sa/imposter");
    let zt = ztunnel(&ca, &imposter).await;
    let backend = echo_backend(false, Duration::ZERO).await;
    let up = upstream(&ca, zt.addr.port());
    let svc = mesh_service(
        AppProtocol::Http1,
        backend,
        ExpectedIdentity::Exact(backend_id()),
    );
    let mut ctx = ctx(&svc, None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        ctx.response_flags,
        [ResponseFlag::UpstreamConnectionFailure]
    );
    let body = text(resp).await;
    assert!(
        body.contains("HBONE TLS handshake with 127.0.0.1:"),
        "{body}"
    );
    assert!(body.contains(imposter.as_str()), "{body}");
    assert!(body.contains(backend_id().as_str()), "{body}");
    assert!(zt.seen.lock().unwrap().is_empty(), "no tunnel may open");

    // A namespace-wide expectation accepts any identity of the namespace.
    let svc = mesh_service(
        AppProtocol::Http1,
        backend,
        ExpectedIdentity::Namespace {
            trust_domain: "cluster.local".into(),
            namespace: "shop".into(),
        },
    );
    let mut ctx = self::ctx(&svc, None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn nothing_listening_on_the_hbone_port_is_503() {
    let ca = DevCa::generate("cluster.local").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let up = upstream(&ca, closed.port());
    let svc = mesh_service(
        AppProtocol::H2c,
        "127.0.0.1:80".parse().unwrap(),
        ExpectedIdentity::Exact(backend_id()),
    );
    let mut ctx = ctx(&svc, None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        ctx.response_flags,
        [ResponseFlag::UpstreamConnectionFailure]
    );
    assert_eq!(
        text(resp).await,
        format!(
            "upstream connect error to 127.0.0.1:80: HBONE connect to {closed} failed: connection refused\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_pooled_hbone_connections() {
    let ca = DevCa::generate("cluster.local").unwrap();
    let zt = ztunnel(&ca, &backend_id()).await;
    let (relay, tls_conns) = counting_relay(zt.addr).await;
    // Slow enough that all requests overlap: each holds its own HTTP/1.1 tunnel.
    let backend = echo_backend(false, Duration::from_millis(300)).await;
    let up = Arc::new(upstream(&ca, relay.port()));
    let svc = mesh_service(
        AppProtocol::Http1,
        backend,
        ExpectedIdentity::Exact(backend_id()),
    );

    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (up, svc) = (up.clone(), svc.clone());
            tokio::spawn(async move {
                let mut ctx = ctx(&svc, None);
                let resp = up.forward(get(&format!("/{i}")), &mut ctx).await;
                assert_eq!(resp.status(), 200, "{:?}", ctx.response_flags);
                text(resp).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let opened = tls_conns.load(Ordering::SeqCst);
    assert!((1..=2).contains(&opened), "{opened} TLS connections");
    assert_eq!(
        zt.seen.lock().unwrap().len(),
        100,
        "one tunnel per concurrent request"
    );
    assert!(up.hbone_pool().unwrap().connections() <= 2);
}

/// A TCP relay like [`counting_relay`] that stops carrying bytes (without closing anything)
/// once `frozen` is set: a peer that went silent.
async fn freezable_relay(to: SocketAddr, frozen: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (inbound, _) = listener.accept().await.unwrap();
            let outbound = TcpStream::connect(to).await.unwrap();
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            for (mut r, mut w) in [
                (
                    Box::new(ir) as Box<dyn AsyncRead + Send + Unpin>,
                    Box::new(ow) as Box<dyn AsyncWrite + Send + Unpin>,
                ),
                (Box::new(or), Box::new(iw)),
            ] {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 || frozen.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    addr
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_and_silent_connections_leave_the_pool() {
    let ca = DevCa::generate("cluster.local").unwrap();
    let zt = ztunnel(&ca, &backend_id()).await;
    let frozen = Arc::new(AtomicBool::new(false));
    let relay = freezable_relay(zt.addr, frozen.clone()).await;
    let backend = echo_backend(false, Duration::ZERO).await;
    let cfg = UpstreamConfig {
        mode: UpstreamMode::Auto,
        idle_timeout: Duration::from_millis(100),
        hbone: HboneClientOptions {
            port: relay.port(),
            idle_timeout: Duration::from_millis(200),
            keepalive_interval: Duration::from_millis(100),
            keepalive_timeout: Duration::from_millis(200),
            ..HboneClientOptions::default()
        },
        ..UpstreamConfig::default()
    };
    let up = Upstream::with_certs(cfg, Some(store_for(&ca, &waypoint_id())));
    let svc = mesh_service(
        AppProtocol::Http1,
        backend,
        ExpectedIdentity::Exact(backend_id()),
    );
    let pool = up.hbone_pool().unwrap();

    // Idle: the inner HTTP connection goes after 100 ms, its tunnel with it, then the HBONE
    // connection after 200 ms more. Answered PINGs in between do not keep it.
    let resp = up.forward(get("/"), &mut ctx(&svc, None)).await;
    assert_eq!(resp.status(), 200);
    text(resp).await;
    assert_eq!(pool.connections(), 1);
    wait_until("the idle connection to close", || pool.connections() == 0).await;

    // Silent: a response held unread keeps its tunnel busy, so only keepalive can end the new
    // connection. Answered PINGs keep it; once the peer stops answering, it leaves the pool.
    let held = up.forward(get("/"), &mut ctx(&svc, None)).await;
    assert_eq!(held.status(), 200);
    assert_eq!(pool.connections(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(pool.connections(), 1, "a busy, answering connection stays");
    frozen.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    wait_until("the silent connection to close", || pool.connections() == 0).await;
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}

#[tokio::test]
async fn plain_mode_and_no_certs_never_tunnel() {
    let ca = DevCa::generate("cluster.local").unwrap();
    let backend = echo_backend(false, Duration::ZERO).await;
    let svc = mesh_service(
        AppProtocol::Http1,
        backend,
        ExpectedIdentity::Exact(backend_id()),
    );
    // The sandwich default: plain TCP to the pod even for a mesh endpoint (the in-pod ztunnel
    // captures it); and Auto without a certificate has no identity to tunnel with.
    let plain = Upstream::with_certs(
        UpstreamConfig::default(),
        Some(store_for(&ca, &waypoint_id())),
    );
    let auto_no_certs = Upstream::new(UpstreamConfig {
        mode: UpstreamMode::Auto,
        ..UpstreamConfig::default()
    });
    for up in [plain, auto_no_certs] {
        assert!(up.hbone_pool().is_none());
        let mut ctx = ctx(&svc, None);
        let resp = up.forward(get("/"), &mut ctx).await;
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn ztunnel_socket_gets_proxy_v2_then_http() {
    let ca = DevCa::generate("cluster.local").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let headers = Arc::new(Mutex::new(Vec::new()));
    let recorded = headers.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                // Read up to the end of the header, then speak HTTP/1.1 on the rest.
                let mut buf = vec![0u8; 16];
                stream.read_exact(&mut buf).await.unwrap();
                let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
                buf.resize(16 + len, 0);
                stream.read_exact(&mut buf[16..]).await.unwrap();
                recorded.lock().unwrap().push(buf);
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body = format!("{} {}", req.method(), req.uri());
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let up = Upstream::with_certs(
        UpstreamConfig {
            mode: UpstreamMode::ZtunnelUnix(path.clone()),
            ..UpstreamConfig::default()
        },
        Some(store_for(&ca, &waypoint_id())),
    );
    let endpoint: SocketAddr = "10.44.0.7:8080".parse().unwrap();
    // Plain or not, every endpoint goes to the socket in this mode.
    let svc = Arc::new(ServiceBackend {
        endpoints: vec![Endpoint {
            address: endpoint,
            stats: Arc::new(EndpointStats::default()),
            transport: EndpointTransport::Plain,
        }],
        ..(*mesh_service(
            AppProtocol::Http1,
            endpoint,
            ExpectedIdentity::Exact(backend_id()),
        ))
        .clone()
    });
    for _ in 0..2 {
        let mut ctx = ctx(&svc, None);
        let resp = up.forward(get("/via/uds?x=1"), &mut ctx).await;
        assert_eq!(resp.status(), 200, "{:?}", ctx.response_flags);
        assert_eq!(text(resp).await, "GET /via/uds?x=1");
    }

    let headers = headers.lock().unwrap().clone();
    assert_eq!(headers.len(), 1, "the connection is pooled");
    let id = waypoint_id().to_string();
    assert_eq!(
        headers[0],
        encode_v2(
            "10.1.2.3:4567".parse().unwrap(),
            endpoint,
            &[(TLV_PEER_IDENTITY, id.as_bytes())]
        )
    );
    let Ok(Decoded::Complete { header, .. }) = decode(&headers[0], 4096) else {
        panic!("not a PROXY header");
    };
    assert!(!header.local);
    assert_eq!(header.source, Some("10.1.2.3:4567".parse().unwrap()));
    assert_eq!(header.destination, Some(endpoint));
    assert_eq!(&header.tlvs[0].value[..], id.as_bytes());

    // A missing socket is an upstream failure like any other.
    drop(dir);
    let up = Upstream::new(UpstreamConfig {
        mode: UpstreamMode::ZtunnelUnix(path.clone()),
        ..UpstreamConfig::default()
    });
    let mut ctx = ctx(&svc, None);
    let resp = up.forward(get("/"), &mut ctx).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        ctx.response_flags,
        [ResponseFlag::UpstreamConnectionFailure]
    );
    let body = text(resp).await;
    assert!(
        body.contains(&format!("ztunnel socket {}", path.display())),
        "{body}"
    );
}

const MANIFESTS: &str = include_str!("fixtures/config/ambient-mesh.yaml");

fn transports(cfg: &Config, ns: &str, name: &str) -> Vec<(String, EndpointTransport)> {
    let backend = cfg.service(ns, name, 80).unwrap();
    let mut v: Vec<_> = backend
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.transport.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn manifests_decide_each_endpoint_transport() {
    let td = "td.test";
    let cache = EndpointStatsCache::with_mesh(MeshOptions {
        trust_domain: td.into(),
        ambient_namespaces: BTreeSet::new(),
        ..Default::default()
    });
    let cfg = parse_manifests_with(MANIFESTS, "mesh.yaml", &cache).unwrap();
    let exact = |sa: &str| EndpointTransport::Hbone {
        identity: ExpectedIdentity::Exact(SpiffeId::new(td, "shop", sa).unwrap()),
    };
    assert_eq!(
        transports(&cfg, "shop", "cart"),
        [
            ("10.0.0.1:8080".to_owned(), exact("cart")),
            // No serviceAccountName: the pod runs as `default`.
            ("10.0.0.2:8080".to_owned(), exact("default")),
            // The pod is not among the manifests: any identity of its namespace.
            (
                "10.0.0.3:8080".to_owned(),
                EndpointTransport::Hbone {
                    identity: ExpectedIdentity::Namespace {
                        trust_domain: td.into(),
                        namespace: "shop".into(),
                    }
                }
            ),
        ]
    );
    // A namespace nobody enrolled is not in the mesh.
    assert_eq!(
        transports(&cfg, "old", "legacy"),
        [("10.0.1.1:80".to_owned(), EndpointTransport::Plain)]
    );

    // The waypoint's flag enrols a namespace whose Namespace object it never sees.
    let cache = EndpointStatsCache::with_mesh(MeshOptions {
        trust_domain: td.into(),
        ambient_namespaces: ["old".to_owned()].into(),
        ..Default::default()
    });
    let cfg = parse_manifests_with(MANIFESTS, "mesh.yaml", &cache).unwrap();
    assert_eq!(
        transports(&cfg, "old", "legacy"),
        [(
            "10.0.1.1:80".to_owned(),
            EndpointTransport::Hbone {
                identity: ExpectedIdentity::Namespace {
                    trust_domain: td.into(),
                    namespace: "old".into(),
                }
            }
        )]
    );
    // The default cache (what load_path and parse_manifests use) trusts cluster.local.
    assert_eq!(
        EndpointStatsCache::new().mesh().trust_domain,
        "cluster.local"
    );
}
