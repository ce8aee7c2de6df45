//! TLS from the waypoint to the endpoints (`tls`).

use serde::{Deserialize, Serialize};

/// TLS from the waypoint to the endpoints (`tls`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSettings {}

impl ClientTlsSettings {
    /// Why the block is invalid, naming the field inside it; the caller adds the path to it.
    pub(crate) fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
