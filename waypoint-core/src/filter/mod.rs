//! The filter chain: the public API that built-in filters (routing, policy) and vendor filters
//! share.
//!
//! # The life of a request
//!
//! ```text
//!  request ──▶ filter 1 ──▶ filter 2 ──▶ … ──▶ filter N ──▶ upstream (chosen in ctx.upstream)
//!                │ on_request   │                 │                     │
//!                │ Continue /   │                 │                     ▼
//!                │ Respond(r) ──┼─── stop here ───┘                 response
//!  response ◀── filter 1 ◀── filter 2 ◀── … ◀── filter N ◀──────────────┘
//!                  on_response (reverse order, only filters whose on_request ran)
//!        ⋮ bodies stream through the observers filters attached (body phases)
//!  end ───▶ on_finished (every filter, chain order) once the response body ended
//! ```
//!
//! 1. **`on_request`**, in chain order. A filter may read [`RequestContext`] (the connection's
//!    [`ConnInfo`](crate::conn::ConnInfo), the active config), change the request (headers,
//!    URI, body), record decisions in the context, and then either [`Decision::Continue`] or
//!    answer directly with [`Decision::Respond`]. Answering stops the request phase: later
//!    filters and the upstream never see the request.
//! 2. **Forwarding**: when every filter continued, the request goes to the upstream recorded in
//!    [`RequestContext::upstream`] (the routing filter sets it). If no filter chose an upstream,
//!    the waypoint answers 404.
//! 3. **`on_response`**, in reverse order, for every filter whose `on_request` ran (including
//!    the one that answered). It may change status and headers, or replace the body. The request
//!    head as it arrived is there too ([`RequestContext::request_head`]) for filters that ask
//!    ([`Filter::wants_request_head`]).
//! 4. **Body phases** ([`body`]): a filter attaches a [`BodyObserver`] in its request or
//!    response phase to see (and change) the body frame by frame as it streams, or reads it
//!    whole up to a limit. Observers are synchronous: they run inside the body's `poll_frame`.
//! 5. **`on_finished`**, once per request when the response body has ended or the client went
//!    away, with the final status, flags, duration and byte counts ([`Finished`]): where a
//!    vendor writes its own access log line or metric. It is synchronous too.
//!
//! Connections the waypoint proxies as bytes (TCP, TLS passthrough) have one phase of their
//! own, [`Filter::on_connection`], run once per connection before anything is forwarded (see
//! [`ConnectionContext`]); their bytes are never seen by filters.
//!
//! Errors are answers: a filter that fails answers with the status it thinks right
//! (`Decision::Respond`), so the chain has one exit path and every reply is visible to the
//! filters before it.
//!
//! # Writing and registering filters
//!
//! - A filter with only a request phase: [`request_fn`], a synchronous closure.
//! - Any other filter: implement [`Filter`] with the re-exported [`macro@async_trait`]
//!   (`#[waypoint_core::filter::async_trait]`), so your crate needs no dependency of its own.
//! - Registration: a [`FilterSet`] holds the chain's factories and the `ExtensionRef` filters;
//!   [`FilterSet::filter`] shares one instance across config snapshots,
//!   [`FilterSet::factory`] and [`FilterSet::build_with`] rebuild it for each one (a
//!   [`FilterFactory`] reads the validated config once and reports per-resource problems), and
//!   [`FilterSet::extension`] registers a typed `ExtensionRef` filter ([`extension`]). A bundle
//!   of them implements [`Install`]; `WaypointBuilder::install` takes it.
//! - Testing: with the `test-helpers` feature, `testing` builds a chain from manifests and
//!   runs requests through it in memory.
//!
//! Filters know nothing of sockets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use async_trait::async_trait;

use crate::body::Body;

pub mod body;
mod build;
mod connection;
mod context;
pub mod extension;
mod install;
mod target;
#[cfg(any(test, feature = "test-helpers"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use body::{BodyObserver, BodyRejected};
pub use build::{BuildContext, BuildOutput, BuildReport, FilterFactory};
pub use connection::{ConnectionContext, ConnectionDecision};
pub use context::{AuthzDecision, RequestContext, RequestHead, RequestPrincipal, RouteMatch};
pub use extension::{Extension, ExtensionError, ExtensionFactory, ExtensionRegistry};
pub use install::{FilterSet, Install, RequestFn, request_fn};
pub use target::{MirrorTarget, RetryPolicy, Timeout, UpstreamTarget};

/// A request as filters see it.
pub type Request = http::Request<Body>;
/// A response as filters see it.
pub type Response = http::Response<Body>;

/// What a filter says after seeing a request.
pub enum Decision {
    /// Go on to the next filter (and finally the upstream).
    Continue,
    /// Stop here and send this response.
    Respond(Response),
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Continue => f.write_str("Continue"),
            Decision::Respond(r) => write!(f, "Respond({})", r.status()),
        }
    }
}

/// One step of request processing. Implementations must be cheap to call concurrently: they
/// are shared by every request of a config snapshot.
///
/// ```
/// use waypoint_core::filter::{async_trait, Decision, Filter, Request, RequestContext};
/// use waypoint_core::body::local_reply;
///
/// /// Answers 403 to requests without a proven peer identity.
/// struct RequireIdentity;
///
/// #[async_trait]
/// impl Filter for RequireIdentity {
///     fn name(&self) -> &str { "require-identity" }
///     async fn on_request(&self, _req: &mut Request, ctx: &mut RequestContext) -> Decision {
///         match ctx.conn.peer_identity {
///             Some(_) => Decision::Continue,
///             None => Decision::Respond(local_reply(http::StatusCode::FORBIDDEN, "identity required")),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Filter: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Sees the request on its way to the upstream.
    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision;

    /// Sees the response on its way back. The default leaves it unchanged.
    async fn on_response(&self, _resp: &mut Response, _ctx: &mut RequestContext) {}

    /// The end-of-request phase: called once when the response body has ended (or the client
    /// went away), with the final status, flags and timings. This is where a vendor writes its
    /// own access log line or metric. It runs where the request completes (possibly inside a
    /// body's `Drop`), so it is synchronous and must not block: hand slow work to a task.
    fn on_finished(&self, _finished: &Finished<'_>) {}

    /// The connection phase: sees a connection proxied as bytes (TCP, TLS passthrough) once,
    /// before a byte is forwarded. It may choose the upstream, record decisions, or close the
    /// connection ([`ConnectionDecision::Close`]). HTTP connections never reach it. The default
    /// lets the connection through unchanged.
    async fn on_connection(&self, _ctx: &mut ConnectionContext) -> ConnectionDecision {
        ConnectionDecision::Continue
    }

    /// True when this filter reads [`RequestContext::request_head`] (in `on_response`, say).
    /// Asked once, when the chain is built; the head is copied for every request only when some
    /// filter of the chain says yes.
    fn wants_request_head(&self) -> bool {
        false
    }
}

/// How a request ended, as the end-of-request phase ([`Filter::on_finished`]) sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Finished<'a> {
    /// The request's context as the chain and the upstream left it (route, endpoint, response
    /// flags including how the body ended, extensions filters left).
    pub ctx: &'a RequestContext,
    /// The status sent to the client.
    pub status: http::StatusCode,
    /// From the request's arrival until the end of the response body.
    pub duration: Duration,
    /// Request body bytes read from the client.
    pub request_bytes: u64,
    /// Response body bytes sent to the client.
    pub response_bytes: u64,
}

impl<'a> Finished<'a> {
    /// How `ctx`'s request ended: `status`, after `duration`, with these body byte counts.
    pub fn new(
        ctx: &'a RequestContext,
        status: http::StatusCode,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) -> Self {
        Finished {
            ctx,
            status,
            duration,
            request_bytes,
            response_bytes,
        }
    }
}

/// An ordered list of filters, itself a filter: a route rule's filters form a chain that the
/// routing filter runs after it chose the rule.
#[derive(Clone, Default)]
pub struct FilterChain {
    filters: Vec<Arc<dyn Filter>>,
    /// Some filter reads the request head in its response phase: copy it per request.
    wants_head: bool,
}

impl fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.filters.iter().map(|x| x.name()))
            .finish()
    }
}

impl FilterChain {
    /// A chain of `filters`, run in this order on requests.
    pub fn new(filters: Vec<Arc<dyn Filter>>) -> Self {
        let wants_head = filters.iter().any(|f| f.wants_request_head());
        FilterChain {
            filters,
            wants_head,
        }
    }

    /// The filters, in request order.
    pub fn filters(&self) -> &[Arc<dyn Filter>] {
        &self.filters
    }

    /// True when the chain has no filter.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Runs the request phase. On `Respond`, the response phase of the filters that ran has
    /// already been applied to the returned response. On `Continue` the caller forwards the
    /// request and then calls [`FilterChain::run_response`]. The outermost chain installs the
    /// body observers filters attached (see [`body`]).
    pub async fn run_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        if self.wants_head && ctx.request_head.is_none() {
            ctx.request_head = Some(Arc::new(RequestHead::of(req)));
        }
        ctx.depth += 1;
        let mut decision = Decision::Continue;
        for (i, filter) in self.filters.iter().enumerate() {
            if let Decision::Respond(mut resp) = filter.on_request(req, ctx).await {
                self.run_response_upto(i + 1, &mut resp, ctx).await;
                decision = Decision::Respond(resp);
                break;
            }
        }
        ctx.depth -= 1;
        if ctx.depth == 0 {
            match &mut decision {
                Decision::Continue => body::install_request(req, ctx),
                Decision::Respond(resp) => body::install_response(resp, ctx),
            }
        }
        decision
    }

    /// Runs the response phase of every filter, in reverse order.
    pub async fn run_response(&self, resp: &mut Response, ctx: &mut RequestContext) {
        ctx.depth += 1;
        self.run_response_upto(self.filters.len(), resp, ctx).await;
        ctx.depth -= 1;
        if ctx.depth == 0 {
            body::install_response(resp, ctx);
        }
    }

    /// Runs the connection phase of every filter, in chain order, until one closes the
    /// connection.
    pub async fn run_connection(&self, ctx: &mut ConnectionContext) -> ConnectionDecision {
        for filter in &self.filters {
            if let close @ ConnectionDecision::Close(_) = filter.on_connection(ctx).await {
                return close;
            }
        }
        ConnectionDecision::Continue
    }

    /// Runs the end-of-request phase of every filter, in chain order.
    pub(crate) fn run_finished(&self, finished: &Finished<'_>) {
        for filter in &self.filters {
            filter.on_finished(finished);
        }
    }

    async fn run_response_upto(&self, n: usize, resp: &mut Response, ctx: &mut RequestContext) {
        for filter in self.filters[..n].iter().rev() {
            filter.on_response(resp, ctx).await;
        }
    }
}

#[async_trait]
impl Filter for FilterChain {
    fn name(&self) -> &str {
        "chain"
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        self.run_request(req, ctx).await
    }

    async fn on_response(&self, resp: &mut Response, ctx: &mut RequestContext) {
        self.run_response(resp, ctx).await
    }

    fn on_finished(&self, finished: &Finished<'_>) {
        self.run_finished(finished)
    }

    async fn on_connection(&self, ctx: &mut ConnectionContext) -> ConnectionDecision {
        self.run_connection(ctx).await
    }

    fn wants_request_head(&self) -> bool {
        self.wants_head
    }
}
