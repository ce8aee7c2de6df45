//! `waypoint run`: serve until SIGTERM/SIGINT.

use super::{
    Limit, PolicyArgs, parse_bytes, parse_bytes_limit, parse_count_limit, parse_duration,
    parse_octal, parse_tlv_type, parse_upstream_mode, wait_for_signal,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use waypoint_core::config::build::MeshOptions;
use waypoint_core::filter::ExtensionRegistry;
use waypoint_core::runtime::{
    AccessLogSettings, CertSettings, HboneInbound, LogLevelHook, Waypoint, WaypointOptions,
};
use waypoint_core::telemetry::access_log::AccessLogFormat;
use waypoint_core::telemetry::otlp::OtlpOptions;
use waypoint_core::tls::CertPaths;
use waypoint_core::transport::hbone::HboneOptions;
use waypoint_core::transport::listener::ListenAddr;
use waypoint_core::upstream::UpstreamMode;

/// `waypoint run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Manifest file or directory (Gateway, Service, EndpointSlice, HTTPRoute, ...); watched.
    #[arg(long, env = "WAYPOINT_CONFIG")]
    pub config: PathBuf,
    /// Sandwich listeners (PROXY protocol required): `tcp:ADDR:PORT`, `ADDR:PORT`, or
    /// `unix:/path`. Repeat or comma-separate for several.
    #[arg(
        long,
        env = "WAYPOINT_SANDWICH_LISTEN",
        value_delimiter = ',',
        default_value = "127.0.0.1:15088"
    )]
    pub sandwich_listen: Vec<ListenAddr>,
    /// Accept connections without a PROXY header (served with no identity).
    #[arg(long, env = "WAYPOINT_PROXY_OPTIONAL")]
    pub proxy_optional: bool,
    /// Time allowed for a client to send its PROXY header.
    #[arg(long, env = "WAYPOINT_PROXY_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub proxy_read_timeout: Duration,
    /// PROXY TLV type carrying source workload metadata (W3C baggage).
    #[arg(long, env = "WAYPOINT_METADATA_TLV", default_value = "0xE0", value_parser = parse_tlv_type)]
    pub metadata_tlv: u8,
    /// File mode of Unix socket listeners (octal).
    #[arg(long, env = "WAYPOINT_UNIX_SOCKET_MODE", default_value = "660", value_parser = parse_octal)]
    pub unix_socket_mode: u32,
    /// Upstream connect timeout.
    #[arg(long, env = "WAYPOINT_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Upstream request timeout when the route sets none.
    #[arg(long, env = "WAYPOINT_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How often the config is checked for changes.
    #[arg(long, env = "WAYPOINT_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub reload_interval: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "WAYPOINT_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Worker threads (default: one per core).
    #[arg(long, env = "WAYPOINT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Do not open sandwich listeners (HBONE only).
    #[arg(long, env = "WAYPOINT_NO_SANDWICH")]
    pub no_sandwich: bool,
    /// Terminate HBONE (mTLS HTTP/2 CONNECT) on this address, e.g. `0.0.0.0:15008`.
    #[arg(long, env = "WAYPOINT_HBONE_LISTEN")]
    pub hbone_listen: Option<SocketAddr>,
    /// Directory with the waypoint's `cert-chain.pem`, `key.pem` and `root-cert.pem` (Istio's
    /// layout); the files are watched and rotated certificates used for new handshakes.
    #[arg(long, env = "WAYPOINT_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The mesh's trust domain: endpoint identities are expected in it, and HBONE clients of it
    /// are accepted.
    #[arg(long, env = "WAYPOINT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Further trust domains whose HBONE clients are accepted.
    #[arg(long, env = "WAYPOINT_ACCEPT_TRUST_DOMAINS", value_delimiter = ',')]
    pub accept_trust_domains: Vec<String>,
    /// How endpoints are reached: `plain` (TCP to pod IPs; sandwiched, the in-pod ztunnel
    /// captures it), `auto` (HBONE to mesh endpoints, TCP to the rest; needs --certs-dir), or
    /// `ztunnel-unix:/path` (the co-located ztunnel's socket, PROXY v2 header first).
    #[arg(long, env = "WAYPOINT_UPSTREAM", default_value = "plain", value_parser = parse_upstream_mode)]
    pub upstream: UpstreamMode,
    /// Namespaces whose endpoints are in the mesh even without a `Namespace` manifest labelled
    /// `istio.io/dataplane-mode: ambient`.
    #[arg(long, env = "WAYPOINT_AMBIENT_NAMESPACES", value_delimiter = ',')]
    pub ambient_namespaces: Vec<String>,
    /// The waypoint's own IP, named as source toward the co-located ztunnel when the client's is
    /// unknown.
    #[arg(long, env = "POD_IP")]
    pub own_ip: Option<std::net::IpAddr>,
    /// Admin server address (`/metrics`, `/healthz/ready`, `/config_dump`, `/logging`), or `off`.
    #[arg(long, env = "WAYPOINT_ADMIN_ADDR", default_value = "127.0.0.1:15000", value_parser = parse_admin_addr)]
    pub admin_addr: AdminAddr,
    /// Access log lines on stdout: `json`, `text` or `off`.
    #[arg(long, env = "WAYPOINT_ACCESS_LOG", default_value = "off")]
    pub access_log: AccessLogChoice,
    /// Fraction of requests written to the access log.
    #[arg(long, env = "WAYPOINT_ACCESS_LOG_SAMPLE", default_value = "1.0")]
    pub access_log_sample: f64,
    /// Policy filter settings.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Cluster name for metric labels (Istio's `CLUSTER_ID`).
    #[arg(long, env = "CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Export one span per request to this OTLP/HTTP collector (`http://host:4318`).
    #[arg(long, env = "WAYPOINT_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of requests exported as spans.
    #[arg(long, env = "WAYPOINT_OTLP_SAMPLE", default_value = "1.0")]
    pub otlp_sample: f64,
    /// DNS suffix of Services, for `destination_service` labels.
    #[arg(long, env = "WAYPOINT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Downstream connections open at once, all listeners together (HBONE connections and
    /// their CONNECT streams included); more are closed at once. `none` for no limit.
    #[arg(long, env = "WAYPOINT_MAX_CONNECTIONS", default_value = "100000", value_parser = parse_count_limit)]
    pub max_connections: Limit,
    /// Downstream connections open at once on each listener; more are closed at once.
    #[arg(long, env = "WAYPOINT_MAX_CONNECTIONS_PER_LISTENER", default_value = "none", value_parser = parse_count_limit)]
    pub max_connections_per_listener: Limit,
    /// Requests in flight at once; more are answered 503 `overloaded` (response flag `OM`).
    #[arg(long, env = "WAYPOINT_MAX_REQUESTS_IN_FLIGHT", default_value = "none", value_parser = parse_count_limit)]
    pub max_requests_in_flight: Limit,
    /// Largest request body (`1Mi`, `10M`, bytes): 413 when `content-length` is larger, the
    /// request aborted when a streamed body grows past it.
    #[arg(long, env = "WAYPOINT_MAX_REQUEST_BODY_BYTES", default_value = "none", value_parser = parse_bytes_limit)]
    pub max_request_body_bytes: Limit,
    /// Largest HTTP/1.1 request head (request line and headers); larger: 431.
    #[arg(long, env = "WAYPOINT_MAX_REQUEST_HEADERS_BYTES", default_value = "64Ki", value_parser = parse_bytes)]
    pub max_request_headers_bytes: u64,
    /// Largest HTTP/2 request header list (SETTINGS_MAX_HEADER_LIST_SIZE); larger: 431 and the
    /// stream reset.
    #[arg(long, env = "WAYPOINT_H2_MAX_HEADER_LIST_BYTES", default_value = "64Ki", value_parser = parse_bytes)]
    pub h2_max_header_list_bytes: u64,
    /// HTTP/2 concurrent streams per downstream connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(
        long,
        env = "WAYPOINT_H2_MAX_CONCURRENT_STREAMS",
        default_value = "200"
    )]
    pub h2_max_concurrent_streams: u32,
    /// Resident memory (`512Mi`, `2Gi`) above which new connections are refused, readiness
    /// fails and idle connections are closed, until it is back under 90 % of it. `none`: off.
    #[arg(long, env = "WAYPOINT_MEMORY_LIMIT", default_value = "none", value_parser = parse_bytes_limit)]
    pub memory_limit: Limit,
    /// How often resident memory is checked against `--memory-limit`.
    #[arg(long, env = "WAYPOINT_MEMORY_CHECK_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub memory_check_interval: Duration,
}

/// The admin server address, or none.
#[derive(Clone, Copy, Debug)]
pub struct AdminAddr(pub Option<SocketAddr>);

fn parse_admin_addr(s: &str) -> Result<AdminAddr, String> {
    if s == "off" {
        return Ok(AdminAddr(None));
    }
    s.parse()
        .map(|a| AdminAddr(Some(a)))
        .map_err(|e| format!("{s:?} is not an address or `off`: {e}"))
}

/// Access log choice.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccessLogChoice {
    /// One JSON object per request.
    Json,
    /// One text line per request.
    Text,
    /// No access log.
    Off,
}

/// Runs `waypoint run` until SIGTERM/SIGINT. `log_level` changes the process's log filter
/// (served at the admin server's `/logging`).
pub async fn run(args: RunArgs, log_level: Option<LogLevelHook>) -> ExitCode {
    let mut options = WaypointOptions::new(&args.config);
    options.sandwich = args.sandwich_listen.clone();
    options.reload_interval = args.reload_interval;
    options.proxy.required = !args.proxy_optional;
    options.proxy.read_timeout = args.proxy_read_timeout;
    options.proxy.metadata_tlv = args.metadata_tlv;
    options.listener.unix_mode = args.unix_socket_mode;
    options.upstream.connect_timeout = args.connect_timeout;
    options.upstream.request_timeout = args.request_timeout;
    if args.no_sandwich {
        options.sandwich.clear();
    }
    let mut trust_domains = vec![args.trust_domain.clone()];
    trust_domains.extend(args.accept_trust_domains.iter().cloned());
    options.certs = args.certs_dir.as_ref().map(|dir| CertSettings {
        paths: CertPaths::in_dir(dir),
        trust_domains,
        reload_interval: args.reload_interval,
    });
    options.upstream.mode = args.upstream.clone();
    options.upstream.own_ip = args.own_ip;
    options.mesh = MeshOptions {
        trust_domain: args.trust_domain.clone(),
        ambient_namespaces: args.ambient_namespaces.iter().cloned().collect(),
    };
    options.hbone = args.hbone_listen.map(|addr| HboneInbound {
        addr,
        options: HboneOptions::default(),
    });
    options.admin = args.admin_addr.0;
    options.access_log = match args.access_log {
        AccessLogChoice::Json => Some(AccessLogSettings {
            format: AccessLogFormat::Json,
            sample: args.access_log_sample,
        }),
        AccessLogChoice::Text => Some(AccessLogSettings {
            format: AccessLogFormat::Text,
            sample: args.access_log_sample,
        }),
        AccessLogChoice::Off => None,
    };
    options.cluster_id = args.cluster_id.clone();
    options.cluster_domain = args.cluster_domain.clone();
    options.log_level = log_level;
    options.otlp = args.otlp_endpoint.clone().map(|endpoint| OtlpOptions {
        endpoint,
        sample: args.otlp_sample,
    });
    // Overload protection (issue 11 item 4): connection, request, header, body and memory limits.
    options.overload.max_connections = args.max_connections.count();
    options.listener.max_connections = args.max_connections_per_listener.count();
    options.overload.max_requests_in_flight = args.max_requests_in_flight.count();
    options.overload.max_request_body_bytes = args.max_request_body_bytes.bytes();
    options.overload.memory_limit = args.memory_limit.bytes();
    options.overload.memory_check_interval = args.memory_check_interval;
    options.http.max_header_bytes =
        usize::try_from(args.max_request_headers_bytes).unwrap_or(usize::MAX);
    options.http.h2_max_header_list_bytes =
        u32::try_from(args.h2_max_header_list_bytes).unwrap_or(u32::MAX);
    options.http.h2_max_concurrent_streams = args.h2_max_concurrent_streams;

    let running = match Waypoint::start(
        options,
        waypoint_filters::builtin_factories(),
        ExtensionRegistry::new(),
    )
    .await
    {
        Ok(running) => running,
        Err(err) => {
            tracing::error!(error = %err, "waypoint could not start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = running.admin_addr() {
        tracing::info!(%addr, "admin server ready: /metrics /healthz/ready /config_dump /logging");
    }
    if let Some(addr) = running.hbone_addr() {
        let identity = running
            .certs()
            .map(|c| c.identity().to_string())
            .unwrap_or_default();
        tracing::info!(listener = %addr, %identity, "HBONE listener ready");
    }
    for addr in running.sandwich_addrs() {
        tracing::info!(listener = %addr, "sandwich listener ready (PROXY protocol {})", if args.proxy_optional { "optional" } else { "required" });
    }
    wait_for_signal().await;
    tracing::info!(deadline = ?args.drain_timeout, "stopping: draining in-flight requests");
    if running.shutdown(args.drain_timeout).await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("drain deadline passed with requests still in flight");
    }
    ExitCode::SUCCESS
}
