//! Writing status back to the API server: Gateway API status for the GatewayClasses and
//! Gateways we implement and for the routes attached to them, from the same snapshots the
//! proxy serves, by one replica at a time.
//!
//! The pipeline is `desired` (snapshot → the status we want, pure) → `merge` (with the object
//! as read: times kept, other controllers' data kept) → `writer` (only what differs, conditional
//! on `resourceVersion`, retried) under `lease` (only the Lease holder writes).
//!
//! Why the status is computed from the snapshot and not by a separate reconciler: the snapshot
//! is what is served, so status can never claim a route is accepted that the proxy does not
//! route, or the reverse.

mod controller;
pub(crate) mod desired;
mod lease;
pub(crate) mod merge;
mod metrics;
pub(crate) mod schema;
mod settings;
mod writer;

#[cfg(test)]
mod desired_tests;
#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod schema_tests;

pub use controller::{ControllerName, ControllerNameError, DEFAULT_CONTROLLER_NAME};
pub use desired::{
    Desired, DesiredStatus, ObjectKey, Scope, StatusKind, desired_status, parent_ref_json,
    serves_service_parent,
};
pub use lease::{
    Elector, Leadership, LeaseNameError, LeaseSettings, default_lease_name, holder_identity,
    lease_name, lease_namespace,
};
pub use metrics::{StatusMetrics, WriteLabels};
pub use settings::StatusSettings;
pub use writer::StatusWriter;
