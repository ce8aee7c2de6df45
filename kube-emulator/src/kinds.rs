//! Which URL a kind lives at: `apiVersion` + `kind` → group, plural, scope.
//!
//! A real API server learns this from CRDs and its built-in types; the emulator needs it only
//! where a test hands it an object (`apply`) rather than a URL, and to answer for the right
//! scope. Requests for a plural the table does not know are still served (storage is generic,
//! keyed by group and plural), with the scope the URL implies.

/// A resource type the emulator can name from an object's `apiVersion` and `kind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group; `""` for the core group.
    pub group: String,
    /// Kind (`HTTPRoute`).
    pub kind: String,
    /// The plural the URL uses (`httproutes`).
    pub plural: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl ResourceKind {
    /// A resource type; `group` is `""` for the core group.
    pub fn new(group: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceKind {
        ResourceKind {
            group: group.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        }
    }
}

const GATEWAY_API: &str = "gateway.networking.k8s.io";

/// The kinds waypoint reads or writes, and the others conformance manifests carry:
/// (group, kind, plural, namespaced).
const BUILT_IN: &[(&str, &str, &str, bool)] = &[
    (GATEWAY_API, "GatewayClass", "gatewayclasses", false),
    (GATEWAY_API, "Gateway", "gateways", true),
    (GATEWAY_API, "HTTPRoute", "httproutes", true),
    (GATEWAY_API, "GRPCRoute", "grpcroutes", true),
    (GATEWAY_API, "ReferenceGrant", "referencegrants", true),
    (GATEWAY_API, "TLSRoute", "tlsroutes", true),
    (GATEWAY_API, "TCPRoute", "tcproutes", true),
    (GATEWAY_API, "UDPRoute", "udproutes", true),
    (GATEWAY_API, "BackendTLSPolicy", "backendtlspolicies", true),
    ("", "Service", "services", true),
    ("", "Pod", "pods", true),
    ("", "Namespace", "namespaces", false),
    ("", "Secret", "secrets", true),
    ("", "ConfigMap", "configmaps", true),
    ("", "ServiceAccount", "serviceaccounts", true),
    ("apps", "Deployment", "deployments", true),
    ("discovery.k8s.io", "EndpointSlice", "endpointslices", true),
    (
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
        true,
    ),
    (
        "security.istio.io",
        "RequestAuthentication",
        "requestauthentications",
        true,
    ),
    (
        "networking.istio.io",
        "ServiceEntry",
        "serviceentries",
        true,
    ),
    (
        "networking.istio.io",
        "DestinationRule",
        "destinationrules",
        true,
    ),
    ("coordination.k8s.io", "Lease", "leases", true),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
        false,
    ),
];

/// The known resource types: the built-in table plus what a test registered.
#[derive(Clone, Debug)]
pub(crate) struct KindTable {
    kinds: Vec<ResourceKind>,
}

impl Default for KindTable {
    fn default() -> Self {
        KindTable {
            kinds: BUILT_IN
                .iter()
                .map(|(g, k, p, n)| ResourceKind::new(g, k, p, *n))
                .collect(),
        }
    }
}

impl KindTable {
    /// Adds `kind`, replacing an entry for the same group and kind.
    pub(crate) fn register(&mut self, kind: ResourceKind) {
        self.kinds
            .retain(|k| !(k.group == kind.group && k.kind == kind.kind));
        self.kinds.push(kind);
    }

    /// The type of `kind` in `group`.
    pub(crate) fn by_kind(&self, group: &str, kind: &str) -> Option<&ResourceKind> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind)
    }

    /// The type served at `plural` in `group`.
    pub(crate) fn by_plural(&self, group: &str, plural: &str) -> Option<&ResourceKind> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.plural == plural)
    }
}

/// `(group, version)` of an `apiVersion` (`v1` is the core group).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// The `apiVersion` of `group` at `version`.
pub(crate) fn join_api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_split_into_group_and_version() {
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(
            split_api_version("gateway.networking.k8s.io/v1beta1"),
            (GATEWAY_API, "v1beta1")
        );
        assert_eq!(join_api_version("", "v1"), "v1");
        assert_eq!(join_api_version("a.b", "v2"), "a.b/v2");
    }

    #[test]
    fn a_registered_kind_is_found_by_kind_and_by_plural() {
        let mut table = KindTable::default();
        assert!(table.by_kind("example.com", "Widget").is_none());
        table.register(ResourceKind::new("example.com", "Widget", "widgets", false));
        assert_eq!(
            table
                .by_plural("example.com", "widgets")
                .map(|k| k.kind.as_str()),
            Some("Widget")
        );
        assert_eq!(
            table.by_kind("", "Namespace").map(|k| k.namespaced),
            Some(false)
        );
    }
}
