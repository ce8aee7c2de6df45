//! Compiling AuthorizationPolicies into a [`PolicySet`]: deciding which ones this waypoint
//! enforces and for which destination (the shared [`crate::scope`] resolution), and compiling
//! their rules. Policies a waypoint does not enforce, and values that cannot be compiled, are
//! reported per resource.

use std::collections::HashMap;
use std::sync::Arc;

use waypoint_core::config::ResourceRef;
use waypoint_core::config::resources::{
    AuthorizationAction, AuthorizationPolicy, Object, PolicyAttachment,
};
use waypoint_core::filter::{BuildContext, BuildReport};

use super::matcher::RuleMatch;
use super::{Action, AuthzFactory, CompiledPolicy, PolicySet};

const DRY_RUN: &str = "istio.io/dry-run";

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
    let resolver = factory.scope.resolver(config);
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
        let targets = match spec.attachment() {
            PolicyAttachment::Targets(targets) => targets,
            PolicyAttachment::Selector | PolicyAttachment::SelectorAndTargets => {
                report(
                    cx,
                    &rref,
                    "Ignored",
                    "spec.selector: a policy that selects workloads by label is enforced by \
                     ztunnel or sidecars, not by a waypoint; use spec.targetRefs to attach it here"
                        .into(),
                );
                continue;
            }
            PolicyAttachment::Namespace => {
                report(
                    cx,
                    &rref,
                    "Ignored",
                    "spec: a policy with neither selector nor targetRefs applies to the workloads \
                     of its namespace (enforced by ztunnel), not to a waypoint; use \
                     spec.targetRefs"
                        .into(),
                );
                continue;
            }
        };
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

        let resolved = resolver.resolve(ns, &targets);
        for problem in resolved.problems {
            report(cx, &rref, problem.reason, problem.message);
        }
        if resolved.targets.is_empty() {
            continue;
        }

        let compiled = Arc::new(compile_policy(factory, cx, policy, rref, dry_run));
        for target in resolved.targets {
            match target.backend_ref() {
                None => set.everywhere.push(compiled.clone()),
                Some(service) => set
                    .by_service
                    .entry(service)
                    .or_default()
                    .push(compiled.clone()),
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
            let provider = factory.providers.get(&name);
            let known = provider.is_some();
            let fail_open = provider.is_some_and(|p| p.fail_open);
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
                fail_open,
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
