//! Building a [`Config`]: every resource validated (the checks live in `config/validate/`), a
//! status for each, and the indexes the request path reads (Service ports by VIP and by name,
//! each with its ready endpoints; the TLS servers of HTTPS listeners, in `build/frontend.rs`).

mod dr_tls;
mod frontend;
mod mesh;
mod service_entry;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};

use super::resources::{
    AddressType, EndpointSlice, Object, Protocol, Resources, Service, ServiceType, Sourced,
    TargetPort,
};
use super::traffic_policy::{PolicyIndex, qualified_host};
use super::validate::{
    Check, check_authn, check_authz, check_destination_rule, check_gateway, check_grpc_route,
    check_http_route, check_service, check_service_entry, check_slice, check_tcp_route,
    check_tls_route, cluster_ips,
};
use super::{
    Condition, Config, Endpoint, EndpointStats, ProtocolSelection, ResourceRef, ResourceStatus,
    ServiceBackend,
};
pub use mesh::MeshOptions;
pub(crate) use mesh::{MeshIndex, service_account};

/// Endpoint load-balancing state by address, kept across config reloads: a new snapshot gets
/// the same [`EndpointStats`] as the old one for an endpoint that is still there, so in-flight
/// counts stay right while both snapshots serve. Entries are weak: an endpoint that left every
/// live snapshot is forgotten.
///
/// It also carries the [`MeshOptions`] builds apply (trust domain, ambient namespaces), since
/// every build of a process goes through the same cache.
#[derive(Debug, Default)]
pub struct EndpointStatsCache {
    entries: Mutex<HashMap<SocketAddr, Weak<EndpointStats>>>,
    mesh: MeshOptions,
    /// What ServiceEntries with `resolution: DNS` resolved to (see [`crate::dns`]).
    dns: Arc<crate::dns::DnsCache>,
}

impl EndpointStatsCache {
    /// An empty cache with the default mesh options (`cluster.local`, no extra namespaces).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache whose builds decide endpoint transports with `mesh`.
    pub fn with_mesh(mesh: MeshOptions) -> Self {
        EndpointStatsCache {
            entries: Mutex::default(),
            mesh,
            dns: Arc::default(),
        }
    }

    /// The mesh options builds through this cache use.
    pub fn mesh(&self) -> &MeshOptions {
        &self.mesh
    }

    /// The DNS answers ServiceEntry builds read (and the names they want resolved).
    pub fn dns(&self) -> &Arc<crate::dns::DnsCache> {
        &self.dns
    }

    /// The stats of `address`: the live ones if any snapshot still holds them, else new ones.
    pub fn stats(&self, address: SocketAddr) -> Arc<EndpointStats> {
        // A panic elsewhere while holding the lock leaves the map valid: keep using it.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = entries.get(&address).and_then(Weak::upgrade) {
            return stats;
        }
        let stats = Arc::new(EndpointStats::default());
        entries.insert(address, Arc::downgrade(&stats));
        stats
    }

    /// Forgets endpoints no snapshot holds any more.
    fn prune(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, w| w.strong_count() > 0);
    }
}

/// A status saying `resource` was rejected (`Accepted=false`, reason `Invalid`).
pub(crate) fn invalid(resource: ResourceRef, source: &str, message: String) -> ResourceStatus {
    condition(resource, source, false, "Invalid", message)
}

fn condition(
    resource: ResourceRef,
    source: &str,
    status: bool,
    reason: &str,
    message: String,
) -> ResourceStatus {
    ResourceStatus {
        resource,
        source: source.to_owned(),
        conditions: vec![Condition {
            kind: "Accepted".into(),
            status,
            reason: reason.into(),
            message,
        }],
    }
}

/// Validates `resources` (invalid ones are left out, with a status), then indexes the rest.
/// `statuses` holds the rejections found while reading; every resource read ends up with one.
pub fn build(
    resources: Resources,
    mut statuses: Vec<ResourceStatus>,
    cache: &EndpointStatsCache,
) -> Config {
    let (secrets, secret_keys) = frontend::compile_secrets(resources.secrets, &mut statuses);
    // Every rule read, refused ones included: a refused rule still claims its host (see
    // `traffic_policy`), so its `tls` block fails closed rather than being forgotten.
    let rules_read = resources.destination_rules.clone();
    let mut resources = Resources {
        secrets,
        gateways: keep_valid(resources.gateways, check_gateway, &mut statuses),
        services: keep_valid(resources.services, check_service, &mut statuses),
        endpoint_slices: keep_valid(resources.endpoint_slices, check_slice, &mut statuses),
        http_routes: keep_valid(resources.http_routes, check_http_route, &mut statuses),
        grpc_routes: keep_valid(resources.grpc_routes, check_grpc_route, &mut statuses),
        tcp_routes: keep_valid(resources.tcp_routes, check_tcp_route, &mut statuses),
        tls_routes: keep_valid(resources.tls_routes, check_tls_route, &mut statuses),
        reference_grants: keep_valid(resources.reference_grants, |_| Ok(()), &mut statuses),
        authorization_policies: keep_valid(
            resources.authorization_policies,
            check_authz,
            &mut statuses,
        ),
        request_authentications: keep_valid(
            resources.request_authentications,
            check_authn,
            &mut statuses,
        ),
        service_entries: keep_valid(
            resources.service_entries,
            check_service_entry,
            &mut statuses,
        ),
        destination_rules: keep_valid(
            resources.destination_rules,
            check_destination_rule,
            &mut statuses,
        ),
        others: resources.others,
    };
    resources.destination_rules = dr_tls::compile(
        std::mem::take(&mut resources.destination_rules),
        &resources.secrets,
        cache.mesh(),
        &mut statuses,
    );
    statuses.sort_by(|a, b| (&a.resource, &a.source).cmp(&(&b.resource, &b.source)));

    let mut by_destination = HashMap::new();
    let mut by_name = HashMap::new();
    let mesh = MeshIndex::new(cache.mesh(), &resources.others);
    let kept: HashSet<(ResourceRef, &str)> = resources
        .destination_rules
        .iter()
        .map(|r| (r.resource_ref(), r.source.as_str()))
        .collect();
    let refused_rules: Vec<_> = rules_read
        .iter()
        .filter(|r| !kept.contains(&(r.resource_ref(), r.source.as_str())))
        .cloned()
        .collect();
    let policies = PolicyIndex::new(&resources.destination_rules, &refused_rules, cache.mesh());
    report_shadowed_rules(&mut statuses, &policies);
    for service in &resources.services {
        let backends = service_backends(service, &resources.endpoint_slices, cache, &mesh);
        for mut backend in backends {
            backend.policy = Arc::new(policies.for_port(
                &qualified_host(
                    &service.metadata.name,
                    service.metadata.namespace(),
                    &cache.mesh().cluster_domain,
                ),
                service.metadata.namespace(),
                backend.port,
            ));
            let backend = Arc::new(backend);
            for ip in &backend.cluster_ips {
                let addr = SocketAddr::new(*ip, backend.port);
                if let Some(first) = by_destination.get(&addr) {
                    let first: &Arc<ServiceBackend> = first;
                    tracing::warn!(%addr, service = %backend.service, taken_by = %first.service,
                        "two Services claim the same cluster IP and port; keeping the first");
                    continue;
                }
                by_destination.insert(addr, backend.clone());
            }
            let key = (
                backend.service.namespace.clone(),
                backend.service.name.clone(),
                backend.port,
            );
            by_name.insert(key, backend);
        }
    }
    let entries = service_entry_indexes(&resources, cache, &mesh, &policies, &mut by_destination);
    cache.prune();
    let computed =
        super::binding::compute(&resources, cache.mesh().gateway.as_ref(), &mesh, &by_name);
    if let Some((gateway, why)) = computed.malformed {
        reject_gateway(&mut statuses, &gateway, why);
    }
    let frontend = frontend::build_frontend(&resources, &secret_keys);
    Config {
        binding: computed.binding,
        resources,
        statuses,
        by_destination,
        by_name,
        by_entry: entries.by_name,
        by_host: entries.by_host,
        frontend_tls: frontend.tls,
        listener_tls_problems: frontend.problems,
    }
}

/// The ServiceEntry backends of one build, by `(namespace, name, port)` and `(host, port)`.
struct EntryIndexes {
    by_name: HashMap<(String, String, u16), Arc<ServiceBackend>>,
    by_host: HashMap<(String, u16), Arc<ServiceBackend>>,
}

/// Indexes every ServiceEntry port (see `build/service_entry.rs`); VIPs go into
/// `by_destination` beside the Services' cluster IPs, a Service keeping an address both claim.
/// Also tells the DNS cache which names the entries want resolved.
fn service_entry_indexes(
    resources: &Resources,
    cache: &EndpointStatsCache,
    mesh: &MeshIndex<'_>,
    policies: &PolicyIndex<'_>,
    by_destination: &mut HashMap<SocketAddr, Arc<ServiceBackend>>,
) -> EntryIndexes {
    let pods: Vec<&super::resources::RawObject> = resources
        .others
        .iter()
        .map(|o| &o.resource)
        .filter(|o| o.group().is_empty() && o.kind == "Pod")
        .collect();
    let mut indexes = EntryIndexes {
        by_name: HashMap::new(),
        by_host: HashMap::new(),
    };
    let mut names = Vec::new();
    for entry in &resources.service_entries {
        names.extend(service_entry::dns_names(entry));
        let built = service_entry::entry_backends(entry, &pods, cache, mesh);
        let ns = entry.metadata.namespace();
        // A DestinationRule's `host` matches ServiceEntry hosts as it matches Service names.
        let policy = |host: &str, port: u16| {
            let host = qualified_host(host, ns, &cache.mesh().cluster_domain);
            Arc::new(policies.for_port(&host, ns, port))
        };
        // Reached by address or by entry name, a port is known by the entry's first host.
        let first_host = entry.spec.hosts.first().map_or("", String::as_str);
        let mut claim = |addr: SocketAddr, backend: Arc<ServiceBackend>| {
            if let Some(first) = by_destination.get(&addr) {
                // A `NONE` entry claims its addresses per address first: no conflict.
                if first.service == backend.service {
                    return;
                }
                tracing::warn!(%addr, entry = %backend.service, taken_by = %first.service,
                    "a ServiceEntry address is already claimed; keeping the first");
                return;
            }
            by_destination.insert(addr, backend);
        };
        for (addr, mut backend) in built.by_address {
            backend.policy = policy(first_host, backend.port);
            claim(addr, Arc::new(backend));
        }
        for mut backend in built.by_port {
            backend.policy = policy(first_host, backend.port);
            let backend = Arc::new(backend);
            for ip in &backend.cluster_ips {
                claim(SocketAddr::new(*ip, backend.port), backend.clone());
            }
            for host in &entry.spec.hosts {
                // Reached by host name, the port gets that host's DestinationRule.
                let for_host = if host == first_host {
                    backend.clone()
                } else {
                    Arc::new(ServiceBackend {
                        policy: policy(host, backend.port),
                        ..(*backend).clone()
                    })
                };
                // The first entry for a host and port wins, as for addresses.
                indexes
                    .by_host
                    .entry((host.clone(), backend.port))
                    .or_insert(for_host);
            }
            let key = (
                backend.service.namespace.clone(),
                backend.service.name.clone(),
                backend.port,
            );
            indexes.by_name.insert(key, backend);
        }
    }
    cache.dns().set_wanted(names);
    indexes
}

/// Says, in the `Accepted` message of each DestinationRule whose `trafficPolicy` an older rule
/// for the same host overrides, which rule applies instead. The rule stays accepted: Istio
/// merges such rules rather than refusing one.
fn report_shadowed_rules(statuses: &mut [ResourceStatus], policies: &PolicyIndex<'_>) {
    for (rule, winner) in policies.shadowed() {
        for status in statuses.iter_mut().filter(|s| s.resource == rule) {
            for c in status
                .conditions
                .iter_mut()
                .filter(|c| c.kind == "Accepted")
            {
                c.message = format!(
                    "{rule} is valid, but its trafficPolicy is not applied: {winner} is older and \
                     names the same host (Istio keeps the oldest rule's policy)"
                );
            }
        }
    }
}

/// Marks this waypoint's Gateway not accepted: its inbound-binding annotation is malformed.
/// It keeps serving as istiod reads it (see `config::binding`); the status says why.
fn reject_gateway(statuses: &mut [ResourceStatus], gateway: &ResourceRef, why: String) {
    let message = format!("{gateway}: {why}");
    for status in statuses.iter_mut().filter(|s| &s.resource == gateway) {
        for c in status
            .conditions
            .iter_mut()
            .filter(|c| c.kind == "Accepted")
        {
            c.status = false;
            c.reason = "Invalid".into();
            c.message = message.clone();
        }
    }
}

fn keep_valid<T: Object>(
    items: Vec<Sourced<T>>,
    check: impl Fn(&T) -> Check,
    statuses: &mut Vec<ResourceStatus>,
) -> Vec<Sourced<T>> {
    items
        .into_iter()
        .filter(|item| {
            let rref = item.resource_ref();
            match check(item) {
                Ok(()) => {
                    let message = format!("{rref} is valid");
                    statuses.push(condition(rref, &item.source, true, "Accepted", message));
                    true
                }
                Err(why) => {
                    statuses.push(invalid(
                        rref.clone(),
                        &item.source,
                        format!("{rref}: {why}"),
                    ));
                    false
                }
            }
        })
        .collect()
}

/// One backend per TCP port of a (non-ExternalName) Service, with its ready endpoints.
fn service_backends(
    service: &Sourced<Service>,
    slices: &[Sourced<EndpointSlice>],
    cache: &EndpointStatsCache,
    mesh: &MeshIndex<'_>,
) -> Vec<ServiceBackend> {
    if service.spec.kind == ServiceType::ExternalName {
        return Vec::new();
    }
    let ns = service.metadata.namespace();
    let own: Vec<&EndpointSlice> = slices
        .iter()
        .map(|s| &s.resource)
        .filter(|s| s.metadata.namespace() == ns && s.service_name() == Some(&service.metadata.name))
        .filter(|s| {
            let fqdn = s.address_type == AddressType::FQDN;
            if fqdn {
                tracing::warn!(slice = %s.resource_ref(), "skipping FQDN EndpointSlice: only IP endpoints are supported");
            }
            !fqdn
        })
        .collect();
    // check_service already accepted these, so they parse.
    let ips = cluster_ips(service).unwrap_or_default();
    let mut backends = Vec::new();
    for port in service
        .spec
        .ports
        .iter()
        .filter(|p| p.protocol == Protocol::TCP)
    {
        let mut app_protocol = port.app_protocol.as_deref();
        let mut seen = HashSet::new();
        let mut endpoints = Vec::new();
        for slice in &own {
            let slice_port = slice.ports.iter().find(|p| p.name == port.name);
            if app_protocol.is_none() {
                app_protocol = slice_port.and_then(|p| p.app_protocol.as_deref());
            }
            let target = match (slice_port.and_then(|p| p.port), &port.target_port) {
                (Some(p), _) => p,
                (None, Some(TargetPort::Number(p))) => *p,
                (None, None) => port.port,
                (None, Some(TargetPort::Name(name))) => {
                    tracing::warn!(slice = %slice.resource_ref(), port = %name,
                        "EndpointSlice has no port for the Service's named targetPort; skipping it");
                    continue;
                }
            };
            for ep in slice
                .endpoints
                .iter()
                .filter(|e| e.conditions.ready != Some(false))
            {
                // All addresses of an endpoint are the same pod; Kubernetes says to use the first.
                let Some(Ok(ip)) = ep.addresses.first().map(|a| a.parse::<IpAddr>()) else {
                    continue;
                };
                let address = SocketAddr::new(ip, target);
                if seen.insert(address) {
                    endpoints.push(Endpoint {
                        address,
                        stats: cache.stats(address),
                        transport: mesh
                            .transport(slice.metadata.namespace(), ep.target_ref.as_ref()),
                    });
                }
            }
        }
        backends.push(ServiceBackend {
            service: service.resource_ref(),
            port: port.port,
            cluster_ips: ips.clone(),
            protocol: ProtocolSelection::for_service_port(port.port, app_protocol, &port.name),
            endpoints,
            policy: Arc::default(),
        });
    }
    backends
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_shared_while_alive() {
        let cache = EndpointStatsCache::new();
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let a = cache.stats(addr);
        assert!(Arc::ptr_eq(&a, &cache.stats(addr)));
        drop(a);
        cache.prune();
        assert!(cache.entries.lock().unwrap().is_empty());
    }
}
