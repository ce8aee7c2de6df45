//! Building a [`Config`]: the checks serde cannot express (the API server's CEL rules and
//! Istio's validation), statuses for every resource, and the indexes the request path reads
//! (Service ports by VIP and by name, each with its ready endpoints).

mod mesh;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::resources::{
    AddressType, AuthorizationAction, AuthorizationPolicy, BackendRef, EndpointSlice, Gateway,
    GrpcRoute, GrpcRouteFilter, GrpcRouteFilterType, HeaderModifier, HttpRoute, HttpRouteFilter,
    HttpRouteFilterType, HttpRouteMatch, Object, ParentReference, PathMatchType, PathModifier,
    PathModifierType, Protocol, RequestAuthentication, RequestMirror, Resources, Service,
    ServiceType, Sourced, TargetPort, ValueMatch, ValueMatchType,
};
use super::{
    AppProtocol, Condition, Config, Endpoint, EndpointStats, ResourceRef, ResourceStatus,
    ServiceBackend,
};
use mesh::MeshIndex;
pub use mesh::{DATAPLANE_MODE_LABEL, MeshOptions};

/// Endpoint load-balancing state by address, kept across config reloads: a new snapshot gets
/// the same [`EndpointStats`] as the old one for an endpoint that is still there, so in-flight
/// counts stay right while both snapshots serve. Entries are weak: an endpoint that left every
/// live snapshot is forgotten.
///
/// It also carries the [`MeshOptions`] builds apply (trust domain, ambient namespaces), since
/// every build of a process goes through the same cache.
#[derive(Debug, Default)]
pub struct EndpointStatsCache {
    entries: Mutex<HashMap<SocketAddr, Weak<EndpointStats>>>,
    mesh: MeshOptions,
}

impl EndpointStatsCache {
    /// An empty cache with the default mesh options (`cluster.local`, no extra namespaces).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache whose builds decide endpoint transports with `mesh`.
    pub fn with_mesh(mesh: MeshOptions) -> Self {
        EndpointStatsCache {
            entries: Mutex::default(),
            mesh,
        }
    }

    /// The mesh options builds through this cache use.
    pub fn mesh(&self) -> &MeshOptions {
        &self.mesh
    }

    /// The process-wide cache used by [`load_path`](super::load_path) and
    /// [`parse_manifests`](super::parse_manifests).
    pub fn global() -> &'static EndpointStatsCache {
        static GLOBAL: OnceLock<EndpointStatsCache> = OnceLock::new();
        GLOBAL.get_or_init(EndpointStatsCache::new)
    }

    /// The stats of `address`: the live ones if any snapshot still holds them, else new ones.
    pub fn stats(&self, address: SocketAddr) -> Arc<EndpointStats> {
        // A panic elsewhere while holding the lock leaves the map valid: keep using it.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = entries.get(&address).and_then(Weak::upgrade) {
            return stats;
        }
        let stats = Arc::new(EndpointStats::default());
        entries.insert(address, Arc::downgrade(&stats));
        stats
    }

    /// Forgets endpoints no snapshot holds any more.
    fn prune(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, w| w.strong_count() > 0);
    }
}

/// A status saying `resource` was rejected (`Accepted=false`, reason `Invalid`).
pub(crate) fn invalid(resource: ResourceRef, source: &str, message: String) -> ResourceStatus {
    condition(resource, source, false, "Invalid", message)
}

fn condition(
    resource: ResourceRef,
    source: &str,
    status: bool,
    reason: &str,
    message: String,
) -> ResourceStatus {
    ResourceStatus {
        resource,
        source: source.to_owned(),
        conditions: vec![Condition {
            kind: "Accepted".into(),
            status,
            reason: reason.into(),
            message,
        }],
    }
}

/// Validates `resources` (invalid ones are left out, with a status), then indexes the rest.
/// `statuses` holds the rejections found while reading; every resource read ends up with one.
pub fn build(
    resources: Resources,
    mut statuses: Vec<ResourceStatus>,
    cache: &EndpointStatsCache,
) -> Config {
    let resources = Resources {
        gateways: keep_valid(resources.gateways, check_gateway, &mut statuses),
        services: keep_valid(resources.services, check_service, &mut statuses),
        endpoint_slices: keep_valid(resources.endpoint_slices, check_slice, &mut statuses),
        http_routes: keep_valid(resources.http_routes, check_http_route, &mut statuses),
        grpc_routes: keep_valid(resources.grpc_routes, check_grpc_route, &mut statuses),
        reference_grants: keep_valid(resources.reference_grants, |_| Ok(()), &mut statuses),
        authorization_policies: keep_valid(
            resources.authorization_policies,
            check_authz,
            &mut statuses,
        ),
        request_authentications: keep_valid(
            resources.request_authentications,
            check_authn,
            &mut statuses,
        ),
        others: resources.others,
    };
    statuses.sort_by(|a, b| (&a.resource, &a.source).cmp(&(&b.resource, &b.source)));

    let mut by_destination = HashMap::new();
    let mut by_name = HashMap::new();
    let mesh = MeshIndex::new(cache.mesh(), &resources.others);
    for service in &resources.services {
        for backend in service_backends(service, &resources.endpoint_slices, cache, &mesh) {
            let backend = Arc::new(backend);
            for ip in &backend.cluster_ips {
                let addr = SocketAddr::new(*ip, backend.port);
                if let Some(first) = by_destination.get(&addr) {
                    let first: &Arc<ServiceBackend> = first;
                    tracing::warn!(%addr, service = %backend.service, taken_by = %first.service,
                        "two Services claim the same cluster IP and port; keeping the first");
                    continue;
                }
                by_destination.insert(addr, backend.clone());
            }
            let key = (
                backend.service.namespace.clone(),
                backend.service.name.clone(),
                backend.port,
            );
            by_name.insert(key, backend);
        }
    }
    cache.prune();
    Config {
        resources,
        statuses,
        by_destination,
        by_name,
    }
}

type Check = Result<(), String>;

fn keep_valid<T: Object>(
    items: Vec<Sourced<T>>,
    check: impl Fn(&T) -> Check,
    statuses: &mut Vec<ResourceStatus>,
) -> Vec<Sourced<T>> {
    items
        .into_iter()
        .filter(|item| {
            let rref = item.resource_ref();
            match check(item) {
                Ok(()) => {
                    let message = format!("{rref} is valid");
                    statuses.push(condition(rref, &item.source, true, "Accepted", message));
                    true
                }
                Err(why) => {
                    statuses.push(invalid(
                        rref.clone(),
                        &item.source,
                        format!("{rref}: {why}"),
                    ));
                    false
                }
            }
        })
        .collect()
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(why()) }
}

// ---------------------------------------------------------------------------------------------
// Service and EndpointSlice

/// The cluster IPs a Service is reached at (none when headless or not yet allocated).
fn cluster_ips(service: &Service) -> Result<Vec<IpAddr>, String> {
    let spec = &service.spec;
    let listed: Vec<(String, &str)> = if spec.cluster_ips.is_empty() {
        spec.cluster_ip
            .iter()
            .map(|ip| ("spec.clusterIP".to_owned(), ip.as_str()))
            .collect()
    } else {
        spec.cluster_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip.as_str()))
            .collect()
    };
    let mut ips = Vec::new();
    for (field, ip) in listed {
        if ip.is_empty() || ip == "None" {
            continue;
        }
        ips.push(
            ip.parse()
                .map_err(|_| format!("{field}: `{ip}` is not an IP address"))?,
        );
    }
    Ok(ips)
}

fn check_service(service: &Service) -> Check {
    if let Some(ip) = &service.spec.cluster_ip
        && !ip.is_empty()
        && ip != "None"
    {
        ip.parse::<IpAddr>()
            .map_err(|_| format!("spec.clusterIP: `{ip}` is not an IP address"))?;
    }
    cluster_ips(service)?;
    let ports = &service.spec.ports;
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        ensure(p.port != 0, || format!("{at}.port: must be 1-65535"))?;
        ensure(ports.len() == 1 || !p.name.is_empty(), || {
            format!("{at}.name: required when a Service has several ports")
        })?;
        if let Some(j) = ports[..i]
            .iter()
            .position(|q| q.port == p.port && q.protocol == p.protocol)
        {
            return Err(format!(
                "{at}: duplicate port {}/{:?} (also spec.ports[{j}])",
                p.port, p.protocol
            ));
        }
        if let Some(j) = ports[..i]
            .iter()
            .position(|q| !p.name.is_empty() && q.name == p.name)
        {
            return Err(format!(
                "{at}.name: duplicate name `{}` (also spec.ports[{j}])",
                p.name
            ));
        }
    }
    Ok(())
}

fn check_slice(slice: &EndpointSlice) -> Check {
    ensure(slice.service_name().is_some_and(|n| !n.is_empty()), || {
        "metadata.labels: missing `kubernetes.io/service-name` (the owning Service)".into()
    })?;
    for (i, ep) in slice.endpoints.iter().enumerate() {
        ensure(!ep.addresses.is_empty(), || {
            format!("endpoints[{i}].addresses: must not be empty")
        })?;
        for (j, a) in ep.addresses.iter().enumerate() {
            let ok = match slice.address_type {
                AddressType::IPv4 => a.parse::<Ipv4Addr>().is_ok(),
                AddressType::IPv6 => a.parse::<Ipv6Addr>().is_ok(),
                AddressType::FQDN => true,
            };
            ensure(ok, || {
                format!(
                    "endpoints[{i}].addresses[{j}]: `{a}` is not an {:?} address",
                    slice.address_type
                )
            })?;
        }
    }
    for (i, p) in slice.ports.iter().enumerate() {
        ensure(p.port != Some(0), || {
            format!("ports[{i}].port: must be 1-65535")
        })?;
    }
    Ok(())
}

/// The protocol an `appProtocol` value names, if it names one.
fn app_protocol(value: Option<&str>) -> Option<AppProtocol> {
    let v = value?;
    let h2c = ["kubernetes.io/h2c", "http2", "grpc"]
        .iter()
        .any(|p| v.eq_ignore_ascii_case(p));
    Some(if h2c {
        AppProtocol::H2c
    } else {
        AppProtocol::Http1
    })
}

/// Istio's protocol selection by port name (`grpc`, `http2-api`); `grpc-web` stays HTTP/1.1.
fn protocol_from_port_name(name: &str) -> AppProtocol {
    let name = name.to_ascii_lowercase();
    let prefix = name.split('-').next().unwrap_or("");
    if (prefix == "grpc" && !name.starts_with("grpc-web")) || prefix == "http2" {
        AppProtocol::H2c
    } else {
        AppProtocol::Http1
    }
}

/// One backend per TCP port of a (non-ExternalName) Service, with its ready endpoints.
fn service_backends(
    service: &Sourced<Service>,
    slices: &[Sourced<EndpointSlice>],
    cache: &EndpointStatsCache,
    mesh: &MeshIndex<'_>,
) -> Vec<ServiceBackend> {
    if service.spec.kind == ServiceType::ExternalName {
        return Vec::new();
    }
    let ns = service.metadata.namespace();
    let own: Vec<&EndpointSlice> = slices
        .iter()
        .map(|s| &s.resource)
        .filter(|s| s.metadata.namespace() == ns && s.service_name() == Some(&service.metadata.name))
        .filter(|s| {
            let fqdn = s.address_type == AddressType::FQDN;
            if fqdn {
                tracing::warn!(slice = %s.resource_ref(), "skipping FQDN EndpointSlice: only IP endpoints are supported");
            }
            !fqdn
        })
        .collect();
    // check_service already accepted these, so they parse.
    let ips = cluster_ips(service).unwrap_or_default();
    let mut backends = Vec::new();
    for port in service
        .spec
        .ports
        .iter()
        .filter(|p| p.protocol == Protocol::TCP)
    {
        let mut protocol = app_protocol(port.app_protocol.as_deref());
        let mut seen = HashSet::new();
        let mut endpoints = Vec::new();
        for slice in &own {
            let slice_port = slice.ports.iter().find(|p| p.name == port.name);
            if protocol.is_none() {
                protocol = slice_port.and_then(|p| app_protocol(p.app_protocol.as_deref()));
            }
            let target = match (slice_port.and_then(|p| p.port), &port.target_port) {
                (Some(p), _) => p,
                (None, Some(TargetPort::Number(p))) => *p,
                (None, None) => port.port,
                (None, Some(TargetPort::Name(name))) => {
                    tracing::warn!(slice = %slice.resource_ref(), port = %name,
                        "EndpointSlice has no port for the Service's named targetPort; skipping it");
                    continue;
                }
            };
            for ep in slice
                .endpoints
                .iter()
                .filter(|e| e.conditions.ready != Some(false))
            {
                // All addresses of an endpoint are the same pod; Kubernetes says to use the first.
                let Some(Ok(ip)) = ep.addresses.first().map(|a| a.parse::<IpAddr>()) else {
                    continue;
                };
                let address = SocketAddr::new(ip, target);
                if seen.insert(address) {
                    endpoints.push(Endpoint {
                        address,
                        stats: cache.stats(address),
                        transport: mesh
                            .transport(slice.metadata.namespace(), ep.target_ref.as_ref()),
                    });
                }
            }
        }
        backends.push(ServiceBackend {
            service: service.resource_ref(),
            port: port.port,
            cluster_ips: ips.clone(),
            protocol: protocol.unwrap_or_else(|| protocol_from_port_name(&port.name)),
            endpoints,
        });
    }
    backends
}

// ---------------------------------------------------------------------------------------------
// Gateway API

/// RFC 1123 subdomain, lower case; `*.` first when `wildcard` (Gateway API `Hostname`).
fn check_hostname(at: &str, host: &str, wildcard: bool) -> Check {
    let bad = |why: &str| Err(format!("{at}: `{host}` is not a valid hostname ({why})"));
    if host.parse::<IpAddr>().is_ok() {
        return bad("IP addresses are not allowed");
    }
    let name = if wildcard {
        host.strip_prefix("*.").unwrap_or(host)
    } else {
        host
    };
    if name.is_empty() || name.len() > 253 {
        return bad("1-253 characters");
    }
    for label in name.split('.') {
        let chars_ok = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty()
            || label.len() > 63
            || !chars_ok
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return bad("lower-case letters, digits, `-` and `.`; `*.` only as a prefix");
        }
    }
    Ok(())
}

/// An HTTP token (RFC 7230), as Gateway API `HeaderName` requires.
fn check_header_name(at: &str, name: &str) -> Check {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ensure(ok, || format!("{at}: `{name}` is not a valid header name"))
}

fn check_parents_and_hostnames(parents: &[ParentReference], hostnames: &[String]) -> Check {
    for (i, p) in parents.iter().enumerate() {
        ensure(p.port != Some(0), || {
            format!("spec.parentRefs[{i}].port: must be 1-65535")
        })?;
    }
    for (i, h) in hostnames.iter().enumerate() {
        check_hostname(&format!("spec.hostnames[{i}]"), h, true)?;
    }
    Ok(())
}

fn check_gateway(gateway: &Gateway) -> Check {
    let listeners = &gateway.spec.listeners;
    for (i, l) in listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        ensure(l.port != 0, || format!("{at}.port: must be 1-65535"))?;
        ensure(!listeners[..i].iter().any(|o| o.name == l.name), || {
            format!("{at}.name: duplicate listener name `{}`", l.name)
        })?;
        if let Some(h) = &l.hostname {
            check_hostname(&format!("{at}.hostname"), h, true)?;
        }
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
fn check_path(at: &str, value: &str) -> Check {
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

fn http_filter_wire_name(kind: HttpRouteFilterType) -> &'static str {
    match kind {
        HttpRouteFilterType::RequestHeaderModifier => "RequestHeaderModifier",
        HttpRouteFilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
        HttpRouteFilterType::RequestMirror => "RequestMirror",
        HttpRouteFilterType::RequestRedirect => "RequestRedirect",
        HttpRouteFilterType::UrlRewrite => "URLRewrite",
        HttpRouteFilterType::ExtensionRef => "ExtensionRef",
        HttpRouteFilterType::Cors => "CORS",
        HttpRouteFilterType::ExternalAuth => "ExternalAuth",
    }
}

/// `rule_matches` is set for rule-level filters, where ReplacePrefixMatch needs one PathPrefix.
fn check_http_filters(
    at: &str,
    filters: &[HttpRouteFilter],
    rule_matches: Option<&[HttpRouteMatch]>,
) -> Check {
    use HttpRouteFilterType as T;
    for (k, f) in filters.iter().enumerate() {
        let at = format!("{at}.filters[{k}]");
        let wire = http_filter_wire_name(f.kind);
        check_filter_fields(
            &at,
            wire,
            &[
                (
                    "requestHeaderModifier",
                    f.kind == T::RequestHeaderModifier,
                    f.request_header_modifier.is_some(),
                ),
                (
                    "responseHeaderModifier",
                    f.kind == T::ResponseHeaderModifier,
                    f.response_header_modifier.is_some(),
                ),
                (
                    "requestMirror",
                    f.kind == T::RequestMirror,
                    f.request_mirror.is_some(),
                ),
                (
                    "requestRedirect",
                    f.kind == T::RequestRedirect,
                    f.request_redirect.is_some(),
                ),
                (
                    "urlRewrite",
                    f.kind == T::UrlRewrite,
                    f.url_rewrite.is_some(),
                ),
                ("cors", f.kind == T::Cors, f.cors.is_some()),
                (
                    "externalAuth",
                    f.kind == T::ExternalAuth,
                    f.external_auth.is_some(),
                ),
                (
                    "extensionRef",
                    f.kind == T::ExtensionRef,
                    f.extension_ref.is_some(),
                ),
            ],
        )?;
        let repeatable = matches!(f.kind, T::RequestMirror | T::ExtensionRef);
        ensure(
            repeatable || !filters[..k].iter().any(|o| o.kind == f.kind),
            || format!("{at}.type: {wire} may appear only once"),
        )?;
        if let Some(m) = f
            .request_header_modifier
            .as_ref()
            .or(f.response_header_modifier.as_ref())
        {
            let field = if f.kind == T::RequestHeaderModifier {
                "requestHeaderModifier"
            } else {
                "responseHeaderModifier"
            };
            check_header_modifier(&format!("{at}.{field}"), m)?;
        }
        if let Some(m) = &f.request_mirror {
            check_mirror(&format!("{at}.requestMirror"), m)?;
        }
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
    }
    let has = |t: T| filters.iter().any(|f| f.kind == t);
    ensure(!(has(T::RequestRedirect) && has(T::UrlRewrite)), || {
        format!("{at}.filters: RequestRedirect and URLRewrite cannot be used together")
    })
}

fn check_backend_ref<F>(at: &str, b: &BackendRef<F>) -> Check {
    ensure(b.weight <= 1_000_000, || {
        format!("{at}.weight: must be 0-1000000")
    })?;
    ensure(b.port != Some(0), || format!("{at}.port: must be 1-65535"))?;
    service_port_required(at, &b.group, &b.kind, b.port)
}

fn check_rule_name(at: &str, name: Option<&String>, earlier: &mut HashSet<String>) -> Check {
    match name {
        Some(n) => ensure(earlier.insert(n.clone()), || {
            format!("{at}.name: duplicate rule name `{n}`")
        }),
        None => Ok(()),
    }
}

fn check_http_route(route: &HttpRoute) -> Check {
    let spec = &route.spec;
    check_parents_and_hostnames(&spec.parent_refs, &spec.hostnames)?;
    let mut names = HashSet::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        check_rule_name(&at, rule.name.as_ref(), &mut names)?;
        for (j, m) in rule.matches.iter().enumerate() {
            check_http_match(&format!("{at}.matches[{j}]"), m)?;
        }
        check_http_filters(&at, &rule.filters, Some(&rule.matches))?;
        let redirect = rule
            .filters
            .iter()
            .any(|f| f.kind == HttpRouteFilterType::RequestRedirect);
        ensure(!redirect || rule.backend_refs.is_empty(), || {
            format!("{at}: a RequestRedirect filter cannot be used together with backendRefs")
        })?;
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let at = format!("{at}.backendRefs[{j}]");
            check_backend_ref(&at, b)?;
            check_http_filters(&at, &b.filters, None)?;
        }
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
    }
    Ok(())
}

fn check_grpc_filters(at: &str, filters: &[GrpcRouteFilter]) -> Check {
    use GrpcRouteFilterType as T;
    for (k, f) in filters.iter().enumerate() {
        let at = format!("{at}.filters[{k}]");
        let wire = match f.kind {
            T::RequestHeaderModifier => "RequestHeaderModifier",
            T::ResponseHeaderModifier => "ResponseHeaderModifier",
            T::RequestMirror => "RequestMirror",
            T::ExtensionRef => "ExtensionRef",
        };
        check_filter_fields(
            &at,
            wire,
            &[
                (
                    "requestHeaderModifier",
                    f.kind == T::RequestHeaderModifier,
                    f.request_header_modifier.is_some(),
                ),
                (
                    "responseHeaderModifier",
                    f.kind == T::ResponseHeaderModifier,
                    f.response_header_modifier.is_some(),
                ),
                (
                    "requestMirror",
                    f.kind == T::RequestMirror,
                    f.request_mirror.is_some(),
                ),
                (
                    "extensionRef",
                    f.kind == T::ExtensionRef,
                    f.extension_ref.is_some(),
                ),
            ],
        )?;
        let repeatable = matches!(f.kind, T::RequestMirror | T::ExtensionRef);
        ensure(
            repeatable || !filters[..k].iter().any(|o| o.kind == f.kind),
            || format!("{at}.type: {wire} may appear only once"),
        )?;
        if let Some(m) = f
            .request_header_modifier
            .as_ref()
            .or(f.response_header_modifier.as_ref())
        {
            let field = if f.kind == T::RequestHeaderModifier {
                "requestHeaderModifier"
            } else {
                "responseHeaderModifier"
            };
            check_header_modifier(&format!("{at}.{field}"), m)?;
        }
        if let Some(m) = &f.request_mirror {
            check_mirror(&format!("{at}.requestMirror"), m)?;
        }
    }
    Ok(())
}

/// A gRPC service (`pkg.Service`) or method (`Echo`) name for an Exact match.
fn grpc_name_ok(name: &str, dotted: bool) -> bool {
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

fn check_grpc_route(route: &GrpcRoute) -> Check {
    let spec = &route.spec;
    check_parents_and_hostnames(&spec.parent_refs, &spec.hostnames)?;
    let mut names = HashSet::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        check_rule_name(&at, rule.name.as_ref(), &mut names)?;
        for (j, m) in rule.matches.iter().enumerate() {
            let at = format!("{at}.matches[{j}]");
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
                                format!(
                                    "{at}.method.{field}: `{v}` is not a valid gRPC {field} name"
                                )
                            })?;
                        }
                    }
                }
            }
            check_value_matches(&at, "headers", &m.headers, true)?;
        }
        check_grpc_filters(&at, &rule.filters)?;
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let at = format!("{at}.backendRefs[{j}]");
            check_backend_ref(&at, b)?;
            check_grpc_filters(&at, &b.filters)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Istio security: the checks istiod's validation webhook makes that bear on enforcement.

fn check_authz(policy: &AuthorizationPolicy) -> Check {
    let spec = &policy.spec;
    let custom = spec.action == AuthorizationAction::CUSTOM;
    ensure(custom == spec.provider.is_some(), || {
        if custom {
            "spec.provider: required when action is CUSTOM".into()
        } else {
            "spec.provider: only allowed when action is CUSTOM".into()
        }
    })?;
    ensure(
        spec.selector.is_none() || (spec.target_ref.is_none() && spec.target_refs.is_empty()),
        || "spec: `selector` and `targetRef(s)` cannot be used together".into(),
    )?;
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        // An empty source or operation would match everything: Istio rejects it as a mistake.
        for (j, from) in rule.from.iter().enumerate() {
            ensure(from.source != Default::default(), || {
                format!("{at}.from[{j}].source: must not be empty")
            })?;
        }
        for (j, to) in rule.to.iter().enumerate() {
            ensure(to.operation != Default::default(), || {
                format!("{at}.to[{j}].operation: must not be empty")
            })?;
        }
        for (j, when) in rule.when.iter().enumerate() {
            ensure(!when.key.is_empty(), || {
                format!("{at}.when[{j}].key: must not be empty")
            })?;
            ensure(
                !when.values.is_empty() || !when.not_values.is_empty(),
                || format!("{at}.when[{j}]: `values` or `notValues` must be set"),
            )?;
        }
    }
    Ok(())
}

fn check_authn(policy: &RequestAuthentication) -> Check {
    let rules = &policy.spec.jwt_rules;
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        ensure(!rule.issuer.is_empty(), || {
            format!("{at}.issuer: must not be empty")
        })?;
        for (k, h) in rule.from_headers.iter().enumerate() {
            check_header_name(&format!("{at}.fromHeaders[{k}].name"), &h.name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_protocol_names() {
        assert_eq!(
            app_protocol(Some("kubernetes.io/H2C")),
            Some(AppProtocol::H2c)
        );
        assert_eq!(app_protocol(Some("GRPC")), Some(AppProtocol::H2c));
        assert_eq!(app_protocol(Some("http")), Some(AppProtocol::Http1));
        assert_eq!(app_protocol(None), None);
        assert_eq!(protocol_from_port_name("grpc-api"), AppProtocol::H2c);
        assert_eq!(protocol_from_port_name("http2"), AppProtocol::H2c);
        assert_eq!(protocol_from_port_name("grpc-web"), AppProtocol::Http1);
        assert_eq!(protocol_from_port_name("http"), AppProtocol::Http1);
    }

    #[test]
    fn hostnames_and_paths() {
        assert!(check_hostname("h", "*.example.com", true).is_ok());
        assert!(check_hostname("h", "*.example.com", false).is_err());
        assert!(
            check_hostname("h", "10.0.0.1", true)
                .unwrap_err()
                .contains("IP addresses")
        );
        assert!(check_hostname("h", "Foo.com", true).is_err());
        assert!(check_path("p", "/a/b").is_ok());
        for bad in ["a", "/a//b", "/a/../b", "/a%2fb", "/a/.", "/a b"] {
            assert!(check_path("p", bad).is_err(), "{bad}");
        }
        assert!(grpc_name_ok(
            "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho",
            true
        ));
        assert!(!grpc_name_ok("a..b", true));
        assert!(!grpc_name_ok("Echo.x", false));
    }

    #[test]
    fn stats_are_shared_while_alive() {
        let cache = EndpointStatsCache::new();
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let a = cache.stats(addr);
        assert!(Arc::ptr_eq(&a, &cache.stats(addr)));
        drop(a);
        cache.prune();
        assert!(cache.entries.lock().unwrap().is_empty());
    }
}
