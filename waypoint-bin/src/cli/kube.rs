//! `--kube`: the Kubernetes API as config source, and the status writer beside it. Both talk
//! through one API client (one set of credentials, one connection pool).
//!
//! waypoint-kube is always built in: a cargo feature to leave it out saved about 6 s of a debug
//! build (its dependencies are the core's), and the status writer's flags parse with its types.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use waypoint_core::config::source::ConfigSource;
use waypoint_core::shutdown::{self, ShutdownTrigger};
use waypoint_core::snapshot::SnapshotStore;
use waypoint_kube::status::{StatusMetrics, StatusSettings, StatusWriter};
use waypoint_kube::{KubeApi, KubeClient, KubeSource, KubeSourceOptions};

use super::run::{KubeSettings, StatusFlags};

/// How long the status writer may take to release its Lease on shutdown.
const STATUS_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The Kubernetes side of `waypoint run --kube`, before the waypoint starts.
pub(super) struct KubeSide {
    api: Arc<dyn KubeApi>,
    status: StatusSettings,
    metrics: StatusMetrics,
}

impl KubeSide {
    /// The API client from the environment (KUBECONFIG, the in-cluster ServiceAccount, or
    /// ~/.kube/config), the config source for `settings`, and the status writer's settings
    /// for `flags` and this waypoint's Gateway; its metrics go into `registry`.
    pub(super) fn new(
        settings: KubeSettings,
        flags: StatusFlags,
        gateway: Option<(String, String)>,
        registry: &mut Registry,
    ) -> Result<(Self, Box<dyn ConfigSource>), String> {
        let api: Arc<dyn KubeApi> =
            Arc::new(KubeClient::from_environment().map_err(|e| e.to_string())?);
        let options = KubeSourceOptions {
            namespace: settings.namespace,
            ..KubeSourceOptions::default()
        };
        let source = Box::new(KubeSource::new(api.clone(), options));
        let status = StatusSettings::for_process(flags.controller_name, gateway, flags.lease_name);
        let side = KubeSide {
            api,
            status,
            metrics: StatusMetrics::new(registry),
        };
        Ok((side, source))
    }

    /// Starts writing status from the snapshots `store` serves; stop it with
    /// [`StatusTask::stop`].
    pub(super) fn start_status(self, store: &SnapshotStore) -> StatusTask {
        let (trigger, shutdown) = shutdown::channel();
        let writer = StatusWriter::new(self.api, self.status).with_metrics(self.metrics);
        tokio::spawn(writer.run(store.subscribe(), shutdown));
        StatusTask(trigger)
    }
}

/// The running status writer.
pub(super) struct StatusTask(ShutdownTrigger);

impl StatusTask {
    /// Stops writing and releases the Lease, waiting at most a few seconds.
    pub(super) async fn stop(self) {
        if !self.0.shutdown(STATUS_STOP_DEADLINE).await {
            tracing::warn!("the status writer did not stop in time (Lease not released)");
        }
    }
}
