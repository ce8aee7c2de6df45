//! Limits on connections and requests to the backend (`connectionPool`).

use serde::{Deserialize, Serialize};

/// Limits on connections and requests to the backend (`connectionPool`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPoolSettings {}

impl ConnectionPoolSettings {
    /// Why the block is invalid, naming the field inside it; the caller adds the path to it.
    pub(crate) fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
