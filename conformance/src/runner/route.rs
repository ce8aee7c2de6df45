//! Where a client in a test sends: a mesh client to a Service by name from its namespace or to
//! a pod by IP, or a client outside the mesh to a Gateway listener, all through the waypoint's
//! PROXY listener with the header ztunnel would write.
//!
//! A pod-addressed mesh request goes through the waypoint too: the mesh namespaces use the
//! harness's waypoint (`cluster::mesh_waypoint`), which takes `all` traffic, so ztunnel hands
//! it a request to a pod IP with that IP and port as the PROXY destination. The waypoint must
//! then forward it to that pod untouched by the Service's routes. That it really passed the
//! waypoint is checked from the waypoint's own Istio metrics ([`PodCount`]): an echo answer
//! alone would look the same had the request gone straight to the pod.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

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
        // A pod address names the pod itself (its first replica); a Service name resolves to
        // its ClusterIP. Either is the PROXY destination: the waypoint sees what ztunnel saw.
        let pod = name
            .strip_prefix("{POD_IP:")
            .and_then(|rest| rest.strip_suffix('}'))
            .map(|deployment| {
                cluster
                    .pods
                    .iter()
                    .find(|p| format!("{}/{}", p.namespace, p.deployment) == deployment)
                    .ok_or_else(|| format!("no pod of Deployment {deployment}"))
            })
            .transpose()?;
        let pod_ip = pod.map(|p| p.ip);
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
            direct: false,
            pod: pod.map(|p| (p.namespace.clone(), p.name.clone())),
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
        pod: None,
        certificate: None,
    })
}

/// How long the waypoint may take to count a request after its response was read (it records
/// a request when the exchange completes, which can trail the client by a moment).
const COUNT_PATIENCE: Duration = Duration::from_secs(3);

/// The waypoint's count of requests it served as addressed to one pod (Istio's
/// `istio_requests_total` with that pod as `destination_workload`: only workload-addressed
/// traffic is labelled so), read before a pod-addressed request is sent.
#[derive(Debug)]
pub(super) struct PodCount {
    namespace: String,
    pod: String,
    before: f64,
}

impl PodCount {
    /// The count now, for a route addressed to a pod; `None` for any other route.
    pub(super) async fn before(route: &Route, waypoint: &Waypoint) -> Result<Option<Self>, String> {
        let Some((namespace, pod)) = &route.pod else {
            return Ok(None);
        };
        let before = pod_requests(waypoint, namespace, pod).await?;
        Ok(Some(PodCount {
            namespace: namespace.clone(),
            pod: pod.clone(),
            before,
        }))
    }

    /// Fails unless the waypoint counted at least `sent` more requests to the pod since
    /// [`PodCount::before`]: a pod-addressed request that bypassed the waypoint, or that it
    /// served as a Service's, cannot pass.
    pub(super) async fn check(&self, waypoint: &Waypoint, sent: usize) -> Result<(), String> {
        let deadline = Instant::now() + COUNT_PATIENCE;
        loop {
            let now = pod_requests(waypoint, &self.namespace, &self.pod).await?;
            if now - self.before >= sent as f64 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the waypoint counted {} request(s) with pod {}/{} as destination \
                     workload where {sent} passed: the request did not go through the \
                     waypoint as pod-addressed traffic",
                    now - self.before,
                    self.namespace,
                    self.pod
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn pod_requests(waypoint: &Waypoint, namespace: &str, pod: &str) -> Result<f64, String> {
    let metrics = waypoint
        .metrics()
        .await
        .map_err(|e| format!("reading the waypoint's metrics: {e}"))?;
    Ok(count_for_workload(&metrics, namespace, pod))
}

/// The sum of `istio_requests_total` series whose destination workload is `namespace/pod`.
fn count_for_workload(metrics: &str, namespace: &str, pod: &str) -> f64 {
    // A label's value ends at its closing quote, so `echo-0` never matches `echo-00`.
    let workload = format!("destination_workload=\"{pod}\"");
    let workload_ns = format!("destination_workload_namespace=\"{namespace}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter_map(|l| l.rsplit_once('}'))
        .filter(|(labels, _)| labels.contains(&workload) && labels.contains(&workload_ns))
        .filter_map(|(_, value)| value.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::count_for_workload;

    #[test]
    fn only_series_naming_the_pod_as_destination_workload_are_counted() {
        let metrics = r#"# TYPE istio_requests_total counter
istio_requests_total{reporter="waypoint",destination_workload="echo-v2-0",destination_workload_namespace="mesh",response_code="200"} 3
istio_requests_total{reporter="waypoint",destination_workload="echo-v2-0",destination_workload_namespace="mesh",response_code="503"} 1
istio_requests_total{reporter="waypoint",destination_workload="echo-v2-00",destination_workload_namespace="mesh"} 7
istio_requests_total{reporter="waypoint",destination_workload="unknown",destination_workload_namespace="mesh"} 9
istio_requests_total{reporter="waypoint",destination_workload="echo-v2-0",destination_workload_namespace="other"} 5
istio_request_bytes_sum{destination_workload="echo-v2-0",destination_workload_namespace="mesh"} 100
"#;
        assert_eq!(count_for_workload(metrics, "mesh", "echo-v2-0"), 4.0);
        assert_eq!(count_for_workload(metrics, "mesh", "echo-v1-0"), 0.0);
        assert_eq!(count_for_workload("", "mesh", "echo-v2-0"), 0.0);
    }
}
