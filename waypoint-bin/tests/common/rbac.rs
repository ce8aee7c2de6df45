//! Kubernetes RBAC, as much of it as checking our manifests needs: what a request asks for
//! (a [`Permission`], read from the method and URL the API emulator logged) and what a role
//! grants (a [`Grant`], read from ClusterRole/Role objects and their bindings).
//!
//! The permissions a component needs are taken from what it did against the emulator, never
//! listed by hand, so a new API call without its rule fails the test that runs it. The matching
//! follows the API server's authorizer: verbs, API groups and resources (`plural/subresource`)
//! with `*` wildcards; `resourceNames` only for requests that name an object (never create,
//! list or watch); a Role, or a ClusterRole bound by a RoleBinding, only in its namespace.

use std::collections::BTreeSet;

use serde_json::Value;
use waypoint_kube_emulator::RecordedRequest;

/// One thing a request asks to do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Permission {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, `bind`.
    pub(crate) verb: String,
    /// API group, `""` for core.
    pub(crate) group: String,
    /// `plural` or `plural/subresource`.
    pub(crate) resource: String,
    /// The namespace of the request; `None` for cluster-scoped objects and all-namespace lists.
    pub(crate) namespace: Option<String>,
    /// The object's name, when the request names one.
    pub(crate) name: Option<String>,
}

impl Permission {
    /// A permission from its parts (tests and contracts).
    pub(crate) fn new(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Self {
        Permission {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: None,
        }
    }

    /// The same permission, on the object `name`.
    pub(crate) fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// What the request `method path?query` asks for; `None` for a URL outside the resource
    /// API (discovery, health).
    pub(crate) fn of_request(method: &str, path: &str, query: &str) -> Option<Permission> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        // `/namespaces/{ns}/{plural}...` is inside a namespace; `/namespaces/{name}[/status]`
        // is the Namespace object itself.
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, tail @ ..] if *plural != "status" => {
                (Some(*ns), [&[*plural][..], tail].concat())
            }
            _ => (None, rest.to_vec()),
        };
        let (resource, name) = match rest.as_slice() {
            [plural] => ((*plural).to_owned(), None),
            [plural, name] => ((*plural).to_owned(), Some(*name)),
            [plural, name, sub] => (format!("{plural}/{sub}"), Some(*name)),
            _ => return None,
        };
        let watch = query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1");
        let verb = match (method, name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        Some(Permission {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    /// This permission for any object of its kind (drops the name).
    pub(crate) fn unnamed(&self) -> Permission {
        Permission {
            name: None,
            ..self.clone()
        }
    }
}

/// Every permission the logged requests used. Requests the server refused as not found are
/// included: the authorizer runs before the lookup.
pub(crate) fn required_permissions(log: &[RecordedRequest]) -> BTreeSet<Permission> {
    log.iter()
        .filter_map(|r| Permission::of_request(&r.method, &r.path, &r.query))
        .collect()
}

/// One rule of a role, with where it applies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Grant {
    /// Verbs (`*` = all).
    pub(crate) verbs: BTreeSet<String>,
    /// API groups (`*` = all).
    pub(crate) groups: BTreeSet<String>,
    /// Resources (`*` = all, `*/status` = that subresource of all).
    pub(crate) resources: BTreeSet<String>,
    /// `resourceNames`; empty = any object.
    pub(crate) names: BTreeSet<String>,
    /// `None`: cluster-wide; `Some(ns)`: requests in `ns` only.
    pub(crate) namespace: Option<String>,
}

impl Grant {
    /// Whether this rule allows `p`.
    pub(crate) fn allows(&self, p: &Permission) -> bool {
        let any = |set: &BTreeSet<String>, item: &str| set.contains("*") || set.contains(item);
        let resource_matches = any(&self.resources, &p.resource)
            || p.resource
                .split_once('/')
                .is_some_and(|(_, sub)| self.resources.contains(&format!("*/{sub}")));
        let name_matches = self.names.is_empty()
            || p.name.as_ref().is_some_and(|n| self.names.contains(n))
                && !matches!(
                    p.verb.as_str(),
                    "create" | "list" | "watch" | "deletecollection"
                );
        let scope_matches = match &self.namespace {
            None => true,
            Some(ns) => p.namespace.as_ref() == Some(ns),
        };
        any(&self.verbs, &p.verb)
            && any(&self.groups, &p.group)
            && resource_matches
            && name_matches
            && scope_matches
    }
}

/// Whether any of `grants` allows `p`.
pub(crate) fn allows(grants: &[Grant], p: &Permission) -> bool {
    grants.iter().any(|g| g.allows(p))
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn named<'a>(
    manifests: &'a [Value],
    kind: &str,
    name: &str,
    ns: Option<&str>,
) -> Option<&'a Value> {
    manifests.iter().find(|o| {
        o["kind"] == kind
            && o["metadata"]["name"] == name
            && ns.is_none_or(|ns| o["metadata"]["namespace"] == ns)
    })
}

/// The rules of the `kind` (`ClusterRole` or `Role`) `name` among `manifests`, applying in
/// `namespace` (`None`: cluster-wide, as a ClusterRoleBinding makes them). A Role always
/// applies in its own namespace. Panics when the role is missing: the manifests are broken.
pub(crate) fn granted(
    manifests: &[Value],
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Vec<Grant> {
    let role_ns = (kind == "Role").then_some(namespace).flatten();
    let role = named(manifests, kind, name, role_ns)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"));
    let scope = if kind == "Role" {
        role["metadata"]["namespace"].as_str().map(str::to_owned)
    } else {
        namespace.map(str::to_owned)
    };
    role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| Grant {
            verbs: strings(&rule["verbs"]),
            groups: strings(&rule["apiGroups"]),
            resources: strings(&rule["resources"]),
            names: strings(&rule["resourceNames"]),
            namespace: scope.clone(),
        })
        .collect()
}

/// Everything the ServiceAccount `namespace/name` is granted by the bindings among
/// `manifests`.
pub(crate) fn granted_to(manifests: &[Value], namespace: &str, name: &str) -> Vec<Grant> {
    let binds_us = |binding: &Value| {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace
            })
    };
    let mut grants = Vec::new();
    for binding in manifests.iter().filter(|o| binds_us(o)) {
        let (role_kind, role_name) = (&binding["roleRef"]["kind"], &binding["roleRef"]["name"]);
        let (Some(role_kind), Some(role_name)) = (role_kind.as_str(), role_name.as_str()) else {
            panic!("a binding without roleRef: {binding}");
        };
        let scope = match binding["kind"].as_str() {
            Some("ClusterRoleBinding") => None,
            _ => binding["metadata"]["namespace"].as_str(),
        };
        grants.extend(granted(manifests, role_kind, role_name, scope));
    }
    grants
}
