//! # waypoint-core
//!
//! The engine of the waypoint L7 proxy for Istio ambient mesh and GAMMA meshes, as a library a
//! vendor embeds: it accepts what ztunnel sends (HBONE, or a PROXY header in sandwich mode),
//! runs a filter chain (Gateway API routing and Istio policy are filters, next to yours),
//! forwards to backends over HBONE or the co-located ztunnel, and reports Istio's telemetry.
//!
//! ## Embedding
//!
//! [`runtime::Waypoint::builder`] is the one way to start a waypoint, for the `waypoint`
//! binary and for a vendor alike: options, then each bundle of filters with
//! [`install`](runtime::WaypointBuilder::install) (the built-ins are
//! `waypoint_filters::Builtins`), optionally your own Prometheus registry, then `start`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use waypoint_core::filter::{Decision, FilterSet, request_fn};
//! use waypoint_core::runtime::{Waypoint, WaypointOptions};
//!
//! let running = Waypoint::builder(WaypointOptions::new("examples/quickstart"))
//!     .install(|filters: &mut FilterSet| {
//!         // Answer nothing, stamp every request: a filter as a synchronous closure.
//!         filters.filter(request_fn("stamp", |req, _ctx| {
//!             req.headers_mut().insert("x-vendor", http::HeaderValue::from_static("1"));
//!             Decision::Continue
//!         }));
//!     })
//!     .start()
//!     .await?;
//! running.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! A filter is written against [`filter`]: its module documentation walks the phases
//! (request, bodies, response, end of request), and `examples/` in the repository has one
//! example per phase. `filter::testing` (feature `test-helpers`) runs a chain from manifests
//! without sockets, for your filter's tests.
//!
//! ## The request path
//!
//! One request crosses five files (`docs/architecture.md` in the repository walks them):
//! [`transport`]'s `listener.rs` (the accept loop) → [`pipeline`] (per connection, then per
//! request) → [`http`]'s `server.rs` → [`filter`] (the chain) → [`upstream`] (forwarding), and
//! back through the chain to the pipeline's completion.
//!
//! ## Modules
//!
//! What a vendor uses:
//! - [`runtime`]: assembling and starting a waypoint; its options.
//! - [`filter`]: the Filter API: phases, the chain, the request context, registration
//!   ([`filter::Install`], [`filter::FilterSet`]), typed `ExtensionRef` config.
//! - [`flags`]: Envoy-style response flags a filter or the upstream records.
//! - [`body`]: the body type and local replies.
//! - [`conn`]: what is known about a connection ([`conn::ConnInfo`]): source, destination, peer
//!   identity, workload metadata.
//! - [`identity`]: SPIFFE identities.
//! - [`config`]: the validated config a filter reads ([`config::Config`]), from manifests or
//!   a [`config::source::ConfigSource`].
//! - [`snapshot`]: a config with the chain built from it, and the store that swaps snapshots.
//! - [`http`]: which host a request is for ([`http::authority`]), the small client for side
//!   calls, upgrade policy, the HTTP server's limits.
//!
//! The request path, public so tests, tools and benches drive it directly:
//! - [`transport`]: inbound: the listeners (sandwich and HBONE) and the accept loop.
//! - [`pipeline`]: the spine, top to bottom.
//! - [`upstream`]: outbound: endpoints, dialling, pools, retries, mirrors.
//! - [`wire`]: the codecs both directions share (PROXY protocol, HBONE, baggage).
//!
//! Around it:
//! - [`telemetry`]: Istio metrics, access log, trace context, OTLP spans.
//! - [`tls`]: SPIFFE certificates, verifiers, rotation, TLS for HTTPS listeners.
//! - [`overload`]: connection, request and memory limits.
//! - [`admin`]: the admin server (`/metrics`, `/config_dump`, readiness, log level).
//! - [`shutdown`]: draining without losing a request.
//! - [`route_status`]: the status of routes and Gateways the routing built-in reports.

pub mod admin;
pub mod body;
mod completion;
pub mod config;
pub mod conn;
pub mod dns;
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
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod upstream;
pub mod wire;
