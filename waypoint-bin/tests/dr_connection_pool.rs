//! DestinationRule `connectionPool` through the real binary: each limit refuses what Envoy's
//! circuit breakers refuse (503 `UO`, in the access log and the overflow counter), connections
//! are reused or not as the rule says, the connect timeout is the rule's, and invalid values are
//! refused by `waypoint check` with the field named.
//!
//! The HTTP/1.1 backend here is the test's own: it counts the connections it accepted and holds
//! `/slow` requests until the test opens its gate, so "a request is in flight" is a fact the
//! test waits for, not a guess about timing.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::run::{Echo, Running, check};
use waypoint_core::wire::proxy_protocol::{TLV_PEER_IDENTITY, encode_v2};

/// An HTTP/1.1 backend that counts connections and requests, and holds `/slow` requests until
/// [`Backend::open`]. A `/twice` path is answered 503 the first time and held like `/slow`
/// the next: a retry that stays in flight.
struct Backend {
    port: u16,
    connections: Arc<AtomicUsize>,
    arrived: Arc<AtomicUsize>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    seen: Arc<Mutex<HashSet<String>>>,
    closed: Arc<AtomicUsize>,
}

impl Backend {
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let backend = Backend {
            port,
            connections: Arc::default(),
            arrived: Arc::default(),
            gate: Arc::default(),
            seen: Arc::default(),
            closed: Arc::default(),
        };
        let (connections, arrived, gate, seen) = (
            backend.connections.clone(),
            backend.arrived.clone(),
            backend.gate.clone(),
            backend.seen.clone(),
        );
        let closed = backend.closed.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                connections.fetch_add(1, Ordering::SeqCst);
                let (arrived, gate, seen) = (arrived.clone(), gate.clone(), seen.clone());
                let closed = closed.clone();
                std::thread::spawn(move || {
                    serve(stream, &arrived, &gate, &seen);
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        backend
    }

    /// Lets every held and future `/slow` request be answered.
    fn open(&self) {
        let (open, cv) = &*self.gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Waits until the waypoint has closed `n` connections to the backend.
    fn wait_closed(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.closed.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "the waypoint never closed its connection"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `n` requests have reached the backend.
    fn wait_arrived(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.arrived.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "requests never reached the backend"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Answers requests (no bodies) on one connection until it closes.
fn serve(
    stream: TcpStream,
    arrived: &AtomicUsize,
    gate: &(Mutex<bool>, Condvar),
    seen: &Mutex<HashSet<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        arrived.fetch_add(1, Ordering::SeqCst);
        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        if path.starts_with("/twice") && seen.lock().unwrap().insert(path) {
            let refusal = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nbusy here";
            if out.write_all(refusal).is_err() {
                return;
            }
            continue;
        }
        if request_line.contains(" /slow") || request_line.contains(" /twice") {
            let (open, cv) = gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nserved")
            .is_err()
        {
            return;
        }
    }
}

/// A Service `name` (VIP `vip`:80) with one endpoint at `ip:port`, its port's `appProtocol`
/// given when `app_protocol` is.
fn service(name: &str, vip: &str, ip: &str, port: u16, app_protocol: Option<&str>) -> String {
    let app = app_protocol.map_or(String::new(), |a| format!(", appProtocol: {a}"));
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {vip}
  ports: [{{name: http, port: 80{app}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}{app}}}]
endpoints: [{{addresses: ["{ip}"]}}]
"#
    )
}

/// A DestinationRule for Service `name` whose `connectionPool` is `pool` (YAML flow mapping).
fn rule(name: &str, pool: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}.default.svc.cluster.local
  trafficPolicy:
    connectionPool: {pool}
"#
    )
}

/// Sends a request to `vip` through the waypoint whose sandwich listener is `sandwich`, as
/// ztunnel would, from a thread of its own; its answer arrives on `tx`.
fn send_in_background(sandwich: u16, vip: &str, path: &str, tx: &mpsc::Sender<String>) {
    let (vip, path, tx) = (vip.to_owned(), path.to_owned(), tx.clone());
    std::thread::spawn(move || {
        let out = common::waypoint()
            .args(["send", "--to", &format!("127.0.0.1:{sandwich}")])
            .args(["--destination", &vip, "--source", "10.244.0.7:40000"])
            .args(["--identity", "spiffe://cluster.local/ns/default/sa/sleep"])
            .args(["--path", &path])
            .output()
            .unwrap();
        let _ = tx.send(String::from_utf8_lossy(&out.stdout).into_owned());
    });
}

/// The access log lines written so far (and within a moment of asking).
fn access_log(wp: &Running) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = wp.stdout.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    lines
}

fn overflow_count(wp: &Running, service: &str, limit: &str) -> String {
    let metrics = wp.admin("/metrics");
    let prefix = format!(
        "waypoint_upstream_overflow_total{{namespace=\"default\",service=\"{service}\",port=\"80\",limit=\"{limit}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} missing in\n{metrics}"))
        .to_owned()
}

fn is_overflow(answer: &str) -> bool {
    answer.contains("503") && answer.contains("upstream overflow")
}

#[test]
fn over_max_connections_a_request_waits_and_beyond_the_pending_limit_gets_503_uo() {
    let backend = Backend::start();
    let vip = "10.96.0.20:80";
    let config = [
        service("slow", "10.96.0.20", "127.0.0.1", backend.port, None),
        rule(
            "slow",
            "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
        ),
    ]
    .join("---\n");
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let (tx, rx) = mpsc::channel();

    // The first request holds the backend's only connection.
    send_in_background(wp.sandwich, vip, "/slow/a", &tx);
    backend.wait_arrived(1);
    // Of the next two, one waits for the connection (pending) and the other finds the pending
    // queue full: 503 UO at once, while the others are still held.
    send_in_background(wp.sandwich, vip, "/slow/b", &tx);
    send_in_background(wp.sandwich, vip, "/slow/c", &tx);
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(is_overflow(&first), "{first}");
    assert!(first.contains("http1MaxPendingRequests"), "{first}");

    backend.open();
    for _ in 0..2 {
        let answer = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(
            answer.contains("200") && answer.contains("served"),
            "{answer}"
        );
    }
    // Both served requests went over the one connection the rule allows.
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    assert_eq!(backend.arrived.load(Ordering::SeqCst), 2);

    let log = access_log(&wp);
    assert!(
        log.iter()
            .any(|l| l.contains("503") && l.contains("\"response_flags\":\"UO\"")),
        "{log:#?}"
    );
    assert_eq!(overflow_count(&wp, "slow", "pending"), "1");
    assert_eq!(overflow_count(&wp, "slow", "connections"), "0");
    // /config_dump shows the settings in force for the port.
    let dump = wp.admin("/config_dump");
    assert!(dump.contains("\"http1MaxPendingRequests\": 1"), "{dump}");
}

#[test]
fn without_a_rule_the_same_requests_are_all_served_at_once() {
    // The control for the test above: the limits are the rule's, not the waypoint's.
    let backend = Backend::start();
    let vip = "10.96.0.21:80";
    let config = service("free", "10.96.0.21", "127.0.0.1", backend.port, None);
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let (tx, rx) = mpsc::channel();
    for path in ["/slow/a", "/slow/b", "/slow/c"] {
        send_in_background(wp.sandwich, vip, path, &tx);
    }
    backend.wait_arrived(3);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 3);
    backend.open();
    for _ in 0..3 {
        let answer = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(answer.contains("200"), "{answer}");
    }
}

#[test]
fn http2_max_requests_bounds_concurrent_requests_to_an_h2c_backend() {
    let echo = Echo::start();
    let vip = "10.96.0.22:80";
    let config = [
        service(
            "grpcish",
            "10.96.0.22",
            "127.0.0.1",
            echo.port,
            Some("kubernetes.io/h2c"),
        ),
        rule("grpcish", "{http: {http2MaxRequests: 1}}"),
    ]
    .join("---\n");
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let (tx, rx) = mpsc::channel();
    // Two requests that each take the echo 10 s (within the 15 s request timeout): the one
    // that comes second finds the only request slot taken, and is answered long before the
    // other.
    send_in_background(wp.sandwich, vip, "/a?delay=10s", &tx);
    send_in_background(wp.sandwich, vip, "/b?delay=10s", &tx);
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(is_overflow(&first), "{first}");
    assert!(first.contains("http2MaxRequests"), "{first}");
    let second = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(second.contains("200"), "{second}");
    assert_eq!(overflow_count(&wp, "grpcish", "requests"), "1");
    let log = access_log(&wp);
    assert!(
        log.iter()
            .any(|l| l.contains("503") && l.contains("\"response_flags\":\"UO\"")),
        "{log:#?}"
    );
}

#[test]
fn max_requests_per_connection_opens_a_new_connection_after_that_many_requests() {
    let limited = Backend::start();
    let free = Backend::start();
    let config = [
        service("once", "10.96.0.23", "127.0.0.1", limited.port, None),
        rule("once", "{http: {maxRequestsPerConnection: 1}}"),
        service("reused", "10.96.0.24", "127.0.0.1", free.port, None),
    ]
    .join("---\n");
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    for _ in 0..3 {
        let a = wp.send_to("10.96.0.23:80", "10.244.0.7:40000", "/", &[]);
        assert!(a.contains("served"), "{a}");
        let b = wp.send_to("10.96.0.24:80", "10.244.0.7:40000", "/", &[]);
        assert!(b.contains("served"), "{b}");
    }
    // One request per connection where the rule says so; one kept-alive connection otherwise.
    assert_eq!(limited.connections.load(Ordering::SeqCst), 3);
    assert_eq!(free.connections.load(Ordering::SeqCst), 1);
}

/// A listening socket whose accept queue is full: a connection to it is never completed (the
/// kernel drops its SYN), as to a blackholed address.
struct Blackhole {
    port: u16,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<TcpStream>,
    _runtime: tokio::runtime::Runtime,
}

impl Blackhole {
    fn start() -> Blackhole {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        // Fill the queue until a connection no longer completes.
        loop {
            assert!(fillers.len() < 64, "the accept queue never filled");
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        Blackhole {
            port: addr.port(),
            _listener: listener,
            _fillers: fillers,
            _runtime: runtime,
        }
    }
}

#[test]
fn the_rules_connect_timeout_ends_a_hanging_connect_with_503_uf() {
    let hole = Blackhole::start();
    let config = [
        service("hole", "10.96.0.25", "127.0.0.1", hole.port, None),
        rule("hole", "{tcp: {connectTimeout: 200ms}}"),
    ]
    .join("---\n");
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let answer = wp.send_to("10.96.0.25:80", "10.244.0.7:40000", "/", &[]);
    // The waypoint's own connect timeout is 5 s: the message names the rule's.
    assert!(answer.contains("503"), "{answer}");
    assert!(answer.contains("connect timeout after 200ms"), "{answer}");
    let log = access_log(&wp);
    assert!(
        log.iter()
            .any(|l| l.contains("503") && l.contains("\"response_flags\":\"UF\"")),
        "{log:#?}"
    );
}

#[test]
fn invalid_connection_pools_are_refused_by_check_with_the_field_named() {
    let svc = service("svc", "10.96.0.26", "127.0.0.1", 8080, None);
    for (pool, expected) in [
        (
            "{http: {http2MaxRequests: -1}}",
            "connectionPool.http.http2MaxRequests: must not be negative",
        ),
        (
            "{tcp: {connectTimeout: 0s}}",
            "connectionPool.tcp.connectTimeout: must be at least 1ms",
        ),
        (
            "{http: {h2UpgradePolicy: UPGRADE}}",
            "connectionPool.http.h2UpgradePolicy: UPGRADE is not supported",
        ),
        ("{tcp: {maxConection: 1}}", "maxConection"),
    ] {
        let config = [svc.clone(), rule("svc", pool)].join("---\n");
        let (ok, out) = check(&config, &[]);
        assert!(!ok, "{pool} was accepted:\n{out}");
        assert!(out.contains(expected), "{pool}: {expected} not in\n{out}");
    }
    let valid = [
        svc,
        rule(
            "svc",
            "{tcp: {maxConnections: 10, connectTimeout: 1s, tcpKeepalive: {time: 10s}}, http: {maxRetries: 2, idleTimeout: 30s}}",
        ),
    ]
    .join("---\n");
    let (ok, out) = check(&valid, &[]);
    assert!(ok, "{out}");
}

#[test]
fn over_max_retries_a_retry_is_not_sent_and_the_tries_answer_stands() {
    let backend = Backend::start();
    let vip = "10.96.0.27:80";
    let route = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: flaky, port: 80}]
  rules:
  - backendRefs: [{name: flaky, port: 80}]
    retry: {codes: [503], attempts: 1, backoff: 1ms}
"#;
    let config = [
        service("flaky", "10.96.0.27", "127.0.0.1", backend.port, None),
        rule("flaky", "{http: {maxRetries: 1}}"),
        route.to_owned(),
    ]
    .join("---\n");
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let (tx, rx) = mpsc::channel();

    // The first request's try gets 503 and its retry is held at the backend: the one retry
    // the rule allows is in flight.
    send_in_background(wp.sandwich, vip, "/twice/a", &tx);
    backend.wait_arrived(2);
    // The second request's try gets 503 too; its retry would be the second in flight, so it is
    // not sent and the backend's own 503 is the answer.
    send_in_background(wp.sandwich, vip, "/twice/b", &tx);
    let second = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        second.contains("503") && second.contains("busy here"),
        "{second}"
    );
    assert_eq!(backend.arrived.load(Ordering::SeqCst), 3);
    assert_eq!(overflow_count(&wp, "flaky", "retries"), "1");

    backend.open();
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("200") && first.contains("served"), "{first}");
    // With the retry in flight answered, the next request is retried again.
    send_in_background(wp.sandwich, vip, "/twice/c", &tx);
    let third = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(third.contains("200") && third.contains("served"), "{third}");
    assert_eq!(overflow_count(&wp, "flaky", "retries"), "1");
}

#[test]
fn the_rules_idle_timeout_closes_an_unused_connection() {
    // The waypoint's own idle timeout is 90 s: a close within the test's patience is the rule's.
    let backend = Backend::start();
    let config = [
        service("idle", "10.96.0.28", "127.0.0.1", backend.port, None),
        rule("idle", "{http: {idleTimeout: 200ms}}"),
    ]
    .join("---\n");
    let (wp, _dir) = Running::start(&config, &[], &[]);
    let a = wp.send_to("10.96.0.28:80", "10.244.0.7:40000", "/", &[]);
    assert!(a.contains("served"), "{a}");
    backend.wait_closed(1);
    let b = wp.send_to("10.96.0.28:80", "10.244.0.7:40000", "/", &[]);
    assert!(b.contains("served"), "{b}");
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn max_connection_duration_retires_a_connection_once_that_old() {
    let backend = Backend::start();
    let config = [
        service("young", "10.96.0.29", "127.0.0.1", backend.port, None),
        rule("young", "{tcp: {maxConnectionDuration: 1ms}}"),
    ]
    .join("---\n");
    let (wp, _dir) = Running::start(&config, &[], &[]);
    for _ in 0..3 {
        let a = wp.send_to("10.96.0.29:80", "10.244.0.7:40000", "/", &[]);
        assert!(a.contains("served"), "{a}");
        // Older than 1 ms by the next request, whatever the machine's speed.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(backend.connections.load(Ordering::SeqCst), 3);
}

/// A TCP backend: `PING` answered `+PONG` on every connection. Returns its port.
fn pong_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(b"+PONG\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A TCP connection to `destination` through the waypoint, as ztunnel opens one; `Some` once
/// the backend answered a `PING` over it, `None` when the waypoint closed it unanswered.
fn ping_through(wp: &Running, destination: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", wp.sandwich)).unwrap();
    let identity = b"spiffe://cluster.local/ns/default/sa/sleep";
    let header = encode_v2(
        "10.244.0.7:40000".parse().unwrap(),
        destination.parse().unwrap(),
        &[(TLV_PEER_IDENTITY, identity.as_slice())],
    );
    s.write_all(&header).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"PING\r\n");
    let mut pong = [0u8; 7];
    match s.read_exact(&mut pong) {
        Ok(()) if &pong == b"+PONG\r\n" => Some(s),
        _ => None,
    }
}

/// Service `redis` (10.96.0.30:6379, TCP) with its endpoint at `127.0.0.1:port`.
fn redis(port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: redis, namespace: default}}
spec:
  clusterIP: 10.96.0.30
  ports: [{{name: main, port: 6379, appProtocol: redis}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: redis-1, namespace: default, labels: {{kubernetes.io/service-name: redis}}}}
addressType: IPv4
ports: [{{name: main, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#
    )
}

#[test]
fn over_max_connections_a_tcp_connection_is_refused_with_uo() {
    let port = pong_backend();
    let config = [redis(port), rule("redis", "{tcp: {maxConnections: 1}}")].join("---\n");
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let held = ping_through(&wp, "10.96.0.30:6379").expect("the first connection is proxied");
    assert!(ping_through(&wp, "10.96.0.30:6379").is_none());
    let log = access_log(&wp);
    assert!(
        log.iter().any(|l| l.contains("\"response_flags\":\"UO\"")),
        "{log:#?}"
    );
    let metrics = wp.admin("/metrics");
    let line = "waypoint_upstream_overflow_total{namespace=\"default\",service=\"redis\",port=\"6379\",limit=\"connections\"} 1";
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} missing in\n{metrics}"
    );

    // Once the first connection ends, its slot is free again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ping_through(&wp, "10.96.0.30:6379").is_none() {
        assert!(Instant::now() < deadline, "the slot was never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_keeps_the_counts_and_a_changed_limit_applies_to_new_connections() {
    let port = pong_backend();
    let with = |max: u32, extra: &str| {
        let pool = format!("{{tcp: {{maxConnections: {max}}}}}");
        [redis(port), rule("redis", &pool), extra.to_owned()].join("---\n")
    };
    let config = with(1, "");
    let (wp, dir) = Running::start(
        &config,
        &["--access-log", "json", "--reload-interval", "100ms"],
        &[],
    );
    let file = dir.path().join("config.yaml");
    let reloaded = |marker: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !wp.admin("/config_dump").contains(marker) {
            assert!(Instant::now() < deadline, "{marker} never served");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let held = ping_through(&wp, "10.96.0.30:6379").expect("the first connection is proxied");

    // A reload that leaves the rule alone: the held connection still counts.
    let other = common::service("other", "10.96.0.31", 9);
    std::fs::write(&file, with(1, &other)).unwrap();
    reloaded("10.96.0.31");
    assert!(ping_through(&wp, "10.96.0.30:6379").is_none());

    // A reload that raises the limit: the next connection is let through beside the held one.
    std::fs::write(&file, with(2, &other)).unwrap();
    reloaded("\"maxConnections\": 2");
    let second = ping_through(&wp, "10.96.0.30:6379");
    assert!(second.is_some());
    // And the third is over the new limit, counting the one from before the reloads.
    assert!(ping_through(&wp, "10.96.0.30:6379").is_none());
    drop(held);
}
