//! Inbound transports (placeholder: being written).
