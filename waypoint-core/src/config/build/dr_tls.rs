//! The `tls` blocks of DestinationRules compiled into TLS client configurations: the files and
//! Secrets they name are read here, once per config build, so a rule whose material is missing
//! or unusable is rejected with the field named (and `waypoint check` says so), and the request
//! path never reads a file. A rule with `insecureSkipVerify` is logged, since it turns
//! verification off for every port it applies to.
//!
//! `credentialName` Secrets are read from the waypoint's own namespace (its Gateway's, from
//! `--gateway`), Istio's rule for the proxy using them; without `--gateway` the waypoint's
//! namespace is unknown and the rule's own namespace stands in for it.

use super::{MeshOptions, invalid};
use crate::config::ResourceStatus;
use crate::config::resources::{ClientTlsSettings, DestinationRule, Object, Secret, Sourced};
use crate::upstream::{Origination, SecretScope};

/// Compiles every `SIMPLE`/`MUTUAL` block of `rules` (host-wide, per port, per subset); a rule
/// with a block that cannot be compiled is left out and its status turned to invalid.
pub(super) fn compile(
    rules: Vec<Sourced<DestinationRule>>,
    secrets: &[Sourced<Secret>],
    mesh: &MeshOptions,
    statuses: &mut [ResourceStatus],
) -> Vec<Sourced<DestinationRule>> {
    rules
        .into_iter()
        .filter_map(|mut rule| {
            let namespace = match &mesh.gateway {
                Some((ns, _)) => ns.clone(),
                None => rule.metadata().namespace().to_owned(),
            };
            let scope = SecretScope {
                namespace: &namespace,
                secrets,
            };
            let rref = rule.resource_ref();
            match compile_rule(&mut rule.resource, scope) {
                Ok(()) => Some(rule),
                Err(why) => {
                    let message = format!("{rref}: {why}");
                    tracing::warn!(rule = %rref, reason = %why, "DestinationRule rejected");
                    for status in statuses
                        .iter_mut()
                        .filter(|s| s.resource == rref && s.source == rule.source)
                    {
                        *status = invalid(rref.clone(), &rule.source, message.clone());
                    }
                    None
                }
            }
        })
        .collect()
}

/// Every `tls` block of the rule with its field path.
fn compile_rule(rule: &mut DestinationRule, scope: SecretScope<'_>) -> Result<(), String> {
    let rref = rule.resource_ref();
    let spec = &mut rule.spec;
    let mut blocks: Vec<(String, &mut ClientTlsSettings)> = Vec::new();
    let mut policies = Vec::new();
    if let Some(p) = spec.traffic_policy.as_mut() {
        policies.push(("spec.trafficPolicy".to_owned(), p));
    }
    for (i, subset) in spec.subsets.iter_mut().enumerate() {
        if let Some(p) = subset.traffic_policy.as_mut() {
            policies.push((format!("spec.subsets[{i}].trafficPolicy"), p));
        }
    }
    for (at, policy) in policies {
        if let Some(tls) = policy.tls.as_mut() {
            blocks.push((format!("{at}.tls"), tls));
        }
        for (i, port) in policy.port_level_settings.iter_mut().enumerate() {
            if let Some(tls) = port.tls.as_mut() {
                blocks.push((format!("{at}.portLevelSettings[{i}].tls"), tls));
            }
        }
    }
    for (at, tls) in blocks {
        tls.compiled.0 = None;
        if !tls.originates() {
            continue;
        }
        if tls.insecure_skip_verify == Some(true) {
            tracing::warn!(rule = %rref, field = %at,
                "insecureSkipVerify: the server's certificate is not verified");
        }
        let origination =
            Origination::build(&tls.spec(), Some(scope)).map_err(|e| format!("{at}.{e}"))?;
        tls.compiled.0 = Some(origination);
    }
    Ok(())
}
