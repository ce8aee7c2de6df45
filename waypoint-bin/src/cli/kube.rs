//! `--kube`: the Kubernetes API as config source. Behind the default-on `kube` cargo feature,
//! so that a build for file mode only (an embedded or sidecar use) skips the API client.

use waypoint_core::config::source::ConfigSource;

use super::run::KubeSettings;

/// The Kubernetes config source for `settings`, with the API client configured from the
/// environment (KUBECONFIG, the in-cluster ServiceAccount, or ~/.kube/config).
#[cfg(feature = "kube")]
pub fn source(settings: KubeSettings) -> Result<Box<dyn ConfigSource>, String> {
    use std::sync::Arc;
    use waypoint_kube::{KubeClient, KubeSource, KubeSourceOptions};

    let client = KubeClient::from_environment().map_err(|e| e.to_string())?;
    let options = KubeSourceOptions {
        namespace: settings.namespace,
        ..KubeSourceOptions::default()
    };
    Ok(Box::new(KubeSource::new(Arc::new(client), options)))
}

/// Without the `kube` feature, `--kube` cannot work: say so instead of silently serving nothing.
#[cfg(not(feature = "kube"))]
pub fn source(_settings: KubeSettings) -> Result<Box<dyn ConfigSource>, String> {
    Err(
        "this waypoint was built without the `kube` feature; rebuild with it or use --config"
            .into(),
    )
}
