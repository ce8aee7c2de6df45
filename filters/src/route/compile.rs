//! Compiling HTTPRoutes (and, through `grpc`, GRPCRoutes) into the [`RouteTable`]: resolving
//! backends, validating filters and matches; `attach` then hangs them on their parents in
//! precedence order. Problems are reported per resource with the upstream condition reasons;
//! what is valid is served.

use std::cmp::Ordering;
use std::sync::Arc;

use http::{HeaderName, Method};
use waypoint_core::config::resources::{
    GATEWAY_API_GROUP, HttpBackendRef, HttpMethod, HttpRoute, HttpRouteFilter, HttpRouteFilterType,
    HttpRouteMatch, ISTIO_NETWORKING_GROUP, LocalObjectReference, Object, ObjectMeta,
    ParentReference, PathMatchType, ValueMatchType,
};
use waypoint_core::config::{Config, ResourceRef};
use waypoint_core::filter::{
    BuildContext, BuildReport, ExtensionError, Filter, FilterChain, RouteMatch, Timeout,
};

use super::attach::{Builder, Entries, Ordered, RouteView, resolved_refs};
use super::cors::Cors;
use super::header_modifier::{HeaderEdits, RequestHeaders, ResponseHeaders};
use super::matcher::{PathMatch, RequestMatch, ValuePattern, full_match_regex};
use super::redirect::Redirect;
use super::rewrite::{PathRewrite, Rewrite};
use super::upstream::{compile_mirrors, compile_retry};
use super::{MatchedPrefix, RouteTable, Rule, WeightedBackend, grpc};

/// A match kind's Gateway API precedence: `Less` means `self` wins. Ties are broken by the
/// caller (route age, name, rule order).
pub(super) trait Ranked {
    fn rank_cmp(&self, other: &Self) -> Ordering;
    /// What the rule's filters learn of this match (`ReplacePrefixMatch` needs the prefix).
    fn matched(&self) -> MatchedPrefix {
        MatchedPrefix::default()
    }
}

impl Ranked for RequestMatch {
    fn rank_cmp(&self, other: &Self) -> Ordering {
        self.precedence(other)
    }

    fn matched(&self) -> MatchedPrefix {
        MatchedPrefix::of(self)
    }
}

pub(super) fn compile(cx: &mut BuildContext<'_>) -> RouteTable {
    let config = cx.config();
    let mut builder = Builder::new(config);

    for route in &config.resources.http_routes {
        let route_ref = route.resource_ref();
        let before = cx.reports().len();
        let rules: Vec<Arc<Rule>> = route
            .spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, _)| Arc::new(compile_rule(cx, route, i)))
            .collect();
        let mut entries = Vec::new();
        for (i, rule) in route.spec.rules.iter().enumerate() {
            for (m, spec) in rule.matches.iter().enumerate() {
                if let Some(matcher) = compile_match(cx, &route_ref, i, m, spec) {
                    entries.push(Ordered {
                        matcher,
                        rule: rules[i].clone(),
                        created: route.metadata.creation_timestamp.clone(),
                        route: route_ref.clone(),
                        match_index: m,
                    });
                }
            }
        }
        let view = RouteView {
            kind: "HTTPRoute",
            resolved: resolved_since(cx, before, &route_ref),
            route: route_ref,
            generation: route.metadata.generation,
            parents: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            entries: Entries::Http(entries),
        };
        builder.attach(cx, &view);
    }

    for route in &config.resources.grpc_routes {
        let route_ref = route.resource_ref();
        let before = cx.reports().len();
        let entries = grpc::compile_route(cx, route)
            .into_iter()
            .map(|(_, m, matcher, rule)| Ordered {
                matcher,
                rule,
                created: route.metadata.creation_timestamp.clone(),
                route: route_ref.clone(),
                match_index: m,
            })
            .collect();
        let view = RouteView {
            kind: "GRPCRoute",
            resolved: resolved_since(cx, before, &route_ref),
            route: route_ref,
            generation: route.metadata.generation,
            parents: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            entries: Entries::Grpc(entries),
        };
        builder.attach(cx, &view);
    }
    super::l4::compile(cx, &mut builder);
    builder.finish(cx)
}

/// The route's `ResolvedRefs` condition from the backend problems reported since `before`.
pub(super) fn resolved_since(
    cx: &BuildContext<'_>,
    before: usize,
    route: &ResourceRef,
) -> waypoint_core::config::Condition {
    resolved_refs(
        cx.reports()[before..]
            .iter()
            .filter(|r| r.resource == *route && r.condition == "ResolvedRefs")
            .map(|r| (r.reason.as_str(), r.message.as_str())),
    )
}

pub(super) fn report(
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
    // The first problem is reported; the match is then left out (it can never be honoured).
    let pattern = |at: String, kind: ValueMatchType, value: &str| match kind {
        ValueMatchType::Exact => Ok(ValuePattern::Exact(value.to_owned())),
        ValueMatchType::RegularExpression => full_match_regex(value)
            .map(ValuePattern::Regex)
            .map_err(|e| format!("{at}: {e}; this match is ignored")),
    };
    let compiled = (|| {
        let path = match spec.path.kind {
            PathMatchType::Exact => PathMatch::Exact(spec.path.value.clone()),
            PathMatchType::PathPrefix => PathMatch::prefix(&spec.path.value),
            PathMatchType::RegularExpression => PathMatch::Regex(
                full_match_regex(&spec.path.value)
                    .map_err(|e| format!("{field}.path.value: {e}; this match is ignored"))?,
            ),
        };
        let mut headers = Vec::new();
        for (h, header) in spec.headers.iter().enumerate() {
            let at = format!("{field}.headers[{h}]");
            let name = HeaderName::try_from(header.name.as_str())
                .map_err(|_| format!("{at}.name: invalid header name; this match is ignored"))?;
            headers.push((
                name,
                pattern(format!("{at}.value"), header.kind, &header.value)?,
            ));
        }
        let mut query = Vec::new();
        for (q, param) in spec.query_params.iter().enumerate() {
            let at = format!("{field}.queryParams[{q}].value");
            query.push((param.name.clone(), pattern(at, param.kind, &param.value)?));
        }
        Ok::<_, String>((path, headers, query))
    })();
    let (path, headers, query) = match compiled {
        Ok(parts) => parts,
        Err(message) => {
            report(cx, route, "Accepted", "UnsupportedValue", message);
            return None;
        }
    };
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
        &spec.matches,
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
            let filters = match compile_filters(
                cx,
                route,
                &spec.matches,
                &backend_ref.filters,
                &format!("{field}.filters"),
            ) {
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
        d.map_or(Timeout::Default, |d| Timeout::from_gateway(d.0))
    };
    Rule {
        route: RouteMatch {
            route: route_ref,
            rule: index,
        },
        invalid,
        filters: Arc::new(filters),
        backend_filters: backends.iter().any(|b| !b.filters.is_empty()),
        total_weight: backends.iter().map(|b| b.weight).sum(),
        backends,
        request_timeout: timeout(timeouts.request),
        backend_timeout: timeout(timeouts.backend_request),
        retry: compile_retry(spec.retry.as_ref()),
    }
}

/// `matches` are the rule's: `ReplacePrefixMatch` needs every one to be a PathPrefix.
fn compile_filters(
    cx: &mut BuildContext<'_>,
    route: &HttpRoute,
    matches: &[HttpRouteMatch],
    filters: &[HttpRouteFilter],
    field: &str,
) -> Result<FilterChain, String> {
    let mut chain: Vec<Arc<dyn Filter>> = Vec::new();
    let prefix_only = |path: Option<&PathRewrite>, at: String| {
        let all_prefix = matches
            .iter()
            .all(|m| m.path.kind == PathMatchType::PathPrefix);
        match path {
            Some(p) if p.needs_prefix_match() && !all_prefix => Err(format!(
                "{at}.path.replacePrefixMatch: needs every match of the rule to be a PathPrefix"
            )),
            _ => Ok(()),
        }
    };
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
                chain.push(extension_filter(cx, r, route.metadata.namespace(), &at)?);
            }
            HttpRouteFilterType::RequestRedirect => {
                let r = filter.request_redirect.as_ref().ok_or_else(missing)?;
                let at = format!("{at}.requestRedirect");
                let redirect = Redirect::compile(r, &at)?;
                prefix_only(redirect.path(), at)?;
                chain.push(Arc::new(redirect));
            }
            HttpRouteFilterType::UrlRewrite => {
                let r = filter.url_rewrite.as_ref().ok_or_else(missing)?;
                let at = format!("{at}.urlRewrite");
                let rewrite = Rewrite::compile(r, &at)?;
                prefix_only(rewrite.path(), at)?;
                chain.push(Arc::new(rewrite));
            }
            HttpRouteFilterType::Cors => {
                let c = filter.cors.as_ref().ok_or_else(missing)?;
                chain.push(Arc::new(Cors::compile(c, &format!("{at}.cors"))?));
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

/// The vendor filter an `ExtensionRef` at `at` names, built by its registered factory with the
/// referenced object's manifest (when the config holds one).
pub(super) fn extension_filter(
    cx: &mut BuildContext<'_>,
    r: &LocalObjectReference,
    ns: &str,
    at: &str,
) -> Result<Arc<dyn Filter>, String> {
    cx.build_extension(&r.group, &r.kind, &r.name, ns)
        .map_err(|e| match e {
            ExtensionError::NotRegistered { .. } => format!("{at}.extensionRef: {e}"),
            _ => format!("{at}.extensionRef {}: {e}", r.name),
        })
}

pub(super) fn resolve_backend(
    config: &Config,
    route: &HttpRoute,
    backend: &HttpBackendRef,
    field: &str,
) -> Result<Arc<waypoint_core::config::ServiceBackend>, (&'static str, String)> {
    resolve_backend_ref(
        config,
        Referrer::of("HTTPRoute", &route.metadata, &route.spec.parent_refs),
        (&backend.group, &backend.kind, &backend.name),
        backend.namespace.as_deref(),
        backend.port,
        field,
    )
}

/// The route a backendRef belongs to, as far as reference rules care.
#[derive(Clone, Copy, Debug)]
pub(super) struct Referrer<'a> {
    kind: &'a str,
    namespace: &'a str,
    /// Every parent is a Service. Mesh routes may send to any namespace without a
    /// ReferenceGrant (GEP-1294): they only augment Services clients can already reach.
    mesh_only: bool,
}

impl<'a> Referrer<'a> {
    /// A route of `kind` with this metadata and these parents.
    pub(super) fn of(kind: &'a str, meta: &'a ObjectMeta, parents: &[ParentReference]) -> Self {
        Referrer {
            kind,
            namespace: meta.namespace(),
            mesh_only: !parents.is_empty()
                && parents
                    .iter()
                    .all(|p| p.kind == "Service" && (p.group.is_empty() || p.group == "core")),
        }
    }
}

/// Resolves a backendRef (`group`, `kind`, `name`) of `route` to a Service port, or the
/// ResolvedRefs reason and message saying why not.
pub(super) fn resolve_backend_ref(
    config: &Config,
    route: Referrer<'_>,
    (group, kind, name): (&str, &str, &str),
    namespace: Option<&str>,
    port: Option<u16>,
    field: &str,
) -> Result<Arc<waypoint_core::config::ServiceBackend>, (&'static str, String)> {
    if group == ISTIO_NETWORKING_GROUP && kind == "Hostname" {
        return resolve_hostname(config, name, namespace, port, field);
    }
    if !(group.is_empty() || group == "core") || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("{field}: backend kind {group}/{kind} is not supported"),
        ));
    }
    let (route_kind, route_ns) = (route.kind, route.namespace);
    let ns = namespace.unwrap_or(route_ns);
    if ns != route_ns
        && !route.mesh_only
        && !reference_granted(config, route_kind, route_ns, ns, name)
    {
        return Err((
            "RefNotPermitted",
            format!(
                "{field}: Service {ns}/{name} is in another namespace and no ReferenceGrant in {ns} allows {route_kind}s from {route_ns}"
            ),
        ));
    }
    let Some(port) = port else {
        return Err((
            "UnsupportedValue",
            format!("{field}.port: required for a Service backend"),
        ));
    };
    config.service(ns, name, port).cloned().ok_or_else(|| {
        let message = if config.has_service(ns, name) {
            format!("{field}: Service {ns}/{name} has no port {port}")
        } else {
            format!("{field}: Service {ns}/{name} not found")
        };
        ("BackendNotFound", message)
    })
}

/// Istio's `Hostname` backend (group `networking.istio.io`): a ServiceEntry host, named by
/// the host itself; istiod refuses a namespace on it (a host is not namespaced).
fn resolve_hostname(
    config: &Config,
    host: &str,
    namespace: Option<&str>,
    port: Option<u16>,
    field: &str,
) -> Result<Arc<waypoint_core::config::ServiceBackend>, (&'static str, String)> {
    if namespace.is_some() {
        return Err((
            "UnsupportedValue",
            format!("{field}.namespace: may not be set for a Hostname backend"),
        ));
    }
    let Some(port) = port else {
        return Err((
            "UnsupportedValue",
            format!("{field}.port: required for a Hostname backend"),
        ));
    };
    config.host(host, port).cloned().ok_or_else(|| {
        (
            "BackendNotFound",
            format!("{field}: no ServiceEntry has host {host} with port {port}"),
        )
    })
}

fn reference_granted(
    config: &Config,
    from_kind: &str,
    from_ns: &str,
    to_ns: &str,
    name: &str,
) -> bool {
    config.resources.reference_grants.iter().any(|grant| {
        grant.metadata.namespace() == to_ns
            && grant.spec.from.iter().any(|f| {
                f.group == GATEWAY_API_GROUP && f.kind == from_kind && f.namespace == from_ns
            })
            && grant.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    })
}
