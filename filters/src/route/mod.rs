//! Gateway API HTTPRoute routing for Service parents (GAMMA), decided by the connection's
//! original destination, never by the Host header.
//!
//! At build time every HTTPRoute attached to a Service is compiled into a table keyed by the
//! Service's (ClusterIP, port) addresses, each list sorted by Gateway API precedence. At request
//! time routing is one hash lookup and a walk down that list. A request to a known Service with
//! no route attached goes to the Service itself, as it would without a waypoint.

mod compile;
mod header_modifier;
mod matcher;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use waypoint_core::body::local_reply;
use waypoint_core::config::ServiceBackend;
use waypoint_core::filter::{
    BuildContext, Decision, Filter, FilterChain, FilterFactory, MirrorTarget, Request,
    RequestContext, Response, RetryPolicy, RouteMatch, UpstreamTarget,
};

pub use header_modifier::{HeaderEdits, RequestHeaders, ResponseHeaders};
pub use matcher::{PathMatch, RequestMatch};

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

/// Chooses the upstream of each request from the compiled route table.
#[derive(Debug)]
pub struct RouteFilter {
    table: RouteTable,
}

/// The routes of every Service address, compiled.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    by_destination: HashMap<SocketAddr, DestinationRoutes>,
}

/// Routes attached to one Service address.
#[derive(Debug, Default)]
struct DestinationRoutes {
    /// Routes in the Service's own namespace: they apply to every client.
    producer: Vec<RouteEntry>,
    /// Routes in other namespaces: they apply only to clients of that namespace, instead of
    /// the producer routes.
    consumers: HashMap<String, Vec<RouteEntry>>,
}

/// One match of one rule, in precedence order.
#[derive(Debug)]
struct RouteEntry {
    matcher: RequestMatch,
    rule: Arc<Rule>,
}

/// A compiled rule: its filters, backends and timeouts.
#[derive(Debug)]
struct Rule {
    route: RouteMatch,
    /// Set when the rule cannot be served as written (an unsupported or unresolvable filter):
    /// matching requests get 500 rather than silently skipping the filter.
    invalid: Option<String>,
    filters: Arc<FilterChain>,
    backends: Vec<WeightedBackend>,
    total_weight: u64,
    request_timeout: Option<Duration>,
    backend_timeout: Option<Duration>,
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
    fn entries_for(
        &self,
        destination: SocketAddr,
        client_namespace: Option<&str>,
    ) -> Option<&[RouteEntry]> {
        let routes = self.by_destination.get(&destination)?;
        if let Some(consumer) = client_namespace.and_then(|ns| routes.consumers.get(ns)) {
            return Some(consumer);
        }
        (!routes.producer.is_empty()).then_some(routes.producer.as_slice())
    }
}

/// The client's namespace, from the identity ztunnel vouched for, else from its metadata.
fn client_namespace(ctx: &RequestContext) -> Option<&str> {
    ctx.conn
        .peer_identity
        .as_ref()
        .map(|id| id.namespace())
        .or(ctx.conn.source_workload.namespace.as_deref())
}

fn no_route(ctx: &mut RequestContext, message: String) -> Decision {
    ctx.response_flags.push("NR");
    Decision::Respond(local_reply(StatusCode::NOT_FOUND, message))
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
        let Some(destination) = ctx.conn.destination else {
            return no_route(
                ctx,
                "waypoint: the connection carries no original destination".into(),
            );
        };
        let Some(service) = ctx.config.service_at(destination).cloned() else {
            return no_route(
                ctx,
                format!("waypoint: no Service is known at destination {destination}"),
            );
        };
        let Some(entries) = self.table.entries_for(destination, client_namespace(ctx)) else {
            // No route attached: the Service itself, as without a waypoint.
            ctx.upstream = Some(UpstreamTarget::new(service));
            return Decision::Continue;
        };
        let Some(rule) = entries
            .iter()
            .find(|e| e.matcher.matches(req))
            .map(|e| e.rule.clone())
        else {
            return no_route(
                ctx,
                format!(
                    "waypoint: no route of {} matches this request",
                    service.service
                ),
            );
        };
        ctx.route = Some(rule.route.clone());
        if let Some(why) = &rule.invalid {
            return server_error(format!("waypoint: {}: {why}", rule.route.route));
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
mod tests;
