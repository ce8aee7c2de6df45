//! Compiling HTTPRoutes into the [`RouteTable`]: resolving parents and backends, validating
//! filters, and ordering matches by Gateway API precedence. Problems are reported per resource
//! with the upstream condition reasons; what is valid is served.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use waypoint_core::config::resources::{
    HttpBackendRef, HttpMethod, HttpRoute, HttpRouteFilter, HttpRouteFilterType, HttpRouteMatch,
    Object, PathMatchType, ValueMatchType,
};
use waypoint_core::config::{Config, ResourceRef};
use waypoint_core::filter::{BuildContext, BuildReport, Filter, FilterChain, RouteMatch};

use super::header_modifier::{HeaderEdits, RequestHeaders, ResponseHeaders};
use super::matcher::{PathMatch, RequestMatch};
use super::upstream::{compile_mirrors, compile_retry};
use super::{RouteEntry, RouteTable, Rule, WeightedBackend};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A `0s` timeout means "no timeout": a year stands in for forever.
const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

struct Ordered {
    entry: RouteEntry,
    created: Option<String>,
    route: ResourceRef,
    match_index: usize,
}

pub(super) fn compile(cx: &mut BuildContext<'_>) -> RouteTable {
    let config = cx.config();
    let mut table = RouteTable::default();
    // (destination, consumer namespace or None) -> entries, sorted at the end.
    let mut pending: std::collections::HashMap<
        (std::net::SocketAddr, Option<String>),
        Vec<Ordered>,
    > = Default::default();

    for route in &config.resources.http_routes {
        let route_ref = route.resource_ref();
        let route_ns = route.metadata.namespace();
        let rules: Vec<Arc<Rule>> = route
            .spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, _)| Arc::new(compile_rule(cx, route, i)))
            .collect();
        let mut matchers = Vec::new();
        for (i, rule) in route.spec.rules.iter().enumerate() {
            for (m, spec) in rule.matches.iter().enumerate() {
                if let Some(matcher) = compile_match(cx, &route_ref, i, m, spec) {
                    matchers.push((i, m, matcher));
                }
            }
        }

        for (p, parent) in route.spec.parent_refs.iter().enumerate() {
            let is_service =
                parent.kind == "Service" && (parent.group.is_empty() || parent.group == "core");
            if !is_service {
                if parent.group == GATEWAY_GROUP && parent.kind == "Gateway" {
                    report(
                        cx,
                        &route_ref,
                        "Accepted",
                        "NoMatchingParent",
                        format!(
                            "spec.parentRefs[{p}]: routes attached to a Gateway are not served yet; attach the route to a Service (GAMMA)"
                        ),
                    );
                } else {
                    report(
                        cx,
                        &route_ref,
                        "Accepted",
                        "InvalidKind",
                        format!(
                            "spec.parentRefs[{p}]: parent kind {}/{} is not supported",
                            parent.group, parent.kind
                        ),
                    );
                }
                continue;
            }
            let service_ns = parent.namespace.as_deref().unwrap_or(route_ns);
            let addresses: Vec<_> = config
                .backends()
                .filter(|b| b.service.namespace == service_ns && b.service.name == parent.name)
                .filter(|b| parent.port.is_none_or(|port| port == b.port))
                .flat_map(|b| {
                    b.cluster_ips
                        .iter()
                        .map(move |ip| std::net::SocketAddr::new(*ip, b.port))
                })
                .collect();
            if addresses.is_empty() {
                let what = match parent.port {
                    Some(port) => format!("Service {service_ns}/{} port {port}", parent.name),
                    None => format!("Service {service_ns}/{} with a cluster IP", parent.name),
                };
                report(
                    cx,
                    &route_ref,
                    "Accepted",
                    "NoMatchingParent",
                    format!("spec.parentRefs[{p}]: no {what}"),
                );
                continue;
            }
            let consumer = (service_ns != route_ns).then(|| route_ns.to_owned());
            for address in addresses {
                let list = pending.entry((address, consumer.clone())).or_default();
                for (rule, match_index, matcher) in &matchers {
                    list.push(Ordered {
                        entry: RouteEntry {
                            matcher: matcher.clone(),
                            rule: rules[*rule].clone(),
                        },
                        created: route.metadata.creation_timestamp.clone(),
                        route: route_ref.clone(),
                        match_index: *match_index,
                    });
                }
            }
        }
    }

    for ((address, consumer), mut list) in pending {
        list.sort_by(precedence);
        let entries = list.into_iter().map(|o| o.entry).collect();
        let routes = table.by_destination.entry(address).or_default();
        match consumer {
            Some(ns) => {
                routes.consumers.insert(ns, entries);
            }
            None => routes.producer = entries,
        }
    }
    table
}

/// Gateway API precedence: the match itself, then the oldest route, then `namespace/name`,
/// then rule order, then match order.
fn precedence(a: &Ordered, b: &Ordered) -> Ordering {
    a.entry
        .matcher
        .precedence(&b.entry.matcher)
        .then_with(|| match (&a.created, &b.created) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| (&a.route.namespace, &a.route.name).cmp(&(&b.route.namespace, &b.route.name)))
        .then_with(|| a.entry.rule.route.rule.cmp(&b.entry.rule.route.rule))
        .then_with(|| a.match_index.cmp(&b.match_index))
}

fn report(
    cx: &mut BuildContext<'_>,
    resource: &ResourceRef,
    condition: &str,
    reason: &str,
    message: String,
) {
    cx.report(BuildReport {
        resource: resource.clone(),
        condition: condition.into(),
        reason: reason.into(),
        message,
    });
}

fn compile_match(
    cx: &mut BuildContext<'_>,
    route: &ResourceRef,
    rule: usize,
    index: usize,
    spec: &HttpRouteMatch,
) -> Option<RequestMatch> {
    let field = format!("spec.rules[{rule}].matches[{index}]");
    let path = match spec.path.kind {
        PathMatchType::Exact => PathMatch::Exact(spec.path.value.clone()),
        PathMatchType::PathPrefix => PathMatch::prefix(&spec.path.value),
        PathMatchType::RegularExpression => {
            report(
                cx,
                route,
                "Accepted",
                "UnsupportedValue",
                format!(
                    "{field}.path.type: RegularExpression is not supported yet; this match is ignored"
                ),
            );
            return None;
        }
    };
    let mut headers = Vec::new();
    for (h, header) in spec.headers.iter().enumerate() {
        let parsed = (header.kind == ValueMatchType::Exact).then(|| {
            (
                HeaderName::try_from(header.name.as_str()).ok(),
                HeaderValue::try_from(header.value.as_str()).ok(),
            )
        });
        match parsed {
            Some((Some(name), Some(value))) => headers.push((name, value)),
            Some(_) => {
                report(
                    cx,
                    route,
                    "Accepted",
                    "UnsupportedValue",
                    format!("{field}.headers[{h}]: invalid header name or value"),
                );
                return None;
            }
            None => {
                report(
                    cx,
                    route,
                    "Accepted",
                    "UnsupportedValue",
                    format!(
                        "{field}.headers[{h}].type: RegularExpression is not supported yet; this match is ignored"
                    ),
                );
                return None;
            }
        }
    }
    let mut query = Vec::new();
    for (q, param) in spec.query_params.iter().enumerate() {
        if param.kind != ValueMatchType::Exact {
            report(
                cx,
                route,
                "Accepted",
                "UnsupportedValue",
                format!(
                    "{field}.queryParams[{q}].type: RegularExpression is not supported yet; this match is ignored"
                ),
            );
            return None;
        }
        query.push((param.name.clone(), param.value.clone()));
    }
    Some(RequestMatch {
        path,
        method: spec.method.map(method),
        headers,
        query,
    })
}

fn method(m: HttpMethod) -> Method {
    match m {
        HttpMethod::Get => Method::GET,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Connect => Method::CONNECT,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Trace => Method::TRACE,
        HttpMethod::Patch => Method::PATCH,
    }
}

fn compile_rule(cx: &mut BuildContext<'_>, route: &HttpRoute, index: usize) -> Rule {
    let route_ref = route.resource_ref();
    let spec = &route.spec.rules[index];
    let mut invalid = None;
    let filters = match compile_filters(
        cx,
        route,
        &spec.filters,
        &format!("spec.rules[{index}].filters"),
    ) {
        Ok(chain) => chain,
        Err(why) => {
            report(cx, &route_ref, "Accepted", "UnsupportedValue", why.clone());
            invalid = Some(why);
            FilterChain::default()
        }
    };
    let rule_mirrors = compile_mirrors(
        cx,
        route,
        &spec.filters,
        &format!("spec.rules[{index}].filters"),
    );
    let backends = spec
        .backend_refs
        .iter()
        .enumerate()
        .map(|(b, backend_ref)| {
            let field = format!("spec.rules[{index}].backendRefs[{b}]");
            let target = resolve_backend(cx.config(), route, backend_ref, &field);
            if let Err((reason, message)) = &target {
                report(cx, &route_ref, "ResolvedRefs", reason, message.clone());
            }
            let filters =
                match compile_filters(cx, route, &backend_ref.filters, &format!("{field}.filters"))
                {
                    Ok(chain) => chain,
                    Err(why) => {
                        report(cx, &route_ref, "Accepted", "UnsupportedValue", why.clone());
                        // The filter cannot be honoured: traffic to this backend gets 500.
                        return WeightedBackend {
                            weight: u64::from(backend_ref.weight),
                            target: Err(why),
                            filters: Default::default(),
                            mirrors: Vec::new(),
                        };
                    }
                };
            let mut mirrors = rule_mirrors.clone();
            mirrors.extend(compile_mirrors(
                cx,
                route,
                &backend_ref.filters,
                &format!("{field}.filters"),
            ));
            WeightedBackend {
                weight: u64::from(backend_ref.weight),
                target: target.map_err(|(_, message)| message),
                filters: Arc::new(filters),
                mirrors,
            }
        })
        .collect::<Vec<_>>();
    let timeouts = spec.timeouts.clone().unwrap_or_default();
    let timeout = |d: Option<waypoint_core::config::resources::GatewayDuration>| {
        d.map(|d| if d.0.is_zero() { NO_TIMEOUT } else { d.0 })
    };
    Rule {
        route: RouteMatch {
            route: route_ref,
            rule: index,
        },
        invalid,
        filters: Arc::new(filters),
        total_weight: backends.iter().map(|b| b.weight).sum(),
        backends,
        request_timeout: timeout(timeouts.request),
        backend_timeout: timeout(timeouts.backend_request),
        retry: compile_retry(spec.retry.as_ref()),
    }
}

fn compile_filters(
    cx: &mut BuildContext<'_>,
    route: &HttpRoute,
    filters: &[HttpRouteFilter],
    field: &str,
) -> Result<FilterChain, String> {
    let mut chain: Vec<Arc<dyn Filter>> = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let missing = || format!("{at}: type {:?} needs its settings field", filter.kind);
        match filter.kind {
            HttpRouteFilterType::RequestHeaderModifier => {
                let m = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(missing)?;
                chain.push(Arc::new(RequestHeaders(
                    HeaderEdits::compile(m).map_err(|e| format!("{at}: {e}"))?,
                )));
            }
            HttpRouteFilterType::ResponseHeaderModifier => {
                let m = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(missing)?;
                chain.push(Arc::new(ResponseHeaders(
                    HeaderEdits::compile(m).map_err(|e| format!("{at}: {e}"))?,
                )));
            }
            HttpRouteFilterType::ExtensionRef => {
                let r = filter.extension_ref.as_ref().ok_or_else(missing)?;
                let ns = route.metadata.namespace();
                let factory = cx.extensions().get(&r.group, &r.kind).ok_or_else(|| {
                    format!(
                        "{at}.extensionRef: no filter is registered for {}/{}",
                        r.group, r.kind
                    )
                })?;
                let object = cx
                    .config()
                    .resources
                    .other(&r.group, &r.kind, ns, &r.name)
                    .map(|o| &o.body);
                chain.push(
                    factory
                        .build(&r.name, ns, object)
                        .map_err(|e| format!("{at}.extensionRef {}: {e}", r.name))?,
                );
            }
            // Mirrors are sent by the upstream: compile_rule collects them (upstream.rs).
            HttpRouteFilterType::RequestMirror => {
                filter.request_mirror.as_ref().ok_or_else(missing)?;
            }
            other => return Err(format!("{at}: filter type {other:?} is not supported yet")),
        }
    }
    Ok(FilterChain::new(chain))
}

pub(super) fn resolve_backend(
    config: &Config,
    route: &HttpRoute,
    backend: &HttpBackendRef,
    field: &str,
) -> Result<Arc<waypoint_core::config::ServiceBackend>, (&'static str, String)> {
    let route_ns = route.metadata.namespace();
    if !(backend.group.is_empty() || backend.group == "core") || backend.kind != "Service" {
        return Err((
            "InvalidKind",
            format!(
                "{field}: backend kind {}/{} is not supported",
                backend.group, backend.kind
            ),
        ));
    }
    let ns = backend.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns && !reference_granted(config, route_ns, ns, &backend.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "{field}: Service {ns}/{} is in another namespace and no ReferenceGrant in {ns} allows HTTPRoutes from {route_ns}",
                backend.name
            ),
        ));
    }
    let Some(port) = backend.port else {
        return Err((
            "UnsupportedValue",
            format!("{field}.port: required for a Service backend"),
        ));
    };
    config
        .service(ns, &backend.name, port)
        .cloned()
        .ok_or_else(|| {
            let message = if config.has_service(ns, &backend.name) {
                format!("{field}: Service {ns}/{} has no port {port}", backend.name)
            } else {
                format!("{field}: Service {ns}/{} not found", backend.name)
            };
            ("BackendNotFound", message)
        })
}

fn reference_granted(config: &Config, from_ns: &str, to_ns: &str, name: &str) -> bool {
    config.resources.reference_grants.iter().any(|grant| {
        grant.metadata.namespace() == to_ns
            && grant.spec.from.iter().any(|f| {
                f.group == GATEWAY_GROUP && f.kind == "HTTPRoute" && f.namespace == from_ns
            })
            && grant.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    })
}
