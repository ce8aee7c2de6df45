//! The status writer's metrics, registered into the process registry so `/metrics` shows them
//! beside the proxy's: how many status writes ended how, per kind, and whether this replica
//! holds the status Lease (exactly one replica should show 1).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The labels of `waypoint_status_writes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `Gateway`, `GatewayClass`, `HTTPRoute`, `GRPCRoute`.
    pub kind: &'static str,
    /// `written`, `conflict` (one per retried conflict), `not_found` (the object is gone),
    /// `error` (any other failure; retried with backoff).
    pub result: &'static str,
}

/// Counters and the leader gauge. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct StatusMetrics {
    writes: Family<WriteLabels, Counter>,
    leader: Gauge,
}

impl StatusMetrics {
    /// Metrics registered into `registry` as `waypoint_status_writes_total` and
    /// `waypoint_status_lease_held`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = StatusMetrics::default();
        registry.register(
            "waypoint_status_writes",
            "Status writes to the Kubernetes API server, by object kind and result",
            metrics.writes.clone(),
        );
        registry.register(
            "waypoint_status_lease_held",
            "1 while this replica holds the status Lease (only the holder writes status)",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Counts one write of `kind` that ended with `result`.
    pub fn write(&self, kind: &'static str, result: &'static str) {
        self.writes
            .get_or_create(&WriteLabels { kind, result })
            .inc();
    }

    /// How many writes of `kind` ended with `result` so far.
    pub fn writes(&self, kind: &'static str, result: &'static str) -> u64 {
        self.writes
            .get_or_create(&WriteLabels { kind, result })
            .get()
    }

    /// Records whether this replica holds the Lease.
    pub fn set_leader(&self, held: bool) {
        self.leader.set(i64::from(held));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_the_lease_show_in_the_registry_under_their_names() {
        let mut registry = Registry::default();
        let metrics = StatusMetrics::new(&mut registry);
        metrics.write("HTTPRoute", "written");
        metrics.write("HTTPRoute", "written");
        metrics.set_leader(true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains(r#"waypoint_status_writes_total{kind="HTTPRoute",result="written"} 2"#),
            "{text}"
        );
        assert!(text.contains("waypoint_status_lease_held 1"), "{text}");
    }
}
