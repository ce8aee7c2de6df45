//! The echo backend over loopback, through its public API as the conformance harness uses it:
//! JSON echo over HTTP/1.1 and h2c, /retry/, /status, WebSocket, gRPC, and the request log.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use waypoint_bin::tools::echo::grpc::{self, code};
use waypoint_bin::tools::echo::{self, EchoIdentity, EchoOptions, EchoServer, RequestLog};

fn identity(pod: &str) -> EchoIdentity {
    EchoIdentity {
        pod: pod.into(),
        namespace: "gateway-conformance-infra".into(),
        service: "infra-backend-v1".into(),
    }
}

async fn start(pod: &str, options: EchoOptions) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    echo::spawn_with(listener, identity(pod), options).unwrap()
}

async fn send(
    addr: SocketAddr,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> Result<Response<Bytes>, hyper::Error> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await?
    };
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(
        parts,
        body.collect().await?.to_bytes(),
    ))
}

fn get(target: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(target)
        .header("host", "echo.example")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn echoes_json_like_echo_basic() {
    let server = start("infra-backend-v1-abc", EchoOptions::default()).await;
    let addr = server.addr();
    let mut req = get("/some/path?q=1&delay=10ms");
    req.headers_mut()
        .insert("x-echo-set-header", "X-Answer: 42".parse().unwrap());
    req.headers_mut().append("x-multi", "a".parse().unwrap());
    req.headers_mut().append("x-multi", "b".parse().unwrap());
    let started = Instant::now();
    let resp = send(addr, false, req).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(10));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-answer"], "42");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = json(resp.body());
    assert_eq!(body["path"], "/some/path?q=1&delay=10ms");
    assert_eq!(body["host"], "echo.example");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["proto"], "HTTP/1.1");
    assert_eq!(body["pod"], "infra-backend-v1-abc");
    assert_eq!(body["namespace"], "gateway-conformance-infra");
    assert_eq!(body["service"], "infra-backend-v1");
    assert_eq!(body["httpPort"], addr.port().to_string());
    assert_eq!(body["headers"]["X-Multi"], serde_json::json!(["a", "b"]));
    assert!(
        body["headers"].get("Host").is_none(),
        "Go keeps Host out of headers"
    );

    // h2c with prior knowledge: proto is Go's "HTTP/2.0" and host is the :authority.
    let req = Request::builder()
        .uri("http://h2.example/h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(addr, true, req).await.unwrap();
    let body = json(resp.body());
    assert_eq!(body["proto"], "HTTP/2.0");
    assert_eq!(body["host"], "h2.example");
    assert_eq!(body["path"], "/h2");

    // A delay Go cannot parse is a 500 with a JSON message, as upstream.
    let resp = send(addr, false, get("/?delay=soon")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        json(resp.body())["message"]
            .as_str()
            .unwrap()
            .contains("soon")
    );
}

#[tokio::test]
async fn health_and_status() {
    let server = start("p", EchoOptions::default()).await;
    let resp = send(server.addr(), false, get("/health")).await.unwrap();
    assert_eq!(
        (resp.status(), &resp.body()[..]),
        (StatusCode::OK, &b"OK"[..])
    );
    let resp = send(server.addr(), false, get("/status/418"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    assert!(resp.body().is_empty());
    let resp = send(server.addr(), false, get("/status/nope"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Routing collapses `//` as upstream does; the reported path stays as sent.
    let resp = send(server.addr(), false, get("//status//503"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = send(server.addr(), false, get("//health")).await.unwrap();
    assert_eq!(&resp.body()[..], b"OK");
}

#[tokio::test]
async fn retry_fails_first_attempts_with_the_code() {
    let server = start("p", EchoOptions::default()).await;
    let target = "/retry/code-500?uuid=u1&succeedAfter=2&responseCode=503";
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(
            send(server.addr(), false, get(target))
                .await
                .unwrap()
                .status(),
        );
    }
    assert_eq!(
        codes,
        [503, 503, 200, 200].map(|c| StatusCode::from_u16(c).unwrap())
    );
    let ok = send(server.addr(), false, get(target)).await.unwrap();
    assert_eq!(json(ok.body())["path"], target);
    // Counters are per uuid; h2 works the same with a response code.
    let other = "/retry/x?uuid=u2&succeedAfter=1&responseCode=500";
    let h2 = |t: &str| {
        Request::builder()
            .uri(format!("http://echo.example{t}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(
        send(server.addr(), true, h2(other)).await.unwrap().status(),
        500
    );
    assert_eq!(
        send(server.addr(), true, h2(other)).await.unwrap().status(),
        200
    );
    // Missing parameters are 400s, as upstream.
    for bad in [
        "/retry/x?succeedAfter=1",
        "/retry/x?uuid=u3",
        "/retry/x?uuid=u3&succeedAfter=x",
    ] {
        assert_eq!(
            send(server.addr(), false, get(bad)).await.unwrap().status(),
            400,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn retry_without_code_resets_the_connection() {
    let server = start("p", EchoOptions::default()).await;
    let target = "/retry/reset?uuid=r1&succeedAfter=1";
    // Raw HTTP/1.1 so the reset itself is visible: no response bytes, ECONNRESET.
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let err = stream.read_to_end(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(buf.is_empty(), "no HTTP response before the reset: {buf:?}");
    // The next attempt succeeds, and an ordinary connection closes cleanly (no reset).
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // Over h2 a hijack is impossible: upstream's 500 with a message.
    let req = Request::builder()
        .uri("http://x/retry/reset?uuid=r2&succeedAfter=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(server.addr(), true, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

/// A masked client frame.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

async fn ws_read(stream: &mut BufReader<TcpStream>) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1] & 0x80, 0);
    let mut payload = vec![0; usize::from(head[1] & 0x7f)];
    stream.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0f, payload)
}

#[tokio::test]
async fn websocket_echo() {
    let log = RequestLog::new();
    let server = start("ws-pod", EchoOptions::default().with_log(log.clone())).await;
    let mut stream = BufReader::new(TcpStream::connect(server.addr()).await.unwrap());
    stream
        .get_mut()
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Origin: ws://gateway/test\r\n\r\n",
        )
        .await
        .unwrap();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        lines.push(line.trim_end().to_ascii_lowercase());
    }
    assert!(lines[0].starts_with("http/1.1 101"), "{lines:?}");
    assert!(lines.contains(&"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=".to_owned()));
    assert!(lines.contains(&"upgrade: websocket".to_owned()));

    stream
        .get_mut()
        .write_all(&ws_frame(1, b"Websocket Support!"))
        .await
        .unwrap();
    assert_eq!(
        ws_read(&mut stream).await,
        (1, b"Websocket Support!".to_vec())
    );
    stream
        .get_mut()
        .write_all(&ws_frame(2, &[1, 2, 3, 4, 5, 6, 7]))
        .await
        .unwrap();
    assert_eq!(ws_read(&mut stream).await, (2, vec![1, 2, 3, 4, 5, 6, 7]));
    stream
        .get_mut()
        .write_all(&ws_frame(9, b"p"))
        .await
        .unwrap();
    assert_eq!(ws_read(&mut stream).await, (0xa, b"p".to_vec()));
    stream
        .get_mut()
        .write_all(&ws_frame(8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(
        ws_read(&mut stream).await,
        (8, 1000u16.to_be_bytes().to_vec())
    );
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(log.pod_saw_path_since("ws-pod", "/ws", Instant::now() - Duration::from_secs(60)));

    // /ws without an upgrade is refused.
    let resp = send(server.addr(), false, get("/ws")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

async fn grpc_call(addr: SocketAddr, method: &str, metadata: Vec<(&str, &str)>) -> grpc::GrpcReply {
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        grpc::call(stream, "grpc.example.com", method, metadata),
    )
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn grpc_echo_service() {
    let server = start(
        "grpc-infra-backend-v1-x",
        EchoOptions::default().with_grpc(true),
    )
    .await;
    for method in ["Echo", "EchoTwo"] {
        let reply = grpc_call(
            server.addr(),
            method,
            vec![("X-Custom", "yes"), ("x-custom", "again")],
        )
        .await;
        assert_eq!(reply.http_status, StatusCode::OK);
        assert_eq!(
            (reply.grpc_status, reply.code()),
            (Some(code::OK), code::OK)
        );
        let a = reply.assertions().unwrap();
        assert_eq!(
            a.fully_qualified_method,
            format!("/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/{method}")
        );
        assert_eq!(a.authority, "grpc.example.com");
        let ctx = a.context.as_ref().unwrap();
        assert_eq!(ctx.pod, "grpc-infra-backend-v1-x");
        assert_eq!(ctx.namespace, "gateway-conformance-infra");
        assert_eq!(ctx.service_name, "infra-backend-v1");
        let headers: Vec<(&str, &str)> = a
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(headers[0], (":authority", "grpc.example.com"));
        assert!(headers.contains(&("x-custom", "yes")));
        assert!(headers.contains(&("x-custom", "again")));
        assert!(headers.contains(&("content-type", "application/grpc")));
        assert!(!headers.iter().any(|(k, _)| *k == "te"), "{headers:?}");
    }

    let reply = grpc_call(server.addr(), "EchoThree", vec![]).await;
    assert_eq!(reply.code(), code::UNIMPLEMENTED);
    assert!(reply.response.is_none());
    assert!(reply.grpc_message.unwrap().contains("EchoThree"));
    let reply = grpc_call(server.addr(), "/other.Service/Echo", vec![]).await;
    assert_eq!(reply.code(), code::UNIMPLEMENTED);

    // Plain HTTP still works on the same port.
    let resp = send(server.addr(), false, get("/")).await.unwrap();
    assert_eq!(json(resp.body())["pod"], "grpc-infra-backend-v1-x");
}

#[tokio::test]
async fn grpc_client_reports_bad_arguments_and_non_grpc_answers() {
    // Without gRPC the backend answers JSON: no grpc-status, so the code is Internal (200).
    let server = start("p", EchoOptions::default()).await;
    let reply = grpc_call(server.addr(), "Echo", vec![]).await;
    assert_eq!(reply.grpc_status, None);
    assert_eq!(reply.code(), code::INTERNAL);
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let err = grpc::call(stream, "ok", "Echo", [("bad name", "v")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad name"), "{err}");
}

#[tokio::test]
async fn request_log_is_shared_and_counts_per_backend() {
    let log = RequestLog::new();
    let a = start(
        "backend-a",
        EchoOptions::default().with_log(log.clone()).with_grpc(true),
    )
    .await;
    let b = start("backend-b", EchoOptions::default().with_log(log.clone())).await;
    let before = Instant::now();
    send(a.addr(), false, get("/one")).await.unwrap();
    send(b.addr(), false, get("/mirror?x=1")).await.unwrap();
    send(b.addr(), false, get("/mirror?x=2")).await.unwrap();
    grpc_call(a.addr(), "Echo", vec![]).await;
    assert_eq!(log.count_for_pod("backend-a", before), 2);
    assert_eq!(log.count_for_pod("backend-b", before), 2);
    assert!(log.pod_saw_path_since("backend-b", "/mirror", before));
    assert!(!log.pod_saw_path_since("backend-a", "/mirror", before));
    assert!(log.saw_path_since("/mirror?x=2", before));
    let entry = &log.matching(before, |r| r.path == "/one")[0];
    assert_eq!(
        (entry.method.as_str(), entry.host.as_str()),
        ("GET", "echo.example")
    );
    assert_eq!(entry.header("HOST"), Some("echo.example"));
    let grpc_entry = &log.matching(before, |r| r.proto == "HTTP/2.0")[0];
    assert!(grpc_entry.path.ends_with("GrpcEcho/Echo"));
    assert!(!log.saw_path_since("/one", Instant::now()));
}

#[tokio::test]
async fn dropping_the_handle_stops_the_backend() {
    let server = start("p", EchoOptions::default()).await;
    let addr = server.addr();
    // An open keep-alive connection is closed too.
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest))
        .await
        .unwrap();
}

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_echo_command_serves_grpc_and_documents_itself() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .args(["echo", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for needle in [
        "/retry/",
        "/ws",
        "/status/NNN",
        "X-Echo-Set-Header",
        "--grpc",
        "--namespace",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_waypoint"))
            .args(["echo", "--grpc", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--pod",
                "cli-pod",
                "--namespace",
                "cli-ns",
                "--service",
                "cli-svc",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "echo never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = grpc_call(addr, "EchoTwo", vec![]).await;
    let ctx = reply.assertions().unwrap().context.clone().unwrap();
    assert_eq!(
        (
            ctx.pod.as_str(),
            ctx.namespace.as_str(),
            ctx.service_name.as_str()
        ),
        ("cli-pod", "cli-ns", "cli-svc")
    );
    let body = json(send(addr, false, get("/")).await.unwrap().body());
    assert_eq!(
        (body["pod"].as_str(), body["service"].as_str()),
        (Some("cli-pod"), Some("cli-svc"))
    );
}

#[tokio::test]
async fn an_h2c_only_port_answers_http1_with_400_as_upstreams_h2c_port_does() {
    let server = start(
        "infra-backend-v1-0",
        EchoOptions::default().with_h2c_only(true),
    )
    .await;
    let resp = send(server.addr(), false, get("/")).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.body(), "Expected h2c request");
    let resp = send(server.addr(), true, get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp.body())["proto"], "HTTP/2.0");
    // Without the option both are served, as on every other port.
    let server = start("infra-backend-v1-0", EchoOptions::default()).await;
    let resp = send(server.addr(), false, get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
}
