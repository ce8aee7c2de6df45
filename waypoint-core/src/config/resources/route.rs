//! Gateway API pieces HTTPRoute and GRPCRoute share: parent and backend references, value
//! matches, header modifiers and request mirrors.

use serde::Deserialize;

use super::gateway::gateway_group;

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
