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
mod ext_authz;
mod matcher;
mod normalize;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use waypoint_core::flags::ResponseFlag;

use async_trait::async_trait;
use http::header::CONTENT_TYPE;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use waypoint_core::body::{full, local_reply};
use waypoint_core::config::{Config, ResourceRef};
use waypoint_core::filter::{
    BuildContext, ConnectionContext, ConnectionDecision, Decision, Filter, FilterFactory, Request,
    RequestContext, Response,
};
use waypoint_core::http::authority;
use waypoint_core::identity::SpiffeId;

use crate::scope::WaypointScope;

pub use connection::ConnectionAttributes;
pub use ext_authz::{ExtAuthzProvider, SOURCE_PRINCIPAL_HEADER};
pub use normalize::{NormalizeError, PathNormalization, check_method, normalize_path};

use ext_authz::{CheckOutcome, CheckRequest};
use matcher::{Attrs, RuleMatch};

/// The body Istio (Envoy's RBAC filter) sends with a denied request, byte for byte.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// The caller proven by a validated token; it lives in core so that any token filter (the
/// built-in RequestAuthentication or a vendor's) can feed AuthorizationPolicy.
pub use waypoint_core::filter::RequestPrincipal;

pub use waypoint_core::filter::AuthzDecision;

/// What enforcing the `istio.io/dry-run` policies too would have decided; present in
/// `RequestContext::extensions` when a dry-run policy applies to the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzDryRun(pub AuthzDecision);

/// One rule of one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// The policy.
    pub policy: ResourceRef,
    /// The index of the rule in `spec.rules`.
    pub rule: usize,
}

/// The AUDIT policies that matched a request, in `RequestContext::extensions` when any did:
/// the request should be audit-logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzAudit(pub Vec<PolicyRule>);

/// A CUSTOM policy whose rules matched: the request also needs its provider's approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomCheck {
    /// The policy and its matching rule.
    pub rule: PolicyRule,
    /// `spec.provider.name`.
    pub provider: String,
}

/// A request, as [`explain`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttributes<'a> {
    /// The peer's proven identity; `None` is unauthenticated.
    pub identity: Option<&'a SpiffeId>,
    /// The source (peer) IP: the PROXY header's or `forwarded` source.
    pub source: Option<IpAddr>,
    /// The original destination the client dialled.
    pub destination: Option<SocketAddr>,
    /// The HTTP method.
    pub method: &'a str,
    /// `Host` / `:authority`, port included if sent.
    pub host: &'a str,
    /// The request target as received (`/path?query`); normalized before matching.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The validated JWT's principal, if any.
    pub request_principal: Option<&'a RequestPrincipal>,
}

/// Why a request would be allowed or denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The enforced decision. A match of a CUSTOM policy with an unknown provider denies here;
    /// other CUSTOM policies are in `custom` (they need I/O).
    pub decision: AuthzDecision,
    /// CUSTOM policies that matched, in order: their providers must also allow the request.
    pub custom: Vec<CustomCheck>,
    /// AUDIT policies that matched.
    pub audit: Vec<PolicyRule>,
    /// What enforcing dry-run policies too would decide, when any applied.
    pub dry_run: Option<AuthzDecision>,
    /// The normalized request target, when normalization changed it.
    pub normalized_path: Option<String>,
    /// For a connection: the CUSTOM policies that matched it, which its HTTP ext_authz
    /// providers cannot check (`custom` is then empty: nothing is left to ask).
    pub unchecked_custom: Vec<UncheckedCustom>,
}

/// A CUSTOM policy that matched a TCP connection its ext_authz provider cannot check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UncheckedCustom {
    /// The policy, its matching rule and provider.
    pub check: CustomCheck,
    /// The provider is fail-open, so the connection went on; otherwise it was denied here.
    pub let_through: bool,
}

impl Explanation {
    /// A sentence for people: the decision, the deciding policy and rule, pending CUSTOM checks.
    pub fn reason(&self) -> String {
        let d = &self.decision;
        let by = |what: &str| match (&d.policy, d.rule) {
            (Some(p), Some(r)) => format!("{what} by {} policy {p} rule {r}", d.action),
            _ => what.to_owned(),
        };
        let mut out = match (d.allowed, d.action.as_str(), d.policy.is_some()) {
            (true, "NONE", _) => "allowed: no ALLOW policy applies".to_owned(),
            (false, "ALLOW", false) => "denied: ALLOW policies apply but none matches".to_owned(),
            (false, "CUSTOM", _) if self.unchecked_custom.iter().any(|u| !u.let_through) => {
                format!(
                    "{} (its ext_authz provider checks HTTP requests and cannot check a TCP \
                 connection; it is not fail-open)",
                    by("denied")
                )
            }
            (false, "CUSTOM", _) => format!("{} (its ext_authz provider is unknown)", by("denied")),
            (true, ..) => by("allowed"),
            (false, ..) => by("denied"),
        };
        for c in &self.custom {
            out.push_str(&format!(
                "; needs ext_authz provider {:?} to allow (CUSTOM policy {} rule {})",
                c.provider, c.rule.policy, c.rule.rule
            ));
        }
        for u in self.unchecked_custom.iter().filter(|u| u.let_through) {
            out.push_str(&format!(
                "; CUSTOM policy {} rule {} not checked: ext_authz provider {:?} cannot check a \
                 TCP connection and is fail-open",
                u.check.rule.policy, u.check.rule.rule, u.check.provider
            ));
        }
        for a in &self.audit {
            out.push_str(&format!("; audited by {} rule {}", a.policy, a.rule));
        }
        if let Some(shadow) = &self.dry_run
            && shadow.allowed != d.allowed
        {
            let verb = if shadow.allowed { "allow" } else { "deny" };
            out.push_str(&format!("; dry-run policies would {verb} it"));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Allow,
    Deny,
    Audit,
    /// `known`: the provider is configured; a match of an unknown one denies. `fail_open`:
    /// the provider lets requests through when it cannot be asked (a TCP connection, which an
    /// HTTP ext_authz provider cannot check, is one such case).
    Custom {
        provider: String,
        known: bool,
        fail_open: bool,
    },
}

#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    resource: ResourceRef,
    action: Action,
    dry_run: bool,
    /// Empty: the policy never matches.
    rules: Vec<RuleMatch>,
}

impl CompiledPolicy {
    /// The first rule matching `a`. On a connection, an ALLOW rule that sets an HTTP-only
    /// field is skipped (Istio drops it from TCP filter chains); other actions match with those
    /// fields ignored.
    fn first_match(&self, a: &Attrs<'_>) -> Option<usize> {
        let skip_http = a.l4 && self.action == Action::Allow;
        self.rules
            .iter()
            .position(|r| !(skip_http && r.needs_http()) && r.matches(a))
    }
}

/// Every policy this waypoint enforces, compiled, indexed by where it applies. Immutable; one
/// per config snapshot.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Attached to this waypoint's Gateway or GatewayClass: they see every request.
    everywhere: Vec<Arc<CompiledPolicy>>,
    /// Attached to a Service: namespace → name → policies.
    by_service: HashMap<String, HashMap<String, Vec<Arc<CompiledPolicy>>>>,
    normalization: PathNormalization,
    xff_trusted_hops: Option<usize>,
}

impl PolicySet {
    fn applicable<'s>(
        &'s self,
        service: Option<&ResourceRef>,
    ) -> impl Iterator<Item = &'s CompiledPolicy> + 's {
        let own = service
            .and_then(|s| self.by_service.get(&s.namespace)?.get(&s.name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.everywhere.iter().chain(own).map(|p| &**p)
    }

    /// The policies that apply to requests for Service `namespace`/`name` (or, with `None`, to
    /// requests whose destination is no known Service), in evaluation order.
    pub fn policies_for(&self, service: Option<(&str, &str)>) -> Vec<&ResourceRef> {
        let service = service.map(|(ns, name)| ResourceRef::new("Service", ns, name));
        self.applicable(service.as_ref())
            .map(|p| &p.resource)
            .collect()
    }

    /// Every compiled policy, once per target.
    fn all(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.everywhere
            .iter()
            .chain(self.by_service.values().flat_map(|m| m.values().flatten()))
    }

    /// The number of compiled policies (each counted once, however many targets it has).
    pub fn len(&self) -> usize {
        let mut seen: Vec<*const CompiledPolicy> = self.all().map(Arc::as_ptr).collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }

    /// True when no policy is enforced.
    pub fn is_empty(&self) -> bool {
        self.everywhere.is_empty() && self.by_service.is_empty()
    }

    /// The original client address: the `X-Forwarded-For` entry chosen by `xff_trusted_hops`,
    /// else the source address.
    fn remote_ip(&self, req: &RequestAttributes<'_>) -> Option<IpAddr> {
        let hops = self.xff_trusted_hops;
        if hops == Some(0) {
            return req.source;
        }
        let xff: Vec<&str> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let chosen = match hops {
            None => xff.first(),
            Some(n) => xff.len().checked_sub(n).and_then(|i| xff.get(i)),
        };
        chosen.and_then(|s| parse_forwarded_ip(s)).or(req.source)
    }

    /// Decides `request` against the policies of its destination: the function the filter
    /// runs, minus the ext_authz calls of CUSTOM policies (reported in
    /// [`Explanation::custom`]). Fails when the request must be refused with 400 before any
    /// policy (`%00` in the path, lowercase method).
    pub fn explain(
        &self,
        config: &Config,
        request: &RequestAttributes<'_>,
    ) -> Result<Explanation, NormalizeError> {
        check_method(request.method, self.normalization)?;
        let normalized = normalize_path(request.path, self.normalization)?;
        let path = normalized.split(['?', '#']).next().unwrap_or_default();
        let identity = request.identity;
        let attrs = Attrs {
            principal: identity.map(SpiffeId::principal),
            namespace: identity.map(SpiffeId::namespace),
            service_account: identity.map(SpiffeId::service_account),
            source_ip: request.source,
            remote_ip: self.remote_ip(request),
            destination: request.destination,
            method: request.method,
            host: request.host,
            path,
            headers: request.headers,
            jwt: request.request_principal,
            sni: None,
            l4: false,
        };
        let mut explained = self.evaluate(config, &attrs);
        explained.normalized_path = match normalized {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        };
        Ok(explained)
    }

    /// One pass over the policies of `attrs`' destination Service (and this waypoint's), in
    /// Istio's order. For a connection (`attrs.l4`), ALLOW rules that need HTTP never match.
    fn evaluate(&self, config: &Config, attrs: &Attrs<'_>) -> Explanation {
        let service = attrs
            .destination
            .and_then(|d| config.service_at(d))
            .map(|b| &b.service);

        let mut enforced = Tally::default();
        let mut shadow = Tally::default();
        let mut any_dry_run = false;
        let mut custom = Vec::new();
        let mut unknown_custom = None;
        let mut audit = Vec::new();
        for policy in self.applicable(service) {
            let matched = policy.first_match(attrs);
            match &policy.action {
                Action::Custom {
                    provider, known, ..
                } => {
                    if let Some(rule) = matched {
                        if *known {
                            custom.push(CustomCheck {
                                rule: rule_ref(policy, rule),
                                provider: provider.clone(),
                            });
                        } else if unknown_custom.is_none() {
                            unknown_custom = Some((policy, rule));
                        }
                    }
                }
                Action::Audit => {
                    if let Some(rule) = matched {
                        audit.push(rule_ref(policy, rule));
                    }
                }
                Action::Allow | Action::Deny => {
                    any_dry_run |= policy.dry_run;
                    shadow.add(policy, matched);
                    if !policy.dry_run {
                        enforced.add(policy, matched);
                    }
                }
            }
        }
        let decision = match unknown_custom {
            Some((policy, rule)) => decided(false, policy, rule, false),
            None => enforced.decide(false),
        };
        Explanation {
            decision,
            custom,
            audit,
            dry_run: any_dry_run.then(|| shadow.decide(true)),
            normalized_path: None,
            unchecked_custom: Vec::new(),
        }
    }
}

fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[v6]:port` or `v4:port`.
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

fn rule_ref(policy: &CompiledPolicy, rule: usize) -> PolicyRule {
    PolicyRule {
        policy: policy.resource.clone(),
        rule,
    }
}

fn decided(allowed: bool, policy: &CompiledPolicy, rule: usize, dry_run: bool) -> AuthzDecision {
    let action = match &policy.action {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
        Action::Custom { .. } => "CUSTOM",
    };
    AuthzDecision {
        allowed,
        action: action.into(),
        policy: Some(policy.resource.clone()),
        rule: Some(rule),
        dry_run,
    }
}

/// The ALLOW/DENY evidence of one pass over the policies.
#[derive(Default)]
struct Tally<'p> {
    deny: Option<(&'p CompiledPolicy, usize)>,
    allow: Option<(&'p CompiledPolicy, usize)>,
    allow_applies: bool,
}

impl<'p> Tally<'p> {
    fn add(&mut self, policy: &'p CompiledPolicy, matched: Option<usize>) {
        match policy.action {
            Action::Deny => {
                if let (None, Some(rule)) = (self.deny, matched) {
                    self.deny = Some((policy, rule));
                }
            }
            Action::Allow => {
                self.allow_applies = true;
                if let (None, Some(rule)) = (self.allow, matched) {
                    self.allow = Some((policy, rule));
                }
            }
            _ => {}
        }
    }

    fn decide(&self, dry_run: bool) -> AuthzDecision {
        if let Some((p, r)) = self.deny {
            return decided(false, p, r, dry_run);
        }
        if let Some((p, r)) = self.allow {
            return decided(true, p, r, dry_run);
        }
        AuthzDecision {
            allowed: !self.allow_applies,
            action: if self.allow_applies { "ALLOW" } else { "NONE" }.into(),
            policy: None,
            rule: None,
            dry_run,
        }
    }
}

/// Decides `request` with `policies`: see [`PolicySet::explain`].
pub fn explain(
    policies: &PolicySet,
    config: &Config,
    request: &RequestAttributes<'_>,
) -> Result<Explanation, NormalizeError> {
    policies.explain(config, request)
}

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
        if !explained.audit.is_empty() {
            for a in &explained.audit {
                tracing::info!(policy = %a.policy, rule = a.rule, "authz: AUDIT policy matched");
            }
            ctx.extensions.insert(AuthzAudit(explained.audit.clone()));
        }
        if let Some(shadow) = &explained.dry_run {
            if shadow.allowed != explained.decision.allowed {
                tracing::info!(
                    policy = ?shadow.policy.as_ref().map(ToString::to_string),
                    rule = ?shadow.rule,
                    would_allow = shadow.allowed,
                    "authz: dry-run policies would change this decision"
                );
            }
            ctx.extensions.insert(AuthzDryRun(shadow.clone()));
        }

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

#[cfg(test)]
mod tests;
