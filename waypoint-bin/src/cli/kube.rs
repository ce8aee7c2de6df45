//! `--kube`: the Kubernetes API as config source.
//!
//! waypoint-kube is always built in: a cargo feature to leave it out saved about 6 s of a debug
//! build (its dependencies are the core's), and the status writer's flags parse with its types.

use std::sync::Arc;

use waypoint_core::config::source::ConfigSource;
use waypoint_kube::{KubeClient, KubeSource, KubeSourceOptions};

use super::run::KubeSettings;

/// The Kubernetes config source for `settings`, with the API client configured from the
/// environment (KUBECONFIG, the in-cluster ServiceAccount, or ~/.kube/config).
pub fn source(settings: KubeSettings) -> Result<Box<dyn ConfigSource>, String> {
    let client = KubeClient::from_environment().map_err(|e| e.to_string())?;
    let options = KubeSourceOptions {
        namespace: settings.namespace,
        ..KubeSourceOptions::default()
    };
    Ok(Box::new(KubeSource::new(Arc::new(client), options)))
}
