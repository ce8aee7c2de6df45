//! # waypoint-filters
//!
//! The built-in filters of the waypoint proxy. Each is an ordinary
//! [`waypoint_core::filter::Filter`] built by a [`waypoint_core::filter::FilterFactory`]: a vendor
//! filter has exactly the same powers.
//!
//! - [`authn`]: Istio RequestAuthentication (JWT validation, request principals).
//! - [`authz`]: Istio AuthorizationPolicy (ALLOW, DENY, AUDIT, CUSTOM via ext_authz).
//! - [`route`]: Gateway API HTTPRoute and GRPCRoute routing for Service (GAMMA) and Gateway
//!   parents, with per-parent route status.
//!
//! The chain runs them in that order, as Istio's waypoint does (authentication, then
//! authorization, then the router), except that CUSTOM (ext_authz) policies are checked by the
//! authz filter after JWT validation rather than before it.

use std::sync::Arc;

use waypoint_core::filter::FilterFactory;

pub mod authn;
pub mod authz;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod route;

/// The built-in filters with their settings; [`Builtins::factories`] gives the chain.
#[derive(Debug, Default)]
pub struct Builtins {
    /// JWT validation.
    pub authn: authn::AuthnFactory,
    /// AuthorizationPolicy enforcement (root namespace, this waypoint's Gateway, ext_authz
    /// providers, path normalization).
    pub authz: authz::AuthzFactory,
}

impl Builtins {
    /// The built-in chain, in the order the waypoint runs it: authn, authz, route. A vendor
    /// inserts its own factories anywhere in this list.
    pub fn factories(self) -> Vec<Arc<dyn FilterFactory>> {
        vec![
            Arc::new(self.authn),
            Arc::new(self.authz),
            Arc::new(route::RouteFactory),
        ]
    }
}

/// The built-in chain with default settings.
pub fn builtin_factories() -> Vec<Arc<dyn FilterFactory>> {
    Builtins::default().factories()
}
