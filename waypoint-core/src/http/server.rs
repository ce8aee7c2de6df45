//! Serves HTTP on any byte stream a transport produced.
//!
//! The protocol is told from the first bytes: the HTTP/2 connection preface means h2c with
//! prior knowledge, anything else HTTP/1.1. We detect it ourselves rather than with
//! hyper-util's `auto` connection because `auto` holds the HTTP/1 and HTTP/2 state machines
//! in one enum, so every HTTP/1.1 connection (the common case, and most of the idle ones)
//! carried the larger HTTP/2 state inline; here only the one in use is allocated.
//!
//! # Draining without losing a request
//!
//! When a shutdown starts draining (see [`crate::shutdown`]), a connection is told to go
//! elsewhere in the way its protocol allows without racing the client:
//!
//! - HTTP/2: GOAWAY at once (hyper sends it in two steps, so streams the client opened before
//!   seeing it are still served); in-flight streams finish. A connection that has not sent a
//!   request yet (one accepted during the drain, say) gets its GOAWAY once its first request
//!   arrives: told at once, a client that opened it and queued a request behind the handshake
//!   reads the GOAWAY first and never sends the request, so a reconnecting client would be
//!   turned away on every new connection until the listener closes.
//! - HTTP/1.1: nothing is closed yet. Each response from now on carries `Connection: close`, so
//!   the client closes after reading it and opens its next connection elsewhere. Closing an
//!   idle keep-alive connection here instead would race with a request the client is writing
//!   at that moment, which would be lost. Idle connections are closed only when the stopping
//!   phase begins.
//! - A connection whose first bytes have not arrived is left waiting through the grace (its
//!   protocol decides how to tell it); when the shutdown stops, it is closed, having sent
//!   nothing that could be lost.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use super::batch::{BatchedWrites, PollCount};
use super::upgrade::AllowedUpgrades;
use crate::body::Body;
use crate::conn::ConnInfo;
use crate::overload::Overload;
use crate::shutdown::Shutdown;
use crate::transport::BoxedIo;
use crate::transport::Rewind;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A request being served, boxed (see [`HttpServer::serve`]).
type ServiceFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// Limits of the HTTP server side. The defaults follow the HBONE settings of `docs/wire.md` where
/// they apply, and protect against slow or abusive clients elsewhere.
#[derive(Clone, Debug)]
pub struct HttpServerConfig {
    /// HTTP/1.1: the whole request head must arrive within this time, or the connection closes.
    pub header_read_timeout: Duration,
    /// HTTP/1.1: the largest request head accepted (larger: 431).
    pub max_header_bytes: usize,
    /// HTTP/2: the largest header list accepted.
    pub h2_max_header_list_bytes: u32,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: PING interval; `None` disables keepalive.
    pub h2_keepalive_interval: Option<Duration>,
    /// HTTP/2: close the connection when a PING is not answered within this time.
    pub h2_keepalive_timeout: Duration,
    /// HTTP/1.1 upgrades carried to backends (default: `websocket`); never `h2c`. See
    /// `http/upgrade.rs`.
    pub allowed_upgrades: AllowedUpgrades,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            h2_max_header_list_bytes: 64 * 1024,
            h2_max_concurrent_streams: 200,
            h2_keepalive_interval: Some(Duration::from_secs(10)),
            h2_keepalive_timeout: Duration::from_secs(20),
            allowed_upgrades: AllowedUpgrades::default(),
        }
    }
}

/// Serves HTTP/1.1 and h2c connections, handing each request with its connection's
/// [`ConnInfo`] to a request handler.
#[derive(Clone)]
pub struct HttpServer {
    h1: Arc<http1::Builder>,
    h2: Arc<http2::Builder<TokioExecutor>>,
    header_read_timeout: Duration,
    overload: Option<Arc<Overload>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpServer")
    }
}

impl HttpServer {
    /// A server with the given limits.
    pub fn new(cfg: &HttpServerConfig) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            // The exact limit, checked on the parsed head: the buffer bound alone is soft (a
            // read may fill the buffer's spare capacity, up to twice the bound, first).
            .max_header_size(cfg.max_header_bytes)
            .max_buf_size(cfg.max_header_bytes.max(8192))
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(cfg.h2_max_header_list_bytes)
            .max_concurrent_streams(cfg.h2_max_concurrent_streams)
            .keep_alive_interval(cfg.h2_keepalive_interval)
            .keep_alive_timeout(cfg.h2_keepalive_timeout);
        // Deliberately no `enable_connect_protocol()`: SETTINGS_ENABLE_CONNECT_PROTOCOL stays
        // unadvertised, so RFC 8441 extended CONNECT (`:protocol`) is refused by the HTTP/2
        // layer with a stream reset and never becomes a tunnel (see `upgrade`).
        HttpServer {
            h1: Arc::new(h1),
            h2: Arc::new(h2),
            header_read_timeout: cfg.header_read_timeout,
            overload: None,
        }
    }

    /// When `overload` has a memory limit, enters every connection in its registry, with
    /// whether it is handling a request, so the memory watermark can ask it to close (idle ones
    /// first).
    pub fn with_overload(mut self, overload: Arc<Overload>) -> Self {
        self.overload = Some(overload);
        self
    }

    /// Serves one connection until the client closes it, or until `shutdown` stops it or the
    /// memory watermark asks it to close: then in-flight requests finish and the connection
    /// closes gracefully. While `shutdown` drains, HTTP/2 gets GOAWAY and HTTP/1.1 responses
    /// `Connection: close` (see the module documentation).
    pub async fn serve<H, F>(
        &self,
        io: BoxedIo,
        conn: Arc<ConnInfo>,
        handler: H,
        shutdown: Shutdown,
    ) where
        H: Fn(hyper::Request<Incoming>, Arc<ConnInfo>) -> F + Send + Sync + 'static,
        F: Future<Output = http::Response<Body>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let peer = conn.source;
        // Only the memory watermark reads the registry; without a memory limit a connection
        // skips its lock (twice per connection, HBONE tunnels included).
        let registration = self
            .overload
            .as_ref()
            .filter(|o| o.options().memory_limit.is_some())
            .map(|o| o.connections().register());
        let tracked = registration.as_ref().map(|r| r.conn().clone());
        let drain = Arc::new(DrainState::default());
        let service = {
            let (tracked, drain) = (tracked.clone(), drain.clone());
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                drain.request_arrived();
                let (handler, conn, drain) = (handler.clone(), conn.clone(), drain.clone());
                // Busy from the head until the response head: an idle connection is one
                // waiting for its next request (or streaming out a response body, which a
                // graceful close lets finish anyway).
                let busy = tracked.as_ref().map(|t| t.busy());
                // Boxed: hyper's HTTP/1 dispatcher keeps one slot the size of this future for
                // the connection's whole life, idle or not. The proxy's request future is
                // ~9.5 KiB; a box is 16 bytes, and the request pays one allocation instead.
                let serve: ServiceFuture = Box::pin(async move {
                    let version = req.version();
                    let mut resp = handler(req, conn).await;
                    drop(busy);
                    if drain.is_draining() {
                        ask_to_close(&mut resp, version);
                    }
                    Ok::<_, Infallible>(resp)
                });
                serve
            })
        };
        let close_requested = async {
            match &tracked {
                Some(t) => t.close_requested().await,
                None => std::future::pending().await,
            }
        };
        // The protocol, from the first bytes. A stop while waiting for them closes the
        // connection: it has sent nothing that could be lost.
        let sniffed = tokio::select! {
            biased;
            () = shutdown.wait() => {
                tracing::debug!(?peer, "stopping: closing a connection that sent nothing yet");
                return;
            }
            sniffed = tokio::time::timeout(self.header_read_timeout, sniff_h2(io)) => sniffed,
        };
        let ends = Ends {
            shutdown,
            close_requested,
            drain: &drain,
            peer,
        };
        let result = match sniffed {
            Ok(Ok((true, io))) => {
                // The frames all streams produce before the connection's next poll leave in
                // one write (see `batch`).
                let polls = PollCount::default();
                let io = BatchedWrites::new(io, polls.clone());
                let conn = Box::pin(self.h2.serve_connection(TokioIo::new(io), service));
                // HTTP/2 can be told at once (GOAWAY); streams the client opened before seeing
                // it are still served.
                drive(conn, |c| c.graceful_shutdown(), true, Some(&polls), ends).await
            }
            Ok(Ok((false, io))) => {
                let conn = self
                    .h1
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                drive(Box::pin(conn), |c| c.graceful_shutdown(), false, None, ends).await
            }
            Ok(Err(error)) => {
                tracing::debug!(?peer, %error, "connection closed before its first request");
                Ok(())
            }
            Err(_) => {
                tracing::debug!(?peer, timeout = ?self.header_read_timeout, "no request within the header read timeout; closing");
                Ok(())
            }
        };
        drop(registration);
        if let Err(err) = result {
            if err.is_parse_too_large() {
                // hyper has answered 431 and closed the connection.
                if let Some(overload) = &self.overload {
                    overload.metrics().inc_request_refused("headers_too_large");
                }
                tracing::debug!(
                    ?peer,
                    "request head over the size limit: 431, connection closed"
                );
            } else {
                // Clients that vanish mid-request are routine; debug keeps the logs useful.
                tracing::debug!(?peer, error = %err, "connection ended with an error");
            }
        }
    }
}

/// While draining, an HTTP/1.x response (other than a protocol switch, which keeps the
/// connection by definition) asks the client to close: hyper then closes after writing it.
fn ask_to_close(resp: &mut http::Response<Body>, version: http::Version) {
    if version < http::Version::HTTP_2 && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

/// What can end a connection early, besides its client.
struct Ends<'a, R> {
    shutdown: Shutdown,
    /// The memory watermark asks this connection to close.
    close_requested: R,
    /// Whether the shutdown drains, and whether the client has sent a request yet.
    drain: &'a DrainState,
    peer: Option<std::net::SocketAddr>,
}

/// A connection's view of the drain: once set, HTTP/1.1 responses ask the client to close; and
/// whether the client has sent a request yet, so a drain can wait for the first one before it
/// tells an HTTP/2 client to go away (see the module documentation).
#[derive(Default)]
struct DrainState {
    draining: AtomicBool,
    seen_request: AtomicBool,
    /// Woken when the first request arrives after the drain began.
    first_request_while_draining: Notify,
}

impl DrainState {
    /// Called for every request: one swap, and a wake-up only for a first request while draining.
    fn request_arrived(&self) {
        // SeqCst pairs with `begin`: of the request and the drain, whichever comes second sees
        // the other, so the GOAWAY is neither lost nor sent before the first request.
        if !self.seen_request.swap(true, Ordering::SeqCst) && self.draining.load(Ordering::SeqCst) {
            self.first_request_while_draining.notify_one();
        }
    }

    /// Marks the drain begun; true when a request has already arrived.
    fn begin(&self) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        self.seen_request.load(Ordering::SeqCst)
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Runs `conn` to its end. `graceful` asks it to finish (HTTP/2 GOAWAY, HTTP/1.1 close after
/// the current request): when the shutdown drains if `tell_on_drain` (HTTP/2: at once, or at
/// the first request of a connection that has sent none), else when it stops or the memory
/// watermark asks. Polled shutdown first (biased), so a request
/// that wakes this task after the drain began is answered as draining. `polls`, when the
/// connection batches its writes, is told of every poll of `conn`.
async fn drive<C>(
    mut conn: Pin<Box<C>>,
    graceful: fn(Pin<&mut C>),
    tell_on_drain: bool,
    polls: Option<&PollCount>,
    ends: Ends<'_, impl Future<Output = ()>>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let Ends {
        shutdown,
        close_requested,
        drain,
        peer,
    } = ends;
    tokio::pin!(close_requested);
    let (mut told, mut closing, mut awaiting_first) = (false, false, false);
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait_draining(), if !told => {
                told = true;
                let seen_request = drain.begin();
                if tell_on_drain && !closing {
                    if seen_request {
                        closing = true;
                        graceful(conn.as_mut());
                    } else {
                        awaiting_first = true;
                    }
                }
            }
            () = drain.first_request_while_draining.notified(), if awaiting_first && !closing => {
                closing = true;
                graceful(conn.as_mut());
            }
            () = shutdown.wait(), if !closing => {
                closing = true;
                graceful(conn.as_mut());
            }
            () = &mut close_requested, if !closing => {
                tracing::debug!(?peer, "memory over the limit: closing connection gracefully");
                closing = true;
                graceful(conn.as_mut());
            }
            result = std::future::poll_fn(|cx| {
                if let Some(polls) = polls {
                    polls.next();
                }
                conn.as_mut().poll(cx)
            }) => return result,
        }
    }
}

/// Reads just enough of the stream to tell h2c prior knowledge (the full 24-byte preface)
/// from HTTP/1.1 (the first byte that differs), and hands the stream back with those bytes
/// to be read again. An end of stream before a decision is an error.
async fn sniff_h2(mut io: BoxedIo) -> std::io::Result<(bool, Rewind<BoxedIo>)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    while filled < buf.len() && buf[..filled] == H2_PREFACE[..filled] {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    let h2 = buf[..filled] == H2_PREFACE[..];
    Ok((h2, Rewind::new(Bytes::copy_from_slice(&buf[..filled]), io)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniff(bytes: &'static [u8]) -> std::io::Result<(bool, Vec<u8>)> {
        let (client, server) = tokio::io::duplex(64);
        let (mut client, server): (_, BoxedIo) = (client, Box::new(server));
        client.write_all(bytes).await?;
        drop(client);
        let (h2, mut io) = sniff_h2(server).await?;
        let mut replay = Vec::new();
        io.read_to_end(&mut replay).await?;
        Ok((h2, replay))
    }

    #[tokio::test]
    async fn the_h2_preface_is_told_from_http1_and_every_byte_is_replayed() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00";
        assert_eq!(sniff(h2).await.unwrap(), (true, h2.to_vec()));
        let h1 = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(sniff(h1).await.unwrap(), (false, h1.to_vec()));
        // A request that starts like the preface but is not one is HTTP/1.1.
        assert!(!sniff(b"PRI * HTTP/1.1\r\n").await.unwrap().0);
        assert!(sniff(b"").await.is_err());
        assert!(sniff(b"PRI * HTTP/2").await.is_err());
    }

    #[tokio::test]
    async fn an_h2_connection_opened_during_a_drain_is_served_before_its_goaway() {
        let (trigger, shutdown) = crate::shutdown::channel();
        trigger.begin_draining();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let conn = Arc::new(ConnInfo::new(crate::conn::Binding::Hbone));
        let serving = tokio::spawn(async move {
            let handler = |_req, _conn| async { http::Response::new(crate::body::full("ok")) };
            HttpServer::new(&HttpServerConfig::default())
                .serve(Box::new(server), conn, handler, shutdown)
                .await;
        });

        let (mut sender, driver) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        let driving = tokio::spawn(driver);
        // Told at once, this client would read the GOAWAY first and never send its request.
        let request = || {
            http::Request::get("http://echo/")
                .body(crate::body::empty())
                .unwrap()
        };
        let answer = sender.send_request(request()).await.unwrap();
        assert_eq!(answer.status(), http::StatusCode::OK);
        // Then it is told to go away: the connection ends without the stopping phase.
        tokio::time::timeout(Duration::from_secs(5), driving)
            .await
            .expect("the connection got its GOAWAY and ended")
            .unwrap()
            .unwrap();
        assert!(sender.send_request(request()).await.is_err());
        serving.await.unwrap();
        drop(trigger);
    }
}
