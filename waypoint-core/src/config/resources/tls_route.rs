//! TLSRoute (`gateway.networking.k8s.io/v1`, also served as `v1alpha2` and `v1alpha3`): a TLS
//! connection passed through unterminated, routed by the server name (SNI) of its ClientHello.

use serde::Deserialize;

use super::{L4RouteRule, ObjectMeta, ParentReference};

/// A TLSRoute.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TlsRoute {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: TlsRouteSpec,
}
object!(TlsRoute, "TLSRoute");

/// The spec of a TLSRoute.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsRouteSpec {
    /// Gateways (TLS Passthrough listeners) or Services the route attaches to.
    pub parent_refs: Vec<ParentReference>,
    /// SNI hostnames the route takes (`*.example.com` allowed). Required in `v1`; a `v1alpha2`
    /// route without any takes every server name.
    pub hostnames: Vec<String>,
    /// Rules: exactly one in `v1` and `v1alpha3`, up to 16 in `v1alpha2` (only the first one
    /// routes).
    pub rules: Vec<L4RouteRule>,
}
