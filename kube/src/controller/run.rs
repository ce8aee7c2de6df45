//! The controller's loop: watch, and while holding the Lease, carry out the [`plan`] of what
//! is watched.
//!
//! Watches reuse the config source's reflectors (list, then watch; relist on 410 or a broken
//! connection, with backoff while the API server is away), so an API server restart costs a
//! relist and the next pass, nothing more. A pass runs after the watched objects change (once
//! they have been quiet for a moment), when the Lease is gained, and every [`RESYNC`] anyway.
//! Only the Lease holder writes: every write checks the Lease first, and a pass stops at the
//! first write that finds it lost.
//!
//! Status writes read the object, merge our fields into its status as read (the waypoints'
//! conditions are kept), and replace the status conditionally on the `resourceVersion` read,
//! rereading on Conflict.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use waypoint_core::shutdown::Shutdown;

use crate::api::{ApiResource, KubeApi, KubeError, kinds};
use crate::source::SourceMetrics;
use crate::source::reflector::Reflector;
use crate::source::store::Stores;
use crate::status::desired::Desired;
use crate::status::merge::{merged_status, now_seconds};
use crate::status::{Elector, Leadership, LeaseSettings, StatusMetrics};

use super::options::RenderOptions;
use super::plan::{Deletion, Plan, StatusWrite, WATCHED, plan};

/// Our server-side apply field manager.
pub const FIELD_MANAGER: &str = "waypoint-controller";
/// A full pass at least this often, whatever the watches say.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long watched objects must be quiet before a pass (a Gateway and its class applied
/// together make one pass).
const QUIET: Duration = Duration::from_millis(100);
/// The longest a pass waits for changes to pause (a busy cluster never pauses).
const SETTLE_MAX: Duration = Duration::from_secs(1);
/// Rereads of one status after a Conflict before the pass gives up on it.
const CONFLICT_ATTEMPTS: usize = 5;

/// What the controller is told.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// How Gateways are rendered.
    pub render: RenderOptions,
    /// The Lease whose holder alone writes.
    pub lease: LeaseSettings,
}

/// Whether the controller has listed everything once (its readiness).
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    /// True once every watched kind was listed.
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }
}

/// Provisions waypoints for Gateways (see the module docs of `controller`).
pub struct Controller {
    api: Arc<dyn KubeApi>,
    settings: ControllerSettings,
    synced: watch::Sender<bool>,
}

#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Api(#[from] KubeError),
    #[error("the Lease was lost")]
    LostLease,
}

impl Controller {
    /// A controller talking to `api`, and its readiness.
    pub fn new(api: Arc<dyn KubeApi>, settings: ControllerSettings) -> (Controller, Synced) {
        let (synced, receiver) = watch::channel(false);
        let controller = Controller {
            api,
            settings,
            synced,
        };
        (controller, Synced(receiver))
    }

    /// Runs until `shutdown`, then releases the Lease.
    pub async fn run(self, shutdown: Shutdown) {
        let stores = Arc::new(Stores::new(&WATCHED));
        let metrics = SourceMetrics::default();
        for (slot, resource) in WATCHED.iter().enumerate() {
            let reflector = Reflector {
                api: self.api.clone(),
                resource: *resource,
                namespace: None,
                slot,
                stores: stores.clone(),
                metrics: metrics.clone(),
            };
            tokio::spawn(reflector.run(shutdown.clone()));
        }
        let (elector, mut leadership) = Elector::new(
            self.api.clone(),
            self.settings.lease.clone(),
            StatusMetrics::default(),
        );
        let election = tokio::spawn(elector.run(shutdown.clone()));
        let mut backoff = Duration::from_millis(500);
        loop {
            let Some(slots) = stores.slots() else {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = stores.changed.notified() => continue,
                }
            };
            self.synced.send_replace(true);
            let mut wait = RESYNC;
            if leadership.holds() {
                let planned = plan(&slots, &self.settings.render, &now_seconds());
                match self.carry_out(&planned, &leadership).await {
                    Ok(()) => backoff = Duration::from_millis(500),
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "controller pass failed");
                        wait = backoff;
                        backoff = (backoff * 2).min(RESYNC);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = stores.changed.notified() => settle(&stores).await,
                _ = leadership.changed() => {}
            }
        }
        let _ = election.await;
    }

    async fn carry_out(&self, plan: &Plan, leadership: &Leadership) -> Result<(), PassError> {
        let lease = || {
            if leadership.holds() {
                Ok(())
            } else {
                Err(PassError::LostLease)
            }
        };
        // One object the server refuses must not hold up every other Gateway.
        let mut failed = Failures::default();
        for (resource, object) in &plan.apply {
            lease()?;
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(|v| v.as_str());
            let name = object
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            match self
                .api
                .apply(resource, namespace, name, object, FIELD_MANAGER)
                .await
            {
                Ok(_) => tracing::info!(kind = resource.kind, namespace, name, "applied"),
                Err(error) => {
                    tracing::warn!(kind = resource.kind, namespace, name, %error, "cannot apply");
                    failed.keep(error)?;
                }
            }
        }
        for Deletion {
            resource,
            namespace,
            name,
        } in &plan.delete
        {
            lease()?;
            let Some(resource) = provisioned(resource) else {
                continue;
            };
            match self.api.delete(&resource, namespace.as_deref(), name).await {
                Ok(_) => tracing::info!(
                    kind = resource.kind,
                    namespace,
                    name,
                    "deleted: no Gateway wants it"
                ),
                Err(error) => {
                    tracing::warn!(kind = resource.kind, namespace, name, %error, "cannot delete");
                    failed.keep(error)?;
                }
            }
        }
        for write in &plan.status {
            lease()?;
            match self.write_status(write).await {
                Ok(()) => {}
                Err(PassError::Api(error)) => {
                    tracing::warn!(kind = write.resource.kind, namespace = write.namespace, name = %write.name, %error, "cannot write status");
                    failed.keep(error)?;
                }
                Err(error) => return Err(error),
            }
        }
        failed.into_result()
    }

    async fn write_status(&self, write: &StatusWrite) -> Result<(), PassError> {
        let namespace = write.namespace.as_deref();
        let desired = Desired::Fields(write.fields.clone());
        for _ in 0..CONFLICT_ATTEMPTS {
            let Some(mut object) = self
                .api
                .get(&write.resource, namespace, &write.name)
                .await?
            else {
                return Ok(()); // gone meanwhile
            };
            let old = object.get("status").cloned();
            let merged = merged_status(
                old.as_ref(),
                &desired,
                "",
                namespace.unwrap_or_default(),
                &now_seconds(),
            );
            let Some(merged) = merged.filter(|m| Some(m) != old.as_ref()) else {
                return Ok(());
            };
            object["status"] = merged;
            match self
                .api
                .replace_status(&write.resource, namespace, &write.name, &object)
                .await
            {
                Ok(_) => {
                    tracing::info!(kind = write.resource.kind, namespace, name = %write.name, "status written");
                    return Ok(());
                }
                Err(KubeError::Conflict(_)) => continue,
                Err(KubeError::NotFound(_)) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
        tracing::warn!(kind = write.resource.kind, namespace, name = %write.name, "status kept changing under us; next pass");
        Ok(())
    }
}

/// The first failure of a pass that went on after it.
#[derive(Default)]
struct Failures(Option<KubeError>);

impl Failures {
    /// Keeps `error` and goes on, unless the API server is away or failing (then every other
    /// request would fail too: end the pass).
    fn keep(&mut self, error: KubeError) -> Result<(), PassError> {
        let server_trouble = match &error {
            KubeError::Transport(_) => true,
            KubeError::Api { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        };
        if server_trouble {
            return Err(error.into());
        }
        self.0.get_or_insert(error);
        Ok(())
    }

    fn into_result(self) -> Result<(), PassError> {
        self.0.map_or(Ok(()), |error| Err(error.into()))
    }
}

/// The provisioned kind named `kind`.
fn provisioned(kind: &str) -> Option<ApiResource> {
    [
        kinds::SERVICE_ACCOUNT,
        kinds::SERVICE,
        kinds::DEPLOYMENT,
        kinds::CLUSTER_ROLE_BINDING,
    ]
    .into_iter()
    .find(|r| r.kind == kind)
}

/// Waits until the watched objects have been quiet for [`QUIET`], at most [`SETTLE_MAX`].
async fn settle(stores: &Stores) {
    let cap = tokio::time::Instant::now() + SETTLE_MAX;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(QUIET) => return,
            _ = tokio::time::sleep_until(cap) => return,
            _ = stores.changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> KubeError {
        KubeError::Api {
            code,
            reason: String::new(),
            message: format!("answered {code}"),
        }
    }

    #[test]
    fn a_refused_object_is_kept_for_later_but_server_trouble_ends_the_pass() {
        let mut failed = Failures::default();
        assert!(failed.keep(api(422)).is_ok());
        assert!(failed.keep(KubeError::Conflict("second".into())).is_ok());
        assert!(failed.keep(api(503)).is_err());
        assert!(failed.keep(KubeError::Transport("reset".into())).is_err());
        let first = failed.into_result().expect_err("the first refusal");
        assert!(first.to_string().contains("answered 422"), "{first}");
        assert!(Failures::default().into_result().is_ok());
    }
}
