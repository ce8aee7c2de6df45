//! Serde types of the Kubernetes resources waypoint reads, field for field as the upstream APIs
//! spell them (Gateway API v1.6 with its experimental fields, core Service/EndpointSlice, Istio
//! security), with the defaults the API server would apply so a file means what `kubectl apply`
//! of it would mean. Closed sets are enums, so a bad value fails with serde's own message.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::ResourceRef;

/// Kubernetes object metadata (the fields waypoint reads).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace; `None` means `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (Istio reads `istio.io/dry-run` here).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time, a route precedence tie-breaker. Kubernetes always writes UTC
    /// (`...Z`), so these strings order correctly as strings.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A top-level resource kind waypoint understands.
pub trait Object {
    /// The kind, as manifests spell it.
    const KIND: &'static str;
    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// `Kind namespace/name`.
    fn resource_ref(&self) -> ResourceRef {
        let m = self.metadata();
        ResourceRef::new(Self::KIND, m.namespace(), m.name.clone())
    }
}

/// A resource together with where it was read from (`file.yaml#3`: third document), so every
/// later message can point the user at the manifest. Dereferences to the resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced<T> {
    /// Where the resource came from.
    pub source: String,
    /// The resource.
    pub resource: T,
}

impl<T> Deref for Sourced<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.resource
    }
}

macro_rules! object {
    ($ty:ty, $kind:literal) => {
        impl Object for $ty {
            const KIND: &'static str = $kind;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
        }
    };
}

/// A resource of a kind waypoint does not interpret, kept verbatim so vendor `ExtensionRef`
/// filters can read their own kinds.
#[derive(Clone, Debug, PartialEq)]
pub struct RawObject {
    /// `apiVersion` (`example.com/v1`).
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The whole document, as read.
    pub body: serde_json::Value,
}

impl RawObject {
    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }
}

/// Every valid resource read, in the order read.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// Gateways.
    pub gateways: Vec<Sourced<Gateway>>,
    /// Services (all types; ExternalName ones get no backend).
    pub services: Vec<Sourced<Service>>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<Sourced<EndpointSlice>>,
    /// HTTPRoutes.
    pub http_routes: Vec<Sourced<HttpRoute>>,
    /// GRPCRoutes.
    pub grpc_routes: Vec<Sourced<GrpcRoute>>,
    /// ReferenceGrants.
    pub reference_grants: Vec<Sourced<ReferenceGrant>>,
    /// Istio AuthorizationPolicies.
    pub authorization_policies: Vec<Sourced<AuthorizationPolicy>>,
    /// Istio RequestAuthentications.
    pub request_authentications: Vec<Sourced<RequestAuthentication>>,
    /// Kinds waypoint does not interpret.
    pub others: Vec<Sourced<RawObject>>,
}

impl Resources {
    /// The object of an unknown kind `group`/`kind` `namespace`/`name` (an `ExtensionRef` target).
    pub fn other(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<&RawObject> {
        self.others.iter().map(|o| &o.resource).find(|o| {
            o.group() == group
                && o.kind == kind
                && o.metadata.namespace() == namespace
                && o.metadata.name == name
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway API: shared pieces

fn gateway_group() -> String {
    "gateway.networking.k8s.io".into()
}
fn gateway_kind() -> String {
    "Gateway".into()
}
fn service_kind() -> String {
    "Service".into()
}

/// A route's `parentRefs` entry: the Gateway (or, in GAMMA, the Service) it attaches to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// API group, default `gateway.networking.k8s.io` (`""` for a Service).
    #[serde(default = "gateway_group")]
    pub group: String,
    /// Kind, default `Gateway`.
    #[serde(default = "gateway_kind")]
    pub kind: String,
    /// Namespace; `None` means the route's.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Listener name (Gateway) to attach to.
    #[serde(default)]
    pub section_name: Option<String>,
    /// Listener or Service port to attach to.
    #[serde(default)]
    pub port: Option<u16>,
}

/// Where traffic goes: a Service port by default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    /// API group, default `""` (core).
    #[serde(default)]
    pub group: String,
    /// Kind, default `Service`.
    #[serde(default = "service_kind")]
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace; `None` means the route's (another one needs a ReferenceGrant).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Port (required for Services).
    #[serde(default)]
    pub port: Option<u16>,
}

fn one() -> u32 {
    1
}

/// A weighted backend of a route rule, with filters applied only when it is chosen.
/// `F` is the route's filter type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef<F> {
    /// API group, default `""` (core).
    #[serde(default)]
    pub group: String,
    /// Kind, default `Service`.
    #[serde(default = "service_kind")]
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace; `None` means the route's.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Port (required for Services).
    #[serde(default)]
    pub port: Option<u16>,
    /// Share of traffic, 0..=1_000_000, default 1; 0 gets none.
    #[serde(default = "one")]
    pub weight: u32,
    /// Filters run only when this backend is chosen.
    #[serde(default = "Vec::new")]
    pub filters: Vec<F>,
}

/// A backendRef of an HTTPRoute rule.
pub type HttpBackendRef = BackendRef<HttpRouteFilter>;
/// A backendRef of a GRPCRoute rule.
pub type GrpcBackendRef = BackendRef<GrpcRouteFilter>;

/// A reference to an object in the same namespace (an `ExtensionRef` target).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct LocalObjectReference {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// How a header, query parameter or gRPC method is matched.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ValueMatchType {
    /// Equal (header names case-insensitively).
    #[default]
    Exact,
    /// An RE2-style regular expression.
    RegularExpression,
}

/// A header or query-parameter match.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ValueMatch {
    /// Exact (default) or RegularExpression.
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    /// Header or parameter name.
    pub name: String,
    /// The value to match.
    pub value: String,
}

/// One header to set or add.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct HttpHeader {
    /// Name (case-insensitive).
    pub name: String,
    /// Value.
    pub value: String,
}

/// `RequestHeaderModifier` / `ResponseHeaderModifier`: set replaces, add appends, remove drops.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HeaderModifier {
    /// Headers to set (replacing any values).
    pub set: Vec<HttpHeader>,
    /// Headers to append.
    pub add: Vec<HttpHeader>,
    /// Header names to remove.
    pub remove: Vec<String>,
}

/// `RequestMirror`: copy requests to another backend, fire and forget.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    /// The mirror backend.
    pub backend_ref: BackendObjectReference,
    /// Share of requests mirrored, 0..=100 (exclusive with `fraction`).
    #[serde(default)]
    pub percent: Option<u32>,
    /// Share of requests mirrored as a fraction (exclusive with `percent`).
    #[serde(default)]
    pub fraction: Option<Fraction>,
}

fn hundred() -> u32 {
    100
}

/// `numerator / denominator`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Fraction {
    /// Numerator, at most the denominator.
    pub numerator: u32,
    /// Denominator, default 100, at least 1.
    #[serde(default = "hundred")]
    pub denominator: u32,
}

// ---------------------------------------------------------------------------------------------
// HTTPRoute

/// An HTTPRoute (`gateway.networking.k8s.io/v1`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct HttpRoute {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: HttpRouteSpec,
}
object!(HttpRoute, "HTTPRoute");

fn default_http_rules() -> Vec<HttpRouteRule> {
    vec![HttpRouteRule {
        name: None,
        matches: default_matches(),
        filters: Vec::new(),
        backend_refs: Vec::new(),
        timeouts: None,
        retry: None,
        session_persistence: None,
    }]
}

/// The spec of an HTTPRoute.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// Gateways or Services the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Hostnames (`*.example.com` allowed); empty matches all.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Rules; absent means one rule matching every request (the API default).
    #[serde(default = "default_http_rules")]
    pub rules: Vec<HttpRouteRule>,
}

fn default_matches() -> Vec<HttpRouteMatch> {
    vec![HttpRouteMatch::default()]
}

/// One rule: matches, filters, backends.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Optional rule name (a `sectionName` for policies).
    #[serde(default)]
    pub name: Option<String>,
    /// Any one match selects the rule; absent means `PathPrefix /`.
    #[serde(default = "default_matches")]
    pub matches: Vec<HttpRouteMatch>,
    /// Filters, applied in order.
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends; none means 500.
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retry policy (experimental).
    #[serde(default)]
    pub retry: Option<HttpRouteRetry>,
    /// Session persistence (experimental), verbatim.
    #[serde(default)]
    pub session_persistence: Option<serde_json::Value>,
}

/// Conditions on a request, all of which must hold.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteMatch {
    /// Path match, default `PathPrefix /`.
    pub path: HttpPathMatch,
    /// Header matches.
    pub headers: Vec<ValueMatch>,
    /// Query parameter matches.
    pub query_params: Vec<ValueMatch>,
    /// Method.
    pub method: Option<HttpMethod>,
}

/// How the path is matched.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum PathMatchType {
    /// Equal path.
    Exact,
    /// Whole-segment prefix (`/abc` matches `/abc/d`, not `/abcd`).
    #[default]
    PathPrefix,
    /// Regular expression.
    RegularExpression,
}

fn slash() -> String {
    "/".into()
}

/// A path match.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct HttpPathMatch {
    /// Match type, default PathPrefix.
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    /// Value, default `/`.
    #[serde(default = "slash")]
    pub value: String,
}

impl Default for HttpPathMatch {
    fn default() -> Self {
        HttpPathMatch {
            kind: PathMatchType::PathPrefix,
            value: slash(),
        }
    }
}

/// An HTTP method a route can match.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)] // the variants are the methods
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl HttpMethod {
    /// The method as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Connect => "CONNECT",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Trace => "TRACE",
            HttpMethod::Patch => "PATCH",
        }
    }
}

/// A method in a CORS `allowMethods` list: a method or `*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CorsMethod {
    /// One method.
    Method(HttpMethod),
    /// `*`: any method.
    Any,
}

impl<'de> Deserialize<'de> for CorsMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "*" {
            return Ok(CorsMethod::Any);
        }
        HttpMethod::deserialize(de::value::StrDeserializer::<D::Error>::new(&s))
            .map(CorsMethod::Method)
    }
}

/// The kind of an HTTPRoute filter.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum HttpRouteFilterType {
    /// `requestHeaderModifier`.
    RequestHeaderModifier,
    /// `responseHeaderModifier`.
    ResponseHeaderModifier,
    /// `requestMirror`.
    RequestMirror,
    /// `requestRedirect`.
    RequestRedirect,
    /// `urlRewrite`.
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    /// `extensionRef`: a vendor filter.
    ExtensionRef,
    /// `cors`.
    #[serde(rename = "CORS")]
    Cors,
    /// `externalAuth` (experimental).
    ExternalAuth,
}

/// An HTTPRoute filter: `type` names which one of the other fields holds its settings (checked
/// when the config is built).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// Which filter.
    #[serde(rename = "type")]
    pub kind: HttpRouteFilterType,
    /// Settings of `RequestHeaderModifier`.
    #[serde(default)]
    pub request_header_modifier: Option<HeaderModifier>,
    /// Settings of `ResponseHeaderModifier`.
    #[serde(default)]
    pub response_header_modifier: Option<HeaderModifier>,
    /// Settings of `RequestMirror`.
    #[serde(default)]
    pub request_mirror: Option<RequestMirror>,
    /// Settings of `RequestRedirect`.
    #[serde(default)]
    pub request_redirect: Option<RequestRedirect>,
    /// Settings of `URLRewrite`.
    #[serde(default)]
    pub url_rewrite: Option<UrlRewrite>,
    /// Settings of `CORS`.
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Settings of `ExternalAuth`, verbatim.
    #[serde(default)]
    pub external_auth: Option<serde_json::Value>,
    /// The vendor filter of `ExtensionRef`.
    #[serde(default)]
    pub extension_ref: Option<LocalObjectReference>,
}

/// The scheme of a redirect.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum RedirectScheme {
    Http,
    Https,
}

/// The status of a redirect: one of 301, 302 (default), 303, 307, 308.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectStatus(u16);

impl RedirectStatus {
    /// The status code.
    pub fn code(self) -> u16 {
        self.0
    }
}

impl Default for RedirectStatus {
    fn default() -> Self {
        RedirectStatus(302)
    }
}

impl<'de> Deserialize<'de> for RedirectStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u64::deserialize(d)?;
        match code {
            301 | 302 | 303 | 307 | 308 => Ok(RedirectStatus(code as u16)),
            _ => Err(de::Error::invalid_value(
                de::Unexpected::Unsigned(code),
                &"one of 301, 302, 303, 307, 308",
            )),
        }
    }
}

/// `RequestRedirect`: answer with a redirect instead of forwarding.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    /// New scheme.
    #[serde(default)]
    pub scheme: Option<RedirectScheme>,
    /// New host; default the request's.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Path rewrite.
    #[serde(default)]
    pub path: Option<PathModifier>,
    /// New port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Status, default 302.
    #[serde(default)]
    pub status_code: RedirectStatus,
}

/// `URLRewrite`: change host and/or path before forwarding.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    /// New Host header.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Path rewrite.
    #[serde(default)]
    pub path: Option<PathModifier>,
}

/// How a redirect or rewrite changes the path.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum PathModifierType {
    /// Replace the whole path with `replaceFullPath`.
    ReplaceFullPath,
    /// Replace the matched PathPrefix with `replacePrefixMatch`.
    ReplacePrefixMatch,
}

/// A path modifier; the field named by `type` is set (checked when the config is built).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// Which replacement.
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    /// The full path, for `ReplaceFullPath`.
    #[serde(default)]
    pub replace_full_path: Option<String>,
    /// The new prefix, for `ReplacePrefixMatch`.
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

fn five() -> u32 {
    5
}

/// `CORS` settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Allowed origins (`*`, `https://a.example`, `https://*.example`).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Whether credentials are allowed (then `*` is never answered).
    #[serde(default)]
    pub allow_credentials: bool,
    /// Allowed methods.
    #[serde(default)]
    pub allow_methods: Vec<CorsMethod>,
    /// Allowed request headers.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Preflight cache lifetime in seconds, default 5.
    #[serde(default = "five")]
    pub max_age: u32,
}

/// Timeouts of a rule.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteTimeouts {
    /// The whole transaction, retries included; `0s` disables.
    pub request: Option<GatewayDuration>,
    /// One try to the backend; `0s` disables.
    pub backend_request: Option<GatewayDuration>,
}

/// Retry policy of a rule.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpRouteRetry {
    /// Status codes (400..=599) that are retried.
    pub codes: Vec<u16>,
    /// Number of retries.
    pub attempts: Option<u32>,
    /// Wait before a retry.
    pub backoff: Option<GatewayDuration>,
}

// ---------------------------------------------------------------------------------------------
// GRPCRoute

/// A GRPCRoute (`gateway.networking.k8s.io/v1`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct GrpcRoute {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: GrpcRouteSpec,
}
object!(GrpcRoute, "GRPCRoute");

/// The spec of a GRPCRoute.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcRouteSpec {
    /// Gateways or Services the route attaches to.
    pub parent_refs: Vec<ParentReference>,
    /// Hostnames; empty matches all.
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<GrpcRouteRule>,
}

/// One GRPCRoute rule.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcRouteRule {
    /// Optional rule name.
    pub name: Option<String>,
    /// Any one match selects the rule; empty matches all.
    pub matches: Vec<GrpcRouteMatch>,
    /// Filters, in order.
    pub filters: Vec<GrpcRouteFilter>,
    /// Weighted backends.
    pub backend_refs: Vec<GrpcBackendRef>,
    /// Session persistence (experimental), verbatim.
    pub session_persistence: Option<serde_json::Value>,
}

/// Conditions on a gRPC request.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct GrpcRouteMatch {
    /// Service/method match.
    pub method: Option<GrpcMethodMatch>,
    /// Header matches.
    pub headers: Vec<ValueMatch>,
}

/// Matches `/<service>/<method>`; at least one of the two is set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct GrpcMethodMatch {
    /// Exact (default) or RegularExpression.
    #[serde(rename = "type")]
    pub kind: ValueMatchType,
    /// Fully qualified service (`pkg.Service`); `None` matches all.
    pub service: Option<String>,
    /// Method; `None` matches all.
    pub method: Option<String>,
}

/// The kind of a GRPCRoute filter.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[allow(missing_docs)] // same as HttpRouteFilterType
pub enum GrpcRouteFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestMirror,
    ExtensionRef,
}

/// A GRPCRoute filter; the field named by `type` is set (checked when the config is built).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteFilter {
    /// Which filter.
    #[serde(rename = "type")]
    pub kind: GrpcRouteFilterType,
    /// Settings of `RequestHeaderModifier`.
    #[serde(default)]
    pub request_header_modifier: Option<HeaderModifier>,
    /// Settings of `ResponseHeaderModifier`.
    #[serde(default)]
    pub response_header_modifier: Option<HeaderModifier>,
    /// Settings of `RequestMirror`.
    #[serde(default)]
    pub request_mirror: Option<RequestMirror>,
    /// The vendor filter of `ExtensionRef`.
    #[serde(default)]
    pub extension_ref: Option<LocalObjectReference>,
}

// ---------------------------------------------------------------------------------------------
// Gateway, ReferenceGrant

/// A Gateway (`gateway.networking.k8s.io/v1`); the waypoint itself is one.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Gateway {
    /// Metadata (Istio reads `ambient.istio.io/waypoint-inbound-binding` here).
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: GatewaySpec,
}
object!(Gateway, "Gateway");

/// The spec of a Gateway.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The GatewayClass (`istio-waypoint`, or a vendor's).
    pub gateway_class_name: String,
    /// Listeners.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Requested addresses.
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
    /// Infrastructure labels/annotations/parameters.
    #[serde(default)]
    pub infrastructure: Option<GatewayInfrastructure>,
}

/// One listener of a Gateway.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Name (the `sectionName` routes use).
    pub name: String,
    /// Hostname filter (`*.example.com` allowed).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Port.
    pub port: u16,
    /// Protocol: `HTTP`, `HTTPS`, `HBONE`, `istio.io/PROXY`, ... (an open set).
    pub protocol: String,
    /// TLS settings, verbatim.
    #[serde(default)]
    pub tls: Option<serde_json::Value>,
    /// Which routes may attach.
    #[serde(default)]
    pub allowed_routes: AllowedRoutes,
}

/// Which routes may attach to a listener.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct AllowedRoutes {
    /// Namespaces, default `Same`.
    pub namespaces: RouteNamespaces,
    /// Route kinds; empty means those matching the protocol.
    pub kinds: Vec<RouteGroupKind>,
}

/// Namespaces routes may attach from.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteNamespaces {
    /// All, Selector or Same (default).
    pub from: FromNamespaces,
    /// Namespace label selector, for `Selector`.
    pub selector: Option<LabelSelector>,
}

/// Which namespaces.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum FromNamespaces {
    /// Every namespace.
    All,
    /// Namespaces whose labels match the selector.
    Selector,
    /// The Gateway's namespace only.
    #[default]
    Same,
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    /// Labels that must be equal.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `key operator values`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for In/NotIn.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A route kind.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RouteGroupKind {
    /// Group, default `gateway.networking.k8s.io`.
    #[serde(default = "gateway_group")]
    pub group: String,
    /// Kind.
    pub kind: String,
}

/// A requested Gateway address.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct GatewayAddress {
    /// `IPAddress` (default), `Hostname`, or a domain-prefixed type.
    #[serde(rename = "type", default = "ip_address")]
    pub kind: String,
    /// The address.
    #[serde(default)]
    pub value: String,
}

fn ip_address() -> String {
    "IPAddress".into()
}

/// Labels, annotations and parameters for the Gateway's infrastructure.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayInfrastructure {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Implementation-specific parameters.
    pub parameters_ref: Option<LocalObjectReference>,
}

/// A ReferenceGrant: lets objects in other namespaces refer to objects in this one.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReferenceGrant {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: ReferenceGrantSpec,
}
object!(ReferenceGrant, "ReferenceGrant");

/// Who may refer to what.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReferenceGrantSpec {
    /// Referring objects.
    pub from: Vec<ReferenceGrantFrom>,
    /// Referable objects (in this namespace).
    pub to: Vec<ReferenceGrantTo>,
}

/// A referring group/kind/namespace.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReferenceGrantFrom {
    /// Group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
}

/// A referable group/kind, optionally one name.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReferenceGrantTo {
    /// Group (`""` for Services).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// One name only; `None` means all.
    #[serde(default)]
    pub name: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Durations

/// A Gateway API duration (`1h30m`, `500ms`), parsed when read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayDuration(pub Duration);

impl<'de> Deserialize<'de> for GatewayDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_gateway_duration(&s)
            .map(GatewayDuration)
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for GatewayDuration {
    /// The GEP-2257 standard form: descending units, largest first, `0s` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        for (v, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if v > 0 {
                write!(f, "{v}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Parses a GEP-2257 duration: one to four components, each 1-5 decimal digits followed by
/// `h`, `m`, `s` or `ms`; the total is the sum (units may repeat). `0s` is zero; `0`, `""`,
/// `1.5s`, `-1s`, `1d` are rejected.
pub fn parse_gateway_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration `{s}`: {why} (expected e.g. `1h30m`, `500ms`)");
    let bytes = s.as_bytes();
    let mut total = Duration::ZERO;
    let mut i = 0;
    let mut components = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return Err(bad("expected a number"));
        }
        if digits.len() > 5 {
            return Err(bad("at most 5 digits per component"));
        }
        let value: u64 = digits.parse().map_err(|_| bad("expected a number"))?;
        let unit_ms = if s[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let unit = bytes.get(i).copied();
            i += 1;
            match unit {
                Some(b'h') => 3_600_000,
                Some(b'm') => 60_000,
                Some(b's') => 1000,
                Some(_) => return Err(bad("the unit must be h, m, s or ms")),
                None => return Err(bad("missing unit")),
            }
        };
        components += 1;
        if components > 4 {
            return Err(bad("at most 4 components"));
        }
        total += Duration::from_millis(value * unit_ms);
    }
    if components == 0 {
        return Err(bad("empty"));
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Core: Service, EndpointSlice

/// A Service (`v1`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Service {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: ServiceSpec,
}
object!(Service, "Service");

/// The spec of a Service.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// The primary cluster IP; `None` or `""` if not yet allocated, `"None"` if headless.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// All cluster IPs (dual stack); the first equals `clusterIP`.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// ClusterIP (default), NodePort, LoadBalancer or ExternalName.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Pod selector.
    pub selector: BTreeMap<String, String>,
    /// The DNS name of an ExternalName Service.
    pub external_name: Option<String>,
}

/// The type of a Service.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// A transport protocol.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

/// One Service port.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Name (required when there are several ports); matched against EndpointSlice port names.
    #[serde(default)]
    pub name: String,
    /// The port clients dial.
    pub port: u16,
    /// The pod port: a number, or a container port name; default = `port`.
    #[serde(default)]
    pub target_port: Option<TargetPort>,
    /// Protocol, default TCP.
    #[serde(default)]
    pub protocol: Protocol,
    /// Application protocol (`kubernetes.io/h2c`, `http`, `grpc`, ...).
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// A Service `targetPort`: a number or a named container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name (resolved through EndpointSlices).
    Name(String),
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = TargetPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535) or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TargetPort, E> {
                match u16::try_from(v) {
                    Ok(p) if p != 0 => Ok(TargetPort::Number(p)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TargetPort, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetPort, E> {
                // Kubernetes accepts a numeric string here too (IntOrString).
                match v.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) if !v.is_empty() => Ok(TargetPort::Name(v.to_owned())),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An EndpointSlice (`discovery.k8s.io/v1`): some endpoints of the Service named by its
/// `kubernetes.io/service-name` label.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// IPv4, IPv6 or FQDN.
    pub address_type: AddressType,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    /// Ports, shared by all endpoints.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}
object!(EndpointSlice, "EndpointSlice");

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl EndpointSlice {
    /// The owning Service's name, from the `kubernetes.io/service-name` label.
    pub fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(SERVICE_NAME_LABEL)
            .map(String::as_str)
    }
}

/// The address family of an EndpointSlice.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum AddressType {
    IPv4,
    IPv6,
    FQDN,
}

/// One endpoint (usually a pod).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceEndpoint {
    /// Addresses (the first is used by convention).
    pub addresses: Vec<String>,
    /// Readiness.
    pub conditions: EndpointConditions,
    /// Hostname.
    pub hostname: Option<String>,
    /// Node.
    pub node_name: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// The pod, verbatim.
    pub target_ref: Option<serde_json::Value>,
}

/// Endpoint conditions; `None` means unknown, which Kubernetes says to read as ready/serving.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct EndpointConditions {
    /// Ready to receive traffic.
    pub ready: Option<bool>,
    /// Serving (may be true while terminating).
    pub serving: Option<bool>,
    /// Terminating.
    pub terminating: Option<bool>,
}

/// A port of an EndpointSlice.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointPort {
    /// Name, equal to the Service port's name.
    pub name: String,
    /// Port number; `None` means all ports.
    pub port: Option<u16>,
    /// Protocol, default TCP.
    pub protocol: Protocol,
    /// Application protocol.
    pub app_protocol: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Istio security (security.istio.io v1 / v1beta1)

/// An Istio AuthorizationPolicy.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct AuthorizationPolicy {
    /// Metadata (`istio.io/dry-run` annotation).
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}
object!(AuthorizationPolicy, "AuthorizationPolicy");

/// Istio `selector`: the workloads a policy applies to (ignored by waypoints).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    /// Labels that must be equal.
    pub match_labels: BTreeMap<String, String>,
}

/// Istio `targetRef(s)`: the Gateway, GatewayClass or Service a policy applies to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PolicyTargetRef {
    /// Group (`gateway.networking.k8s.io`, `""` for Service).
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace; `None` means the policy's.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The spec of an AuthorizationPolicy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicySpec {
    /// Workload selector.
    pub selector: Option<WorkloadSelector>,
    /// Single target (deprecated form).
    pub target_ref: Option<PolicyTargetRef>,
    /// Targets.
    pub target_refs: Vec<PolicyTargetRef>,
    /// ALLOW (default), DENY, AUDIT or CUSTOM.
    pub action: AuthorizationAction,
    /// The ext_authz provider of a CUSTOM policy.
    pub provider: Option<AuthorizationProvider>,
    /// Rules; none means the policy never matches.
    pub rules: Vec<AuthorizationRule>,
}

/// What a matching policy does.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum AuthorizationAction {
    #[default]
    ALLOW,
    DENY,
    AUDIT,
    CUSTOM,
}

/// The ext_authz provider of a CUSTOM policy.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct AuthorizationProvider {
    /// Provider name, from the mesh config.
    pub name: String,
}

// The rule types below reject unknown fields: a misspelled condition (`notpaths`) would
// otherwise vanish and silently widen an ALLOW policy.

/// One rule: any `from`, any `to`, and every `when` must match.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorizationRule {
    /// Sources.
    pub from: Vec<RuleFrom>,
    /// Operations.
    pub to: Vec<RuleTo>,
    /// Conditions.
    pub when: Vec<RuleCondition>,
}

/// A `from` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuleFrom {
    /// The source.
    pub source: RuleSource,
}

/// A `to` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuleTo {
    /// The operation.
    pub operation: RuleOperation,
}

/// Who sends the request; fields ANDed, list items ORed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
#[allow(missing_docs)] // each field is the Istio field of the same name
pub struct RuleSource {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
}

/// What is requested; fields ANDed, list items ORed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
#[allow(missing_docs)] // each field is the Istio field of the same name
pub struct RuleOperation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

/// A `when` condition on an attribute (`request.headers[x-id]`, `source.ip`, ...).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleCondition {
    /// The attribute.
    pub key: String,
    /// Any of these matches.
    #[serde(default)]
    pub values: Vec<String>,
    /// None of these matches.
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// An Istio RequestAuthentication: which JWTs are validated, and how.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RequestAuthentication {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: RequestAuthenticationSpec,
}
object!(RequestAuthentication, "RequestAuthentication");

/// The spec of a RequestAuthentication.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestAuthenticationSpec {
    /// Workload selector.
    pub selector: Option<WorkloadSelector>,
    /// Single target (deprecated form).
    pub target_ref: Option<PolicyTargetRef>,
    /// Targets.
    pub target_refs: Vec<PolicyTargetRef>,
    /// JWT rules.
    pub jwt_rules: Vec<JwtRule>,
}

/// How tokens of one issuer are found and validated. Unknown fields are rejected: a misspelled
/// `audiences` would silently drop the audience check.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)] // each field is the Istio field of the same name
pub struct JwtRule {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Inline JWKS (JSON text).
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// JWKS fetch timeout (protobuf duration, `5s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A header a token is read from, with an optional prefix (`Bearer `).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Prefix stripped before the token.
    #[serde(default)]
    pub prefix: String,
}

/// Copy a claim of a validated token into a request header.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header name.
    pub header: String,
    /// Claim name.
    pub claim: String,
}
