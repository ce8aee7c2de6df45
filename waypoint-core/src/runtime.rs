//! Assembling a running waypoint: config source, snapshot store, listeners, upstream.
//!
//! The `waypoint` binary is a thin CLI over this module; a vendor embedding the crate starts a
//! waypoint the same way, with its own filters in the chain.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use waypoint_core::runtime::{Waypoint, WaypointOptions};
//! use waypoint_core::filter::ExtensionRegistry;
//!
//! let options = WaypointOptions::new("examples/quickstart");
//! let running = Waypoint::start(options, vec![/* filter factories */], ExtensionRegistry::new()).await?;
//! println!("listening on {:?}", running.sandwich_addrs());
//! running.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::build::EndpointStatsCache;
use crate::config::watch::ConfigWatcher;
use crate::config::{self, LoadError};
use crate::filter::{ExtensionRegistry, FilterFactory};
use crate::http::{HttpServer, HttpServerConfig};
use crate::proxy::{Proxy, Snapshot, SnapshotStore};
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::transport::listener::{ListenAddr, ListenerOptions, SandwichListener};
use crate::transport::metrics::TransportMetrics;
use crate::transport::proxy_protocol::ProxyConfig;
use crate::upstream::{Upstream, UpstreamConfig};

/// Everything a waypoint needs to start. Built with [`WaypointOptions::new`] and then adjusted
/// field by field.
#[derive(Clone, Debug)]
pub struct WaypointOptions {
    /// A manifest file or a directory of them; watched for changes.
    pub config_path: PathBuf,
    /// How often the config source is checked for changes.
    pub reload_interval: Duration,
    /// Sandwich listeners (TCP and/or Unix socket), each expecting a PROXY header.
    pub sandwich: Vec<ListenAddr>,
    /// How PROXY headers are read on the sandwich listeners.
    pub proxy: ProxyConfig,
    /// Socket options of the sandwich listeners.
    pub listener: ListenerOptions,
    /// Limits of the HTTP server side.
    pub http: HttpServerConfig,
    /// Upstream timeouts and pooling.
    pub upstream: UpstreamConfig,
}

impl WaypointOptions {
    /// Defaults: the sandwich listener on `127.0.0.1:15088` (where a stock ztunnel connects),
    /// PROXY header required, config polled every 2 s.
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        WaypointOptions {
            config_path: config_path.into(),
            reload_interval: Duration::from_secs(2),
            sandwich: vec![ListenAddr::Tcp(([127, 0, 0, 1], 15088).into())],
            proxy: ProxyConfig::default(),
            listener: ListenerOptions::default(),
            http: HttpServerConfig::default(),
            upstream: UpstreamConfig::default(),
        }
    }
}

/// Why a waypoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The initial config could not be read.
    #[error("cannot load config: {0}")]
    Config(#[from] LoadError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: ListenAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts waypoints.
#[derive(Debug)]
pub struct Waypoint;

impl Waypoint {
    /// Loads the config, binds the listeners and starts serving. The chain is built by
    /// `factories`, in order, for every config snapshot. Invalid resources in the initial config
    /// are reported and left out; a config that cannot be read at all is an error.
    pub async fn start(
        options: WaypointOptions,
        factories: Vec<Arc<dyn FilterFactory>>,
        extensions: ExtensionRegistry,
    ) -> Result<RunningWaypoint, StartError> {
        let cache = Arc::new(EndpointStatsCache::default());
        // The watcher takes its baseline before the initial load, so an edit made while we
        // start is picked up by the first poll instead of being missed.
        let watcher = ConfigWatcher::new(options.config_path.clone(), cache.clone());
        let initial = config::load::load_path_with(&options.config_path, &cache)?;
        let store = Arc::new(SnapshotStore::new(factories, extensions));
        log_statuses(&store.apply(initial));

        let metrics = Arc::new(TransportMetrics::new());
        let mut listeners = Vec::new();
        for addr in &options.sandwich {
            let listener = SandwichListener::bind(
                addr,
                options.proxy.clone(),
                options.listener.clone(),
                metrics.clone(),
            )
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.clone(),
                source,
            })?;
            listeners.push(listener);
        }

        let (trigger, shutdown) = shutdown::channel();
        let proxy = Arc::new(Proxy::new(
            store.clone(),
            Arc::new(Upstream::new(options.upstream.clone())),
        ));
        let http = HttpServer::new(&options.http);
        let sandwich_addrs = listeners.iter().map(|l| l.local_addr()).collect();
        for listener in listeners {
            let (proxy, http, conn_shutdown) = (proxy.clone(), http.clone(), shutdown.clone());
            let handler = move |io, conn| {
                let (proxy, http, shutdown) = (proxy.clone(), http.clone(), conn_shutdown.clone());
                async move {
                    http.serve(
                        io,
                        Arc::new(conn),
                        move |req, conn| {
                            let proxy = proxy.clone();
                            async move { proxy.handle(req, conn).await }
                        },
                        shutdown,
                    )
                    .await
                }
            };
            tokio::spawn(listener.serve(handler, shutdown.clone()));
        }

        let reload_store = store.clone();
        tokio::spawn(watcher.run(
            options.reload_interval,
            move |result| match result {
                Ok(config) => {
                    let snapshot = reload_store.apply(config);
                    tracing::info!(version = snapshot.version, "config reloaded");
                    log_statuses(&snapshot);
                }
                Err(err) => tracing::error!(error = %err, "config reload failed; still serving the last good config"),
            },
            shutdown.clone(),
        ));

        Ok(RunningWaypoint {
            store,
            sandwich_addrs,
            metrics,
            trigger,
            _shutdown: shutdown,
        })
    }
}

fn log_statuses(snapshot: &Snapshot) {
    for status in snapshot.statuses() {
        for c in status.conditions.iter().filter(|c| !c.status) {
            tracing::warn!(resource = %status.resource, condition = %c.kind, reason = %c.reason, "{}", c.message);
        }
    }
}

/// A started waypoint.
#[derive(Debug)]
pub struct RunningWaypoint {
    store: Arc<SnapshotStore>,
    sandwich_addrs: Vec<ListenAddr>,
    metrics: Arc<TransportMetrics>,
    trigger: ShutdownTrigger,
    // Kept so the drain waits for tasks, not for this handle.
    _shutdown: Shutdown,
}

impl RunningWaypoint {
    /// The bound sandwich listener addresses (real ports when port 0 was asked for).
    pub fn sandwich_addrs(&self) -> &[ListenAddr] {
        &self.sandwich_addrs
    }

    /// The snapshot store (current config, statuses).
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// Transport counters (accepted connections, rejected PROXY headers).
    pub fn transport_metrics(&self) -> &Arc<TransportMetrics> {
        &self.metrics
    }

    /// Stops accepting, lets in-flight requests finish for up to `deadline`, and returns whether
    /// everything drained in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let RunningWaypoint {
            trigger, _shutdown, ..
        } = self;
        drop(_shutdown);
        trigger.shutdown(deadline).await
    }
}
