//! `waypoint check`, `echo`, `send` and `certs`: trying a waypoint by hand.

use super::{CertsCommand, PolicyArgs, wait_for_signal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use waypoint_core::config;
use waypoint_core::config::binding::Binding;
use waypoint_core::config::build::{EndpointStatsCache, MeshOptions};
use waypoint_core::filter::FilterSet;
use waypoint_core::identity::SpiffeId;
use waypoint_core::snapshot::SnapshotStore;
use waypoint_core::tls::{CertPaths, DevCa};
use waypoint_core::transport::listener::ListenAddr;
use waypoint_core::upstream::TunnelSource;
use waypoint_filters::Builtins;

use super::output::{Output, outln};
use crate::tools::{echo, send};

/// `waypoint check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest file or directory.
    #[arg(long, env = "WAYPOINT_CONFIG")]
    pub config: PathBuf,
    /// Policy filter settings, as `run` takes them (which policies are this waypoint's, which
    /// ext_authz providers exist).
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// DNS suffix of Services, as `run` takes it: a DestinationRule's short host `reviews`
    /// means `reviews.<namespace>.svc.<this>`.
    #[arg(long, env = "WAYPOINT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// Prints what is bound to this waypoint's Gateway and why the rest is not; returns the number
/// of binding problems (a missing Gateway, a malformed inbound binding).
fn print_binding(out: &mut Output, binding: &Binding) -> usize {
    let Some(gateway) = binding.gateway() else {
        outln!(
            out,
            "binding: off (no --gateway named: every Service in the config is served)"
        );
        return 0;
    };
    outln!(
        out,
        "binding: {gateway}, traffic type {}, listener {}",
        binding.traffic_type(),
        binding.bound_listener().unwrap_or("(none: from Same)")
    );
    for problem in binding.problems() {
        outln!(out, "    PROBLEM {problem}");
    }
    for d in binding.decisions() {
        let verdict = if d.bound { "serves " } else { "not bound" };
        let ips = match d.object.kind.as_str() {
            "Pod" if d.bound => binding
                .workloads()
                .into_iter()
                .find(|w| w.pod == d.object)
                .map(|w| {
                    let ips: Vec<String> = w.ips.iter().map(ToString::to_string).collect();
                    format!(" at {}", ips.join(", "))
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        outln!(
            out,
            "    {verdict} {}{ips} ({}): {}",
            d.object,
            d.reason,
            d.message
        );
    }
    binding.problems().len()
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
    /// Namespace reported as `namespace`.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Service reported as `service` (gRPC: `service_name`).
    #[arg(long, default_value = "echo")]
    pub service: String,
    /// Also serve the gRPC echo service (gateway_api_conformance.echo_basic.grpcecho.GrpcEcho)
    /// over h2c on the same port.
    #[arg(long)]
    pub grpc: bool,
    /// Serve over TLS with this certificate chain (PEM; with `--tls-key`): a stand-in for an
    /// external HTTPS service that a DestinationRule originates TLS to.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
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

/// Prints what the waypoint does with each Service port's connections, and why:
/// `tcp (appProtocol "redis")`, `detect (no appProtocol or known port name)`.
fn print_port_protocols(out: &mut Output, config: &config::Config) {
    let mut backends: Vec<_> = config.backends().collect();
    if backends.is_empty() {
        return;
    }
    backends.sort_by(|a, b| (&a.service, a.port).cmp(&(&b.service, b.port)));
    outln!(out, "service ports:");
    for b in backends {
        let p = &b.protocol;
        outln!(
            out,
            "    {} port {}: {} ({})",
            b.service,
            b.port,
            p.kind,
            p.selected_by
        );
        for (name, from, settings) in b.policy.blocks() {
            outln!(out, "        {name} {settings} from {from}");
        }
        if let Some(rule) = &b.policy.tls_refused_by {
            outln!(
                out,
                "        NOT SERVED: {rule} sets tls for this port but was refused"
            );
        }
    }
}

/// One condition line of `waypoint check`, indented by `indent`.
fn print_condition(out: &mut Output, indent: &str, c: &config::Condition) {
    outln!(
        out,
        "{indent}{}={} {}: {}",
        c.kind,
        c.status,
        c.reason,
        c.message
    );
}

/// Runs `waypoint check`: prints every resource's status (with each route's per-parent
/// conditions and each Gateway's listeners), returns failure when any is rejected.
pub fn check(args: CheckArgs) -> ExitCode {
    // Built as `run` builds it: binding to --gateway included.
    let cache = EndpointStatsCache::with_mesh(MeshOptions {
        gateway: args.policy.gateway.clone(),
        root_namespace: args.policy.root_namespace.clone(),
        cluster_domain: args.cluster_domain.clone(),
        ..MeshOptions::default()
    });
    let config = match config::load::load_path_with(&args.config, &cache) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut filters = FilterSet::new();
    filters.install(Builtins::new(args.policy.settings()));
    let (factories, extensions) = filters.into_parts();
    let store = SnapshotStore::new(factories, extensions);
    let snapshot = store.preview(config);
    let mut out = Output::default();
    let mut failed = print_binding(&mut out, snapshot.config.binding());
    print_port_protocols(&mut out, &snapshot.config);
    for status in snapshot.statuses() {
        let ok = status.is_ok();
        failed += usize::from(!ok);
        outln!(
            out,
            "{} {} ({})",
            if ok { "ok     " } else { "REJECTED" },
            status.resource,
            status.source
        );
        for c in &status.conditions {
            print_condition(&mut out, "    ", c);
        }
        for parent in snapshot
            .route_parents
            .iter()
            .filter(|p| p.route == status.resource)
        {
            outln!(out, "    parent {}:", parent.parent);
            for c in &parent.conditions {
                print_condition(&mut out, "        ", c);
            }
        }
        if let Some(gw) = snapshot
            .gateways
            .iter()
            .find(|g| g.gateway == status.resource)
        {
            let addresses = if gw.addresses.is_empty() {
                "no address".to_owned()
            } else {
                gw.addresses.join(", ")
            };
            outln!(out, "    served at: {addresses}");
            for c in &gw.conditions {
                print_condition(&mut out, "    ", c);
            }
            for l in &gw.listeners {
                outln!(
                    out,
                    "    listener {} port {}: {} route(s) attached",
                    l.name,
                    l.port,
                    l.attached_routes
                );
                for c in l.conditions.iter().filter(|c| !c.status) {
                    print_condition(&mut out, "        ", c);
                }
            }
        }
    }
    let printed = out.print();
    if failed > 0 {
        eprintln!("{failed} resource(s) rejected or binding problem(s)");
        ExitCode::FAILURE
    } else if printed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The TLS server of `waypoint echo --tls-cert --tls-key`: the chain and key from PEM files,
/// ALPN `h2` and `http/1.1`.
fn echo_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Runs `waypoint echo` until interrupted.
pub async fn echo(args: EchoArgs) -> ExitCode {
    let identity = echo::EchoIdentity {
        pod: args.pod,
        namespace: args.namespace,
        service: args.service,
    };
    let mut options = echo::EchoOptions::default().with_grpc(args.grpc);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        match echo_tls(cert, key) {
            Ok(config) => options = options.with_tls(config),
            Err(err) => {
                tracing::error!(error = %err, "echo backend cannot serve TLS");
                return ExitCode::FAILURE;
            }
        }
    }
    let server = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => echo::spawn_with(listener, identity, options),
        Err(err) => Err(err),
    };
    match server {
        Ok(server) => {
            tracing::info!(addr = %server.addr(), grpc = args.grpc, "echo backend listening");
            wait_for_signal().await;
            drop(server);
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
            let mut out = Output::default();
            outln!(out, "{:?} {}", resp.version(), resp.status());
            for (name, value) in resp.headers() {
                outln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
            }
            outln!(out);
            outln!(out, "{}", String::from_utf8_lossy(resp.body()));
            out.finish()
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
            let mut out = Output::default();
            outln!(out, "{message}");
            out.finish()
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
