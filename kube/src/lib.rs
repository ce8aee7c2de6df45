//! waypoint's Kubernetes side: the API server as a config source (list/watch into the same
//! snapshot builder the manifest files feed) and the writer of Gateway and route status.
//!
//! The crate talks to the API server through [`KubeApi`], a handful of verbs over JSON objects.
//! Everything above it (reflectors, the status writer, the Lease) is written and tested against
//! that trait; the HTTP client is one implementation, a scripted fake in tests is another.

pub mod api;
pub mod client;
pub mod controller;
pub mod source;
pub mod status;

pub use api::{ApiResource, KubeApi, KubeError, ObjectList, WatchEvent, WatchEvents};
pub use client::KubeClient;
pub use source::{KubeSource, KubeSourceOptions};
