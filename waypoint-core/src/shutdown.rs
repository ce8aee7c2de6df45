//! Graceful shutdown: one trigger tells every listener to stop accepting and every connection
//! to finish its in-flight requests; the owner then waits, up to a deadline, for all of them.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Held by every listener and connection task. Cloning it registers one more task to wait for;
/// dropping it says that task is done.
#[derive(Clone, Debug)]
pub struct Shutdown {
    signal: watch::Receiver<bool>,
    // Never sent on: the channel closes when the last clone is dropped, which is how the owner
    // learns that every task has finished.
    _alive: mpsc::Sender<()>,
}

/// Owned by whoever decides when to stop (the binary, a test, an embedding vendor).
#[derive(Debug)]
pub struct ShutdownTrigger {
    signal: watch::Sender<bool>,
    drained: mpsc::Receiver<()>,
}

/// A new trigger and the first [`Shutdown`] handle to clone into tasks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (trigger, shutdown) = waypoint_core::shutdown::channel();
/// let task = tokio::spawn({
///     let mut shutdown = shutdown.clone();
///     async move { shutdown.wait().await }
/// });
/// drop(shutdown);
/// assert!(trigger.shutdown(std::time::Duration::from_secs(1)).await);
/// task.await.unwrap();
/// # }
/// ```
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (signal_tx, signal_rx) = watch::channel(false);
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
    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped: treat that as a shutdown too.
        let _ = self.signal.wait_for(|stop| *stop).await;
    }

    /// True once shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.signal.borrow()
    }
}

impl ShutdownTrigger {
    /// Tells every task to stop, then waits up to `deadline` for all [`Shutdown`] handles to be
    /// dropped. Returns false when the deadline passed first (tasks still running are then
    /// abandoned by the caller).
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        let _ = self.signal.send(true);
        tokio::time::timeout(deadline, self.drained.recv())
            .await
            .is_ok()
    }
}
