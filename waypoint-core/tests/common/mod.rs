//! Helpers shared by the upstream integration tests.

use std::net::SocketAddr;
use std::sync::Arc;

use waypoint_core::config::{AppProtocol, Endpoint, EndpointStats, ResourceRef, ServiceBackend};

/// Service `default/<name>` port 80 at 10.96.0.10, speaking `protocol`, with these ready
/// endpoints.
pub fn service_backend(
    name: &str,
    protocol: AppProtocol,
    addrs: &[SocketAddr],
) -> Arc<ServiceBackend> {
    Arc::new(ServiceBackend {
        service: ResourceRef::new("Service", "default", name),
        port: 80,
        cluster_ips: vec![[10, 96, 0, 10].into()],
        protocol,
        endpoints: addrs
            .iter()
            .map(|&address| Endpoint {
                address,
                stats: Arc::new(EndpointStats::default()),
                transport: Default::default(),
            })
            .collect(),
    })
}
