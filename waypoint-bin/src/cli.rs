//! The `waypoint` command line: `run`, `check`, `echo` and `send`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use waypoint_core::config;
use waypoint_core::config::build::MeshOptions;
use waypoint_core::filter::ExtensionRegistry;
use waypoint_core::identity::SpiffeId;
use waypoint_core::proxy::SnapshotStore;
use waypoint_core::runtime::{
    AccessLogSettings, CertSettings, HboneInbound, LogLevelHook, Waypoint, WaypointOptions,
};
use waypoint_core::telemetry::access_log::AccessLogFormat;
use waypoint_core::tls::{CertPaths, DevCa};
use waypoint_core::transport::hbone::HboneOptions;
use waypoint_core::transport::listener::ListenAddr;
use waypoint_core::upstream::{TunnelSource, UpstreamMode};
use waypoint_filters::Builtins;
use waypoint_filters::authz::{ExtAuthzProvider, PathNormalization, RequestAttributes};

use crate::tools::{echo, send};

/// An L7 waypoint proxy for Istio ambient mesh (sandwich mode: behind a co-located ztunnel).
#[derive(Debug, Parser)]
#[command(name = "waypoint", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "WAYPOINT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: read the config, listen for connections from ztunnel, route requests.
    Run(Box<RunArgs>),
    /// Validate a config: print each resource's status; exit 1 when any is rejected.
    Check(CheckArgs),
    /// Would this request be allowed by the AuthorizationPolicies, and by which rule? Answered
    /// by the code the request path runs; exit 1 when denied.
    Authz(AuthzArgs),
    /// Run an echo backend that answers with a JSON description of each request.
    Echo(EchoArgs),
    /// Send a request to a sandwich listener with a PROXY v2 header, as ztunnel would.
    Send(SendArgs),
    /// A development CA: mint a root and SPIFFE workload certificates for trying HBONE.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// `waypoint certs ...`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA (`ca-cert.pem`, `ca-key.pem`) in a directory.
    Ca {
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Trust domain of the mesh.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Issue a workload certificate in Istio's file layout (`cert-chain.pem`, `key.pem`,
    /// `root-cert.pem`), signed by the CA in `--ca` (for example a mesh's `cacerts` files).
    Issue {
        /// Directory holding `ca-cert.pem` and `ca-key.pem`.
        #[arg(long)]
        ca: PathBuf,
        /// The workload's identity, `spiffe://<td>/ns/<ns>/sa/<sa>`.
        #[arg(long)]
        identity: String,
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        validity: Duration,
    },
}

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
    /// DNS suffix of Services, for `destination_service` labels.
    #[arg(long, env = "WAYPOINT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
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

/// Settings of the policy filters, shared by `run` and `authz`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Istio's root namespace: GatewayClass-wide policies live there.
    #[arg(long, env = "WAYPOINT_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,
    /// This waypoint's Gateway as `namespace/name`; policies targeting other Gateways are
    /// another waypoint's. Default: every Gateway in the config is this waypoint.
    #[arg(long, env = "WAYPOINT_GATEWAY", value_parser = parse_namespaced)]
    pub gateway: Option<(String, String)>,
    /// This waypoint's GatewayClass name (for GatewayClass-targeted policies).
    #[arg(long, env = "WAYPOINT_GATEWAY_CLASS")]
    pub gateway_class: Option<String>,
    /// An ext_authz provider for CUSTOM policies:
    /// `name=host:port[,path_prefix=/p][,headers_to_upstream=a;b][,include_headers=a;b][,fail_open][,timeout=600ms]`.
    /// Repeatable.
    #[arg(long = "ext-authz", env = "WAYPOINT_EXT_AUTHZ", value_delimiter = '|', value_parser = parse_ext_authz)]
    pub ext_authz: Vec<ExtAuthzProvider>,
    /// Path normalization before policy matching (and for the backend).
    #[arg(long, env = "WAYPOINT_PATH_NORMALIZATION", default_value = "base")]
    pub path_normalization: NormalizationChoice,
    /// Trusted proxy hops in X-Forwarded-For for `remoteIpBlocks` (Envoy's xff_num_trusted_hops);
    /// unset uses the first address.
    #[arg(long, env = "WAYPOINT_XFF_TRUSTED_HOPS")]
    pub xff_trusted_hops: Option<usize>,
}

/// Path normalization choice (Istio's `pathNormalization`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NormalizationChoice {
    /// No normalization.
    None,
    /// RFC 3986 normalization (Istio's default).
    Base,
    /// Base, and `//` merged.
    MergeSlashes,
    /// Base, `%2F`/`%5C` decoded, and slashes merged.
    DecodeAndMergeSlashes,
}

impl PolicyArgs {
    /// The built-in filters with these settings.
    pub fn builtins(&self) -> Builtins {
        let mut builtins = Builtins::default();
        builtins.authz.root_namespace = self.root_namespace.clone();
        builtins.authz.gateway = self.gateway.clone();
        builtins.authz.gateway_class = self.gateway_class.clone();
        builtins.authz.providers = self
            .ext_authz
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        builtins.authz.normalization = match self.path_normalization {
            NormalizationChoice::None => PathNormalization::None,
            NormalizationChoice::Base => PathNormalization::Base,
            NormalizationChoice::MergeSlashes => PathNormalization::MergeSlashes,
            NormalizationChoice::DecodeAndMergeSlashes => PathNormalization::DecodeAndMergeSlashes,
        };
        builtins.authz.xff_trusted_hops = self.xff_trusted_hops;
        builtins
    }
}

fn parse_namespaced(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{s:?} is not namespace/name")),
    }
}

fn parse_ext_authz(s: &str) -> Result<ExtAuthzProvider, String> {
    let mut parts = s.split(',');
    let head = parts.next().unwrap_or_default();
    let Some((name, address)) = head.split_once('=') else {
        return Err(format!("{s:?}: expected name=host:port[,option...]"));
    };
    let mut provider = ExtAuthzProvider::new(name.trim(), address.trim());
    let list = |v: &str| {
        v.split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect()
    };
    for option in parts {
        match option.split_once('=') {
            Some(("path_prefix", v)) => provider.path_prefix = v.to_owned(),
            Some(("headers_to_upstream", v)) => provider.headers_to_upstream = list(v),
            Some(("include_headers", v)) => provider.include_request_headers = list(v),
            Some(("timeout", v)) => provider.timeout = parse_duration(v)?,
            None if option == "fail_open" => provider.fail_open = true,
            _ => return Err(format!("{s:?}: unknown option {option:?}")),
        }
    }
    Ok(provider)
}

/// `waypoint authz`: would this request be allowed, and by which rule?
#[derive(Debug, Args)]
pub struct AuthzArgs {
    /// Manifest file or directory.
    #[arg(long, env = "WAYPOINT_CONFIG")]
    pub config: PathBuf,
    /// The original destination (Service ClusterIP:port).
    #[arg(long)]
    pub destination: SocketAddr,
    /// The client's identity (`spiffe://...`); omit for an unauthenticated client.
    #[arg(long)]
    pub identity: Option<String>,
    /// The client's IP.
    #[arg(long)]
    pub source: Option<std::net::IpAddr>,
    /// Method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// Host header (default: the destination).
    #[arg(long)]
    pub host: Option<String>,
    /// Path and query.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// A header `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Policy filter settings.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// `waypoint check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest file or directory.
    #[arg(long, env = "WAYPOINT_CONFIG")]
    pub config: PathBuf,
}

/// `waypoint echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// Name reported as `pod` in answers.
    #[arg(long, default_value = "echo-v1")]
    pub pod: String,
}

/// `waypoint send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The sandwich listener: `unix:/path` or `ADDR:PORT`.
    #[arg(long, default_value = "127.0.0.1:15088")]
    pub to: ListenAddr,
    /// The original destination (Service ClusterIP:port) for the PROXY header.
    #[arg(long)]
    pub destination: SocketAddr,
    /// The source address for the PROXY header.
    #[arg(long, default_value = "10.244.0.7:43210")]
    pub source: SocketAddr,
    /// Source SPIFFE identity (TLV 0xD0); omit to send none.
    #[arg(long)]
    pub identity: Option<String>,
    /// Source workload metadata as W3C baggage (metadata TLV).
    #[arg(long)]
    pub baggage: Option<String>,
    /// Path and query.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: http::Method,
    /// Host header (default: the destination).
    #[arg(long)]
    pub host: Option<String>,
    /// Extra header `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long, short = 'd', default_value = "")]
    pub data: String,
    /// Speak HTTP/2 with prior knowledge.
    #[arg(long)]
    pub h2c: bool,
    /// Go through the waypoint's HBONE listener at this address instead of `--to`, as a client
    /// ztunnel does (needs --certs-dir).
    #[arg(long)]
    pub hbone: Option<SocketAddr>,
    /// The client's certificates for --hbone (Istio layout).
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// The identity the waypoint must present over --hbone.
    #[arg(long, default_value = "spiffe://cluster.local/ns/default/sa/waypoint")]
    pub server_identity: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::resources::parse_gateway_duration(s)
}

fn parse_upstream_mode(s: &str) -> Result<UpstreamMode, String> {
    match s {
        "plain" => Ok(UpstreamMode::Plain),
        "auto" => Ok(UpstreamMode::Auto),
        _ => match s.strip_prefix("ztunnel-unix:") {
            Some(path) if !path.is_empty() => Ok(UpstreamMode::ZtunnelUnix(path.into())),
            _ => Err(format!("{s:?}: expected plain, auto or ztunnel-unix:/path")),
        },
    }
}

fn parse_tlv_type(s: &str) -> Result<u8, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a TLV type (0..=255, decimal or 0x-hex): {e}"))
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|e| format!("{s:?} is not an octal mode: {e}"))
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

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C is the only way out.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `waypoint check`: prints every resource's status, returns failure when any is rejected.
pub fn check(args: CheckArgs) -> ExitCode {
    let config = match config::load_path(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let store = SnapshotStore::new(
        waypoint_filters::builtin_factories(),
        ExtensionRegistry::new(),
    );
    let snapshot = store.preview(config);
    let mut failed = 0;
    for status in snapshot.statuses() {
        let ok = status.is_ok();
        failed += usize::from(!ok);
        println!(
            "{} {} ({})",
            if ok { "ok     " } else { "REJECTED" },
            status.resource,
            status.source
        );
        for c in &status.conditions {
            println!("    {}={} {}: {}", c.kind, c.status, c.reason, c.message);
        }
    }
    if failed > 0 {
        eprintln!("{failed} resource(s) rejected");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `waypoint echo` until interrupted.
pub async fn echo(args: EchoArgs) -> ExitCode {
    let identity = echo::EchoIdentity {
        pod: args.pod,
        namespace: "default".into(),
        service: "echo".into(),
    };
    match echo::spawn(args.listen, identity).await {
        Ok(addr) => {
            tracing::info!(%addr, "echo backend listening");
            wait_for_signal().await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(addr = %args.listen, error = %err, "echo backend could not listen");
            ExitCode::FAILURE
        }
    }
}

/// Runs `waypoint send`: prints the status line, headers and body.
pub async fn send(args: SendArgs) -> ExitCode {
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            eprintln!("error: header {h:?} is not `Name: value`");
            return ExitCode::FAILURE;
        };
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let claims = send::ProxyClaims {
        source: args.source,
        destination: args.destination,
        identity: args.identity,
        baggage: args.baggage,
    };
    let spec = send::RequestSpec {
        method: args.method,
        path: args.path,
        host: args.host,
        headers,
        body: Bytes::from(args.data),
        h2c: args.h2c,
    };
    let result = match args.hbone {
        None => send::send(&args.to, &claims, &spec).await,
        Some(via) => {
            let Some(dir) = &args.certs_dir else {
                eprintln!("error: --hbone needs --certs-dir with the client's certificates");
                return ExitCode::FAILURE;
            };
            let server_identity = match args.server_identity.parse() {
                Ok(id) => id,
                Err(e) => {
                    eprintln!("error: --server-identity: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let hbone = send::HboneClaims {
                via,
                certs: CertPaths::in_dir(dir),
                server_identity,
                destination: claims.destination,
                source: TunnelSource {
                    address: Some(claims.source),
                    baggage: claims.baggage.clone(),
                    traceparent: None,
                },
            };
            send::send_hbone(&hbone, &spec).await
        }
    };
    match result {
        Ok(resp) => {
            println!("{:?} {}", resp.version(), resp.status());
            for (name, value) in resp.headers() {
                println!("{name}: {}", String::from_utf8_lossy(value.as_bytes()));
            }
            println!();
            println!("{}", String::from_utf8_lossy(resp.body()));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `waypoint certs ...`.
pub fn certs(command: CertsCommand) -> ExitCode {
    let result = match command {
        CertsCommand::Ca { out, trust_domain } => DevCa::generate(&trust_domain)
            .and_then(|ca| ca.write_ca(&out))
            .map(|()| format!("wrote {0}/ca-cert.pem and {0}/ca-key.pem", out.display()))
            .map_err(|e| e.to_string()),
        CertsCommand::Issue {
            ca,
            identity,
            out,
            validity,
        } => (|| {
            let id: SpiffeId = identity.parse().map_err(|e| format!("--identity: {e}"))?;
            let read = |name: &str| {
                std::fs::read_to_string(ca.join(name))
                    .map_err(|e| format!("{}: {e}", ca.join(name).display()))
            };
            let ca = DevCa::from_pem(&read("ca-cert.pem")?, &read("ca-key.pem")?)
                .map_err(|e| e.to_string())?;
            ca.write_workload_dir(&out, &id, validity)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(format!(
                "wrote {id} to {0}/cert-chain.pem, key.pem, root-cert.pem",
                out.display()
            ))
        })(),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `waypoint authz`: prints the decision and the deciding policy and rule.
pub fn authz(args: AuthzArgs) -> ExitCode {
    let config = match config::load_path(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let identity = match args
        .identity
        .as_deref()
        .map(str::parse::<SpiffeId>)
        .transpose()
    {
        Ok(identity) => identity,
        Err(e) => {
            eprintln!("error: --identity: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut headers = http::HeaderMap::new();
    for h in &args.headers {
        let parsed = h.split_once(':').and_then(|(n, v)| {
            Some((
                http::HeaderName::try_from(n.trim()).ok()?,
                http::HeaderValue::try_from(v.trim()).ok()?,
            ))
        });
        let Some((name, value)) = parsed else {
            eprintln!("error: header {h:?} is not `Name: value`");
            return ExitCode::FAILURE;
        };
        headers.append(name, value);
    }
    let registry = ExtensionRegistry::new();
    let mut cx = waypoint_core::filter::BuildContext::new(&config, &registry);
    let policies = args.policy.builtins().authz.compile(&mut cx);
    for report in cx.into_reports() {
        eprintln!(
            "note: {}: {} ({}): {}",
            report.resource, report.condition, report.reason, report.message
        );
    }
    let host = args
        .host
        .clone()
        .unwrap_or_else(|| args.destination.to_string());
    let request = RequestAttributes {
        identity: identity.as_ref(),
        source: args.source,
        destination: Some(args.destination),
        method: &args.method,
        host: &host,
        path: &args.path,
        headers: &headers,
        request_principal: None,
    };
    match waypoint_filters::authz::explain(&policies, &config, &request) {
        Ok(explanation) => {
            println!(
                "{}",
                if explanation.decision.allowed {
                    "ALLOWED"
                } else {
                    "DENIED"
                }
            );
            println!("{}", explanation.reason());
            if explanation.decision.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            println!("REJECTED (400)");
            println!("{err}");
            ExitCode::from(1)
        }
    }
}
