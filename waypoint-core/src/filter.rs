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
//! ```
//!
//! 1. **`on_request`**, in chain order. A filter may read [`RequestContext`] (the connection's
//!    [`ConnInfo`], the active config), change the request (headers, URI, body), record
//!    decisions in the context, and then either [`Decision::Continue`] or answer directly with
//!    [`Decision::Respond`]. Answering stops the request phase: later filters and the upstream
//!    never see the request.
//! 2. **Forwarding**: when every filter continued, the request goes to the upstream recorded in
//!    [`RequestContext::upstream`] (the routing filter sets it). If no filter chose an upstream,
//!    the waypoint answers 404.
//! 3. **`on_response`**, in reverse order, for every filter whose `on_request` ran (including
//!    the one that answered). It may change status and headers, or replace the body.
//!
//! Errors are answers: a filter that fails answers with the status it thinks right
//! (`Decision::Respond`), so the chain has one exit path and every reply is visible to the
//! filters before it.
//!
//! A filter is built once per config snapshot by a [`FilterFactory`], so everything it needs
//! from config (route tables, compiled policies) is compiled before the first request and only
//! read afterwards. Filters know nothing of sockets.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::body::Body;
use crate::config::{Config, Endpoint, ResourceRef, ServiceBackend};
use crate::conn::ConnInfo;
use crate::flags::ResponseFlag;
use crate::route_status::{GatewayStatus, RouteParentStatus};

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
/// use waypoint_core::filter::{Decision, Filter, Request, RequestContext};
/// use waypoint_core::body::local_reply;
///
/// /// Answers 403 to requests without a proven peer identity.
/// struct RequireIdentity;
///
/// #[async_trait::async_trait]
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

/// Where the routing decided to send a request, and how: timeouts, retries, mirrors.
///
/// Build one with [`UpstreamTarget::new`] and set what the route asks for; the fields stay
/// public so a vendor filter can adjust any of them.
#[derive(Clone, Debug)]
pub struct UpstreamTarget {
    /// The backend Service port whose ready endpoints may serve the request.
    pub backend: Arc<ServiceBackend>,
    /// The whole-transaction timeout, retries included; [`Timeout::Default`] is the waypoint's
    /// default request timeout.
    pub request_timeout: Timeout,
    /// Per-attempt timeout to the backend; [`Timeout::Default`] and [`Timeout::Disabled`] leave
    /// each try bounded by the request timeout alone.
    pub backend_timeout: Timeout,
    /// When to try again on another endpoint; `None` sends once.
    pub retry: Option<Arc<RetryPolicy>>,
    /// Backends that get a copy of the request, fire and forget.
    pub mirrors: Vec<MirrorTarget>,
}

impl UpstreamTarget {
    /// A target of `backend` with the waypoint's default timeout, no retry and no mirror.
    pub fn new(backend: Arc<ServiceBackend>) -> Self {
        UpstreamTarget {
            backend,
            request_timeout: Timeout::Default,
            backend_timeout: Timeout::Default,
            retry: None,
            mirrors: Vec::new(),
        }
    }
}

/// A timeout as a route states it: not stated, stated as none, or a limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timeout {
    /// Not stated: the waypoint's default applies.
    #[default]
    Default,
    /// No limit at all (Gateway API `0s`).
    Disabled,
    /// At most this long.
    After(Duration),
}

impl Timeout {
    /// A Gateway API duration: `0s` disables the timeout.
    pub fn from_gateway(duration: Duration) -> Self {
        if duration.is_zero() {
            Timeout::Disabled
        } else {
            Timeout::After(duration)
        }
    }

    /// The limit, with `default` standing in for [`Timeout::Default`]; `None` is no limit.
    pub fn limit(self, default: Option<Duration>) -> Option<Duration> {
        match self {
            Timeout::Default => default,
            Timeout::Disabled => None,
            Timeout::After(d) => Some(d),
        }
    }
}

/// When and how often a request is tried again (Gateway API HTTPRoute `retry`).
///
/// A try is repeated, on another endpoint where there is one, when its response status is in
/// `codes`, when no connection could be made or it failed before response headers, or when the
/// per-try (backend) timeout expired. Only requests whose body is empty or small enough to be
/// kept are retried (see the `upstream` module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Response statuses that are retried.
    pub codes: Vec<http::StatusCode>,
    /// Retries after the first try, at most (`0`: none).
    pub attempts: u32,
    /// The least wait before each retry.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// Retries when routes leave `attempts` unset: Envoy's default, one.
    pub const DEFAULT_ATTEMPTS: u32 = 1;
    /// Backoff when routes leave it unset: Envoy's base interval, 25 ms.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

    /// True when a response with `status` is tried again.
    pub fn retries_status(&self, status: http::StatusCode) -> bool {
        self.codes.contains(&status)
    }
}

/// A backend that gets a copy of a share of the requests (Gateway API `RequestMirror`).
///
/// The share is `numerator / denominator`; the default is every request.
#[derive(Clone, Debug)]
pub struct MirrorTarget {
    /// The Service port one of whose endpoints gets the copy.
    pub backend: Arc<ServiceBackend>,
    /// Mirrored requests out of every `denominator`.
    pub numerator: u32,
    /// See `numerator`; `0` mirrors nothing.
    pub denominator: u32,
}

impl MirrorTarget {
    /// Mirrors every request to `backend`.
    pub fn new(backend: Arc<ServiceBackend>) -> Self {
        MirrorTarget {
            backend,
            numerator: 1,
            denominator: 1,
        }
    }

    /// Mirrors `percent` out of 100 requests (above 100 means all).
    pub fn percent(self, percent: u32) -> Self {
        self.fraction(percent, 100)
    }

    /// Mirrors `numerator` out of every `denominator` requests.
    pub fn fraction(mut self, numerator: u32, denominator: u32) -> Self {
        self.numerator = numerator;
        self.denominator = denominator;
        self
    }

    /// Draws whether this request is mirrored.
    pub fn sample(&self) -> bool {
        if self.numerator >= self.denominator {
            return self.denominator > 0;
        }
        fastrand::u32(..self.denominator) < self.numerator
    }
}

/// Per-request state shared by the filters of one request.
#[derive(Debug)]
pub struct RequestContext {
    /// The connection the request arrived on.
    pub conn: Arc<ConnInfo>,
    /// The config snapshot this request is served with, start to finish.
    pub config: Arc<Config>,
    /// The upstream chosen for this request (set by routing).
    pub upstream: Option<UpstreamTarget>,
    /// The route rule that matched, for logs and metrics.
    pub route: Option<RouteMatch>,
    /// The endpoint the upstream chose (set while forwarding), for logs and metrics.
    pub endpoint: Option<Endpoint>,
    /// Envoy-style response flags for logs and metrics (`NR` no route, `UF` upstream failure,
    /// `UT` upstream timeout, `UH` no healthy upstream, ...).
    pub response_flags: Vec<ResponseFlag>,
    /// When the request arrived.
    pub started: Instant,
    /// Typed values filters leave for each other (vendor data goes here).
    pub extensions: http::Extensions,
}

/// The authorization outcome of a request, left in [`RequestContext::extensions`] by the
/// policy filter so logs and metrics can report it.
///
/// `action` is the action of the deciding policy (`ALLOW`, `DENY`, `CUSTOM`), `ALLOW` with no
/// policy when ALLOW policies apply but none matched (denied), or `NONE` when no ALLOW policy
/// applies (allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The deciding action (see the type's documentation).
    pub action: String,
    /// The deciding policy, if one decided.
    pub policy: Option<ResourceRef>,
    /// The index of the matching rule in the deciding policy's `spec.rules`.
    pub rule: Option<usize>,
    /// True for what dry-run policies would have decided.
    pub dry_run: bool,
}

/// Which route rule matched a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    /// The route resource.
    pub route: ResourceRef,
    /// The index of the rule in `spec.rules`.
    pub rule: usize,
}

impl RequestContext {
    /// A fresh context for a request on `conn`, served with `config`.
    pub fn new(conn: Arc<ConnInfo>, config: Arc<Config>) -> Self {
        RequestContext {
            conn,
            config,
            upstream: None,
            route: None,
            endpoint: None,
            response_flags: Vec::new(),
            started: Instant::now(),
            extensions: http::Extensions::new(),
        }
    }
}

/// An ordered list of filters, itself a filter: a route rule's filters form a chain that the
/// routing filter runs after it chose the rule.
#[derive(Clone, Default)]
pub struct FilterChain {
    filters: Vec<Arc<dyn Filter>>,
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
        FilterChain { filters }
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
    /// request and then calls [`FilterChain::run_response`].
    pub async fn run_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        for (i, filter) in self.filters.iter().enumerate() {
            if let Decision::Respond(mut resp) = filter.on_request(req, ctx).await {
                self.run_response_upto(i + 1, &mut resp, ctx).await;
                return Decision::Respond(resp);
            }
        }
        Decision::Continue
    }

    /// Runs the response phase of every filter, in reverse order.
    pub async fn run_response(&self, resp: &mut Response, ctx: &mut RequestContext) {
        self.run_response_upto(self.filters.len(), resp, ctx).await;
    }

    /// Runs the end-of-request phase of every filter, in chain order.
    pub fn run_finished(&self, finished: &Finished<'_>) {
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
}

/// Builds one filter of the chain for each config snapshot.
///
/// The factory reads the validated config once, compiles what its filter needs, and reports
/// per-resource problems through [`BuildContext::report`]; invalid resources are left out and
/// the rest is served.
pub trait FilterFactory: Send + Sync + 'static {
    /// The filter's name, for logs.
    fn name(&self) -> &str;
    /// Builds the filter for `cx.config()`.
    fn build(&self, cx: &mut BuildContext<'_>) -> Arc<dyn Filter>;
}

/// A problem a filter factory found with a resource while building.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildReport {
    /// The resource at fault.
    pub resource: ResourceRef,
    /// The condition type, as the upstream API names it (`Accepted`, `ResolvedRefs`).
    pub condition: String,
    /// The reason, as the upstream API names it (`BackendNotFound`, `InvalidKind`, ...).
    pub reason: String,
    /// A human message naming the field.
    pub message: String,
}

/// What a [`FilterFactory`] gets to build with.
pub struct BuildContext<'a> {
    config: &'a Config,
    extensions: &'a ExtensionRegistry,
    reports: Vec<BuildReport>,
    route_parents: Vec<RouteParentStatus>,
    gateways: Vec<GatewayStatus>,
}

/// Everything the factories of one build reported.
#[derive(Debug, Default)]
pub struct BuildOutput {
    /// Per-resource problems.
    pub reports: Vec<BuildReport>,
    /// Per-parent route conditions.
    pub route_parents: Vec<RouteParentStatus>,
    /// Gateway and listener status.
    pub gateways: Vec<GatewayStatus>,
}

impl<'a> BuildContext<'a> {
    /// A build context over `config`, resolving `ExtensionRef`s with `extensions`.
    pub fn new(config: &'a Config, extensions: &'a ExtensionRegistry) -> Self {
        BuildContext {
            config,
            extensions,
            reports: Vec::new(),
            route_parents: Vec::new(),
            gateways: Vec::new(),
        }
    }

    /// The validated config being built.
    pub fn config(&self) -> &'a Config {
        self.config
    }

    /// The registry of vendor filters, for Gateway API `ExtensionRef`.
    pub fn extensions(&self) -> &'a ExtensionRegistry {
        self.extensions
    }

    /// Records a problem with a resource (it shows in `waypoint check` and the logs).
    pub fn report(&mut self, report: BuildReport) {
        self.reports.push(report);
    }

    /// The problems recorded so far.
    pub fn reports(&self) -> &[BuildReport] {
        &self.reports
    }

    /// Records the conditions of a route for one of its parents (`status.parents[]`).
    pub fn report_parent(&mut self, status: RouteParentStatus) {
        self.route_parents.push(status);
    }

    /// Records the status of a Gateway and its listeners.
    pub fn report_gateway(&mut self, status: GatewayStatus) {
        self.gateways.push(status);
    }

    /// The problems recorded, without the route and Gateway status.
    pub fn into_reports(self) -> Vec<BuildReport> {
        self.reports
    }

    /// Everything recorded.
    pub fn finish(self) -> BuildOutput {
        BuildOutput {
            reports: self.reports,
            route_parents: self.route_parents,
            gateways: self.gateways,
        }
    }
}

/// Builds a vendor filter named by a Gateway API `ExtensionRef` (`group`, `kind`, `name`).
pub trait ExtensionFactory: Send + Sync + 'static {
    /// Builds the filter for the referenced object. `object` is the object's manifest when the
    /// config holds one of that kind and name (vendor kinds are kept verbatim), `None` otherwise.
    fn build(
        &self,
        name: &str,
        namespace: &str,
        object: Option<&serde_json::Value>,
    ) -> Result<Arc<dyn Filter>, String>;
}

impl<F> ExtensionFactory for F
where
    F: Fn(&str, &str, Option<&serde_json::Value>) -> Result<Arc<dyn Filter>, String>
        + Send
        + Sync
        + 'static,
{
    fn build(
        &self,
        name: &str,
        namespace: &str,
        object: Option<&serde_json::Value>,
    ) -> Result<Arc<dyn Filter>, String> {
        self(name, namespace, object)
    }
}

/// Vendor filters by (API group, kind), for Gateway API `ExtensionRef` filters.
#[derive(Default, Clone)]
pub struct ExtensionRegistry {
    factories: HashMap<(String, String), Arc<dyn ExtensionFactory>>,
}

impl fmt::Debug for ExtensionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl ExtensionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the factory for `ExtensionRef`s of `group`/`kind`, replacing any before it.
    pub fn register(
        &mut self,
        group: &str,
        kind: &str,
        factory: impl ExtensionFactory,
    ) -> &mut Self {
        self.factories
            .insert((group.to_owned(), kind.to_owned()), Arc::new(factory));
        self
    }

    /// The factory for `group`/`kind`.
    pub fn get(&self, group: &str, kind: &str) -> Option<&Arc<dyn ExtensionFactory>> {
        self.factories.get(&(group.to_owned(), kind.to_owned()))
    }
}
