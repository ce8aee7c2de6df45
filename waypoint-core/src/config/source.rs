//! Config sources the runtime drives besides the manifest files: anything that produces whole
//! [`Config`]s over time (the Kubernetes API, in `waypoint-kube`).
//!
//! The contract is deliberately small: a source runs as one task, builds each config with the
//! same reader and builder the files use (`load::load_objects_with`), and sends it. The first
//! config sent means "synced": until then the runtime keeps readiness false and binds no
//! listener, because serving from a partial view of the cluster would answer 404 or 503 for
//! traffic that a moment later would have been served. A source decides for itself what a
//! rejected input means; the runtime only ever swaps in what it is sent, so a source keeps the
//! last good config simply by not sending.
//!
//! waypoint-core knows nothing of Kubernetes: the trait is the whole seam, which keeps the
//! plain build free of the API client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::Config;
use super::build::EndpointStatsCache;
use crate::shutdown::Shutdown;

/// The future a [`ConfigSource`] runs as.
pub type SourceTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A producer of configs that replaces the watched manifest files (see the module docs).
pub trait ConfigSource: Send + 'static {
    /// A short name for logs (`kubernetes`).
    fn name(&self) -> &str;

    /// Registers the source's metrics; called once, before [`ConfigSource::run`].
    fn register_metrics(&mut self, _registry: &mut Registry) {}

    /// The source's task: sends every new config into `updates` (the first one once every
    /// input has been read once) until `shutdown` triggers or `updates` closes. Configs must be
    /// built with `cache` so endpoint statistics survive reloads.
    fn run(
        self: Box<Self>,
        cache: Arc<EndpointStatsCache>,
        updates: mpsc::Sender<Config>,
        shutdown: Shutdown,
    ) -> SourceTask;
}
