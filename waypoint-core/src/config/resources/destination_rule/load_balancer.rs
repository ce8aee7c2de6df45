//! How an endpoint of the backend is chosen (`loadBalancer`).

use serde::{Deserialize, Serialize};

/// How an endpoint of the backend is chosen (`loadBalancer`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {}

impl LoadBalancerSettings {
    /// Why the block is invalid, naming the field inside it; the caller adds the path to it.
    pub(crate) fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
