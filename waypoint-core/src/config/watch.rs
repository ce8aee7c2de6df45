//! Watching a manifest file or directory and reloading it when it changes.
//!
//! This polls a [`fingerprint`] (names, sizes, mtimes and contents) rather than using inotify,
//! on purpose: a mounted Kubernetes ConfigMap changes by an atomic swap of its `..data`
//! symlink, which file-event watchers see on the wrong inode or not at all, and polling needs no
//! extra dependency. Reading a few small manifests every second or so costs next to nothing.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Config;
use super::build::EndpointStatsCache;
use super::load::{LoadError, fingerprint, load_path_with};
use crate::shutdown::Shutdown;

/// How long a changed source must stay unchanged before it is loaded.
const SETTLE: Duration = Duration::from_millis(50);

/// Reloads a config source when its [`fingerprint`] changes.
///
/// Create it *before* the initial load: it remembers the state seen at creation, so a change
/// made between that moment and the end of the initial load is picked up on the first poll
/// rather than missed.
#[derive(Debug)]
pub(crate) struct ConfigWatcher {
    path: PathBuf,
    cache: Arc<EndpointStatsCache>,
    /// The last fingerprint, or the error that prevented taking it.
    last: Result<u64, String>,
    /// The DNS cache's change count at the last load: a ServiceEntry's resolved addresses
    /// changing is a reason to rebuild although no file changed.
    dns_seen: u64,
}

impl ConfigWatcher {
    /// Starts watching `path` (a file or directory), remembering its current state.
    pub(crate) fn new(path: PathBuf, cache: Arc<EndpointStatsCache>) -> Self {
        let last = fingerprint(&path).map_err(|e| e.to_string());
        let dns_seen = cache.dns().generation();
        ConfigWatcher {
            path,
            cache,
            last,
            dns_seen,
        }
    }

    /// Checks once: `None` when nothing changed, else the result of reloading. A source that
    /// became unreadable reports the error once, and again only after it changed.
    pub(crate) fn poll(&mut self) -> Option<Result<Config, LoadError>> {
        let now = fingerprint(&self.path);
        let state = now.as_ref().map(|h| *h).map_err(|e| e.to_string());
        // Read before loading: an answer arriving during the load triggers one more.
        let dns = self.cache.dns().generation();
        if state == self.last {
            if dns == self.dns_seen || state.is_err() {
                return None;
            }
            self.dns_seen = dns;
            return Some(load_path_with(&self.path, &self.cache));
        }
        self.dns_seen = dns;
        // A file edited in place can be caught half-written: load only once it has stopped
        // changing, else wait for the next poll.
        std::thread::sleep(SETTLE);
        let again = fingerprint(&self.path).map_err(|e| e.to_string());
        if again != state {
            return None;
        }
        self.last = state;
        Some(match now {
            Ok(_) => load_path_with(&self.path, &self.cache),
            Err(source) => Err(read_error(self.path.clone(), source)),
        })
    }

    /// Polls every `interval` and hands each reload to `on_change` (an `Err` means: keep the
    /// last good config) until `shutdown` triggers. File reads run on the blocking pool.
    pub(crate) async fn run(
        mut self,
        interval: Duration,
        mut on_change: impl FnMut(Result<Config, LoadError>) + Send,
        shutdown: Shutdown,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; the state is fresh from `new`
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = ticks.tick() => {}
            }
            let polled = tokio::task::spawn_blocking(move || {
                let change = self.poll();
                (self, change)
            })
            .await;
            match polled {
                Ok((watcher, change)) => {
                    self = watcher;
                    if let Some(change) = change {
                        on_change(change);
                    }
                }
                Err(e) => {
                    // The poll panicked (a bug, not bad input): stop rather than spin.
                    tracing::error!(error = %e, "config watcher stopped");
                    return;
                }
            }
        }
    }
}

fn read_error(path: PathBuf, source: io::Error) -> LoadError {
    LoadError::Read { path, source }
}

/// Watches `path`, calling `on_change` with every reload (see `ConfigWatcher`) until
/// `shutdown` triggers. The state at the call is the baseline.
pub async fn watch(
    path: PathBuf,
    interval: Duration,
    cache: Arc<EndpointStatsCache>,
    on_change: impl FnMut(Result<Config, LoadError>) + Send,
    shutdown: Shutdown,
) {
    let watcher = ConfigWatcher::new(path, cache);
    watcher.run(interval, on_change, shutdown).await;
}
