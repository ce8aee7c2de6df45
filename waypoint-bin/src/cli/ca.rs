//! `waypoint run`'s certificate from istiod: the flags, and the identity they name.
//!
//! Precedence: `--certs-dir` wins (files, e.g. written by `waypoint certs` from the development
//! CA, or mounted by an operator); without it, `--hbone-listen` asks istiod's CA with these
//! flags; without HBONE, no certificate is needed and these flags are unused.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use waypoint_core::identity::SpiffeId;
use waypoint_core::tls::IstiodCa;

use super::parse_duration;

/// The `clusterid` sent to the CA when `--cluster-id` is unset: Istio's default.
const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// istiod's CA flags of `waypoint run`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// istiod's CA (`host:port`), asked for the waypoint's certificate when HBONE is on
    /// (`--hbone-listen`) and `--certs-dir` is not set (files win). The host must be a name in
    /// istiod's serving certificate.
    #[arg(
        long,
        env = "CA_ADDRESS",
        default_value = "istiod.istio-system.svc:15012"
    )]
    pub ca_address: String,
    /// The projected ServiceAccount token (audience `istio-ca`) sent to the CA as
    /// `authorization: Bearer`; re-read at every request.
    #[arg(
        long,
        env = "WAYPOINT_CA_TOKEN_PATH",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    pub ca_token_path: PathBuf,
    /// The mesh's root certificates: they verify the CA, and are the waypoint's trust bundle
    /// when its certificate comes from the CA. A changed file triggers a renewal.
    #[arg(
        long,
        env = "WAYPOINT_CA_ROOT_PATH",
        default_value = "/var/run/secrets/istio/root-cert.pem"
    )]
    pub ca_root_path: PathBuf,
    /// Validity asked of the CA for the waypoint's certificate (renewed at half of it).
    #[arg(long, env = "WAYPOINT_CA_VALIDITY", default_value = "24h", value_parser = parse_duration)]
    pub ca_validity: Duration,
    /// The waypoint's namespace: the `ns` of the identity asked of the CA.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The waypoint's service account: the `sa` of the identity asked of the CA.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
}

impl CaArgs {
    /// The CA client for `spiffe://<trust_domain>/ns/<namespace>/sa/<service account>`, sending
    /// `cluster_id` (Istio's `Kubernetes` when unset); or why the identity cannot be formed.
    pub fn istiod_ca(
        self,
        trust_domain: &str,
        cluster_id: Option<String>,
    ) -> Result<IstiodCa, String> {
        let CaArgs {
            ca_address,
            ca_token_path,
            ca_root_path,
            ca_validity,
            pod_namespace,
            service_account,
        } = self;
        let (Some(namespace), Some(service_account)) = (pod_namespace, service_account) else {
            return Err("HBONE without --certs-dir asks the CA for a certificate, which needs the waypoint's identity: set POD_NAMESPACE (--pod-namespace) and SERVICE_ACCOUNT (--service-account)".to_owned());
        };
        let identity = SpiffeId::new(trust_domain, &namespace, &service_account).map_err(|e| {
            format!("the identity to ask the CA for (--trust-domain, POD_NAMESPACE, SERVICE_ACCOUNT): {e}")
        })?;
        Ok(IstiodCa {
            address: ca_address,
            token_path: ca_token_path,
            root_path: ca_root_path,
            cluster_id: cluster_id.unwrap_or_else(|| DEFAULT_CLUSTER_ID.to_owned()),
            identity,
            validity: ca_validity,
        })
    }
}
