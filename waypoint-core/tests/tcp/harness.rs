//! The harness of the TCP tests: a waypoint with sandwich and HBONE listeners in front of the
//! loopback backends (`backends.rs`), and clients that connect as a ztunnel would.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waypoint_core::config::ResourceRef;
use waypoint_core::filter::{
    AuthzDecision, BuildContext, ConnectionContext, ConnectionDecision, Decision, Filter,
    FilterFactory, Request, RequestContext, UpstreamTarget,
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

use super::backends::{Backends, listen, start_backends};

pub(crate) const SOURCE: &str = "10.244.0.7:40000";
pub(crate) const IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/sleep";
pub(crate) const BULK: usize = 64 * 1024 * 1024;
pub(crate) const DAY: Duration = Duration::from_secs(86_400);

pub(crate) fn waypoint_id() -> SpiffeId {
    "spiffe://cluster.local/ns/mesh/sa/waypoint"
        .parse()
        .unwrap()
}

/// A Service `name` at `vip` with one port, named `port_name` (`""`: unnamed) and the rest of
/// its spec `port` (YAML flow map entries), whose one endpoint is `127.0.0.1:target` (none
/// when `target` is `None`).
pub(crate) fn service(
    name: &str,
    vip: &str,
    port_name: &str,
    port: &str,
    target: Option<u16>,
) -> String {
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

/// Closes every connection to port 9001, and every TLS one whose ClientHello names
/// `blocked.example`, with flag `RBAC`, as an L4 policy filter would; and
/// sends each HTTP request to the Service dialled (core has no routing of its own).
pub(crate) struct CloseDenied;

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
        let blocked = ctx.sni.as_deref() == Some("blocked.example");
        if ctx.conn.destination.map(|d| d.port()) == Some(9001) || blocked {
            ctx.response_flags.push(ResponseFlag::RbacAccessDenied);
            // As the authorization filter leaves its decision for telemetry.
            ctx.extensions.insert(AuthzDecision {
                allowed: false,
                action: "DENY".into(),
                policy: Some(ResourceRef::new(
                    "AuthorizationPolicy",
                    "default",
                    "deny-tcp",
                )),
                rule: Some(0),
                dry_run: false,
            });
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

pub(crate) struct Running {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) waypoint: RunningWaypoint,
    pub(crate) sandwich: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) hbone: SocketAddr,
    pub(crate) ca: DevCa,
    pub(crate) backends: Backends,
}

pub(crate) async fn start() -> Running {
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
        service("secure", "10.96.1.9", "tls", "port: 443", Some(b.secure)),
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
    pub(crate) async fn connect(&self, destination: &str) -> TcpStream {
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
    pub(crate) async fn tunnel(&self, destination: &str) -> HboneStream {
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

    /// The `/metrics` lines starting with `prefix` that contain `containing`.
    pub(crate) async fn metrics(&self, prefix: &str, containing: &str) -> Vec<String> {
        let mut s = TcpStream::connect(self.admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = String::from_utf8(read_all(&mut s).await).unwrap();
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(containing))
            .map(str::to_owned)
            .collect()
    }

    /// Waits up to 5 s for the `/metrics` lines starting with `prefix` that name Service
    /// `service` to be `want` (in any order): connections are counted closed when the
    /// waypoint's side of them ends, a moment after the client's.
    pub(crate) async fn assert_metric_lines(&self, prefix: &str, service: &str, want: &[String]) {
        let mut want = want.to_vec();
        want.sort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut got = self.metric_lines(prefix, service).await;
            got.sort();
            if got == want || tokio::time::Instant::now() > deadline {
                assert_eq!(got, want);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `/metrics` lines starting with `prefix` that name Service `service`.
    pub(crate) async fn metric_lines(&self, prefix: &str, service: &str) -> Vec<String> {
        let name = format!("destination_service_name=\"{service}\"");
        self.metrics(prefix, &name).await
    }
}

/// Everything `s` sends until it closes, within 15 s.
pub(crate) async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap_or_default();
    out
}

/// Istio's TCP label set of a connection from the test's client to Service `name`.
pub(crate) fn tcp_labels(name: &str, flags: &str) -> String {
    format!(
        "reporter=\"waypoint\",source_workload=\"unknown\",source_workload_namespace=\"default\",source_principal=\"{IDENTITY}\",source_app=\"unknown\",source_version=\"unknown\",source_canonical_service=\"unknown\",source_canonical_revision=\"unknown\",source_cluster=\"unknown\",destination_workload=\"unknown\",destination_workload_namespace=\"default\",destination_principal=\"unknown\",destination_app=\"unknown\",destination_version=\"unknown\",destination_service=\"{name}.default.svc.cluster.local\",destination_service_name=\"{name}\",destination_service_namespace=\"default\",destination_canonical_service=\"unknown\",destination_canonical_revision=\"unknown\",destination_cluster=\"unknown\",request_protocol=\"tcp\",connection_security_policy=\"mutual_tls\",response_flags=\"{flags}\""
    )
}
