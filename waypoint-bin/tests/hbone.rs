//! HBONE at both ends, over loopback: a client ztunnel (our HBONE client) → the waypoint's
//! HBONE listener → routing → HBONE outbound → a destination ztunnel (our HBONE listener) →
//! an echo backend. Every hop checks the identity of the other.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use waypoint_core::conn::ConnInfo;
use waypoint_core::filter::{
    BuildContext, Decision, Filter, FilterFactory, Request, RequestContext,
};
use waypoint_core::identity::SpiffeId;
use waypoint_core::runtime::{
    CertSettings, CertSource, HboneInbound, RunningWaypoint, Waypoint, WaypointOptions,
};
use waypoint_core::shutdown::{self, ShutdownTrigger};
use waypoint_core::tls::{CertStore, DevCa, ExpectedIdentity};
use waypoint_core::transport::TransportMetrics;
use waypoint_core::transport::hbone::{HboneListener, HboneOptions};
use waypoint_core::upstream::{
    HboneClientOptions, HbonePool, HboneStream, TunnelSource, UpstreamMode,
};
use waypoint_filters::Builtins;

const WAYPOINT: &str = "spiffe://cluster.local/ns/default/sa/waypoint";
const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const BACKEND: &str = "spiffe://cluster.local/ns/default/sa/echo-sa";

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// The Service `echo` (10.96.0.10, port 80 HTTP/1.1 and port 81 h2c) in an ambient namespace,
/// its endpoint a Pod running as `echo-sa`.
fn manifests(echo_port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: default, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-1, namespace: default}}
spec: {{serviceAccountName: echo-sa}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {{name: http, port: 80}}
  - {{name: h2c, port: 81, appProtocol: kubernetes.io/h2c}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: http, port: {echo_port}}}, {{name: h2c, port: {echo_port}, appProtocol: kubernetes.io/h2c}}]
endpoints:
- addresses: ["127.0.0.1"]
  targetRef: {{kind: Pod, name: echo-1, namespace: default}}
"#
    )
}

/// Remembers the ConnInfo of each request the waypoint serves.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<ConnInfo>>>);

#[async_trait::async_trait]
impl Filter for Seen {
    fn name(&self) -> &str {
        "seen"
    }
    async fn on_request(&self, _req: &mut Request, ctx: &mut RequestContext) -> Decision {
        self.0.lock().unwrap().push((*ctx.conn).clone());
        Decision::Continue
    }
}

impl FilterFactory for Seen {
    fn name(&self) -> &str {
        "seen"
    }
    fn build(&self, _cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(self.clone())
    }
}

struct Mesh {
    _dir: tempfile::TempDir,
    waypoint: RunningWaypoint,
    client: Arc<HbonePool>,
    seen_by_waypoint: Seen,
    seen_by_destination: Arc<Mutex<Vec<ConnInfo>>>,
    /// TCP connections the waypoint opened to the destination ztunnel.
    destination_connections: Arc<AtomicUsize>,
    _destination: ShutdownTrigger,
}

async fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("cluster.local").unwrap();
    let hour = Duration::from_secs(3600);
    let waypoint_certs = ca
        .write_workload_dir(&dir.path().join("waypoint"), &id(WAYPOINT), hour)
        .unwrap();
    let client_certs = ca
        .write_workload_dir(&dir.path().join("client"), &id(CLIENT), hour)
        .unwrap();
    let backend_certs = ca
        .write_workload_dir(&dir.path().join("backend"), &id(BACKEND), hour)
        .unwrap();

    // The destination ztunnel: terminates HBONE and pipes each tunnel to the address it names.
    let echo_addr = common::echo_in_process("echo-1").await;
    let destination = HboneListener::bind(
        ([127, 0, 0, 1], 0).into(),
        CertStore::load(backend_certs, vec![]).unwrap(),
        HboneOptions::default(),
        Arc::new(TransportMetrics::new()),
    )
    .await
    .unwrap();
    let destination_addr = destination.local_addr();
    let seen_by_destination = Arc::new(Mutex::new(Vec::new()));
    let (destination_trigger, destination_shutdown) = shutdown::channel();
    let seen = seen_by_destination.clone();
    tokio::spawn(destination.serve(
        move |mut io, conn: ConnInfo| {
            let target = conn.destination.unwrap();
            seen.lock().unwrap().push(conn);
            async move {
                let mut backend = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut io, &mut backend).await;
            }
        },
        destination_shutdown,
    ));
    // A relay in front of it counts the waypoint's HBONE connections.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let destination_connections = Arc::new(AtomicUsize::new(0));
    let counter = destination_connections.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = relay.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(destination_addr)
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });

    let config = dir.path().join("config.yaml");
    std::fs::write(&config, manifests(echo_addr.port())).unwrap();
    let mut options = WaypointOptions::new(&config);
    options.sandwich.clear();
    options.admin = Some(([127, 0, 0, 1], 0).into());
    options.certs = Some(CertSettings {
        source: CertSource::Files(waypoint_certs),
        trust_domains: vec![],
        reload_interval: Duration::from_secs(1),
    });
    options.hbone = Some(HboneInbound {
        addr: ([127, 0, 0, 1], 0).into(),
        options: HboneOptions::default(),
    });
    options.upstream.mode = UpstreamMode::Auto;
    options.upstream.hbone.port = relay_port;
    let seen_by_waypoint = Seen::default();
    let waypoint = Waypoint::builder(options)
        .install(Builtins::default())
        .factory(Arc::new(seen_by_waypoint.clone()))
        .start()
        .await
        .unwrap();

    let client = HbonePool::new(
        CertStore::load(client_certs, vec![]).unwrap(),
        HboneClientOptions::default(),
    );
    Mesh {
        _dir: dir,
        waypoint,
        client,
        seen_by_waypoint,
        seen_by_destination,
        destination_connections,
        _destination: destination_trigger,
    }
}

impl Mesh {
    /// Rewrites the waypoint's config file with `edit` and waits until the waypoint has
    /// loaded it.
    async fn rewrite_config(&self, edit: impl FnOnce(String) -> String) {
        let store = self.waypoint.store();
        let before = store.load().version;
        let config_path = self._dir.path().join("config.yaml");
        let text = edit(std::fs::read_to_string(&config_path).unwrap());
        std::fs::write(&config_path, text).unwrap();
        for _ in 0..200 {
            if store.load().version > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.load().version > before, "config reloaded");
    }

    /// A fresh tunnel from the client ztunnel to the waypoint, for `destination`.
    async fn tunnel(&self, destination: &str) -> HboneStream {
        let source = TunnelSource {
            address: Some("10.244.1.5:40000".parse().unwrap()),
            baggage: Some("k8s.namespace.name=shop,k8s.deployment.name=cart".into()),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let destination: SocketAddr = destination.parse().unwrap();
        self.client
            .connect_via(
                self.waypoint.hbone_addr().unwrap(),
                destination,
                &[ExpectedIdentity::Exact(id(WAYPOINT))],
                &source,
            )
            .await
            .unwrap()
    }

    /// One request through a fresh tunnel from the client ztunnel to the waypoint.
    async fn request(
        &self,
        destination: &str,
        path: &str,
        h2: bool,
    ) -> (StatusCode, serde_json::Value) {
        let tunnel = self.tunnel(destination).await;
        let io = TokioIo::new(tunnel);
        let resp = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req =
                http::Request::get(format!("http://echo{path}")).version(http::Version::HTTP_2);
            sender
                .send_request(req.body(Empty::<Bytes>::new()).unwrap())
                .await
                .unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let req = http::Request::get(path).header("host", "echo.default.svc.cluster.local");
            sender
                .send_request(req.body(Empty::<Bytes>::new()).unwrap())
                .await
                .unwrap()
        };
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::json!(String::from_utf8_lossy(&body)));
        (status, json)
    }
}

#[tokio::test]
async fn http1_and_http2_cross_two_hbone_hops_with_identities_checked() {
    let mesh = mesh().await;
    let (status, body) = mesh.request("10.96.0.10:80", "/one", false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pod"], "echo-1");
    assert_eq!(body["proto"], "HTTP/1.1");

    // The waypoint saw the client's certificate identity, source and metadata.
    let at_waypoint = mesh
        .seen_by_waypoint
        .0
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(at_waypoint.peer_identity, Some(id(CLIENT)));
    assert_eq!(
        at_waypoint.destination,
        Some("10.96.0.10:80".parse().unwrap())
    );
    assert_eq!(
        at_waypoint.source,
        Some("10.244.1.5:40000".parse().unwrap())
    );
    assert_eq!(
        at_waypoint.source_workload.workload_name.as_deref(),
        Some("cart")
    );
    // The destination ztunnel saw the waypoint's identity, the endpoint as authority, and the
    // original client carried in `forwarded`.
    let at_destination = mesh
        .seen_by_destination
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(at_destination.peer_identity, Some(id(WAYPOINT)));
    assert_eq!(
        at_destination.destination.unwrap().ip().to_string(),
        "127.0.0.1"
    );
    assert_eq!(
        at_destination.source,
        Some("10.244.1.5:40000".parse().unwrap())
    );
    assert_eq!(
        at_destination.source_workload.namespace.as_deref(),
        Some("shop")
    );

    // Metrics name the verified identities at both ends.
    let metrics = common::http_get(mesh.waypoint.admin_addr().unwrap(), "/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("source_principal=\"{CLIENT}\"")),
        "{line}"
    );
    assert!(
        line.contains(&format!("destination_principal=\"{BACKEND}\"")),
        "{line}"
    );
    assert!(
        line.contains("connection_security_policy=\"mutual_tls\""),
        "{line}"
    );

    // HTTP/2 from the client, and h2c to the backend port with appProtocol h2c.
    let (status, body) = mesh.request("10.96.0.10:81", "/two", true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["proto"], "HTTP/2.0");
}

#[tokio::test]
async fn a_hundred_concurrent_tunnels_share_pooled_connections() {
    let mesh = Arc::new(mesh().await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mesh = mesh.clone();
        tasks.push(tokio::spawn(async move {
            mesh.request("10.96.0.10:80", &format!("/c/{i}?delay=100ms"), false)
                .await
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // 100 tunnels each way; at most 100 streams per HTTP/2 connection.
    assert!(
        mesh.client.connections() <= 2,
        "client pool holds {}",
        mesh.client.connections()
    );
    let opened = mesh.destination_connections.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&opened),
        "the waypoint opened {opened} HBONE connections to the destination"
    );
}

#[tokio::test]
async fn a_destination_with_the_wrong_identity_is_refused_with_503() {
    let mesh = mesh().await;
    // Re-point the Pod at another service account: the destination's certificate no longer fits.
    mesh.rewrite_config(|text| {
        text.replace("serviceAccountName: echo-sa", "serviceAccountName: billing")
    })
    .await;
    let (status, body) = mesh.request("10.96.0.10:80", "/", false).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body = body.as_str().unwrap_or_default().to_owned();
    assert!(
        body.contains(BACKEND) && body.contains("sa/billing"),
        "names both identities: {body}"
    );
}

#[tokio::test]
async fn authorization_policy_uses_the_client_certificate_identity() {
    let mesh = mesh().await;
    mesh.rewrite_config(|mut text| {
        text.push_str(
            r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-cart, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/cart"]}}]
"#,
        );
        text
    })
    .await;
    let store = mesh.waypoint.store();
    let statuses = store.load().statuses();
    let policy = statuses
        .iter()
        .find(|s| s.resource.kind == "AuthorizationPolicy")
        .unwrap();
    assert!(policy.is_ok(), "{policy:?}");
    let (status, body) = mesh.request("10.96.0.10:80", "/", false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, serde_json::json!("RBAC: access denied"));
}

#[tokio::test]
async fn connect_inside_an_hbone_tunnel_is_refused_with_403_over_http1_and_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = mesh().await;

    // HTTP/1.1: refused, and the connection closes behind the answer (the tunnel may end with
    // a reset rather than a clean end: the answer is what came before it).
    let mut tunnel = mesh.tunnel("10.96.0.10:80").await;
    tunnel
        .write_all(b"CONNECT 10.96.0.10:80 HTTP/1.1\r\nHost: 10.96.0.10:80\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tunnel.read(&mut buf))
            .await
            .expect("the connection stays open after the refusal")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("CONNECT is not allowed"), "{answer}");

    // HTTP/2 (h2c inside the tunnel).
    let io = TokioIo::new(mesh.tunnel("10.96.0.10:80").await);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("10.96.0.10:80")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        sender.send_request(req).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // Neither reached the filter chain.
    assert!(mesh.seen_by_waypoint.0.lock().unwrap().is_empty());
}
