//! Configuration: Kubernetes manifests parsed and validated once into an immutable [`Config`].
//!
//! The pipeline is `load` (files → documents → typed resources, each bad one named and left
//! out) → `build` (indexes the request path reads: services by VIP, backends with their ready
//! endpoints) → [`Config`]. The request path only reads a `Config`; it never parses or locks.

pub mod binding;
pub mod build;
pub mod load;
mod protocol;
pub mod resources;
pub mod source;
pub mod traffic_policy;
mod validate;
pub mod watch;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

pub use load::{LoadError, load_path, parse_manifests};
pub use protocol::{PortProtocol, ProtocolSelection, SelectedBy};
pub use resources::Resources;

/// Names one Kubernetes resource: `HTTPRoute default/echo`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    /// The resource kind, as in the manifest (`HTTPRoute`).
    pub kind: String,
    /// The namespace (`default` when the manifest has none).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ResourceRef {
    /// A reference to `kind` `namespace`/`name`.
    pub fn new(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ResourceRef {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One status condition of a resource, named as the upstream API names them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs`, `Programmed`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the condition holds.
    pub status: bool,
    /// The machine-readable reason (`Accepted`, `BackendNotFound`, `Invalid`, ...).
    pub reason: String,
    /// A message for people, naming the field at fault.
    pub message: String,
}

/// What the waypoint made of one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceStatus {
    /// The resource.
    pub resource: ResourceRef,
    /// Where it came from (`path/to/file.yaml#3` = third document).
    pub source: String,
    /// Its conditions. A resource with a false condition is (partly) not served.
    pub conditions: Vec<Condition>,
}

impl ResourceStatus {
    /// True when every condition holds.
    pub fn is_ok(&self) -> bool {
        self.conditions.iter().all(|c| c.status)
    }
}

/// The HTTP version the waypoint speaks to a backend port (see [`ProtocolSelection`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.1 (the default; WebSocket upgrades pass through it).
    Http1,
    /// HTTP/2 with prior knowledge (`kubernetes.io/h2c`, `http2`, `grpc`).
    H2c,
}

/// Load-balancing state of one endpoint. It lives as long as the endpoint stays in config, so
/// in-flight counts survive reloads.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Requests currently in flight to this endpoint.
    pub in_flight: AtomicUsize,
}

/// How the waypoint may reach an endpoint when it connects to it itself (upstream
/// [`UpstreamMode::Auto`](crate::upstream::UpstreamMode::Auto)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum EndpointTransport {
    /// Not in the mesh (or not known to be): plain TCP.
    #[default]
    Plain,
    /// In the ambient mesh: an HBONE tunnel through the endpoint's ztunnel, whose certificate
    /// must carry `identity`.
    Hbone {
        /// The identity the endpoint's ztunnel must present for this workload: the pod's
        /// service account when the pod is known, else any identity of its namespace.
        identity: crate::tls::ExpectedIdentity,
    },
}

/// A ready endpoint of a backend.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Where to connect: the pod IP and the target (container) port.
    pub address: SocketAddr,
    /// Shared load-balancing state.
    pub stats: Arc<EndpointStats>,
    /// Whether the endpoint is in the mesh, and as whom.
    pub transport: EndpointTransport,
}

/// A Service port as a routing target: its ready endpoints and how to speak to them.
#[derive(Clone, Debug)]
pub struct ServiceBackend {
    /// The Service.
    pub service: ResourceRef,
    /// The Service port (not the target port).
    pub port: u16,
    /// The Service's cluster IPs (the virtual addresses clients dial).
    pub cluster_ips: Vec<std::net::IpAddr>,
    /// What the waypoint does with connections to this port, and how it speaks HTTP to the
    /// endpoints.
    pub protocol: ProtocolSelection,
    /// Ready endpoints only; empty means no healthy upstream (503).
    pub endpoints: Vec<Endpoint>,
    /// The DestinationRule settings in force for this port (see [`traffic_policy`]).
    pub policy: Arc<traffic_policy::PortPolicy>,
}

/// A validated configuration: typed resources, their statuses, and the indexes the request path
/// reads. Immutable once built; a reload builds a new one.
#[derive(Debug, Default)]
pub struct Config {
    /// The resources that passed validation.
    pub resources: Resources,
    /// What became of every resource read, the rejected ones included.
    pub statuses: Vec<ResourceStatus>,
    /// Service ports by `(cluster IP, port)`.
    pub(crate) by_destination: HashMap<SocketAddr, Arc<ServiceBackend>>,
    /// Service ports by `(namespace, name, port)`.
    pub(crate) by_name: HashMap<(String, String, u16), Arc<ServiceBackend>>,
    /// ServiceEntry ports by `(namespace, name, port)`.
    pub(crate) by_entry: HashMap<(String, String, u16), Arc<ServiceBackend>>,
    /// ServiceEntry ports by `(host, port)`.
    pub(crate) by_host: HashMap<(String, u16), Arc<ServiceBackend>>,
    /// The TLS server configurations of HTTPS listeners, by Gateway address and port.
    pub frontend_tls: crate::tls::FrontendTls,
    /// HTTPS listeners whose certificates could not be used, by `(Gateway, listener name)`.
    pub(crate) listener_tls_problems: HashMap<(ResourceRef, String), ListenerRefProblem>,
    /// What is bound to this waypoint's Gateway (see [`binding`]).
    pub(crate) binding: binding::Binding,
}

/// Why an HTTPS listener's certificate cannot be used: its `ResolvedRefs` is false.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerRefProblem {
    /// `InvalidCertificateRef` or `RefNotPermitted`.
    pub reason: String,
    /// What is wrong, naming the field (`spec.listeners[0].tls.certificateRefs[0]: ...`).
    pub message: String,
}

impl Config {
    /// The Service port a client reaches by dialling `destination` (a ClusterIP and port).
    pub fn service_at(&self, destination: SocketAddr) -> Option<&Arc<ServiceBackend>> {
        self.by_destination.get(&destination)
    }

    /// The Service port `namespace`/`name`:`port`.
    pub fn service(&self, namespace: &str, name: &str, port: u16) -> Option<&Arc<ServiceBackend>> {
        // A borrowed lookup would need a custom key type; this path runs once per request at
        // most, and the strings are short.
        self.by_name
            .get(&(namespace.to_owned(), name.to_owned(), port))
    }

    /// True when the Service `namespace`/`name` exists (whatever its ports).
    pub fn has_service(&self, namespace: &str, name: &str) -> bool {
        self.resources
            .services
            .iter()
            .any(|s| s.metadata.namespace() == namespace && s.metadata.name == name)
    }

    /// The certificate problem of listener `listener` of `gateway`, when it has one.
    pub fn listener_tls_problem(
        &self,
        gateway: &ResourceRef,
        listener: &str,
    ) -> Option<&ListenerRefProblem> {
        self.listener_tls_problems
            .get(&(gateway.clone(), listener.to_owned()))
    }

    /// The ServiceEntry port `namespace`/`name`:`port`.
    pub fn service_entry(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Option<&Arc<ServiceBackend>> {
        self.by_entry
            .get(&(namespace.to_owned(), name.to_owned(), port))
    }

    /// The ServiceEntry port that host `host` names on `port` (a `Hostname` backendRef).
    pub fn host(&self, host: &str, port: u16) -> Option<&Arc<ServiceBackend>> {
        self.by_host.get(&(host.to_owned(), port))
    }

    /// The host name of a ServiceEntry (its first), the name metrics give its destination.
    pub fn service_entry_host(&self, entry: &ResourceRef) -> Option<&str> {
        if entry.kind != "ServiceEntry" {
            return None;
        }
        self.resources
            .service_entries
            .iter()
            .find(|e| e.metadata.namespace() == entry.namespace && e.metadata.name == entry.name)
            .and_then(|e| e.spec.hosts.first())
            .map(String::as_str)
    }

    /// Every Service and ServiceEntry port, for listings.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<ServiceBackend>> {
        self.by_name.values().chain(self.by_entry.values())
    }
}
