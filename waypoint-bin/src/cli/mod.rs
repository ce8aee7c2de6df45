//! The `waypoint` command line: `run`, `controller`, `check`, `authz`, `echo`, `send` and `certs`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use waypoint_core::config;
use waypoint_core::upstream::UpstreamMode;

mod ca;
mod controller;
mod kube;
mod output;
mod policy;
mod run;
mod tools;

pub use ca::CaArgs;
pub use controller::{ControllerArgs, Quantity, controller};
pub use policy::{AuthzArgs, NormalizationChoice, PolicyArgs, authz};
pub use run::{AccessLogChoice, AdminAddr, RunArgs, RunSettings, StatusFlags, run};
pub use tools::{CheckArgs, EchoArgs, SendArgs, certs, check, echo, send};

/// An L7 waypoint proxy for Istio ambient mesh: native HBONE, or sandwiched behind a co-located
/// ztunnel.
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
    /// Provision a waypoint per Gateway of our GatewayClasses (ServiceAccount, Service,
    /// Deployment, ClusterRoleBinding) and publish its addresses once a pod is ready.
    Controller(Box<ControllerArgs>),
    /// Validate a config: print each resource's status; exit 1 when any is rejected.
    Check(CheckArgs),
    /// Would this request be allowed by the AuthorizationPolicies, and by which rule? Answered
    /// by the code the request path runs; exit 1 when denied.
    Authz(AuthzArgs),
    /// Run an echo backend that answers like the Gateway API conformance echo server.
    ///
    /// HTTP/1.1 and h2c on one port. Paths: `/health` answers OK; `/status/NNN` answers status
    /// NNN; `/retry/?uuid=U&succeedAfter=N[&responseCode=C][&delayRetry=D]` fails the first N
    /// requests of uuid U with status C (or a connection reset without C), then echoes; `/ws`
    /// echoes WebSocket frames; anything else answers a JSON description of the request (path,
    /// host, method, proto, headers, httpPort, namespace, service, pod). `?delay=500ms` waits
    /// before answering; header `X-Echo-Set-Header: Name:Val,Name2:Val2` sets response headers.
    /// With --grpc, h2c calls with content type application/grpc reach the conformance
    /// GrpcEcho service (Echo, EchoTwo; EchoThree answers UNIMPLEMENTED).
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

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    config::resources::parse_gateway_duration(s)
}

pub(crate) fn parse_upstream_mode(s: &str) -> Result<UpstreamMode, String> {
    match s {
        "plain" => Ok(UpstreamMode::Plain),
        "auto" => Ok(UpstreamMode::Auto),
        _ => match s.strip_prefix("ztunnel-unix:") {
            Some(path) if !path.is_empty() => Ok(UpstreamMode::ZtunnelUnix(path.into())),
            _ => Err(format!("{s:?}: expected plain, auto or ztunnel-unix:/path")),
        },
    }
}

pub(crate) fn parse_tlv_type(s: &str) -> Result<u8, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a TLV type (0..=255, decimal or 0x-hex): {e}"))
}

pub(crate) fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|e| format!("{s:?} is not an octal mode: {e}"))
}

/// A limit from the command line: a number, or `0` / `none` for no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

impl Limit {
    /// The limit as a count.
    pub fn count(self) -> Option<usize> {
        self.0.map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The limit in bytes.
    pub fn bytes(self) -> Option<u64> {
        self.0
    }
}

/// A count limit: `10000`, or `0` / `none` for none.
pub(crate) fn parse_count_limit(s: &str) -> Result<Limit, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    let n: u64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a count (or none): {e}"))?;
    Ok(Limit((n > 0).then_some(n)))
}

/// A byte-size limit as Kubernetes writes quantities: `512Mi`, `1Gi`, `64Ki`, `1M` (powers of
/// 1000), `1048576`; `0` or `none` for none.
pub(crate) fn parse_bytes_limit(s: &str) -> Result<Limit, String> {
    parse_bytes(s).map(|n| Limit((n > 0).then_some(n)))
}

/// A byte size: digits, then an optional `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) or `K`, `M`,
/// `G`, `T` (powers of 1000) suffix; `none` is 0.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown size suffix {suffix:?} (use Ki, Mi, Gi, Ti, K, M, G, T)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|e| format!("{s:?} is not a size like 512Mi: {e}"))?;
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub(crate) async fn wait_for_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_kubernetes_quantities_and_none_means_no_limit() {
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("64Ki"), Ok(64 << 10));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes_limit("none"), Ok(Limit(None)));
        assert_eq!(parse_bytes_limit("0"), Ok(Limit(None)));
        for bad in ["", "Mi", "12MB", "-1", "1.5Gi", "99999999999Ti"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_count_limit("100000"), Ok(Limit(Some(100_000))));
        assert_eq!(parse_count_limit("none").map(Limit::count), Ok(None));
        assert!(parse_count_limit("ten").is_err());
    }
}
