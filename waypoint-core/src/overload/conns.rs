//! Connection admission and the registry of live HTTP connections.
//!
//! Admission is two counters checked at `accept()`: the listener's and the process's. A
//! connection takes a slot in both or in neither; its [`ConnPermit`] gives them back when the
//! connection ends, whatever way it ends. Refusing is closing the socket: nothing has been read,
//! so nothing is half-served, and the client (a ztunnel) sees a reset it already handles.
//!
//! The registry is what lets the memory watermark close connections *gracefully*: each HTTP
//! connection enters it with a count of requests being handled (zero: idle keep-alive) and a
//! way to be asked to close, which the HTTP server turns into `Connection: close` or a GOAWAY.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use super::Overload;

/// Refusals are logged at most once per this many milliseconds per listener (with the number
/// left unlogged), so a connection flood cannot flood the log too.
const REFUSAL_LOG_INTERVAL_MS: u64 = 1000;

/// Why a connection was refused, the `reason` label of `waypoint_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The listener holds `--max-connections-per-listener` connections.
    #[error("the listener's connection limit is reached")]
    ListenerLimit,
    /// The process holds `--max-connections` connections.
    #[error("the process's connection limit is reached")]
    TotalLimit,
    /// Resident memory is over `--memory-limit`.
    #[error("resident memory is over the memory limit")]
    Memory,
}

impl Refusal {
    /// The metric label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::ListenerLimit => "listener_limit",
            Refusal::TotalLimit => "total_limit",
            Refusal::Memory => "memory",
        }
    }
}

/// Admits or refuses the connections of one listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ListenerGate(Arc<Gate>);

#[derive(Debug)]
struct Gate {
    overload: Arc<Overload>,
    listener: String,
    limit: Option<usize>,
    open: AtomicUsize,
    gauge: Gauge,
    started: Instant,
    last_log_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl ListenerGate {
    pub(super) fn new(overload: Arc<Overload>, listener: String, limit: Option<usize>) -> Self {
        overload.metrics.init_listener(&listener);
        let gauge = overload.metrics.open_gauge(&listener);
        ListenerGate(Arc::new(Gate {
            overload,
            listener,
            limit,
            open: AtomicUsize::new(0),
            gauge,
            started: Instant::now(),
            last_log_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }))
    }

    /// The listener's label.
    pub fn listener(&self) -> &str {
        &self.0.listener
    }

    /// Connections of this listener open now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Relaxed)
    }

    /// Takes a slot for one new connection, or says why not. A refusal is counted and logged
    /// (rate-limited) here; the caller only closes the connection.
    pub(crate) fn admit(&self) -> Result<ConnPermit, Refusal> {
        let gate = &self.0;
        let overload = &gate.overload;
        let refused = |why: Refusal| {
            overload.metrics.inc_refused(&gate.listener, why.reason());
            self.log_refusal(why);
            Err(why)
        };
        if overload.memory_overloaded() {
            return refused(Refusal::Memory);
        }
        if !take(&gate.open, gate.limit) {
            return refused(Refusal::ListenerLimit);
        }
        if !take(&overload.open_connections, overload.opts.max_connections) {
            gate.open.fetch_sub(1, Ordering::Relaxed);
            return refused(Refusal::TotalLimit);
        }
        gate.gauge.inc();
        Ok(ConnPermit(self.0.clone()))
    }

    fn log_refusal(&self, why: Refusal) {
        let gate = &self.0;
        let now = gate.started.elapsed().as_millis() as u64 + REFUSAL_LOG_INTERVAL_MS;
        let last = gate.last_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < REFUSAL_LOG_INTERVAL_MS
            || gate
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            gate.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let unlogged = gate.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            listener = %gate.listener,
            reason = why.reason(),
            open = gate.open.load(Ordering::Relaxed),
            open_total = gate.overload.open_connections(),
            refused_unlogged = unlogged,
            "refusing connection: {why}"
        );
    }
}

/// Increments `count` unless it is at `limit`.
fn take(count: &AtomicUsize, limit: Option<usize>) -> bool {
    match limit {
        None => {
            count.fetch_add(1, Ordering::Relaxed);
            true
        }
        Some(limit) => count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok(),
    }
}

/// One admitted connection's slots; given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnPermit(Arc<Gate>);

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0
            .overload
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        self.0.gauge.dec();
    }
}

/// The live HTTP connections, oldest first, so the memory watermark can close some.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<TrackedConn>>>,
}

/// One live HTTP connection as the registry sees it.
#[derive(Debug, Default)]
pub(crate) struct TrackedConn {
    busy: AtomicUsize,
    closing: AtomicBool,
    close: Notify,
}

impl TrackedConn {
    /// Marks one request as being handled until the guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }

    /// True when no request is being handled: an idle keep-alive connection.
    pub(crate) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0
    }

    /// Resolves once the connection has been asked to close.
    pub(crate) async fn close_requested(&self) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        self.close.notified().await;
    }

    /// Asks the connection to close gracefully; false if it was already asked.
    fn request_close(&self) -> bool {
        if self.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        // notify_one keeps the wakeup if the server is not waiting at this instant.
        self.close.notify_one();
        true
    }
}

/// A request being handled on a [`TrackedConn`].
#[derive(Debug)]
pub(crate) struct BusyGuard(Arc<TrackedConn>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place in the registry; leaving it is dropping this.
#[derive(Debug)]
pub(crate) struct Registration<'a> {
    registry: &'a ConnRegistry,
    id: u64,
    conn: Arc<TrackedConn>,
}

impl Registration<'_> {
    /// The connection's state, shared with the registry.
    pub(crate) fn conn(&self) -> &Arc<TrackedConn> {
        &self.conn
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.registry.conns.lock() {
            conns.remove(&self.id);
        }
    }
}

impl ConnRegistry {
    /// Enters a new connection.
    pub(crate) fn register(&self) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(TrackedConn::default());
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(id, conn.clone());
        }
        Registration {
            registry: self,
            id,
            conn,
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.conns.lock().map_or(0, |c| c.len())
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every idle connection to close; returns how many were asked.
    pub(crate) fn close_idle(&self) -> usize {
        self.close_where(usize::MAX, |c| c.is_idle())
    }

    /// Asks up to `n` of the oldest busy connections to close once their requests finish.
    pub(crate) fn close_busy(&self, n: usize) -> usize {
        self.close_where(n, |c| !c.is_idle())
    }

    fn close_where(&self, n: usize, pick: impl Fn(&TrackedConn) -> bool) -> usize {
        let Ok(conns) = self.conns.lock() else {
            return 0;
        };
        let mut closed = 0;
        for conn in conns.values() {
            if closed == n {
                break;
            }
            if pick(conn) && conn.request_close() {
                closed += 1;
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overload::OverloadOptions;

    fn overload(total: Option<usize>) -> Arc<Overload> {
        Overload::new(OverloadOptions {
            max_connections: total,
            ..OverloadOptions::default()
        })
    }

    #[test]
    fn a_listener_over_its_limit_refuses_and_frees_the_slot_when_a_connection_ends() {
        let o = overload(None);
        let gate = o.gate("tcp:a", Some(2));
        let first = gate.admit().unwrap();
        let _second = gate.admit().unwrap();
        assert_eq!(gate.admit().unwrap_err(), Refusal::ListenerLimit);
        assert_eq!(
            o.metrics().connections_refused("tcp:a", "listener_limit"),
            1
        );
        // Another listener has its own count.
        assert!(o.gate("tcp:b", Some(2)).admit().is_ok());
        drop(first);
        let _third = gate.admit().unwrap();
        assert_eq!(gate.open(), 2);
        assert_eq!(
            o.open_connections(),
            2,
            "the one on tcp:b was dropped at once"
        );
    }

    #[test]
    fn the_total_limit_spans_listeners_and_gives_back_the_listener_slot() {
        let o = overload(Some(2));
        let (a, b) = (o.gate("a", None), o.gate("b", None));
        let _x = a.admit().unwrap();
        let _y = b.admit().unwrap();
        assert_eq!(b.admit().unwrap_err(), Refusal::TotalLimit);
        assert_eq!(b.open(), 1, "a refused connection holds no listener slot");
        assert_eq!(o.open_connections(), 2);
        assert_eq!(o.metrics().connections_refused("b", "total_limit"), 1);
    }

    #[test]
    fn memory_pressure_refuses_every_listener() {
        let o = overload(None);
        o.set_memory_overloaded(true);
        assert_eq!(o.gate("a", None).admit().unwrap_err(), Refusal::Memory);
        o.set_memory_overloaded(false);
        assert!(o.gate("a", None).admit().is_ok());
    }

    #[tokio::test]
    async fn idle_connections_are_closed_before_busy_ones() {
        let registry = ConnRegistry::default();
        let idle = registry.register();
        let busy = registry.register();
        let _request = busy.conn().busy();
        assert_eq!(registry.close_idle(), 1);
        // The close request is kept until the server looks.
        idle.conn().close_requested().await;
        assert!(!busy.conn().closing.load(Ordering::Relaxed));
        assert_eq!(registry.close_idle(), 0, "asked once only");
        assert_eq!(registry.close_busy(5), 1);
        busy.conn().close_requested().await;
        drop(idle);
        assert_eq!(registry.len(), 1);
    }
}
