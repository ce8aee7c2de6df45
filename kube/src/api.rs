//! The API server as waypoint uses it: resource types by group/version/plural, and the verbs
//! (get, list, watch, create, replace, replace status) over plain JSON objects.
//!
//! Objects stay `serde_json::Value` on purpose: the config source hands them to the same
//! snapshot builder that reads manifest files (which names every bad field), and the status
//! writer must keep other controllers' entries byte for byte, which a typed round trip would
//! not guarantee.

use serde_json::Value;
use tokio::sync::mpsc;

/// A Kubernetes resource type as the API serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApiResource {
    /// API group; `""` for the core group.
    pub group: &'static str,
    /// Version (`v1`).
    pub version: &'static str,
    /// Kind (`HTTPRoute`).
    pub kind: &'static str,
    /// The plural the URL uses (`httproutes`).
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl ApiResource {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection URL path: every namespace when `namespace` is `None` (or the type is
    /// cluster-scoped), else one namespace.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.plural),
            None => format!("{base}/{}", self.plural),
        }
    }

    /// The URL path of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }
}

/// The resource types waypoint reads and writes.
pub mod kinds {
    use waypoint_core::config::resources::GATEWAY_API_GROUP;

    use super::ApiResource;

    const fn gateway_api(
        kind: &'static str,
        plural: &'static str,
        namespaced: bool,
    ) -> ApiResource {
        ApiResource {
            group: GATEWAY_API_GROUP,
            version: "v1",
            kind,
            plural,
            namespaced,
        }
    }

    /// `GatewayClass` (cluster-scoped).
    pub const GATEWAY_CLASS: ApiResource = gateway_api("GatewayClass", "gatewayclasses", false);
    /// `Gateway`.
    pub const GATEWAY: ApiResource = gateway_api("Gateway", "gateways", true);
    /// `HTTPRoute`.
    pub const HTTP_ROUTE: ApiResource = gateway_api("HTTPRoute", "httproutes", true);
    /// `GRPCRoute`.
    pub const GRPC_ROUTE: ApiResource = gateway_api("GRPCRoute", "grpcroutes", true);
    /// `TCPRoute` v1 (Gateway API 1.5+; older CRDs serve `v1alpha2`, see [`older_version`]).
    pub const TCP_ROUTE: ApiResource = gateway_api("TCPRoute", "tcproutes", true);
    /// `TLSRoute` v1 (Gateway API 1.5+; older CRDs serve `v1alpha3` or `v1alpha2`).
    pub const TLS_ROUTE: ApiResource = gateway_api("TLSRoute", "tlsroutes", true);
    /// `ReferenceGrant` v1 (Gateway API 1.5+).
    pub const REFERENCE_GRANT: ApiResource = gateway_api("ReferenceGrant", "referencegrants", true);
    /// `ReferenceGrant` v1beta1, for clusters whose CRDs predate v1.
    pub const REFERENCE_GRANT_V1BETA1: ApiResource = ApiResource {
        version: "v1beta1",
        ..REFERENCE_GRANT
    };
    /// The version to read `resource` at when the API server does not serve its version: an
    /// older one whose objects the config types still read (the fields waypoint uses are the
    /// same), or `None` when there is none.
    pub fn older_version(resource: &ApiResource) -> Option<ApiResource> {
        let version = match (resource.group, resource.kind, resource.version) {
            (GATEWAY_API_GROUP, "ReferenceGrant", "v1") => "v1beta1",
            (GATEWAY_API_GROUP, "TCPRoute", "v1") => "v1alpha2",
            (GATEWAY_API_GROUP, "TLSRoute", "v1") => "v1alpha3",
            (GATEWAY_API_GROUP, "TLSRoute", "v1alpha3") => "v1alpha2",
            // Istio before 1.22 serves ServiceEntry at v1beta1 only.
            ("networking.istio.io", "ServiceEntry", "v1") => "v1beta1",
            _ => return None,
        };
        Some(ApiResource {
            version,
            ..*resource
        })
    }

    /// Whether a cluster may lack the kind's CRD altogether (TCPRoute and TLSRoute, which
    /// older standard-channel installs do not have): then it is read as having no objects,
    /// rather than keeping the source from ever syncing.
    pub fn optional(resource: &ApiResource) -> bool {
        resource.group == GATEWAY_API_GROUP && matches!(resource.kind, "TCPRoute" | "TLSRoute")
    }

    /// `Service`.
    pub const SERVICE: ApiResource = core("Service", "services", true);
    /// `Pod`.
    pub const POD: ApiResource = core("Pod", "pods", true);
    /// `Namespace` (cluster-scoped).
    pub const NAMESPACE: ApiResource = core("Namespace", "namespaces", false);
    /// `Secret` (the certificates of HTTPS listeners).
    pub const SECRET: ApiResource = core("Secret", "secrets", true);
    /// `EndpointSlice`.
    pub const ENDPOINT_SLICE: ApiResource = ApiResource {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        namespaced: true,
    };
    /// Istio `AuthorizationPolicy`.
    pub const AUTHORIZATION_POLICY: ApiResource = ApiResource {
        group: "security.istio.io",
        version: "v1",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        namespaced: true,
    };
    /// Istio `RequestAuthentication`.
    pub const REQUEST_AUTHENTICATION: ApiResource = ApiResource {
        group: "security.istio.io",
        version: "v1",
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        namespaced: true,
    };
    /// Istio `ServiceEntry`.
    pub const SERVICE_ENTRY: ApiResource = ApiResource {
        group: "networking.istio.io",
        version: "v1",
        kind: "ServiceEntry",
        plural: "serviceentries",
        namespaced: true,
    };
    /// Istio `DestinationRule`.
    pub const DESTINATION_RULE: ApiResource = ApiResource {
        group: "networking.istio.io",
        version: "v1",
        kind: "DestinationRule",
        plural: "destinationrules",
        namespaced: true,
    };
    /// `ServiceAccount`: the identity of a provisioned waypoint's pods.
    pub const SERVICE_ACCOUNT: ApiResource = core("ServiceAccount", "serviceaccounts", true);
    /// `Deployment` (`apps/v1`): a provisioned waypoint's pods.
    pub const DEPLOYMENT: ApiResource = ApiResource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
    };
    /// `ClusterRoleBinding` (cluster-scoped): a provisioned waypoint's read access.
    pub const CLUSTER_ROLE_BINDING: ApiResource = ApiResource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
    };
    /// `Lease` (`coordination.k8s.io/v1`): which replica writes status.
    pub const LEASE: ApiResource = ApiResource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
    };

    const fn core(kind: &'static str, plural: &'static str, namespaced: bool) -> ApiResource {
        ApiResource {
            group: "",
            version: "v1",
            kind,
            plural,
            namespaced,
        }
    }
}

/// Why an API call failed, typed by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// 404: the object (or the resource type) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// 409: the object changed since it was read (stale `resourceVersion`), or already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 410: the `resourceVersion` a watch asked for is too old; list again.
    #[error("gone (resource version too old): {0}")]
    Gone(String),
    /// Any other API error status.
    #[error("API server answered {code} {reason}: {message}")]
    Api {
        /// HTTP status code.
        code: u16,
        /// The Status object's `reason` (`Forbidden`, `Invalid`, ...).
        reason: String,
        /// The Status object's `message`.
        message: String,
    },
    /// The API server could not be reached or the connection broke.
    #[error("cannot reach the API server: {0}")]
    Transport(String),
    /// The answer was not what the API promises (bad JSON, missing fields).
    #[error("unexpected answer from the API server: {0}")]
    Decode(String),
}

/// One page of a list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObjectList {
    /// The objects (each with `apiVersion` and `kind` set, even where the server omits them).
    pub items: Vec<Value>,
    /// The list's `metadata.resourceVersion`: watch from here.
    pub resource_version: String,
    /// `metadata.continue`: more pages follow.
    pub continue_token: Option<String>,
}

/// One event of a watch.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// A new object.
    Added(Value),
    /// A changed object.
    Modified(Value),
    /// A deleted object (its last state).
    Deleted(Value),
    /// Nothing changed, but the collection is at this `resourceVersion` now.
    Bookmark(String),
}

/// The events of one watch, in order; the channel closes when the watch ends (the server's
/// timeout, a broken connection). An `Err` (`Gone` for 410) is the last item.
pub type WatchEvents = mpsc::Receiver<Result<WatchEvent, KubeError>>;

/// The verbs waypoint uses. `namespace` is ignored for cluster-scoped types.
///
/// The data plane reads and writes status; `waypoint controller` also applies and deletes the
/// objects it provisions.
#[async_trait::async_trait]
pub trait KubeApi: Send + Sync + 'static {
    /// One object; `Ok(None)` when it does not exist.
    async fn get(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, KubeError>;

    /// One page of the collection (all namespaces when `namespace` is `None`), from
    /// `continue_token` when given.
    async fn list(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        continue_token: Option<&str>,
    ) -> Result<ObjectList, KubeError>;

    /// Changes after `resource_version`, with bookmarks requested.
    async fn watch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<WatchEvents, KubeError>;

    /// Creates `object` (POST); `Conflict` when it exists.
    async fn create(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, KubeError>;

    /// Replaces `name` with `object` (PUT). `object.metadata.resourceVersion` makes it
    /// conditional: `Conflict` when the object changed since.
    async fn replace(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, KubeError>;

    /// Replaces the status subresource of `name` (PUT `.../status`), conditional on
    /// `object.metadata.resourceVersion` as [`replace`](KubeApi::replace) is.
    async fn replace_status(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, KubeError>;

    /// Server-side apply of `object` as `field_manager` (PATCH
    /// `application/apply-patch+yaml`, `force=true`): creates `name` when missing, else sets
    /// the fields `object` names, taking them over from any other manager. Fields we applied
    /// before and leave out now are removed by the server.
    async fn apply(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
        field_manager: &str,
    ) -> Result<Value, KubeError>;

    /// Deletes `name` (its dependents are garbage-collected in the background); `Ok(false)`
    /// when it did not exist.
    async fn delete(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, KubeError>;
}

#[cfg(test)]
mod tests {
    use super::kinds::*;

    #[test]
    fn paths_follow_the_api_server_layout() {
        assert_eq!(
            HTTP_ROUTE.collection_path(Some("default")),
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"
        );
        assert_eq!(SERVICE.collection_path(None), "/api/v1/services");
        assert_eq!(
            NAMESPACE.object_path(Some("ignored"), "default"),
            "/api/v1/namespaces/default"
        );
        assert_eq!(
            REFERENCE_GRANT_V1BETA1.api_version(),
            "gateway.networking.k8s.io/v1beta1"
        );
        assert_eq!(POD.api_version(), "v1");
    }
}
