//! HTTPRoute and GRPCRoute checks: the API server's CEL rules that serde cannot express.

use std::collections::HashSet;

use super::{Check, check_header_name, check_hostname, ensure};
use crate::config::resources::{
    BackendRef, GrpcRoute, GrpcRouteFilter, GrpcRouteFilterType, GrpcRouteMatch, HeaderModifier,
    HttpRoute, HttpRouteFilter, HttpRouteFilterType, HttpRouteMatch, ParentReference,
    PathMatchType, PathModifier, PathModifierType, RequestMirror, ValueMatch, ValueMatchType,
};

/// The checks every route gets: its parents and hostnames, then each rule (names unique) with
/// `check_rule`, given the rule's field path (`spec.rules[2]`).
pub(super) fn check_route<R>(
    parents: &[ParentReference],
    hostnames: &[String],
    rules: &[R],
    rule_name: impl Fn(&R) -> Option<&String>,
    check_rule: impl Fn(&str, &R) -> Check,
) -> Check {
    for (i, p) in parents.iter().enumerate() {
        ensure(p.port != Some(0), || {
            format!("spec.parentRefs[{i}].port: must be 1-65535")
        })?;
    }
    for (i, h) in hostnames.iter().enumerate() {
        check_hostname(&format!("spec.hostnames[{i}]"), h, true)?;
    }
    let mut names = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(n) = rule_name(rule) {
            ensure(names.insert(n.clone()), || {
                format!("{at}.name: duplicate rule name `{n}`")
            })?;
        }
        check_rule(&at, rule)?;
    }
    Ok(())
}

fn check_value_matches(at: &str, field: &str, matches: &[ValueMatch], header: bool) -> Check {
    for (k, m) in matches.iter().enumerate() {
        let at = format!("{at}.{field}[{k}].name");
        if header {
            check_header_name(&at, &m.name)?;
        } else {
            ensure(!m.name.is_empty(), || format!("{at}: must not be empty"))?;
        }
        let dup = matches[..k]
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&m.name));
        ensure(!dup, || format!("{at}: `{}` is matched twice", m.name))?;
    }
    Ok(())
}

/// The CEL rules of `HTTPPathMatch` for Exact and PathPrefix values.
pub(super) fn check_path(at: &str, value: &str) -> Check {
    let bad = |why: &str| Err(format!("{at}: `{value}` {why}"));
    if !value.starts_with('/') {
        return bad("must be an absolute path (start with `/`)");
    }
    for part in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        if value.contains(part) {
            return bad(&format!("must not contain `{part}`"));
        }
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return bad("must not end with `/.` or `/..`");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@%".contains(&b);
    if !value.bytes().all(allowed) {
        return bad("has characters a path may not hold unencoded");
    }
    Ok(())
}

fn check_http_match(at: &str, m: &HttpRouteMatch) -> Check {
    match m.path.kind {
        PathMatchType::Exact | PathMatchType::PathPrefix => {
            check_path(&format!("{at}.path.value"), &m.path.value)?
        }
        PathMatchType::RegularExpression => ensure(!m.path.value.is_empty(), || {
            format!("{at}.path.value: must not be empty")
        })?,
    }
    check_value_matches(at, "headers", &m.headers, true)?;
    check_value_matches(at, "queryParams", &m.query_params, false)
}

fn check_header_modifier(at: &str, m: &HeaderModifier) -> Check {
    for (field, headers) in [("set", &m.set), ("add", &m.add)] {
        for (k, h) in headers.iter().enumerate() {
            let at = format!("{at}.{field}[{k}].name");
            check_header_name(&at, &h.name)?;
            let dup = headers[..k]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&h.name));
            ensure(!dup, || format!("{at}: `{}` appears twice", h.name))?;
        }
    }
    for (k, name) in m.remove.iter().enumerate() {
        check_header_name(&format!("{at}.remove[{k}]"), name)?;
    }
    Ok(())
}

fn check_mirror(at: &str, m: &RequestMirror) -> Check {
    ensure(m.percent.is_none() || m.fraction.is_none(), || {
        format!("{at}: only one of `percent` and `fraction` may be set")
    })?;
    ensure(m.percent.is_none_or(|p| p <= 100), || {
        format!("{at}.percent: must be 0-100")
    })?;
    if let Some(f) = m.fraction {
        ensure(f.denominator >= 1, || {
            format!("{at}.fraction.denominator: must be at least 1")
        })?;
        ensure(f.numerator <= f.denominator, || {
            format!("{at}.fraction: the numerator must not exceed the denominator")
        })?;
    }
    ensure(m.backend_ref.port != Some(0), || {
        format!("{at}.backendRef.port: must be 1-65535")
    })?;
    service_port_required(
        &format!("{at}.backendRef"),
        &m.backend_ref.group,
        &m.backend_ref.kind,
        m.backend_ref.port,
    )
}

fn service_port_required(at: &str, group: &str, kind: &str, port: Option<u16>) -> Check {
    let service = group.is_empty() && kind == "Service";
    ensure(!service || port.is_some(), || {
        format!("{at}.port: required for a Service")
    })
}

/// Checks that the field named by a filter's `type` is the only settings field present.
fn check_filter_fields(at: &str, wire_type: &str, fields: &[(&str, bool, bool)]) -> Check {
    for &(field, wanted, present) in fields {
        if wanted && !present {
            return Err(format!("{at}.{field}: required when type is {wire_type}"));
        }
        if !wanted && present {
            return Err(format!(
                "{at}.{field}: must not be set when type is {wire_type}"
            ));
        }
    }
    Ok(())
}

fn check_path_modifier(
    at: &str,
    p: &PathModifier,
    rule_matches: Option<&[HttpRouteMatch]>,
) -> Check {
    let (full, prefix) = (
        p.kind == PathModifierType::ReplaceFullPath,
        p.kind == PathModifierType::ReplacePrefixMatch,
    );
    let wire = if full {
        "ReplaceFullPath"
    } else {
        "ReplacePrefixMatch"
    };
    check_filter_fields(
        at,
        wire,
        &[
            ("replaceFullPath", full, p.replace_full_path.is_some()),
            (
                "replacePrefixMatch",
                prefix,
                p.replace_prefix_match.is_some(),
            ),
        ],
    )?;
    if let (true, Some(matches)) = (prefix, rule_matches) {
        let one_prefix = matches.len() == 1 && matches[0].path.kind == PathMatchType::PathPrefix;
        ensure(one_prefix, || {
            format!(
                "{at}.replacePrefixMatch: needs exactly one match in the rule, of type PathPrefix"
            )
        })?;
    }
    Ok(())
}

/// What the checks HTTPRoute and GRPCRoute share read of a filter, so the rules both kinds
/// follow are written once: exactly the settings field its `type` names is set, only
/// RequestMirror and ExtensionRef may repeat, and header modifiers and mirrors are well formed.
struct FilterView<'a> {
    /// `type` as manifests spell it (`URLRewrite`); distinct for each type.
    wire_type: &'static str,
    request_header_modifier: Option<&'a HeaderModifier>,
    response_header_modifier: Option<&'a HeaderModifier>,
    request_mirror: Option<&'a RequestMirror>,
    /// The settings fields only this route kind has, in manifest order (between
    /// `requestMirror` and `extensionRef`): field name, the `type` naming it, whether it is set.
    own_settings: Vec<(&'static str, &'static str, bool)>,
    extension_ref_set: bool,
}

impl FilterView<'_> {
    /// Every settings field, in manifest order: its name, whether `type` names it, whether it
    /// is set.
    fn settings(&self) -> Vec<(&'static str, bool, bool)> {
        let shared_head = [
            (
                "requestHeaderModifier",
                "RequestHeaderModifier",
                self.request_header_modifier.is_some(),
            ),
            (
                "responseHeaderModifier",
                "ResponseHeaderModifier",
                self.response_header_modifier.is_some(),
            ),
            (
                "requestMirror",
                "RequestMirror",
                self.request_mirror.is_some(),
            ),
        ];
        let extension_ref = ("extensionRef", "ExtensionRef", self.extension_ref_set);
        shared_head
            .into_iter()
            .chain(self.own_settings.iter().copied())
            .chain([extension_ref])
            .map(|(field, wire, set)| (field, wire == self.wire_type, set))
            .collect()
    }
}

/// A filter of a route kind, seen through [`FilterView`].
trait RouteFilter {
    /// The parts of this filter the shared checks read.
    fn view(&self) -> FilterView<'_>;
}

impl RouteFilter for HttpRouteFilter {
    fn view(&self) -> FilterView<'_> {
        use HttpRouteFilterType as T;
        FilterView {
            wire_type: match self.kind {
                T::RequestHeaderModifier => "RequestHeaderModifier",
                T::ResponseHeaderModifier => "ResponseHeaderModifier",
                T::RequestMirror => "RequestMirror",
                T::RequestRedirect => "RequestRedirect",
                T::UrlRewrite => "URLRewrite",
                T::ExtensionRef => "ExtensionRef",
                T::Cors => "CORS",
                T::ExternalAuth => "ExternalAuth",
            },
            request_header_modifier: self.request_header_modifier.as_ref(),
            response_header_modifier: self.response_header_modifier.as_ref(),
            request_mirror: self.request_mirror.as_ref(),
            own_settings: vec![
                (
                    "requestRedirect",
                    "RequestRedirect",
                    self.request_redirect.is_some(),
                ),
                ("urlRewrite", "URLRewrite", self.url_rewrite.is_some()),
                ("cors", "CORS", self.cors.is_some()),
                ("externalAuth", "ExternalAuth", self.external_auth.is_some()),
            ],
            extension_ref_set: self.extension_ref.is_some(),
        }
    }
}

impl RouteFilter for GrpcRouteFilter {
    fn view(&self) -> FilterView<'_> {
        use GrpcRouteFilterType as T;
        FilterView {
            wire_type: match self.kind {
                T::RequestHeaderModifier => "RequestHeaderModifier",
                T::ResponseHeaderModifier => "ResponseHeaderModifier",
                T::RequestMirror => "RequestMirror",
                T::ExtensionRef => "ExtensionRef",
            },
            request_header_modifier: self.request_header_modifier.as_ref(),
            response_header_modifier: self.response_header_modifier.as_ref(),
            request_mirror: self.request_mirror.as_ref(),
            own_settings: Vec::new(),
            extension_ref_set: self.extension_ref.is_some(),
        }
    }
}

/// The checks every route filter gets; `extra` then checks what only its route kind has, given
/// the filter's field path (`spec.rules[0].filters[1]`).
fn check_filters<F: RouteFilter>(
    at: &str,
    filters: &[F],
    extra: impl Fn(&str, &F) -> Check,
) -> Check {
    let views: Vec<FilterView<'_>> = filters.iter().map(RouteFilter::view).collect();
    for (k, (f, view)) in filters.iter().zip(&views).enumerate() {
        let at = format!("{at}.filters[{k}]");
        let wire = view.wire_type;
        check_filter_fields(&at, wire, &view.settings())?;
        let repeatable = matches!(wire, "RequestMirror" | "ExtensionRef");
        ensure(
            repeatable || !views[..k].iter().any(|o| o.wire_type == wire),
            || format!("{at}.type: {wire} may appear only once"),
        )?;
        // check_filter_fields let through only the modifier `type` names, if any.
        for (field, modifier) in [
            ("requestHeaderModifier", view.request_header_modifier),
            ("responseHeaderModifier", view.response_header_modifier),
        ] {
            if let Some(m) = modifier {
                check_header_modifier(&format!("{at}.{field}"), m)?;
            }
        }
        if let Some(m) = view.request_mirror {
            check_mirror(&format!("{at}.requestMirror"), m)?;
        }
        extra(&at, f)?;
    }
    Ok(())
}

/// `rule_matches` is set for rule-level filters, where ReplacePrefixMatch needs one PathPrefix.
fn check_http_filters(
    at: &str,
    filters: &[HttpRouteFilter],
    rule_matches: Option<&[HttpRouteMatch]>,
) -> Check {
    check_filters(at, filters, |at, f| {
        if let Some(r) = &f.request_redirect {
            ensure(r.port != Some(0), || {
                format!("{at}.requestRedirect.port: must be 1-65535")
            })?;
            if let Some(h) = &r.hostname {
                check_hostname(&format!("{at}.requestRedirect.hostname"), h, false)?;
            }
            if let Some(p) = &r.path {
                check_path_modifier(&format!("{at}.requestRedirect.path"), p, rule_matches)?;
            }
        }
        if let Some(r) = &f.url_rewrite {
            if let Some(h) = &r.hostname {
                check_hostname(&format!("{at}.urlRewrite.hostname"), h, false)?;
            }
            if let Some(p) = &r.path {
                check_path_modifier(&format!("{at}.urlRewrite.path"), p, rule_matches)?;
            }
        }
        if let Some(c) = &f.cors {
            ensure(c.max_age >= 1, || {
                format!("{at}.cors.maxAge: must be at least 1")
            })?;
        }
        Ok(())
    })?;
    let has = |t: HttpRouteFilterType| filters.iter().any(|f| f.kind == t);
    ensure(
        !(has(HttpRouteFilterType::RequestRedirect) && has(HttpRouteFilterType::UrlRewrite)),
        || format!("{at}.filters: RequestRedirect and URLRewrite cannot be used together"),
    )
}

/// The backendRefs of the rule at `at`, each with its own filters checked by `check_filters`.
pub(super) fn check_backend_refs<F>(
    at: &str,
    refs: &[BackendRef<F>],
    check_filters: impl Fn(&str, &[F]) -> Check,
) -> Check {
    for (j, b) in refs.iter().enumerate() {
        let at = format!("{at}.backendRefs[{j}]");
        ensure(b.weight <= 1_000_000, || {
            format!("{at}.weight: must be 0-1000000")
        })?;
        ensure(b.port != Some(0), || format!("{at}.port: must be 1-65535"))?;
        service_port_required(&at, &b.group, &b.kind, b.port)?;
        check_filters(&at, &b.filters)?;
    }
    Ok(())
}

pub(in crate::config) fn check_http_route(route: &HttpRoute) -> Check {
    let spec = &route.spec;
    check_route(
        &spec.parent_refs,
        &spec.hostnames,
        &spec.rules,
        |rule| rule.name.as_ref(),
        |at, rule| {
            for (j, m) in rule.matches.iter().enumerate() {
                check_http_match(&format!("{at}.matches[{j}]"), m)?;
            }
            check_http_filters(at, &rule.filters, Some(&rule.matches))?;
            let redirect = rule
                .filters
                .iter()
                .any(|f| f.kind == HttpRouteFilterType::RequestRedirect);
            ensure(!redirect || rule.backend_refs.is_empty(), || {
                format!("{at}: a RequestRedirect filter cannot be used together with backendRefs")
            })?;
            check_backend_refs(at, &rule.backend_refs, |at, filters| {
                check_http_filters(at, filters, None)
            })?;
            if let Some(t) = &rule.timeouts
                && let (Some(req), Some(backend)) = (t.request, t.backend_request)
            {
                ensure(req.0.is_zero() || backend <= req, || {
                    format!(
                        "{at}.timeouts.backendRequest: {backend} must not exceed the request timeout {req}"
                    )
                })?;
            }
            if let Some(r) = &rule.retry {
                for (k, code) in r.codes.iter().enumerate() {
                    ensure((400..=599).contains(code), || {
                        format!("{at}.retry.codes[{k}]: {code} is not 400-599")
                    })?;
                }
            }
            Ok(())
        },
    )
}

fn check_grpc_filters(at: &str, filters: &[GrpcRouteFilter]) -> Check {
    check_filters(at, filters, |_, _| Ok(()))
}

/// A gRPC service (`pkg.Service`) or method (`Echo`) name for an Exact match.
pub(super) fn grpc_name_ok(name: &str, dotted: bool) -> bool {
    let name = if dotted {
        name.strip_prefix('.').unwrap_or(name)
    } else {
        name
    };
    let ident = |s: &str| {
        let mut b = s.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
    };
    if dotted {
        name.split('.').all(ident)
    } else {
        ident(name)
    }
}

fn check_grpc_match(at: &str, m: &GrpcRouteMatch) -> Check {
    if let Some(method) = &m.method {
        ensure(method.service.is_some() || method.method.is_some(), || {
            format!("{at}.method: one or both of `service` and `method` must be set")
        })?;
        if method.kind == ValueMatchType::Exact {
            for (field, value, dotted) in [
                ("service", &method.service, true),
                ("method", &method.method, false),
            ] {
                if let Some(v) = value {
                    ensure(grpc_name_ok(v, dotted), || {
                        format!("{at}.method.{field}: `{v}` is not a valid gRPC {field} name")
                    })?;
                }
            }
        }
    }
    check_value_matches(at, "headers", &m.headers, true)
}

pub(in crate::config) fn check_grpc_route(route: &GrpcRoute) -> Check {
    let spec = &route.spec;
    check_route(
        &spec.parent_refs,
        &spec.hostnames,
        &spec.rules,
        |rule| rule.name.as_ref(),
        |at, rule| {
            for (j, m) in rule.matches.iter().enumerate() {
                check_grpc_match(&format!("{at}.matches[{j}]"), m)?;
            }
            check_grpc_filters(at, &rule.filters)?;
            check_backend_refs(at, &rule.backend_refs, check_grpc_filters)?;
            Ok(())
        },
    )
}
