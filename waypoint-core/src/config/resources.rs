//! Serde types of the Kubernetes resources waypoint reads (placeholder: being written).

use serde::Deserialize;

/// Kubernetes object metadata (the fields waypoint reads).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace; `None` means `default`.
    pub namespace: Option<String>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A Service.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Service {
    /// Metadata.
    pub metadata: ObjectMeta,
}

/// Every valid resource read.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// Services.
    pub services: Vec<Service>,
}
