//! `waypoint run`: serve until SIGTERM/SIGINT.

use super::{
    Limit, PolicyArgs, parse_bytes, parse_bytes_limit, parse_count_limit, parse_duration,
    parse_octal, parse_tlv_type, parse_upstream_mode, wait_for_signal,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::ca::CaArgs;
use super::kube::KubeSide;
use clap::{Args, ValueEnum};
use prometheus_client::registry::Registry;
use waypoint_core::config::build::MeshOptions;
use waypoint_core::http::AllowedUpgrades;
use waypoint_core::runtime::{
    AccessLogSettings, CertSettings, CertSource, HboneInbound, LogLevelHook, Waypoint,
    WaypointOptions,
};
use waypoint_core::telemetry::access_log::AccessLogFormat;
use waypoint_core::telemetry::otlp::OtlpOptions;
use waypoint_core::tls::CertPaths;
use waypoint_core::transport::hbone::HboneOptions;
use waypoint_core::transport::listener::ListenAddr;
use waypoint_core::upstream::UpstreamMode;
use waypoint_filters::{BuiltinSettings, Builtins};
use waypoint_kube::status::{
    ControllerName, ControllerNameError, DEFAULT_CONTROLLER_NAME, lease_name,
};

/// `waypoint run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Manifest file or directory (Gateway, Service, EndpointSlice, HTTPRoute, ...); watched.
    /// Exactly one of --config and --kube is required.
    #[arg(
        long,
        env = "WAYPOINT_CONFIG",
        required_unless_present = "kube",
        conflicts_with = "kube"
    )]
    pub config: Option<PathBuf>,
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
    /// How long a connection to a port no protocol was named for (no appProtocol, no known
    /// port-name prefix) may take to send bytes that show HTTP; silence until then is TCP
    /// (server-first protocols). `0s` disables detection: such ports are served as HTTP.
    #[arg(long, env = "WAYPOINT_PROTOCOL_DETECTION_TIMEOUT", default_value = "100ms", value_parser = parse_duration)]
    pub protocol_detection_timeout: Duration,
    /// A TCP (or TLS passthrough) connection that carries no byte either way for this long is
    /// closed. `0s` disables it.
    #[arg(long, env = "WAYPOINT_TCP_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub tcp_idle_timeout: Duration,
    /// How often the config is checked for changes.
    #[arg(long, env = "WAYPOINT_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub reload_interval: Duration,
    /// The DNS server (`IP:PORT`) that resolves the hosts of ServiceEntries with `resolution:
    /// DNS`; default: the name servers of `/etc/resolv.conf`.
    #[arg(long, env = "WAYPOINT_DNS_SERVER")]
    pub dns_server: Option<std::net::SocketAddr>,
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
    /// Where the certificate comes from without `--certs-dir`: istiod's CA.
    #[command(flatten)]
    pub ca: CaArgs,
    /// The mesh's trust domain: endpoint identities are expected in it, and HBONE clients of it
    /// are accepted.
    #[arg(long, env = "WAYPOINT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Further trust domains whose HBONE clients are accepted.
    #[arg(long, env = "WAYPOINT_ACCEPT_TRUST_DOMAINS", value_delimiter = ',')]
    pub accept_trust_domains: Vec<String>,
    /// How endpoints are reached: `plain` (TCP to pod IPs; sandwiched, the in-pod ztunnel
    /// captures it), `auto` (HBONE to mesh endpoints, TCP to the rest; needs a certificate:
    /// --certs-dir, or istiod's with --hbone-listen), or `ztunnel-unix:/path` (the co-located
    /// ztunnel's socket, PROXY v2 header first).
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
    /// Cluster name (Istio's `CLUSTER_ID`): metric labels, and the `clusterid` sent to the CA
    /// (`Kubernetes`, Istio's default, when unset).
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
    /// HTTP/1.1 upgrade protocols carried to backends, comma-separated, compared
    /// case-insensitively (`none` for no upgrade at all). Other upgrades are refused with 403;
    /// `h2c` can never be allowed (its upgrade headers are stripped). CONNECT is always refused.
    #[arg(long, env = "WAYPOINT_ALLOWED_UPGRADES", default_value = "websocket")]
    pub allowed_upgrades: AllowedUpgrades,
    /// Unix socket listeners accept only processes running as this uid (SO_PEERCRED), e.g.
    /// ztunnel's; others are closed before anything is read, logged and counted.
    #[arg(long, env = "WAYPOINT_UNIX_SOCKET_PEER_UID")]
    pub unix_socket_peer_uid: Option<u32>,
    /// Unix socket listeners accept only processes whose primary gid is this (SO_PEERCRED).
    #[arg(long, env = "WAYPOINT_UNIX_SOCKET_PEER_GID")]
    pub unix_socket_peer_gid: Option<u32>,
    /// On SIGTERM/SIGINT, how long to keep serving after readiness turns false, telling clients
    /// to go elsewhere (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`) before listeners close.
    /// Counted within --drain-timeout.
    #[arg(long, env = "WAYPOINT_DRAIN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub drain_grace: Duration,
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
    /// Read config from the Kubernetes API server instead of files (in-cluster ServiceAccount,
    /// or KUBECONFIG / ~/.kube/config). Not ready, and no listener, until every watched kind
    /// has been listed once.
    #[arg(long, env = "WAYPOINT_KUBE")]
    pub kube: bool,
    /// With --kube: watch namespaced kinds in this namespace only (default: all namespaces).
    #[arg(long, env = "WAYPOINT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Our Gateway API controller name (with `--kube`): we write status for GatewayClasses whose
    /// `spec.controllerName` equals it, their Gateways, and our entries of route status. A
    /// domain-prefixed path; `istio.io` names are refused (istiod owns those Gateways).
    #[arg(long, env = "WAYPOINT_CONTROLLER_NAME", default_value = DEFAULT_CONTROLLER_NAME, value_parser = parse_controller_name)]
    pub controller_name: ControllerName,
    /// The `coordination.k8s.io` Lease whose holder alone writes status (with `--kube`), in
    /// `POD_NAMESPACE` (else the Gateway's namespace). Default: `waypoint-status-<gateway name>`
    /// with `--gateway`, else `waypoint-status`.
    #[arg(long, env = "WAYPOINT_STATUS_LEASE", value_parser = parse_lease_name)]
    pub status_lease: Option<String>,
}

fn parse_controller_name(s: &str) -> Result<ControllerName, String> {
    s.parse().map_err(|e: ControllerNameError| e.to_string())
}

fn parse_lease_name(s: &str) -> Result<String, String> {
    lease_name(s).map_err(|e| e.to_string())
}

/// What the status writer is told by flags; the rest (who we are, which Lease namespace) comes
/// from the pod's environment when it starts (`StatusSettings::for_process`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusFlags {
    /// `--controller-name`.
    pub controller_name: ControllerName,
    /// `--status-lease`; `None`: derived from the Gateway.
    pub lease_name: Option<String>,
}

/// The admin server address, or none.
#[derive(Clone, Copy, Debug)]
pub struct AdminAddr(pub Option<SocketAddr>);

pub(super) fn parse_admin_addr(s: &str) -> Result<AdminAddr, String> {
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

/// What `waypoint run` starts: the runtime's options and the built-in filters' settings.
#[derive(Debug)]
pub struct RunSettings {
    /// The runtime: listeners, transports, upstream, telemetry.
    pub options: WaypointOptions,
    /// The built-in filters: policy scope, ext_authz providers, normalization.
    pub builtins: BuiltinSettings,
    /// How long in-flight requests may take to finish on SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// The status writer's flags (effective with `--kube`).
    pub status: StatusFlags,
    /// Read config from the Kubernetes API instead of `options.config_path`.
    pub kube: Option<KubeSettings>,
    /// Why the identity to ask the CA for could not be formed (HBONE without `--certs-dir`).
    pub identity_error: Option<String>,
}

/// `--kube` and its options.
#[derive(Clone, Debug, Default)]
pub struct KubeSettings {
    /// `--namespace`: watch namespaced kinds in this namespace only.
    pub namespace: Option<String>,
}

impl RunArgs {
    /// Every flag, in the place that uses it. The arguments are destructured in full (no `..`):
    /// a flag added to [`RunArgs`] and not wired here does not compile.
    pub fn into_settings(self, log_level: Option<LogLevelHook>) -> RunSettings {
        let RunArgs {
            config,
            sandwich_listen,
            proxy_optional,
            proxy_read_timeout,
            metadata_tlv,
            unix_socket_mode,
            connect_timeout,
            request_timeout,
            protocol_detection_timeout,
            tcp_idle_timeout,
            reload_interval,
            dns_server,
            drain_timeout,
            worker_threads: _, // sizes the runtime before this runs (main.rs)
            no_sandwich,
            hbone_listen,
            certs_dir,
            ca,
            trust_domain,
            accept_trust_domains,
            upstream,
            ambient_namespaces,
            own_ip,
            admin_addr,
            access_log,
            access_log_sample,
            policy,
            cluster_id,
            otlp_endpoint,
            otlp_sample,
            cluster_domain,
            allowed_upgrades,
            unix_socket_peer_uid,
            unix_socket_peer_gid,
            drain_grace,
            max_connections,
            max_connections_per_listener,
            max_requests_in_flight,
            max_request_body_bytes,
            max_request_headers_bytes,
            h2_max_header_list_bytes,
            h2_max_concurrent_streams,
            memory_limit,
            memory_check_interval,
            kube,
            namespace,
            controller_name,
            status_lease,
        } = self;
        // clap makes exactly one of --config and --kube present; with --kube the path is unused.
        let mut options = WaypointOptions::new(config.unwrap_or_default());
        options.sandwich = if no_sandwich {
            Vec::new()
        } else {
            sandwich_listen
        };
        options.reload_interval = reload_interval;
        options.dns_server = dns_server;
        options.drain_grace = drain_grace;
        options.proxy.required = !proxy_optional;
        options.proxy.read_timeout = proxy_read_timeout;
        options.proxy.metadata_tlv = metadata_tlv;
        options.listener.unix_mode = unix_socket_mode;
        options.listener.unix_peer_uid = unix_socket_peer_uid;
        options.listener.unix_peer_gid = unix_socket_peer_gid;
        options.http.allowed_upgrades = allowed_upgrades;
        options.http.max_header_bytes =
            usize::try_from(max_request_headers_bytes).unwrap_or(usize::MAX);
        options.http.h2_max_header_list_bytes =
            u32::try_from(h2_max_header_list_bytes).unwrap_or(u32::MAX);
        options.http.h2_max_concurrent_streams = h2_max_concurrent_streams;
        options.listener.max_connections = max_connections_per_listener.count();
        options.overload.max_connections = max_connections.count();
        options.overload.max_requests_in_flight = max_requests_in_flight.count();
        options.overload.max_request_body_bytes = max_request_body_bytes.bytes();
        options.overload.memory_limit = memory_limit.bytes();
        options.overload.memory_check_interval = memory_check_interval;
        options.upstream.connect_timeout = connect_timeout;
        options.upstream.request_timeout = request_timeout;
        options.stream.detection_timeout = protocol_detection_timeout;
        options.stream.idle_timeout = tcp_idle_timeout;
        options.upstream.mode = upstream;
        options.upstream.own_ip = own_ip;
        let mut trust_domains = vec![trust_domain.clone()];
        trust_domains.extend(accept_trust_domains);
        // Files win; without them, HBONE asks istiod.
        let (source, identity_error) = match (certs_dir, hbone_listen) {
            (Some(dir), _) => (Some(CertSource::Files(CertPaths::in_dir(dir))), None),
            (None, Some(_)) => match ca.istiod_ca(&trust_domain, cluster_id.clone()) {
                Ok(ca) => (Some(CertSource::Istiod(ca)), None),
                Err(error) => (None, Some(error)),
            },
            (None, None) => (None, None),
        };
        options.certs = source.map(|source| CertSettings {
            source,
            trust_domains,
            reload_interval,
        });
        options.mesh = MeshOptions {
            trust_domain,
            ambient_namespaces: ambient_namespaces.into_iter().collect(),
            // The one --gateway flag: policy scope (below) and binding read the same value.
            gateway: policy.gateway.clone(),
            root_namespace: policy.root_namespace.clone(),
            cluster_domain: cluster_domain.clone(),
        };
        options.hbone = hbone_listen.map(|addr| HboneInbound {
            addr,
            options: HboneOptions::default(),
        });
        options.admin = admin_addr.0;
        // `/config_dump` shows our GatewayClasses' status with either source: from files, it
        // is what a status writer would put in the API server.
        options.controller_name = Some(controller_name.as_str().to_owned());
        let format = match access_log {
            AccessLogChoice::Json => Some(AccessLogFormat::Json),
            AccessLogChoice::Text => Some(AccessLogFormat::Text),
            AccessLogChoice::Off => None,
        };
        options.access_log = format.map(|format| AccessLogSettings {
            format,
            sample: access_log_sample,
        });
        options.cluster_id = cluster_id;
        options.cluster_domain = cluster_domain;
        options.log_level = log_level;
        options.otlp = otlp_endpoint.map(|endpoint| OtlpOptions {
            endpoint,
            sample: otlp_sample,
        });
        RunSettings {
            options,
            builtins: policy.settings(),
            drain_timeout,
            kube: kube.then_some(KubeSettings { namespace }),
            identity_error,
            status: StatusFlags {
                controller_name,
                lease_name: status_lease,
            },
        }
    }
}

/// Runs `waypoint run` until SIGTERM/SIGINT. `log_level` changes the process's log filter
/// (served at the admin server's `/logging`).
pub async fn run(args: RunArgs, log_level: Option<LogLevelHook>) -> ExitCode {
    // Not a clap `requires`: a bool flag's default counts as present there.
    if args.namespace.is_some() && !args.kube {
        tracing::error!(
            "--namespace (WAYPOINT_NAMESPACE) needs --kube: files are not read by namespace"
        );
        return ExitCode::FAILURE;
    }
    let (proxy_required, drain_grace) = (!args.proxy_optional, args.drain_grace);
    let RunSettings {
        options,
        builtins,
        drain_timeout,
        kube,
        identity_error,
        status,
    } = args.into_settings(log_level);
    if let Some(error) = identity_error {
        tracing::error!("{error}");
        return ExitCode::FAILURE;
    }
    let gateway = builtins.scope.gateway.clone();
    let mut builder = Waypoint::builder(options).install(Builtins::new(builtins));
    let mut kube_side = None;
    if let Some(kube) = kube {
        let mut registry = Registry::default();
        match KubeSide::new(kube, status, gateway, &mut registry) {
            Ok((side, source)) => {
                builder = builder.config_source(source).metrics_registry(registry);
                kube_side = Some(side);
            }
            Err(error) => {
                tracing::error!(%error, "waypoint could not start: no Kubernetes API client");
                return ExitCode::FAILURE;
            }
        }
    }
    let started = builder.start().await;
    let running = match started {
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
        tracing::info!(listener = %addr, "sandwich listener ready (PROXY protocol {})", if proxy_required { "required" } else { "optional" });
    }
    let status_task = kube_side.map(|side| side.start_status(running.store()));
    wait_for_signal().await;
    tracing::info!(grace = ?drain_grace, deadline = ?drain_timeout, "stopping: readiness false, draining (clients told to go elsewhere), then closing listeners");
    if running.shutdown(drain_timeout).await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("drain deadline passed with requests still in flight");
    }
    if let Some(task) = status_task {
        task.stop().await;
    }
    ExitCode::SUCCESS
}
