//! The HBONE server over loopback: real mTLS (certificates from a [`DevCa`]) and a real h2
//! client, as a ztunnel would connect.
#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::identity::SpiffeId;
use waypoint_core::overload::{ListenerGate, Overload, OverloadOptions};
use waypoint_core::shutdown::{self, ShutdownTrigger};
use waypoint_core::tls::{
    self, CertStore, DevCa, ExpectedIdentity, SpiffeServerVerifier, WorkloadCerts,
};
use waypoint_core::transport::TransportMetrics;
use waypoint_core::transport::hbone::{HboneListener, HboneOptions};
use waypoint_core::wire::hbone::H2Stream;

const TD: &str = "cluster.local";
const DAY: Duration = Duration::from_secs(86_400);
const WAIT: Duration = Duration::from_secs(10);

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn waypoint_id() -> SpiffeId {
    id("spiffe://cluster.local/ns/mesh/sa/waypoint")
}

fn client_id() -> SpiffeId {
    id("spiffe://cluster.local/ns/shop/sa/cart")
}

fn certs_for(ca: &DevCa, who: &SpiffeId) -> WorkloadCerts {
    ca.workload_certs(who, DAY).unwrap()
}

/// A running listener whose handler reports each ConnInfo and echoes the stream.
struct Server {
    addr: SocketAddr,
    ca: DevCa,
    metrics: Arc<TransportMetrics>,
    infos: mpsc::UnboundedReceiver<ConnInfo>,
    trigger: ShutdownTrigger,
    serving: tokio::task::JoinHandle<()>,
}

async fn echo(io: impl AsyncRead + AsyncWrite) {
    let (mut r, mut w) = tokio::io::split(io);
    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
        let _ = w.shutdown().await;
    }
}

async fn start_with(ca: DevCa, store: Arc<CertStore>, opts: HboneOptions) -> Server {
    start_gated(ca, store, opts, None).await
}

async fn start_gated(
    ca: DevCa,
    store: Arc<CertStore>,
    opts: HboneOptions,
    gate: Option<ListenerGate>,
) -> Server {
    let metrics = Arc::new(TransportMetrics::new());
    let mut listener =
        HboneListener::bind("127.0.0.1:0".parse().unwrap(), store, opts, metrics.clone())
            .await
            .unwrap();
    if let Some(gate) = gate {
        listener = listener.with_gate(gate);
    }
    let addr = listener.local_addr();
    let (tx, infos) = mpsc::unbounded_channel();
    let (trigger, shutdown) = shutdown::channel();
    let serving = tokio::spawn(listener.serve(
        move |io, info| {
            let _ = tx.send(info);
            echo(io)
        },
        shutdown,
    ));
    Server {
        addr,
        ca,
        metrics,
        infos,
        trigger,
        serving,
    }
}

async fn start(opts: HboneOptions) -> Server {
    let ca = DevCa::generate(TD).unwrap();
    let store = CertStore::from_certs(certs_for(&ca, &waypoint_id()), vec![]).unwrap();
    start_with(ca, store, opts).await
}

fn client_tls(ca: &DevCa, who: &SpiffeId) -> Arc<rustls::ClientConfig> {
    tls::client_config(
        &certs_for(ca, who),
        vec![ExpectedIdentity::Exact(waypoint_id())],
    )
    .unwrap()
}

/// A client configuration presenting arbitrary PEM (which `WorkloadCerts` would refuse), or
/// no certificate at all.
fn raw_client_tls(roots_pem: &str, cert: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(roots_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let verifier =
        SpiffeServerVerifier::new(&roots, vec![ExpectedIdentity::Exact(waypoint_id())]).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// TLS, then h2; the h2 connection is driven by a task whose handle tells when it ended.
async fn h2_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<
    (
        h2::client::SendRequest<Bytes>,
        tokio::task::JoinHandle<Result<(), h2::Error>>,
        SocketAddr,
    ),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let tls = tls_connect(addr, config).await?;
    let local = tls.get_ref().0.local_addr()?;
    let (client, conn) = h2::client::handshake(tls).await?;
    let driver = tokio::spawn(conn);
    Ok((client, driver, local))
}

async fn connect(
    client: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    headers: &[(&str, &str)],
) -> Result<(http::StatusCode, H2Stream), h2::Error> {
    let mut req = http::Request::connect(authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (resp, send) = client.send_request(req.body(()).unwrap(), false)?;
    let resp = resp.await?;
    Ok((resp.status(), H2Stream::new(send, resp.into_body())))
}

/// Writes `payload` and reads the echo concurrently (the windows are smaller than 1 MiB only
/// in aggregate, so a sequential write-then-read could still deadlock on a full pipe).
async fn round_trip(io: H2Stream, payload: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    got
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn connect_yields_conn_info_and_echoes_a_mebibyte() {
    let mut server = start(HboneOptions::default()).await;
    let (mut client, _conn, local) = h2_connect(server.addr, client_tls(&server.ca, &client_id()))
        .await
        .unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, io) = connect(
        &mut client,
        "10.0.0.1:80",
        &[
            (
                "baggage",
                "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=cart,service.name=cart,service.version=v2",
            ),
            ("forwarded", r#"for="10.1.2.3:4567";host=cart.shop.svc"#),
            ("traceparent", traceparent),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, http::StatusCode::OK);
    let info = server.infos.recv().await.unwrap();
    assert_eq!(info.binding, Binding::Hbone);
    assert_eq!(info.peer_identity, Some(client_id()));
    assert_eq!(info.destination, Some("10.0.0.1:80".parse().unwrap()));
    assert_eq!(info.source, Some("10.1.2.3:4567".parse().unwrap()));
    assert_eq!(info.source_workload.cluster.as_deref(), Some("c1"));
    assert_eq!(info.source_workload.namespace.as_deref(), Some("shop"));
    assert_eq!(
        info.source_workload.workload_kind.as_deref(),
        Some("deployment")
    );
    assert_eq!(info.source_workload.workload_name.as_deref(), Some("cart"));
    assert_eq!(info.source_workload.service_version.as_deref(), Some("v2"));
    assert_eq!(info.traceparent.as_deref(), Some(traceparent));

    let sent = payload(1024 * 1024, 7);
    assert!(round_trip(io, sent.clone()).await == sent);

    // No forwarded header: the source is the TCP peer. A malformed traceparent is dropped.
    let (status, io) = connect(
        &mut client,
        "[fd00::7]:8080",
        &[
            ("forwarded", "for=unknown"),
            ("traceparent", "00-xyz-00f067aa0ba902b7-01"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, http::StatusCode::OK);
    let info = server.infos.recv().await.unwrap();
    assert_eq!(info.destination, Some("[fd00::7]:8080".parse().unwrap()));
    assert_eq!(info.source, Some(local));
    assert_eq!(info.traceparent, None);
    assert!(info.source_workload.is_empty());
    assert_eq!(round_trip(io, b"hi".to_vec()).await, b"hi");
    assert_eq!(server.metrics.accepted("hbone"), 2);
}

#[tokio::test]
async fn fifty_concurrent_streams_share_one_connection() {
    let mut server = start(HboneOptions::default()).await;
    let (client, _conn, _) = h2_connect(server.addr, client_tls(&server.ca, &client_id()))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (status, io) = connect(&mut client, &format!("10.0.1.{i}:80"), &[])
                .await
                .unwrap();
            assert_eq!(status, http::StatusCode::OK);
            let sent = payload(64 * 1024 + usize::from(i), i);
            assert!(round_trip(io, sent.clone()).await == sent, "stream {i}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut destinations = Vec::new();
    for _ in 0..50 {
        destinations.push(server.infos.recv().await.unwrap().destination.unwrap());
    }
    destinations.sort();
    destinations.dedup();
    assert_eq!(destinations.len(), 50);
}

#[tokio::test]
async fn non_connect_and_bad_authority_are_refused() {
    let mut server = start(HboneOptions::default()).await;
    let (mut client, _conn, _) = h2_connect(server.addr, client_tls(&server.ca, &client_id()))
        .await
        .unwrap();
    let get = http::Request::get("https://10.0.0.1:80/").body(()).unwrap();
    let (resp, _send) = client.send_request(get, true).unwrap();
    assert_eq!(
        resp.await.unwrap().status(),
        http::StatusCode::METHOD_NOT_ALLOWED
    );

    for authority in ["cart.shop.svc:80", "10.0.0.1:0"] {
        let (status, _) = connect(&mut client, authority, &[]).await.unwrap();
        assert_eq!(status, http::StatusCode::BAD_REQUEST, "{authority}");
    }
    assert_eq!(server.metrics.hbone_rejected("not_connect"), 1);
    assert_eq!(server.metrics.hbone_rejected("bad_authority"), 2);

    // The connection survives refused streams.
    let (status, io) = connect(&mut client, "10.0.0.1:80", &[]).await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(round_trip(io, b"ok".to_vec()).await, b"ok");
    assert_eq!(
        server
            .infos
            .recv()
            .await
            .unwrap()
            .destination
            .unwrap()
            .port(),
        80
    );
    assert!(
        server.infos.try_recv().is_err(),
        "refused streams reached the handler"
    );
}

/// Connects with `config` and tries to use the tunnel; true when anything along the way failed.
async fn refused(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let attempt = async move {
        let (mut client, _conn, _) = h2_connect(addr, config).await?;
        let (_, io) = connect(&mut client, "10.0.0.1:80", &[]).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(round_trip(io, b"x".to_vec()).await)
    };
    // round_trip unwraps, so a failure inside it shows up as a panic in a task.
    match tokio::time::timeout(WAIT, tokio::spawn(attempt)).await {
        Ok(Ok(Ok(_))) => false,
        Ok(_) => true,
        Err(_) => panic!("client neither succeeded nor failed"),
    }
}

#[tokio::test]
async fn bad_client_certificates_fail_the_handshake_and_are_counted() {
    let server = start(HboneOptions::default()).await;
    let root = server.ca.root_pem();

    // Same trust domain, but a CA the server does not trust.
    let rogue = DevCa::generate(TD).unwrap();
    let rogue_cert = rogue.issue(&client_id(), DAY).unwrap();
    let config = raw_client_tls(&root, Some((&rogue_cert.chain_pem, &rogue_cert.key_pem)));
    assert!(refused(server.addr, config).await, "foreign CA accepted");
    eventually("foreign CA counted", || {
        server.metrics.hbone_rejected("bad_certificate") == 1
    })
    .await;

    // Our CA, but another trust domain.
    let other_td = server
        .ca
        .issue(&id("spiffe://other.td/ns/shop/sa/cart"), DAY)
        .unwrap();
    let config = raw_client_tls(&root, Some((&other_td.chain_pem, &other_td.key_pem)));
    assert!(
        refused(server.addr, config).await,
        "wrong trust domain accepted"
    );
    eventually("wrong trust domain counted", || {
        server.metrics.hbone_rejected("bad_certificate") == 2
    })
    .await;

    // Our CA, no SPIFFE SAN at all.
    let anonymous = server
        .ca
        .issue_with_sans(&["https://cart.example".to_owned()], DAY)
        .unwrap();
    let config = raw_client_tls(&root, Some((&anonymous.chain_pem, &anonymous.key_pem)));
    assert!(refused(server.addr, config).await, "no SPIFFE SAN accepted");
    eventually("no SPIFFE SAN counted", || {
        server.metrics.hbone_rejected("bad_certificate") == 3
    })
    .await;

    // No client certificate.
    assert!(
        refused(server.addr, raw_client_tls(&root, None)).await,
        "no cert accepted"
    );
    eventually("missing cert counted", || {
        server.metrics.hbone_rejected("no_client_cert") == 1
    })
    .await;

    // A good certificate without ALPN h2.
    let mut no_alpn = (*client_tls(&server.ca, &client_id())).clone();
    no_alpn.alpn_protocols.clear();
    assert!(
        refused(server.addr, Arc::new(no_alpn)).await,
        "no ALPN accepted"
    );
    eventually("missing ALPN counted", || {
        server.metrics.hbone_rejected("alpn") == 1
    })
    .await;

    // The listener keeps serving good clients.
    assert!(!refused(server.addr, client_tls(&server.ca, &client_id())).await);
    assert_eq!(server.metrics.accepted("hbone"), 1);
}

#[tokio::test]
async fn handshake_timeout_closes_silent_connections() {
    let server = start(HboneOptions {
        handshake_timeout: Duration::from_millis(200),
        ..HboneOptions::default()
    })
    .await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    eventually("handshake timeout counted", || {
        server.metrics.hbone_rejected("handshake_timeout") == 1
    })
    .await;
}

#[tokio::test]
async fn rotated_certificates_serve_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate(TD).unwrap();
    let v1 = waypoint_id();
    let v2 = id("spiffe://cluster.local/ns/mesh/sa/waypoint-v2");
    let paths = ca.write_workload_dir(dir.path(), &v1, DAY).unwrap();
    let store = CertStore::load(paths, vec![]).unwrap();
    let server = start_with(ca, store.clone(), HboneOptions::default()).await;

    let accept_both = |ca: &DevCa| {
        tls::client_config(
            &certs_for(ca, &client_id()),
            vec![
                ExpectedIdentity::Exact(waypoint_id()),
                ExpectedIdentity::Exact(id("spiffe://cluster.local/ns/mesh/sa/waypoint-v2")),
            ],
        )
        .unwrap()
    };
    let server_identity = |tls: &Tls| tls::peer_identity(tls.get_ref().1);

    let first = tls_connect(server.addr, accept_both(&server.ca))
        .await
        .unwrap();
    assert_eq!(server_identity(&first), Some(v1.clone()));
    let (mut old_client, old_conn) = h2::client::handshake(first).await.unwrap();
    let old_driver = tokio::spawn(old_conn);

    server.ca.write_workload_dir(dir.path(), &v2, DAY).unwrap();
    assert!(store.reload().unwrap(), "rotation not picked up");

    let second = tls_connect(server.addr, accept_both(&server.ca))
        .await
        .unwrap();
    assert_eq!(server_identity(&second), Some(v2));
    // The connection made before the rotation keeps working.
    let (status, io) = connect(&mut old_client, "10.0.0.1:80", &[]).await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(round_trip(io, b"still".to_vec()).await, b"still");
    assert!(!old_driver.is_finished());
}

/// A client connection to `server` with one open echo stream that has carried `before `.
async fn stream_in_flight(
    server: &mut Server,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    tokio::io::ReadHalf<H2Stream>,
    tokio::io::WriteHalf<H2Stream>,
) {
    let (mut client, conn, _) = h2_connect(server.addr, client_tls(&server.ca, &client_id()))
        .await
        .unwrap();
    let (status, io) = connect(&mut client, "10.0.0.1:80", &[]).await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    server.infos.recv().await.unwrap();
    let (r, mut w) = tokio::io::split(io);
    w.write_all(b"before ").await.unwrap();
    (client, conn, r, w)
}

/// Finishes the stream of [`stream_in_flight`] and checks it carried everything.
async fn finish_stream(
    mut r: tokio::io::ReadHalf<H2Stream>,
    mut w: tokio::io::WriteHalf<H2Stream>,
) {
    w.write_all(b"and after").await.unwrap();
    w.shutdown().await.unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"before and after");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_open_streams_finish() {
    let mut server = start(HboneOptions::default()).await;
    let (mut client, conn, r, w) = stream_in_flight(&mut server).await;

    let drained = tokio::spawn(server.trigger.shutdown(WAIT));
    tokio::time::timeout(WAIT, server.serving)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "listener still accepting after shutdown"
    );
    // The final GOAWAY follows a PING round trip; after that a new stream is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused_new = tokio::time::timeout(WAIT, connect(&mut client, "10.0.0.2:80", &[]))
        .await
        .unwrap();
    assert!(refused_new.is_err(), "new stream accepted while draining");

    // The open stream carries on to its natural end.
    finish_stream(r, w).await;
    assert!(drained.await.unwrap(), "drain did not complete");
    // With its last stream done the server closes the connection.
    tokio::time::timeout(WAIT, conn)
        .await
        .unwrap()
        .unwrap()
        .ok();
}

/// A drain with a grace: GOAWAY goes out at once, so the client ztunnel opens its next tunnels
/// elsewhere, but open streams carry on and the listener still accepts until the grace ends
/// (a client that has not yet seen readiness turn false is still served).
#[tokio::test]
async fn a_drain_sends_goaway_at_once_but_keeps_accepting_through_its_grace() {
    let mut server = start(HboneOptions::default()).await;
    let (mut client, _conn, r, w) = stream_in_flight(&mut server).await;

    let grace = Duration::from_secs(2);
    let drained = tokio::spawn(server.trigger.drain(grace, WAIT));
    // The final GOAWAY follows a PING round trip; after that a new stream is refused...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused_new = tokio::time::timeout(WAIT, connect(&mut client, "10.0.0.2:80", &[]))
        .await
        .unwrap();
    assert!(refused_new.is_err(), "new stream accepted after GOAWAY");
    // ...while the listener, still in its grace, completes a new handshake.
    let late = tls_connect(server.addr, client_tls(&server.ca, &client_id())).await;
    assert!(late.is_ok(), "listener stopped accepting during the grace");
    assert!(!server.serving.is_finished());

    // The open stream carries on to its natural end.
    finish_stream(r, w).await;
    drop(late);
    assert!(drained.await.unwrap(), "drain did not complete");
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "listener still accepting after the grace"
    );
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let server = start(HboneOptions {
        idle_timeout: Duration::from_millis(300),
        ..HboneOptions::default()
    })
    .await;
    let (mut client, conn, _) = h2_connect(server.addr, client_tls(&server.ca, &client_id()))
        .await
        .unwrap();
    // A stream in use keeps it open past the idle timeout.
    let (_, io) = connect(&mut client, "10.0.0.1:80", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!conn.is_finished(), "closed while a stream was open");
    assert_eq!(round_trip(io, b"x".to_vec()).await, b"x");
    // Without streams it goes.
    tokio::time::timeout(WAIT, conn)
        .await
        .unwrap()
        .unwrap()
        .ok();
}

#[tokio::test]
async fn client_that_never_answers_pings_is_dropped() {
    let server = start(HboneOptions {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(200),
        idle_timeout: Duration::ZERO,
        ..HboneOptions::default()
    })
    .await;
    let mut tls = tls_connect(server.addr, client_tls(&server.ca, &client_id()))
        .await
        .unwrap();
    // A client preface and empty SETTINGS, then silence: frames are read but never answered,
    // so the server's PINGs get no PONG.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match tls.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "silent client kept connected");
}

#[tokio::test]
async fn tunnels_and_their_connection_share_the_listener_limit_and_a_stream_over_it_gets_503() {
    let ca = DevCa::generate(TD).unwrap();
    let store = CertStore::from_certs(certs_for(&ca, &waypoint_id()), vec![]).unwrap();
    let overload = Overload::new(OverloadOptions::default());
    // Room for one HBONE connection and two of its tunnels.
    let gate = overload.gate("hbone", Some(3));
    let server = start_gated(ca, store, HboneOptions::default(), Some(gate.clone())).await;
    let config = client_tls(&server.ca, &client_id());
    let (mut client, _conn, _) = h2_connect(server.addr, config.clone()).await.unwrap();
    let (status, first) = connect(&mut client, "10.0.0.1:80", &[]).await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    let (status, second) = connect(&mut client, "10.0.0.1:80", &[]).await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    eventually("three slots taken", || gate.open() == 3).await;

    let (status, _) = connect(&mut client, "10.0.0.1:80", &[]).await.unwrap();
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        overload
            .metrics()
            .connections_refused("hbone", "listener_limit"),
        1
    );
    // A new HBONE connection is closed before its TLS handshake completes.
    assert!(h2_connect(server.addr, config.clone()).await.is_err());
    assert_eq!(
        overload
            .metrics()
            .connections_refused("hbone", "listener_limit"),
        2
    );

    // The open tunnels still work; when one ends its slot serves a new tunnel.
    assert_eq!(round_trip(first, b"one".to_vec()).await, b"one");
    eventually("a slot given back", || gate.open() == 2).await;
    let (status, third) = connect(&mut client, "10.0.0.1:80", &[]).await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(round_trip(third, b"three".to_vec()).await, b"three");
    assert_eq!(round_trip(second, b"two".to_vec()).await, b"two");
}

#[tokio::test]
async fn a_sandwich_connection_and_an_hbone_tunnel_reach_one_handler_through_one_gated_accept_loop()
{
    use waypoint_core::transport::{BoxedIo, ListenAddr, SandwichListener};
    use waypoint_core::wire::proxy_protocol::encode_v2;

    let ca = DevCa::generate(TD).unwrap();
    let store = CertStore::from_certs(certs_for(&ca, &waypoint_id()), vec![]).unwrap();
    // Two connections at a time for the whole process, whichever binding they come through:
    // an HBONE connection and its one tunnel fill it.
    let overload = Overload::new(OverloadOptions {
        max_connections: Some(2),
        ..OverloadOptions::default()
    });
    let metrics = Arc::new(TransportMetrics::new());
    let hbone = HboneListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        store,
        HboneOptions::default(),
        metrics.clone(),
    )
    .await
    .unwrap();
    let hbone_addr = hbone.local_addr();
    let hbone = hbone.with_gate(overload.gate(format!("hbone:{hbone_addr}"), None));
    let sandwich = SandwichListener::bind(
        &"tcp:127.0.0.1:0".parse::<ListenAddr>().unwrap(),
        Default::default(),
        Default::default(),
        metrics.clone(),
    )
    .await
    .unwrap()
    .with_overload(&overload);
    let ListenAddr::Tcp(sandwich_addr) = sandwich.local_addr() else {
        panic!("a TCP listener");
    };

    // The same handler value serves both bindings, as the pipeline does in a running waypoint.
    let (tx, mut infos) = mpsc::unbounded_channel();
    let handler = move |io: BoxedIo, info: ConnInfo| {
        let _ = tx.send(info.binding.clone());
        echo(io)
    };
    let (_trigger, shutdown) = shutdown::channel();
    tokio::spawn(sandwich.serve(handler.clone(), shutdown.clone()));
    tokio::spawn(hbone.serve(handler, shutdown));

    // An HBONE connection and its tunnel take both slots ...
    let config = client_tls(&ca, &client_id());
    let (mut client, conn, _) = h2_connect(hbone_addr, config).await.unwrap();
    let (status, io) = connect(&mut client, "10.0.0.1:80", &[]).await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(infos.recv().await, Some(Binding::Hbone));
    assert_eq!(overload.open_connections(), 2);

    // ... so a sandwich connection is refused by the same gate, before its header is read.
    let header = encode_v2(
        "10.0.0.9:5000".parse().unwrap(),
        "10.0.0.1:80".parse().unwrap(),
        &[],
    );
    let sandwich_label = format!("tcp:{sandwich_addr}");
    let refused = || {
        overload
            .metrics()
            .connections_refused(&sandwich_label, "total_limit")
    };
    let mut turned_away = TcpStream::connect(sandwich_addr).await.unwrap();
    let _ = turned_away.write_all(&header).await;
    let mut nothing = Vec::new();
    let _ = turned_away.read_to_end(&mut nothing).await;
    assert!(nothing.is_empty());
    assert_eq!(refused(), 1);

    // Once the tunnel and its connection end, the sandwich connection reaches the same handler.
    assert_eq!(round_trip(io, b"pong".to_vec()).await, b"pong");
    drop(client);
    conn.abort();
    eventually("the HBONE slots given back", || {
        overload.open_connections() == 0
    })
    .await;
    let mut plain = TcpStream::connect(sandwich_addr).await.unwrap();
    plain.write_all(&header).await.unwrap();
    plain.write_all(b"ping").await.unwrap();
    let mut echoed = [0; 4];
    plain.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    assert!(matches!(infos.recv().await, Some(Binding::Sandwich { .. })));
    assert_eq!(refused(), 1);
}
