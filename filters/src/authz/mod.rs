//! Istio AuthorizationPolicy (security.istio.io v1 and v1beta1) enforced at the waypoint.
//!
//! At build time every policy attached to this waypoint (`targetRefs` to its Gateway or
//! GatewayClass) or to a Service behind it is compiled into a [`PolicySet`], indexed by Service
//! so a request only ever looks at the policies of its own destination. At request time the
//! filter normalizes the path, runs [`explain`] (the same synchronous function an operator can
//! call to ask "would this be allowed?"), asks the ext_authz providers of matching CUSTOM
//! policies, and either continues or answers `403 RBAC: access denied`.
//!
//! Evaluation follows Istio: CUSTOM deny → deny; any DENY match → deny; no ALLOW policy →
//! allow; any ALLOW match → allow; else deny. AUDIT only marks the request. Policies annotated
//! `istio.io/dry-run: "true"` are evaluated and logged, never enforced.
//!
//! Connections the waypoint proxies as bytes (TCP, TLS passthrough) are decided once by
//! `on_connection` with Istio's treatment of HTTP-only fields on TCP traffic: see the
//! `connection` module and [`PolicySet::explain_connection`].
//!
//! Differences a user may notice, all by necessity of where a waypoint sits:
//! - `connection.sni` matches the server name of TLS passed through. On HTTP requests it never
//!   matches a value (its `notValues` always hold): the waypoint sees the HTTP inside the
//!   tunnel, and ztunnel sends no SNI.
//! - A `ServiceEntry` target applies to the Service of the same namespace and name, since
//!   destinations resolve to Services.
//! - CUSTOM policies are checked after JWT authentication (Envoy runs ext_authz first), so
//!   their rules can also use request principals.
//! - Workload-addressed traffic (a bound Pod's IP, see `waypoint_core::config::binding`) has no
//!   Service: only the policies of this waypoint's Gateway or GatewayClass apply, as in Istio
//!   (its direct-pod filter chain is built without a Service).
//! - `ports` and `destination.port` match the port the client dialled (the Service port), as the
//!   waypoint sees it; a sidecar would see the workload's target port.

mod compile;
mod connection;
mod evaluate;
mod explanation;
mod ext_authz;
mod matcher;
mod normalize;

use std::collections::HashMap;
use std::sync::Arc;
use waypoint_core::flags::ResponseFlag;

use async_trait::async_trait;
use http::header::CONTENT_TYPE;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, StatusCode};
use waypoint_core::body::{full, local_reply};
use waypoint_core::filter::{
    BuildContext, ConnectionContext, ConnectionDecision, Decision, Filter, FilterFactory, Request,
    RequestContext, Response,
};
use waypoint_core::http::authority;
use waypoint_core::identity::SpiffeId;

use crate::scope::WaypointScope;

pub use connection::ConnectionAttributes;
pub use evaluate::{PolicySet, explain};
pub use explanation::{
    AuthzAudit, AuthzDryRun, CustomCheck, Explanation, PolicyRule, RequestAttributes,
    UncheckedCustom,
};
pub use ext_authz::{ExtAuthzProvider, SOURCE_PRINCIPAL_HEADER};
pub use normalize::{NormalizeError, PathNormalization, check_method, normalize_path};

use evaluate::{Action, CompiledPolicy};
use ext_authz::{CheckOutcome, CheckRequest};

/// The body Istio (Envoy's RBAC filter) sends with a denied request, byte for byte.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// The caller proven by a validated token; it lives in core so that any token filter (the
/// built-in RequestAuthentication or a vendor's) can feed AuthorizationPolicy.
pub use waypoint_core::filter::RequestPrincipal;

pub use waypoint_core::filter::AuthzDecision;

/// Builds the [`AuthzFilter`] for each config snapshot.
#[derive(Clone, Debug)]
pub struct AuthzFactory {
    /// Which policies are this waypoint's (root namespace, Gateway, GatewayClass); shared with
    /// RequestAuthentication through [`crate::Builtins`].
    pub scope: WaypointScope,
    /// ext_authz providers CUSTOM policies may name.
    pub providers: HashMap<String, ExtAuthzProvider>,
    /// Path normalization (Istio's mesh `pathNormalization`, default BASE).
    pub normalization: PathNormalization,
    /// Which `X-Forwarded-For` entry is the original client (`remote.ip`, `remoteIpBlocks`):
    /// `None` takes the first (leftmost) entry, which the client controls unless an edge proxy
    /// rewrites the header; `Some(0)` ignores the header; `Some(n)` takes the n-th entry from
    /// the right, like Envoy's `xff_num_trusted_hops` (Istio's `numTrustedProxies`). Without
    /// the chosen entry, the source address is used.
    pub xff_trusted_hops: Option<usize>,
}

impl Default for AuthzFactory {
    fn default() -> Self {
        AuthzFactory {
            scope: WaypointScope::default(),
            providers: HashMap::new(),
            normalization: PathNormalization::Base,
            xff_trusted_hops: None,
        }
    }
}

impl AuthzFactory {
    /// Compiles the policies of `cx.config()`, reporting the ones it ignores or cannot fully
    /// compile. The CLI's "explain" uses this with [`explain`].
    pub fn compile(&self, cx: &mut BuildContext<'_>) -> PolicySet {
        compile::compile(self, cx)
    }
}

impl FilterFactory for AuthzFactory {
    fn name(&self) -> &str {
        "authz"
    }

    fn build(&self, cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(AuthzFilter {
            policies: self.compile(cx),
            providers: self.providers.clone(),
        })
    }
}

/// Enforces the compiled [`PolicySet`] on each request.
#[derive(Debug)]
pub struct AuthzFilter {
    policies: PolicySet,
    providers: HashMap<String, ExtAuthzProvider>,
}

impl AuthzFilter {
    /// The compiled policies this filter enforces.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }
}

/// `403 RBAC: access denied`, exactly as Envoy's RBAC filter answers.
fn denied() -> Response {
    let mut resp = http::Response::new(full(DENIED_BODY));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// The `host[:port]` policies match, read as the router reads it (see [`authority`]).
fn host_of(req: &Request) -> &str {
    authority::request_authority(req).unwrap_or_default()
}

fn log_decision(d: &AuthzDecision, reason: impl FnOnce() -> String) {
    if d.allowed {
        tracing::debug!(action = %d.action, "authz: {}", reason());
    } else {
        tracing::info!(action = %d.action, "authz: {}", reason());
    }
}

#[async_trait]
impl Filter for AuthzFilter {
    fn name(&self) -> &str {
        "authz"
    }

    async fn on_connection(&self, ctx: &mut ConnectionContext) -> ConnectionDecision {
        self.decide_connection(ctx)
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let explained = {
            let attrs = RequestAttributes {
                identity: ctx.conn.peer_identity.as_ref(),
                source: ctx.conn.source.map(|s| s.ip()),
                destination: ctx.conn.destination,
                method: req.method().as_str(),
                host: host_of(req),
                path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                headers: req.headers(),
                request_principal: ctx.extensions.get::<RequestPrincipal>(),
            };
            self.policies.explain(&ctx.config, &attrs)
        };
        let explained = match explained {
            Ok(e) => e,
            Err(e) => {
                return Decision::Respond(local_reply(
                    StatusCode::BAD_REQUEST,
                    format!("waypoint: {e}"),
                ));
            }
        };
        if let Some(path) = &explained.normalized_path {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query =
                PathAndQuery::from_maybe_shared(bytes::Bytes::from(path.clone())).ok();
            match http::Uri::from_parts(parts) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(e) => {
                    return Decision::Respond(local_reply(
                        StatusCode::BAD_REQUEST,
                        format!("waypoint: the normalized path {path:?} is not a valid URI: {e}"),
                    ));
                }
            }
        }
        note_audit_and_dry_run(&explained, &mut ctx.extensions, "request");

        // CUSTOM first, as in Istio's filter order: its denial is what the client sees.
        let decision = &explained.decision;
        if !decision.allowed && decision.action == "CUSTOM" {
            log_decision(decision, || explained.reason());
            ctx.extensions.insert(decision.clone());
            return Decision::Respond(denied());
        }
        let mut upstream_headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for check in &explained.custom {
            let Some(provider) = self.providers.get(&check.provider) else {
                continue;
            };
            let outcome = {
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let request = CheckRequest {
                    method: req.method(),
                    path_and_query: path,
                    host: host_of(req),
                    headers: req.headers(),
                    principal: ctx.conn.peer_identity.as_ref().map(SpiffeId::principal),
                };
                ext_authz::check(provider, &request).await
            };
            let custom_denied = AuthzDecision {
                allowed: false,
                action: "CUSTOM".into(),
                policy: Some(check.rule.policy.clone()),
                rule: Some(check.rule.rule),
                dry_run: false,
            };
            match outcome {
                CheckOutcome::Allow(headers) => upstream_headers.extend(headers),
                CheckOutcome::Deny(resp) => {
                    tracing::info!(policy = %check.rule.policy, provider = %check.provider, status = %resp.status(), "authz: ext_authz denied");
                    ctx.response_flags
                        .push(ResponseFlag::UnauthorizedExternalService);
                    ctx.extensions.insert(custom_denied);
                    return Decision::Respond(resp);
                }
                CheckOutcome::Failed(why) if provider.fail_open => {
                    tracing::warn!(provider = %check.provider, "authz: ext_authz failed ({why}); fail-open lets the request through");
                }
                CheckOutcome::Failed(why) => {
                    tracing::warn!(provider = %check.provider, "authz: ext_authz failed ({why}); denying");
                    ctx.response_flags
                        .push(ResponseFlag::UnauthorizedExternalService);
                    ctx.extensions.insert(custom_denied);
                    let mut resp = local_reply(
                        ext_authz::FAILURE_STATUS,
                        "ext_authz: the authorization check failed",
                    );
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    return Decision::Respond(resp);
                }
            }
        }

        log_decision(decision, || explained.reason());
        ctx.extensions.insert(decision.clone());
        if !decision.allowed {
            return Decision::Respond(denied());
        }
        // Provider headers replace what the client sent under the same names.
        for (name, _) in &upstream_headers {
            req.headers_mut().remove(name);
        }
        for (name, value) in upstream_headers {
            req.headers_mut().append(name, value);
        }
        Decision::Continue
    }
}

/// Logs and records (in a request's or connection's extensions) what AUDIT and dry-run
/// policies made of `what`: neither changes the enforced decision.
fn note_audit_and_dry_run(explained: &Explanation, extensions: &mut http::Extensions, what: &str) {
    if !explained.audit.is_empty() {
        for a in &explained.audit {
            tracing::info!(policy = %a.policy, rule = a.rule, "authz: AUDIT policy matched a {what}");
        }
        extensions.insert(AuthzAudit(explained.audit.clone()));
    }
    if let Some(shadow) = &explained.dry_run {
        if shadow.allowed != explained.decision.allowed {
            tracing::info!(
                policy = ?shadow.policy.as_ref().map(ToString::to_string),
                rule = ?shadow.rule,
                would_allow = shadow.allowed,
                "authz: dry-run policies would change this {what}'s decision"
            );
        }
        extensions.insert(AuthzDryRun(shadow.clone()));
    }
}

#[cfg(test)]
mod tests;
