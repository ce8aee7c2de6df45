//! One kind's list-then-watch loop, kept in a [`Stores`] slot.
//!
//! The loop is the classic reflector: list every page, replace the slot wholesale with the
//! result (so anything deleted while we were not watching disappears), then watch from the
//! list's `resourceVersion`, applying events and following bookmarks. A watch the server ends
//! on its own timeout is simply resumed from the last version seen. Anything else — 410 Gone,
//! a broken connection, an API error, a malformed event — goes back to listing, after a
//! backoff when the server looked unwell. The slot keeps its objects throughout, so the last
//! snapshot keeps serving while the API server is away.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::metrics::SourceMetrics;
use super::store::{Stores, object_key};
use super::strip::strip;
use crate::api::{ApiResource, KubeApi, KubeError, WatchEvent, kinds};
use crate::client::stream::fill_type;
use waypoint_core::shutdown::Shutdown;

/// First retry delay after a failure.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest retry delay while the API server stays away.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter (each delay drawn from the upper half of the current step,
/// so replicas that lost the server together do not come back in lockstep).
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }

    fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        step.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// One kind's reflector.
pub(crate) struct Reflector {
    pub(crate) api: Arc<dyn KubeApi>,
    pub(crate) resource: ApiResource,
    pub(crate) namespace: Option<String>,
    pub(crate) slot: usize,
    pub(crate) stores: Arc<Stores>,
    pub(crate) metrics: SourceMetrics,
}

/// How a watch ended.
enum WatchEnd {
    /// The server closed it (its timeout): resume from the last version.
    Closed,
    /// List again; `Some` is the failure to count and back off from.
    Relist(Option<KubeError>),
}

impl Reflector {
    /// Runs until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        let mut backoff = Backoff::new();
        // Whether the API server is failing us: logged when it starts and when it ends.
        let mut outage = false;
        // The version first asked for, and whether an optional kind was found not served.
        let newest = self.resource;
        let mut absent = false;
        loop {
            let listed = tokio::select! {
                _ = shutdown.wait() => return,
                listed = self.list() => listed,
            };
            let mut version = match listed {
                Ok((items, version)) => {
                    let count = items.len();
                    self.stores.replace(self.slot, items);
                    if outage {
                        tracing::info!(
                            kind = self.resource.kind,
                            objects = count,
                            "API server is back; listed again"
                        );
                        outage = false;
                    }
                    version
                }
                Err(KubeError::NotFound(_)) if kinds::older_version(&self.resource).is_some() => {
                    if let Some(older) = kinds::older_version(&self.resource) {
                        tracing::info!(
                            kind = self.resource.kind,
                            "{} is not served; using {}",
                            self.resource.api_version(),
                            older.version
                        );
                        self.resource = older;
                    }
                    continue;
                }
                Err(KubeError::NotFound(_)) if kinds::optional(&self.resource) => {
                    // No version of the CRD is installed: no objects, and the source may sync
                    // without them. Looked for again, from the newest version, later on.
                    if !absent {
                        tracing::info!(
                            kind = self.resource.kind,
                            "not served by the API server (CRD not installed): none read"
                        );
                        absent = true;
                    }
                    self.stores.replace(self.slot, Vec::new());
                    self.resource = newest;
                    if sleep_or_shutdown(BACKOFF_MAX, &shutdown).await {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    self.failed(&error, "list", &mut outage);
                    if sleep_or_shutdown(backoff.delay(), &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let end = tokio::select! {
                    _ = shutdown.wait() => return,
                    end = self.watch(&mut version, &mut backoff) => end,
                };
                match end {
                    WatchEnd::Closed => continue,
                    WatchEnd::Relist(None) => break,
                    WatchEnd::Relist(Some(error)) => {
                        self.failed(&error, "watch", &mut outage);
                        if sleep_or_shutdown(backoff.delay(), &shutdown).await {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }

    fn failed(&self, error: &KubeError, during: &str, outage: &mut bool) {
        self.metrics.restarted(self.resource.kind, reason(error));
        if *outage {
            tracing::debug!(kind = self.resource.kind, %error, "{during} failed again");
        } else {
            tracing::warn!(kind = self.resource.kind, %error,
                "{during} failed; serving the last snapshot and retrying with backoff (logged once until it recovers)");
            *outage = true;
        }
    }

    /// Every page of the collection, stripped, with the version to watch from.
    async fn list(&self) -> Result<(Vec<Value>, String), KubeError> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .api
                .list(&self.resource, self.namespace.as_deref(), token.as_deref())
                .await?;
            // `KubeApi` promises typed items; filling them here too keeps a lax implementation
            // from failing every snapshot (the builder needs `kind` to read an object).
            items.extend(page.items.into_iter().filter_map(|mut o| {
                fill_type(&mut o, &self.resource);
                strip(self.resource.kind, o)
            }));
            match page.continue_token {
                Some(next) => token = Some(next),
                // The version of the last page is the list's (the server keeps the snapshot
                // of the first page for the whole paged list).
                None => return Ok((items, page.resource_version)),
            }
        }
    }

    /// Watches from `version` (advanced as events arrive) until the watch ends.
    async fn watch(&self, version: &mut String, backoff: &mut Backoff) -> WatchEnd {
        let mut events = match self
            .api
            .watch(&self.resource, self.namespace.as_deref(), version)
            .await
        {
            Ok(events) => events,
            Err(KubeError::Gone(_)) => {
                self.metrics.restarted(self.resource.kind, "gone");
                return WatchEnd::Relist(None);
            }
            Err(error) => return WatchEnd::Relist(Some(error)),
        };
        backoff.reset();
        while let Some(event) = events.recv().await {
            let event = match event {
                Ok(event) => event,
                Err(KubeError::Gone(_)) => {
                    self.metrics.restarted(self.resource.kind, "gone");
                    return WatchEnd::Relist(None);
                }
                Err(error) => return WatchEnd::Relist(Some(error)),
            };
            match event {
                WatchEvent::Bookmark(rv) => *version = rv,
                WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                    advance(version, &object);
                    let key = object_key(&object);
                    match (strip(self.resource.kind, object), key) {
                        (Some(object), _) => self.stores.upsert(self.slot, object),
                        // Kept nothing of it (a Secret that is not TLS any more): forget it.
                        (None, Some(key)) => self.stores.remove(self.slot, &key),
                        (None, None) => {}
                    }
                }
                WatchEvent::Deleted(object) => {
                    advance(version, &object);
                    if let Some(key) = object_key(&object) {
                        self.stores.remove(self.slot, &key);
                    }
                }
            }
        }
        WatchEnd::Closed
    }
}

/// The metric reason of a failure.
fn reason(error: &KubeError) -> &'static str {
    match error {
        KubeError::NotFound(_) => "not_found",
        KubeError::Conflict(_) => "conflict",
        KubeError::Gone(_) => "gone",
        KubeError::Api { .. } => "api_error",
        KubeError::Transport(_) => "transport",
        KubeError::Decode(_) => "decode",
    }
}

fn advance(version: &mut String, object: &Value) {
    if let Some(rv) = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        *version = rv.to_owned();
    }
}

/// Sleeps `delay`; `true` when shutdown came first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        _ = shutdown.wait() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let first = backoff.delay();
        assert!(
            first >= BACKOFF_INITIAL / 2 && first <= BACKOFF_INITIAL,
            "{first:?}"
        );
        let delays: Vec<_> = (0..20).map(|_| backoff.delay()).collect();
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[19] >= BACKOFF_MAX / 2, "{:?}", delays[19]);
        backoff.reset();
        assert!(backoff.delay() <= BACKOFF_INITIAL);
    }
}
