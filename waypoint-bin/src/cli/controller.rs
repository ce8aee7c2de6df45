//! `waypoint controller`: provision a waypoint per Gateway of our GatewayClasses (see
//! `waypoint_kube::controller`), one replica writing at a time under a Lease.
//!
//! Its admin address serves only `/healthz/ready` (every watched kind listed once) and
//! `/healthz/live`: nothing else to protect, so it listens on every address by default, as the
//! kubelet's probes need.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use waypoint_core::shutdown;
use waypoint_kube::controller::options::is_quantity;
use waypoint_kube::controller::{Controller, ControllerSettings, RenderOptions, Resources, Synced};
use waypoint_kube::status::{
    ControllerName, ControllerNameError, DEFAULT_CONTROLLER_NAME, LeaseSettings, holder_identity,
    lease_name, lease_namespace,
};
use waypoint_kube::{KubeApi, KubeClient};

use super::wait_for_signal;

/// How long the controller may take to release its Lease on shutdown.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// `waypoint controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Our Gateway API controller name: we provision Gateways of GatewayClasses whose
    /// `spec.controllerName` equals it, and the waypoints write status under it.
    #[arg(long, env = "WAYPOINT_CONTROLLER_NAME", default_value = DEFAULT_CONTROLLER_NAME, value_parser = parse_controller_name)]
    pub controller_name: ControllerName,
    /// The container image of the provisioned waypoints.
    #[arg(long, env = "WAYPOINT_IMAGE")]
    pub image: String,
    /// The mesh's trust domain, passed to the waypoints.
    #[arg(long, env = "WAYPOINT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// istiod's certificate service, passed to native HBONE waypoints (as `CA_ADDRESS`, which
    /// `waypoint run --ca-address` reads).
    #[arg(
        long,
        env = "CA_ADDRESS",
        default_value = "istiod.istio-system.svc:15012"
    )]
    pub ca_address: String,
    /// The cluster's DNS suffix: the Gateway's published hostname is
    /// `<gateway>.<namespace>.svc.<cluster domain>`.
    #[arg(long, env = "WAYPOINT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The Lease whose holder alone writes.
    #[arg(long, env = "WAYPOINT_LEASE_NAME", default_value = "waypoint-controller", value_parser = parse_lease_name)]
    pub lease_name: String,
    /// The Lease's namespace (default: `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "WAYPOINT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Address of `/healthz/ready` and `/healthz/live`, or `off`.
    #[arg(long, env = "WAYPOINT_ADMIN_ADDR", default_value = "0.0.0.0:15021", value_parser = super::run::parse_admin_addr)]
    pub admin_addr: super::AdminAddr,
    /// Replicas of each waypoint unless its Gateway sets `waypoint.dev/replicas` in
    /// `spec.infrastructure.annotations`.
    #[arg(long, env = "WAYPOINT_DEFAULT_REPLICAS", default_value = "1")]
    pub default_replicas: u32,
    /// CPU request of each waypoint (`none`: unset); per Gateway `waypoint.dev/cpu-request`.
    #[arg(long, env = "WAYPOINT_DEFAULT_CPU_REQUEST", default_value = "100m", value_parser = parse_quantity)]
    pub default_cpu_request: Quantity,
    /// Memory request; per Gateway `waypoint.dev/memory-request`.
    #[arg(long, env = "WAYPOINT_DEFAULT_MEMORY_REQUEST", default_value = "128Mi", value_parser = parse_quantity)]
    pub default_memory_request: Quantity,
    /// CPU limit (none by default: a throttled proxy delays every request); per Gateway
    /// `waypoint.dev/cpu-limit`.
    #[arg(long, env = "WAYPOINT_DEFAULT_CPU_LIMIT", default_value = "none", value_parser = parse_quantity)]
    pub default_cpu_limit: Quantity,
    /// Memory limit; per Gateway `waypoint.dev/memory-limit`.
    #[arg(long, env = "WAYPOINT_DEFAULT_MEMORY_LIMIT", default_value = "1Gi", value_parser = parse_quantity)]
    pub default_memory_limit: Quantity,
}

/// A Kubernetes quantity, or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity(pub Option<String>);

fn parse_quantity(s: &str) -> Result<Quantity, String> {
    if s == "none" {
        Ok(Quantity(None))
    } else if is_quantity(s) {
        Ok(Quantity(Some(s.to_owned())))
    } else {
        Err(format!(
            "{s:?} is not a Kubernetes quantity (like 250m, 1, 512Mi) or none"
        ))
    }
}

fn parse_controller_name(s: &str) -> Result<ControllerName, String> {
    s.parse().map_err(|e: ControllerNameError| e.to_string())
}

fn parse_lease_name(s: &str) -> Result<String, String> {
    lease_name(s).map_err(|e| e.to_string())
}

impl ControllerArgs {
    /// The controller's settings; who we are comes from `POD_NAME`/`POD_NAMESPACE`.
    pub fn settings(self) -> ControllerSettings {
        let env = |name: &str| std::env::var(name).ok();
        let hostname =
            env("HOSTNAME").or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok());
        let namespace = self
            .lease_namespace
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| lease_namespace(env("POD_NAMESPACE"), None));
        ControllerSettings {
            render: RenderOptions {
                controller: self.controller_name,
                image: self.image,
                trust_domain: self.trust_domain,
                ca_address: self.ca_address,
                cluster_domain: self.cluster_domain,
                replicas: self.default_replicas,
                resources: Resources {
                    cpu_request: self.default_cpu_request.0,
                    memory_request: self.default_memory_request.0,
                    cpu_limit: self.default_cpu_limit.0,
                    memory_limit: self.default_memory_limit.0,
                },
            },
            lease: LeaseSettings::new(
                self.lease_name,
                namespace,
                holder_identity(env("POD_NAME"), hostname),
            ),
        }
    }
}

/// Runs `waypoint controller` until SIGTERM/SIGINT.
pub async fn controller(args: ControllerArgs) -> ExitCode {
    let admin = args.admin_addr.0;
    let api: Arc<dyn KubeApi> = match KubeClient::from_environment() {
        Ok(client) => Arc::new(client),
        Err(error) => {
            tracing::error!(%error, "the controller could not start: no Kubernetes API client");
            return ExitCode::FAILURE;
        }
    };
    let settings = args.settings();
    tracing::info!(controller = %settings.render.controller, lease = %settings.lease.name, namespace = %settings.lease.namespace, identity = %settings.lease.identity, "waypoint controller starting");
    let (controller, synced) = Controller::new(api, settings);
    if let Some(addr) = admin {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%addr, %error, "cannot listen on the admin address");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin server ready: /healthz/ready /healthz/live");
        }
        tokio::spawn(serve_health(listener, synced));
    }
    let (trigger, shutdown) = shutdown::channel();
    let task = tokio::spawn(controller.run(shutdown));
    wait_for_signal().await;
    tracing::info!("stopping: releasing the Lease");
    if !trigger.shutdown(STOP_DEADLINE).await {
        tracing::warn!("the controller did not stop in time (Lease not released)");
    }
    task.abort();
    ExitCode::SUCCESS
}

async fn serve_health(listener: TcpListener, synced: Synced) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let synced = synced.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let synced = synced.clone();
                async move { Ok::<_, Infallible>(health(request.uri().path(), &synced)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn health(path: &str, synced: &Synced) -> Response<Full<Bytes>> {
    let (code, body) = match path {
        "/healthz/live" => (StatusCode::OK, "live\n"),
        "/healthz/ready" if synced.is_synced() => (StatusCode::OK, "ready\n"),
        "/healthz/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not synced with the API server yet\n",
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    response
}
