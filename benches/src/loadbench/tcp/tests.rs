//! The `tcp` scenario's plumbing without a measuring run: the echo backend and the clients
//! against it directly, the clients against misbehaving "proxies" (they must fail, clearly and
//! in bounded time), and, with Envoy installed, Envoy running the generated bootstrap.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::echo::{self, EchoSpec};
use crate::loadbench::load::{Dialer, NoWindow};

async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(echo::serve(l));
    addr
}

fn plain(addr: SocketAddr) -> Dialer {
    Dialer::Tcp {
        addr,
        proxy_header: None,
    }
}

/// A "proxy" that reads what comes and answers with `reply` (maybe nothing), then closes
/// after `hold`.
async fn fake_proxy(reply: &'static [u8], hold: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                tokio::time::sleep(hold).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_echo_load_counts_every_round_trip_in_the_window() {
    let backend = echo_backend().await;
    let spec = EchoSpec {
        connections: 4,
        message: 1024,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(300),
    };
    let r = echo::run_echo(&plain(backend), spec, &mut NoWindow).await;
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    assert!(r.ok > 10, "only {} round trips", r.ok);
    assert_eq!(r.hist.count(), r.ok);
}

#[tokio::test]
async fn a_bulk_transfer_comes_back_whole_and_ends_with_the_half_close() {
    let backend = echo_backend().await;
    let total = 8 << 20;
    let b = echo::run_bulk(&plain(backend), total, &mut NoWindow)
        .await
        .unwrap();
    assert_eq!(b.bytes, total);
    assert!(b.gib_per_s() > 0.0);
}

#[tokio::test]
async fn the_probe_says_what_a_proxy_answered_instead_of_the_echo() {
    let http = fake_proxy(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        Duration::ZERO,
    )
    .await;
    let err = echo::probe(&plain(http), 1024).await.unwrap_err();
    assert!(err.contains("\"HTTP/1.1 400 Bad Request\""), "{err}");

    let closing = fake_proxy(b"", Duration::ZERO).await;
    let err = echo::probe(&plain(closing), 1024).await.unwrap_err();
    assert!(err.contains("closed before any byte"), "{err}");
}

#[tokio::test]
async fn a_proxy_that_swallows_the_bytes_fails_the_probe_instead_of_hanging() {
    let silent = fake_proxy(b"", Duration::from_secs(60)).await;
    let started = Instant::now();
    let err = echo::probe(&plain(silent), 1024).await.unwrap_err();
    assert!(err.contains("nothing for 5 s"), "{err}");
    assert!(started.elapsed() < echo::IO_TIMEOUT + Duration::from_secs(2));
}

#[tokio::test]
async fn a_short_echo_fails_the_bulk_transfer() {
    // Echoes the first read only, then closes: most of the transfer never comes back.
    let short = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(&buf[..n]).await;
            }
        });
        addr
    };
    let err = echo::run_bulk(&plain(short), 4 << 20, &mut NoWindow)
        .await
        .unwrap_err();
    // How it fails depends on timing: a short count at EOF, or the peer's reset (it closed
    // with our bytes unread) seen by the writer or the reader.
    assert!(
        err.contains("came back before EOF")
            || err.contains("bulk write")
            || err.contains("bulk read"),
        "{err}"
    );
}

/// Envoy with the generated TCP bootstrap in front of the echo backend: the allowed identity
/// is echoed, another identity is closed by the network RBAC filter.
#[tokio::test]
#[ignore = "needs Envoy: ENVOY_BIN=/path/to/envoy cargo test -p waypoint-benches --lib -- --ignored envoy_tcp"]
async fn envoy_tcp_proxy_echoes_the_allowed_identity_and_rbac_closes_another() {
    use crate::loadbench::configs::{Job, client_identity};
    use crate::loadbench::procs::Peers;
    use crate::loadbench::runner::{free_port, launch_envoy, proxy_header};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let envoy = Peers::discover(&root).envoy.expect("Envoy (set ENVOY_BIN)");
    let backend = echo_backend().await;
    let job = Job {
        listen_port: free_port().unwrap(),
        admin_port: free_port().unwrap(),
        upstream: backend,
        proxy_protocol: true,
        routes: 1,
        policies: 10,
        tls: None,
        mesh_endpoints: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = super::configs::envoy_yaml(&job).unwrap();
    let command = std::process::Command::new(envoy);
    let running = launch_envoy(command, &job, &bootstrap, dir.path())
        .await
        .unwrap();

    let allowed = Dialer::Tcp {
        addr: running.listen,
        proxy_header: Some(proxy_header(&client_identity(job.policies))),
    };
    echo::probe(&allowed, 1024).await.unwrap();
    let b = echo::run_bulk(&allowed, 4 << 20, &mut NoWindow)
        .await
        .unwrap();
    assert_eq!(b.bytes, 4 << 20);
    let intruder = Dialer::Tcp {
        addr: running.listen,
        proxy_header: Some(proxy_header(
            "spiffe://cluster.local/ns/intruder/sa/mallory",
        )),
    };
    let err = echo::probe(&intruder, 1024).await.unwrap_err();
    assert!(err.contains("closed") || err.contains("reset"), "{err}");
}
