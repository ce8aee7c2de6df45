//! Watching the config source (placeholder: being written).
