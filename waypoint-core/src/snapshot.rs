//! The config snapshot a request is served with.
//!
//! A [`Snapshot`] pairs a validated [`Config`] with the filter chain built from it. The
//! [`SnapshotStore`] swaps snapshots atomically on reload; a request loads the current one once
//! (in [`crate::pipeline`]) and is served with it start to finish, so a reload never changes a
//! request in flight. Background consumers (the Kubernetes status writer) subscribe instead of
//! polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::{Condition, Config, ResourceStatus};
use crate::filter::{
    BuildContext, BuildOutput, BuildReport, ExtensionRegistry, FilterChain, FilterFactory,
};
use crate::route_status::{GatewayStatus, RouteParentStatus};

/// A config and the filter chain compiled from it. Immutable.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Arc<Config>,
    /// The filter chain built from it.
    pub chain: FilterChain,
    /// Problems the filter factories found with resources.
    pub reports: Vec<BuildReport>,
    /// The conditions of each route for each of its parents.
    pub route_parents: Vec<RouteParentStatus>,
    /// The status of each Gateway the routing serves, with its listeners.
    pub gateways: Vec<GatewayStatus>,
    /// Increases by one with every snapshot applied (the first real config is 1).
    pub version: u64,
    /// When it was applied.
    pub applied_at: SystemTime,
}

impl Snapshot {
    /// Every resource's status: the loader's verdict with the filter factories' reports merged
    /// in (a report replaces a condition of the same type). A false per-parent condition of a
    /// route counts as a report too, so the route shows as not OK.
    pub fn statuses(&self) -> Vec<ResourceStatus> {
        let mut statuses = self.config.statuses.clone();
        let parent_reports = self.route_parents.iter().flat_map(|p| {
            p.conditions
                .iter()
                .filter(|c| !c.status)
                .map(|c| BuildReport {
                    resource: p.route.clone(),
                    condition: c.kind.clone(),
                    reason: c.reason.clone(),
                    message: format!("parent {}: {}", p.parent, c.message),
                })
        });
        let reports: Vec<BuildReport> =
            self.reports.iter().cloned().chain(parent_reports).collect();
        for report in &reports {
            let condition = Condition {
                kind: report.condition.clone(),
                status: false,
                reason: report.reason.clone(),
                message: report.message.clone(),
            };
            match statuses.iter_mut().find(|s| s.resource == report.resource) {
                Some(status) => match status
                    .conditions
                    .iter_mut()
                    .find(|c| c.kind == condition.kind)
                {
                    // The first report of a type is kept: it is usually the most specific.
                    Some(existing) if !existing.status => {}
                    Some(existing) => *existing = condition,
                    None => status.conditions.push(condition),
                },
                None => statuses.push(ResourceStatus {
                    resource: report.resource.clone(),
                    source: String::new(),
                    conditions: vec![condition],
                }),
            }
        }
        statuses
    }
}

/// Holds the current snapshot and builds new ones from configs.
///
/// Besides the [`ArcSwap`] the request path loads from, every applied snapshot is also sent on
/// a `watch` channel for background consumers (the Kubernetes status writer): they see the
/// latest snapshot without polling, and a slow consumer never holds up `apply` or a request,
/// since a `watch` keeps only the newest value.
pub struct SnapshotStore {
    current: ArcSwap<Snapshot>,
    applied: tokio::sync::watch::Sender<Arc<Snapshot>>,
    factories: Vec<Arc<dyn FilterFactory>>,
    extensions: ExtensionRegistry,
    version: AtomicU64,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl SnapshotStore {
    /// A store whose chains are built by `factories`, in order, resolving `ExtensionRef`s with
    /// `extensions`. It starts with an empty config (version 0) until [`SnapshotStore::apply`].
    pub fn new(factories: Vec<Arc<dyn FilterFactory>>, extensions: ExtensionRegistry) -> Self {
        let empty = Arc::new(build(
            Arc::new(Config::default()),
            &factories,
            &extensions,
            0,
        ));
        let (applied, _) = tokio::sync::watch::channel(empty.clone());
        SnapshotStore {
            current: ArcSwap::new(empty),
            applied,
            factories,
            extensions,
            version: AtomicU64::new(0),
        }
    }

    /// Builds the chain for `config` and makes it current. Requests already in flight finish
    /// with the snapshot they started with.
    pub fn apply(&self, config: Config) -> Arc<Snapshot> {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot = Arc::new(build(
            Arc::new(config),
            &self.factories,
            &self.extensions,
            version,
        ));
        self.current.store(snapshot.clone());
        // Stored even when nobody subscribes. Two concurrent applies may finish out of order:
        // subscribers only ever move forward.
        self.applied.send_if_modified(|latest| {
            let newer = latest.version < snapshot.version;
            if newer {
                *latest = snapshot.clone();
            }
            newer
        });
        snapshot
    }

    /// A receiver that sees every snapshot applied from now on (its current value is the
    /// snapshot current at the time of the call). A watch keeps only the newest value: a
    /// consumer that falls behind skips to the latest snapshot, which is what a status writer
    /// wants.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.applied.subscribe()
    }

    /// Builds the snapshot `config` would give without making it current (`waypoint check`).
    pub fn preview(&self, config: Config) -> Snapshot {
        build(Arc::new(config), &self.factories, &self.extensions, 0)
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

fn build(
    config: Arc<Config>,
    factories: &[Arc<dyn FilterFactory>],
    extensions: &ExtensionRegistry,
    version: u64,
) -> Snapshot {
    let mut cx = BuildContext::new(&config, extensions);
    let filters = factories.iter().map(|f| f.build(&mut cx)).collect();
    let BuildOutput {
        reports,
        route_parents,
        gateways,
    } = cx.finish();
    for r in &reports {
        tracing::warn!(resource = %r.resource, condition = %r.condition, reason = %r.reason, "{}", r.message);
    }
    Snapshot {
        chain: FilterChain::new(filters),
        config,
        reports,
        route_parents,
        gateways,
        version,
        applied_at: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_sees_every_applied_snapshot_and_skips_to_the_newest() {
        let store = SnapshotStore::new(Vec::new(), ExtensionRegistry::default());
        let mut applied = store.subscribe();
        assert_eq!(applied.borrow_and_update().version, 0);
        store.apply(Config::default());
        applied.changed().await.expect("the store is alive");
        assert_eq!(applied.borrow_and_update().version, 1);
        store.apply(Config::default());
        store.apply(Config::default());
        applied.changed().await.expect("the store is alive");
        assert_eq!(applied.borrow_and_update().version, 3);
        assert!(!applied.has_changed().expect("the store is alive"));
        assert_eq!(store.load().version, 3);
    }
}
