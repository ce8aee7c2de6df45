//! When a failing endpoint is set aside (`outlierDetection`).

use serde::{Deserialize, Serialize};

/// When a failing endpoint is set aside (`outlierDetection`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {}

impl OutlierDetection {
    /// Why the block is invalid, naming the field inside it; the caller adds the path to it.
    pub(crate) fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
