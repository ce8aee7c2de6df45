//! Gateway API routing: HTTPRoute and GRPCRoute for requests, and TCPRoute and TLSRoute for
//! connections proxied as bytes (the connection phase, see [`l4`]). Requests are routed first
//! by the connection's original destination:
//!
//! - a Service (ClusterIP, port): the routes attached to that Service (GAMMA), never chosen by
//!   the Host header; a known Service with no route attached goes to the Service itself, as it
//!   would without a waypoint;
//! - a bound Pod's IP (workload-addressed traffic, waypoint-for `workload`/`all`): exactly that
//!   pod and port, no routes;
//! - a Gateway address and listener port: the Host header picks the listener (exact hostname,
//!   else the longest wildcard, else one without hostname), then the routes of the most specific
//!   effective hostname (route hostnames intersected with the listener's). On a TLS connection
//!   (HTTPS listener) the SNI picks the listener by the same rule, and a request whose Host
//!   picks a different one is answered 421 Misdirected Request.
//!
//! At build time every route is compiled into lists sorted by precedence (HTTPRoute or GRPCRoute
//! rules, per parent and hostname), and each HTTPRoute list is indexed by path ([`index`]). At
//! request time routing is hash lookups: the parent, the hostname, then the request path's
//! exact value and prefixes, which name the few entries that can match; GRPCRoute lists are
//! walked down. A gRPC request (`content-type: application/grpc*`) uses the GRPCRoutes of its hostname
//! when there are any, and gets gRPC UNIMPLEMENTED when none of their rules matches; every other
//! request uses the HTTPRoutes. (The spec calls an HTTPRoute and a GRPCRoute on one hostname of
//! one listener a conflict; we keep both and split by content type.)
//!
//! Matches: path Exact, PathPrefix and RegularExpression (full match, ranked after prefixes),
//! method, headers and query parameters (Exact or RegularExpression). Filters, at rule and
//! backend level: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect
//! ([`Redirect`]), URLRewrite ([`Rewrite`]), CORS ([`Cors`]) and ExtensionRef. Before a rule's
//! filters run, the match that selected it is recorded as a [`MatchedPrefix`].

mod attach;
mod compile;
mod cors;
pub(crate) mod gateway;
mod grpc;
mod header_modifier;
mod index;
mod l4;
mod matcher;
mod redirect;
mod rewrite;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use waypoint_core::body::local_reply;
use waypoint_core::config::ServiceBackend;
use waypoint_core::config::binding::Destination;
use waypoint_core::conn::ConnInfo;
use waypoint_core::filter::{
    BuildContext, ConnectionContext, ConnectionDecision, Decision, Filter, FilterChain,
    FilterFactory, MirrorTarget, Request, RequestContext, Response, RetryPolicy, RouteMatch,
    Timeout, UpstreamTarget,
};
use waypoint_core::flags::ResponseFlag;

pub use cors::Cors;
pub use header_modifier::{HeaderEdits, RequestHeaders, ResponseHeaders};
pub use matcher::{PathMatch, RequestMatch, ValuePattern, full_match_regex};
pub use redirect::Redirect;
pub use rewrite::Rewrite;

/// Builds the [`RouteFilter`] for each config snapshot.
#[derive(Debug, Default)]
pub struct RouteFactory;

impl FilterFactory for RouteFactory {
    fn name(&self) -> &str {
        "route"
    }

    fn build(&self, cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(RouteFilter {
            table: compile::compile(cx),
        })
    }
}

/// Chooses the upstream of each request, and of each connection proxied as bytes, from the
/// compiled route table.
#[derive(Debug)]
pub struct RouteFilter {
    table: RouteTable,
}

/// The routes of every Service address and Gateway listener address, compiled.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    by_destination: HashMap<SocketAddr, DestinationRoutes>,
    /// Gateway (address, listener port) -> the listeners there.
    gateways: HashMap<SocketAddr, gateway::GatewayPort>,
}

/// Routes attached to one Service address.
#[derive(Debug, Default)]
struct DestinationRoutes {
    /// Routes in the Service's own namespace: they apply to every client.
    producer: RouteSet,
    /// Routes in other namespaces: they apply only to clients of that namespace, instead of
    /// the producer routes.
    consumers: HashMap<String, RouteSet>,
}

/// The routes of one parent (and hostname), each kind in precedence order: HTTPRoute and
/// GRPCRoute matches for requests, TCPRoute and TLSRoute rules for connections proxied as bytes
/// (see [`l4`]; those are kept under the listener's any-host entry, their hostnames on each).
#[derive(Debug, Default)]
struct RouteSet {
    http: index::HttpRoutes,
    grpc: Vec<RouteEntry<grpc::GrpcMatch>>,
    tcp: Vec<RouteEntry<l4::L4Match>>,
    tls: Vec<RouteEntry<l4::L4Match>>,
}

/// Why a [`RouteSet`] has no rule for a request.
enum Miss {
    /// No route matches: 404.
    NoRoute,
    /// A gRPC call no GRPCRoute rule matches: gRPC UNIMPLEMENTED.
    Unimplemented,
}

impl RouteSet {
    /// Whether requests are routed here: a set with only TCPRoutes or TLSRoutes leaves HTTP
    /// traffic to the Service itself.
    fn serves_requests(&self) -> bool {
        !(self.http.is_empty() && self.grpc.is_empty())
    }

    /// Whether connections proxied as bytes are routed here.
    fn serves_connections(&self) -> bool {
        !(self.tcp.is_empty() && self.tls.is_empty())
    }

    /// The rule of the first match, GRPCRoutes for gRPC calls when there are any.
    fn choose(&self, req: &Request) -> Result<(Arc<Rule>, MatchedPrefix), Miss> {
        if !self.grpc.is_empty() && grpc::is_grpc(req) {
            return self
                .grpc
                .iter()
                .find(|e| e.matcher.matches(req))
                .map(|e| (e.rule.clone(), e.matched.clone()))
                .ok_or(Miss::Unimplemented);
        }
        self.http
            .first_match(req)
            .map(|e| (e.rule.clone(), e.matched.clone()))
            .ok_or(Miss::NoRoute)
    }
}

/// One match of one rule, in precedence order.
#[derive(Debug)]
struct RouteEntry<M = RequestMatch> {
    matcher: M,
    /// What the rule's filters learn of this match.
    matched: MatchedPrefix,
    rule: Arc<Rule>,
}

/// Which match selected the request: its PathPrefix value without the trailing `/` (`/` is
/// empty), or `None` for other path matches. The route filter puts it in
/// `RequestContext::extensions` before the rule's filters run; `ReplacePrefixMatch` (and any
/// vendor filter that cares) reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchedPrefix(pub Option<Arc<str>>);

impl MatchedPrefix {
    fn of(matcher: &RequestMatch) -> Self {
        match &matcher.path {
            PathMatch::Prefix(prefix) => MatchedPrefix(Some(prefix.as_str().into())),
            PathMatch::Exact(_) | PathMatch::Regex(_) => MatchedPrefix(None),
        }
    }
}

/// A compiled rule: its filters, backends and timeouts.
#[derive(Debug)]
struct Rule {
    route: RouteMatch,
    /// Set when the rule cannot be served as written (an unsupported or unresolvable filter):
    /// matching requests get 500 rather than silently skipping the filter.
    invalid: Option<String>,
    filters: Arc<FilterChain>,
    /// True when some backend has filters of its own.
    backend_filters: bool,
    backends: Vec<WeightedBackend>,
    total_weight: u64,
    request_timeout: Timeout,
    backend_timeout: Timeout,
    retry: Option<Arc<RetryPolicy>>,
}

#[derive(Debug)]
struct WeightedBackend {
    weight: u64,
    target: Result<Arc<ServiceBackend>, String>,
    filters: Arc<FilterChain>,
    /// The rule's mirrors, then this backendRef's own.
    mirrors: Vec<MirrorTarget>,
}

/// The rule and backend filter chains chosen for a request, kept for the response phase.
#[derive(Clone)]
struct Chosen {
    rule: Arc<FilterChain>,
    backend: Option<Arc<FilterChain>>,
}

impl RouteTable {
    /// The routes of a Service address for a client of `client_namespace`: its namespace's
    /// consumer routes when it has some of the wanted kind (`serves`), else the producer's.
    fn entries_for(
        &self,
        destination: SocketAddr,
        client_namespace: Option<&str>,
        serves: fn(&RouteSet) -> bool,
    ) -> Option<&RouteSet> {
        let routes = self.by_destination.get(&destination)?;
        if let Some(consumer) = client_namespace
            .and_then(|ns| routes.consumers.get(ns))
            .filter(|set| serves(set))
        {
            return Some(consumer);
        }
        serves(&routes.producer).then_some(&routes.producer)
    }
}

/// The client's namespace, from the identity ztunnel vouched for, else from its metadata.
fn client_namespace(conn: &ConnInfo) -> Option<&str> {
    conn.peer_identity
        .as_ref()
        .map(|id| id.namespace())
        .or(conn.source_workload.namespace.as_deref())
}

fn no_route(ctx: &mut RequestContext, message: String) -> Decision {
    ctx.response_flags.push(ResponseFlag::NoRoute);
    Decision::Respond(local_reply(StatusCode::NOT_FOUND, message))
}

/// 421: the Host belongs to another listener than the one the TLS server name chose.
fn misdirected(ctx: &mut RequestContext, sni: &str, host: &str) -> Decision {
    ctx.response_flags.push(ResponseFlag::NoRoute);
    Decision::Respond(local_reply(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "waypoint: host `{host}` is not served by the listener TLS server name `{sni}` selected"
        ),
    ))
}

fn server_error(message: String) -> Decision {
    Decision::Respond(local_reply(StatusCode::INTERNAL_SERVER_ERROR, message))
}

#[async_trait]
impl Filter for RouteFilter {
    fn name(&self) -> &str {
        "route"
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let (rule, matched) = match self.select(req, ctx) {
            Selected::Rule(rule, matched) => (rule, matched),
            Selected::Done(decision) => return decision,
        };
        ctx.route = Some(rule.route.clone());
        if let Some(why) = &rule.invalid {
            return server_error(format!("waypoint: {}: {why}", rule.route.route));
        }

        if !rule.filters.is_empty() || rule.backend_filters {
            ctx.extensions.insert(matched);
        }
        if !rule.filters.is_empty() {
            ctx.extensions.insert(Chosen {
                rule: rule.filters.clone(),
                backend: None,
            });
            if let Decision::Respond(resp) = rule.filters.run_request(req, ctx).await {
                // The sub-chain already ran its own response phase.
                ctx.extensions.remove::<Chosen>();
                return Decision::Respond(resp);
            }
        }

        let Some(backend) = pick_backend(&rule) else {
            return server_error(format!(
                "waypoint: {} rule {} has no backend with weight",
                rule.route.route, rule.route.rule
            ));
        };
        let target = match &backend.target {
            Ok(target) => target.clone(),
            Err(why) => return server_error(format!("waypoint: {}: {why}", rule.route.route)),
        };
        ctx.upstream = Some(UpstreamTarget {
            backend: target,
            request_timeout: rule.request_timeout,
            backend_timeout: rule.backend_timeout,
            retry: rule.retry.clone(),
            mirrors: backend.mirrors.clone(),
        });
        if !backend.filters.is_empty() {
            let chosen = Chosen {
                rule: rule.filters.clone(),
                backend: Some(backend.filters.clone()),
            };
            ctx.extensions.insert(chosen);
            if let Decision::Respond(resp) = backend.filters.run_request(req, ctx).await {
                // The backend filters already ran their response phase; the rule's still must.
                ctx.extensions.insert(Chosen {
                    rule: rule.filters.clone(),
                    backend: None,
                });
                return Decision::Respond(resp);
            }
        }
        Decision::Continue
    }

    async fn on_connection(&self, ctx: &mut ConnectionContext) -> ConnectionDecision {
        self.route_connection(ctx)
    }

    async fn on_response(&self, resp: &mut Response, ctx: &mut RequestContext) {
        let Some(chosen) = ctx.extensions.get::<Chosen>().cloned() else {
            return;
        };
        if let Some(backend) = &chosen.backend {
            backend.run_response(resp, ctx).await;
        }
        chosen.rule.run_response(resp, ctx).await;
    }
}

/// What [`RouteFilter::select`] found.
enum Selected {
    /// The rule to serve the request with, and the match that chose it.
    Rule(Arc<Rule>, MatchedPrefix),
    /// No rule: this is the answer (`Continue` when a Service without routes is its own
    /// upstream).
    Done(Decision),
}

impl RouteFilter {
    /// The rule for this request, or the decision when there is none.
    fn select(&self, req: &Request, ctx: &mut RequestContext) -> Selected {
        let Some(destination) = ctx.conn.destination else {
            return Selected::Done(no_route(
                ctx,
                "waypoint: the connection carries no original destination".into(),
            ));
        };
        if let Some(port) = self.table.gateways.get(&destination) {
            let host = gateway::request_host(req);
            let by_host = port.listener(&host);
            // On a TLS connection the SNI chose the listener (and its certificate): a Host
            // that another listener takes was misdirected to this connection.
            let conn = ctx.conn.clone();
            if let Some(sni) = conn.tls.as_ref().and_then(|t| t.sni.as_deref()) {
                let by_sni = port.listener(&gateway::normalize_host(sni));
                let same = match (by_sni, by_host) {
                    (Some(a), Some(b)) => std::ptr::eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    return Selected::Done(misdirected(ctx, sni, &host));
                }
            }
            let Some(listener) = by_host else {
                return Selected::Done(no_route(
                    ctx,
                    format!("waypoint: no listener at {destination} takes host `{host}`"),
                ));
            };
            let Some(set) = listener.hosts.find(&host) else {
                return Selected::Done(no_route(
                    ctx,
                    format!(
                        "waypoint: no route of {} takes host `{host}`",
                        listener.label
                    ),
                ));
            };
            return match set.choose(req) {
                Ok((rule, matched)) => Selected::Rule(rule, matched),
                Err(miss) => Selected::Done(miss_decision(
                    ctx,
                    miss,
                    format!("{} host `{host}`", listener.label),
                )),
            };
        }
        // What the destination is, decided in one place (the config's binding): a Service,
        // or a bound Pod addressed directly, served without Service routing or routes.
        let service = match ctx.config.destination(Some(destination)) {
            Destination::Service(service) => service.clone(),
            Destination::Workload(workload) => {
                ctx.upstream = Some(UpstreamTarget::new(workload.backend(destination)));
                return Selected::Done(Decision::Continue);
            }
            Destination::Gateway | Destination::Unbound(_) => {
                return Selected::Done(no_route(
                    ctx,
                    format!("waypoint: no Service is known at destination {destination}"),
                ));
            }
        };
        let Some(set) = self.table.entries_for(
            destination,
            client_namespace(&ctx.conn),
            RouteSet::serves_requests,
        ) else {
            // No route attached: the Service itself, as without a waypoint.
            ctx.upstream = Some(UpstreamTarget::new(service));
            return Selected::Done(Decision::Continue);
        };
        match set.choose(req) {
            Ok((rule, matched)) => Selected::Rule(rule, matched),
            Err(miss) => Selected::Done(miss_decision(ctx, miss, service.service.to_string())),
        }
    }
}

fn miss_decision(ctx: &mut RequestContext, miss: Miss, what: String) -> Decision {
    match miss {
        Miss::NoRoute => no_route(
            ctx,
            format!("waypoint: no route of {what} matches this request"),
        ),
        Miss::Unimplemented => {
            ctx.response_flags.push(ResponseFlag::NoRoute);
            Decision::Respond(grpc::unimplemented(&format!(
                "no GRPCRoute rule of {what} matches this method"
            )))
        }
    }
}

/// A weighted random choice; backends with weight 0 are never chosen.
fn pick_backend(rule: &Rule) -> Option<&WeightedBackend> {
    if rule.total_weight == 0 {
        return None;
    }
    let mut point = fastrand::u64(0..rule.total_weight);
    rule.backends.iter().find(|b| {
        if point < b.weight {
            return true;
        }
        point -= b.weight;
        false
    })
}

#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod l4_testing;
#[cfg(test)]
mod l4_tests;
#[cfg(test)]
mod tcp_conformance_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_conformance_tests;
#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod filter_tests;

#[cfg(test)]
mod cors_tests;

#[cfg(test)]
mod index_tests;
