//! `waypoint controller`: a waypoint per Gateway.
//!
//! For every Gateway whose GatewayClass names our controller, the controller applies what makes
//! it a running waypoint (see [`render`]): ServiceAccount, Service, Deployment, and a
//! ClusterRoleBinding to the waypoint's read-only ClusterRole. Once a waypoint pod is Ready it
//! publishes the Gateway's `status.addresses` (the Service hostname, then its ClusterIPs), which
//! is what makes istiod treat the Gateway as a waypoint.
//!
//! Two writers share a Gateway's status: the controller owns `addresses` (and the conditions
//! of a Gateway it refuses to provision, where no waypoint runs to write them); the waypoint
//! pods own the conditions and listeners of the Gateways they serve. Each merges its fields into
//! the status as read and keeps the other's (see `status::merge`), with conditional writes, so
//! neither undoes the other.

pub mod mode;
pub mod options;
pub mod plan;
pub mod rbac;
pub mod render;
mod run;

#[cfg(test)]
mod plan_tests;

pub use mode::{HBONE_PORT, INBOUND_BINDING, Mode, Refusal, check_listeners, mode_of};
pub use options::{RenderOptions, Resources};
pub use plan::{Deletion, Plan, StatusWrite, WATCHED, contains, plan};
pub use render::{Provision, render};
pub use run::{Controller, ControllerSettings, FIELD_MANAGER, RESYNC, Synced};

/// The standard label marking what we manage.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value on everything the controller provisions.
pub const MANAGED_BY: &str = "waypoint-controller";
/// Which controller (by controller name, `/` as `.`) owns a cluster-scoped object, so two
/// controllers with different names never prune each other's.
pub const CONTROLLER_LABEL: &str = "waypoint.dev/controller";
/// The namespace of the Gateway a cluster-scoped object belongs to.
pub const GATEWAY_NAMESPACE_LABEL: &str = "waypoint.dev/gateway-namespace";
