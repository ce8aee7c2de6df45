//! The options a waypoint starts with: listeners, transports, certificates, telemetry, limits.
//! Plain data, cloned into the runtime; the binary fills them from its flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::admin::{AdminServer, SetLogLevel};
use crate::config::build::MeshOptions;
use crate::http::HttpServerConfig;
use crate::overload::OverloadOptions;
use crate::stream::StreamConfig;
use crate::telemetry::access_log::AccessLogFormat;
use crate::telemetry::otlp::OtlpOptions;
use crate::tls::{CertPaths, IstiodCa};
use crate::transport::hbone::HboneOptions;
use crate::transport::listener::ListenAddr;
use crate::transport::proxy_header::ProxyConfig;
use crate::transport::sandwich::ListenerOptions;
use crate::upstream::UpstreamConfig;

/// Everything a waypoint needs to start. Built with [`WaypointOptions::new`] and then adjusted
/// field by field.
#[derive(Clone, Debug)]
pub struct WaypointOptions {
    /// A manifest file or a directory of them; watched for changes. Unused when the builder
    /// has a [`WaypointBuilder::config_source`](super::WaypointBuilder::config_source).
    pub config_path: PathBuf,
    /// How often the config source is checked for changes.
    pub reload_interval: Duration,
    /// Sandwich listeners (TCP and/or Unix socket), each expecting a PROXY header.
    pub sandwich: Vec<ListenAddr>,
    /// The DNS server ServiceEntries with `resolution: DNS` are resolved through; `None` uses
    /// the system's (`/etc/resolv.conf`).
    pub dns_server: Option<SocketAddr>,
    /// How PROXY headers are read on the sandwich listeners.
    pub proxy: ProxyConfig,
    /// Socket options of the sandwich listeners.
    pub listener: ListenerOptions,
    /// Limits of the HTTP server side.
    pub http: HttpServerConfig,
    /// Upstream timeouts, pooling and transport (plain, HBONE, co-located ztunnel).
    pub upstream: UpstreamConfig,
    /// Which endpoints are in the mesh (HBONE) and the trust domain of their identities.
    pub mesh: MeshOptions,
    /// Native HBONE inbound (mTLS HTTP/2 CONNECT, usually on `:15008`); `None` disables it.
    pub hbone: Option<HboneInbound>,
    /// The waypoint's certificates, needed by HBONE inbound and outbound; `None` runs without an
    /// identity (sandwich only, plain upstream).
    pub certs: Option<CertSettings>,
    /// The admin server (`/metrics`, `/healthz/ready`, `/config_dump`, `/logging`); `None`
    /// disables it.
    pub admin: Option<SocketAddr>,
    /// Access logs to stdout; `None` disables them (Istio's default).
    pub access_log: Option<AccessLogSettings>,
    /// The cluster name (Istio's `CLUSTER_ID`) for metric labels.
    pub cluster_id: Option<String>,
    /// The DNS suffix of Services (`cluster.local`).
    pub cluster_domain: String,
    /// Changes the log filter at run time (`POST /logging?level=`); `None` answers 501.
    pub log_level: Option<LogLevelHook>,
    /// Export one span per request to an OTLP/HTTP collector; `None` exports nothing.
    pub otlp: Option<OtlpOptions>,
    /// On [`RunningWaypoint::shutdown`](super::RunningWaypoint::shutdown), how long to keep accepting and serving after the
    /// readiness probe turned false, telling clients to go elsewhere (GOAWAY, `Connection:
    /// close`) before listeners close: the time a load balancer needs to notice (see
    /// [`crate::shutdown`]). Zero (the default here; the binary's is 5 s) stops at once.
    pub drain_grace: Duration,
    /// Connection, request and memory limits (the per-listener connection limit is
    /// `listener.max_connections`).
    pub overload: OverloadOptions,
    /// Protocol detection and TCP proxying: the detection timeout, the idle timeout.
    pub stream: StreamConfig,
    /// The Gateway API controller name this process reports GatewayClass status for at
    /// `/config_dump` (`--controller-name`); `None` (the default here): no class is ours.
    pub controller_name: Option<String>,
}

/// Access log format and sampling.
#[derive(Clone, Copy, Debug)]
pub struct AccessLogSettings {
    /// JSON (default) or text lines.
    pub format: AccessLogFormat,
    /// Fraction of requests logged, `0.0..=1.0`.
    pub sample: f64,
}

/// A function that changes the process's log filter (the binary wires it to its subscriber).
#[derive(Clone)]
pub struct LogLevelHook(pub SetLogLevel);

impl std::fmt::Debug for LogLevelHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogLevelHook")
    }
}

/// The waypoint's workload certificates: where they come from and whom they let in.
#[derive(Clone, Debug)]
pub struct CertSettings {
    /// Files, or istiod's CA.
    pub source: CertSource,
    /// Trust domains whose clients are accepted; empty = the waypoint's own.
    pub trust_domains: Vec<String>,
    /// How often the files (or, with istiod, the root file) are checked for rotation.
    pub reload_interval: Duration,
}

/// Where the workload certificates come from. Either way a rotated pair is used for new
/// handshakes while established connections keep theirs.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// Certificate chain, key and trust bundle files, watched.
    Files(CertPaths),
    /// Asked from istiod at start (nothing listens until the first certificate arrives) and
    /// renewed at half-life; see [`IstiodCa`].
    Istiod(IstiodCa),
}

/// The HBONE listener's address and HTTP/2 settings.
#[derive(Clone, Debug)]
pub struct HboneInbound {
    /// Address to listen on (ztunnels dial `<waypoint ip>:15008`).
    pub addr: SocketAddr,
    /// HTTP/2 and handshake settings.
    pub options: HboneOptions,
}

impl WaypointOptions {
    /// Defaults: the sandwich listener on `127.0.0.1:15088` (where a stock ztunnel connects),
    /// PROXY header required, config polled every 2 s.
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        WaypointOptions {
            config_path: config_path.into(),
            reload_interval: Duration::from_secs(2),
            sandwich: vec![ListenAddr::Tcp(([127, 0, 0, 1], 15088).into())],
            dns_server: None,
            proxy: ProxyConfig::default(),
            listener: ListenerOptions::default(),
            http: HttpServerConfig::default(),
            upstream: UpstreamConfig::default(),
            mesh: MeshOptions::default(),
            hbone: None,
            certs: None,
            admin: Some(AdminServer::DEFAULT_ADDR),
            access_log: None,
            cluster_id: None,
            cluster_domain: "cluster.local".into(),
            log_level: None,
            otlp: None,
            drain_grace: Duration::ZERO,
            overload: OverloadOptions::default(),
            stream: StreamConfig::default(),
            controller_name: None,
        }
    }
}
