//! Checks of Services and EndpointSlices the API server would make.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Check, ensure};
use crate::config::resources::{AddressType, EndpointSlice, Service};

/// The cluster IPs a Service is reached at (none when headless or not yet allocated).
pub(in crate::config) fn cluster_ips(service: &Service) -> Result<Vec<IpAddr>, String> {
    let spec = &service.spec;
    let listed: Vec<(String, &str)> = if spec.cluster_ips.is_empty() {
        spec.cluster_ip
            .iter()
            .map(|ip| ("spec.clusterIP".to_owned(), ip.as_str()))
            .collect()
    } else {
        spec.cluster_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip.as_str()))
            .collect()
    };
    let mut ips = Vec::new();
    for (field, ip) in listed {
        if ip.is_empty() || ip == "None" {
            continue;
        }
        ips.push(
            ip.parse()
                .map_err(|_| format!("{field}: `{ip}` is not an IP address"))?,
        );
    }
    Ok(ips)
}

pub(in crate::config) fn check_service(service: &Service) -> Check {
    if let Some(ip) = &service.spec.cluster_ip
        && !ip.is_empty()
        && ip != "None"
    {
        ip.parse::<IpAddr>()
            .map_err(|_| format!("spec.clusterIP: `{ip}` is not an IP address"))?;
    }
    cluster_ips(service)?;
    let ports = &service.spec.ports;
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        ensure(p.port != 0, || format!("{at}.port: must be 1-65535"))?;
        ensure(ports.len() == 1 || !p.name.is_empty(), || {
            format!("{at}.name: required when a Service has several ports")
        })?;
        if let Some(j) = ports[..i]
            .iter()
            .position(|q| q.port == p.port && q.protocol == p.protocol)
        {
            return Err(format!(
                "{at}: duplicate port {}/{:?} (also spec.ports[{j}])",
                p.port, p.protocol
            ));
        }
        if let Some(j) = ports[..i]
            .iter()
            .position(|q| !p.name.is_empty() && q.name == p.name)
        {
            return Err(format!(
                "{at}.name: duplicate name `{}` (also spec.ports[{j}])",
                p.name
            ));
        }
    }
    Ok(())
}

pub(in crate::config) fn check_slice(slice: &EndpointSlice) -> Check {
    ensure(slice.service_name().is_some_and(|n| !n.is_empty()), || {
        "metadata.labels: missing `kubernetes.io/service-name` (the owning Service)".into()
    })?;
    for (i, ep) in slice.endpoints.iter().enumerate() {
        ensure(!ep.addresses.is_empty(), || {
            format!("endpoints[{i}].addresses: must not be empty")
        })?;
        for (j, a) in ep.addresses.iter().enumerate() {
            let ok = match slice.address_type {
                AddressType::IPv4 => a.parse::<Ipv4Addr>().is_ok(),
                AddressType::IPv6 => a.parse::<Ipv6Addr>().is_ok(),
                AddressType::FQDN => true,
            };
            ensure(ok, || {
                format!(
                    "endpoints[{i}].addresses[{j}]: `{a}` is not an {:?} address",
                    slice.address_type
                )
            })?;
        }
    }
    for (i, p) in slice.ports.iter().enumerate() {
        ensure(p.port != Some(0), || {
            format!("ports[{i}].port: must be 1-65535")
        })?;
    }
    Ok(())
}
