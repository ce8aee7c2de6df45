//! # waypoint-core
//!
//! The engine of the waypoint L7 proxy for Istio ambient mesh and GAMMA meshes, as a library
//! a vendor can embed:
//!
//! - [`transport`]: inbound bindings. The sandwich listener (TCP or Unix socket) reads the PROXY
//!   protocol header a co-located ztunnel writes and turns it into a [`conn::ConnInfo`].
//! - [`filter`]: the filter chain API shared by built-in and vendor filters.
//! - [`config`]: Kubernetes manifests parsed and validated into an immutable [`config::Config`].
//! - [`upstream`]: forwarding to the chosen backend's endpoints over pooled connections.
//! - [`wire`]: the codecs both directions share (PROXY protocol, HBONE, baggage).
//! - [`pipeline`]: the request path tying them together, top to bottom.
//! - [`snapshot`]: the config snapshot a request is served with, and the store that swaps it.

pub mod admin;
pub mod body;
mod completion;
pub mod config;
pub mod conn;
pub mod filter;
pub mod flags;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod overload;
pub mod pipeline;
pub mod route_status;
pub mod runtime;
pub mod shutdown;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod upstream;
pub mod wire;
