//! The HTTP client side of forwarding: pooled HTTP/1.1 and h2c connections over whatever byte
//! stream the [`Dialer`] opens for a [`DialPath`] (TCP, an HBONE tunnel, the ztunnel socket).
//!
//! - HTTP/1.1: one request at a time per connection. [`HttpPool::send`] hands the response
//!   back with the connection's [`Return`]; whoever sees the response body end (the request's
//!   [`UpstreamLease`](super::UpstreamLease)) gives it back to the idle list of its dial path once
//!   the body was read to the end (a body dropped half-read closes it); at most `max_idle_per_endpoint` wait there, each for at most the idle timeout.
//! - h2c: one connection per dial path, multiplexed. It leaves the pool when it closes or stays
//!   unused for the idle timeout; requests already on it finish first.
//!
//! Each request brings its backend's [`BackendLimits`] (DestinationRule `connectionPool`, see
//! `limits`): an HTTP/1.1 connection is opened only below the backend's `maxConnections` and
//! holds a unit of it until it closes; a request that finds none free waits as pending. Each
//! connection keeps the settings it was opened with: its idle timeout, and how many requests
//! and how long it may serve before it leaves the pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::UpstreamConfig;
use super::dial::{DialPath, Dialer};
use super::failure::describe;
use super::limits::{BackendLimits, Breaker, ConnSettings, Limit, Slot};
use crate::body::Body;
use crate::config::AppProtocol;
use crate::wire::BoxedIo;

/// HTTP/2 keepalive toward h2c backends: the same PING cadence ztunnel and Istio's waypoint use,
/// so a dead backend connection is noticed before a request waits on it.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A response with its connection's way back to the pool ([`HttpPool::send`]).
pub(crate) type Exchange = (Response<Incoming>, Option<Return>);

/// Why [`HttpPool::send`] got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The exchange failed; the reason in words.
    Failed(String),
    /// A circuit breaker of the backend refused the request (503 `UO`).
    Overflow(Limit),
}

impl From<String> for SendError {
    fn from(reason: String) -> Self {
        SendError::Failed(reason)
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Failed(reason) => f.write_str(reason),
            SendError::Overflow(limit) => write!(f, "upstream overflow ({})", limit.field()),
        }
    }
}

/// What an HTTP/1.1 connection carries besides its sender: the backend whose `maxConnections`
/// it counts toward, and how long and how much it may serve.
struct H1Life {
    breaker: Arc<Breaker>,
    settings: ConnSettings,
    idle_timeout: Duration,
    born: Instant,
    served: u32,
}

struct IdleH1 {
    id: u64,
    sender: http1::SendRequest<Body>,
    since: Instant,
    life: H1Life,
}

struct H2Conn {
    id: u64,
    sender: http2::SendRequest<Body>,
    last_used: Instant,
    born: Instant,
    served: u32,
    settings: ConnSettings,
}

/// Every pooled upstream HTTP connection of the process.
pub(crate) struct HttpPool {
    dialer: Dialer,
    idle_timeout: Duration,
    max_idle: usize,
    h1: Mutex<HashMap<DialPath, Vec<IdleH1>>>,
    h2: Mutex<HashMap<DialPath, H2Conn>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the map valid: keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HttpPool {
    pub(crate) fn new(dialer: Dialer, cfg: &UpstreamConfig) -> Arc<Self> {
        Arc::new(HttpPool {
            dialer,
            idle_timeout: cfg.idle_timeout,
            max_idle: cfg.max_idle_per_endpoint,
            h1: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    pub(crate) fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Idle HTTP/1.1 connections and open HTTP/2 connections held now.
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (
            lock(&self.h1).values().map(Vec::len).sum(),
            lock(&self.h2).len(),
        )
    }

    /// Sends `req` over a pooled connection for `path`, opening one if needed, within the
    /// backend's `limits`. With the response comes the HTTP/1.1 connection's [`Return`], to
    /// give back once the body is read (none for h2c: its connection is shared, and for a
    /// protocol switch).
    pub(crate) async fn send(
        self: &Arc<Self>,
        protocol: AppProtocol,
        path: DialPath,
        req: Request<Body>,
        limits: &BackendLimits,
    ) -> Result<Exchange, SendError> {
        match protocol {
            AppProtocol::Http1 => self.send_h1(path, req, limits).await,
            AppProtocol::H2c => Ok(self.send_h2(path, req, limits).await?),
        }
    }

    /// HTTP/1.1: an idle connection of `path`, else a new one while the backend is below
    /// `maxConnections`, else wait (as one of at most `http1MaxPendingRequests`) until one of
    /// its connections goes idle or closes.
    async fn send_h1(
        self: &Arc<Self>,
        path: DialPath,
        mut req: Request<Body>,
        limits: &BackendLimits,
    ) -> Result<Exchange, SendError> {
        let mut pending: Option<Slot> = None;
        let slot = loop {
            // Enabled before looking, so a connection freed between the look and the wait
            // still wakes us.
            let freed = limits.breaker.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            while let Some(mut idle) = self.checkout_h1(&path) {
                match idle.sender.try_send_request(req).await {
                    Ok(resp) => {
                        return Ok(self.pooled_h1(resp, path, idle.id, idle.sender, idle.life));
                    }
                    Err(mut e) => match e.take_message() {
                        // The connection closed before our request went out: another one can
                        // take it unchanged.
                        Some(unsent) => req = unsent,
                        None => return Err(describe(e.error()).into()),
                    },
                }
            }
            if let Some(slot) = limits.try_connection() {
                break slot;
            }
            if pending.is_none() {
                pending = Some(
                    limits
                        .take_or_overflow(Limit::Pending)
                        .ok_or(SendError::Overflow(Limit::Pending))?,
                );
            }
            // Every connection of the backend is busy, or idle toward other endpoints: close
            // one of the latter so this endpoint can have it.
            self.evict_idle_h1(&limits.breaker, &path);
            freed.await;
        };
        drop(pending);
        let settings = limits.limits.conn;
        let io = self.dialer.dial(&path, &settings).await?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| describe(&e))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let endpoint = path.endpoint();
        let idle_timeout = settings.idle_timeout.unwrap_or(self.idle_timeout);
        tokio::spawn(drive_h1(
            conn,
            Arc::downgrade(self),
            path.clone(),
            id,
            idle_timeout,
            slot,
        ));
        tracing::trace!(%endpoint, id, "new upstream HTTP/1.1 connection");
        let resp = sender.send_request(req).await.map_err(|e| describe(&e))?;
        let life = H1Life {
            breaker: Arc::clone(&limits.breaker),
            settings,
            idle_timeout,
            born: Instant::now(),
            served: 0,
        };
        Ok(self.pooled_h1(resp, path, id, sender, life))
    }

    /// The most recently used idle connection of `path` that is still open and may serve.
    fn checkout_h1(&self, path: &DialPath) -> Option<IdleH1> {
        let mut idle = lock(&self.h1);
        let list = idle.get_mut(path)?;
        let found = loop {
            let Some(conn) = list.pop() else { break None };
            if !conn.sender.is_closed()
                && conn.since.elapsed() < conn.life.idle_timeout
                && conn
                    .life
                    .settings
                    .may_serve(conn.life.served, conn.life.born)
            {
                break Some(conn);
            }
        };
        if list.is_empty() {
            idle.remove(path);
        }
        found
    }

    /// Closes one idle connection of `breaker`'s backend that is not for `path`, if any.
    fn evict_idle_h1(&self, breaker: &Arc<Breaker>, path: &DialPath) {
        let mut idle = lock(&self.h1);
        let found = idle.iter_mut().find_map(|(p, list)| {
            if p == path {
                return None;
            }
            let at = list
                .iter()
                .position(|c| Arc::ptr_eq(&c.life.breaker, breaker))?;
            Some((p.clone(), list.remove(at)))
        });
        if let Some((p, conn)) = found {
            if idle.get(&p).is_some_and(Vec::is_empty) {
                idle.remove(&p);
            }
            // Dropping the only sender ends the connection; its task then gives the slot back.
            drop(conn);
        }
    }

    fn pooled_h1(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        path: DialPath,
        id: u64,
        sender: http1::SendRequest<Body>,
        mut life: H1Life,
    ) -> Exchange {
        life.served = life.served.saturating_add(1);
        // After a protocol switch the connection belongs to the tunnel, not the pool.
        let back = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Return {
            pool: Arc::downgrade(self),
            path,
            id,
            sender,
            life,
        });
        (resp, back)
    }

    /// Puts a connection whose exchange is complete back on its dial path's idle list, unless
    /// it has served its share (`maxRequestsPerConnection`, `maxConnectionDuration`); either
    /// way a request waiting for a connection of its backend may now go on.
    fn put_h1(&self, path: DialPath, id: u64, sender: http1::SendRequest<Body>, life: H1Life) {
        let breaker = Arc::clone(&life.breaker);
        // A zero idle timeout keeps nothing idle: the connection closes now.
        if !life.idle_timeout.is_zero() && life.settings.may_serve(life.served, life.born) {
            let mut idle = lock(&self.h1);
            let list = idle.entry(path).or_default();
            if list.len() < self.max_idle {
                list.push(IdleH1 {
                    id,
                    sender,
                    since: Instant::now(),
                    life,
                });
            }
        }
        breaker.free();
    }

    /// Drops connection `id` from the idle list when it has waited there for its idle timeout
    /// (its connection then closes). Says when to look again.
    fn expire_h1(&self, path: &DialPath, id: u64, idle_timeout: Duration) -> Duration {
        let mut idle = lock(&self.h1);
        let Some(list) = idle.get_mut(path) else {
            return idle_timeout;
        };
        let Some(pos) = list.iter().position(|c| c.id == id) else {
            return idle_timeout;
        };
        let waited = list[pos].since.elapsed();
        if waited < idle_timeout {
            return idle_timeout - waited;
        }
        list.remove(pos);
        if list.is_empty() {
            idle.remove(path);
        }
        idle_timeout
    }

    async fn send_h2(
        self: &Arc<Self>,
        path: DialPath,
        req: Request<Body>,
        limits: &BackendLimits,
    ) -> Result<Exchange, String> {
        let settings = limits.limits.conn;
        let mut sender = match self.checkout_h2(&path) {
            Some(sender) => sender,
            None => self.connect_h2(path, limits, settings).await?,
        };
        sender.ready().await.map_err(|e| describe(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| describe(&e))?;
        Ok((resp, None))
    }

    /// The open h2c connection of `path`, counting one more request on it. A connection that
    /// has served its share leaves the pool (requests on it finish) and the caller opens
    /// another.
    fn checkout_h2(&self, path: &DialPath) -> Option<http2::SendRequest<Body>> {
        let mut conns = lock(&self.h2);
        let conn = conns.get_mut(path)?;
        if conn.sender.is_closed() || !conn.settings.may_serve(conn.served, conn.born) {
            conns.remove(path);
            return None;
        }
        conn.last_used = Instant::now();
        conn.served = conn.served.saturating_add(1);
        let sender = conn.sender.clone();
        if !conn.settings.may_serve(conn.served, conn.born) {
            conns.remove(path);
        }
        Some(sender)
    }

    async fn connect_h2(
        self: &Arc<Self>,
        path: DialPath,
        limits: &BackendLimits,
        settings: ConnSettings,
    ) -> Result<http2::SendRequest<Body>, String> {
        // Counted toward `maxConnections`, never refused (see `limits`).
        let slot = limits.breaker.count(Limit::Connections);
        let io = self.dialer.dial(&path, &settings).await?;
        let (interval, timeout) = settings
            .h2_keepalive
            .unwrap_or((H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT));
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| describe(&e))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn_entry = H2Conn {
            id,
            sender: sender.clone(),
            last_used: Instant::now(),
            born: Instant::now(),
            served: 1,
            settings,
        };
        // Two requests racing to a fresh dial path may both connect; the later one wins the slot
        // and the other connection closes once its request is done. A connection allowed a
        // single request is never pooled.
        if settings.may_serve(1, conn_entry.born) {
            lock(&self.h2).insert(path.clone(), conn_entry);
        }
        let idle_timeout = settings.idle_timeout.unwrap_or(self.idle_timeout);
        tokio::spawn(drive_h2(
            conn,
            Arc::downgrade(self),
            path,
            id,
            idle_timeout,
            slot,
        ));
        Ok(sender)
    }

    /// Drops the pool's handle on h2c connection `id` if it is still the one for `path` and,
    /// with `idle`, has not been used for that long; with every handle gone, hyper closes the
    /// connection after its last stream. Returns how long until it would be idle enough when
    /// it was kept.
    fn release_h2(&self, path: &DialPath, id: u64, idle: Option<Duration>) -> Option<Duration> {
        let mut conns = lock(&self.h2);
        let conn = conns.get(path).filter(|c| c.id == id)?;
        if let Some(idle) = idle {
            let unused = conn.last_used.elapsed();
            if unused < idle {
                return Some(idle - unused);
            }
        }
        conns.remove(path);
        None
    }
}

/// Runs one HTTP/1.1 connection to its end, dropping it from the idle list when it waited there
/// too long (which ends it).
async fn drive_h1(
    conn: http1::Connection<TokioIo<BoxedIo>, Body>,
    pool: Weak<HttpPool>,
    path: DialPath,
    id: u64,
    idle_timeout: Duration,
    // Counts the connection toward its backend's `maxConnections` for as long as it is open.
    _slot: Slot,
) {
    let conn = conn.with_upgrades();
    tokio::pin!(conn);
    let mut next_check = idle_timeout;
    // With a zero idle timeout nothing waits in the idle list (see `put_h1`): no reaping.
    if idle_timeout.is_zero() {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %path.endpoint(), error = %e, "HTTP/1.1 upstream connection ended");
        }
        return;
    }
    loop {
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(endpoint = %path.endpoint(), error = %e, "HTTP/1.1 upstream connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(next_check) => {
                let Some(pool) = pool.upgrade() else { continue };
                next_check = pool.expire_h1(&path, id, idle_timeout);
            }
        }
    }
}

/// Runs one h2c connection to its end, taking it out of the pool when it has been idle too long
/// or when it closes.
async fn drive_h2(
    conn: http2::Connection<TokioIo<BoxedIo>, Body, TokioExecutor>,
    pool: Weak<HttpPool>,
    path: DialPath,
    id: u64,
    idle_timeout: Duration,
    _slot: Slot,
) {
    tokio::pin!(conn);
    let mut pooled = true;
    let mut next_check = idle_timeout;
    loop {
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(endpoint = %path.endpoint(), error = %e, "h2c upstream connection ended");
                }
                break;
            }
            _ = tokio::time::sleep(next_check), if pooled => {
                match pool.upgrade().and_then(|p| p.release_h2(&path, id, Some(idle_timeout))) {
                    Some(remaining) => next_check = remaining,
                    None => pooled = false,
                }
            }
        }
    }
    if pooled && let Some(pool) = pool.upgrade() {
        pool.release_h2(&path, id, None);
    }
}

/// An HTTP/1.1 connection to hand back once its response is complete; dropped instead, the
/// connection closes (its state is unknown).
pub(crate) struct Return {
    pool: Weak<HttpPool>,
    path: DialPath,
    id: u64,
    sender: http1::SendRequest<Body>,
    life: H1Life,
}

impl Return {
    pub(crate) fn give_back(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if self.sender.is_ready() {
            pool.put_h1(self.path, self.id, self.sender, self.life);
            return;
        }
        // The connection task has not caught up with the end of the message yet (or the
        // request body is still going): pool it once it can take the next request. Without a
        // runtime (a body dropped at shutdown) the connection just closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut sender = self.sender;
        let (path, id, life) = (self.path, self.id, self.life);
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put_h1(path, id, sender, life);
            }
        });
    }
}
