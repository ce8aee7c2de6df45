//! Serde types of the Kubernetes resources waypoint reads, field for field as the upstream APIs
//! spell them (Gateway API v1.6 with its experimental fields, core Service/EndpointSlice/Secret,
//! Istio security), with the defaults the API server would apply so a file means what `kubectl apply`
//! of it would mean. Closed sets are enums, so a bad value fails with serde's own message.

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::Deserialize;

use super::ResourceRef;

/// Implements [`Object`] for a resource type with a `metadata` field. Defined before the
/// submodules so each can use it; paths are absolute so it expands anywhere.
macro_rules! object {
    ($ty:ty, $kind:literal) => {
        impl $crate::config::resources::Object for $ty {
            const KIND: &'static str = $kind;
            fn metadata(&self) -> &$crate::config::resources::ObjectMeta {
                &self.metadata
            }
        }
    };
}

mod core;
mod destination_rule;
mod gateway;
mod grpc_route;
mod http_route;
mod istio;
mod route;
mod service_entry;
mod tcp_route;
mod tls_route;

// The submodules only organise the source: every type is used from here, as before the split.
pub use self::core::*;
pub use destination_rule::*;
pub use gateway::*;
pub use grpc_route::*;
pub use http_route::*;
pub use istio::*;
pub use route::*;
pub use service_entry::*;
pub use tcp_route::*;
pub use tls_route::*;

/// Kubernetes object metadata (the fields waypoint reads).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace; `None` means `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (Istio reads `istio.io/dry-run` here).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time, a route precedence tie-breaker. Kubernetes always writes UTC
    /// (`...Z`), so these strings order correctly as strings.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    /// The spec's generation, set by the API server; status conditions report the one they
    /// were computed from (`observedGeneration`).
    #[serde(default)]
    pub generation: Option<i64>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A top-level resource kind waypoint understands.
pub trait Object {
    /// The kind, as manifests spell it.
    const KIND: &'static str;
    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// `Kind namespace/name`.
    fn resource_ref(&self) -> ResourceRef {
        let m = self.metadata();
        ResourceRef::new(Self::KIND, m.namespace(), m.name.clone())
    }
}

/// A resource together with where it was read from (`file.yaml#3`: third document), so every
/// later message can point the user at the manifest. Dereferences to the resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced<T> {
    /// Where the resource came from.
    pub source: String,
    /// The resource.
    pub resource: T,
}

impl<T> Deref for Sourced<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.resource
    }
}

/// A resource of a kind waypoint does not interpret, kept verbatim so vendor `ExtensionRef`
/// filters can read their own kinds.
#[derive(Clone, Debug, PartialEq)]
pub struct RawObject {
    /// `apiVersion` (`example.com/v1`).
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The whole document, as read.
    pub body: serde_json::Value,
}

impl RawObject {
    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }
}

/// Every valid resource read, in the order read.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// Gateways.
    pub gateways: Vec<Sourced<Gateway>>,
    /// Services (all types; ExternalName ones get no backend).
    pub services: Vec<Sourced<Service>>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<Sourced<EndpointSlice>>,
    /// HTTPRoutes.
    pub http_routes: Vec<Sourced<HttpRoute>>,
    /// GRPCRoutes.
    pub grpc_routes: Vec<Sourced<GrpcRoute>>,
    /// TCPRoutes.
    pub tcp_routes: Vec<Sourced<TcpRoute>>,
    /// TLSRoutes.
    pub tls_routes: Vec<Sourced<TlsRoute>>,
    /// ReferenceGrants.
    pub reference_grants: Vec<Sourced<ReferenceGrant>>,
    /// Secrets (TLS certificates of HTTPS listeners).
    pub secrets: Vec<Sourced<Secret>>,
    /// Istio AuthorizationPolicies.
    pub authorization_policies: Vec<Sourced<AuthorizationPolicy>>,
    /// Istio RequestAuthentications.
    pub request_authentications: Vec<Sourced<RequestAuthentication>>,
    /// Istio ServiceEntries.
    pub service_entries: Vec<Sourced<ServiceEntry>>,
    /// Istio DestinationRules.
    pub destination_rules: Vec<Sourced<DestinationRule>>,
    /// Kinds waypoint does not interpret.
    pub others: Vec<Sourced<RawObject>>,
}

impl Resources {
    /// The object of an unknown kind `group`/`kind` `namespace`/`name` (an `ExtensionRef` target).
    pub fn other(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<&RawObject> {
        self.others.iter().map(|o| &o.resource).find(|o| {
            o.group() == group
                && o.kind == kind
                && o.metadata.namespace() == namespace
                && o.metadata.name == name
        })
    }
}
