//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder writes status, so two
//! replicas never fight over the same objects.
//!
//! Semantics are those every Kubernetes controller uses (client-go's `leaderelection`):
//! - The Lease's `spec.holderIdentity` names the holder; `renewTime` moves on every renewal;
//!   `leaseDurationSeconds` says how long the holder may go without renewing.
//! - A candidate takes over only when the lease record (its `resourceVersion` and spec) has not
//!   changed for a whole `leaseDurationSeconds` *as observed on its own clock*. We do not
//!   compare `renewTime` with our wall clock: clocks of two nodes may disagree by more than a
//!   lease, a locally observed interval cannot. A released Lease (empty holder) is taken at once.
//!   The price: a candidate that starts next to an expired Lease waits one duration first.
//! - Every write is a `replace` conditional on the `resourceVersion` read (or a `create`, which
//!   fails with Conflict when another replica created it first), so of two candidates racing
//!   for the same Lease exactly one succeeds.
//! - The holder believes it holds the Lease only until `renew_deadline` after its last successful
//!   renewal began, shorter than the duration others wait: when renewals fail (the API server is
//!   away) it stops writing before anyone else may start.
//! - On shutdown the holder releases the Lease (empty holder), so a successor need not wait.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use waypoint_core::shutdown::Shutdown;

use crate::api::{KubeApi, KubeError, kinds};

use super::controller::is_dns_subdomain;
use super::merge::now_micros;
use super::metrics::StatusMetrics;

/// Which Lease, who we are, and the timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name (`--status-lease`).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Our `holderIdentity`: unique per replica.
    pub identity: String,
    /// `leaseDurationSeconds`: how long others wait after the last change they saw.
    pub duration: Duration,
    /// How long we keep writing after a renewal began without a newer successful one.
    pub renew_deadline: Duration,
    /// How often we renew (holder) or look again (candidate).
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// 15 s duration, 10 s renew deadline, renewal every 5 s (a third of the duration, so two
    /// renewals may fail before the holder steps down).
    pub fn new(name: String, namespace: String, identity: String) -> Self {
        LeaseSettings {
            name,
            namespace,
            identity,
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(5),
        }
    }
}

/// The default Lease name: one per Gateway (`waypoint-status-<gateway>`), since replicas of one
/// Gateway's waypoint compete and those of different Gateways must not.
pub fn default_lease_name(gateway: Option<&(String, String)>) -> String {
    match gateway {
        Some((_, name)) => format!("waypoint-status-{name}"),
        None => "waypoint-status".to_owned(),
    }
}

/// Why a Lease name was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a Lease name: lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit, at most 253 characters"
)]
pub struct LeaseNameError(String);

/// A Lease name as given (`--status-lease`), checked as the API server will (a DNS subdomain),
/// so a typo fails at startup rather than on every renewal.
pub fn lease_name(s: &str) -> Result<String, LeaseNameError> {
    if s.len() <= 253 && is_dns_subdomain(s) {
        Ok(s.to_owned())
    } else {
        Err(LeaseNameError(s.to_owned()))
    }
}

/// The Lease's namespace: `POD_NAMESPACE` (ours, where our RBAC grants Leases), else the
/// Gateway's, else `default`.
pub fn lease_namespace(
    pod_namespace: Option<String>,
    gateway: Option<&(String, String)>,
) -> String {
    pod_namespace
        .filter(|ns| !ns.is_empty())
        .or_else(|| gateway.map(|(ns, _)| ns.clone()))
        .unwrap_or_else(|| "default".to_owned())
}

/// Our holder identity: `POD_NAME` (unique in the namespace, and what an operator recognises),
/// else the hostname plus a random suffix (two processes on one host must differ).
pub fn holder_identity(pod_name: Option<String>, hostname: Option<String>) -> String {
    if let Some(pod) = pod_name.filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = hostname
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "waypoint".to_owned());
    let suffix: String = (0..6)
        .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
        .collect();
    format!("{host}-{suffix}")
}

/// Whether this replica holds the Lease now. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<Option<Instant>>);

impl Leadership {
    /// True while we hold the Lease (renewed within the renew deadline).
    pub fn holds(&self) -> bool {
        self.0.borrow().is_some_and(|until| Instant::now() < until)
    }

    /// Resolves when leadership was gained, renewed or lost; `Err` once the elector is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.0.changed().await
    }
}

/// Competes for the Lease and keeps it while it can.
pub struct Elector {
    api: Arc<dyn KubeApi>,
    settings: LeaseSettings,
    state: watch::Sender<Option<Instant>>,
    metrics: StatusMetrics,
    /// The lease record last seen (resourceVersion and spec), and when (our clock) it last
    /// changed.
    observed: Option<(Value, Instant)>,
}

impl Elector {
    /// An elector for `settings`, and the handle telling whether we hold the Lease.
    pub fn new(
        api: Arc<dyn KubeApi>,
        settings: LeaseSettings,
        metrics: StatusMetrics,
    ) -> (Elector, Leadership) {
        let (state, leadership) = watch::channel(None);
        let elector = Elector {
            api,
            settings,
            state,
            metrics,
            observed: None,
        };
        (elector, Leadership(leadership))
    }

    /// Tries every `retry_period` until `shutdown`, then releases the Lease if held.
    pub async fn run(mut self, shutdown: Shutdown) {
        loop {
            let began = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => self.set(Some(began + self.settings.renew_deadline)),
                Ok(false) => self.set(None),
                Err(err) => {
                    tracing::warn!(lease = %self.settings.name, error = %err, "status Lease: cannot renew");
                    if !self.holds() {
                        self.set(None);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
        if self.holds() {
            self.set(None);
            if let Err(err) = self.release().await {
                tracing::warn!(lease = %self.settings.name, error = %err, "status Lease: cannot release");
            }
        }
    }

    fn holds(&self) -> bool {
        self.state
            .borrow()
            .is_some_and(|until| Instant::now() < until)
    }

    fn set(&mut self, until: Option<Instant>) {
        let was = self.state.borrow().is_some();
        if was != until.is_some() {
            match until {
                Some(_) => {
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "status Lease acquired: this replica writes status")
                }
                None => {
                    tracing::info!(lease = %self.settings.name, "status Lease not held: this replica does not write status")
                }
            }
        }
        self.metrics.set_leader(until.is_some());
        self.state.send_replace(until);
    }

    /// One round: `Ok(true)` when we hold the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, KubeError> {
        let s = &self.settings;
        let namespace = Some(s.namespace.as_str());
        let Some(mut lease) = self.api.get(&kinds::LEASE, namespace, &s.name).await? else {
            let now = now_micros();
            let lease = json!({
                "apiVersion": kinds::LEASE.api_version(),
                "kind": kinds::LEASE.kind,
                "metadata": { "name": s.name, "namespace": s.namespace },
                "spec": {
                    "holderIdentity": s.identity,
                    "leaseDurationSeconds": s.duration.as_secs(),
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            });
            return match self.api.create(&kinds::LEASE, namespace, &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first: it holds it.
                Err(KubeError::Conflict(_)) => Ok(false),
                Err(err) => Err(err),
            };
        };
        if !lease.is_object() {
            return Err(KubeError::Decode(format!(
                "Lease {} is not an object",
                s.name
            )));
        }
        // A spec that is not an object is treated as empty (and replaced by ours if we may).
        let spec = lease
            .get("spec")
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}));
        // Every write gives a new resourceVersion, so a renewal shows even when two land in the
        // same microsecond of `renewTime`.
        let record = json!([lease["metadata"]["resourceVersion"], spec]);
        let now = Instant::now();
        let changed_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => now,
        };
        self.observed = Some((record, changed_at));
        let holder = spec
            .get("holderIdentity")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let theirs = spec
            .get("leaseDurationSeconds")
            .and_then(Value::as_u64)
            .map_or(s.duration, Duration::from_secs);
        let ours = holder == s.identity;
        if !holder.is_empty() && !ours && now < changed_at + theirs {
            return Ok(false);
        }
        let time = now_micros();
        let transitions = spec
            .get("leaseTransitions")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let mut new_spec = spec.clone();
        new_spec["holderIdentity"] = json!(s.identity);
        new_spec["leaseDurationSeconds"] = json!(s.duration.as_secs());
        new_spec["renewTime"] = json!(time);
        if !ours {
            new_spec["acquireTime"] = json!(time);
            new_spec["leaseTransitions"] = json!(transitions + 1);
            tracing::info!(lease = %s.name, previous = holder, "status Lease: taking over");
        }
        lease["spec"] = new_spec;
        match self
            .api
            .replace(&kinds::LEASE, namespace, &s.name, &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote it since we read it: they won this round.
            Err(KubeError::Conflict(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives the Lease up: empty holder, so a candidate takes it without waiting.
    async fn release(&self) -> Result<(), KubeError> {
        let s = &self.settings;
        let namespace = Some(s.namespace.as_str());
        let Some(mut lease) = self.api.get(&kinds::LEASE, namespace, &s.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        if spec.get("holderIdentity").and_then(Value::as_str) != Some(s.identity.as_str()) {
            return Ok(());
        }
        spec.insert("holderIdentity".into(), Value::Null);
        spec.insert("renewTime".into(), json!(now_micros()));
        self.api
            .replace(&kinds::LEASE, namespace, &s.name, &lease)
            .await
            .map(|_| ())
    }
}
