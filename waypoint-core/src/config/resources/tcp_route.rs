//! TCPRoute (`gateway.networking.k8s.io/v1`, also served as `v1alpha2`): bytes of a TCP
//! connection forwarded to weighted backends, with nothing to match on.

use serde::Deserialize;

use super::{BackendRef, ObjectMeta, ParentReference};

/// The filter type of L4 backendRefs: TCPRoute and TLSRoute backendRefs have no `filters`
/// field, and this uninhabited type makes any entry there a parse error naming the field
/// rather than a setting silently ignored.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum NoFilter {}

/// A backendRef of a TCPRoute or TLSRoute rule: a weighted Service port.
pub type L4BackendRef = BackendRef<NoFilter>;

/// A TCPRoute.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TcpRoute {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: TcpRouteSpec,
}
object!(TcpRoute, "TCPRoute");

/// The spec of a TCPRoute.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpRouteSpec {
    /// Gateways (TCP listeners) or Services the route attaches to.
    pub parent_refs: Vec<ParentReference>,
    /// Rules: exactly one in `v1`, up to 16 in `v1alpha2` (only the first one routes: a rule
    /// has nothing to match on, so the first always wins).
    pub rules: Vec<L4RouteRule>,
}

/// The rule of a TCPRoute or TLSRoute: where the bytes go.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct L4RouteRule {
    /// Optional rule name.
    pub name: Option<String>,
    /// Weighted backends, 1 to 16.
    pub backend_refs: Vec<L4BackendRef>,
}
