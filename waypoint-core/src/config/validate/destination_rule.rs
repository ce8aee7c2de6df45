//! Istio's validation of DestinationRules, as far as a waypoint reads them: the host, the
//! namespaces it is exported to, port overrides and subsets; each settings block checks its
//! own fields (`resources/destination_rule/*`), and this adds the path to the block.

use std::collections::HashSet;

use super::{Check, check_hostname, ensure};
use crate::config::resources::{DestinationRule, Object, PortTrafficPolicy, TrafficPolicy};

/// Checks a DestinationRule; the message names the field at fault.
pub(crate) fn check_destination_rule(rule: &DestinationRule) -> Check {
    let spec = &rule.spec;
    ensure(!spec.host.is_empty(), || "spec.host: required".into())?;
    if spec.host != "*" {
        // Short names (`reviews`) and FQDNs alike are DNS names; `*.` only as a prefix.
        check_hostname("spec.host", &spec.host, true)?;
    }
    check_export_to(&spec.export_to)?;
    if let Some(policy) = &spec.traffic_policy {
        check_policy("spec.trafficPolicy", policy)?;
    }
    let mut names = HashSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        ensure(!subset.name.is_empty(), || format!("{at}.name: required"))?;
        ensure(names.insert(subset.name.as_str()), || {
            format!("{at}.name: duplicate subset `{}`", subset.name)
        })?;
        if let Some(policy) = &subset.traffic_policy {
            check_policy(&format!("{at}.trafficPolicy"), policy)?;
        }
    }
    // Resource names are checked by the API server; here only that the rule can be named.
    ensure(!rule.metadata().name.is_empty(), || {
        "metadata.name: required".into()
    })
}

/// `exportTo`: `*`, `.`, or namespace names; `*` alone.
fn check_export_to(export_to: &[String]) -> Check {
    for (i, e) in export_to.iter().enumerate() {
        let at = format!("spec.exportTo[{i}]");
        if e == "*" || e == "." {
            continue;
        }
        let label = !e.is_empty()
            && e.len() <= 63
            && e.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !e.starts_with('-')
            && !e.ends_with('-');
        ensure(label, || {
            format!("{at}: `{e}` is neither `*`, `.` nor a namespace name")
        })?;
    }
    ensure(
        !(export_to.len() > 1 && export_to.iter().any(|e| e == "*")),
        || "spec.exportTo: `*` must be alone".into(),
    )
}

fn check_policy(at: &str, policy: &TrafficPolicy) -> Check {
    check_blocks(at, &as_port_policy(policy))?;
    ensure(policy.proxy_protocol.is_none(), || {
        format!("{at}.proxyProtocol: not supported by waypoint")
    })?;
    ensure(policy.tunnel.is_none(), || {
        format!("{at}.tunnel: not supported by waypoint")
    })?;
    let mut ports = HashSet::new();
    for (i, p) in policy.port_level_settings.iter().enumerate() {
        let at = format!("{at}.portLevelSettings[{i}]");
        let number = p.port.as_ref().map_or(0, |p| p.number);
        ensure((1..=65535).contains(&number), || {
            format!("{at}.port.number: required, 1-65535")
        })?;
        ensure(ports.insert(number), || {
            format!("{at}.port.number: {number} appears twice")
        })?;
        check_blocks(&at, p)?;
    }
    Ok(())
}

/// The four blocks a host-wide policy and a port override share.
fn as_port_policy(policy: &TrafficPolicy) -> PortTrafficPolicy {
    PortTrafficPolicy {
        port: None,
        load_balancer: policy.load_balancer.clone(),
        connection_pool: policy.connection_pool.clone(),
        outlier_detection: policy.outlier_detection.clone(),
        tls: policy.tls.clone(),
    }
}

fn check_blocks(at: &str, p: &PortTrafficPolicy) -> Check {
    let with_path = |block: &str, r: Result<(), String>| r.map_err(|e| format!("{at}.{block}.{e}"));
    if let Some(b) = &p.load_balancer {
        with_path("loadBalancer", b.check())?;
    }
    if let Some(b) = &p.connection_pool {
        with_path("connectionPool", b.check())?;
    }
    if let Some(b) = &p.outlier_detection {
        with_path("outlierDetection", b.check())?;
    }
    if let Some(b) = &p.tls {
        with_path("tls", b.check())?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn check(spec: &str) -> Check {
        let yaml = format!("metadata: {{name: r, namespace: shop}}\nspec: {spec}\n");
        check_destination_rule(&serde_saphyr::from_str(&yaml).unwrap())
    }

    #[test]
    fn hosts_short_qualified_and_wildcard_are_accepted() {
        for host in [
            "reviews",
            "reviews.shop.svc.cluster.local",
            "*.example.com",
            "*",
        ] {
            assert_eq!(check(&format!("{{host: \"{host}\"}}")), Ok(()), "{host}");
        }
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            ("{host: \"\"}", "spec.host: required"),
            ("{host: \"Bad_Host\"}", "spec.host:"),
            (
                "{host: r, exportTo: [\"*\", shop]}",
                "spec.exportTo: `*` must be alone",
            ),
            ("{host: r, exportTo: [\"Shop\"]}", "spec.exportTo[0]:"),
            (
                "{host: r, trafficPolicy: {portLevelSettings: [{}]}}",
                "spec.trafficPolicy.portLevelSettings[0].port.number",
            ),
            (
                "{host: r, trafficPolicy: {portLevelSettings: [{port: {number: 80}}, {port: {number: 80}}]}}",
                "spec.trafficPolicy.portLevelSettings[1].port.number: 80 appears twice",
            ),
            (
                "{host: r, subsets: [{name: v1}, {name: v1}]}",
                "spec.subsets[1].name: duplicate",
            ),
            (
                "{host: r, subsets: [{name: \"\"}]}",
                "spec.subsets[0].name: required",
            ),
            (
                "{host: r, trafficPolicy: {tunnel: {protocol: CONNECT}}}",
                "spec.trafficPolicy.tunnel: not supported",
            ),
        ];
        for (spec, want) in cases {
            let got = check(spec).unwrap_err();
            assert!(got.starts_with(want), "{spec}: {got}");
        }
    }
}
