//! The Kubernetes source's metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    kind: &'static str,
    reason: &'static str,
}

/// Counters of the reflectors and the snapshot builder; cheap to clone (shared counters).
#[derive(Clone, Debug, Default)]
pub struct SourceMetrics {
    restarts: Family<RestartLabels, Counter>,
    snapshots: Counter,
    build_failures: Counter,
}

impl SourceMetrics {
    /// Registers `waypoint_kube_watch_restarts_total{kind,reason}`,
    /// `waypoint_kube_snapshots_total` and `waypoint_kube_snapshot_failures_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "waypoint_kube_watch_restarts",
            "Lists or watches of a kind that had to start over, by reason (gone, transport, api_error, decode, not_found)",
            self.restarts.clone(),
        );
        registry.register(
            "waypoint_kube_snapshots",
            "Config snapshots built from the Kubernetes API",
            self.snapshots.clone(),
        );
        registry.register(
            "waypoint_kube_snapshot_failures",
            "Snapshot builds from the Kubernetes API that failed (the last good one kept serving)",
            self.build_failures.clone(),
        );
    }

    pub(super) fn restarted(&self, kind: &'static str, reason: &'static str) {
        self.restarts
            .get_or_create(&RestartLabels { kind, reason })
            .inc();
    }

    /// Restarts counted for `kind` and `reason` (tests, diagnostics).
    pub fn restarts(&self, kind: &'static str, reason: &'static str) -> u64 {
        self.restarts
            .get_or_create(&RestartLabels { kind, reason })
            .get()
    }

    pub(super) fn built(&self, ok: bool) {
        if ok {
            self.snapshots.inc();
        } else {
            self.build_failures.inc();
        }
    }

    /// Snapshots built so far.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.get()
    }
}
