//! The sandwich transport end to end: the PROXY header codec and reader over in-memory
//! streams, and the listener over real loopback TCP and a real Unix socket.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use waypoint_core::conn::{Binding, ConnInfo};
use waypoint_core::shutdown::{self, ShutdownTrigger};
use waypoint_core::transport::{
    BoxedIo, ListenAddr, ListenerOptions, ProxyConfig, Rewind, SandwichListener, TransportMetrics,
    conn_info, read_header,
};
use waypoint_core::wire::proxy_protocol::ProxyHeader;
use waypoint_core::wire::proxy_protocol::{Decoded, ProxyError, decode, encode_v2};

const ID: &str = "spiffe://cluster.local/ns/default/sa/default";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
    match decode(buf, 4096).unwrap() {
        Decoded::Complete { header, consumed } => (header, consumed),
        other => panic!("expected a complete header, got {other:?}"),
    }
}

// ---- codec and reader, no sockets ----

#[test]
fn conn_info_refuses_bad_identity_and_hostname() {
    let with = |tlvs: &[(u8, &[u8])]| {
        let wire = encode_v2(addr("10.0.0.1:1"), addr("10.0.0.2:2"), tlvs);
        conn_info(&complete(&wire).0, Binding::Hbone, &ProxyConfig::default())
    };
    for bad in [
        &b"spiffe://cluster.local/ns/default"[..],
        b"",
        b"http://x/ns/a/sa/b",
        b"\xff\xfe",
    ] {
        assert_eq!(
            with(&[(0xD0, bad)]).unwrap_err().reason(),
            "invalid_identity"
        );
    }
    for bad in [&b""[..], b"a..b", b"a b", b"\xff", b"x.", &[b'a'; 64]] {
        assert_eq!(
            with(&[(0xD1, bad)]).unwrap_err().reason(),
            "invalid_hostname"
        );
    }
    let other = b"spiffe://cluster.local/ns/evil/sa/x";
    let err = with(&[(0xD0, ID.as_bytes()), (0xD0, other)]).unwrap_err();
    assert_eq!(err.reason(), "conflicting_tlv");
    assert!(with(&[(0xD0, ID.as_bytes()), (0xD0, ID.as_bytes())]).is_ok());
    // No identity TLV: unauthenticated, which is not an error.
    assert!(with(&[]).unwrap().peer_identity.is_none());
}

#[test]
fn metadata_tlv_is_configurable_and_lenient() {
    let wire = encode_v2(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:2"),
        &[
            (0xE0, b"\xff\xfek8s.namespace.name=x"),
            (0xE7, b"k8s.namespace.name=shop"),
        ],
    );
    let header = complete(&wire).0;
    let info = conn_info(&header, Binding::Hbone, &ProxyConfig::default()).unwrap();
    assert!(info.source_workload.is_empty());
    assert_eq!(info.tlvs.len(), 2);
    let cfg = ProxyConfig {
        metadata_tlv: 0xE7,
        ..ProxyConfig::default()
    };
    let info = conn_info(&header, Binding::Hbone, &cfg).unwrap();
    assert_eq!(info.source_workload.namespace.as_deref(), Some("shop"));
}

#[test]
fn decode_never_panics_on_random_or_mutated_input() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_cafe);
    let seeds: Vec<Vec<u8>> = vec![
        encode_v2(
            addr("10.0.0.1:1"),
            addr("10.0.0.2:2"),
            &[(0xD0, ID.as_bytes()), (0xE0, b"a=b")],
        ),
        encode_v2(
            addr("[::1]:1"),
            addr("[::2]:2"),
            &[(0xD1, b"svc"), (0x05, b"")],
        ),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET".to_vec(),
        b"PROXY TCP6 ::1 ::2 1 2\r\n".to_vec(),
    ];
    let cfg = ProxyConfig::default();
    for i in 0..20_000 {
        let mut buf = match i % 3 {
            0 => (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect(),
            _ => seeds[rng.usize(..seeds.len())].clone(),
        };
        if i % 3 != 0 {
            for _ in 0..rng.usize(1..4) {
                if !buf.is_empty() {
                    let at = rng.usize(..buf.len());
                    buf[at] = rng.u8(..);
                }
            }
            buf.truncate(rng.usize(0..=buf.len()));
            if rng.bool() {
                buf.extend((0..rng.usize(0..64)).map(|_| rng.u8(..)));
            }
        } else if rng.bool() && buf.len() >= 12 {
            buf[..12].copy_from_slice(b"\r\n\r\n\0\r\nQUIT\n");
        }
        match decode(&buf, rng.usize(0..5000)) {
            Ok(Decoded::Complete { header, consumed }) => {
                assert!(consumed <= buf.len() && consumed >= 15);
                let _ = conn_info(&header, Binding::Hbone, &cfg);
            }
            Ok(Decoded::Incomplete { needed: Some(n) }) => assert!(n > 0),
            Ok(_) | Err(_) => {}
        }
    }
}

#[tokio::test]
async fn rewind_replays_prefix_then_reads_and_writes_inner() {
    let (near, mut far) = tokio::io::duplex(64);
    let mut rewind = Rewind::new(Bytes::from_static(b"hello "), near);
    far.write_all(b"world").await.unwrap();
    far.shutdown().await.unwrap();
    // A 4-byte buffer splits the prefix across reads.
    let mut first = [0u8; 4];
    rewind.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"hell");
    let mut rest = Vec::new();
    rewind.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"o world");
    rewind.write_all(b"reply").await.unwrap();
    let mut got = [0u8; 5];
    far.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"reply");
}

#[tokio::test]
async fn read_header_reads_v2_exactly_and_v1_with_replay() {
    let mut wire = encode_v2(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:2"),
        &[(0xD0, ID.as_bytes())],
    );
    wire.extend_from_slice(b"PAYLOAD");
    let mut reader: &[u8] = &wire;
    let (header, rest) = read_header(&mut reader, &ProxyConfig::default())
        .await
        .unwrap();
    assert_eq!(header.unwrap().source, Some(addr("10.0.0.1:1")));
    assert!(rest.is_empty(), "v2 must not read past the header");
    assert_eq!(reader, b"PAYLOAD");

    let wire = b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n\r\n";
    let mut reader: &[u8] = wire;
    let (header, rest) = read_header(&mut reader, &ProxyConfig::default())
        .await
        .unwrap();
    assert_eq!(header.unwrap().version, 1);
    assert_eq!([&rest[..], reader].concat(), b"GET / HTTP/1.1\r\n\r\n");
}
#[test]
fn encode_leaves_out_tlvs_that_do_not_fit() {
    let huge = vec![b'x'; 70_000];
    let big = vec![b'y'; 65_000];
    let wire = encode_v2(
        addr("1.1.1.1:1"),
        addr("2.2.2.2:2"),
        &[(0xE1, &huge), (0xE2, &big), (0xE3, &big), (0xE4, b"ok")],
    );
    let (header, _) = complete_with_max(&wire);
    let kinds: Vec<u8> = header.tlvs.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [0xE2, 0xE4]);
}

fn complete_with_max(buf: &[u8]) -> (ProxyHeader, usize) {
    match decode(buf, usize::MAX).unwrap() {
        Decoded::Complete { header, consumed } => (header, consumed),
        other => panic!("expected a complete header, got {other:?}"),
    }
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    let wire = encode_v2(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:2"),
        &[(0xD0, ID.as_bytes())],
    );
    for len in 1..wire.len() {
        let got = decode(&wire[..len], 4096).unwrap();
        let needed = if len < 16 { 16 - len } else { wire.len() - len };
        assert_eq!(
            got,
            Decoded::Incomplete {
                needed: Some(needed)
            },
            "len {len}"
        );
    }
    let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    for len in 1..v1.len() {
        assert_eq!(
            decode(&v1[..len], 4096).unwrap(),
            Decoded::Incomplete { needed: None }
        );
    }
}

#[test]
fn decodes_v1() {
    let (h, n) = complete(b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\nGET");
    assert_eq!((h.version, n), (1, 42));
    assert_eq!(h.source, Some(addr("192.0.2.1:56324")));
    assert_eq!(h.destination, Some(addr("192.0.2.2:443")));
    let (h, _) = complete(b"PROXY TCP6 fd00::1 fd00::2 1 2\r\n");
    assert_eq!(h.destination, Some(addr("[fd00::2]:2")));
    let (h, n) = complete(b"PROXY UNKNOWN\r\n");
    assert_eq!((h.source, n), (None, 15));

    assert_eq!(
        decode(b"PROXY TCP4 192.0", 4096).unwrap(),
        Decoded::Incomplete { needed: None }
    );
    for bad in [
        &b"PROXY TCP4 192.0.2.1 192.0.2.2 56324\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        let err = decode(bad, 4096).unwrap_err();
        assert_eq!(err.reason(), "malformed_v1", "{}", bad.escape_ascii());
    }
    let long = [&b"PROXY TCP4 "[..], &[b'1'; 120]].concat();
    assert!(matches!(
        decode(&long, 4096),
        Err(ProxyError::MalformedV1(_))
    ));
}

#[tokio::test]
async fn read_header_handles_a_trickling_client() {
    // A one-byte pipe: every read returns at most one byte.
    let (mut client, mut server) = tokio::io::duplex(1);
    let mut wire = encode_v2(
        addr("[fd00::1]:9"),
        addr("[fd00::2]:80"),
        &[(0xD0, ID.as_bytes())],
    );
    wire.extend_from_slice(b"hi");
    tokio::spawn(async move { client.write_all(&wire).await.unwrap() });
    let (header, rest) = read_header(&mut server, &ProxyConfig::default())
        .await
        .unwrap();
    assert_eq!(header.unwrap().destination, Some(addr("[fd00::2]:80")));
    let mut payload = [0u8; 2];
    Rewind::new(rest, server)
        .read_exact(&mut payload)
        .await
        .unwrap();
    assert_eq!(&payload, b"hi");
}

#[tokio::test]
async fn read_header_refusals() {
    let required = ProxyConfig::default();
    let optional = ProxyConfig {
        required: false,
        ..ProxyConfig::default()
    };
    let local = hex("0d0a0d0a000d0a515549540a 20 00 0000");
    let cases: [(&[u8], &ProxyConfig, &str); 5] = [
        (b"", &required, "empty"),
        (b"\r\n\r\n\0\r\nQU", &required, "truncated"),
        (&local[..15], &required, "truncated"),
        (b"GET / HTTP/1.1\r\n", &required, "not_proxy"),
        (&local, &required, "local_command"),
    ];
    for (input, cfg, reason) in cases {
        let mut reader = input;
        let err = read_header(&mut reader, cfg).await.unwrap_err();
        assert_eq!(err.reason(), reason, "{}", input.escape_ascii());
    }

    // Optional: no signature means no header, and every byte read comes back for replay.
    let mut reader: &[u8] = b"GET / HTTP/1.1\r\n";
    let (header, rest) = read_header(&mut reader, &optional).await.unwrap();
    assert!(header.is_none());
    assert_eq!([&rest[..], reader].concat(), b"GET / HTTP/1.1\r\n");
    let mut reader: &[u8] = b"";
    assert!(
        read_header(&mut reader, &optional)
            .await
            .unwrap()
            .0
            .is_none()
    );
    let mut reader: &[u8] = &local;
    assert!(
        read_header(&mut reader, &optional)
            .await
            .unwrap()
            .0
            .unwrap()
            .local
    );
    // A confirmed signature cut short is still an error.
    let mut reader: &[u8] = &local[..14];
    assert_eq!(
        read_header(&mut reader, &optional)
            .await
            .unwrap_err()
            .reason(),
        "truncated"
    );
}

#[tokio::test(start_paused = true)]
async fn read_header_times_out_on_a_stalled_client() {
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21").await.unwrap();
    let cfg = ProxyConfig {
        read_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    };
    let started = tokio::time::Instant::now();
    let err = read_header(&mut server, &cfg).await.unwrap_err();
    assert!(matches!(err, ProxyError::Timeout(d) if d == Duration::from_millis(200)));
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    drop(client);
}

// ---- the listener over real sockets ----

type Served = (ConnInfo, Vec<u8>);

struct Harness {
    addr: ListenAddr,
    metrics: Arc<TransportMetrics>,
    served: mpsc::UnboundedReceiver<Served>,
    trigger: ShutdownTrigger,
    serve: tokio::task::JoinHandle<()>,
}

/// Binds a listener whose handler reads the stream to its end, answers `served` and reports
/// what it got.
async fn start(addr: &str, cfg: ProxyConfig, opts: ListenerOptions) -> Harness {
    let metrics = Arc::new(TransportMetrics::new());
    let listener = SandwichListener::bind(&addr.parse().unwrap(), cfg, opts, metrics.clone())
        .await
        .unwrap();
    let (tx, served) = mpsc::unbounded_channel();
    let handler = move |mut io: BoxedIo, info: ConnInfo| {
        let tx = tx.clone();
        async move {
            let mut payload = Vec::new();
            io.read_to_end(&mut payload).await.unwrap();
            io.write_all(b"served").await.unwrap();
            io.shutdown().await.unwrap();
            tx.send((info, payload)).unwrap();
        }
    };
    let (trigger, shutdown) = shutdown::channel();
    let addr = listener.local_addr();
    let serve = tokio::spawn(listener.serve(handler, shutdown));
    Harness {
        addr,
        metrics,
        served,
        trigger,
        serve,
    }
}

async fn connect(addr: &ListenAddr) -> Box<dyn Stream> {
    match addr {
        ListenAddr::Tcp(a) => Box::new(TcpStream::connect(a).await.unwrap()),
        ListenAddr::Unix(p) => Box::new(UnixStream::connect(p).await.unwrap()),
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Sends `bytes` in one write, closes the write side and returns what the server answered
/// (empty when it closed the connection without answering).
async fn exchange(addr: &ListenAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr).await;
    // A server that refuses the header may close (even reset) before we are done: only the
    // answer matters.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer).await {
        Ok(_) => answer,
        Err(_) => Vec::new(),
    }
}

async fn serve_one(h: &mut Harness, bytes: &[u8]) -> Served {
    assert_eq!(exchange(&h.addr, bytes).await, b"served");
    h.served.recv().await.unwrap()
}

/// Waits until `n` connections have passed the header stage (the handler is then running).
async fn wait_accepted(metrics: &TransportMetrics, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.accepted("sandwich") < n {
        assert!(Instant::now() < deadline, "connection not accepted in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn with_payload(header: &[u8], payload: &[u8]) -> Vec<u8> {
    [header, payload].concat()
}

#[tokio::test]
async fn sandwich_over_tcp_carries_identity_metadata_tlvs_and_payload() {
    let mut h = start(
        "127.0.0.1:0",
        ProxyConfig::default(),
        ListenerOptions::default(),
    )
    .await;
    let ListenAddr::Tcp(bound) = h.addr else {
        panic!("bound {}", h.addr)
    };
    assert_ne!(bound.port(), 0);
    let payload = b"GET / HTTP/1.1\r\nHost: cart\r\n\r\n".repeat(50);
    let header = encode_v2(
        addr("10.1.2.3:46946"),
        addr("10.96.0.10:8080"),
        &[
            (0xD0, ID.as_bytes()),
            (
                0xE0,
                b"k8s.namespace.name=shop,k8s.deployment.name=web,service.version=v2",
            ),
            (0xF5, b"\x01\x02vendor"),
        ],
    );
    let (info, got) = serve_one(&mut h, &with_payload(&header, &payload)).await;
    assert_eq!(got, payload, "the handler must read the payload intact");
    assert_eq!(
        info.binding,
        Binding::Sandwich {
            listener: format!("tcp:{bound}")
        }
    );
    assert_eq!(info.source, Some(addr("10.1.2.3:46946")));
    assert_eq!(info.destination, Some(addr("10.96.0.10:8080")));
    assert_eq!(
        info.peer_identity.as_ref().unwrap().service_account(),
        "default"
    );
    assert_eq!(info.source_workload.workload_name.as_deref(), Some("web"));
    assert_eq!(info.source_workload.service_version.as_deref(), Some("v2"));
    assert_eq!(info.tlv(0xF5).unwrap().as_ref(), b"\x01\x02vendor");
    assert_eq!(info.tlvs.len(), 3);

    // IPv6 addresses in the header, and a client that sends no identity (unauthenticated).
    let header = encode_v2(addr("[fd00::7]:5000"), addr("[fd00::10]:443"), &[]);
    let (info, got) = serve_one(&mut h, &with_payload(&header, b"x")).await;
    assert_eq!(
        (info.source, got),
        (Some(addr("[fd00::7]:5000")), b"x".to_vec())
    );
    assert_eq!(info.destination, Some(addr("[fd00::10]:443")));
    assert!(info.peer_identity.is_none());

    // The v1 text form.
    let (info, got) = serve_one(&mut h, b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\nping").await;
    assert_eq!(
        (info.source, got),
        (Some(addr("192.0.2.1:1000")), b"ping".to_vec())
    );
    assert_eq!(h.metrics.accepted("sandwich"), 3);

    assert!(h.trigger.shutdown(Duration::from_secs(5)).await);
    h.serve.await.unwrap();
}

#[tokio::test]
async fn bad_headers_are_closed_counted_and_do_not_stop_the_listener() {
    let cfg = ProxyConfig {
        read_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    };
    let mut h = start("127.0.0.1:0", cfg, ListenerOptions::default()).await;
    let good = encode_v2(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:2"),
        &[(0xD0, ID.as_bytes())],
    );
    let mut oversized = hex("0d0a0d0a000d0a515549540a 21 11 1000");
    oversized.extend_from_slice(&[0; 64]);
    let bad_id = encode_v2(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:2"),
        &[(0xD0, b"spiffe://x/y")],
    );
    let cases: [(&[u8], &str); 6] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not_proxy"),
        (&good[..good.len() - 3], "truncated"),
        (&oversized, "oversized"),
        (&hex("0d0a0d0a000d0a515549540a 20 00 0000"), "local_command"),
        (&bad_id, "invalid_identity"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed_v1"),
    ];
    for (bytes, reason) in cases {
        assert_eq!(exchange(&h.addr, bytes).await, b"", "{reason}");
        assert_eq!(h.metrics.rejected(reason), 1, "{reason}");
        // The next, well-formed connection is still served.
        let (info, got) = serve_one(&mut h, &with_payload(&good, b"ok")).await;
        assert_eq!(
            (info.peer_identity.unwrap().as_str(), &got[..]),
            (ID, &b"ok"[..])
        );
    }

    // A client that stalls mid-header is cut off by the read timeout.
    let mut slow = connect(&h.addr).await;
    slow.write_all(&good[..10]).await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    assert_eq!(slow.read_to_end(&mut rest).await.unwrap(), 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(h.metrics.rejected("timeout"), 1);
    assert_eq!(h.metrics.accepted("sandwich"), 6);
    assert!(
        h.served.try_recv().is_err(),
        "no rejected connection reached the handler"
    );

    assert!(h.trigger.shutdown(Duration::from_secs(5)).await);
    h.serve.await.unwrap();
}

#[tokio::test]
async fn optional_header_serves_plain_and_local_connections_with_the_socket_peer() {
    let cfg = ProxyConfig {
        required: false,
        ..ProxyConfig::default()
    };
    let mut h = start("127.0.0.1:0", cfg, ListenerOptions::default()).await;
    let ListenAddr::Tcp(bound) = h.addr else {
        panic!()
    };

    let mut stream = TcpStream::connect(bound).await.unwrap();
    let me = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /plain HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"served");
    let (info, got) = h.served.recv().await.unwrap();
    assert_eq!(got, b"GET /plain HTTP/1.1\r\n\r\n");
    assert_eq!(
        info.binding,
        Binding::Plain {
            listener: format!("tcp:{bound}")
        }
    );
    assert_eq!(info.source, Some(me));
    assert_eq!(
        info.destination,
        Some(bound),
        "the socket's own address is the destination"
    );

    let local = hex("0d0a0d0a000d0a515549540a 20 00 0000");
    let (info, got) = serve_one(&mut h, &with_payload(&local, b"probe")).await;
    assert!(matches!(info.binding, Binding::Sandwich { .. }));
    assert_eq!(info.source.map(|s| s.ip()), Some(me.ip()));
    assert_eq!(got, b"probe");
    assert_eq!(
        (h.metrics.accepted("plain"), h.metrics.accepted("sandwich")),
        (1, 1)
    );
}

#[tokio::test]
async fn unix_socket_serves_sets_mode_and_is_removed_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("waypoint.sock");
    let opts = ListenerOptions {
        unix_mode: 0o600,
        ..ListenerOptions::default()
    };
    let mut h = start(
        &format!("unix:{}", path.display()),
        ProxyConfig::default(),
        opts,
    )
    .await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(h.addr, ListenAddr::Unix(path.clone()));

    let header = encode_v2(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:2"),
        &[(0xD0, ID.as_bytes())],
    );
    let (info, got) = serve_one(&mut h, &with_payload(&header, b"over uds")).await;
    assert_eq!(got, b"over uds");
    assert_eq!(
        info.binding,
        Binding::Sandwich {
            listener: format!("unix:{}", path.display())
        }
    );
    assert_eq!(info.source, Some(addr("10.0.0.1:1")));
    assert_eq!(exchange(&h.addr, b"garbage").await, b"");
    assert_eq!(h.metrics.rejected("not_proxy"), 1);

    assert!(h.trigger.shutdown(Duration::from_secs(5)).await);
    h.serve.await.unwrap();
    assert!(
        !path.exists(),
        "the socket file is removed when serve returns"
    );
}

#[tokio::test]
async fn unix_socket_default_mode_and_stale_live_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(TransportMetrics::new());
    let bind = |path: &std::path::Path| {
        let addr = ListenAddr::Unix(path.to_owned());
        let metrics = metrics.clone();
        async move {
            SandwichListener::bind(&addr, ProxyConfig::default(), Default::default(), metrics).await
        }
    };

    // Stale: a socket file whose listener is gone is replaced, with the default mode.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let listener = bind(&stale).await.unwrap();
    assert_eq!(
        std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777,
        0o660
    );
    UnixStream::connect(&stale)
        .await
        .expect("the new listener accepts");
    drop(listener);
    assert!(
        !stale.exists(),
        "dropping an unserved listener removes its file too"
    );

    // Live: another listener owns the path; we refuse and leave it working.
    let live = dir.path().join("live.sock");
    let other = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let err = bind(&live).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    std::os::unix::net::UnixStream::connect(&live).expect("the other listener still works");
    drop(other);

    // Not a socket: never deleted.
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "precious").unwrap();
    let err = bind(&file).await.unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_waits_for_open_connections() {
    let mut h = start(
        "127.0.0.1:0",
        ProxyConfig::default(),
        ListenerOptions::default(),
    )
    .await;
    let ListenAddr::Tcp(bound) = h.addr else {
        panic!()
    };
    // A connection in progress: header sent, the handler is waiting for the end of stream.
    let mut open = TcpStream::connect(bound).await.unwrap();
    open.write_all(&encode_v2(addr("10.0.0.1:1"), addr("10.0.0.2:2"), &[]))
        .await
        .unwrap();
    wait_accepted(&h.metrics, 1).await;

    let drained = tokio::spawn(h.trigger.shutdown(Duration::from_secs(5)));
    h.serve.await.unwrap();
    assert!(
        TcpStream::connect(bound).await.is_err(),
        "no longer accepting"
    );
    assert!(
        !drained.is_finished(),
        "the open connection holds the drain"
    );

    open.write_all(b"last words").await.unwrap();
    open.shutdown().await.unwrap();
    assert!(drained.await.unwrap());
    assert_eq!(h.served.recv().await.unwrap().1, b"last words");
}

#[tokio::test]
async fn a_connection_over_the_listener_limit_is_closed_at_once_and_held_ones_are_served() {
    let opts = ListenerOptions {
        max_connections: Some(1),
        ..ListenerOptions::default()
    };
    let mut h = start("127.0.0.1:0", ProxyConfig::default(), opts).await;
    let header = encode_v2(addr("10.0.0.1:1"), addr("10.0.0.2:2"), &[]);
    let mut first = connect(&h.addr).await;
    first.write_all(&header).await.unwrap();
    wait_accepted(&h.metrics, 1).await;

    // The second is closed without its header being read: the server answers nothing.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        exchange(&h.addr, &with_payload(&header, b"2")),
    )
    .await
    .expect("a refused connection is closed at once, not left waiting");
    assert_eq!(refused, b"");
    assert_eq!(h.metrics.accepted("sandwich"), 1);

    // The held one is served as usual, and its slot is free again afterwards.
    first.write_all(b"1").await.unwrap();
    first.shutdown().await.unwrap();
    assert_eq!(h.served.recv().await.unwrap().1, b"1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if exchange(&h.addr, &with_payload(&header, b"3")).await == b"served" {
            break;
        }
        // The first connection's task may not have ended yet.
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.served.recv().await.unwrap().1, b"3");
}

#[tokio::test]
async fn rewind_hands_over_the_replayed_bytes_and_what_follows_in_one_read() {
    // One read for a whole small request head keeps hyper from growing its read buffer.
    let (mut client, server) = tokio::io::duplex(64);
    client.write_all(b"HTTP/1.1\r\n\r\n").await.unwrap();
    let mut io = Rewind::new(Bytes::from_static(b"GET / "), server);
    let mut buf = [0u8; 64];
    let n = io.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
    // With nothing more ready, the replayed bytes still come at once.
    let (_client, server) = tokio::io::duplex(64);
    let mut io = Rewind::new(Bytes::from_static(b"GET"), server);
    let n = tokio::time::timeout(Duration::from_secs(1), io.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"GET");
}
