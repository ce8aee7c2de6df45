//! Heap allocations per request through the waypoint's whole request path.
//!
//! The job is `sandwich-h1`'s (see [`configs`](super::configs)): one keep-alive HTTP/1.1
//! connection that starts with a PROXY v2 header naming the Service VIP and carrying the
//! client's identity (TLV 0xD0), one HTTPRoute, 10 ALLOW AuthorizationPolicies of which the
//! client matches the last, and the 1 KiB upstream. The waypoint runs in this process (the
//! library, with the built-in filters), so a global allocator can count what it asks for:
//! [`Counting`](crate::alloc_count::Counting), which the calling binary must install. The
//! counts include the client's and the upstream's own allocations, so the same requests are
//! also sent straight to the upstream and the difference is the waypoint's share. On one
//! current-thread runtime the counts are deterministic up to the odd background timer.
//!
//! Used by `loadbench allocations` (a section of the report) and by the `allocations` bench.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use waypoint_core::runtime::{Waypoint, WaypointOptions};
use waypoint_core::transport::ListenAddr;
use waypoint_filters::Builtins;

use super::configs::{AUTHORITY, Job, client_identity, waypoint_manifests};
use super::runner::proxy_header;
use super::upstream::{BODY_BYTES, serve_http};
use crate::alloc_count::counters;

/// Allocations and bytes asked for, per request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerRequest {
    /// Allocations (a reallocation counts as one).
    pub allocations: f64,
    /// Bytes asked for.
    pub bytes: f64,
}

/// One measurement: the same requests through the waypoint and straight to the upstream.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    /// Requests counted on each path.
    pub requests: usize,
    /// Requests sent first on each path, not counted.
    pub warmup: usize,
    /// Client, waypoint and upstream together.
    pub through: PerRequest,
    /// Client and upstream alone.
    pub direct: PerRequest,
}

impl Counts {
    /// What the waypoint adds per request.
    pub fn share(&self) -> PerRequest {
        PerRequest {
            allocations: self.through.allocations - self.direct.allocations,
            bytes: self.through.bytes - self.direct.bytes,
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

fn err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// One keep-alive HTTP/1.1 connection to `addr`, opened with `preamble` (a PROXY header).
async fn connect(addr: SocketAddr, preamble: Option<&[u8]>) -> Result<Sender, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(err("connect"))?;
    stream.set_nodelay(true).map_err(err("nodelay"))?;
    if let Some(bytes) = preamble {
        stream.write_all(bytes).await.map_err(err("PROXY header"))?;
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one GET for `path` and reads the whole answer, which must be the upstream's 200.
async fn request(sender: &mut Sender, path: &str) -> Result<(), String> {
    let req = http::Request::get(path)
        .header(http::header::HOST, AUTHORITY)
        .body(Empty::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    if resp.status() != 200 {
        return Err(format!(
            "status {}: the request must pass route and policies",
            resp.status()
        ));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if body.len() != BODY_BYTES {
        return Err(format!("a body of {} bytes, not {BODY_BYTES}", body.len()));
    }
    Ok(())
}

/// Allocations and bytes per request over `n` requests on `sender`, after `warmup` more.
async fn per_request(
    sender: &mut Sender,
    path: &str,
    warmup: usize,
    n: usize,
) -> Result<PerRequest, String> {
    for _ in 0..warmup {
        request(sender, path).await?;
    }
    let (a0, b0) = counters();
    for _ in 0..n {
        request(sender, path).await?;
    }
    let (a1, b1) = counters();
    Ok(PerRequest {
        allocations: (a1 - a0) as f64 / n as f64,
        bytes: (b1 - b0) as f64 / n as f64,
    })
}

/// Counts `n` requests through an in-process waypoint and `n` straight to the upstream, each
/// after `warmup`. Fails when nothing was counted: the binary did not install
/// [`Counting`](crate::alloc_count::Counting).
pub async fn measure(warmup: usize, n: usize) -> Result<Counts, String> {
    let upstream_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(err("upstream bind"))?;
    let upstream = upstream_listener
        .local_addr()
        .map_err(err("upstream address"))?;
    let serving = tokio::spawn(serve_http(upstream_listener));

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
    let dir = tempfile::tempdir().map_err(err("scratch directory"))?;
    let config = dir.path().join("manifests.yaml");
    std::fs::write(&config, waypoint_manifests(&job)).map_err(err("manifests"))?;
    let mut options = WaypointOptions::new(&config);
    options.sandwich = vec![ListenAddr::Tcp(([127, 0, 0, 1], 0).into())];
    options.admin = None;
    // No reload polling while counting.
    options.reload_interval = Duration::from_secs(3600);
    let running = Waypoint::builder(options)
        .install(Builtins::default())
        .start()
        .await
        .map_err(|e| format!("waypoint: {e}"))?;
    let counted = async {
        let Some(ListenAddr::Tcp(listen)) = running.sandwich_addrs().first().cloned() else {
            return Err("the sandwich listener is not TCP".to_owned());
        };
        let path = job.path();
        let header = proxy_header(&client_identity(job.policies));
        let mut through = connect(listen, Some(&header)).await?;
        let through = per_request(&mut through, &path, warmup, n).await?;
        let mut direct = connect(upstream, None).await?;
        let direct = per_request(&mut direct, &path, warmup, n).await?;
        Ok(Counts {
            requests: n,
            warmup,
            through,
            direct,
        })
    }
    .await;
    let _ = running.shutdown(Duration::from_secs(1)).await;
    serving.abort();
    let counts = counted?;
    if counts.through.allocations == 0.0 {
        return Err(
            "no allocation counted: this binary does not install alloc_count::Counting".into(),
        );
    }
    Ok(counts)
}
