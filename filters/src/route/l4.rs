//! TCPRoute and TLSRoute: routing connections the waypoint proxies as bytes.
//!
//! At build time each route's one rule becomes a [`Rule`] without filters or HTTP settings
//! (its backends resolved exactly as an HTTPRoute's, ReferenceGrants included), attached to its
//! parents by the same `attach` code as HTTP routes. At connection time
//! ([`RouteFilter::route_connection`]) the original destination decides, once, before a byte
//! is forwarded:
//!
//! - a Gateway listener address and port: the listener whose hostname takes the SNI (no SNI:
//!   the listener without hostname); there, with an SNI, the TLSRoute whose effective hostname
//!   (route hostname ∩ listener hostname) is the most specific match (exact, then the longest
//!   wildcard); else the listener's TCPRoute. Several TCPRoutes on one listener are all
//!   accepted, and the oldest (then `namespace/name`) takes every connection, as upstream's
//!   TCPRouteMultipleRoutesAttachment expects; TLSRoutes with the same hostname likewise.
//! - a Service address (GAMMA): its TLSRoutes by SNI on a TLS connection, else its TCPRoute,
//!   else, with no route attached, the Service itself as without a waypoint. A Service with
//!   TLSRoutes closes a TLS connection whose SNI none of them takes.
//! - a bound pod's address: that pod and port.
//!
//! The rule's backend is a weighted random pick (weight 0 never). A pick that lands on an
//! invalid backend closes the connection, so invalid backends keep their share of the traffic
//! as the spec asks. Every close pushes a flag: `NR` when no route takes the connection, `NC`
//! (Envoy's "no cluster found") when the chosen backend cannot be used.

use std::cmp::Ordering;
use std::sync::Arc;

use waypoint_core::config::PortProtocol;
use waypoint_core::config::binding::Destination;
use waypoint_core::config::resources::{L4RouteRule, Object, ObjectMeta, ParentReference};
use waypoint_core::filter::{
    BuildContext, ConnectionContext, ConnectionDecision, FilterChain, RouteMatch, Timeout,
    UpstreamTarget,
};
use waypoint_core::flags::ResponseFlag;

use super::attach::{Builder, Entries, Ordered, RouteView};
use super::compile::{Ranked, Referrer, report, resolve_backend_ref, resolved_since};
use super::gateway::GatewayPort;
use super::gateway::{HostPattern, normalize_host};
use super::{
    RouteEntry, RouteFilter, RouteSet, Rule, WeightedBackend, client_namespace, pick_backend,
};

/// What a TCPRoute or TLSRoute rule matches: the SNI hostnames of a TLSRoute (its own on a
/// Service, intersected with the listener's on a Gateway); nothing for a TCPRoute.
#[derive(Clone, Debug, Default)]
pub(super) struct L4Match {
    pub(super) hosts: Vec<HostPattern>,
}

impl L4Match {
    /// How specifically this rule takes `sni`: the best of its matching hostnames, `None` when
    /// none matches.
    fn specificity(&self, sni: &str) -> Option<(u8, std::cmp::Reverse<usize>)> {
        self.hosts
            .iter()
            .filter(|h| h.matches(sni))
            .map(HostPattern::specificity)
            .min()
    }
}

impl Ranked for L4Match {
    /// L4 rules match nothing that ranks them: the caller's tie-breaks (oldest route, then
    /// `namespace/name`) decide.
    fn rank_cmp(&self, _other: &Self) -> Ordering {
        Ordering::Equal
    }
}

/// Compiles every TCPRoute and TLSRoute and attaches it to its parents.
pub(super) fn compile(cx: &mut BuildContext<'_>, builder: &mut Builder<'_>) {
    let config = cx.config();
    for route in &config.resources.tcp_routes {
        let spec = &route.spec;
        attach(
            cx,
            builder,
            L4Route {
                kind: "TCPRoute",
                meta: &route.metadata,
                reference: route.resource_ref(),
                parents: &spec.parent_refs,
                hostnames: &[],
                rules: &spec.rules,
            },
        );
    }
    for route in &config.resources.tls_routes {
        let spec = &route.spec;
        attach(
            cx,
            builder,
            L4Route {
                kind: "TLSRoute",
                meta: &route.metadata,
                reference: route.resource_ref(),
                parents: &spec.parent_refs,
                hostnames: &spec.hostnames,
                rules: &spec.rules,
            },
        );
    }
}

/// What compiling reads of a TCPRoute or TLSRoute.
struct L4Route<'a> {
    kind: &'static str,
    meta: &'a ObjectMeta,
    reference: waypoint_core::config::ResourceRef,
    parents: &'a [ParentReference],
    hostnames: &'a [String],
    rules: &'a [L4RouteRule],
}

fn attach(cx: &mut BuildContext<'_>, builder: &mut Builder<'_>, route: L4Route<'_>) {
    let before = cx.reports().len();
    // Validation kept one rule at least; v1alpha2 may hold more, and with nothing to match on
    // the first one always wins.
    let entries = route
        .rules
        .first()
        .map(|rule| Ordered {
            matcher: L4Match {
                hosts: host_patterns(route.hostnames),
            },
            rule: Arc::new(compile_rule(cx, &route, rule)),
            created: route.meta.creation_timestamp.clone(),
            route: route.reference.clone(),
            match_index: 0,
        })
        .into_iter()
        .collect();
    let view = RouteView {
        kind: route.kind,
        resolved: resolved_since(cx, before, &route.reference),
        route: route.reference.clone(),
        generation: route.meta.generation,
        parents: route.parents,
        hostnames: route.hostnames,
        entries: if route.kind == "TLSRoute" {
            Entries::Tls(entries)
        } else {
            Entries::Tcp(entries)
        },
    };
    builder.attach(cx, &view);
}

/// A route's hostnames as patterns; none means every host.
fn host_patterns(hostnames: &[String]) -> Vec<HostPattern> {
    if hostnames.is_empty() {
        return vec![HostPattern::Any];
    }
    hostnames
        .iter()
        .map(|h| HostPattern::parse(Some(h)))
        .collect()
}

/// The rule: its backends resolved as an HTTPRoute's are (each problem reported as the
/// route's `ResolvedRefs`), with no filters and the HTTP settings at their defaults.
fn compile_rule(cx: &mut BuildContext<'_>, route: &L4Route<'_>, rule: &L4RouteRule) -> Rule {
    let referrer = Referrer::of(route.kind, route.meta, route.parents);
    let backends: Vec<WeightedBackend> = rule
        .backend_refs
        .iter()
        .enumerate()
        .map(|(b, backend)| {
            let field = format!("spec.rules[0].backendRefs[{b}]");
            let target = resolve_backend_ref(
                cx.config(),
                referrer,
                (&backend.group, &backend.kind, &backend.name),
                backend.namespace.as_deref(),
                backend.port,
                &field,
            );
            if let Err((reason, message)) = &target {
                report(
                    cx,
                    &route.reference,
                    "ResolvedRefs",
                    reason,
                    message.clone(),
                );
            }
            WeightedBackend {
                weight: u64::from(backend.weight),
                target: target.map_err(|(_, message)| message),
                filters: Default::default(),
                mirrors: Vec::new(),
            }
        })
        .collect();
    Rule {
        route: RouteMatch {
            route: route.reference.clone(),
            rule: 0,
        },
        invalid: None,
        filters: Arc::new(FilterChain::default()),
        backend_filters: false,
        total_weight: backends.iter().map(|b| b.weight).sum(),
        backends,
        request_timeout: Timeout::Default,
        backend_timeout: Timeout::Default,
        retry: None,
    }
}

/// The TLSRoute rule taking `sni`: the most specific matching hostname wins, then precedence
/// order (the list's).
fn by_sni<'a>(entries: &'a [RouteEntry<L4Match>], sni: &str) -> Option<&'a RouteEntry<L4Match>> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.matcher.specificity(sni).map(|s| ((s, i), e)))
        .min_by_key(|(key, _)| *key)
        .map(|(_, e)| e)
}

/// The rule of `set` for a connection with server name `sni`: a TLSRoute by SNI, else the
/// TCPRoute, else why there is none.
fn choose<'a>(set: &'a RouteSet, sni: Option<&str>, what: &str) -> Result<&'a Arc<Rule>, String> {
    if let Some(sni) = sni
        && let Some(entry) = by_sni(&set.tls, sni)
    {
        return Ok(&entry.rule);
    }
    if let Some(entry) = set.tcp.first() {
        return Ok(&entry.rule);
    }
    Err(match sni {
        Some(sni) => format!("no TLSRoute of {what} takes server name `{sni}`"),
        None => format!("no route of {what} takes a connection without server name (SNI)"),
    })
}

fn close(ctx: &mut ConnectionContext, flag: ResponseFlag, why: String) -> ConnectionDecision {
    ctx.response_flags.push(flag);
    ConnectionDecision::Close(format!("waypoint: {why}"))
}

impl RouteFilter {
    /// Chooses the upstream of a TCP or passed-through TLS connection (see the module docs).
    pub(super) fn route_connection(&self, ctx: &mut ConnectionContext) -> ConnectionDecision {
        let Some(destination) = ctx.conn.destination else {
            let why = "the connection carries no original destination".to_owned();
            return close(ctx, ResponseFlag::NoRoute, why);
        };
        let sni = ctx.sni.as_deref().map(normalize_host);
        let sni = sni.as_deref();
        let chosen = if let Some(port) = self.table.gateways.get(&destination) {
            gateway_rule(port, sni)
        } else {
            match ctx.config.destination(Some(destination)) {
                Destination::Service(service) => {
                    let service = service.clone();
                    let set = self.table.entries_for(
                        destination,
                        client_namespace(&ctx.conn),
                        RouteSet::serves_connections,
                    );
                    let Some(set) = set else {
                        // No route attached: the Service itself, as without a waypoint.
                        ctx.upstream = Some(UpstreamTarget::new(service));
                        return ConnectionDecision::Continue;
                    };
                    // SNI picks a TLSRoute only on a connection carried as TLS.
                    let sni = sni.filter(|_| ctx.protocol == PortProtocol::Tls);
                    choose(set, sni, &service.service.to_string()).cloned()
                }
                Destination::Workload(workload) => {
                    ctx.upstream = Some(UpstreamTarget::new(workload.backend(destination)));
                    return ConnectionDecision::Continue;
                }
                Destination::Gateway | Destination::Unbound(_) => Err(format!(
                    "no Service or listener is known at destination {destination}"
                )),
            }
        };
        let rule = match chosen {
            Ok(rule) => rule,
            Err(why) => return close(ctx, ResponseFlag::NoRoute, why),
        };
        ctx.route = Some(rule.route.clone());
        let Some(backend) = pick_backend(&rule) else {
            let why = format!("{} has no backend with weight", rule.route.route);
            return close(ctx, ResponseFlag::NoClusterFound, why);
        };
        match &backend.target {
            Ok(target) => {
                ctx.upstream = Some(UpstreamTarget::new(target.clone()));
                ConnectionDecision::Continue
            }
            Err(why) => {
                let why = format!("{}: {why}", rule.route.route);
                close(ctx, ResponseFlag::NoClusterFound, why)
            }
        }
    }
}

/// The rule of a Gateway listener port for a connection with server name `sni`.
fn gateway_rule(port: &GatewayPort, sni: Option<&str>) -> Result<Arc<Rule>, String> {
    let listener = match sni {
        Some(sni) => port.listener(sni),
        None => port
            .listeners
            .iter()
            .find(|l| l.hostname == HostPattern::Any)
            .map(|l| &**l),
    };
    let Some(listener) = listener else {
        return Err(match sni {
            Some(sni) => format!("no listener takes server name `{sni}`"),
            None => "no listener takes a connection without server name (SNI)".to_owned(),
        });
    };
    let Some(set) = &listener.hosts.any else {
        return Err(format!("no route is attached to {}", listener.label));
    };
    choose(set, sni, &listener.label).cloned()
}
