//! Which policies are this waypoint's, and for which destinations: the one resolution of a
//! policy's `targetRef`/`targetRefs` that RequestAuthentication and AuthorizationPolicy share.
//!
//! Istio attaches waypoint policies by reference (`targetRefs`), never by label. The rules, as
//! istiod applies them to a waypoint:
//!
//! | target | applies when | otherwise |
//! |---|---|---|
//! | Gateway (gateway.networking.k8s.io) | it is this waypoint's Gateway | another waypoint's: ignored silently; absent: `TargetNotFound` |
//! | GatewayClass | the policy lives in the root namespace and the class is this waypoint's | outside the root namespace: `Ignored` |
//! | Service (core) | always (the destination is that Service) | absent: `TargetNotFound`, and kept (an index entry nothing looks up costs nothing) |
//! | ServiceEntry (networking.istio.io) | always (the destination is that ServiceEntry: one of its addresses) | absent: `TargetNotFound`, and kept |
//! | any other kind | never | `InvalidKind` |
//!
//! A target in another namespace than the policy's is `Invalid`: a policy only reaches its own
//! namespace. Both filters read their scope from one [`WaypointScope`], so they cannot disagree
//! about which Gateway is this waypoint or which namespace is the root.

use std::collections::HashSet;

use waypoint_core::config::resources::{
    GATEWAY_API_GROUP, ISTIO_NETWORKING_GROUP, PolicyTargetRef,
};
use waypoint_core::config::{Config, ResourceRef};

/// Istio's default root namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Who this waypoint is: what a policy must target to apply here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaypointScope {
    /// Istio's root namespace: only policies there may target a GatewayClass.
    pub root_namespace: String,
    /// This waypoint's Gateway (`namespace`, `name`); `None` treats every Gateway in the config
    /// as this waypoint.
    pub gateway: Option<(String, String)>,
    /// This waypoint's GatewayClass; `None` takes it from the Gateway(s) above.
    pub gateway_class: Option<String>,
}

impl Default for WaypointScope {
    fn default() -> Self {
        WaypointScope {
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
            gateway: None,
            gateway_class: None,
        }
    }
}

/// Where one policy applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PolicyTarget {
    /// Every request through this waypoint (its Gateway, or its GatewayClass).
    Waypoint,
    /// Requests whose destination is this Service.
    Service {
        /// The Service's namespace (always the policy's).
        namespace: String,
        /// The Service's name.
        name: String,
    },
    /// Requests whose destination is this ServiceEntry.
    ServiceEntry {
        /// The ServiceEntry's namespace (always the policy's).
        namespace: String,
        /// The ServiceEntry's name.
        name: String,
    },
}

impl PolicyTarget {
    /// The Service or ServiceEntry the target names, as backends name it
    /// (`ServiceBackend::service`); `None` for the waypoint itself.
    pub fn backend_ref(&self) -> Option<ResourceRef> {
        match self {
            PolicyTarget::Waypoint => None,
            PolicyTarget::Service { namespace, name } => {
                Some(ResourceRef::new("Service", namespace, name))
            }
            PolicyTarget::ServiceEntry { namespace, name } => {
                Some(ResourceRef::new("ServiceEntry", namespace, name))
            }
        }
    }
}

/// Why one target reference does not (fully) apply; reported on the policy's `Accepted`
/// condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetProblem {
    /// The condition reason (`Invalid`, `Ignored`, `TargetNotFound`, `InvalidKind`).
    pub reason: &'static str,
    /// What is wrong, starting with the field (`spec.targetRefs[1]: ...`).
    pub message: String,
}

/// The targets of one policy, and what was wrong with the others.
#[derive(Debug, Default)]
pub struct ResolvedTargets {
    /// Where the policy applies, each once, in reference order.
    pub targets: Vec<PolicyTarget>,
    /// One entry per reference that does not apply (or applies to something absent).
    pub problems: Vec<TargetProblem>,
}

impl WaypointScope {
    /// Whether `namespace`/`name` is this waypoint's Gateway.
    pub fn is_our_gateway(&self, config: &Config, namespace: &str, name: &str) -> bool {
        match &self.gateway {
            Some((gns, gname)) => gns == namespace && gname == name,
            None => config
                .resources
                .gateways
                .iter()
                .any(|g| g.metadata.namespace() == namespace && g.metadata.name == name),
        }
    }

    /// Whether `class` is this waypoint's GatewayClass.
    pub fn is_our_class(&self, config: &Config, class: &str) -> bool {
        let gateways = &config.resources.gateways;
        match (&self.gateway_class, &self.gateway) {
            (Some(ours), _) => ours == class,
            (None, Some((gns, gname))) => gateways.iter().any(|g| {
                g.metadata.namespace() == gns
                    && &g.metadata.name == gname
                    && g.spec.gateway_class_name == class
            }),
            (None, None) => gateways.iter().any(|g| g.spec.gateway_class_name == class),
        }
    }

    /// A resolver for the policies of `config`, indexing its Services and ServiceEntries once.
    pub fn resolver<'a>(&'a self, config: &'a Config) -> TargetResolver<'a> {
        TargetResolver {
            scope: self,
            config,
            services: config
                .resources
                .services
                .iter()
                .map(|s| (s.metadata.namespace(), s.metadata.name.as_str()))
                .collect(),
            entries: config
                .resources
                .service_entries
                .iter()
                .map(|s| (s.metadata.namespace(), s.metadata.name.as_str()))
                .collect(),
        }
    }
}

/// Resolves policy references against one config snapshot (see [`WaypointScope::resolver`]).
#[derive(Debug)]
pub struct TargetResolver<'a> {
    scope: &'a WaypointScope,
    config: &'a Config,
    services: HashSet<(&'a str, &'a str)>,
    entries: HashSet<(&'a str, &'a str)>,
}

impl TargetResolver<'_> {
    /// Whether the Service `namespace`/`name` is in the config.
    pub fn has_service(&self, namespace: &str, name: &str) -> bool {
        self.services.contains(&(namespace, name))
    }

    /// Whether the ServiceEntry `namespace`/`name` is in the config.
    pub fn has_service_entry(&self, namespace: &str, name: &str) -> bool {
        self.entries.contains(&(namespace, name))
    }

    /// Resolves the references of a policy in `policy_namespace`, as its
    /// [`PolicyAttachment::Targets`] lists them (field path, reference).
    ///
    /// [`PolicyAttachment::Targets`]: waypoint_core::config::resources::PolicyAttachment::Targets
    pub fn resolve(
        &self,
        policy_namespace: &str,
        targets: &[(String, &PolicyTargetRef)],
    ) -> ResolvedTargets {
        let mut resolved = ResolvedTargets::default();
        for (field, reference) in targets {
            let (target, problem) = self.resolve_one(policy_namespace, field, reference);
            resolved.problems.extend(problem);
            if let Some(target) = target
                && !resolved.targets.contains(&target)
            {
                resolved.targets.push(target);
            }
        }
        resolved
    }

    /// One reference: where it applies, and what is wrong with it (both can be set: a Service
    /// that is not in the config yet is reported and kept).
    fn resolve_one(
        &self,
        ns: &str,
        field: &str,
        reference: &PolicyTargetRef,
    ) -> (Option<PolicyTarget>, Option<TargetProblem>) {
        let problem = |reason, message: String| Some(TargetProblem { reason, message });
        if reference.namespace.as_deref().is_some_and(|t| t != ns) {
            let message = format!(
                "{field}.namespace: a policy can only target resources of its own namespace {ns}"
            );
            return (None, problem("Invalid", message));
        }
        let (scope, config) = (self.scope, self.config);
        let name = reference.name.as_str();
        match (reference.group.as_str(), reference.kind.as_str()) {
            (GATEWAY_API_GROUP, "Gateway") => {
                if scope.is_our_gateway(config, ns, name) {
                    (Some(PolicyTarget::Waypoint), None)
                } else if scope.gateway.is_none() {
                    let message = format!("{field}: no Gateway {ns}/{name} in the config");
                    (None, problem("TargetNotFound", message))
                } else {
                    // Another waypoint's Gateway: its policy, not ours.
                    (None, None)
                }
            }
            (GATEWAY_API_GROUP, "GatewayClass") => {
                if ns != scope.root_namespace {
                    let message = format!(
                        "{field}: GatewayClass targets are honoured only for policies in the \
                         root namespace {}",
                        scope.root_namespace
                    );
                    (None, problem("Ignored", message))
                } else if scope.is_our_class(config, name) {
                    (Some(PolicyTarget::Waypoint), None)
                } else {
                    // Another class's waypoints enforce it.
                    (None, None)
                }
            }
            (ISTIO_NETWORKING_GROUP, "ServiceEntry") => {
                let target = PolicyTarget::ServiceEntry {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                };
                let missing = (!self.has_service_entry(ns, name))
                    .then(|| format!("{field}: no ServiceEntry {ns}/{name} in the config"));
                (
                    Some(target),
                    missing.and_then(|m| problem("TargetNotFound", m)),
                )
            }
            ("" | "core", "Service") => {
                let target = PolicyTarget::Service {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                };
                let missing = (!self.has_service(ns, name))
                    .then(|| format!("{field}: no Service {ns}/{name} in the config"));
                (
                    Some(target),
                    missing.and_then(|m| problem("TargetNotFound", m)),
                )
            }
            (group, kind) => {
                let message = format!(
                    "{field}: target kind {group}/{kind} is not supported (Gateway, \
                     GatewayClass, Service or ServiceEntry)"
                );
                (None, problem("InvalidKind", message))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use waypoint_core::config::parse_manifests;
    use waypoint_core::config::resources::{PolicyAttachment, RequestAuthenticationSpec};

    const CONFIG: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: app}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: app}\nspec:\n  gatewayClassName: waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: other, namespace: app}\nspec:\n  gatewayClassName: other-class\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: app}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n";

    fn target(kind: &str, name: &str) -> PolicyTargetRef {
        let group = match kind {
            "Gateway" | "GatewayClass" => GATEWAY_API_GROUP,
            "ServiceEntry" => ISTIO_NETWORKING_GROUP,
            _ => "",
        };
        PolicyTargetRef {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: None,
        }
    }

    /// Resolves one reference of a policy in `ns`: (applies to, problem reason).
    fn resolve(
        scope: &WaypointScope,
        ns: &str,
        t: PolicyTargetRef,
    ) -> (Vec<PolicyTarget>, Vec<&'static str>) {
        let config = parse_manifests(CONFIG, "test.yaml").unwrap();
        let r = scope
            .resolver(&config)
            .resolve(ns, &[("spec.targetRefs[0]".to_owned(), &t)]);
        (r.targets, r.problems.iter().map(|p| p.reason).collect())
    }

    fn service(name: &str) -> PolicyTarget {
        PolicyTarget::Service {
            namespace: "app".into(),
            name: name.into(),
        }
    }

    fn entry(name: &str) -> PolicyTarget {
        PolicyTarget::ServiceEntry {
            namespace: "app".into(),
            name: name.into(),
        }
    }

    fn scope(gateway: Option<&str>, class: Option<&str>, root: &str) -> WaypointScope {
        WaypointScope {
            root_namespace: root.into(),
            gateway: gateway.map(|g| ("app".to_owned(), g.to_owned())),
            gateway_class: class.map(str::to_owned),
        }
    }

    /// (what it shows, scope, policy namespace, reference, targets, problem reasons)
    type Case = (
        &'static str,
        WaypointScope,
        &'static str,
        PolicyTargetRef,
        Vec<PolicyTarget>,
        Vec<&'static str>,
    );

    #[test]
    fn each_kind_of_reference_resolves_as_istio_attaches_waypoint_policies() {
        let any = WaypointScope::default();
        let wp = scope(Some("wp"), None, "istio-system");
        let waypoint = || vec![PolicyTarget::Waypoint];
        let cases: Vec<Case> = vec![
            (
                "any Gateway is ours without --gateway",
                any.clone(),
                "app",
                target("Gateway", "other"),
                waypoint(),
                vec![],
            ),
            (
                "our Gateway",
                wp.clone(),
                "app",
                target("Gateway", "wp"),
                waypoint(),
                vec![],
            ),
            (
                "another waypoint's Gateway is silently not ours",
                wp.clone(),
                "app",
                target("Gateway", "other"),
                vec![],
                vec![],
            ),
            (
                "a missing Gateway is reported",
                any.clone(),
                "app",
                target("Gateway", "nope"),
                vec![],
                vec!["TargetNotFound"],
            ),
            (
                "our class from the root namespace",
                wp.clone(),
                "istio-system",
                target("GatewayClass", "waypoint"),
                waypoint(),
                vec![],
            ),
            (
                "another class",
                wp.clone(),
                "istio-system",
                target("GatewayClass", "other-class"),
                vec![],
                vec![],
            ),
            (
                "a class outside the root namespace",
                wp.clone(),
                "app",
                target("GatewayClass", "waypoint"),
                vec![],
                vec!["Ignored"],
            ),
            (
                "a configured root namespace",
                scope(Some("wp"), None, "mesh-root"),
                "mesh-root",
                target("GatewayClass", "waypoint"),
                waypoint(),
                vec![],
            ),
            (
                "the default root is not root any more",
                scope(Some("wp"), None, "mesh-root"),
                "istio-system",
                target("GatewayClass", "waypoint"),
                vec![],
                vec!["Ignored"],
            ),
            (
                "a configured class",
                scope(Some("wp"), Some("other-class"), "istio-system"),
                "istio-system",
                target("GatewayClass", "other-class"),
                waypoint(),
                vec![],
            ),
            (
                "a Service",
                any.clone(),
                "app",
                target("Service", "echo"),
                vec![service("echo")],
                vec![],
            ),
            (
                "a ServiceEntry",
                any.clone(),
                "app",
                target("ServiceEntry", "ext"),
                vec![entry("ext")],
                vec![],
            ),
            (
                "a ServiceEntry is not the Service of the same name",
                any.clone(),
                "app",
                target("ServiceEntry", "echo"),
                vec![entry("echo")],
                vec!["TargetNotFound"],
            ),
            (
                "a missing Service is reported and kept",
                any.clone(),
                "app",
                target("Service", "nope"),
                vec![service("nope")],
                vec!["TargetNotFound"],
            ),
            (
                "another kind",
                any.clone(),
                "app",
                target("Deployment", "echo"),
                vec![],
                vec!["InvalidKind"],
            ),
        ];
        for (name, scope, ns, t, targets, problems) in cases {
            assert_eq!(resolve(&scope, ns, t), (targets, problems), "{name}");
        }
    }

    #[test]
    fn a_target_in_another_namespace_is_invalid() {
        let mut t = target("Service", "echo");
        t.namespace = Some("elsewhere".into());
        let (targets, problems) = resolve(&WaypointScope::default(), "app", t);
        assert!(targets.is_empty());
        assert_eq!(problems, ["Invalid"]);
    }

    #[test]
    fn repeated_targets_apply_once_and_fields_are_named_in_order() {
        let config = parse_manifests(CONFIG, "test.yaml").unwrap();
        let spec = RequestAuthenticationSpec {
            target_ref: Some(target("Service", "nope")),
            target_refs: vec![
                target("Gateway", "wp"),
                target("Gateway", "other"),
                target("Kind", "x"),
            ],
            ..Default::default()
        };
        let PolicyAttachment::Targets(targets) = spec.attachment() else {
            panic!("a spec with targets and no selector attaches by its targets");
        };
        let r = WaypointScope::default()
            .resolver(&config)
            .resolve("app", &targets);
        assert_eq!(r.targets, [service("nope"), PolicyTarget::Waypoint]);
        let messages: Vec<&str> = r.problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages[0].starts_with("spec.targetRef: no Service app/nope"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with("spec.targetRefs[2]: target kind /Kind"),
            "{messages:?}"
        );
    }
}
