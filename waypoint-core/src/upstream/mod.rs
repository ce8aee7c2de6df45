//! Upstream connectors (placeholder: being written).
