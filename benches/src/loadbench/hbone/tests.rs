#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use waypoint_core::upstream::{HboneClientOptions, HbonePool};

use super::*;
use crate::loadbench::upstream::serve_http;

/// The upstream's HTTP server on a fresh port.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_http(listener));
    addr
}

fn plain(addr: SocketAddr) -> Dialer {
    Dialer::Tcp {
        addr,
        proxy_header: None,
    }
}

#[tokio::test]
async fn bulk_reads_exactly_the_bytes_asked_for_from_the_upstream() {
    let addr = upstream().await;
    let mut window = CpuWindow::new(None, 100.0);
    let b = bulk(&plain(addr), "/r00000/items", 3 << 20, &mut window)
        .await
        .unwrap();
    assert_eq!(b.bytes, 3 << 20);
    assert!(b.elapsed > Duration::ZERO);
    assert!(b.gib_per_s() > 0.0);
    // No process watched: no CPU figure.
    assert_eq!(b.cpu, None);
    assert_eq!(b.cpu_per_gib(), None);
}

/// A server that answers the bulk request with a declared length it does not keep.
async fn short_server(status: &'static str, declared: u64, sent: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await.unwrap();
        let head = format!("HTTP/1.1 {status}\r\ncontent-length: {declared}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&vec![b'x'; sent]).await.unwrap();
        // Closing early: the client sees a body cut short.
    });
    addr
}

#[tokio::test]
async fn bulk_fails_on_a_short_body_and_on_an_error_status() {
    let mut window = CpuWindow::new(None, 100.0);
    let cut = short_server("200 OK", 1 << 20, 1000).await;
    let err = bulk(&plain(cut), "/r00000/items", 1 << 20, &mut window)
        .await
        .unwrap_err();
    assert!(err.contains("bulk body"), "{err}");
    let refused = short_server("403 Forbidden", 0, 0).await;
    let err = bulk(&plain(refused), "/r00000/items", 1 << 20, &mut window)
        .await
        .unwrap_err();
    assert!(err.contains("403"), "{err}");
}

#[test]
fn ratios_compare_the_proxies_and_each_with_direct() {
    let b = |gib_per_s: f64, cpu: Option<f64>| Bulk {
        bytes: 1 << 30,
        elapsed: Duration::from_secs_f64(1.0 / gib_per_s),
        cpu,
    };
    let mut section = Section::default();
    ratios(
        &mut section,
        &[
            ("waypoint", Some(b(1.0, Some(0.5)))),
            ("envoy", Some(b(0.5, Some(1.0)))),
            ("direct", Some(b(2.0, None))),
        ],
    );
    assert_eq!(
        section.facts[0],
        (
            "ratio waypoint/envoy bulk".to_owned(),
            "throughput 2.00x (higher is better), CPU per GiB 0.50x (lower is better)".to_owned()
        )
    );
    assert_eq!(section.facts[1].1, "waypoint 0.50x, envoy 0.25x");
    // A failed proxy leaves its ratio out rather than dividing by nothing.
    let mut section = Section::default();
    ratios(
        &mut section,
        &[("waypoint", Some(b(1.0, None))), ("envoy", None)],
    );
    assert!(section.facts.is_empty());
}

/// Envoy with the generated HBONE bootstrap, between a client ztunnel and a destination
/// ztunnel stand-in: the allowed identity's request crosses both tunnels (200), another
/// identity is refused by RBAC (403), and a 4 MiB answer comes back whole.
#[tokio::test]
#[ignore = "needs Envoy: ENVOY_BIN=/path/to/envoy cargo test -p waypoint-benches --lib -- --ignored envoy_hbone"]
async fn envoy_hbone_waypoint_carries_the_allowed_identity_and_refuses_another() {
    use crate::loadbench::configs::client_identity;
    use crate::loadbench::procs::Peers;
    use crate::loadbench::runner::{INTRUDER_ID, free_port, launch_envoy};
    use crate::loadbench::upstream::serve_hbone_destination;
    use waypoint_core::tls::{CertPaths, CertStore, DevCa};

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let envoy = Peers::discover(&root).envoy.expect("Envoy (set ENVOY_BIN)");
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("cluster.local").unwrap();
    let issue = |name: &str, id: &str| {
        let out = dir.path().join(name);
        ca.write_workload_dir(&out, &id.parse().unwrap(), Duration::from_secs(3600))
            .unwrap();
        out
    };
    let waypoint = issue("waypoint", WAYPOINT_ID);
    let echo = issue("echo", DEST_ID);
    let allowed = issue("allowed", &client_identity(POLICIES));
    let intruder = issue("intruder", INTRUDER_ID);

    let backend = upstream().await;
    let mut dest = None;
    for _ in 0..5 {
        let ip = std::net::Ipv4Addr::new(127, 88, fastrand::u8(1..=254), fastrand::u8(1..=254));
        if let Ok(a) = serve_hbone_destination((ip, 15008).into(), echo.clone(), backend).await {
            dest = Some(a);
            break;
        }
    }
    let dest = dest.expect("a free 127.88.x.y:15008 for the stand-in");
    let job = Job {
        listen_port: free_port().unwrap(),
        admin_port: free_port().unwrap(),
        upstream: SocketAddr::new(dest.ip(), backend.port()),
        proxy_protocol: false,
        routes: 1,
        policies: POLICIES,
        tls: Some(waypoint),
        mesh_endpoints: true,
    };
    let bootstrap = configs::envoy_yaml(&job).unwrap();
    let command = std::process::Command::new(envoy);
    let _running = launch_envoy(command, &job, &bootstrap, dir.path())
        .await
        .unwrap();
    let via = SocketAddr::from(([127, 0, 0, 1], job.listen_port));

    let client = |certs: &Path| Dialer::Hbone {
        pool: HbonePool::new(
            CertStore::load(CertPaths::in_dir(certs), Vec::new()).unwrap(),
            HboneClientOptions::default(),
        ),
        via,
        target: SERVICE_VIP.parse().unwrap(),
        expected: vec![ExpectedIdentity::Exact(WAYPOINT_ID.parse().unwrap())],
    };
    let allowed = client(&allowed);
    assert_eq!(load::probe(&allowed, &job.path(), AUTHORITY).await, Ok(200));
    assert_eq!(
        load::probe(&client(&intruder), &job.path(), AUTHORITY).await,
        Ok(403)
    );
    let mut window = CpuWindow::new(None, 100.0);
    let b = bulk(&allowed, &job.path(), 4 << 20, &mut window)
        .await
        .unwrap();
    assert_eq!(b.bytes, 4 << 20);
}
