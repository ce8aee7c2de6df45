//! Upgrades and tunnels through a real waypoint (public API, sandwich listener on loopback):
//! only allowed upgrades become tunnels, and only after the filter chain and a backend 101 that
//! matches. Each backend here *would* accept any upgrade, so a missed check shows as a tunnel.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use waypoint_core::filter::{
    BuildContext, Decision, Filter, FilterFactory, FilterSet, Request, RequestContext,
};
use waypoint_core::runtime::{RunningWaypoint, Waypoint, WaypointOptions};
use waypoint_core::transport::listener::ListenAddr;
use waypoint_core::wire::proxy_protocol::encode_v2;
use waypoint_filters::Builtins;

const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const INTRUDER: &str = "spiffe://cluster.local/ns/shop/sa/intruder";
const VIP: &str = "10.96.0.10:80";

/// How the raw backend treats requests.
#[derive(Clone, Copy)]
enum Mode {
    /// 101 to whatever `Upgrade` a request names (then echoes bytes); 200 to the rest.
    SwitchWhenAsked,
    /// 101 `Upgrade: h2c` to every request, then echoes bytes: the worst backend there is.
    AlwaysSwitch,
}

/// A raw TCP backend that reports every request head it reads and every byte that reaches it
/// through a tunnel.
struct Backend {
    port: u16,
    heads: mpsc::UnboundedReceiver<String>,
    tunnelled: Arc<Mutex<Vec<u8>>>,
}

async fn backend(mode: Mode) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (heads_tx, heads) = mpsc::unbounded_channel();
    let tunnelled = Arc::new(Mutex::new(Vec::new()));
    let bytes = tunnelled.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (heads_tx, bytes) = (heads_tx.clone(), bytes.clone());
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut stream).await {
                    let _ = heads_tx.send(head.clone());
                    let asked = header(&head, "upgrade");
                    let switch_to = match (mode, asked) {
                        (Mode::SwitchWhenAsked, None) => {
                            let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            stream.write_all(ok.as_bytes()).await.unwrap();
                            continue;
                        }
                        (Mode::SwitchWhenAsked, Some(p)) => p,
                        (Mode::AlwaysSwitch, _) => "h2c".to_owned(),
                    };
                    let switch = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {switch_to}\r\n\r\n"
                    );
                    stream.write_all(switch.as_bytes()).await.unwrap();
                    let mut buf = [0u8; 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                                let _ = stream.write_all(&buf[..n]).await;
                            }
                        }
                    }
                }
            });
        }
    });
    Backend {
        port,
        heads,
        tunnelled,
    }
}

/// Reads up to the blank line ending a message head, lowercased; `None` at end of stream.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// The value of header `name` in a lowercased head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n.trim() == name).then(|| v.trim().to_owned())
    })
}

/// A response head and its `content-length` body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(stream))
        .await
        .unwrap()
        .expect("the waypoint closed the connection before answering");
    let len: usize = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    (head, String::from_utf8(body).unwrap())
}

struct Harness {
    _dir: tempfile::TempDir,
    waypoint: RunningWaypoint,
    backend: Backend,
}

impl Harness {
    async fn start(mode: Mode, extra: &str, adjust: impl FnOnce(&mut WaypointOptions)) -> Self {
        Self::start_with_filter(mode, extra, adjust, None).await
    }

    /// Like [`Harness::start`], with `filter` after the built-in filters.
    async fn start_with_filter(
        mode: Mode,
        extra: &str,
        adjust: impl FnOnce(&mut WaypointOptions),
        filter: Option<Arc<dyn FilterFactory>>,
    ) -> Self {
        let backend = backend(mode).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let manifests = format!(
            "{}{extra}",
            common::service("echo", "10.96.0.10", backend.port)
        );
        std::fs::write(&config, manifests).unwrap();
        let mut options = WaypointOptions::new(&config);
        options.sandwich = vec![ListenAddr::Tcp(([127, 0, 0, 1], 0).into())];
        options.admin = Some(([127, 0, 0, 1], 0).into());
        adjust(&mut options);
        let waypoint = Waypoint::builder(options)
            .install(Builtins::default())
            .install(|filters: &mut FilterSet| {
                if let Some(filter) = filter {
                    filters.factory(filter);
                }
            })
            .start()
            .await
            .unwrap();
        Harness {
            _dir: dir,
            waypoint,
            backend,
        }
    }

    /// A connection to the sandwich listener, its PROXY header naming `identity`.
    async fn connect(&self, identity: &str) -> TcpStream {
        let ListenAddr::Tcp(addr) = self.waypoint.sandwich_addrs()[0] else {
            panic!("TCP listener expected")
        };
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let header = encode_v2(
            "10.244.1.5:40000".parse().unwrap(),
            VIP.parse().unwrap(),
            &[(0xD0, identity.as_bytes())],
        );
        stream.write_all(&header).await.unwrap();
        stream
    }

    /// Sends `request` on a new connection for `identity`; the connection, the response head
    /// and its body.
    async fn ask(&self, identity: &str, request: &[u8]) -> (TcpStream, String, String) {
        let mut client = self.connect(identity).await;
        client.write_all(request).await.unwrap();
        let (head, body) = read_response(&mut client).await;
        (client, head, body)
    }

    /// Asserts `waypoint_upgrades_total{protocol,decision}` is `n` on the admin `/metrics`.
    async fn assert_counted(&self, protocol: &str, decision: &str, n: u64) {
        let admin: SocketAddr = self.waypoint.admin_addr().unwrap();
        let metrics = common::http_get(admin, "/metrics").await;
        let line = format!(
            "waypoint_upgrades_total{{protocol=\"{protocol}\",decision=\"{decision}\"}} {n}"
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing in\n{metrics}"
        );
    }

    /// Waits a little, then returns the bytes that reached the backend through a tunnel.
    async fn tunnelled_after_a_while(&self) -> Vec<u8> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.backend.tunnelled.lock().unwrap().clone()
    }
}

/// True when the peer closes the connection (rather than leaving it open for more).
async fn closes(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    )
}

const H2C_UPGRADE: &[u8] = b"GET /h2c HTTP/1.1\r\nHost: echo\r\n\
    Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";

const WS_UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: echo.default.svc.cluster.local\r\n\
    Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn an_h2c_upgrade_is_served_as_http1_and_its_headers_never_reach_the_backend() {
    let mut h = Harness::start(Mode::SwitchWhenAsked, "", |_| {}).await;
    let (mut client, head, body) = h.ask(CART, H2C_UPGRADE).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    let seen = h.backend.heads.recv().await.unwrap();
    assert!(header(&seen, "upgrade").is_none(), "{seen}");
    assert!(header(&seen, "http2-settings").is_none(), "{seen}");

    // The connection is still HTTP/1.1 through the filter chain: the next request is parsed
    // and forwarded as a request, not passed through as bytes.
    client
        .write_all(b"GET /next HTTP/1.1\r\nHost: echo\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        h.backend
            .heads
            .recv()
            .await
            .unwrap()
            .starts_with("get /next ")
    );
    assert!(h.tunnelled_after_a_while().await.is_empty());
    h.assert_counted("h2c", "stripped", 1).await;
}

#[tokio::test]
async fn a_backend_that_switches_protocols_unasked_gets_502_and_no_tunnel() {
    let mut h = Harness::start(Mode::AlwaysSwitch, "", |_| {}).await;
    for request in [&b"GET / HTTP/1.1\r\nHost: echo\r\n\r\n"[..], H2C_UPGRADE] {
        let (mut client, head, body) = h.ask(CART, request).await;
        assert!(head.starts_with("http/1.1 502"), "{head}");
        assert!(body.contains("switched protocols unasked"), "{body}");
        h.backend.heads.recv().await.unwrap();
        // What a client would send on an HTTP/2 connection never reaches the backend.
        let _ = client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nsmuggled bytes")
            .await;
    }
    assert!(h.tunnelled_after_a_while().await.is_empty());
    h.assert_counted("none", "backend_error", 2).await;
}

#[tokio::test]
async fn a_backend_switching_to_another_protocol_than_asked_gets_502() {
    let mut h = Harness::start(Mode::AlwaysSwitch, "", |_| {}).await;
    let (mut client, head, body) = h.ask(CART, WS_UPGRADE.as_bytes()).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(body.contains("h2c"), "{body}");
    h.backend.heads.recv().await.unwrap();
    let _ = client.write_all(b"after the switch").await;
    assert!(h.tunnelled_after_a_while().await.is_empty());
    h.assert_counted("websocket", "backend_error", 1).await;
}

#[tokio::test]
async fn a_websocket_upgrade_is_tunnelled_only_for_an_identity_the_policy_allows() {
    let mut h = Harness::start(Mode::SwitchWhenAsked, common::ONLY_CART, |_| {}).await;

    // Denied by AuthorizationPolicy: Istio's 403, no request reaches the backend, no tunnel.
    let (mut intruder, head, body) = h.ask(INTRUDER, WS_UPGRADE.as_bytes()).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert_eq!(body, "RBAC: access denied");
    let _ = intruder.write_all(b"not a tunnel").await;

    // Allowed: switched, and bytes flow both ways.
    let mut cart = h.connect(CART).await;
    cart.write_all(WS_UPGRADE.as_bytes()).await.unwrap();
    let head = read_head(&mut cart).await.unwrap();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_eq!(header(&head, "upgrade").as_deref(), Some("websocket"));
    let seen = h.backend.heads.recv().await.unwrap();
    assert!(
        seen.starts_with("get /chat "),
        "only the allowed request: {seen}"
    );
    assert!(h.backend.heads.try_recv().is_err());
    cart.write_all(b"frame through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 24];
    tokio::time::timeout(Duration::from_secs(5), cart.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"frame through the tunnel");
    assert_eq!(
        h.tunnelled_after_a_while().await,
        b"frame through the tunnel"
    );
    h.assert_counted("websocket", "allowed", 2).await;
}

#[tokio::test]
async fn an_upgrade_to_a_protocol_not_allowed_is_refused_with_403_and_the_connection_closed() {
    let upgrade =
        b"GET / HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: x-raw-tcp\r\n\r\n";
    let mut h = Harness::start(Mode::SwitchWhenAsked, "", |_| {}).await;
    let (mut client, head, body) = h.ask(CART, upgrade).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(
        body.contains("x-raw-tcp") && body.contains("not allowed"),
        "{body}"
    );
    assert!(closes(&mut client).await, "the connection stays open");
    assert!(h.backend.heads.try_recv().is_err(), "a backend was asked");
    h.assert_counted("other", "refused", 1).await;

    // Once the operator allows it (HttpServerConfig::allowed_upgrades), it is carried.
    let h = Harness::start(Mode::SwitchWhenAsked, "", |o| {
        o.http.allowed_upgrades = "websocket,x-raw-tcp".parse().unwrap();
    })
    .await;
    let mut client = h.connect(CART).await;
    client.write_all(upgrade).await.unwrap();
    let head = read_head(&mut client).await.unwrap();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    client.write_all(b"raw").await.unwrap();
    let mut echoed = [0u8; 3];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"raw");
}

#[tokio::test]
async fn connect_over_http1_is_refused_before_any_backend_and_the_connection_closed() {
    let mut h = Harness::start(Mode::SwitchWhenAsked, "", |_| {}).await;
    let port = h.backend.port;
    let connect = format!(
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n\
         GET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n"
    );
    let (mut client, head, body) = h.ask(CART, connect.as_bytes()).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(body.contains("CONNECT is not allowed"), "{body}");
    assert!(closes(&mut client).await, "the connection stays open");
    // Not the CONNECT, and not the request pipelined behind it.
    assert!(h.backend.heads.try_recv().is_err(), "a backend was asked");
    h.assert_counted("connect", "refused", 1).await;
}

#[tokio::test]
async fn connect_over_h2c_is_refused_before_any_backend() {
    let mut h = Harness::start(Mode::SwitchWhenAsked, "", |_| {}).await;
    let client = h.connect(CART).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(client),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("127.0.0.1:{}", h.backend.port))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(h.backend.heads.try_recv().is_err(), "a backend was asked");
    // The HTTP/2 connection itself carries on with ordinary requests.
    let req = http::Request::builder()
        .uri("http://echo/after")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    h.assert_counted("connect", "refused", 1).await;
}

/// A vendor filter that turns every request into an h2c upgrade request.
struct AddsH2cUpgrade;

#[async_trait::async_trait]
impl Filter for AddsH2cUpgrade {
    fn name(&self) -> &str {
        "adds-h2c-upgrade"
    }
    async fn on_request(&self, req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        let h = req.headers_mut();
        h.insert("connection", http::HeaderValue::from_static("upgrade"));
        h.insert("upgrade", http::HeaderValue::from_static("h2c"));
        Decision::Continue
    }
}

impl FilterFactory for AddsH2cUpgrade {
    fn name(&self) -> &str {
        "adds-h2c-upgrade"
    }
    fn build(&self, _cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(AddsH2cUpgrade)
    }
}

#[tokio::test]
async fn an_upgrade_a_filter_adds_is_stripped_before_the_backend() {
    let filter: Arc<dyn FilterFactory> = Arc::new(AddsH2cUpgrade);
    let mut h = Harness::start_with_filter(Mode::SwitchWhenAsked, "", |_| {}, Some(filter)).await;
    let (_client, head, body) = h.ask(CART, b"GET / HTTP/1.1\r\nHost: echo\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    let seen = h.backend.heads.recv().await.unwrap();
    assert!(header(&seen, "upgrade").is_none(), "{seen}");
    h.assert_counted("h2c", "stripped", 1).await;
}

/// One HTTP/2 frame: 9-byte header then payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK "literal header field without indexing, new name", no Huffman (RFC 7541 §6.2.2).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

async fn read_frame(stream: &mut TcpStream) -> (u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    (head[3], id, payload)
}

#[tokio::test]
async fn extended_connect_is_never_advertised_and_a_websocket_over_h2_stream_is_reset() {
    const SETTINGS: u8 = 0x4;
    const RST_STREAM: u8 = 0x3;
    const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
    let mut h = Harness::start(Mode::SwitchWhenAsked, "", |_| {}).await;
    let mut client = h.connect(CART).await;
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    client.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();

    // The server's first frame is its SETTINGS: no SETTINGS_ENABLE_CONNECT_PROTOCOL = 1.
    let (kind, _, payload) = read_frame(&mut client).await;
    assert_eq!(kind, SETTINGS);
    for setting in payload.chunks(6) {
        let id = u16::from_be_bytes([setting[0], setting[1]]);
        let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
        assert!(
            !(id == ENABLE_CONNECT_PROTOCOL && value == 1),
            "extended CONNECT advertised"
        );
    }
    client
        .write_all(&frame(SETTINGS, 0x1, 0, &[]))
        .await
        .unwrap();

    // RFC 8441 WebSocket bootstrap anyway: the stream is reset with PROTOCOL_ERROR.
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", "/chat"),
        (":authority", "echo.default.svc.cluster.local"),
        ("sec-websocket-version", "13"),
    ] {
        literal(&mut block, name, value);
    }
    client.write_all(&frame(0x1, 0x4, 1, &block)).await.unwrap();
    let reset = loop {
        let (kind, stream, payload) = read_frame(&mut client).await;
        if kind == RST_STREAM && stream == 1 {
            break u32::from_be_bytes(payload[..4].try_into().unwrap());
        }
        assert_ne!(
            kind, 0x1,
            "the server answered the extended CONNECT with headers"
        );
    };
    assert_eq!(reset, 0x1, "PROTOCOL_ERROR");
    assert!(h.backend.heads.try_recv().is_err(), "a backend was asked");
}
