//! Istio security: the checks istiod's validation webhook makes that bear on enforcement.

use super::{Check, check_header_name, ensure};
use crate::config::resources::{
    AuthorizationAction, AuthorizationPolicy, PolicyAttachment, RequestAuthentication,
};

pub(in crate::config) fn check_authz(policy: &AuthorizationPolicy) -> Check {
    let spec = &policy.spec;
    let custom = spec.action == AuthorizationAction::CUSTOM;
    ensure(custom == spec.provider.is_some(), || {
        if custom {
            "spec.provider: required when action is CUSTOM".into()
        } else {
            "spec.provider: only allowed when action is CUSTOM".into()
        }
    })?;
    ensure(
        spec.attachment() != PolicyAttachment::SelectorAndTargets,
        || "spec: `selector` and `targetRef(s)` cannot be used together".into(),
    )?;
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        // An empty source or operation would match everything: Istio rejects it as a mistake.
        for (j, from) in rule.from.iter().enumerate() {
            ensure(from.source != Default::default(), || {
                format!("{at}.from[{j}].source: must not be empty")
            })?;
        }
        for (j, to) in rule.to.iter().enumerate() {
            ensure(to.operation != Default::default(), || {
                format!("{at}.to[{j}].operation: must not be empty")
            })?;
        }
        for (j, when) in rule.when.iter().enumerate() {
            ensure(!when.key.is_empty(), || {
                format!("{at}.when[{j}].key: must not be empty")
            })?;
            ensure(
                !when.values.is_empty() || !when.not_values.is_empty(),
                || format!("{at}.when[{j}]: `values` or `notValues` must be set"),
            )?;
        }
    }
    Ok(())
}

pub(in crate::config) fn check_authn(policy: &RequestAuthentication) -> Check {
    let rules = &policy.spec.jwt_rules;
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        ensure(!rule.issuer.is_empty(), || {
            format!("{at}.issuer: must not be empty")
        })?;
        for (k, h) in rule.from_headers.iter().enumerate() {
            check_header_name(&format!("{at}.fromHeaders[{k}].name"), &h.name)?;
        }
    }
    Ok(())
}
