//! Overload limits through the real binary: each `waypoint run` flag, the answer a client gets
//! over the limit, and the metric that counts it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use waypoint_bin::tools::echo::{self, EchoIdentity};
use waypoint_bin::tools::send::{self, ProxyClaims, RequestSpec};
use waypoint_core::transport::BoxedIo;
use waypoint_core::transport::listener::ListenAddr;

const VIP: &str = "10.96.0.10:80";

/// A `waypoint run` child process, killed on drop, its stdout (the access log) collected.
struct Waypoint {
    child: Child,
    sandwich: ListenAddr,
    admin: SocketAddr,
    stdout: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Waypoint {
    /// Starts the binary in front of a Service `echo` at 10.96.0.10:80 whose endpoint is
    /// 127.0.0.1:`backend_port`, with `flags` added, and waits until its admin server answers.
    async fn start(backend_port: u16, flags: &[&str]) -> Waypoint {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, common::service("echo", "10.96.0.10", backend_port)).unwrap();
        let sandwich: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
        let mut child = Command::new(env!("CARGO_BIN_EXE_waypoint"))
            .args(["run", "--config"])
            .arg(&config)
            .args(["--sandwich-listen", &sandwich.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--access-log", "json"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let waypoint = Waypoint {
            child,
            sandwich: ListenAddr::Tcp(sandwich),
            admin,
            stdout,
            _dir: dir,
        };
        // The admin server answers before the listeners are bound; readiness passes only once
        // they are, so wait for it rather than for the admin port.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(admin).await.is_ok()
                && common::http_get(admin, "/healthz/ready")
                    .await
                    .starts_with("HTTP/1.1 200")
            {
                break;
            }
            assert!(Instant::now() < deadline, "waypoint never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        waypoint
    }

    async fn metrics(&self) -> String {
        common::http_get(self.admin, "/metrics").await
    }

    /// The value of the first metric line starting with `prefix` (name and labels).
    async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until `prefix` reads `want` (metrics move after the client saw the answer).
    async fn wait_metric(&self, prefix: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.metric(prefix).await;
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{prefix} is {got:?}, want {want}\n{}",
                self.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn listener_label(&self) -> String {
        self.sandwich.to_string()
    }

    /// Opens a keep-alive HTTP/1.1 connection (PROXY header first) and checks it is served.
    async fn open(&self) -> Conn {
        let claims = claims();
        // The backend may still be starting: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let io = send::connect(&self.sandwich, &claims).await.unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut conn = Conn(sender);
            match conn.get("/open").await {
                Ok((StatusCode::OK, _)) => return conn,
                other => assert!(
                    Instant::now() < deadline,
                    "never served a first request: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One request on a new connection.
    async fn send(&self, method: Method, path: &str, body: &'static [u8]) -> (StatusCode, Bytes) {
        let spec = RequestSpec {
            method,
            path: path.into(),
            host: Some("echo".into()),
            headers: Vec::new(),
            body: Bytes::from_static(body),
            h2c: false,
        };
        let resp = send::send(&self.sandwich, &claims(), &spec).await.unwrap();
        (resp.status(), resp.into_body())
    }
}

fn claims() -> ProxyClaims {
    ProxyClaims {
        source: "10.0.0.7:40000".parse().unwrap(),
        destination: VIP.parse().unwrap(),
        identity: Some("spiffe://cluster.local/ns/default/sa/client".into()),
        baggage: None,
    }
}

/// A kept-alive client connection.
struct Conn(SendRequest<Full<Bytes>>);

impl Conn {
    async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), hyper::Error> {
        let req = Request::get(path)
            .header("host", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.0.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

async fn echo_backend() -> u16 {
    echo::spawn(([127, 0, 0, 1], 0).into(), EchoIdentity::default())
        .await
        .unwrap()
        .port()
}

/// Everything the waypoint sends until it closes the connection (at most 10 s).
async fn read_answer(io: &mut BoxedIo) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Connects, sends a PROXY header and a request, and returns what came back: nothing when the
/// waypoint closed the connection without reading.
async fn refused_exchange(to: &ListenAddr) -> Vec<u8> {
    let mut io = match send::connect(to, &claims()).await {
        Ok(io) => io,
        // Closed before the header was even written: refused too.
        Err(_) => return Vec::new(),
    };
    let _ = io.write_all(b"GET / HTTP/1.1\r\nhost: echo\r\n\r\n").await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "a refused connection is closed at once");
    out
}

#[tokio::test]
async fn the_connection_over_the_listener_limit_is_refused_while_held_ones_keep_working() {
    let wp = Waypoint::start(
        echo_backend().await,
        &["--max-connections-per-listener", "2"],
    )
    .await;
    let mut first = wp.open().await;
    let mut second = wp.open().await;

    assert_eq!(refused_exchange(&wp.sandwich).await, b"");
    let refused = format!(
        "waypoint_connections_refused_total{{listener=\"{}\",reason=\"listener_limit\"}}",
        wp.listener_label()
    );
    wp.wait_metric(&refused, 1.0).await;
    let open = format!(
        "waypoint_downstream_connections{{listener=\"{}\"}}",
        wp.listener_label()
    );
    assert_eq!(wp.metric(&open).await, Some(2.0));

    // Held connections are unaffected.
    assert_eq!(first.get("/again").await.unwrap().0, StatusCode::OK);
    assert_eq!(second.get("/again").await.unwrap().0, StatusCode::OK);

    // Closing one frees its slot.
    drop(first);
    wp.wait_metric(&open, 1.0).await;
    let _third = wp.open().await;
}

#[tokio::test]
async fn the_total_connection_limit_spans_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("wp.sock");
    let unix = format!("unix:{}", sock.display());
    let port = common::free_port();
    let tcp = format!("127.0.0.1:{port}");
    let listeners = format!("{tcp},{unix}");
    let mut wp = Waypoint::start(
        echo_backend().await,
        &["--max-connections", "2", "--sandwich-listen", &listeners],
    )
    .await;
    wp.sandwich = ListenAddr::Tcp(tcp.parse().unwrap());
    let _a = wp.open().await;
    let unix_addr: ListenAddr = unix.parse().unwrap();
    let tcp_addr = wp.sandwich.clone();
    wp.sandwich = unix_addr.clone();
    let _b = wp.open().await;

    assert_eq!(refused_exchange(&tcp_addr).await, b"");
    assert_eq!(refused_exchange(&unix_addr).await, b"");
    wp.wait_metric(
        &format!(
            "waypoint_connections_refused_total{{listener=\"tcp:{tcp}\",reason=\"total_limit\"}}"
        ),
        1.0,
    )
    .await;
    wp.wait_metric(
        &format!(
            "waypoint_connections_refused_total{{listener=\"{unix}\",reason=\"total_limit\"}}"
        ),
        1.0,
    )
    .await;
}

#[tokio::test]
async fn the_request_over_the_in_flight_limit_gets_503_with_flag_om() {
    let wp = Waypoint::start(echo_backend().await, &["--max-requests-in-flight", "2"]).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut conn = wp.open().await;
        slow.push(tokio::spawn(async move {
            conn.get("/slow?delay=3s").await.unwrap().0
        }));
    }
    wp.wait_metric("waypoint_requests_in_flight ", 2.0).await;

    let (status, body) = wp.send(Method::GET, "/one-too-many", b"").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "overloaded\n");
    wp.wait_metric(
        "waypoint_requests_refused_total{reason=\"in_flight_limit\"}",
        1.0,
    )
    .await;

    for task in slow {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    wp.wait_metric("waypoint_requests_in_flight ", 0.0).await;
    assert_eq!(wp.send(Method::GET, "/after", b"").await.0, StatusCode::OK);

    // The access log names the flag.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = wp.stdout.lock().unwrap().clone();
        let line = log.lines().find(|l| l.contains("/one-too-many"));
        if let Some(line) = line {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(entry["response_code"], 503, "{line}");
            assert_eq!(entry["response_flags"], "OM", "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no access log line: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A backend that records every byte it receives and answers 200 once it has a whole
/// chunked request.
async fn recording_backend() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let whole = {
                        let mut seen = sink.lock().unwrap();
                        seen.extend_from_slice(&buf[..n]);
                        seen.ends_with(b"0\r\n\r\n")
                    };
                    if whole {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_413_up_front_and_aborted_when_streamed() {
    let (port, seen) = recording_backend().await;
    let wp = Waypoint::start(port, &["--max-request-body-bytes", "1Ki"]).await;

    // Declared too large: 413 before anything goes upstream.
    let (status, _) = wp.send(Method::POST, "/declared", &[b'x'; 2000]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    wp.wait_metric(
        "waypoint_requests_refused_total{reason=\"body_too_large\"}",
        1.0,
    )
    .await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "the upstream saw nothing of it"
    );

    // Chunked, no length: cut off mid-stream; the upstream never gets the final chunk.
    let mut io = send::connect(&wp.sandwich, &claims()).await.unwrap();
    io.write_all(b"POST /streamed HTTP/1.1\r\nhost: echo\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("200\r\n{}\r\n", "y".repeat(0x200));
    for _ in 0..4 {
        // 4 x 512 bytes: the third chunk crosses the limit; later writes may fail.
        if io.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = io.write_all(b"0\r\n\r\n").await;
    let answer = read_answer(&mut io).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    wp.wait_metric(
        "waypoint_requests_refused_total{reason=\"body_too_large_streamed\"}",
        1.0,
    )
    .await;
    let upstream = seen.lock().unwrap().clone();
    assert!(
        !upstream.ends_with(b"0\r\n\r\n"),
        "the upstream must not see a complete request: {}",
        String::from_utf8_lossy(&upstream)
    );

    // Under the limit, a chunked body goes through whole.
    seen.lock().unwrap().clear();
    let mut io = send::connect(&wp.sandwich, &claims()).await.unwrap();
    let small = format!(
        "POST /small HTTP/1.1\r\nhost: echo\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    io.write_all(small.as_bytes()).await.unwrap();
    let answer = read_answer(&mut io).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(seen.lock().unwrap().ends_with(b"0\r\n\r\n"));
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let wp = Waypoint::start(
        echo_backend().await,
        &["--max-request-headers-bytes", "16Ki"],
    )
    .await;
    let _warm = wp.open().await;
    let mut io = send::connect(&wp.sandwich, &claims()).await.unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nhost: echo\r\nx-big: {}\r\n\r\n",
        "b".repeat(20 * 1024)
    );
    let _ = io.write_all(head.as_bytes()).await;
    let answer = read_answer(&mut io).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    wp.wait_metric(
        "waypoint_requests_refused_total{reason=\"headers_too_large\"}",
        1.0,
    )
    .await;

    // Under the limit is fine.
    let spec = RequestSpec {
        method: Method::GET,
        path: "/".into(),
        host: Some("echo".into()),
        headers: vec![("x-big".into(), "b".repeat(12 * 1024))],
        body: Bytes::new(),
        h2c: false,
    };
    let resp = send::send(&wp.sandwich, &claims(), &spec).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_h2_header_list_over_the_limit_is_refused_and_streams_are_capped() {
    let wp = Waypoint::start(
        echo_backend().await,
        &[
            "--h2-max-header-list-bytes",
            "4Ki",
            "--h2-max-concurrent-streams",
            "3",
        ],
    )
    .await;
    let _warm = wp.open().await;
    let io = send::connect(&wp.sandwich, &claims()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = |value: String| {
        Request::get("http://echo/h2")
            .header("x-big", value)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let ok = sender.send_request(req("s".into())).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // Four 1 s requests at once with a cap of three streams: the client must queue the
    // fourth behind the first three, so the batch takes two rounds.
    let started = Instant::now();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let req = Request::get("http://echo/slow?delay=1s")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.send_request(req).await.unwrap().status()
            })
        })
        .collect();
    for task in slow {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "streams were not capped: {took:?}"
    );

    // The h2 layer answers 431 itself (the request never reaches the proxy) and resets the
    // stream; the connection lives on.
    let big = sender
        .send_request(req("b".repeat(8 * 1024)))
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // The connection survives for requests under the limit.
    let again = sender.send_request(req("s".into())).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_memory_limit_below_the_resident_set_refuses_new_connections_and_closes_idle_ones() {
    let port = echo_backend().await;
    let wp = Waypoint::start(
        port,
        &["--memory-limit", "1Mi", "--memory-check-interval", "3s"],
    )
    .await;
    // Before the first check: served, and left idle.
    let mut idle = wp.open().await;
    assert!(
        common::http_get(wp.admin, "/healthz/ready")
            .await
            .starts_with("HTTP/1.1 200")
    );

    wp.wait_metric("waypoint_memory_overloaded ", 1.0).await;
    assert_eq!(
        wp.metric("waypoint_memory_limit_bytes ").await,
        Some(1048576.0)
    );
    // The idle keep-alive connection was closed gracefully.
    wp.wait_metric(
        "waypoint_overload_connections_closed_total{state=\"idle\"}",
        1.0,
    )
    .await;
    assert!(
        idle.get("/after").await.is_err(),
        "the idle connection is closed"
    );
    // New connections are refused, and readiness fails so the Service looks elsewhere.
    assert_eq!(refused_exchange(&wp.sandwich).await, b"");
    wp.wait_metric(
        &format!(
            "waypoint_connections_refused_total{{listener=\"{}\",reason=\"memory\"}}",
            wp.listener_label()
        ),
        1.0,
    )
    .await;
    let ready = common::http_get(wp.admin, "/healthz/ready").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("memory over the limit"), "{ready}");
    drop(wp);

    // The same waypoint with room to spare serves and stays ready.
    let wp = Waypoint::start(
        port,
        &["--memory-limit", "4Gi", "--memory-check-interval", "100ms"],
    )
    .await;
    let mut conn = wp.open().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(conn.get("/still").await.unwrap().0, StatusCode::OK);
    assert_eq!(wp.metric("waypoint_memory_overloaded ").await, Some(0.0));
    assert!(
        common::http_get(wp.admin, "/healthz/ready")
            .await
            .starts_with("HTTP/1.1 200")
    );
}
