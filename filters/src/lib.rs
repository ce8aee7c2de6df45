//! # waypoint-filters
//!
//! The built-in filters of the waypoint proxy. Each is an ordinary
//! [`waypoint_core::filter::Filter`] built by a [`waypoint_core::filter::FilterFactory`]: a vendor
//! filter has exactly the same powers.
//!
//! - [`route`]: Gateway API HTTPRoute routing for Service (GAMMA) parents.

use std::sync::Arc;

use waypoint_core::filter::FilterFactory;

pub mod route;

/// The built-in filter chain, in the order the waypoint runs it.
pub fn builtin_factories() -> Vec<Arc<dyn FilterFactory>> {
    vec![Arc::new(route::RouteFactory)]
}
