//! The HBONE client: mTLS HTTP/2 connections to destination ztunnels on port 15008, pooled and
//! multiplexed, each tunnel one `CONNECT` stream (`docs/wire.md`).
//!
//! Connections are keyed by (destination `ip:15008`, expected server identities) and carry at
//! most [`HboneClientOptions::max_streams_per_connection`] tunnels; the next tunnel opens a new
//! connection. Concurrent requests for a key without a connection wait for one handshake instead
//! of each starting their own. A connection leaves the pool when it breaks, when the server does
//! not answer a PING in time, or when it has carried no tunnel for the idle timeout.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::TlsConnector;

use super::dial::TunnelSource;
use crate::tls::{self, CertStore, ExpectedIdentity};
pub use crate::wire::hbone::HBONE_PORT;
use crate::wire::hbone::{
    H2Stream, MAX_FRAME_SIZE as MAX_FRAME, MAX_WINDOW_SIZE as MAX_WINDOW,
    MIN_FRAME_SIZE as MIN_FRAME,
};

/// HBONE client settings. The defaults are ztunnel's (`docs/wire.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HboneClientOptions {
    /// The port destination ztunnels accept HBONE on ([`HBONE_PORT`]; another value only for
    /// tests and non-standard deployments).
    pub port: u16,
    /// TCP connect, TLS and HTTP/2 handshakes together.
    pub connect_timeout: Duration,
    /// A connection that carried no tunnel for this long is closed (5 min; zero disables).
    pub idle_timeout: Duration,
    /// Tunnels per connection before another connection is opened (100).
    pub max_streams_per_connection: usize,
    /// HTTP/2 stream receive window (4 MiB).
    pub stream_window: u32,
    /// HTTP/2 connection receive window (16 MiB).
    pub connection_window: u32,
    /// Largest HTTP/2 frame accepted (1 MiB).
    pub max_frame_size: u32,
    /// Largest header list accepted (16 KiB).
    pub max_header_list_size: u32,
    /// How often an HTTP/2 PING checks the connection (10 s; zero disables keepalive).
    pub keepalive_interval: Duration,
    /// A PING unanswered for this long closes the connection (20 s).
    pub keepalive_timeout: Duration,
}

impl Default for HboneClientOptions {
    fn default() -> Self {
        HboneClientOptions {
            port: HBONE_PORT,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_streams_per_connection: 100,
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
            max_header_list_size: 16 * 1024,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Why a tunnel could not be opened. Cloned to every request that waited on the same handshake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HboneError {
    /// TCP to `<ip>:15008` failed.
    #[error("HBONE connect to {addr} failed: {reason}")]
    Connect {
        /// The ztunnel address dialled.
        addr: SocketAddr,
        /// Why, in words.
        reason: String,
    },
    /// The TLS handshake failed; a server identity other than the expected one lands here, with
    /// both identities named in the reason.
    #[error("HBONE TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// The ztunnel address dialled.
        addr: SocketAddr,
        /// Why, in words.
        reason: String,
    },
    /// The HTTP/2 connection failed or broke before the tunnel was open.
    #[error("HBONE HTTP/2 to {addr} failed: {reason}")]
    Http2 {
        /// The ztunnel address dialled.
        addr: SocketAddr,
        /// Why, in words.
        reason: String,
    },
    /// The ztunnel answered the CONNECT with another status than 200.
    #[error("HBONE CONNECT to {target} refused: {status}")]
    Refused {
        /// The tunnel's authority (endpoint ip:port).
        target: SocketAddr,
        /// The status the ztunnel answered.
        status: StatusCode,
    },
    /// The handshakes took longer than the connect timeout.
    #[error("HBONE connect to {addr} timed out after {ms}ms")]
    Timeout {
        /// The ztunnel address dialled.
        addr: SocketAddr,
        /// The limit, in milliseconds.
        ms: u128,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    identities: Vec<ExpectedIdentity>,
}

type Pending = Arc<OnceCell<Result<Arc<Conn>, HboneError>>>;

#[derive(Default)]
struct Entry {
    conns: Vec<Arc<Conn>>,
    /// The handshake under way for this key, shared by every request that found no room.
    pending: Option<Pending>,
}

/// One pooled HTTP/2 connection to a ztunnel.
struct Conn {
    id: u64,
    sender: h2::client::SendRequest<Bytes>,
    active: AtomicUsize,
    broken: AtomicBool,
    last_used: Mutex<Instant>,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Acquire)
    }
}

/// Pooled HBONE connections, shared by every request. Build one per process (it holds the
/// workload certificates used as client identity).
pub struct HbonePool {
    certs: Arc<CertStore>,
    opts: HboneClientOptions,
    entries: Mutex<HashMap<PoolKey, Entry>>,
    next_id: AtomicU64,
}

impl fmt::Debug for HbonePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HbonePool")
            .field("opts", &self.opts)
            .field("connections", &self.connections())
            .finish()
    }
}

impl HbonePool {
    /// A pool presenting the certificates of `certs` (read again for each new connection, so
    /// rotation applies to new connections).
    pub fn new(certs: Arc<CertStore>, opts: HboneClientOptions) -> Arc<Self> {
        Arc::new(HbonePool {
            certs,
            opts,
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// The settings of this pool.
    pub fn options(&self) -> &HboneClientOptions {
        &self.opts
    }

    /// How many HTTP/2 connections the pool holds now.
    pub fn connections(&self) -> usize {
        self.lock().values().map(|e| e.conns.len()).sum()
    }

    /// Opens a tunnel to `target` (endpoint ip:port) through the ztunnel at `<target ip>:15008`
    /// ([`HboneClientOptions::port`]), whose certificate must match one of `identities`. The
    /// CONNECT carries `baggage`, `forwarded` and `traceparent` from `source`.
    pub async fn connect(
        self: &Arc<Self>,
        target: SocketAddr,
        identities: &[ExpectedIdentity],
        source: &TunnelSource,
    ) -> Result<HboneStream, HboneError> {
        let via = SocketAddr::new(target.ip(), self.opts.port);
        self.connect_via(via, target, identities, source).await
    }

    /// Opens a tunnel to `target` through the HBONE peer at `via`, which need not be the
    /// target's own ztunnel: a client ztunnel reaches a Service (`target` = VIP:port) through its
    /// waypoint this way (`via` = `<waypoint ip>:15008`).
    pub async fn connect_via(
        self: &Arc<Self>,
        via: SocketAddr,
        target: SocketAddr,
        identities: &[ExpectedIdentity],
        source: &TunnelSource,
    ) -> Result<HboneStream, HboneError> {
        let key = PoolKey {
            addr: via,
            identities: identities.to_vec(),
        };
        let conn = self.checkout(&key).await?;
        let slot = Slot { conn: conn.clone() };
        let stream = open_tunnel(&conn, key.addr, target, source).await;
        if !conn.usable() {
            self.remove(&key, conn.id);
        }
        Ok(HboneStream {
            inner: stream?,
            _slot: slot,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Entry>> {
        // A panic elsewhere while holding the lock leaves the map valid: keep using it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection with a free stream slot (taken), connecting when none has room.
    async fn checkout(self: &Arc<Self>, key: &PoolKey) -> Result<Arc<Conn>, HboneError> {
        loop {
            let pending = {
                let mut entries = self.lock();
                let entry = entries.entry(key.clone()).or_default();
                entry.conns.retain(|c| c.usable());
                if let Some(conn) = entry.conns.iter().find(|c| self.reserve(c)) {
                    return Ok(conn.clone());
                }
                entry
                    .pending
                    .get_or_insert_with(|| Arc::new(OnceCell::new()))
                    .clone()
            };
            let result = pending
                .get_or_init(|| self.establish(key.clone(), pending.clone()))
                .await
                .clone();
            let conn = result?;
            let reserved = {
                let _entries = self.lock();
                self.reserve(&conn)
            };
            if reserved {
                return Ok(conn);
            }
            // Full (or already broken) before our turn: look again, maybe open another.
        }
    }

    /// Takes a stream slot on `conn`; called with the pool lock held so idle reaping and
    /// checkouts cannot cross.
    fn reserve(&self, conn: &Conn) -> bool {
        if !conn.usable() {
            return false;
        }
        // Tunnels give their slot back without the lock, so the increment must be atomic too.
        let max = self.opts.max_streams_per_connection;
        conn.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Runs one handshake for `key` and publishes its connection to the pool.
    async fn establish(
        self: &Arc<Self>,
        key: PoolKey,
        pending: Pending,
    ) -> Result<Arc<Conn>, HboneError> {
        let limit = self.opts.connect_timeout;
        let result = match tokio::time::timeout(limit, self.handshake(&key)).await {
            Ok(r) => r,
            Err(_) => Err(HboneError::Timeout {
                addr: key.addr,
                ms: limit.as_millis(),
            }),
        };
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        if entry
            .pending
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &pending))
        {
            entry.pending = None;
        }
        match &result {
            Ok(conn) => entry.conns.push(conn.clone()),
            Err(e) => {
                tracing::warn!(addr = %key.addr, error = %e, "HBONE connection failed");
                if entry.conns.is_empty() && entry.pending.is_none() {
                    entries.remove(&key);
                }
            }
        }
        result
    }

    async fn handshake(self: &Arc<Self>, key: &PoolKey) -> Result<Arc<Conn>, HboneError> {
        let addr = key.addr;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| HboneError::Connect {
                addr,
                reason: super::failure::describe(&e),
            })?;
        // Best effort: a socket that refuses TCP_NODELAY still works, only slower.
        let _ = tcp.set_nodelay(true);
        let certs = self.certs.current();
        let config =
            tls::client_config(&certs, key.identities.clone()).map_err(|e| HboneError::Tls {
                addr,
                reason: e.to_string(),
            })?;
        // ztunnel sends no SNI; the client config says so, the name only satisfies the API.
        let name = rustls_pki_types::ServerName::from(addr.ip());
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| HboneError::Tls {
                addr,
                reason: tls_reason(&e),
            })?;
        // h2 panics on settings outside RFC 9113 §6.5.2, so options are clamped first.
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(self.opts.stream_window.min(MAX_WINDOW))
            .initial_connection_window_size(self.opts.connection_window.min(MAX_WINDOW))
            .max_frame_size(self.opts.max_frame_size.clamp(MIN_FRAME, MAX_FRAME))
            .max_header_list_size(self.opts.max_header_list_size)
            .enable_push(false)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| HboneError::Http2 {
                addr,
                reason: e.to_string(),
            })?;
        let ping = connection.ping_pong();
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sender,
            active: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
        });
        tokio::spawn(drive(
            connection,
            ping,
            Arc::downgrade(self),
            key.clone(),
            conn.clone(),
        ));
        tracing::debug!(%addr, id = conn.id, "HBONE connection established");
        Ok(conn)
    }

    fn remove(&self, key: &PoolKey, id: u64) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            entry.conns.retain(|c| c.id != id);
            if entry.conns.is_empty() && entry.pending.is_none() {
                entries.remove(key);
            }
        }
    }

    /// Takes `conn` out of the pool when it carried no tunnel for the idle timeout; otherwise
    /// says how long until it might.
    fn reap_if_idle(&self, key: &PoolKey, conn: &Conn) -> Option<Duration> {
        let entries = self.lock();
        if conn.active.load(Ordering::Acquire) > 0 {
            return Some(self.opts.idle_timeout);
        }
        let unused = conn
            .last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if unused < self.opts.idle_timeout {
            return Some(self.opts.idle_timeout - unused);
        }
        // Under the lock, so no checkout can take a slot between the check and the removal.
        conn.broken.store(true, Ordering::Release);
        drop(entries);
        self.remove(key, conn.id);
        None
    }
}

/// The reason a TLS handshake failed, from the rustls error inside the I/O error when there is
/// one (an identity mismatch names both identities there).
fn tls_reason(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            other.to_string()
        }
        Some(r) => r.to_string(),
        None => super::failure::describe(e),
    }
}

/// Sends the CONNECT for `target` on `conn` and waits for the answer.
async fn open_tunnel(
    conn: &Conn,
    addr: SocketAddr,
    target: SocketAddr,
    source: &TunnelSource,
) -> Result<H2Stream, HboneError> {
    let h2_err = |e: h2::Error| {
        if e.is_io() || e.is_go_away() {
            // The connection failed under us (not just this stream): later tunnels must not
            // pick it.
            conn.broken.store(true, Ordering::Release);
        }
        HboneError::Http2 {
            addr,
            reason: e.to_string(),
        }
    };
    let mut req = Request::builder()
        .method(Method::CONNECT)
        // SocketAddr displays IPv6 as `[ip]:port`, the authority form HBONE uses.
        .uri(target.to_string())
        .header("traceparent", source.traceparent_or_fresh());
    if let Some(baggage) = &source.baggage {
        req = req.header("baggage", baggage);
    }
    if let Some(forwarded) = source.forwarded() {
        req = req.header("forwarded", forwarded);
    }
    let req = req.body(()).map_err(|e| HboneError::Http2 {
        addr,
        reason: format!("cannot build the CONNECT request: {e}"),
    })?;
    let mut sender = conn.sender.clone().ready().await.map_err(h2_err)?;
    let (response, send) = sender.send_request(req, false).map_err(h2_err)?;
    let response = response.await.map_err(h2_err)?;
    if response.status() != StatusCode::OK {
        return Err(HboneError::Refused {
            target,
            status: response.status(),
        });
    }
    Ok(H2Stream::new(send, response.into_body()))
}

/// Runs one HBONE connection: the HTTP/2 state machine, the PING keepalive and the idle reaper.
async fn drive<T>(
    mut connection: h2::client::Connection<T, Bytes>,
    mut ping: Option<h2::PingPong>,
    pool: Weak<HbonePool>,
    key: PoolKey,
    conn: Arc<Conn>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (interval, pong_timeout, idle) = match pool.upgrade() {
        Some(p) => (
            p.opts.keepalive_interval,
            p.opts.keepalive_timeout,
            p.opts.idle_timeout,
        ),
        None => return,
    };
    let (keepalive, reaping) = (!interval.is_zero(), !idle.is_zero());
    let mut next_ping = tokio::time::Instant::now() + interval;
    let mut pong_deadline: Option<tokio::time::Instant> = None;
    let mut next_idle_check = tokio::time::Instant::now() + idle;
    let reason = loop {
        tokio::select! {
            result = &mut connection => {
                break match result {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                };
            }
            _ = tokio::time::sleep_until(next_ping), if keepalive && pong_deadline.is_none() => {
                if let Some(pp) = ping.as_mut() && pp.send_ping(h2::Ping::opaque()).is_ok() {
                    pong_deadline = Some(tokio::time::Instant::now() + pong_timeout);
                }
                next_ping = tokio::time::Instant::now() + interval;
            }
            pong = std::future::poll_fn(|cx| match ping.as_mut() {
                Some(pp) => pp.poll_pong(cx),
                None => Poll::Pending,
            }), if pong_deadline.is_some() => {
                if pong.is_err() {
                    break "PING failed".to_owned();
                }
                pong_deadline = None;
                next_ping = tokio::time::Instant::now() + interval;
            }
            _ = sleep_until_opt(pong_deadline) => {
                break format!("no PING answer within {}s", pong_timeout.as_secs());
            }
            _ = tokio::time::sleep_until(next_idle_check), if reaping => {
                let Some(pool) = pool.upgrade() else { break "pool dropped".to_owned() };
                match pool.reap_if_idle(&key, &conn) {
                    Some(wait) => next_idle_check = tokio::time::Instant::now() + wait,
                    None => break "idle".to_owned(),
                }
            }
        }
    };
    conn.broken.store(true, Ordering::Release);
    if let Some(pool) = pool.upgrade() {
        pool.remove(&key, conn.id);
    }
    tracing::debug!(addr = %key.addr, id = conn.id, %reason, "HBONE connection ended");
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Gives a tunnel's stream slot back when the tunnel ends.
struct Slot {
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self
            .conn
            .last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One open HBONE tunnel: the raw bytes to and from the endpoint.
pub struct HboneStream {
    inner: H2Stream,
    _slot: Slot,
}

impl fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HboneStream")
            .field("connection", &self._slot.conn.id)
            .finish()
    }
}

impl AsyncRead for HboneStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
