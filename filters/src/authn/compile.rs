//! Compiling RequestAuthentications into per-target [`RuleSet`]s. Targets are resolved once
//! here; problems are reported per resource and field, and what is valid is served. A rule
//! whose keys cannot be set up still compiles, failing its tokens closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use waypoint_core::config::ResourceRef;
use waypoint_core::config::resources::{JwtRule, Object, PolicyAttachment, RequestAuthentication};
use waypoint_core::filter::{BuildContext, BuildReport};

use super::jwks::{JwksCache, KeySet};
use super::validate::Keys;
use super::{AuthnFilter, Location, Rule, RuleSet};
use crate::scope::{PolicyTarget, WaypointScope};

pub(super) fn compile(
    cx: &mut BuildContext<'_>,
    scope: &WaypointScope,
    cache: &JwksCache,
) -> AuthnFilter {
    let config = cx.config();
    let resolver = scope.resolver(config);
    let mut waypoint: Vec<Arc<Rule>> = Vec::new();
    let mut services: HashMap<SocketAddr, Vec<Arc<Rule>>> = HashMap::new();

    for policy in &config.resources.request_authentications {
        let policy_ref = policy.resource_ref();
        let policy_ns = policy.metadata.namespace();
        let spec = &policy.spec;
        let targets = match spec.attachment() {
            PolicyAttachment::Targets(targets) => targets,
            PolicyAttachment::Selector | PolicyAttachment::SelectorAndTargets => {
                report(
                    cx,
                    &policy_ref,
                    "Ignored",
                    "spec.selector: selector policies apply to sidecars and gateways, not \
                     waypoints; use targetRefs"
                        .into(),
                );
                continue;
            }
            PolicyAttachment::Namespace => {
                report(
                    cx,
                    &policy_ref,
                    "Ignored",
                    "spec.targetRefs: a policy without targetRefs does not apply to waypoints"
                        .into(),
                );
                continue;
            }
        };
        // Rules first: their field errors are worth reporting even when no target resolves.
        let rules = compile_rules(cx, cache, policy, &policy_ref);
        let resolved = resolver.resolve(policy_ns, &targets);
        for problem in resolved.problems {
            report(cx, &policy_ref, problem.reason, problem.message);
        }
        if rules.is_empty() {
            continue;
        }

        for target in resolved.targets {
            match target.backend_ref() {
                None => waypoint.extend(rules.iter().cloned()),
                Some(service) => {
                    let (namespace, name) = (&service.namespace, &service.name);
                    // JWT rules are looked up by destination address: a Service without a
                    // cluster IP (headless), or a ServiceEntry without addresses, is never a
                    // waypoint destination.
                    let addresses: Vec<SocketAddr> = config
                        .backends()
                        .filter(|b| b.service == service)
                        .flat_map(|b| b.cluster_ips.iter().map(|ip| SocketAddr::new(*ip, b.port)))
                        .collect();
                    // A missing target was reported by the resolver already.
                    let present = match target {
                        PolicyTarget::ServiceEntry { .. } => {
                            resolver.has_service_entry(namespace, name)
                        }
                        _ => resolver.has_service(namespace, name),
                    };
                    if addresses.is_empty() && present {
                        report(
                            cx,
                            &policy_ref,
                            "TargetNotFound",
                            format!(
                                "{} {namespace}/{name} has no cluster IP or address: the policy \
                                 cannot apply to it at a waypoint",
                                service.kind
                            ),
                        );
                    }
                    for address in addresses {
                        services
                            .entry(address)
                            .or_default()
                            .extend(rules.iter().cloned());
                    }
                }
            }
        }
    }

    let by_destination = services
        .into_iter()
        .map(|(address, mut rules)| {
            let mut all = waypoint.clone();
            all.append(&mut rules);
            (address, Arc::new(RuleSet::new(all)))
        })
        .collect();
    AuthnFilter {
        waypoint: (!waypoint.is_empty()).then(|| Arc::new(RuleSet::new(waypoint))),
        by_destination,
    }
}

fn compile_rules(
    cx: &mut BuildContext<'_>,
    cache: &JwksCache,
    policy: &RequestAuthentication,
    policy_ref: &ResourceRef,
) -> Vec<Arc<Rule>> {
    let mut rules = Vec::new();
    for (i, spec) in policy.spec.jwt_rules.iter().enumerate() {
        let field = format!("spec.jwtRules[{i}]");
        if spec.issuer.is_empty() {
            report(
                cx,
                policy_ref,
                "Invalid",
                format!("{field}.issuer: required"),
            );
            continue;
        }
        let rule = compile_rule(cx, cache, spec, policy_ref, &field);
        rules.push(Arc::new(rule));
    }
    rules
}

fn compile_rule(
    cx: &mut BuildContext<'_>,
    cache: &JwksCache,
    spec: &JwtRule,
    policy_ref: &ResourceRef,
    field: &str,
) -> Rule {
    let keys = if let Some(jwks) = &spec.jwks {
        match KeySet::parse(jwks.as_bytes()) {
            Ok(keys) => Keys::Inline(Arc::new(keys)),
            Err(e) => {
                report(
                    cx,
                    policy_ref,
                    "Invalid",
                    format!(
                        "{field}.jwks: {e}; tokens of issuer {} are refused",
                        spec.issuer
                    ),
                );
                Keys::Unavailable
            }
        }
    } else {
        let (what, remote) = match &spec.jwks_uri {
            Some(uri) => ("jwksUri", cache.remote(uri)),
            None => ("issuer (OpenID discovery)", cache.discovered(&spec.issuer)),
        };
        match remote {
            Ok(remote) => {
                remote.prefetch();
                Keys::Remote(remote)
            }
            Err(e) => {
                report(
                    cx,
                    policy_ref,
                    "Unsupported",
                    format!(
                        "{field}.{what}: {e}; tokens of issuer {} are refused",
                        spec.issuer
                    ),
                );
                Keys::Unavailable
            }
        }
    };

    let fetch_timeout = match spec.timeout.as_deref() {
        None => cache.settings().fetch_timeout,
        Some(text) => parse_duration(text).unwrap_or_else(|| {
            report(
                cx,
                policy_ref,
                "Invalid",
                format!(
                    "{field}.timeout: {text:?} is not a duration like \"5s\"; using the default"
                ),
            );
            cache.settings().fetch_timeout
        }),
    };

    let mut locations = Vec::new();
    for (h, header) in spec.from_headers.iter().enumerate() {
        match header_name(&header.name) {
            Some(name) => locations.push(Location::Header {
                name,
                prefix: header.prefix.clone(),
            }),
            None => report(
                cx,
                policy_ref,
                "Invalid",
                format!(
                    "{field}.fromHeaders[{h}].name: {:?} is not a header name",
                    header.name
                ),
            ),
        }
    }
    locations.extend(
        spec.from_params
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| Location::Param(p.clone())),
    );
    locations.extend(
        spec.from_cookies
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| Location::Cookie(c.clone())),
    );
    if spec.from_headers.is_empty() && spec.from_params.is_empty() && spec.from_cookies.is_empty() {
        // Envoy's default locations when a provider names none.
        locations.push(Location::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        });
        locations.push(Location::Param("access_token".into()));
    }

    let output_payload = spec.output_payload_to_header.as_deref().and_then(|name| {
        let parsed = header_name(name);
        if parsed.is_none() {
            report(
                cx,
                policy_ref,
                "Invalid",
                format!("{field}.outputPayloadToHeader: {name:?} is not a header name"),
            );
        }
        parsed
    });
    let mut output_claims = Vec::new();
    for (c, copy) in spec.output_claim_to_headers.iter().enumerate() {
        match header_name(&copy.header) {
            Some(name) if !copy.claim.is_empty() => output_claims.push((name, copy.claim.clone())),
            _ => report(
                cx,
                policy_ref,
                "Invalid",
                format!("{field}.outputClaimToHeaders[{c}]: needs a valid header name and a claim"),
            ),
        }
    }

    Rule {
        issuer: spec.issuer.clone(),
        audiences: spec.audiences.clone(),
        keys,
        fetch_timeout,
        locations,
        output_payload,
        forward_original_token: spec.forward_original_token,
        output_claims,
    }
}

fn header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).ok()
}

/// A protobuf JSON duration: seconds with an optional fraction and an `s` (`5s`, `0.5s`).
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs > 0.0 && secs <= 3600.0).then(|| Duration::from_secs_f64(secs))
}

fn report(cx: &mut BuildContext<'_>, resource: &ResourceRef, reason: &str, message: String) {
    cx.report(BuildReport {
        resource: resource.clone(),
        condition: "Accepted".into(),
        reason: reason.into(),
        message,
    });
}
