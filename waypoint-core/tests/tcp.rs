//! TCP proxying through a real waypoint on loopback: connections to Service ports that carry
//! bytes (named, or detected) arrive on the sandwich listener behind a PROXY header, are
//! spliced to the Service's endpoint, and are counted in Istio's TCP metrics; refusals close
//! the connection without a byte reaching any backend.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use waypoint_core::filter::{
    BuildContext, ConnectionContext, ConnectionDecision, Decision, Filter, FilterFactory, Request,
    RequestContext, UpstreamTarget,
};
use waypoint_core::flags::ResponseFlag;
use waypoint_core::identity::SpiffeId;
use waypoint_core::runtime::{
    CertSettings, CertSource, HboneInbound, RunningWaypoint, Waypoint, WaypointOptions,
};
use waypoint_core::tls::{CertStore, DevCa, ExpectedIdentity};
use waypoint_core::transport::hbone::HboneOptions;
use waypoint_core::transport::listener::ListenAddr;
use waypoint_core::upstream::{HboneClientOptions, HbonePool, HboneStream, TunnelSource};
use waypoint_core::wire::proxy_protocol::{TLV_PEER_IDENTITY, encode_v2};

const SOURCE: &str = "10.244.0.7:40000";
const IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/sleep";
const BULK: usize = 64 * 1024 * 1024;
const DAY: Duration = Duration::from_secs(86_400);

fn waypoint_id() -> SpiffeId {
    "spiffe://cluster.local/ns/mesh/sa/waypoint"
        .parse()
        .unwrap()
}

/// A Service `name` at `vip` with one port, named `port_name` (`""`: unnamed) and the rest of
/// its spec `port` (YAML flow map entries), whose one endpoint is `127.0.0.1:target` (none
/// when `target` is `None`).
fn service(name: &str, vip: &str, port_name: &str, port: &str, target: Option<u16>) -> String {
    // The slice's port carries the Service port's name, as Kubernetes writes it.
    let port_name = match port_name {
        "" => String::new(),
        n => format!("name: {n}, "),
    };
    let slice = match target {
        Some(target) => format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{{port_name}port: {target}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {vip}\n  ports: [{{{port_name}{port}}}]\n{slice}---\n"
    )
}

/// Closes every connection to port 9001 with flag `RBAC`, as an L4 policy filter would, and
/// sends each HTTP request to the Service dialled (core has no routing of its own).
struct CloseDenied;

#[async_trait::async_trait]
impl Filter for CloseDenied {
    fn name(&self) -> &str {
        "close-denied"
    }
    async fn on_request(&self, _req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let service = ctx.conn.destination.and_then(|d| ctx.config.service_at(d));
        ctx.upstream = service.map(|s| UpstreamTarget::new(s.clone()));
        Decision::Continue
    }
    async fn on_connection(&self, ctx: &mut ConnectionContext) -> ConnectionDecision {
        if ctx.conn.destination.map(|d| d.port()) == Some(9001) {
            ctx.response_flags.push(ResponseFlag::RbacAccessDenied);
            return ConnectionDecision::Close("denied by the test filter".into());
        }
        ConnectionDecision::Continue
    }
}

impl FilterFactory for CloseDenied {
    fn name(&self) -> &str {
        "close-denied"
    }
    fn build(&self, _cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(CloseDenied)
    }
}

/// Backends on loopback, each counting the bytes it received.
struct Backends {
    redis: u16,
    greeter: u16,
    bulk: u16,
    http: u16,
    denied: u16,
    denied_bytes: Arc<AtomicU64>,
    bulk_received: Arc<AtomicU64>,
}

async fn listen() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Runs `serve` for every connection `listener` accepts.
fn accept_each<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
}

async fn start_backends() -> Backends {
    // Client-first, Redis-like: `PING\r\n` → `+PONG\r\n`, until the client closes.
    let (l, redis) = listen().await;
    accept_each(l, |mut s| async move {
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if buf[..n].starts_with(b"PING") {
                let _ = s.write_all(b"+PONG\r\n").await;
            }
        }
    });
    // Server-first, MySQL-like: a greeting before the client says anything, then echo.
    let (l, greeter) = listen().await;
    accept_each(l, |mut s| async move {
        let _ = s.write_all(b"GREETING v8.0\n").await;
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    // Bulk: sends BULK bytes and shuts down its write side while reading everything the
    // client sends until the client's end of stream.
    let (l, bulk) = listen().await;
    let bulk_received = Arc::new(AtomicU64::new(0));
    let received = bulk_received.clone();
    accept_each(l, move |s| {
        let received = received.clone();
        async move {
            let (mut r, mut w) = s.into_split();
            let send = async {
                let chunk = vec![0x5a_u8; 1 << 20];
                for _ in 0..BULK / chunk.len() {
                    w.write_all(&chunk).await.unwrap();
                }
                w.shutdown().await.unwrap();
            };
            let recv = async {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = r.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    received.fetch_add(n as u64, Ordering::SeqCst);
                }
            };
            tokio::join!(send, recv);
        }
    });
    // HTTP: answers one request `ok`.
    let (l, http) = listen().await;
    accept_each(l, |mut s| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    });
    // The backend of the denied Service: counts any byte that reaches it.
    let (l, denied) = listen().await;
    let denied_bytes = Arc::new(AtomicU64::new(0));
    let counted = denied_bytes.clone();
    accept_each(l, move |mut s| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1_000_000, Ordering::SeqCst);
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                counted.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    });
    Backends {
        redis,
        greeter,
        bulk,
        http,
        denied,
        denied_bytes,
        bulk_received,
    }
}

struct Running {
    _dir: tempfile::TempDir,
    waypoint: RunningWaypoint,
    sandwich: SocketAddr,
    admin: SocketAddr,
    hbone: SocketAddr,
    ca: DevCa,
    backends: Backends,
}

async fn start() -> Running {
    let b = start_backends().await;
    let closed = {
        let (l, port) = listen().await;
        drop(l);
        port
    };
    let manifests = [
        service(
            "redis",
            "10.96.1.1",
            "main",
            "port: 6379, appProtocol: redis",
            Some(b.redis),
        ),
        service("greeter", "10.96.1.2", "", "port: 3307", Some(b.greeter)),
        service("bulk", "10.96.1.3", "tcp-bulk", "port: 9000", Some(b.bulk)),
        service("denied", "10.96.1.4", "tcp", "port: 9001", Some(b.denied)),
        service("web", "10.96.1.5", "http", "port: 80", Some(b.redis)),
        service("sniffed", "10.96.1.6", "", "port: 8080", Some(b.http)),
        service("empty", "10.96.1.7", "tcp", "port: 9002", None),
        service("gone", "10.96.1.8", "tcp", "port: 9003", Some(closed)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, manifests.concat()).unwrap();
    let mut options = WaypointOptions::new(&config);
    options.sandwich = vec![ListenAddr::Tcp(([127, 0, 0, 1], 0).into())];
    options.admin = Some(([127, 0, 0, 1], 0).into());
    // Native HBONE too, with a certificate from a test CA.
    let ca = DevCa::generate("cluster.local").unwrap();
    let paths = ca
        .write_workload_dir(&dir.path().join("certs"), &waypoint_id(), DAY)
        .unwrap();
    options.certs = Some(CertSettings {
        source: CertSource::Files(paths),
        trust_domains: Vec::new(),
        reload_interval: DAY,
    });
    options.hbone = Some(HboneInbound {
        addr: ([127, 0, 0, 1], 0).into(),
        options: HboneOptions::default(),
    });
    let waypoint = Waypoint::builder(options)
        .factory(Arc::new(CloseDenied))
        .start()
        .await
        .unwrap();
    let ListenAddr::Tcp(sandwich) = waypoint.sandwich_addrs()[0].clone() else {
        panic!("a TCP listener")
    };
    let admin = waypoint.admin_addr().unwrap();
    let hbone = waypoint.hbone_addr().unwrap();
    Running {
        _dir: dir,
        waypoint,
        sandwich,
        admin,
        hbone,
        ca,
        backends: b,
    }
}

impl Running {
    /// A connection to original destination `destination`, PROXY header sent.
    async fn connect(&self, destination: &str) -> TcpStream {
        let mut s = TcpStream::connect(self.sandwich).await.unwrap();
        let header = encode_v2(
            SOURCE.parse().unwrap(),
            destination.parse().unwrap(),
            &[(TLV_PEER_IDENTITY, IDENTITY.as_bytes())],
        );
        s.write_all(&header).await.unwrap();
        s
    }

    /// A tunnel to original destination `destination` over the waypoint's HBONE listener, as
    /// a ztunnel opens it for the client [`IDENTITY`].
    async fn tunnel(&self, destination: &str) -> HboneStream {
        let certs = self
            .ca
            .workload_certs(&IDENTITY.parse().unwrap(), DAY)
            .unwrap();
        let pool = HbonePool::new(
            CertStore::from_certs(certs, Vec::new()).unwrap(),
            HboneClientOptions::default(),
        );
        let source = TunnelSource {
            address: Some(SOURCE.parse().unwrap()),
            ..TunnelSource::default()
        };
        pool.connect_via(
            self.hbone,
            destination.parse().unwrap(),
            &[ExpectedIdentity::Exact(waypoint_id())],
            &source,
        )
        .await
        .unwrap()
    }

    /// The `/metrics` lines starting with `prefix` that name Service `service`.
    async fn metric_lines(&self, prefix: &str, service: &str) -> Vec<String> {
        let mut s = TcpStream::connect(self.admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = String::from_utf8(read_all(&mut s).await).unwrap();
        let name = format!("destination_service_name=\"{service}\"");
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(&name))
            .map(str::to_owned)
            .collect()
    }
}

/// Everything `s` sends until it closes, within 10 s.
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap_or_default();
    out
}

/// Istio's TCP label set of a connection from the test's client to Service `name`.
fn tcp_labels(name: &str, flags: &str) -> String {
    format!(
        "reporter=\"waypoint\",source_workload=\"unknown\",source_workload_namespace=\"default\",source_principal=\"{IDENTITY}\",source_app=\"unknown\",source_version=\"unknown\",source_canonical_service=\"unknown\",source_canonical_revision=\"unknown\",source_cluster=\"unknown\",destination_workload=\"unknown\",destination_workload_namespace=\"default\",destination_principal=\"unknown\",destination_app=\"unknown\",destination_version=\"unknown\",destination_service=\"{name}.default.svc.cluster.local\",destination_service_name=\"{name}\",destination_service_namespace=\"default\",destination_canonical_service=\"unknown\",destination_canonical_revision=\"unknown\",destination_cluster=\"unknown\",request_protocol=\"tcp\",connection_security_policy=\"mutual_tls\",response_flags=\"{flags}\""
    )
}

#[tokio::test]
async fn a_redis_port_is_spliced_to_its_backend_and_counted_with_istios_tcp_labels() {
    let w = start().await;
    let mut s = w.connect("10.96.1.1:6379").await;
    s.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    s.write_all(b"PING\r\n").await.unwrap();
    s.read_exact(&mut pong).await.unwrap();
    // The client half-closes; the backend then closes its side too, which reaches the client.
    s.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s).await, b"");
    drop(s);

    let labels = tcp_labels("redis", "-");
    let want = [
        format!("istio_tcp_connections_closed_total{{{labels}}} 1"),
        format!("istio_tcp_connections_opened_total{{{labels}}} 1"),
        format!("istio_tcp_received_bytes_total{{{labels}}} 12"),
        format!("istio_tcp_sent_bytes_total{{{labels}}} 14"),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut got = w.metric_lines("istio_tcp_", "redis").await;
        got.sort();
        if got == want || tokio::time::Instant::now() > deadline {
            assert_eq!(got, want);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not an HTTP request: no istio_requests_total for it.
    assert_eq!(
        w.metric_lines("istio_requests_total", "redis").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_server_first_backend_on_an_unnamed_port_greets_after_the_detection_timeout() {
    let w = start().await;
    let mut s = w.connect("10.96.1.2:3307").await;
    let started = std::time::Instant::now();
    let mut greeting = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"GREETING v8.0\n");
    // Nothing was sent: the default 100 ms of detection passed first.
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    s.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
}

#[tokio::test]
async fn sixty_four_mib_each_way_arrive_whole_with_each_side_half_closing_on_its_own() {
    let w = start().await;
    let s = w.connect("10.96.1.3:9000").await;
    let (mut r, mut wr) = s.into_split();
    let send = async {
        let chunk = vec![0xa5_u8; 1 << 20];
        for _ in 0..BULK / chunk.len() {
            wr.write_all(&chunk).await.unwrap();
        }
        // Our end of stream: the backend still sends (it may have finished already).
        wr.shutdown().await.unwrap();
        wr
    };
    let recv = async {
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break total;
            }
            assert!(buf[..n].iter().all(|b| *b == 0x5a));
            total += n;
        }
    };
    let (_wr, received) =
        tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(send, recv) })
            .await
            .unwrap();
    assert_eq!(received, BULK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.backends.bulk_received.load(Ordering::SeqCst) < BULK as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend got less"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.backends.bulk_received.load(Ordering::SeqCst), BULK as u64);
}

#[tokio::test]
async fn a_connection_a_filter_closes_reaches_no_backend_and_is_flagged() {
    let w = start().await;
    let mut s = w.connect("10.96.1.4:9001").await;
    // Sent before the decision: it must not be forwarded.
    let _ = s.write_all(b"SECRET").await;
    assert_eq!(read_all(&mut s).await, b"");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.backends.denied_bytes.load(Ordering::SeqCst), 0);
    let labels = tcp_labels("denied", "RBAC");
    let opened = w
        .metric_lines("istio_tcp_connections_opened_total", "denied")
        .await;
    assert_eq!(
        opened,
        [format!("istio_tcp_connections_opened_total{{{labels}}} 1")]
    );
}

#[tokio::test]
async fn no_endpoint_is_flagged_uh_and_a_refused_connect_uf_and_both_close_the_client() {
    let w = start().await;
    let mut s = w.connect("10.96.1.7:9002").await;
    assert_eq!(read_all(&mut s).await, b"");
    let mut s = w.connect("10.96.1.8:9003").await;
    s.write_all(b"x").await.unwrap();
    assert_eq!(read_all(&mut s).await, b"");
    let uh = tcp_labels("empty", "UH");
    let uf = tcp_labels("gone", "UF");
    assert_eq!(
        w.metric_lines("istio_tcp_connections_opened_total", "empty")
            .await,
        [format!("istio_tcp_connections_opened_total{{{uh}}} 1")]
    );
    assert_eq!(
        w.metric_lines("istio_tcp_connections_opened_total", "gone")
            .await,
        [format!("istio_tcp_connections_opened_total{{{uf}}} 1")]
    );
}

#[tokio::test]
async fn a_port_named_http_stays_http_and_an_unnamed_one_detects_an_http_client() {
    let w = start().await;
    // `web` is named http (its endpoint speaks Redis): the waypoint's HTTP server answers.
    let mut s = w.connect("10.96.1.5:80").await;
    s.write_all(b"PING\r\n").await.unwrap();
    let answer = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // `sniffed` names no protocol: a request line is HTTP, routed to the Service.
    let mut s = w.connect("10.96.1.6:8080").await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: sniffed\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    let requests = w.metric_lines("istio_requests_total", "sniffed").await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains("request_protocol=\"http\""),
        "{requests:?}"
    );
    // Counted once as a connection, as HTTP connections always were.
    let opened = w
        .metric_lines("istio_tcp_connections_opened_total", "sniffed")
        .await;
    assert_eq!(
        opened,
        [format!(
            "istio_tcp_connections_opened_total{{{}}} 1",
            tcp_labels("sniffed", "-")
        )]
    );
}

#[tokio::test]
async fn over_hbone_a_client_first_and_a_server_first_backend_are_both_reached() {
    let w = start().await;
    let mut t = w.tunnel("10.96.1.1:6379").await;
    t.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    t.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");

    let mut t = w.tunnel("10.96.1.2:3307").await;
    let mut greeting = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(5), t.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"GREETING v8.0\n");
    // The tunnel's client identity is the connection's: it is in the TCP labels.
    let opened = w
        .metric_lines("istio_tcp_connections_opened_total", "redis")
        .await;
    assert_eq!(
        opened,
        [format!(
            "istio_tcp_connections_opened_total{{{}}} 1",
            tcp_labels("redis", "-")
        )]
    );
}

#[tokio::test]
async fn a_drain_waits_for_an_open_tcp_connection_until_its_deadline() {
    let w = start().await;
    let mut s = w.connect("10.96.1.1:6379").await;
    s.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).await.unwrap();
    let Running { waypoint, .. } = w;
    let started = std::time::Instant::now();
    let drained = waypoint.shutdown(Duration::from_millis(500)).await;
    // The connection was still open at the deadline: not drained, and waited for in full.
    assert!(!drained);
    assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());
    // Meanwhile it kept being served.
    s.write_all(b"PING\r\n").await.unwrap();
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
}
