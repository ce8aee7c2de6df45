//! Writing status: the desired state of the newest snapshot, object by object, only where the
//! API server's copy differs, only while we hold the Lease.
//!
//! Per object: GET, merge (see `merge`), skip when the merged status equals the one read, else
//! `replace_status` conditional on the `resourceVersion` read. A Conflict means someone wrote
//! in between: read again and merge again (bounded). NotFound means the object is gone: skip.
//!
//! What we remember: the desired state last confirmed on the server per object (written, or
//! found equal). A new snapshot only costs requests for objects whose desired state differs from
//! that, so a reload that changes one route writes one route. The memory starts empty (every
//! object of the first snapshot is read once) and is dropped whenever we gain the Lease, since
//! another replica may have written meanwhile. Routes we no longer own any parent of still have
//! a desired state (no entries), so the first pass after a start or takeover finds and removes
//! entries a previous holder left behind on every route of the config.
//!
//! Failures never block serving: this runs in its own task, and a newer snapshot supersedes a
//! pass in progress (a write abandoned on the wire that still lands later carries the old
//! `resourceVersion`, so it cannot overwrite the newer one: the server answers Conflict). A pass that fails (API server away, 5xx, a refused write) is retried after
//! an exponential backoff, capped; transport errors and 5xx end the pass at once (the next
//! object would fail the same way).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use waypoint_core::shutdown::Shutdown;
use waypoint_core::snapshot::Snapshot;

use crate::api::{KubeApi, KubeError, kinds};

use super::desired::{Desired, DesiredStatus, ObjectKey, desired_status};
use super::lease::{Elector, Leadership};
use super::merge::{merged_status, now_seconds};
use super::metrics::StatusMetrics;
use super::settings::StatusSettings;

/// How many times one object is re-read after a Conflict before the pass gives up on it.
const CONFLICT_ATTEMPTS: usize = 5;

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Api(#[from] KubeError),
    #[error("the status Lease was lost")]
    LostLease,
    #[error("the object is not a JSON object")]
    NotAnObject,
}

impl WriteError {
    /// The API server is away or failing: stop the pass.
    fn ends_pass(&self) -> bool {
        match self {
            WriteError::Api(KubeError::Transport(_)) => true,
            WriteError::Api(KubeError::Api { code, .. }) => *code >= 500 || *code == 429,
            WriteError::LostLease => true,
            _ => false,
        }
    }
}

/// Writes Gateway, GatewayClass and route status from snapshots while holding the Lease.
pub struct StatusWriter {
    api: Arc<dyn KubeApi>,
    settings: StatusSettings,
    metrics: StatusMetrics,
}

impl StatusWriter {
    /// A writer talking to `api`. Metrics are counted but unregistered until
    /// [`with_metrics`](StatusWriter::with_metrics).
    pub fn new(api: Arc<dyn KubeApi>, settings: StatusSettings) -> Self {
        StatusWriter {
            api,
            settings,
            metrics: StatusMetrics::default(),
        }
    }

    /// Counts into `metrics` (registered by [`StatusMetrics::new`]).
    pub fn with_metrics(mut self, metrics: StatusMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Competes for the Lease and, while holding it, writes the status of the newest snapshot of
    /// `snapshots`. Returns when `shutdown` reaches its stopping phase (the Lease released).
    pub async fn run(self, mut snapshots: watch::Receiver<Arc<Snapshot>>, shutdown: Shutdown) {
        let (elector, mut leadership) = Elector::new(
            self.api.clone(),
            self.settings.lease.clone(),
            self.metrics.clone(),
        );
        let election = tokio::spawn(elector.run(shutdown.clone()));
        let mut pass = Pass {
            api: self.api,
            controller: self.settings.scope.controller.as_str().to_owned(),
            confirmed: HashMap::new(),
            metrics: self.metrics,
        };
        let scope = self.settings.scope;
        let mut backoff = self.settings.backoff_initial;
        let mut retry_at: Option<Instant> = None;
        let mut pending = true;
        let mut leader = false;
        let mut snapshots_open = true;
        loop {
            // Version 0 is the store's empty placeholder, not a config: nothing to write yet.
            let configured = snapshots.borrow().version > 0;
            if pending && leader && configured && leadership.holds() {
                pending = false;
                let snapshot = snapshots.borrow_and_update().clone();
                let desired = desired_status(&snapshot, &scope);
                let outcome = tokio::select! {
                    outcome = pass.run(&desired, &leadership) => Some(outcome),
                    changed = snapshots.changed(), if snapshots_open => {
                        snapshots_open = changed.is_ok();
                        None
                    }
                    _ = shutdown.wait() => break,
                };
                match outcome {
                    // Superseded by a newer snapshot: start over with it.
                    None => pending = true,
                    Some(Ok(())) => {
                        backoff = self.settings.backoff_initial;
                        retry_at = None;
                    }
                    Some(Err(failures)) => {
                        tracing::warn!(failures, retry_in = ?backoff, "status pass incomplete; retrying");
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(self.settings.backoff_max);
                    }
                }
                continue;
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                changed = snapshots.changed(), if snapshots_open => {
                    snapshots_open = changed.is_ok();
                    pending = true;
                }
                changed = leadership.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let holds = leadership.holds();
                    if holds && !leader {
                        // Another replica may have written while we did not hold the Lease.
                        pass.confirmed.clear();
                        pending = true;
                        backoff = self.settings.backoff_initial;
                    }
                    leader = holds;
                }
                _ = retry => {
                    retry_at = None;
                    pending = true;
                }
            }
        }
        if let Err(err) = election.await {
            tracing::warn!(error = %err, "status Lease task failed");
        }
    }
}

/// One pass over the desired state, and what it confirmed on the server.
struct Pass {
    api: Arc<dyn KubeApi>,
    controller: String,
    confirmed: HashMap<ObjectKey, Desired>,
    metrics: StatusMetrics,
}

/// What became of one object.
enum Written {
    Replaced,
    AlreadyEqual,
    Gone,
}

impl Pass {
    /// Writes every object whose desired state is not confirmed yet; `Err(failures)` when some
    /// could not be written.
    async fn run(&mut self, desired: &DesiredStatus, leadership: &Leadership) -> Result<(), usize> {
        self.confirmed
            .retain(|k, _| desired.objects.contains_key(k));
        let mut failures = 0;
        for (key, want) in &desired.objects {
            if self.confirmed.get(key) == Some(want) {
                continue;
            }
            let kind = key.kind.resource().kind;
            match self.write(key, want, leadership).await {
                Ok(written) => {
                    match written {
                        Written::Replaced => {
                            tracing::debug!(object = %key, "status written");
                            self.metrics.write(kind, "written");
                        }
                        Written::Gone => self.metrics.write(kind, "not_found"),
                        Written::AlreadyEqual => {}
                    }
                    self.confirmed.insert(key.clone(), want.clone());
                }
                Err(err) => {
                    failures += 1;
                    if !matches!(err, WriteError::LostLease) {
                        tracing::warn!(object = %key, error = %err, "status not written");
                        self.metrics.write(kind, "error");
                    }
                    if err.ends_pass() {
                        return Err(failures);
                    }
                }
            }
        }
        if failures == 0 { Ok(()) } else { Err(failures) }
    }

    async fn write(
        &self,
        key: &ObjectKey,
        want: &Desired,
        leadership: &Leadership,
    ) -> Result<Written, WriteError> {
        let mut resource = key.kind.resource();
        let namespace = key.namespace.as_deref();
        let mut attempt = 0;
        loop {
            let read = match self.api.get(&resource, namespace, &key.name).await {
                Err(KubeError::NotFound(_)) => None,
                read => read?,
            };
            let Some(mut object) = read else {
                // A kind whose CRDs predate v1 (TCPRoute, TLSRoute) is served, and written,
                // at an older version: the object may be there.
                if let Some(older) = kinds::older_version(&resource) {
                    resource = older;
                    continue;
                }
                return Ok(Written::Gone);
            };
            attempt += 1;
            let old = object.get("status");
            let merged = merged_status(
                old,
                want,
                &self.controller,
                namespace.unwrap_or_default(),
                &now_seconds(),
            );
            if merged.as_ref() == old {
                return Ok(Written::AlreadyEqual);
            }
            let (Some(fields), Some(status)) = (object.as_object_mut(), merged) else {
                return Err(WriteError::NotAnObject);
            };
            fields.insert("status".into(), status);
            if !leadership.holds() {
                return Err(WriteError::LostLease);
            }
            match self
                .api
                .replace_status(&resource, namespace, &key.name, &object)
                .await
            {
                Ok(_) => return Ok(Written::Replaced),
                Err(KubeError::NotFound(_)) => return Ok(Written::Gone),
                Err(KubeError::Conflict(why)) if attempt < CONFLICT_ATTEMPTS => {
                    tracing::debug!(object = %key, %why, "status conflict; reading again");
                    self.metrics.write(resource.kind, "conflict");
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
}
