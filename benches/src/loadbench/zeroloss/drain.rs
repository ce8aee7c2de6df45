//! SIGTERM under load. Two waypoints serve the same config; the load generator dials whichever
//! is ready, re-checking `/healthz/ready` every 50 ms as kube-proxy or a ztunnel would follow
//! an endpoint's readiness. The backend answers after a delay, so requests are always in
//! flight on the waypoint that is stopped, and two probes hold a slow request across the
//! SIGTERM: an HTTP/1.1 keep-alive connection (its answer must carry `Connection: close`, then
//! the server closes) and an HTTP/2 one (its stream must finish and the connection end with
//! GOAWAY, not a reset). A monitor records when the stopped waypoint's readiness turned false
//! and when its listener stopped accepting: the first must come before the second.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::backend::Backend;
use super::{OpenLoad, Setup, Tally, route, service};
use crate::loadbench::configs::AUTHORITY;
use crate::loadbench::load::{Dialer, Protocol};
use crate::loadbench::runner::{is_ready, proxy_header};

const IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/cart";

/// The scale of a run.
#[derive(Clone, Debug)]
pub struct DrainPlan {
    /// Load, requests per second.
    pub rate: f64,
    /// The load's HTTP flavour (HTTP/2: one stream at a time per connection).
    pub protocol: Protocol,
    /// Load connections.
    pub connections: usize,
    /// The backend's answer delay for the load's requests.
    pub delay: Duration,
    /// The probes' request delay: in flight across the SIGTERM.
    pub slow: Duration,
    /// The stopped waypoint's `--drain-grace`.
    pub grace: Duration,
    /// Load before the SIGTERM.
    pub before: Duration,
    /// Load after the stopped waypoint exited.
    pub after: Duration,
}

/// What an in-flight probe saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// The answer's status, if any.
    pub status: Option<u16>,
    /// HTTP/1.1: the answer carried `Connection: close`.
    pub close_header: bool,
    /// The server then ended the connection cleanly (HTTP/1.1: closed after the answer;
    /// HTTP/2: GOAWAY and close, no error).
    pub clean_end: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// What a run saw.
#[derive(Clone, Debug)]
pub struct DrainOutcome {
    /// Every load request.
    pub tally: Tally,
    /// After SIGTERM: when `/healthz/ready` stopped answering 200.
    pub ready_false_after: Option<Duration>,
    /// After SIGTERM: when the listener refused its first connection.
    pub refused_after: Option<Duration>,
    /// After SIGTERM: when the process exited, and whether with success.
    pub exited_after: Option<(Duration, bool)>,
    /// The HTTP/1.1 keep-alive probe.
    pub h1: Probe,
    /// The HTTP/2 probe.
    pub h2: Probe,
    /// Requests the backend answered.
    pub served: u64,
}

impl DrainOutcome {
    /// The backend answered exactly one request per success the clients saw (the load's, and
    /// the probes' three: the HTTP/1.1 probe's first request and both slow ones): nothing was
    /// processed and then lost.
    pub fn served_once(&self) -> bool {
        let probes = [self.h1.status.map(|_| 2), self.h2.status.map(|_| 1)];
        self.served == self.tally.ok + probes.iter().flatten().sum::<u64>()
    }

    /// Readiness turned false strictly before the listener closed.
    pub fn ready_false_first(&self) -> bool {
        matches!((self.ready_false_after, self.refused_after), (Some(r), Some(c)) if r < c)
    }
}

/// The config both waypoints serve: one Service, one route, the delayed backend.
pub fn manifests(backend: SocketAddr) -> String {
    [
        service("echo", "10.96.0.10", &[backend]),
        route("echo", "backendRefs: [{name: echo, port: 80}]"),
    ]
    .join("---\n")
}

/// Runs the scenario: see the module documentation.
pub async fn run(setup: &Setup, plan: &DrainPlan) -> Result<DrainOutcome, String> {
    let backend = Backend::start(SocketAddr::from(([127, 0, 0, 1], 0)), "echo", plan.delay)
        .await
        .map_err(|e| e.to_string())?;
    let config = manifests(backend.addr());
    let deadline = plan.grace + plan.slow + Duration::from_secs(5);
    let flags: Vec<String> = [
        "--drain-grace".to_owned(),
        format!("{}ms", plan.grace.as_millis()),
        "--drain-timeout".to_owned(),
        format!("{}ms", deadline.as_millis()),
    ]
    .into();
    let mut old = setup
        .start_waypoint("zero-loss-drain-old", &config, &flags)
        .await?;
    let new = setup
        .start_waypoint("zero-loss-drain-new", &config, &flags)
        .await?;

    let current = Arc::new(RwLock::new(old.listen));
    let balancer = tokio::spawn(follow_readiness(
        current.clone(),
        [(old.listen, old.admin), (new.listen, new.admin)],
    ));
    let dialer = Dialer::Shared {
        addr: current,
        proxy_header: Some(proxy_header(IDENTITY)),
    };
    let path = format!("/delay/{}", plan.delay.as_millis());
    let mut load = OpenLoad::new(plan.rate, plan.connections, &path);
    load.protocol = plan.protocol;
    let load = load.start(dialer);
    tokio::time::sleep(plan.before).await;

    let slow = format!("/delay/{}", plan.slow.as_millis());
    let h1 = tokio::spawn(h1_probe(old.listen, slow.clone()));
    let h2 = tokio::spawn(h2_probe(old.listen, slow));
    // Let the probes' requests reach the backend before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    old.proc.terminate()?;
    let monitor = tokio::spawn(watch_shutdown(old.listen, old.admin, signalled));
    let exited = old
        .proc
        .wait_exit(deadline + Duration::from_secs(5))
        .await
        .map(|status| (signalled.elapsed(), status.success()));
    let (ready_false_after, refused_after) = monitor.await.unwrap_or((None, None));
    tokio::time::sleep(plan.after).await;
    let tally = load.stop().await;
    balancer.abort();
    let join = |r: Result<Probe, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Probe {
            error: Some(e.to_string()),
            ..Default::default()
        })
    };
    Ok(DrainOutcome {
        tally,
        ready_false_after,
        refused_after,
        exited_after: exited,
        h1: join(h1.await),
        h2: join(h2.await),
        served: backend.served(),
    })
}

/// Points `current` at a ready instance whenever the one it names is not ready any more.
async fn follow_readiness(
    current: Arc<RwLock<SocketAddr>>,
    instances: [(SocketAddr, SocketAddr); 2],
) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = *current.read().unwrap_or_else(|p| p.into_inner());
        let Some(&(_, admin)) = instances.iter().find(|(l, _)| *l == now) else {
            continue;
        };
        if is_ready(admin).await {
            continue;
        }
        for (listen, admin) in instances {
            if listen != now && is_ready(admin).await {
                *current.write().unwrap_or_else(|p| p.into_inner()) = listen;
                break;
            }
        }
    }
}

/// Polls, every 10 ms for at most 30 s, when readiness turns false and when the listener
/// first refuses a connection; both times are from `since`.
async fn watch_shutdown(
    listen: SocketAddr,
    admin: SocketAddr,
    since: Instant,
) -> (Option<Duration>, Option<Duration>) {
    let (mut ready_false, mut refused) = (None, None);
    while since.elapsed() < Duration::from_secs(30) && refused.is_none() {
        if ready_false.is_none() && !is_ready(admin).await {
            ready_false = Some(since.elapsed());
        }
        if TcpStream::connect(listen).await.is_err() {
            refused = Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (ready_false, refused)
}

async fn sandwich_stream(listen: SocketAddr) -> Result<TokioIo<TcpStream>, String> {
    let mut s = TcpStream::connect(listen)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(&proxy_header(IDENTITY))
        .await
        .map_err(|e| e.to_string())?;
    Ok(TokioIo::new(s))
}

fn get(path: &str, version: http::Version) -> Result<http::Request<Empty<Bytes>>, String> {
    let uri = match version {
        http::Version::HTTP_2 => format!("http://{AUTHORITY}{path}"),
        _ => path.to_owned(),
    };
    http::Request::get(uri)
        .version(version)
        .header(http::header::HOST, AUTHORITY)
        .body(Empty::new())
        .map_err(|e| e.to_string())
}

/// A keep-alive connection that has already carried one request, then a slow one.
async fn h1_probe(listen: SocketAddr, slow: String) -> Probe {
    settle(async {
        let io = sandwich_stream(listen).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let first = sender
            .send_request(get("/delay/0", http::Version::HTTP_11)?)
            .await
            .map_err(|e| format!("first request: {e}"))?;
        first
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let resp = sender.send_request(get(&slow, http::Version::HTTP_11)?);
        Ok(finish(resp.await, conn, sender).await)
    })
    .await
}

/// An HTTP/2 connection with one slow stream.
async fn h2_probe(listen: SocketAddr, slow: String) -> Probe {
    settle(async {
        let io = sandwich_stream(listen).await?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(get(&slow, http::Version::HTTP_2)?);
        Ok(finish(resp.await, conn, sender).await)
    })
    .await
}

/// A probe that failed before its slow request was answered says why.
async fn settle(probe: impl Future<Output = Result<Probe, String>>) -> Probe {
    probe.await.unwrap_or_else(|e| Probe {
        error: Some(e),
        ..Default::default()
    })
}

/// Reads the probe's answer, then waits (5 s at most) for the server to end the connection
/// while `sender` is kept, so the end cannot be the client's own doing.
async fn finish<S>(
    resp: hyper::Result<http::Response<hyper::body::Incoming>>,
    conn: tokio::task::JoinHandle<hyper::Result<()>>,
    sender: S,
) -> Probe {
    let mut probe = Probe::default();
    let resp = match resp {
        Ok(resp) => resp,
        Err(e) => {
            probe.error = Some(format!("slow request: {e}"));
            return probe;
        }
    };
    probe.status = Some(resp.status().as_u16());
    probe.close_header = resp
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if let Err(e) = resp.into_body().collect().await {
        probe.error = Some(format!("body: {e}"));
        return probe;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    drop(sender);
    probe.clean_end = matches!(ended, Ok(Ok(Ok(()))));
    if let Ok(Ok(Err(e))) = ended {
        probe.error = Some(format!("connection ended with an error: {e}"));
    }
    probe
}
