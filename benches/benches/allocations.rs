//! Heap allocations per request through the waypoint's whole request path, counted by a global
//! allocator that wraps the system's.
//!
//! The job is the load benchmark's `sandwich-h1` (see `waypoint_benches::loadbench::configs`):
//! one keep-alive HTTP/1.1 connection that starts with a PROXY v2 header naming the Service VIP
//! and carrying the client's identity (TLV 0xD0), one HTTPRoute, 10 ALLOW AuthorizationPolicies
//! of which the client matches the last, and the 1 KiB upstream. Everything runs in this process
//! on one current-thread runtime, so the counts are deterministic up to the odd background
//! timer; they include the client's and the upstream's own allocations, so the same requests
//! are also sent straight to the upstream and the difference is the waypoint's share.
//!
//! `cargo bench -p waypoint-benches --bench allocations` averages over 20,000 requests after
//! 2,000 of warm-up; without `--bench` (as `cargo test --benches` runs it) it sends a few as a
//! smoke test. Nothing is asserted about the counts: they are measured, not goals.
#![allow(missing_docs, clippy::unwrap_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use waypoint_benches::loadbench::configs::{AUTHORITY, Job, client_identity, waypoint_manifests};
use waypoint_benches::loadbench::runner::proxy_header;
use waypoint_benches::loadbench::upstream::{BODY_BYTES, serve_http};
use waypoint_core::runtime::{Waypoint, WaypointOptions};
use waypoint_core::transport::ListenAddr;
use waypoint_filters::Builtins;

/// The system allocator, counting what passes through it.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s contract;
// the counters are plain atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's layout goes to `System` as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation is an allocation of the new size (as a profiler counts it).
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counters() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One keep-alive HTTP/1.1 connection to `addr`, opened with `preamble` (a PROXY header).
async fn connect(addr: SocketAddr, preamble: Option<&[u8]>) -> Sender {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    if let Some(bytes) = preamble {
        stream.write_all(bytes).await.unwrap();
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends one GET for `path` and reads the whole answer, which must be the upstream's 200.
async fn request(sender: &mut Sender, path: &str) {
    let req = http::Request::get(path)
        .header(http::header::HOST, AUTHORITY)
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the request must pass route and policies"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), BODY_BYTES);
}

/// Allocations and bytes per request over `n` requests on `sender`, after `warmup` more.
async fn per_request(sender: &mut Sender, path: &str, warmup: usize, n: usize) -> (f64, f64) {
    for _ in 0..warmup {
        request(sender, path).await;
    }
    let (a0, b0) = counters();
    for _ in 0..n {
        request(sender, path).await;
    }
    let (a1, b1) = counters();
    ((a1 - a0) as f64 / n as f64, (b1 - b0) as f64 / n as f64)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (warmup, n) = if full { (2_000, 20_000) } else { (20, 50) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let upstream_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = upstream_listener.local_addr().unwrap();
        tokio::spawn(serve_http(upstream_listener));

        let job = Job {
            listen_port: 0,
            admin_port: 0,
            upstream,
            proxy_protocol: true,
            routes: 1,
            policies: 10,
            tls: None,
            mesh_endpoints: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("manifests.yaml");
        std::fs::write(&config, waypoint_manifests(&job)).unwrap();
        let mut options = WaypointOptions::new(&config);
        options.sandwich = vec![ListenAddr::Tcp(([127, 0, 0, 1], 0).into())];
        options.admin = None;
        // No reload polling while counting.
        options.reload_interval = Duration::from_secs(3600);
        let running = Waypoint::builder(options)
            .install(Builtins::default())
            .start()
            .await
            .unwrap();
        let ListenAddr::Tcp(listen) = running.sandwich_addrs()[0].clone() else {
            panic!("the sandwich listener is TCP")
        };

        let path = job.path();
        let header = proxy_header(&client_identity(job.policies));
        let mut through = connect(listen, Some(&header)).await;
        let (wa, wb) = per_request(&mut through, &path, warmup, n).await;
        let mut direct = connect(upstream, None).await;
        let (da, db) = per_request(&mut direct, &path, warmup, n).await;

        println!(
            "allocations per request, sandwich-h1 job (1 HTTPRoute, 10 ALLOW policies), {n} requests on one keep-alive connection after {warmup} of warm-up"
        );
        println!("  through the waypoint   {wa:>8.1} allocations  {wb:>10.0} bytes");
        println!("  direct to upstream     {da:>8.1} allocations  {db:>10.0} bytes");
        println!(
            "  the waypoint's share   {:>8.1} allocations  {:>10.0} bytes",
            wa - da,
            wb - db
        );
        drop((through, direct));
        let _ = running.shutdown(Duration::from_secs(1)).await;
    });
}
