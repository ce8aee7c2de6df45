//! GRPCRoute (`gateway.networking.k8s.io/v1`).

use serde::Deserialize;

use super::{
    BackendRef, HeaderModifier, LocalObjectReference, ObjectMeta, ParentReference, RequestMirror,
    ValueMatch, ValueMatchType,
};

/// A backendRef of a GRPCRoute rule.
pub type GrpcBackendRef = BackendRef<GrpcRouteFilter>;

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
