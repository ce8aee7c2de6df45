//! What the filters of one request share: the connection, the config snapshot, the decisions
//! taken so far, and the typed values filters leave for each other.
//!
//! Two kinds of value live in [`RequestContext::extensions`]: a filter's private notes, and the
//! few facts core names so that independent filters agree on them without depending on each
//! other's crates. [`RequestPrincipal`] is one: whichever filter validates a token (the built-in
//! RequestAuthentication or a vendor's) inserts it, and AuthorizationPolicy's
//! `requestPrincipals` reads it.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Endpoint, ResourceRef};
use crate::conn::ConnInfo;
use crate::flags::ResponseFlag;

use super::UpstreamTarget;
use super::body::BodyObservers;

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
    /// The request head as it arrived, kept only when a filter of the chain asked for it
    /// ([`Filter::wants_request_head`](super::Filter::wants_request_head)).
    pub(super) request_head: Option<Arc<RequestHead>>,
    /// Body observers attached during the request and response phases, installed by the
    /// outermost chain as one wrapper per body.
    pub(super) bodies: BodyObservers,
    /// How many chains are running a phase for this request right now: a route rule's chain
    /// runs inside the routing filter, and only the outermost chain installs body observers.
    pub(super) depth: u8,
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
            request_head: None,
            bodies: BodyObservers::default(),
            depth: 0,
        }
    }

    /// The request head (method, URI, version, headers) as it reached the first chain that has
    /// a filter wanting it, before any filter of that chain changed it. `None` unless some filter
    /// returns `true` from [`Filter::wants_request_head`](super::Filter::wants_request_head):
    /// copying the headers costs an allocation per request that nobody else should pay.
    pub fn request_head(&self) -> Option<&RequestHead> {
        self.request_head.as_deref()
    }
}

/// A request without its body, as [`RequestContext::request_head`] keeps it for the response
/// phase.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestHead {
    /// The method.
    pub method: http::Method,
    /// The URI.
    pub uri: http::Uri,
    /// The HTTP version.
    pub version: http::Version,
    /// The headers.
    pub headers: http::HeaderMap,
}

impl RequestHead {
    /// A copy of `req`'s head.
    pub fn of<B>(req: &http::Request<B>) -> Self {
        RequestHead {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }
}

/// The caller proven by a validated token (a JWT, say), as AuthorizationPolicy's
/// `requestPrincipals` and `request.auth.*` conditions read it.
///
/// A filter that validates a token inserts one into [`RequestContext::extensions`]; its absence
/// means the request carried no (valid) token. The built-in RequestAuthentication filter is one
/// such filter; a vendor's token filter placed before AuthorizationPolicy is another, with the
/// same effect.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestPrincipal {
    /// `<iss>/<sub>`, matched by `requestPrincipals` and `request.auth.principal`.
    pub principal: String,
    /// The `aud` claim (a string becomes one entry), for `request.auth.audiences`.
    pub audiences: Vec<String>,
    /// The `azp` claim, for `request.auth.presenter`.
    pub presenter: Option<String>,
    /// Every claim of the token, for `request.auth.claims[...]`.
    pub claims: serde_json::Value,
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
