//! HTTPRoute (`gateway.networking.k8s.io/v1`) and its filters, timeouts and retries.

use serde::{Deserialize, Deserializer, de};

use super::{
    BackendRef, GatewayDuration, HeaderModifier, LocalObjectReference, ObjectMeta, ParentReference,
    RequestMirror, ValueMatch,
};

/// A backendRef of an HTTPRoute rule.
pub type HttpBackendRef = BackendRef<HttpRouteFilter>;

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
