//! The HTTP client side of forwarding: pooled HTTP/1.1 and h2c connections over whatever byte
//! stream the [`Dialer`] opens for a [`ConnTarget`] (TCP, an HBONE tunnel, the ztunnel socket,
//! any of them with TLS originated over it).
//!
//! - HTTP/1.1: one request at a time per connection. [`HttpPool::send`] hands the response
//!   back with the connection's [`Return`]; whoever sees the response body end (the request's
//!   [`UpstreamLease`](super::UpstreamLease)) gives it back to the idle list of its dial path once
//!   the body was read to the end (a body dropped half-read closes it); at most `max_idle_per_endpoint` wait there, each for at most the idle timeout.
//! - h2c: one connection per dial path, multiplexed. It leaves the pool when it closes or stays
//!   unused for the idle timeout; requests already on it finish first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::UpstreamConfig;
use super::dial::{ConnTarget, Dialer};
use super::failure::describe;
use crate::body::Body;
use crate::config::AppProtocol;
use crate::wire::BoxedIo;

/// HTTP/2 keepalive toward h2c backends: the same PING cadence ztunnel and Istio's waypoint use,
/// so a dead backend connection is noticed before a request waits on it.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A response with its connection's way back to the pool ([`HttpPool::send`]).
pub(crate) type Exchange = (Response<Incoming>, Option<Return>);

struct IdleH1 {
    id: u64,
    sender: http1::SendRequest<Body>,
    since: Instant,
}

struct H2Conn {
    id: u64,
    sender: http2::SendRequest<Body>,
    last_used: Instant,
}

/// Every pooled upstream HTTP connection of the process.
pub(crate) struct HttpPool {
    dialer: Dialer,
    idle_timeout: Duration,
    max_idle: usize,
    h1: Mutex<HashMap<ConnTarget, Vec<IdleH1>>>,
    h2: Mutex<HashMap<ConnTarget, H2Conn>>,
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

    /// Sends `req` over a pooled connection for `path`, opening one if needed. With the
    /// response comes the HTTP/1.1 connection's [`Return`], to give back once the body is read
    /// (none for h2c: its connection is shared, and for a protocol switch). The error is a
    /// reason in words.
    pub(crate) async fn send(
        self: &Arc<Self>,
        protocol: AppProtocol,
        path: ConnTarget,
        req: Request<Body>,
    ) -> Result<Exchange, String> {
        match protocol {
            AppProtocol::Http1 => self.send_h1(path, req).await,
            AppProtocol::H2c => self.send_h2(path, req).await,
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        path: ConnTarget,
        mut req: Request<Body>,
    ) -> Result<Exchange, String> {
        while let Some(mut idle) = self.checkout_h1(&path) {
            match idle.sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.pooled_h1(resp, path, idle.id, idle.sender)),
                Err(mut e) => match e.take_message() {
                    // The connection closed before our request went out: another one can
                    // take it unchanged.
                    Some(unsent) => req = unsent,
                    None => return Err(describe(e.error())),
                },
            }
        }
        let io = self.dialer.dial(&path).await?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| describe(&e))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let endpoint = path.endpoint();
        tokio::spawn(drive_h1(
            conn,
            Arc::downgrade(self),
            path.clone(),
            id,
            self.idle_timeout,
        ));
        tracing::trace!(%endpoint, id, "new upstream HTTP/1.1 connection");
        let resp = sender.send_request(req).await.map_err(|e| describe(&e))?;
        Ok(self.pooled_h1(resp, path, id, sender))
    }

    /// The most recently used idle connection of `path` that is still open.
    fn checkout_h1(&self, path: &ConnTarget) -> Option<IdleH1> {
        let mut idle = lock(&self.h1);
        let list = idle.get_mut(path)?;
        let found = loop {
            let Some(conn) = list.pop() else { break None };
            if !conn.sender.is_closed() && conn.since.elapsed() < self.idle_timeout {
                break Some(conn);
            }
        };
        if list.is_empty() {
            idle.remove(path);
        }
        found
    }

    fn pooled_h1(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        path: ConnTarget,
        id: u64,
        sender: http1::SendRequest<Body>,
    ) -> Exchange {
        // After a protocol switch the connection belongs to the tunnel, not the pool.
        let back = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Return {
            pool: Arc::downgrade(self),
            path,
            id,
            sender,
        });
        (resp, back)
    }

    /// Puts a connection whose exchange is complete back on its dial path's idle list.
    fn put_h1(&self, path: ConnTarget, id: u64, sender: http1::SendRequest<Body>) {
        // A zero idle timeout keeps nothing idle: the connection closes now.
        if self.idle_timeout.is_zero() {
            return;
        }
        let mut idle = lock(&self.h1);
        let list = idle.entry(path).or_default();
        if list.len() < self.max_idle {
            list.push(IdleH1 {
                id,
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Drops connection `id` from the idle list when it has waited there for the idle timeout
    /// (its connection then closes). Says when to look again.
    fn expire_h1(&self, path: &ConnTarget, id: u64) -> Duration {
        let mut idle = lock(&self.h1);
        let Some(list) = idle.get_mut(path) else {
            return self.idle_timeout;
        };
        let Some(pos) = list.iter().position(|c| c.id == id) else {
            return self.idle_timeout;
        };
        let waited = list[pos].since.elapsed();
        if waited < self.idle_timeout {
            return self.idle_timeout - waited;
        }
        list.remove(pos);
        if list.is_empty() {
            idle.remove(path);
        }
        self.idle_timeout
    }

    async fn send_h2(
        self: &Arc<Self>,
        path: ConnTarget,
        req: Request<Body>,
    ) -> Result<Exchange, String> {
        let mut sender = match self.checkout_h2(&path) {
            Some(sender) => sender,
            None => self.connect_h2(path).await?,
        };
        sender.ready().await.map_err(|e| describe(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| describe(&e))?;
        Ok((resp, None))
    }

    fn checkout_h2(&self, path: &ConnTarget) -> Option<http2::SendRequest<Body>> {
        let mut conns = lock(&self.h2);
        let conn = conns.get_mut(path)?;
        if conn.sender.is_closed() {
            conns.remove(path);
            return None;
        }
        conn.last_used = Instant::now();
        Some(conn.sender.clone())
    }

    async fn connect_h2(
        self: &Arc<Self>,
        path: ConnTarget,
    ) -> Result<http2::SendRequest<Body>, String> {
        let io = self.dialer.dial(&path).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| describe(&e))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Two requests racing to a fresh dial path may both connect; the later one wins the slot
        // and the other connection closes once its request is done.
        lock(&self.h2).insert(
            path.clone(),
            H2Conn {
                id,
                sender: sender.clone(),
                last_used: Instant::now(),
            },
        );
        tokio::spawn(drive_h2(
            conn,
            Arc::downgrade(self),
            path,
            id,
            self.idle_timeout,
        ));
        Ok(sender)
    }

    /// Drops the pool's handle on h2c connection `id` if it is still the one for `path` and,
    /// with `idle`, has not been used for that long; with every handle gone, hyper closes the
    /// connection after its last stream. Returns how long until it would be idle enough when
    /// it was kept.
    fn release_h2(&self, path: &ConnTarget, id: u64, idle: Option<Duration>) -> Option<Duration> {
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
    path: ConnTarget,
    id: u64,
    idle_timeout: Duration,
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
                next_check = pool.expire_h1(&path, id);
            }
        }
    }
}

/// Runs one h2c connection to its end, taking it out of the pool when it has been idle too long
/// or when it closes.
async fn drive_h2(
    conn: http2::Connection<TokioIo<BoxedIo>, Body, TokioExecutor>,
    pool: Weak<HttpPool>,
    path: ConnTarget,
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
    path: ConnTarget,
    id: u64,
    sender: http1::SendRequest<Body>,
}

impl Return {
    pub(crate) fn give_back(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if self.sender.is_ready() {
            pool.put_h1(self.path, self.id, self.sender);
            return;
        }
        // The connection task has not caught up with the end of the message yet (or the
        // request body is still going): pool it once it can take the next request. Without a
        // runtime (a body dropped at shutdown) the connection just closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut sender = self.sender;
        let (path, id) = (self.path, self.id);
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put_h1(path, id, sender);
            }
        });
    }
}
