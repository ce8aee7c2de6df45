//! Assembling a running waypoint: config source, snapshot store, listeners, upstream. This
//! module only builds and starts the parts; what happens to a connection and its requests is
//! [`crate::pipeline`], read top to bottom.
//!
//! The `waypoint` binary is a thin CLI over this module; a vendor embedding the crate starts a
//! waypoint the same way, with its own filters in the chain.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use waypoint_core::runtime::{Waypoint, WaypointOptions};
//! use waypoint_core::filter::{Decision, FilterSet, request_fn};
//!
//! let options = WaypointOptions::new("examples/quickstart");
//! let running = Waypoint::builder(options)
//!     // A bundle: the built-ins are `waypoint_filters::Builtins::new(settings)`.
//!     .install(|filters: &mut FilterSet| {
//!         filters.filter(request_fn("noop", |_req, _ctx| Decision::Continue));
//!     })
//!     .start()
//!     .await?;
//! println!("listening on {:?}", running.sandwich_addrs());
//! running.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use std::time::Duration;

use crate::admin::{AdminServer, AdminState};
use crate::config::build::EndpointStatsCache;
use crate::config::source::ConfigSource;
use crate::config::watch::ConfigWatcher;
use crate::config::{self, Config, LoadError};
use crate::filter::{FilterFactory, FilterSet, Install};
use crate::http::{HttpServer, UpgradePolicy};
use crate::overload::{Overload, memory};
use crate::pipeline::Pipeline;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::telemetry::access_log::AccessLogOptions;
use crate::telemetry::{Telemetry, TelemetryOptions};
use crate::tls::istiod::renew;
use crate::tls::{CertStore, IstiodError, TlsError};
use crate::transport::TransportMetrics;
use crate::transport::hbone::HboneListener;
use crate::transport::listener::ListenAddr;
use crate::transport::sandwich::SandwichListener;
use crate::upstream::{PoolCollector, Upstream};
use tokio::sync::mpsc;

mod options;

pub use options::{
    AccessLogSettings, CertSettings, CertSource, HboneInbound, LogLevelHook, WaypointOptions,
};

/// Why a waypoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The initial config could not be read.
    #[error("cannot load config: {0}")]
    Config(#[from] LoadError),
    /// Telemetry could not start (the access log writer, or an invalid OTLP endpoint).
    #[error("cannot start telemetry: {0}")]
    Telemetry(std::io::Error),
    /// The certificates could not be loaded.
    #[error("cannot load certificates: {0}")]
    Certs(#[from] TlsError),
    /// istiod's CA refused us for a reason asking again cannot change (another identity, a bad
    /// address); other failures are retried until a certificate arrives.
    #[error("no certificate from the CA: {0}")]
    Istiod(#[from] IstiodError),
    /// The config source stopped before its first config (named by the source).
    #[error("the {0} config source stopped before it synced")]
    SourceStopped(String),
    /// HBONE inbound was asked for without certificates.
    #[error("HBONE needs the waypoint's certificates (set the certificate paths)")]
    HboneWithoutCerts,
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: ListenAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts waypoints: [`Waypoint::builder`] is the one way to assemble one, for the binary and
/// for a vendor alike.
#[derive(Debug)]
pub struct Waypoint;

impl Waypoint {
    /// Begins assembling a waypoint with `options`. The filter chain starts empty: add the
    /// built-ins (`waypoint_filters::Builtins`) and your own with [`WaypointBuilder::install`].
    pub fn builder(options: WaypointOptions) -> WaypointBuilder {
        WaypointBuilder {
            options,
            filters: FilterSet::new(),
            registry: Registry::default(),
            source: None,
        }
    }
}

/// A waypoint being assembled: its options, its filter chain, the vendor `ExtensionRef`
/// filters and the metrics registry it reports into. [`WaypointBuilder::start`] serves it.
#[must_use = "a builder does nothing until `start` is called"]
pub struct WaypointBuilder {
    options: WaypointOptions,
    filters: FilterSet,
    registry: Registry,
    source: Option<Box<dyn ConfigSource>>,
}

impl std::fmt::Debug for WaypointBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaypointBuilder")
            .field("options", &self.options)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

impl WaypointBuilder {
    /// Adds a bundle of filters (the built-ins, a vendor's): its chain factories go after
    /// those added before, in the order the bundle adds them, and its `ExtensionRef` filters
    /// join the registry. The one registration entry point; see [`FilterSet`].
    pub fn install(mut self, bundle: impl Install) -> Self {
        self.filters.install(bundle);
        self
    }

    /// Appends one filter factory to the chain (shorthand for a bundle of one, as
    /// [`FilterSet::factory`]).
    pub fn factory(mut self, factory: impl FilterFactory) -> Self {
        self.filters.factory(factory);
        self
    }

    /// Reports waypoint's metrics into `registry`, which a vendor may already have filled with
    /// its own; the admin server's `/metrics` serves all of them.
    pub fn metrics_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Replaces the watched manifest files with `source` (the Kubernetes API, say):
    /// `options.config_path` and `reload_interval` are then unused. [`WaypointBuilder::start`]
    /// waits for the source's first config before it binds any listener; the admin server
    /// answers not-ready meanwhile.
    pub fn config_source(mut self, source: Box<dyn ConfigSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Loads the config, binds the listeners and starts serving. The chain is built by the
    /// factories, in order, for every config snapshot. Invalid resources in the initial config
    /// are reported and left out; a config that cannot be read at all is an error. With a
    /// [`config_source`](WaypointBuilder::config_source), this returns once the source has
    /// synced (listeners bound), or fails if it stops before that.
    pub async fn start(self) -> Result<RunningWaypoint, StartError> {
        let WaypointBuilder {
            options,
            filters,
            mut registry,
            mut source,
        } = self;
        let cache = Arc::new(EndpointStatsCache::with_mesh(options.mesh.clone()));
        // The watcher takes its baseline before the initial load, so an edit made while we
        // start is picked up by the first poll instead of being missed.
        let files = match source {
            Some(_) => None,
            None => {
                let watcher = ConfigWatcher::new(options.config_path.clone(), cache.clone());
                let initial = config::load::load_path_with(&options.config_path, &cache)?;
                Some((watcher, initial))
            }
        };
        let (factories, extensions) = filters.into_parts();
        let store = Arc::new(SnapshotStore::new(factories, extensions));
        let telemetry = Telemetry::new(
            &mut registry,
            TelemetryOptions {
                access_log: options.access_log.map(|s| AccessLogOptions {
                    format: s.format,
                    sample: s.sample,
                    ..Default::default()
                }),
                cluster_domain: options.cluster_domain.clone(),
                cluster: options.cluster_id.clone(),
                otlp: options.otlp.clone(),
            },
        )
        .map_err(StartError::Telemetry)?;
        let files = files.map(|(watcher, initial)| {
            let initial = store.apply(initial);
            telemetry.reload(true, initial.version);
            log_statuses(&initial);
            watcher
        });
        if let Some(source) = source.as_mut() {
            source.register_metrics(&mut registry);
        }

        let certs = match &options.certs {
            Some(settings) => Some(load_certs(settings).await?),
            None => None,
        };
        if options.hbone.is_some() && certs.is_none() {
            return Err(StartError::HboneWithoutCerts);
        }
        let metrics = Arc::new(TransportMetrics::new());
        metrics.register(&mut registry);
        let overload = Overload::new(options.overload.clone());
        overload.register(&mut registry);

        let (trigger, shutdown) = shutdown::channel();
        let upstream = Arc::new(Upstream::with_certs(
            options.upstream.clone(),
            certs.clone(),
        ));
        registry.register_collector(Box::new(PoolCollector(upstream.clone())));
        let upgrades = UpgradePolicy::new(options.http.allowed_upgrades.clone());
        upgrades.register(&mut registry);
        let http = HttpServer::new(&options.http).with_overload(overload.clone());
        let pipeline = Arc::new(
            Pipeline::new(store.clone(), http, upstream.clone(), telemetry.clone())
                .with_upgrade_policy(upgrades)
                .with_overload(overload.clone())
                .with_streams(options.stream),
        );
        tokio::spawn(memory::watch(overload.clone(), shutdown.clone()));

        // The admin server comes up before the listeners: with a config source, it answers
        // not-ready while the source syncs.
        let ready = Arc::new(AtomicBool::new(false));
        let admin_addr = match options.admin {
            Some(addr) => {
                let state = AdminState {
                    registry: Arc::new(registry),
                    store: store.clone(),
                    ready: ready.clone(),
                    set_log_level: options.log_level.as_ref().map(|hook| hook.0.clone()),
                    overload: Some(overload.clone()),
                    controller_name: options.controller_name.clone(),
                    upstream: Some(upstream.clone()),
                };
                let admin =
                    AdminServer::bind(addr, state)
                        .await
                        .map_err(|source| StartError::Bind {
                            addr: ListenAddr::Tcp(addr),
                            source,
                        })?;
                let local = admin.local_addr();
                tokio::spawn(admin.serve(shutdown.clone()));
                Some(local)
            }
            None => None,
        };

        let reload = {
            let (store, telemetry) = (store.clone(), telemetry.clone());
            move |result: Result<Config, LoadError>| match result {
                Ok(config) => {
                    let snapshot = store.apply(config);
                    telemetry.reload(true, snapshot.version);
                    tracing::info!(version = snapshot.version, "config reloaded");
                    log_statuses(&snapshot);
                }
                Err(err) => {
                    telemetry.reload(false, store.load().version);
                    tracing::error!(error = %err, "config reload failed; still serving the last good config")
                }
            }
        };
        if let Some(source) = source {
            await_first_sync(source, cache.clone(), reload.clone(), shutdown.clone()).await?;
        }

        let hbone = match (&options.hbone, &certs) {
            (Some(inbound), Some(certs)) => Some(
                HboneListener::bind(
                    inbound.addr,
                    certs.clone(),
                    inbound.options.clone(),
                    metrics.clone(),
                )
                .await
                .map_err(|source| StartError::Bind {
                    addr: ListenAddr::Tcp(inbound.addr),
                    source,
                })?,
            ),
            _ => None,
        };
        let hbone = hbone.map(|l| {
            let label = format!("hbone:{}", l.local_addr());
            l.with_gate(overload.gate(label, options.listener.max_connections))
        });
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
            listeners.push(listener.with_overload(&overload));
        }
        let sandwich_addrs = listeners.iter().map(|l| l.local_addr()).collect();
        let hbone_addr = hbone.as_ref().map(|l| l.local_addr());
        // Every binding ends in the same place: a byte stream and its ConnInfo, served by the
        // pipeline.
        let handler = {
            let shutdown = shutdown.clone();
            move |io, conn| pipeline.serve_connection(io, conn, shutdown.clone())
        };
        for listener in listeners {
            tokio::spawn(listener.serve(handler.clone(), shutdown.clone()));
        }
        if let Some(listener) = hbone {
            tokio::spawn(listener.serve(handler.clone(), shutdown.clone()));
        }
        if let (Some(certs), Some(settings)) = (&certs, &options.certs) {
            let (certs, interval) = (certs.clone(), settings.reload_interval);
            match &settings.source {
                CertSource::Files(_) => {
                    tokio::spawn(certs.watch(interval, shutdown.clone()));
                }
                CertSource::Istiod(ca) => {
                    tokio::spawn(renew::keep_renewed(
                        ca.clone(),
                        certs,
                        interval,
                        shutdown.clone(),
                    ));
                }
            }
        }
        // ServiceEntries with `resolution: DNS`: resolved beside the builds (see `crate::dns`).
        match crate::dns::resolver(options.dns_server) {
            Ok(resolver) => {
                tokio::spawn(crate::dns::keep_resolved(
                    cache.dns().clone(),
                    resolver,
                    shutdown.clone(),
                ));
            }
            Err(e) => tracing::error!(error = %e,
                "ServiceEntries with resolution DNS will have no endpoints"),
        }
        if let Some(watcher) = files {
            tokio::spawn(watcher.run(options.reload_interval, reload, shutdown.clone()));
        }

        // Listeners, config source and admin are up: from here the readiness probe may pass.
        ready.store(true, Ordering::Release);
        Ok(RunningWaypoint {
            drain_grace: options.drain_grace,
            ready,
            admin_addr,
            store,
            sandwich_addrs,
            hbone_addr,
            certs,
            metrics,
            overload,
            trigger,
            _shutdown: shutdown,
        })
    }
}

/// The certificate store from files, or from istiod's CA (asked until it answers).
async fn load_certs(settings: &CertSettings) -> Result<Arc<CertStore>, StartError> {
    let trust_domains = settings.trust_domains.clone();
    match &settings.source {
        CertSource::Files(paths) => Ok(CertStore::load(paths.clone(), trust_domains)?),
        CertSource::Istiod(ca) => {
            tracing::info!(ca = %ca.address, identity = %ca.identity, "asking the CA for the workload certificate; no listener until it arrives");
            let certs = renew::fetch_until_issued(ca, true).await?;
            Ok(CertStore::from_certs(certs, trust_domains)?)
        }
    }
}

/// Starts `source` and waits for its first config, which `apply` serves; later configs are
/// applied as they come, until the source stops.
async fn await_first_sync(
    source: Box<dyn ConfigSource>,
    cache: Arc<EndpointStatsCache>,
    apply: impl Fn(Result<Config, LoadError>) + Send + 'static,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let name = source.name().to_owned();
    // One slot: a source coalesces its own changes, and a slow apply should hold it back
    // rather than queue stale configs.
    let (updates, mut received) = mpsc::channel(1);
    tokio::spawn(source.run(cache, updates, shutdown));
    tracing::info!(source = %name, "waiting for the config source to sync; not ready and no listener until then");
    let Some(first) = received.recv().await else {
        return Err(StartError::SourceStopped(name));
    };
    apply(Ok(first));
    tracing::info!(source = %name, "config source synced");
    tokio::spawn(async move {
        while let Some(config) = received.recv().await {
            apply(Ok(config));
        }
    });
    Ok(())
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
    ready: Arc<AtomicBool>,
    admin_addr: Option<SocketAddr>,
    sandwich_addrs: Vec<ListenAddr>,
    hbone_addr: Option<SocketAddr>,
    certs: Option<Arc<CertStore>>,
    metrics: Arc<TransportMetrics>,
    overload: Arc<Overload>,
    trigger: ShutdownTrigger,
    drain_grace: Duration,
    // Kept so the drain waits for tasks, not for this handle.
    _shutdown: Shutdown,
}

impl RunningWaypoint {
    /// The bound sandwich listener addresses (real ports when port 0 was asked for).
    pub fn sandwich_addrs(&self) -> &[ListenAddr] {
        &self.sandwich_addrs
    }

    /// The admin server's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The bound HBONE listener address, when HBONE inbound is on.
    pub fn hbone_addr(&self) -> Option<SocketAddr> {
        self.hbone_addr
    }

    /// The waypoint's certificates, when it has an identity.
    pub fn certs(&self) -> Option<&Arc<CertStore>> {
        self.certs.as_ref()
    }

    /// The snapshot store (current config, statuses).
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// Transport counters (accepted connections, rejected PROXY headers).
    pub fn transport_metrics(&self) -> &Arc<TransportMetrics> {
        &self.metrics
    }

    /// The overload state: open connections, memory watermark, and its metrics.
    pub fn overload(&self) -> &Arc<Overload> {
        &self.overload
    }

    /// Fails the readiness probe, drains for the configured grace (still accepting; clients are
    /// told to go elsewhere), then stops accepting and lets in-flight requests finish. All of it
    /// takes at most `deadline`; returns whether everything drained in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let RunningWaypoint {
            trigger,
            _shutdown,
            ready,
            drain_grace,
            ..
        } = self;
        // Connections are told to go elsewhere before the readiness probe fails, so a client
        // that saw the probe fail is never served as if nothing had happened; then the mesh
        // stops sending new connections while the listeners still accept for the grace.
        trigger.begin_draining();
        ready.store(false, Ordering::Release);
        drop(_shutdown);
        trigger.drain(drain_grace, deadline).await
    }
}
