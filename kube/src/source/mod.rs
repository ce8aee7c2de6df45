//! The Kubernetes API as a config source: one reflector per watched kind, and a coalescer that
//! turns their changes into whole configs through the same reader and builder the manifest
//! files go through (`waypoint_core::config::load::load_objects_with`).
//!
//! Why whole configs: the builder validates across objects (routes against Gateways, backends
//! against Services and ReferenceGrants), so an incremental update would need its own copy of
//! that logic. Rebuilding is cheap next to the API round trips that cause it, and a burst of
//! events (a `kubectl apply` of twenty objects, a rollout moving every EndpointSlice) builds
//! once: the coalescer waits until [`COALESCE_QUIET`] passes without a change, but never more
//! than [`COALESCE_MAX`] after the first one, so a cluster that never stops changing still
//! gets fresh snapshots.
//!
//! Nothing is sent before every kind has been listed once: the runtime takes the first config
//! as "synced" and only then binds listeners and reports ready.

mod metrics;
pub(crate) mod reflector;
pub(crate) mod store;
pub mod strip;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::time::Instant;
use waypoint_core::config::Config;
use waypoint_core::config::build::EndpointStatsCache;
use waypoint_core::config::load::load_objects_with;
use waypoint_core::config::source::{ConfigSource, SourceTask};
use waypoint_core::shutdown::Shutdown;

use crate::api::{ApiResource, KubeApi, kinds};
pub use metrics::SourceMetrics;
use reflector::Reflector;
pub use reflector::{BACKOFF_INITIAL, BACKOFF_MAX};
use store::Stores;

/// How long the source waits without a change before building a snapshot.
pub const COALESCE_QUIET: Duration = Duration::from_millis(100);
/// The longest a change waits for its snapshot while changes keep coming.
pub const COALESCE_MAX: Duration = Duration::from_secs(1);

/// The kinds watched, in the order their objects are given to the builder.
pub const WATCHED: [ApiResource; 16] = [
    kinds::NAMESPACE,
    kinds::GATEWAY_CLASS,
    kinds::GATEWAY,
    kinds::SECRET,
    kinds::SERVICE,
    kinds::ENDPOINT_SLICE,
    kinds::POD,
    kinds::HTTP_ROUTE,
    kinds::GRPC_ROUTE,
    kinds::TCP_ROUTE,
    kinds::TLS_ROUTE,
    kinds::REFERENCE_GRANT,
    kinds::AUTHORIZATION_POLICY,
    kinds::REQUEST_AUTHENTICATION,
    kinds::DESTINATION_RULE,
    kinds::SERVICE_ENTRY,
];

/// What the source watches and how it paces snapshots.
#[derive(Clone, Debug)]
pub struct KubeSourceOptions {
    /// Watch namespaced kinds in this namespace only; `None` watches every namespace.
    /// Cluster-scoped kinds (GatewayClass, Namespace) are always watched cluster-wide.
    pub namespace: Option<String>,
    /// See [`COALESCE_QUIET`].
    pub coalesce_quiet: Duration,
    /// See [`COALESCE_MAX`].
    pub coalesce_max: Duration,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            namespace: None,
            coalesce_quiet: COALESCE_QUIET,
            coalesce_max: COALESCE_MAX,
        }
    }
}

/// The Kubernetes config source (see the module docs).
pub struct KubeSource {
    api: Arc<dyn KubeApi>,
    options: KubeSourceOptions,
    metrics: SourceMetrics,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source reading through `api`.
    pub fn new(api: Arc<dyn KubeApi>, options: KubeSourceOptions) -> Self {
        KubeSource {
            api,
            options,
            metrics: SourceMetrics::default(),
        }
    }

    /// The source's counters (shared with the running task).
    pub fn metrics(&self) -> &SourceMetrics {
        &self.metrics
    }

    async fn run_inner(
        self,
        cache: Arc<EndpointStatsCache>,
        updates: mpsc::Sender<Config>,
        shutdown: Shutdown,
    ) {
        let stores = Arc::new(Stores::new(&WATCHED));
        for (slot, resource) in WATCHED.iter().enumerate() {
            let reflector = Reflector {
                api: self.api.clone(),
                resource: *resource,
                // Cluster-scoped kinds are watched cluster-wide whatever the namespace.
                namespace: self
                    .options
                    .namespace
                    .clone()
                    .filter(|_| resource.namespaced),
                slot,
                stores: stores.clone(),
                metrics: self.metrics.clone(),
            };
            tokio::spawn(reflector.run(shutdown.clone()));
        }
        // A ServiceEntry's DNS answer changing is a reason to rebuild although no object did.
        let mut dns_seen = cache.dns().generation();
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = updates.closed() => return,
                _ = stores.changed.notified() => {}
                _ = cache.dns().changed_since(dns_seen) => {}
            }
            if !self.settle(&stores, &shutdown).await {
                return;
            }
            // Read before building: an answer arriving during the build triggers one more.
            dns_seen = cache.dns().generation();
            let Some(objects) = stores.objects() else {
                continue; // not every kind has synced yet
            };
            let cache = cache.clone();
            let built =
                tokio::task::spawn_blocking(move || load_objects_with(objects, &cache)).await;
            match built {
                Ok(Ok(config)) => {
                    self.metrics.built(true);
                    if updates.send(config).await.is_err() {
                        return;
                    }
                }
                Ok(Err(error)) => {
                    self.metrics.built(false);
                    tracing::error!(%error, "cannot build a config from the Kubernetes API; still serving the last good one");
                }
                Err(error) => {
                    self.metrics.built(false);
                    tracing::error!(%error, "the config build panicked; still serving the last good one");
                }
            }
        }
    }

    /// Waits until changes pause for the quiet time (or the cap passes); `false` on shutdown.
    async fn settle(&self, stores: &Stores, shutdown: &Shutdown) -> bool {
        let cap = Instant::now() + self.options.coalesce_max;
        loop {
            let quiet = (Instant::now() + self.options.coalesce_quiet).min(cap);
            tokio::select! {
                _ = shutdown.wait() => return false,
                _ = tokio::time::sleep_until(quiet) => return true,
                _ = stores.changed.notified() => {
                    if Instant::now() >= cap {
                        return true;
                    }
                }
            }
        }
    }
}

impl ConfigSource for KubeSource {
    fn name(&self) -> &str {
        "kubernetes"
    }

    fn register_metrics(&mut self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    fn run(
        self: Box<Self>,
        cache: Arc<EndpointStatsCache>,
        updates: mpsc::Sender<Config>,
        shutdown: Shutdown,
    ) -> SourceTask {
        Box::pin(self.run_inner(cache, updates, shutdown))
    }
}
