//! ServiceEntry ports as routing targets: each port of an entry becomes a [`ServiceBackend`]
//! whose `service` is the entry (kind `ServiceEntry`), reachable the way istiod makes it
//! reachable for a waypoint:
//!
//! - by its `addresses` (VIPs) and port, like a Service's cluster IP: ztunnel sends a bound
//!   entry's traffic to the waypoint with that original destination. CIDR addresses cannot be
//!   indexed by exact address and are skipped (with a log line);
//! - by host name and port, for HTTPRoute `backendRefs` of Istio's `Hostname` kind (group
//!   `networking.istio.io`; istiod has no `ServiceEntry` backend kind), see [`Config::host`].
//!
//! Endpoints by `resolution`:
//! - `STATIC`: the `endpoints` (IP addresses), or the Pods among the manifests that carry every
//!   `workloadSelector` label (their `status.podIP(s)`), the port being the endpoint's own
//!   `ports[name]`, else the port's `targetPort`, else its `number`;
//! - `NONE`: where the client was going. With VIP `addresses` that are the service's real
//!   IPs (the usual case for `NONE`), the backend reached at `ip:port` has exactly that
//!   address as its one endpoint (targetPort applied); reached by name, every address is one;
//! - `DNS` / `DNS_ROUND_ROBIN`: `endpoints` given as IPs are used as they are; names (the
//!   endpoints' addresses, else the hosts) are resolved by the DNS cache the build is given
//!   (see `crate::dns`); until an answer arrives, the backend has no endpoints (503).
//!
//! Transport: a `MESH_EXTERNAL` endpoint is always plain TCP (never HBONE: it has no ztunnel);
//! a `MESH_INTERNAL` one is judged as a pod (Pod labels, namespace enrolment), with the
//! endpoint's `serviceAccount`, when given, as the identity its ztunnel must prove.
//!
//! [`Config::host`]: crate::config::Config::host

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::{EndpointStatsCache, MeshIndex};
use crate::config::binding::pod_ips;
use crate::config::resources::{
    Location, Object, RawObject, Resolution, ServiceEntry, ServiceEntryPort, Sourced, WorkloadEntry,
};
use crate::config::{Endpoint, EndpointTransport, ProtocolSelection, ServiceBackend};
use crate::identity::SpiffeId;
use crate::tls::ExpectedIdentity;

/// The backends of one entry: one per port (reached by name and by its VIPs), and for
/// `NONE` entries one per (VIP, port) whose one endpoint is that address.
pub(crate) struct EntryBackends {
    /// One per port, with every endpoint: what routes by name reach.
    pub(crate) by_port: Vec<ServiceBackend>,
    /// What a client dialling `(address, port)` reaches, when that differs from `by_port`.
    pub(crate) by_address: Vec<(SocketAddr, ServiceBackend)>,
}

/// The backends of `entry` (see the module documentation).
pub(crate) fn entry_backends(
    entry: &Sourced<ServiceEntry>,
    pods: &[&RawObject],
    cache: &EndpointStatsCache,
    mesh: &MeshIndex<'_>,
) -> EntryBackends {
    let spec = &entry.spec;
    let ns = entry.metadata.namespace();
    let vips: Vec<IpAddr> = spec
        .addresses
        .iter()
        .filter_map(|a| match a.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tracing::warn!(entry = %entry.resource_ref(), address = %a,
                    "ServiceEntry CIDR address: only exact addresses are matched at the waypoint");
                None
            }
        })
        .collect();
    let selected: Vec<&RawObject> = match &spec.workload_selector {
        Some(sel) => pods
            .iter()
            .copied()
            .filter(|p| p.metadata.namespace() == ns)
            .filter(|p| {
                sel.labels
                    .iter()
                    .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
            })
            .collect(),
        None => Vec::new(),
    };
    let mut out = EntryBackends {
        by_port: Vec::new(),
        by_address: Vec::new(),
    };
    for port in &spec.ports {
        // Validation keeps numbers within 1-65535.
        let Ok(number) = u16::try_from(port.number) else {
            continue;
        };
        let target = |e: Option<&WorkloadEntry>| {
            let own = e.and_then(|e| e.ports.get(&port.name)).copied();
            own.or(port.target_port)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(number)
        };
        let protocol = protocol_of(port, number);
        let backend = |endpoints: Vec<Endpoint>| ServiceBackend {
            service: entry.resource_ref(),
            port: number,
            cluster_ips: vips.clone(),
            protocol: protocol.clone(),
            endpoints,
            // Set by the caller, which resolves DestinationRules by host.
            policy: Default::default(),
        };
        let plain = |address: SocketAddr| Endpoint {
            address,
            stats: cache.stats(address),
            transport: EndpointTransport::Plain,
        };
        let mut endpoints = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |endpoint: Endpoint| {
            if seen.insert(endpoint.address) {
                endpoints.push(endpoint);
            }
        };
        match spec.resolution {
            Resolution::None => {
                for ip in &vips {
                    let address = SocketAddr::new(*ip, target(None));
                    out.by_address
                        .push((SocketAddr::new(*ip, number), backend(vec![plain(address)])));
                    push(plain(address));
                }
            }
            Resolution::Static if spec.workload_selector.is_some() => {
                for pod in &selected {
                    let transport = transport(entry, mesh, None, Some(pod));
                    for ip in pod_ips(pod) {
                        let address = SocketAddr::new(ip, target(None));
                        push(Endpoint {
                            address,
                            stats: cache.stats(address),
                            transport: transport.clone(),
                        });
                    }
                }
            }
            Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin => {
                let names = dns_names(entry);
                for e in &spec.endpoints {
                    if let Ok(ip) = e.address.parse::<IpAddr>() {
                        let address = SocketAddr::new(ip, target(Some(e)));
                        push(Endpoint {
                            address,
                            stats: cache.stats(address),
                            transport: transport(entry, mesh, Some(e), None),
                        });
                    }
                }
                let port_of = |name: &str| {
                    let e = spec.endpoints.iter().find(|e| e.address == name);
                    target(e)
                };
                if spec.resolution != Resolution::Static {
                    for name in &names {
                        let e = spec.endpoints.iter().find(|e| &e.address == name);
                        for ip in cache.dns().addresses(name) {
                            let address = SocketAddr::new(ip, port_of(name));
                            push(Endpoint {
                                address,
                                stats: cache.stats(address),
                                transport: transport(entry, mesh, e, None),
                            });
                        }
                    }
                }
            }
            // Rejected by validation.
            Resolution::DynamicDns => {}
        }
        out.by_port.push(backend(endpoints));
    }
    out
}

/// The names a `DNS`/`DNS_ROUND_ROBIN` entry resolves: its endpoints' non-IP addresses, else
/// (no endpoints) its hosts. Empty for other resolutions.
pub(crate) fn dns_names(entry: &ServiceEntry) -> Vec<String> {
    let spec = &entry.spec;
    if !matches!(spec.resolution, Resolution::Dns | Resolution::DnsRoundRobin) {
        return Vec::new();
    }
    if spec.endpoints.is_empty() {
        return spec.hosts.clone();
    }
    spec.endpoints
        .iter()
        .filter(|e| e.address.parse::<IpAddr>().is_err())
        .map(|e| e.address.clone())
        .collect()
}

/// A port's protocol: its `protocol` read as an appProtocol would be (Istio parses both with
/// the same table); unset, the port name decides, as for a Service port.
fn protocol_of(port: &ServiceEntryPort, number: u16) -> ProtocolSelection {
    let named = (!port.protocol.is_empty()).then_some(port.protocol.as_str());
    ProtocolSelection::for_service_port(number, named, &port.name)
}

fn transport(
    entry: &Sourced<ServiceEntry>,
    mesh: &MeshIndex<'_>,
    endpoint: Option<&WorkloadEntry>,
    pod: Option<&RawObject>,
) -> EndpointTransport {
    if entry.spec.location == Location::MeshExternal {
        return EndpointTransport::Plain;
    }
    let ns = entry.metadata.namespace();
    let judged = mesh.pod_transport(ns, ns, pod);
    let sa = endpoint
        .map(|e| e.service_account.as_str())
        .filter(|sa| !sa.is_empty());
    match (judged, sa) {
        (EndpointTransport::Hbone { identity }, Some(sa)) => {
            let td = match &identity {
                ExpectedIdentity::Exact(id) => id.trust_domain().to_owned(),
                ExpectedIdentity::Namespace { trust_domain, .. } => trust_domain.clone(),
            };
            let identity = SpiffeId::new(&td, ns, sa)
                .map(ExpectedIdentity::Exact)
                .unwrap_or(identity);
            EndpointTransport::Hbone { identity }
        }
        (judged, _) => judged,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use std::sync::Arc;

    use crate::config::build::{EndpointStatsCache, MeshOptions};
    use crate::config::load::parse_manifests_with;
    use crate::config::{Config, EndpointTransport, PortProtocol, ServiceBackend};

    fn entry(name: &str, ns: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
        )
    }

    fn load(text: &str, cache: &EndpointStatsCache) -> Config {
        let config = parse_manifests_with(text, "t.yaml", cache).unwrap();
        for s in &config.statuses {
            assert!(s.is_ok(), "{s:?}");
        }
        config
    }

    fn addresses(b: &ServiceBackend) -> Vec<String> {
        b.endpoints.iter().map(|e| e.address.to_string()).collect()
    }

    #[test]
    fn static_endpoints_are_reached_by_vip_by_name_and_by_host_with_their_ports() {
        let text = entry(
            "api",
            "egress",
            "  hosts: [api.example.com, api2.example.com]\n  addresses: [240.0.0.1]\n  ports:\n  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}\n  - {number: 443, name: tls, protocol: TLS}\n  resolution: STATIC\n  endpoints:\n  - {address: 10.0.0.1}\n  - {address: 10.0.0.2, ports: {http: 9090}}\n",
        );
        let config = load(&text, &EndpointStatsCache::new());
        let http = config.service_at("240.0.0.1:80".parse().unwrap()).unwrap();
        assert_eq!(http.service.kind, "ServiceEntry");
        assert_eq!(addresses(http), ["10.0.0.1:8080", "10.0.0.2:9090"]);
        assert_eq!(http.protocol.kind, PortProtocol::Http);
        let tls = config.service_entry("egress", "api", 443).unwrap();
        assert_eq!(addresses(tls), ["10.0.0.1:443", "10.0.0.2:443"]);
        assert_eq!(tls.protocol.kind, PortProtocol::Tls);
        assert!(Arc::ptr_eq(
            config.host("api.example.com", 80).unwrap(),
            http
        ));
        let second = config.host("api2.example.com", 80).unwrap();
        assert_eq!((&second.service, second.port), (&http.service, 80));
        assert_eq!(addresses(second), addresses(http));
        assert!(config.host("api.example.com", 81).is_none());
        assert_eq!(
            config.service_entry_host(&http.service),
            Some("api.example.com")
        );
        // A Service of the same name is another thing.
        assert!(config.service("egress", "api", 80).is_none());
        assert_eq!(config.backends().count(), 2);
    }

    #[test]
    fn mesh_external_endpoints_are_never_reached_over_hbone_and_internal_ones_may_be() {
        let ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n";
        let external = entry(
            "ext",
            "shop",
            "  hosts: [ext.example.com]\n  addresses: [240.0.0.2]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n",
        );
        let internal = entry(
            "int",
            "shop",
            "  hosts: [int.shop.example]\n  addresses: [240.0.0.3]\n  ports: [{number: 80, name: http}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.2, serviceAccount: cart}]\n",
        );
        let config = load(
            &format!("{ns}{external}{internal}"),
            &EndpointStatsCache::new(),
        );
        let ext = config.service_entry("shop", "ext", 80).unwrap();
        assert_eq!(ext.endpoints[0].transport, EndpointTransport::Plain);
        let int = config.service_entry("shop", "int", 80).unwrap();
        match &int.endpoints[0].transport {
            EndpointTransport::Hbone { identity } => assert_eq!(
                identity.to_string(),
                "spiffe://cluster.local/ns/shop/sa/cart"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resolution_none_sends_each_address_to_itself() {
        let text = entry(
            "db",
            "default",
            "  hosts: [db.example.com]\n  addresses: [192.0.2.10, 192.0.2.11, 198.51.100.0/24]\n  ports: [{number: 5432, name: pg, protocol: TCP, targetPort: 6432}]\n",
        );
        let config = load(&text, &EndpointStatsCache::new());
        let at = |a: &str| addresses(config.service_at(a.parse().unwrap()).unwrap());
        assert_eq!(at("192.0.2.10:5432"), ["192.0.2.10:6432"]);
        assert_eq!(at("192.0.2.11:5432"), ["192.0.2.11:6432"]);
        let by_name = config.service_entry("default", "db", 5432).unwrap();
        assert_eq!(addresses(by_name), ["192.0.2.10:6432", "192.0.2.11:6432"]);
        assert_eq!(by_name.protocol.kind, PortProtocol::Tcp);
    }

    #[test]
    fn a_workload_selector_takes_the_matching_pods_of_the_namespace() {
        let pods = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: vm, labels: {app: legacy}}\nstatus: {podIP: 10.1.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: vm, labels: {app: other}}\nstatus: {podIP: 10.1.0.2}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: elsewhere, labels: {app: legacy}}\nstatus: {podIP: 10.1.0.3}\n";
        let text = entry(
            "legacy",
            "vm",
            "  hosts: [legacy.vm.example]\n  addresses: [240.0.0.9]\n  ports: [{number: 80, name: http, targetPort: 8080}]\n  resolution: STATIC\n  workloadSelector: {labels: {app: legacy}}\n",
        );
        let config = load(&format!("{pods}{text}"), &EndpointStatsCache::new());
        let b = config.service_entry("vm", "legacy", 80).unwrap();
        assert_eq!(addresses(b), ["10.1.0.1:8080"]);
    }

    #[test]
    fn dns_answers_in_the_cache_become_endpoints_on_the_next_build() {
        let text = entry(
            "api",
            "egress",
            "  hosts: [api.example.com]\n  addresses: [240.0.0.1]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DNS\n",
        );
        let cache = EndpointStatsCache::with_mesh(MeshOptions::default());
        let config = load(&text, &cache);
        assert!(
            config
                .service_entry("egress", "api", 443)
                .unwrap()
                .endpoints
                .is_empty()
        );
        assert_eq!(cache.dns().wanted(), ["api.example.com"]);
        assert!(cache.dns().record(
            "api.example.com",
            vec![
                "203.0.113.5".parse().unwrap(),
                "203.0.113.6".parse().unwrap()
            ]
        ));
        let config = load(&text, &cache);
        let b = config.service_entry("egress", "api", 443).unwrap();
        assert_eq!(addresses(b), ["203.0.113.5:443", "203.0.113.6:443"]);
    }

    #[test]
    fn a_service_entry_binds_by_its_label_or_its_namespace_as_a_service_does() {
        let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: egress}\nspec:\n  gatewayClassName: waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: egress, labels: {istio.io/use-waypoint: wp}}\n";
        let spec = |vip: &str| {
            format!(
                "  hosts: [x.example.com]\n  addresses: [{vip}]\n  ports: [{{number: 80, name: http}}]\n  resolution: STATIC\n  endpoints: [{{address: 10.0.0.1}}]\n"
            )
        };
        let by_ns = entry("by-ns", "egress", &spec("240.0.0.1"));
        let out = entry("out", "egress", &spec("240.0.0.2")).replace(
            "namespace: egress}",
            "namespace: egress, labels: {istio.io/use-waypoint: none}}",
        );
        let opts = MeshOptions {
            gateway: Some(("egress".into(), "wp".into())),
            ..Default::default()
        };
        let config = load(
            &format!("{gw}{by_ns}{out}"),
            &EndpointStatsCache::with_mesh(opts),
        );
        let binding = config.binding();
        assert!(binding.service_entry_bound("egress", "by-ns"));
        assert!(!binding.service_entry_bound("egress", "out"));
        // A Service of the same name is not bound by the entry's decision.
        assert!(!binding.service_bound("egress", "by-ns"));
        use crate::config::binding::Destination;
        assert!(matches!(
            config.destination(Some("240.0.0.1:80".parse().unwrap())),
            Destination::Service(_)
        ));
        assert!(matches!(
            config.destination(Some("240.0.0.2:80".parse().unwrap())),
            Destination::Unbound(_)
        ));
    }

    #[test]
    fn destination_rules_apply_to_service_entry_ports_by_host() {
        let text = entry(
            "api",
            "egress",
            "  hosts: [api.example.com, api2.example.com]\n  addresses: [240.0.0.1]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n",
        );
        let rule = |name: &str, host: &str, block: &str| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: egress}}\nspec:\n  host: {host}\n  trafficPolicy: {{{block}}}\n"
            )
        };
        let text = format!(
            "{text}{}{}",
            rule("first", "api.example.com", "loadBalancer: {simple: RANDOM}"),
            rule(
                "second",
                "api2.example.com",
                "connectionPool: {tcp: {maxConnections: 10}}"
            )
        );
        let config = load(&text, &EndpointStatsCache::new());
        let by_vip = config.service_at("240.0.0.1:443".parse().unwrap()).unwrap();
        let from = |b: &ServiceBackend| {
            b.policy
                .blocks()
                .iter()
                .map(|(name, origin, _)| format!("{name} from {}", origin.rule.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(from(by_vip), ["loadBalancer from first"]);
        assert_eq!(
            from(config.host("api.example.com", 443).unwrap()),
            ["loadBalancer from first"]
        );
        assert_eq!(
            from(config.host("api2.example.com", 443).unwrap()),
            ["connectionPool from second"]
        );
    }
}
