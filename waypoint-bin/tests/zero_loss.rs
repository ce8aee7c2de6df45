//! Zero loss under change, at a small scale, through the real `waypoint` binary: config
//! reloads, certificate rotations, an endpoint removed, and SIGTERM, each under an open-loop
//! load in which every request is counted. These run the same scenario code as `loadbench`'s
//! zero-loss scenarios (`waypoint_benches::loadbench::zeroloss`), which run it at 1,000 rps.
//!
//! Nothing here asserts timing beyond generous deadlines; the assertions are counts, which
//! must be exactly zero where the issue says so.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use waypoint_benches::loadbench::load::Protocol;
use waypoint_benches::loadbench::zeroloss::Setup;
use waypoint_benches::loadbench::zeroloss::backend::Backend;
use waypoint_benches::loadbench::zeroloss::certs::{self, CertPlan, LocalMesh};
use waypoint_benches::loadbench::zeroloss::drain::{self, DrainPlan};
use waypoint_benches::loadbench::zeroloss::endpoints::{self, EndpointPlan};
use waypoint_benches::loadbench::zeroloss::reload::{self, ReloadPlan};

fn setup() -> (tempfile::TempDir, Setup) {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_waypoint")),
        dir: dir.path().to_owned(),
        pin: None,
        env: Vec::new(),
    };
    (dir, setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_no_request() {
    let (_dir, setup) = setup();
    let plan = ReloadPlan {
        reloads: 20,
        rate: 200.0,
        connections: 16,
    };
    let out = reload::run(&setup, &plan).await.unwrap();
    let summary = out.tally.summary();
    eprintln!("{out:?}\n{summary}");
    assert_eq!(out.applied, 20, "every reload applied; {summary}");
    assert_eq!(out.versions.1 - out.versions.0, 20, "{:?}", out.versions);
    assert_eq!(out.failed_reloads, Some(0));
    assert!(out.tally.sent > 100, "{summary}");
    assert_eq!(out.tally.failed(), 0, "{summary}");
    assert!(
        out.served.0 > 0 && out.served.1 > 0,
        "both weights served: {:?}",
        out.served
    );
    assert!(out.served_once(), "{:?} vs {summary}", out.served);
}

fn drain_plan(protocol: Protocol) -> DrainPlan {
    DrainPlan {
        rate: 200.0,
        protocol,
        connections: 32,
        delay: Duration::from_millis(50),
        slow: Duration::from_secs(1),
        grace: Duration::from_secs(1),
        before: Duration::from_secs(1),
        after: Duration::from_millis(500),
    }
}

/// Checks a drain run: no request lost, readiness false before the listener closed, a clean
/// exit, and both in-flight probes finished and were ended by the server, cleanly.
fn assert_drained_without_loss(out: &drain::DrainOutcome) {
    let summary = out.tally.summary();
    eprintln!("{out:?}\n{summary}");
    assert!(out.tally.sent > 200, "{summary}");
    assert_eq!(out.tally.failed(), 0, "{summary}");
    // Nothing was processed and then lost among the resent requests.
    assert!(
        out.served_once(),
        "backend answered {}; {summary}",
        out.served
    );
    assert!(
        out.ready_false_first(),
        "readiness false at {:?}, listener refusing at {:?}",
        out.ready_false_after,
        out.refused_after
    );
    assert!(
        matches!(out.exited_after, Some((_, true))),
        "{:?}",
        out.exited_after
    );
    // The keep-alive connection's slow request finished, was told to close, and was closed.
    assert_eq!(out.h1.status, Some(200), "{:?}", out.h1);
    assert!(out.h1.close_header && out.h1.clean_end, "{:?}", out.h1);
    // The HTTP/2 stream finished and the connection ended with GOAWAY, not a reset.
    assert_eq!(out.h2.status, Some(200), "{:?}", out.h2);
    assert!(out.h2.clean_end, "{:?}", out.h2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests_after_readiness_turns_false() {
    let (_dir, setup) = setup();
    let out = drain::run(&setup, &drain_plan(Protocol::Http1))
        .await
        .unwrap();
    assert_drained_without_loss(&out);
    assert!(
        out.tally.closes > 0,
        "clients were told to close: {:?}",
        out.tally
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_h2c_load_moves_clients_with_goaway_and_loses_nothing() {
    let (_dir, setup) = setup();
    let out = drain::run(&setup, &drain_plan(Protocol::H2c { streams: 1 }))
        .await
        .unwrap();
    assert_drained_without_loss(&out);
}

fn endpoint_plan(retries: bool) -> EndpointPlan {
    EndpointPlan {
        rate: 200.0,
        connections: 16,
        delay: Duration::from_millis(5),
        before: Duration::from_secs(1),
        after: Duration::from_millis(500),
        retries,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_removed_under_load_loses_nothing_when_the_route_retries() {
    let (_dir, setup) = setup();
    let out = endpoints::run(&setup, &endpoint_plan(true)).await.unwrap();
    let summary = out.tally.summary();
    eprintln!("{out:?}\n{summary}");
    assert!(out.reload_after.is_some(), "the removal was applied");
    assert!(out.tally.sent > 200, "{summary}");
    assert_eq!(out.tally.failed(), 0, "{summary}");
    assert!(
        out.served.0 > 0,
        "the removed endpoint had served: {:?}",
        out.served
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_removed_under_load_without_retries_fails_only_with_clean_503s() {
    let (_dir, setup) = setup();
    let out = endpoints::run(&setup, &endpoint_plan(false)).await.unwrap();
    let summary = out.tally.summary();
    eprintln!("{out:?}\n{summary}");
    assert!(out.reload_after.is_some(), "the removal was applied");
    assert!(out.tally.sent > 200, "{summary}");
    assert!(out.tally.failed_only_with(503), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotated_under_load_lose_no_request() {
    let (dir, setup) = setup();
    let mesh = LocalMesh::start(dir.path()).await.unwrap();
    let plan = CertPlan {
        rate: 100.0,
        connections: 8,
        rotations: 3,
        pause: Duration::from_millis(400),
    };
    let out = certs::run(&setup, &plan, &mesh.env).await.unwrap();
    let summary = out.tally.summary();
    eprintln!("{out:?}\n{summary}");
    assert_eq!(out.applied, 3, "{:?}", out.problems);
    assert_eq!(out.fresh_ok, 3, "{:?}", out.problems);
    assert!(out.tally.sent > 100, "{summary}");
    assert_eq!(out.tally.failed(), 0, "{summary}");
}

/// Sends one GET on `stream` and reads the answer's head and (Content-Length) body; returns
/// the head.
async fn get(stream: &mut tokio::net::TcpStream, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: echo.default.svc.cluster.local\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(head)
}

async fn sandwich(listen: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    let header =
        waypoint_benches::loadbench::runner::proxy_header("spiffe://cluster.local/ns/shop/sa/cart");
    s.write_all(&header).await.unwrap();
    s
}

/// The keep-alive race the grace removes: closing an idle connection at SIGTERM loses the
/// request its client is writing at that moment. During the grace, the idle connection's next
/// request and a brand-new connection are both still answered, each told to close. The grace
/// is set through its environment variable, `WAYPOINT_DRAIN_GRACE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_grace_idle_keep_alive_and_new_connections_are_answered_with_connection_close() {
    let (_dir, mut setup) = setup();
    setup.env = vec![("WAYPOINT_DRAIN_GRACE".into(), "3s".into())];
    let backend = Backend::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        "echo",
        Duration::ZERO,
    )
    .await
    .unwrap();
    let flags = ["--drain-timeout", "10s"].map(String::from);
    let mut waypoint = setup
        .start_waypoint("grace", &drain::manifests(backend.addr()), &flags)
        .await
        .unwrap();
    let mut idle = sandwich(waypoint.listen).await;
    let head = get(&mut idle, "/before").await.unwrap();
    assert!(
        head.starts_with("http/1.1 200") && !head.contains("connection: close"),
        "{head}"
    );

    waypoint.proc.terminate().unwrap();
    let admin = waypoint.admin;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while waypoint_benches::loadbench::runner::is_ready(admin).await {
        assert!(
            std::time::Instant::now() < deadline,
            "readiness never turned false"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Readiness is false: both requests below would be lost without the grace.
    let head = get(&mut idle, "/idle-after-sigterm").await.unwrap();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("connection: close"),
        "{head}"
    );
    let mut fresh = sandwich(waypoint.listen).await;
    let head = get(&mut fresh, "/new-after-sigterm").await.unwrap();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("connection: close"),
        "{head}"
    );

    let exit = waypoint.proc.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}
