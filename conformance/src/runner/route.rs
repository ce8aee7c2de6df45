//! Where a client in a test sends: a mesh client to a Service (or a pod) by name from its
//! namespace, or a client outside the mesh to a Gateway listener, both through the waypoint's
//! PROXY listener with the header ztunnel would write.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use waypoint_bin::tools::send::ProxyClaims;

use crate::case::{Case, RequestCase};
use crate::client::Route;
use crate::cluster::Cluster;
use crate::process::Waypoint;

/// Where a request goes and what the PROXY header says, as a client in the test would send it.
pub(super) fn route_for(
    case: &Case,
    req: &RequestCase,
    cluster: &Cluster,
    waypoint: &Waypoint,
) -> Result<Route, String> {
    if case.mesh {
        let client_ns = req.client.as_deref().unwrap_or("gateway-conformance-mesh");
        let host = req
            .request
            .host
            .as_deref()
            .ok_or("a mesh request needs a host")?;
        let (name, port) = match host.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in {host}"))?,
            ),
            None => (host, 80),
        };
        // A pod address goes straight to the pod; a Service name resolves to its ClusterIP.
        let pod_ip = name
            .strip_prefix("{POD_IP:")
            .and_then(|rest| rest.strip_suffix('}'))
            .map(|deployment| {
                cluster
                    .pods
                    .iter()
                    .find(|p| format!("{}/{}", p.namespace, p.deployment) == deployment)
                    .map(|p| p.ip)
                    .ok_or_else(|| format!("no pod of Deployment {deployment}"))
            })
            .transpose()?;
        let ip = match pod_ip {
            Some(ip) => ip,
            None => cluster
                .resolve(name, client_ns)
                .ok_or_else(|| format!("{name} does not resolve from namespace {client_ns}"))?,
        };
        // The client is the mesh app `echo-v1` in its namespace, with that namespace's identity.
        let source = cluster
            .pods
            .iter()
            .find(|p| p.namespace == client_ns && p.deployment == "echo-v1")
            .map(|p| p.ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        return Ok(Route {
            waypoint: waypoint.sandwich,
            claims: ProxyClaims {
                source: SocketAddr::new(source, 41000),
                destination: SocketAddr::new(ip, port),
                identity: Some(format!("spiffe://cluster.local/ns/{client_ns}/sa/default")),
                baggage: Some(format!("k8s.namespace.name={client_ns}")),
            },
            default_host: match pod_ip {
                Some(ip) => format!("{ip}:{port}"),
                None => host.to_owned(),
            },
            direct: pod_ip.is_some(),
            certificate: None,
        });
    }
    let target = req
        .gateway
        .as_deref()
        .or(case.gateway.as_deref())
        .ok_or("no gateway to send to")?;
    gateway_route(target, cluster, waypoint)
}

/// How a client outside the mesh reaches Gateway listener `target` (`namespace/name[:port]`,
/// port 80 by default): to the waypoint, with a PROXY header naming the Gateway address.
pub(super) fn gateway_route(
    target: &str,
    cluster: &Cluster,
    waypoint: &Waypoint,
) -> Result<Route, String> {
    let (gw, port) = match target.rsplit_once(':') {
        Some((g, p)) => (
            g,
            p.parse::<u16>()
                .map_err(|_| format!("bad port in {target}"))?,
        ),
        None => (target, 80),
    };
    let (ns, name) = gw
        .split_once('/')
        .ok_or_else(|| format!("{gw}: expected namespace/name"))?;
    let ip = cluster
        .gateways
        .get(&(ns.to_owned(), name.to_owned()))
        .copied()
        .ok_or_else(|| format!("Gateway {gw} is not in the manifests"))?;
    // Upstream's default Host is the Gateway address, without the port when it is 80.
    let default_host = if port == 80 {
        ip.to_string()
    } else {
        format!("{ip}:{port}")
    };
    Ok(Route {
        waypoint: waypoint.sandwich,
        claims: ProxyClaims {
            source: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 41000),
            destination: SocketAddr::new(ip, port),
            identity: None,
            baggage: None,
        },
        default_host,
        direct: false,
        certificate: None,
    })
}
