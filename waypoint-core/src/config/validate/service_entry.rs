//! ServiceEntry validation, as istiod's (`pkg/config/validation` `ValidateServiceEntry`)
//! rejects: what it reports as errors is an error here, with the field named; what it only
//! warns about is accepted. One addition: `DYNAMIC_DNS` (a per-request forward proxy) is
//! refused because this waypoint does not implement it, and serving such an entry with another
//! resolution would send traffic somewhere the operator did not ask for.

use std::collections::HashSet;
use std::net::IpAddr;

use super::{Check, check_hostname, ensure};
use crate::config::resources::{Resolution, ServiceEntry, ServiceEntryPort};

/// Protocols Istio knows for a ServiceEntry port (`protocol.Parse`), upper-cased.
const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "HTTP2",
    "HTTP_PROXY",
    "GRPC",
    "GRPC-WEB",
    "TCP",
    "TLS",
    "MONGO",
    "MYSQL",
    "REDIS",
    "UDP",
];

/// Whether a port's protocol lets a proxy tell hosts apart (by `Host`/`:authority` or SNI).
fn names_host(port: &ServiceEntryPort) -> bool {
    matches!(
        port.protocol.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTPS" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-WEB" | "TLS"
    )
}

fn check_port_number(at: &str, n: u32) -> Check {
    ensure((1..=65535).contains(&n), || {
        format!("{at}: must be 1-65535")
    })
}

/// An RFC 1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63): Istio's port names.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An IP address or a CIDR; `Some(true)` for a CIDR, `None` when it is neither.
fn address_kind(a: &str) -> Option<bool> {
    if a.parse::<IpAddr>().is_ok() {
        Some(false)
    } else if let Some((ip, bits)) = a.split_once('/')
        && let Ok(ip) = ip.parse::<IpAddr>()
        && let Ok(bits) = bits.parse::<u8>()
        && bits <= if ip.is_ipv4() { 32 } else { 128 }
    {
        Some(true)
    } else {
        None
    }
}

pub(in crate::config) fn check_service_entry(entry: &ServiceEntry) -> Check {
    let spec = &entry.spec;
    ensure(!spec.hosts.is_empty(), || {
        "spec.hosts: at least one host is required".into()
    })?;
    for (i, host) in spec.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{i}]");
        ensure(host != "*", || {
            format!("{at}: `*` (every host) is not allowed")
        })?;
        check_hostname(&at, host, true)?;
    }
    ensure(
        spec.workload_selector.is_none() || spec.endpoints.is_empty(),
        || "spec.workloadSelector: only one of workloadSelector or endpoints may be set".into(),
    )?;
    for (i, address) in spec.addresses.iter().enumerate() {
        let at = format!("spec.addresses[{i}]");
        let cidr = address_kind(address)
            .ok_or_else(|| format!("{at}: `{address}` is not an IP address or CIDR"))?;
        ensure(
            !cidr || matches!(spec.resolution, Resolution::None | Resolution::Static),
            || format!("{at}: CIDR addresses are allowed only with resolution NONE or STATIC"),
        )?;
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        check_port_number(&format!("{at}.number"), port.number)?;
        ensure(numbers.insert(port.number), || {
            format!("{at}.number: port {} is already defined", port.number)
        })?;
        ensure(dns_label(&port.name), || {
            format!(
                "{at}.name: `{}` is not a valid port name (an RFC 1123 label)",
                port.name
            )
        })?;
        ensure(names.insert(port.name.as_str()), || {
            format!("{at}.name: port name `{}` is already defined", port.name)
        })?;
        if let Some(target) = port.target_port {
            check_port_number(&format!("{at}.targetPort"), target)?;
        }
        let protocol = port.protocol.to_ascii_uppercase();
        ensure(
            port.protocol.is_empty() || PROTOCOLS.contains(&protocol.as_str()),
            || format!("{at}.protocol: unrecognized protocol `{}`", port.protocol),
        )?;
    }
    for (i, e) in spec.endpoints.iter().enumerate() {
        let at = format!("spec.endpoints[{i}]");
        for (name, number) in &e.ports {
            ensure(names.contains(name.as_str()), || {
                format!("{at}.ports[{name}]: no port named `{name}` in spec.ports")
            })?;
            check_port_number(&format!("{at}.ports[{name}]"), *number)?;
        }
    }
    match spec.resolution {
        Resolution::None => ensure(spec.endpoints.is_empty(), || {
            "spec.endpoints: no endpoints may be given with resolution NONE".into()
        })?,
        Resolution::Static => {
            for (i, e) in spec.endpoints.iter().enumerate() {
                ensure(e.address.parse::<IpAddr>().is_ok(), || {
                    format!(
                        "spec.endpoints[{i}].address: `{}` is not an IP address (resolution STATIC)",
                        e.address
                    )
                })?;
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if spec.endpoints.is_empty() {
                for (i, host) in spec.hosts.iter().enumerate() {
                    ensure(!host.starts_with("*."), || {
                        format!(
                            "spec.hosts[{i}]: hosts resolved in DNS (no endpoints given) cannot \
                             be wildcards"
                        )
                    })?;
                }
            }
            ensure(
                spec.resolution == Resolution::Dns || spec.endpoints.len() <= 1,
                || "spec.endpoints: at most one endpoint with resolution DNS_ROUND_ROBIN".into(),
            )?;
            for (i, e) in spec.endpoints.iter().enumerate() {
                let at = format!("spec.endpoints[{i}].address");
                if e.address.parse::<IpAddr>().is_err() {
                    check_hostname(&at, &e.address, false)?;
                }
            }
        }
        Resolution::DynamicDns => {
            return Err("spec.resolution: DYNAMIC_DNS is not supported by this waypoint".into());
        }
    }
    if spec.resolution != Resolution::None && spec.hosts.len() > 1 {
        for (i, port) in spec.ports.iter().enumerate() {
            ensure(names_host(port), || {
                format!(
                    "spec.ports[{i}].protocol: several hosts need HTTP or TLS ports (nothing \
                     else tells the hosts apart), unless resolution is NONE"
                )
            })?;
        }
    }
    for (i, ns) in spec.export_to.iter().enumerate() {
        ensure(
            matches!(ns.as_str(), "." | "*" | "~") || dns_label(ns),
            || format!("spec.exportTo[{i}]: `{ns}` is not `.`, `*`, `~` or a namespace name"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn entry(spec: serde_json::Value) -> Result<ServiceEntry, String> {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "se", "namespace": "egress"},
            "spec": spec,
        }))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn each_invalid_service_entry_is_rejected_with_the_field_named() {
        use serde_json::json;
        let port = json!([{"number": 443, "name": "https", "protocol": "TLS"}]);
        // (what it shows, spec, the error's start; None = valid)
        let cases: Vec<(&str, serde_json::Value, Option<&str>)> = vec![
            (
                "a plain external entry",
                json!({"hosts": ["api.example.com"], "ports": port, "resolution": "DNS"}),
                None,
            ),
            (
                "static endpoints and VIPs",
                json!({"hosts": ["api.example.com"], "addresses": ["240.0.0.1", "10.9.0.0/16"],
                       "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}],
                       "resolution": "STATIC",
                       "endpoints": [{"address": "10.0.0.1", "ports": {"http": 9090}}]}),
                None,
            ),
            (
                "no hosts",
                json!({"ports": port}),
                Some("spec.hosts: at least one"),
            ),
            (
                "every host",
                json!({"hosts": ["*"], "ports": port}),
                Some("spec.hosts[0]: `*`"),
            ),
            (
                "an invalid host",
                json!({"hosts": ["API..example.com"], "ports": port}),
                Some("spec.hosts[0]: `API..example.com` is not a valid hostname"),
            ),
            (
                "selector and endpoints",
                json!({"hosts": ["a.example"], "ports": port, "resolution": "STATIC",
                       "workloadSelector": {"labels": {"app": "x"}},
                       "endpoints": [{"address": "10.0.0.1"}]}),
                Some("spec.workloadSelector: only one"),
            ),
            (
                "a bad address",
                json!({"hosts": ["a.example"], "ports": port, "addresses": ["nope"]}),
                Some("spec.addresses[0]: `nope` is not an IP address or CIDR"),
            ),
            (
                "a CIDR with DNS",
                json!({"hosts": ["a.example"], "ports": port, "addresses": ["10.0.0.0/8"],
                       "resolution": "DNS"}),
                Some("spec.addresses[0]: CIDR addresses"),
            ),
            (
                "port zero",
                json!({"hosts": ["a.example"], "ports": [{"number": 0, "name": "x"}]}),
                Some("spec.ports[0].number: must be 1-65535"),
            ),
            (
                "a port number twice",
                json!({"hosts": ["a.example"], "ports": [{"number": 80, "name": "a"}, {"number": 80, "name": "b"}]}),
                Some("spec.ports[1].number: port 80 is already defined"),
            ),
            (
                "a port name twice",
                json!({"hosts": ["a.example"], "ports": [{"number": 80, "name": "a"}, {"number": 81, "name": "a"}]}),
                Some("spec.ports[1].name: port name `a` is already defined"),
            ),
            (
                "a bad port name",
                json!({"hosts": ["a.example"], "ports": [{"number": 80, "name": "Web_1"}]}),
                Some("spec.ports[0].name: `Web_1`"),
            ),
            (
                "a bad target port",
                json!({"hosts": ["a.example"], "ports": [{"number": 80, "name": "a", "targetPort": 70000}]}),
                Some("spec.ports[0].targetPort: must be 1-65535"),
            ),
            (
                "an unknown protocol",
                json!({"hosts": ["a.example"], "ports": [{"number": 80, "name": "a", "protocol": "SMTP"}]}),
                Some("spec.ports[0].protocol: unrecognized protocol `SMTP`"),
            ),
            (
                "endpoints with NONE",
                json!({"hosts": ["a.example"], "ports": port, "endpoints": [{"address": "10.0.0.1"}]}),
                Some("spec.endpoints: no endpoints may be given with resolution NONE"),
            ),
            (
                "a name with STATIC",
                json!({"hosts": ["a.example"], "ports": port, "resolution": "STATIC",
                       "endpoints": [{"address": "db.example"}]}),
                Some("spec.endpoints[0].address: `db.example` is not an IP address"),
            ),
            (
                "an endpoint port the entry does not have",
                json!({"hosts": ["a.example"], "ports": port, "resolution": "STATIC",
                       "endpoints": [{"address": "10.0.0.1", "ports": {"http": 80}}]}),
                Some("spec.endpoints[0].ports[http]: no port named `http`"),
            ),
            (
                "a wildcard resolved in DNS",
                json!({"hosts": ["*.example.com"], "ports": port, "resolution": "DNS"}),
                Some("spec.hosts[0]: hosts resolved in DNS"),
            ),
            (
                "two endpoints with DNS_ROUND_ROBIN",
                json!({"hosts": ["a.example"], "ports": port, "resolution": "DNS_ROUND_ROBIN",
                       "endpoints": [{"address": "a.example"}, {"address": "b.example"}]}),
                Some("spec.endpoints: at most one endpoint"),
            ),
            (
                "DYNAMIC_DNS",
                json!({"hosts": ["*.example.com"], "ports": port, "resolution": "DYNAMIC_DNS"}),
                Some("spec.resolution: DYNAMIC_DNS is not supported"),
            ),
            (
                "two hosts on a TCP port",
                json!({"hosts": ["a.example", "b.example"], "resolution": "DNS",
                       "ports": [{"number": 5432, "name": "pg", "protocol": "TCP"}]}),
                Some("spec.ports[0].protocol: several hosts"),
            ),
            (
                "two hosts on a TCP port without resolution",
                json!({"hosts": ["a.example", "b.example"],
                       "ports": [{"number": 5432, "name": "pg", "protocol": "TCP"}]}),
                None,
            ),
            (
                "a bad exportTo",
                json!({"hosts": ["a.example"], "ports": port, "exportTo": ["Bad NS"]}),
                Some("spec.exportTo[0]: `Bad NS`"),
            ),
        ];
        for (name, spec, want) in cases {
            let got = check_service_entry(&entry(spec).unwrap());
            match (want, got) {
                (None, Ok(())) => {}
                (Some(prefix), Err(why)) => {
                    assert!(why.starts_with(prefix), "{name}: {why}");
                }
                (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_and_values_fail_to_parse() {
        use serde_json::json;
        let typo = entry(json!({"hosts": ["a.example"], "resolutoin": "DNS"})).unwrap_err();
        assert!(typo.contains("resolutoin"), "{typo}");
        let bad = entry(json!({"hosts": ["a.example"], "location": "OUTSIDE"})).unwrap_err();
        assert!(bad.contains("OUTSIDE"), "{bad}");
        let ep =
            entry(json!({"hosts": ["a.example"], "endpoints": [{"adress": "x"}]})).unwrap_err();
        assert!(ep.contains("adress"), "{ep}");
    }
}
