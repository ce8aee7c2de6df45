//! Graceful shutdown in two phases, so that stopping a waypoint loses no request.
//!
//! 1. **Draining.** The readiness probe already fails (the owner flips it before triggering),
//!    but whoever routes to us (kube-proxy, a ztunnel) needs a moment to notice. Listeners keep
//!    accepting, so a client that has not noticed yet is still served; every connection is told
//!    to go elsewhere: HTTP/2 (and HBONE) get GOAWAY at once, HTTP/1.1 responses carry
//!    `Connection: close`. An idle HTTP/1.1 connection is *not* closed in this phase: closing it
//!    races with a request the client may be writing at that very moment, and that request would
//!    be lost. Its next request is answered, with `Connection: close`.
//! 2. **Stopping.** Listeners stop accepting, idle connections close, in-flight requests
//!    finish; the owner waits for all of them up to its deadline.
//!
//! The draining phase lasts the owner's grace period ([`ShutdownTrigger::drain`]); with no
//! grace ([`ShutdownTrigger::shutdown`]) the two phases follow each other at once.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Where a shutdown is. Ordered: each phase implies the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Draining,
    Stopping,
}

/// Held by every listener and connection task. Cloning it registers one more task to wait for;
/// dropping it says that task is done.
#[derive(Clone, Debug)]
pub struct Shutdown {
    signal: watch::Receiver<Phase>,
    // Never sent on: the channel closes when the last clone is dropped, which is how the owner
    // learns that every task has finished.
    _alive: mpsc::Sender<()>,
}

/// Owned by whoever decides when to stop (the binary, a test, an embedding vendor).
#[derive(Debug)]
pub struct ShutdownTrigger {
    signal: watch::Sender<Phase>,
    drained: mpsc::Receiver<()>,
}

/// A new trigger and the first [`Shutdown`] handle to clone into tasks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (trigger, shutdown) = waypoint_core::shutdown::channel();
/// let task = tokio::spawn({
///     let shutdown = shutdown.clone();
///     async move { shutdown.wait().await }
/// });
/// drop(shutdown);
/// assert!(trigger.shutdown(std::time::Duration::from_secs(1)).await);
/// task.await.unwrap();
/// # }
/// ```
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (signal_tx, signal_rx) = watch::channel(Phase::Running);
    let (alive_tx, alive_rx) = mpsc::channel(1);
    (
        ShutdownTrigger {
            signal: signal_tx,
            drained: alive_rx,
        },
        Shutdown {
            signal: signal_rx,
            _alive: alive_tx,
        },
    )
}

impl Shutdown {
    /// Resolves once the stopping phase has begun (at once if it already has): stop accepting,
    /// close idle connections, let in-flight requests finish.
    pub async fn wait(&self) {
        self.wait_for(Phase::Stopping).await
    }

    /// Resolves once shutdown has been triggered, in its draining phase or later: tell clients
    /// to go elsewhere (GOAWAY, `Connection: close`) but keep serving them.
    pub(crate) async fn wait_draining(&self) {
        self.wait_for(Phase::Draining).await
    }

    /// True once shutdown has been triggered (draining or stopping).
    #[cfg(test)]
    pub(crate) fn is_triggered(&self) -> bool {
        *self.signal.borrow() >= Phase::Draining
    }

    async fn wait_for(&self, phase: Phase) {
        // A receiver of our own, so several waits can run at once (e.g. in one `select!`).
        let mut signal = self.signal.clone();
        // An error means the trigger was dropped: treat that as a shutdown too.
        let _ = signal.wait_for(|now| *now >= phase).await;
    }
}

impl ShutdownTrigger {
    /// Stops at once (no draining phase), then waits up to `deadline` for all [`Shutdown`]
    /// handles to be dropped. Returns false when the deadline passed first (tasks still running
    /// are then abandoned by the caller).
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.drain(Duration::ZERO, deadline).await
    }

    /// Enters the draining phase now, synchronously: every [`Shutdown::wait_draining`] resolves.
    /// [`ShutdownTrigger::drain`] does this first; call it earlier to order it before something
    /// else (a readiness probe turning false).
    pub(crate) fn begin_draining(&self) {
        let _ = self.signal.send_if_modified(|phase| {
            let before = *phase;
            *phase = before.max(Phase::Draining);
            *phase != before
        });
    }

    /// Drains for `grace` (listeners still accept; clients are told to go elsewhere), then
    /// stops and waits for every [`Shutdown`] handle to be dropped. The whole takes at most
    /// `deadline`: a grace longer than that is cut to it. Returns false when the deadline
    /// passed before every task finished.
    pub async fn drain(mut self, grace: Duration, deadline: Duration) -> bool {
        let started = Instant::now();
        self.begin_draining();
        tokio::time::sleep(grace.min(deadline)).await;
        let _ = self.signal.send(Phase::Stopping);
        let left = deadline.saturating_sub(started.elapsed());
        tokio::time::timeout(left, self.drained.recv())
            .await
            .is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_draining_phase_lasts_the_grace_and_only_then_stopping_begins() {
        let (trigger, shutdown) = channel();
        let watcher = shutdown.clone();
        let drained = tokio::spawn(trigger.drain(Duration::from_secs(5), Duration::from_secs(8)));
        watcher.wait_draining().await;
        let draining_at = Instant::now();
        assert!(watcher.is_triggered());
        watcher.wait().await;
        assert!(draining_at.elapsed() >= Duration::from_secs(5));
        drop((watcher, shutdown));
        assert!(drained.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_grace_longer_than_the_deadline_is_cut_to_it() {
        let (trigger, shutdown) = channel();
        let started = Instant::now();
        // The handle is kept: the drain cannot finish, and must give up at the deadline.
        let drained = trigger
            .drain(Duration::from_secs(60), Duration::from_secs(2))
            .await;
        assert!(!drained);
        assert!(started.elapsed() <= Duration::from_secs(3));
        assert!(shutdown.is_triggered());
    }
}
