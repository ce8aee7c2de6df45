//! Policy settings shared by `run` and `authz`, and `waypoint authz`.

use super::output::{Output, outln};
use super::parse_duration;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use waypoint_core::config;
use waypoint_core::filter::ExtensionRegistry;
use waypoint_core::identity::SpiffeId;
use waypoint_filters::authz::{
    ConnectionAttributes, ExtAuthzProvider, PathNormalization, RequestAttributes,
};
use waypoint_filters::{BuiltinSettings, Builtins, WaypointScope};

/// Settings of the policy filters, shared by `run` and `authz`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Istio's root namespace: GatewayClass-wide policies live there.
    #[arg(long, env = "WAYPOINT_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,
    /// This waypoint's Gateway as `namespace/name`; policies targeting other Gateways are
    /// another waypoint's, and only Services and Pods bound to it are served (binding).
    /// Default: every Gateway in the config is this waypoint, and every Service is served.
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
    /// The built-in filters' settings. Destructured in full (no `..`): a policy flag added to
    /// [`PolicyArgs`] and not wired here does not compile.
    pub fn settings(self) -> BuiltinSettings {
        let PolicyArgs {
            root_namespace,
            gateway,
            gateway_class,
            ext_authz,
            path_normalization,
            xff_trusted_hops,
        } = self;
        BuiltinSettings {
            scope: WaypointScope {
                root_namespace,
                gateway,
                gateway_class,
            },
            ext_authz,
            path_normalization: match path_normalization {
                NormalizationChoice::None => PathNormalization::None,
                NormalizationChoice::Base => PathNormalization::Base,
                NormalizationChoice::MergeSlashes => PathNormalization::MergeSlashes,
                NormalizationChoice::DecodeAndMergeSlashes => {
                    PathNormalization::DecodeAndMergeSlashes
                }
            },
            xff_trusted_hops,
        }
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
    /// Explain a TCP connection instead of an HTTP request: only identity, source, destination
    /// (and `--sni`) exist, and rules that need HTTP attributes are treated as Istio treats
    /// them on TCP traffic (ALLOW rules never match, DENY rules ignore those fields).
    #[arg(long, conflicts_with_all = ["method", "host", "path", "headers"])]
    pub tcp: bool,
    /// With `--tcp`: the connection is TLS passed through with this SNI (`connection.sni`).
    #[arg(long, requires = "tcp")]
    pub sni: Option<String>,
    /// Policy filter settings.
    #[command(flatten)]
    pub policy: PolicyArgs,
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
    let registry = ExtensionRegistry::new();
    let mut cx = waypoint_core::filter::BuildContext::new(&config, &registry);
    let builtins = Builtins::new(args.policy.settings());
    let policies = builtins.authz().compile(&mut cx);
    for report in cx.into_reports() {
        eprintln!(
            "note: {}: {} ({}): {}",
            report.resource, report.condition, report.reason, report.message
        );
    }
    if args.tcp {
        let connection = ConnectionAttributes {
            identity: identity.as_ref(),
            source: args.source,
            destination: Some(args.destination),
            sni: args.sni.as_deref(),
        };
        let explanation = policies.explain_connection(&config, &connection);
        return print_decision(explanation.decision.allowed, &explanation.reason());
    }
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
        Ok(explanation) => print_decision(explanation.decision.allowed, &explanation.reason()),
        Err(err) => {
            let mut out = Output::default();
            outln!(out, "REJECTED (400)");
            outln!(out, "{err}");
            out.print();
            ExitCode::from(1)
        }
    }
}

/// Prints `ALLOWED`/`DENIED` and the reason; exit status 0 when allowed, 1 when denied.
fn print_decision(allowed: bool, reason: &str) -> ExitCode {
    let mut out = Output::default();
    outln!(out, "{}", if allowed { "ALLOWED" } else { "DENIED" });
    outln!(out, "{reason}");
    if out.print() && allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
