//! Istio `ServiceEntry` (`networking.istio.io` v1 / v1beta1 / v1alpha3): a service the mesh
//! does not learn from Kubernetes, most often an external host (`api.example.com`) that an
//! egress waypoint fronts. Field for field as Istio's API names them; unknown fields are
//! rejected so that a typo does not silently change what is served.
//!
//! The enums use Istio's proto names (`MESH_EXTERNAL`, `DNS`), which is also what the API
//! server stores. Istio's JSON also accepts the enum numbers; manifests never use them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ObjectMeta;

/// The API group of ServiceEntry (and of the `Hostname` backend kind).
pub const ISTIO_NETWORKING_GROUP: &str = "networking.istio.io";

/// An Istio ServiceEntry.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ServiceEntry {
    /// Metadata (`istio.io/use-waypoint` binds it to a waypoint, as for a Service).
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: ServiceEntrySpec,
}
object!(ServiceEntry, "ServiceEntry");

/// The spec of a ServiceEntry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// The host names of the service (`api.example.com`, `*.example.com`); the names routes,
    /// DestinationRules and metrics know it by.
    pub hosts: Vec<String>,
    /// Virtual IPs (or CIDRs) clients dial to reach the service.
    pub addresses: Vec<String>,
    /// The ports of the service.
    pub ports: Vec<ServiceEntryPort>,
    /// Whether the service is part of the mesh (`MESH_INTERNAL`) or outside it.
    pub location: Location,
    /// How the endpoints are found.
    pub resolution: Resolution,
    /// Endpoints (for `STATIC`, and for `DNS` when given as names).
    pub endpoints: Vec<WorkloadEntry>,
    /// Pods (by label) that are the endpoints, instead of `endpoints`.
    pub workload_selector: Option<EntryWorkloadSelector>,
    /// Namespaces the entry is visible to (`.` own, `*` all).
    pub export_to: Vec<String>,
    /// Identities the endpoints' certificates may carry (for Istio mTLS to them).
    pub subject_alt_names: Vec<String>,
}

/// One port of a ServiceEntry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntryPort {
    /// The port number clients dial.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `MONGO`, `TCP` or `TLS` (any case).
    #[serde(default)]
    pub protocol: String,
    /// The port's name (endpoints' `ports` map names to numbers).
    #[serde(default)]
    pub name: String,
    /// The port the endpoints listen on, when not `number` (and not given per endpoint).
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// `spec.location`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: endpoints are reached in plain TCP (or TLS a DestinationRule
    /// originates), never over HBONE. Istio's default.
    #[default]
    MeshExternal,
    /// Part of the mesh: endpoints may be ambient workloads reached over HBONE.
    MeshInternal,
}

/// `spec.resolution`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// No resolution: the connection goes to the address the client dialled. Istio's default.
    #[default]
    None,
    /// The endpoints are the IP addresses in `endpoints` (or the selected Pods).
    Static,
    /// The endpoints' names (or the hosts) are resolved in DNS; every address is used.
    Dns,
    /// As `DNS`, but one address at a time.
    DnsRoundRobin,
    /// Resolved per request from the request's host (Istio's dynamic forward proxy).
    DynamicDns,
}

/// One endpoint of a ServiceEntry (Istio's `WorkloadEntry` spec, inline).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct WorkloadEntry {
    /// An IP address, or a DNS name (resolution `DNS`), or `unix://` (not for waypoints).
    pub address: String,
    /// Port name → the port this endpoint listens on for it.
    pub ports: BTreeMap<String, u32>,
    /// Labels (DestinationRule subsets select on them).
    pub labels: BTreeMap<String, String>,
    /// The network the endpoint is on (multi-network meshes).
    pub network: String,
    /// `region/zone/subzone`.
    pub locality: String,
    /// Load-balancing weight.
    pub weight: u32,
    /// The endpoint's service account (its identity, when in the mesh).
    pub service_account: String,
}

/// `spec.workloadSelector` of a ServiceEntry: Pods by label (note: `labels`, not the
/// `matchLabels` of security policies).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EntryWorkloadSelector {
    /// Labels a Pod must carry, all of them.
    pub labels: BTreeMap<String, String>,
}
