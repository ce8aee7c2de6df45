//! What the controller may do in the cluster: every (API group, resource, verb) its code uses,
//! for the install's ClusterRole. The end-to-end test checks every request the controller made
//! against this list, so a verb the code starts using fails a test instead of a cluster.

use super::render::PROXY_CLUSTER_ROLE;

/// One rule of the controller's ClusterRole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource (plural), or `resource/subresource`.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Restricted to these names (empty: all).
    pub resource_names: &'static [&'static str],
}

const fn rule(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Permission {
    Permission {
        group,
        resource,
        verbs,
        resource_names: &[],
    }
}

const WATCH: &[&str] = &["get", "list", "watch"];
/// Server-side apply is `patch`, and `create` when the object is missing.
const PROVISION: &[&str] = &["list", "watch", "create", "patch", "delete"];

/// The controller's permissions (its Lease needs only its own namespace; the rest is
/// cluster-wide).
pub const CONTROLLER_PERMISSIONS: &[Permission] = &[
    rule("gateway.networking.k8s.io", "gatewayclasses", WATCH),
    rule("gateway.networking.k8s.io", "gateways", WATCH),
    rule(
        "gateway.networking.k8s.io",
        "gatewayclasses/status",
        &["update"],
    ),
    rule("gateway.networking.k8s.io", "gateways/status", &["update"]),
    rule("", "pods", &["list", "watch"]),
    rule("", "serviceaccounts", PROVISION),
    rule("", "services", PROVISION),
    rule("apps", "deployments", PROVISION),
    rule(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        PROVISION,
    ),
    // Binding a role needs its permissions or `bind` on it (RBAC's escalation check).
    Permission {
        group: "rbac.authorization.k8s.io",
        resource: "clusterroles",
        verbs: &["bind"],
        resource_names: &[PROXY_CLUSTER_ROLE],
    },
    rule(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// Whether [`CONTROLLER_PERMISSIONS`] grants `verb` on `group`/`resource`.
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    CONTROLLER_PERMISSIONS
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}
