//! GRPCRoute: compiling rules (method and header matches, filters, backends) into the same
//! route table as HTTPRoutes, GRPCRoute match precedence, and the UNIMPLEMENTED answer a gRPC
//! request gets when no rule matches.

use std::cmp::Ordering;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use waypoint_core::body;
use waypoint_core::config::resources::{
    GrpcRoute, GrpcRouteFilter, GrpcRouteFilterType, GrpcRouteMatch, Object, ValueMatchType,
};
use waypoint_core::filter::{BuildContext, Filter, FilterChain, Response, RouteMatch, Timeout};

use super::compile::{Ranked, Referrer, extension_filter, report, resolve_backend_ref};
use super::header_modifier::{HeaderEdits, RequestHeaders, ResponseHeaders};
use super::matcher::full_match_regex;
use super::{Rule, WeightedBackend};

/// A service or method condition.
#[derive(Clone, Debug)]
pub(super) enum NameMatch {
    Any,
    Exact(String),
    Regex(Regex),
}

impl NameMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            NameMatch::Any => true,
            NameMatch::Exact(v) => v == value,
            NameMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// A header condition of a GRPCRoute match.
#[derive(Clone, Debug)]
pub(super) enum HeaderMatch {
    Exact(HeaderName, HeaderValue),
    /// Anchored to the whole value.
    Regex(HeaderName, Regex),
}

/// One compiled GRPCRoute match.
#[derive(Clone, Debug)]
pub(super) struct GrpcMatch {
    service: NameMatch,
    method: NameMatch,
    /// Characters of the service and method as written, for precedence.
    service_len: usize,
    method_len: usize,
    headers: Vec<HeaderMatch>,
}

impl GrpcMatch {
    /// True when the request's `/<service>/<method>` path and headers match.
    pub(super) fn matches<B>(&self, req: &http::Request<B>) -> bool {
        if !matches!(
            (&self.service, &self.method),
            (NameMatch::Any, NameMatch::Any)
        ) {
            let path = req.uri().path();
            let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/'))
            else {
                return false;
            };
            if !self.service.matches(service) || !self.method.matches(method) {
                return false;
            }
        }
        self.headers.iter().all(|h| match h {
            HeaderMatch::Exact(name, value) => {
                req.headers().get_all(name).iter().any(|v| v == value)
            }
            HeaderMatch::Regex(name, re) => req
                .headers()
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| re.is_match(v))),
        })
    }
}

impl Ranked for GrpcMatch {
    /// GRPCRoute precedence (hostnames are decided before): more characters of service, then
    /// of method, then more header matches.
    fn rank_cmp(&self, other: &Self) -> Ordering {
        other
            .service_len
            .cmp(&self.service_len)
            .then_with(|| other.method_len.cmp(&self.method_len))
            .then_with(|| other.headers.len().cmp(&self.headers.len()))
    }
}

/// True for gRPC requests (`content-type: application/grpc`, `+proto`, ...).
pub(super) fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC answer to a call no rule matches: HTTP 200, trailers-only, `grpc-status: 12`.
pub(super) fn unimplemented(message: &str) -> Response {
    let mut resp = http::Response::new(body::empty());
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static("12"));
    // grpc-message is percent-encoded; keep it to safe characters.
    let safe: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .map(|c| if c == '%' { '?' } else { c })
        .collect();
    if let Ok(v) = HeaderValue::try_from(safe.replace(' ', "%20")) {
        headers.insert("grpc-message", v);
    }
    resp
}

/// Compiles a GRPCRoute's matches (each with its rule index and match index) and rules.
/// A match that cannot be compiled is reported and left out.
pub(super) fn compile_route(
    cx: &mut BuildContext<'_>,
    route: &GrpcRoute,
) -> Vec<(usize, usize, GrpcMatch, Arc<Rule>)> {
    let route_ref = route.resource_ref();
    let mut out = Vec::new();
    for (i, spec) in route.spec.rules.iter().enumerate() {
        let rule = Arc::new(compile_rule(cx, route, i));
        let all = [GrpcRouteMatch::default()];
        let matches = if spec.matches.is_empty() {
            &all[..]
        } else {
            &spec.matches
        };
        for (m, spec) in matches.iter().enumerate() {
            let field = format!("spec.rules[{i}].matches[{m}]");
            match compile_match(spec, &field) {
                Ok(matcher) => out.push((i, m, matcher, rule.clone())),
                Err(why) => report(cx, &route_ref, "Accepted", "UnsupportedValue", why),
            }
        }
    }
    out
}

fn compile_match(spec: &GrpcRouteMatch, field: &str) -> Result<GrpcMatch, String> {
    let (mut service, mut method, mut service_len, mut method_len) =
        (NameMatch::Any, NameMatch::Any, 0, 0);
    if let Some(m) = &spec.method {
        let name = |value: &Option<String>, what: &str| -> Result<NameMatch, String> {
            match (value, m.kind) {
                (None, _) => Ok(NameMatch::Any),
                (Some(v), ValueMatchType::Exact) => Ok(NameMatch::Exact(v.clone())),
                (Some(v), ValueMatchType::RegularExpression) => full_match_regex(v)
                    .map(NameMatch::Regex)
                    .map_err(|e| format!("{field}.method.{what}: {e}")),
            }
        };
        service = name(&m.service, "service")?;
        method = name(&m.method, "method")?;
        service_len = m.service.as_ref().map_or(0, String::len);
        method_len = m.method.as_ref().map_or(0, String::len);
    }
    let mut headers = Vec::new();
    for (h, header) in spec.headers.iter().enumerate() {
        let at = format!("{field}.headers[{h}]");
        let name = HeaderName::try_from(header.name.as_str())
            .map_err(|_| format!("{at}.name: invalid header name"))?;
        headers.push(match header.kind {
            ValueMatchType::Exact => HeaderMatch::Exact(
                name,
                HeaderValue::try_from(header.value.as_str())
                    .map_err(|_| format!("{at}.value: invalid header value"))?,
            ),
            ValueMatchType::RegularExpression => HeaderMatch::Regex(
                name,
                full_match_regex(&header.value).map_err(|e| format!("{at}.value: {e}"))?,
            ),
        });
    }
    Ok(GrpcMatch {
        service,
        method,
        service_len,
        method_len,
        headers,
    })
}

fn compile_rule(cx: &mut BuildContext<'_>, route: &GrpcRoute, index: usize) -> Rule {
    let route_ref = route.resource_ref();
    let ns = route.metadata.namespace();
    let spec = &route.spec.rules[index];
    let mut invalid = None;
    let filters = match compile_filters(
        cx,
        ns,
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
    let mut backends = Vec::new();
    for (b, backend) in spec.backend_refs.iter().enumerate() {
        let field = format!("spec.rules[{index}].backendRefs[{b}]");
        let weight = u64::from(backend.weight);
        let target = resolve_backend_ref(
            cx.config(),
            Referrer::of("GRPCRoute", &route.metadata, &route.spec.parent_refs),
            (&backend.group, &backend.kind, &backend.name),
            backend.namespace.as_deref(),
            backend.port,
            &field,
        );
        if let Err((reason, message)) = &target {
            report(cx, &route_ref, "ResolvedRefs", reason, message.clone());
        }
        let filters = match compile_filters(cx, ns, &backend.filters, &format!("{field}.filters")) {
            Ok(chain) => chain,
            Err(why) => {
                report(cx, &route_ref, "Accepted", "UnsupportedValue", why.clone());
                backends.push(WeightedBackend {
                    weight,
                    target: Err(why),
                    filters: Default::default(),
                    mirrors: Vec::new(),
                });
                continue;
            }
        };
        backends.push(WeightedBackend {
            weight,
            target: target.map_err(|(_, message)| message),
            filters: Arc::new(filters),
            // GRPCRoute RequestMirror is reported unsupported by compile_filters.
            mirrors: Vec::new(),
        });
    }
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
        request_timeout: Timeout::Default,
        backend_timeout: Timeout::Default,
        retry: None,
    }
}

fn compile_filters(
    cx: &mut BuildContext<'_>,
    ns: &str,
    filters: &[GrpcRouteFilter],
    field: &str,
) -> Result<FilterChain, String> {
    let mut chain: Vec<Arc<dyn Filter>> = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let missing = || format!("{at}: type {:?} needs its settings field", filter.kind);
        match filter.kind {
            GrpcRouteFilterType::RequestHeaderModifier => {
                let m = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(missing)?;
                let edits = HeaderEdits::compile(m).map_err(|e| format!("{at}: {e}"))?;
                chain.push(Arc::new(RequestHeaders(edits)));
            }
            GrpcRouteFilterType::ResponseHeaderModifier => {
                let m = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(missing)?;
                let edits = HeaderEdits::compile(m).map_err(|e| format!("{at}: {e}"))?;
                chain.push(Arc::new(ResponseHeaders(edits)));
            }
            GrpcRouteFilterType::ExtensionRef => {
                let r = filter.extension_ref.as_ref().ok_or_else(missing)?;
                chain.push(extension_filter(cx, r, ns, &at)?);
            }
            GrpcRouteFilterType::RequestMirror => {
                return Err(format!(
                    "{at}: filter type RequestMirror is not supported yet"
                ));
            }
        }
    }
    Ok(FilterChain::new(chain))
}
