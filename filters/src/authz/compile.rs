//! Compiling AuthorizationPolicies into a [`PolicySet`]: deciding which ones this waypoint
//! enforces and for which destination, and compiling their rules. Policies a waypoint does not
//! enforce, and values that cannot be compiled, are reported per resource.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use waypoint_core::config::ResourceRef;
use waypoint_core::config::resources::{
    AuthorizationAction, AuthorizationPolicy, Object, PolicyTargetRef,
};
use waypoint_core::filter::{BuildContext, BuildReport};

use super::matcher::RuleMatch;
use super::{Action, AuthzFactory, CompiledPolicy, PolicySet};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const ISTIO_NETWORKING_GROUP: &str = "networking.istio.io";
const DRY_RUN: &str = "istio.io/dry-run";

/// Where one policy applies.
enum Target {
    /// Every request through this waypoint (its Gateway, or its GatewayClass).
    Everywhere,
    /// Requests whose destination is the Service `namespace`/`name`.
    Service(String, String),
}

fn report(cx: &mut BuildContext<'_>, resource: &ResourceRef, reason: &str, message: String) {
    tracing::warn!(%resource, reason, "{message}");
    cx.report(BuildReport {
        resource: resource.clone(),
        condition: "Accepted".into(),
        reason: reason.into(),
        message,
    });
}

pub(super) fn compile(factory: &AuthzFactory, cx: &mut BuildContext<'_>) -> PolicySet {
    let config = cx.config();
    let gateways: Vec<(&str, &str, &str)> = config
        .resources
        .gateways
        .iter()
        .map(|g| {
            (
                g.metadata.namespace(),
                g.metadata.name.as_str(),
                g.spec.gateway_class_name.as_str(),
            )
        })
        .collect();
    let services: HashSet<(&str, &str)> = config
        .resources
        .services
        .iter()
        .map(|s| (s.metadata.namespace(), s.metadata.name.as_str()))
        .collect();
    let our_gateway = |ns: &str, name: &str| match &factory.gateway {
        Some((gns, gname)) => gns == ns && gname == name,
        None => gateways
            .iter()
            .any(|(gns, gname, _)| *gns == ns && *gname == name),
    };
    let our_class = |class: &str| match (&factory.gateway_class, &factory.gateway) {
        (Some(c), _) => c == class,
        (None, Some((gns, gname))) => gateways
            .iter()
            .any(|(ns, name, c)| ns == gns && name == gname && *c == class),
        (None, None) => gateways.iter().any(|(_, _, c)| *c == class),
    };

    let mut set = PolicySet {
        everywhere: Vec::new(),
        by_service: HashMap::new(),
        normalization: factory.normalization,
        xff_trusted_hops: factory.xff_trusted_hops,
    };
    for policy in &config.resources.authorization_policies {
        let rref = policy.resource_ref();
        let ns = policy.metadata.namespace();
        let spec = &policy.spec;
        if spec.selector.is_some() {
            report(
                cx,
                &rref,
                "Ignored",
                "spec.selector: a policy that selects workloads by label is enforced by ztunnel \
                 or sidecars, not by a waypoint; use spec.targetRefs to attach it here"
                    .into(),
            );
            continue;
        }
        let refs: Vec<&PolicyTargetRef> = spec.target_ref.iter().chain(&spec.target_refs).collect();
        if refs.is_empty() {
            report(
                cx,
                &rref,
                "Ignored",
                "spec: a policy with neither selector nor targetRefs applies to the workloads of \
                 its namespace (enforced by ztunnel), not to a waypoint; use spec.targetRefs"
                    .into(),
            );
            continue;
        }
        let dry_run = policy
            .metadata
            .annotations
            .get(DRY_RUN)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if dry_run && spec.action == AuthorizationAction::CUSTOM {
            report(
                cx,
                &rref,
                "Ignored",
                format!(
                    "metadata.annotations[{DRY_RUN}]: dry-run is not supported for CUSTOM \
                     policies (as in Istio); the policy is not enforced"
                ),
            );
            continue;
        }

        let mut targets = Vec::new();
        for (i, t) in refs.iter().enumerate() {
            let at = if spec.target_ref.is_some() && i == 0 {
                "spec.targetRef".to_owned()
            } else {
                let i = if spec.target_ref.is_some() { i - 1 } else { i };
                format!("spec.targetRefs[{i}]")
            };
            if t.namespace.as_deref().is_some_and(|tns| tns != ns) {
                report(
                    cx,
                    &rref,
                    "Invalid",
                    format!(
                        "{at}.namespace: a policy can only target resources of its own namespace {ns}"
                    ),
                );
                continue;
            }
            let group = t.group.as_str();
            match t.kind.as_str() {
                "Gateway" if group == GATEWAY_GROUP => {
                    if our_gateway(ns, &t.name) {
                        targets.push(Target::Everywhere);
                    } else if factory.gateway.is_none() {
                        report(
                            cx,
                            &rref,
                            "TargetNotFound",
                            format!("{at}: no Gateway {ns}/{} in the config", t.name),
                        );
                    }
                }
                "GatewayClass" if group == GATEWAY_GROUP => {
                    if ns != factory.root_namespace {
                        report(
                            cx,
                            &rref,
                            "Ignored",
                            format!(
                                "{at}: GatewayClass targets are honoured only for policies in the \
                                 root namespace {}",
                                factory.root_namespace
                            ),
                        );
                    } else if our_class(&t.name) {
                        targets.push(Target::Everywhere);
                    }
                }
                "Service" if group.is_empty() || group == "core" => {
                    if !services.contains(&(ns, t.name.as_str())) {
                        report(
                            cx,
                            &rref,
                            "TargetNotFound",
                            format!("{at}: no Service {ns}/{} in the config", t.name),
                        );
                    }
                    // Kept even when absent: the Service may come with the next snapshot and
                    // the index makes unmatched entries free.
                    targets.push(Target::Service(ns.to_owned(), t.name.clone()));
                }
                "ServiceEntry" if group == ISTIO_NETWORKING_GROUP => {
                    // Without ServiceEntry resources, destinations resolve to Services only: a
                    // ServiceEntry target applies to the Service of the same namespace and name.
                    targets.push(Target::Service(ns.to_owned(), t.name.clone()));
                }
                kind => report(
                    cx,
                    &rref,
                    "InvalidKind",
                    format!(
                        "{at}: target kind {group}/{kind} is not supported (Gateway, \
                         GatewayClass, Service or ServiceEntry)"
                    ),
                ),
            }
        }
        if targets.is_empty() {
            continue;
        }

        let compiled = Arc::new(compile_policy(factory, cx, policy, rref, dry_run));
        let mut placed_everywhere = false;
        let mut placed = HashSet::new();
        for target in targets {
            match target {
                Target::Everywhere if !placed_everywhere => {
                    placed_everywhere = true;
                    set.everywhere.push(compiled.clone());
                }
                Target::Service(ns, name) if placed.insert((ns.clone(), name.clone())) => set
                    .by_service
                    .entry(ns)
                    .or_default()
                    .entry(name)
                    .or_default()
                    .push(compiled.clone()),
                _ => {}
            }
        }
    }
    set
}

fn compile_policy(
    factory: &AuthzFactory,
    cx: &mut BuildContext<'_>,
    policy: &AuthorizationPolicy,
    rref: ResourceRef,
    dry_run: bool,
) -> CompiledPolicy {
    let spec = &policy.spec;
    let action = match spec.action {
        AuthorizationAction::ALLOW => Action::Allow,
        AuthorizationAction::DENY => Action::Deny,
        AuthorizationAction::AUDIT => Action::Audit,
        AuthorizationAction::CUSTOM => {
            let name = spec
                .provider
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default();
            let known = factory.providers.contains_key(&name);
            if !known {
                report(
                    cx,
                    &rref,
                    "ProviderNotFound",
                    format!(
                        "spec.provider.name: no ext_authz provider {name:?} is configured; \
                         requests matching this policy are denied"
                    ),
                );
            }
            Action::Custom {
                provider: name,
                known,
            }
        }
    };
    // A rule that cannot be compiled must not widen access: it matches everything in policies
    // that restrict (DENY, CUSTOM) and nothing in policies that grant (ALLOW) or only mark (AUDIT).
    let broken = matches!(action, Action::Deny | Action::Custom { .. });
    let rules = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            RuleMatch::compile(&format!("spec.rules[{i}]"), rule).unwrap_or_else(|why| {
                let effect = if broken {
                    "it matches every request"
                } else {
                    "it matches no request"
                };
                report(cx, &rref, "Invalid", format!("{why}; {effect}"));
                RuleMatch::Fixed(broken)
            })
        })
        .collect();
    CompiledPolicy {
        resource: rref,
        action,
        dry_run,
        rules,
    }
}
