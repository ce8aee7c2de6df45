//! The wire side of forwarding: request rewriting, the HTTP/1.1 and h2c connection pools, error
//! descriptions, and the byte tunnel behind a protocol upgrade.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::UpstreamConfig;
use super::balance::InFlight;
use super::hop;
use crate::body::Body;
use crate::config::AppProtocol;

/// HTTP/2 keepalive toward h2c backends: the same PING cadence ztunnel and Istio's waypoint use,
/// so a dead backend connection is noticed before a request waits on it.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The pooled HTTP/1.1 client. The legacy client keys its pool by URI authority, and the
/// authority we send it is the endpoint's `ip:port`, so each endpoint gets its own pool.
pub(crate) fn http1_client(cfg: &UpstreamConfig) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(cfg.idle_timeout)
        .pool_max_idle_per_host(cfg.max_idle_per_endpoint)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Turns a downstream request into the request for `endpoint`: absolute URI for the endpoint,
/// `Host` kept (or made from the downstream `:authority`), version for the backend's protocol,
/// hop-by-hop headers removed (`Upgrade` kept when `upgrade` is carried through).
///
/// For h2c the URI authority becomes the `:authority` pseudo-header, so it carries the
/// request's host rather than the endpoint address: RFC 9113 §8.3.1 forbids a `Host` that
/// differs from `:authority`, and gRPC servers read `:authority`. The h2c pool is keyed by
/// endpoint separately, so nothing is lost.
pub(crate) fn prepare(
    req: &mut Request<Body>,
    endpoint: SocketAddr,
    protocol: AppProtocol,
    upgrade: bool,
) {
    hop::remove_hop_by_hop(req.headers_mut(), upgrade);

    if !req.headers().contains_key(header::HOST)
        && let Some(authority) = req.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, host);
    }

    let endpoint_authority = || Authority::try_from(endpoint.to_string()).ok();
    let authority = match protocol {
        AppProtocol::Http1 => endpoint_authority(),
        AppProtocol::H2c => req
            .headers()
            .get(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(endpoint_authority),
    };
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = authority;
    parts.path_and_query = Some(path);
    // Only fails for an authority we could not build; the socket address always formats as one.
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }

    *req.version_mut() = match protocol {
        AppProtocol::Http1 => Version::HTTP_11,
        AppProtocol::H2c => Version::HTTP_2,
    };
}

/// A reason why an exchange failed before response headers, in words for a local reply.
pub(crate) fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut innermost = err.to_string();
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(reason) = io_reason(io.kind())
        {
            return reason.to_owned();
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return "connection closed before response headers".to_owned();
            }
            if h.is_timeout() {
                return "timeout".to_owned();
            }
        }
        innermost = e.to_string();
        cur = e.source();
    }
    innermost
}

fn io_reason(kind: io::ErrorKind) -> Option<&'static str> {
    Some(match kind {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::TimedOut => "connect timeout",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::BrokenPipe => "connection closed (broken pipe)",
        io::ErrorKind::NotConnected => "not connected",
        io::ErrorKind::AddrNotAvailable => "address not available",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::UnexpectedEof => "connection closed before response headers",
        _ => return None,
    })
}

/// One live h2c connection in the pool.
struct H2Conn {
    id: u64,
    sender: http2::SendRequest<Body>,
    last_used: Instant,
}

/// HTTP/2 prior-knowledge connections, one per endpoint, shared by all requests to it
/// (HTTP/2 multiplexes). A connection leaves the pool when it closes or stays unused for the
/// idle timeout; requests already on it finish first.
///
/// Our own pool rather than the legacy client's: the legacy client takes the connection key
/// from the URI authority, which HTTP/2 also sends as `:authority`, so it could not connect to
/// the endpoint while telling the backend the request's host.
pub(crate) struct H2Pool {
    connect_timeout: Duration,
    idle_timeout: Duration,
    conns: Mutex<HashMap<SocketAddr, H2Conn>>,
    next_id: AtomicU64,
}

impl H2Pool {
    pub(crate) fn new(cfg: &UpstreamConfig) -> Arc<Self> {
        Arc::new(H2Pool {
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Sends `req` to `endpoint` over a pooled connection, opening one if needed. The error is
    /// a reason in words.
    pub(crate) async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, String> {
        let mut sender = match self.checkout(endpoint) {
            Some(sender) => sender,
            None => self.connect(endpoint).await?,
        };
        sender.ready().await.map_err(|e| describe(&e))?;
        sender.send_request(req).await.map_err(|e| describe(&e))
    }

    fn checkout(&self, endpoint: SocketAddr) -> Option<http2::SendRequest<Body>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let conn = conns.get_mut(&endpoint)?;
        if conn.sender.is_closed() {
            conns.remove(&endpoint);
            return None;
        }
        conn.last_used = Instant::now();
        Some(conn.sender.clone())
    }

    async fn connect(
        self: &Arc<Self>,
        endpoint: SocketAddr,
    ) -> Result<http2::SendRequest<Body>, String> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| {
                format!(
                    "connect timeout after {}ms",
                    self.connect_timeout.as_millis()
                )
            })?
            .map_err(|e| describe(&e))?;
        // Best effort: a socket that refuses TCP_NODELAY still works, only with more latency.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| describe(&e))?;

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            // Two requests racing to a fresh endpoint may both connect; the later one wins the
            // slot and the other connection closes once its request is done.
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.insert(
                endpoint,
                H2Conn {
                    id,
                    sender: sender.clone(),
                    last_used: Instant::now(),
                },
            );
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(drive(conn, pool, endpoint, id, self.idle_timeout));
        Ok(sender)
    }

    /// Drops the pool's handle on connection `id` if it is still the one for `endpoint` and, with
    /// `idle`, has not been used for that long; with every handle gone, hyper closes the
    /// connection after its last stream. Returns how long until it would be idle enough when
    /// it was kept.
    fn release(&self, endpoint: SocketAddr, id: u64, idle: Option<Duration>) -> Option<Duration> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let conn = conns.get(&endpoint).filter(|c| c.id == id)?;
        if let Some(idle) = idle {
            let unused = conn.last_used.elapsed();
            if unused < idle {
                return Some(idle - unused);
            }
        }
        conns.remove(&endpoint);
        None
    }
}

/// Runs one h2c connection to its end, taking it out of the pool when it has been idle too long
/// or when it closes.
async fn drive(
    conn: http2::Connection<TokioIo<TcpStream>, Body, TokioExecutor>,
    pool: Weak<H2Pool>,
    endpoint: SocketAddr,
    id: u64,
    idle_timeout: Duration,
) {
    tokio::pin!(conn);
    let mut pooled = true;
    let mut next_check = idle_timeout;
    loop {
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(%endpoint, error = %e, "h2c upstream connection ended");
                }
                break;
            }
            _ = tokio::time::sleep(next_check), if pooled => {
                match pool.upgrade().and_then(|p| p.release(endpoint, id, Some(idle_timeout))) {
                    Some(remaining) => next_check = remaining,
                    None => pooled = false,
                }
            }
        }
    }
    if pooled && let Some(pool) = pool.upgrade() {
        pool.release(endpoint, id, None);
    }
}

/// Joins the two halves of an upgraded exchange (say, a WebSocket) once hyper hands them over,
/// and copies bytes both ways until either side closes. The request counts as in flight for the
/// tunnel's lifetime.
pub(crate) fn tunnel(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    endpoint: SocketAddr,
    guard: InFlight,
) {
    tokio::spawn(async move {
        let _guard = guard;
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "protocol upgrade failed");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((sent, received)) => {
                tracing::debug!(%endpoint, sent, received, "upgraded connection closed")
            }
            Err(e) => tracing::debug!(%endpoint, error = %e, "upgraded connection failed"),
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::body::empty;

    fn request(uri: &str, headers: &[(&str, &str)], version: Version) -> Request<Body> {
        let mut b = Request::builder().uri(uri).version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(empty()).unwrap()
    }

    const EP: ([u8; 4], u16) = ([10, 1, 2, 3], 8080);

    #[test]
    fn http1_gets_endpoint_uri_and_keeps_host() {
        let mut req = request(
            "/a/b?x=1&y",
            &[("host", "echo.default.svc")],
            Version::HTTP_10,
        );
        prepare(&mut req, EP.into(), AppProtocol::Http1, false);
        assert_eq!(req.uri(), "http://10.1.2.3:8080/a/b?x=1&y");
        assert_eq!(req.headers()["host"], "echo.default.svc");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn http2_downstream_gets_host_from_authority() {
        let mut req = request("http://echo.default.svc:8000/p", &[], Version::HTTP_2);
        prepare(&mut req, EP.into(), AppProtocol::Http1, false);
        assert_eq!(req.uri(), "http://10.1.2.3:8080/p");
        assert_eq!(req.headers()["host"], "echo.default.svc:8000");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn h2c_authority_is_the_host_and_ipv6_endpoints_work() {
        let mut req = request(
            "/svc.Echo/Call",
            &[("host", "grpc.ns:9000"), ("te", "trailers")],
            Version::HTTP_11,
        );
        prepare(&mut req, EP.into(), AppProtocol::H2c, false);
        assert_eq!(req.uri(), "http://grpc.ns:9000/svc.Echo/Call");
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.headers()["te"], "trailers");

        // No host at all: the endpoint is the only authority there is.
        let mut req = request("/x", &[], Version::HTTP_11);
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        prepare(&mut req, v6, AppProtocol::H2c, false);
        assert_eq!(req.uri(), "http://[fd00::1]:80/x");
        let mut req = request("/x", &[], Version::HTTP_11);
        prepare(&mut req, v6, AppProtocol::Http1, false);
        assert_eq!(req.uri(), "http://[fd00::1]:80/x");
    }

    #[test]
    fn describe_walks_the_source_chain() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(describe(&refused), "connection refused");
        // What HttpConnector reports when its connect timeout fires.
        let timed_out = Outer(io::Error::new(
            io::ErrorKind::TimedOut,
            "deadline has elapsed",
        ));
        assert_eq!(describe(&timed_out), "connect timeout");
        let other = Outer(io::Error::other("tls says no"));
        assert_eq!(describe(&other), "tls says no");
    }
}
