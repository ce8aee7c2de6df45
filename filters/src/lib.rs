//! # waypoint-filters
//!
//! The built-in filters of the waypoint proxy. Each is an ordinary
//! [`waypoint_core::filter::Filter`] built by a [`waypoint_core::filter::FilterFactory`], and
//! [`Builtins`] registers them through [`Install`], the entry point a vendor's bundle uses: a
//! vendor filter has exactly the same powers.
//!
//! - [`authn`]: Istio RequestAuthentication (JWT validation, request principals).
//! - [`authz`]: Istio AuthorizationPolicy (ALLOW, DENY, AUDIT, CUSTOM via ext_authz).
//! - [`route`]: Gateway API HTTPRoute and GRPCRoute routing for Service (GAMMA) and Gateway
//!   parents, with per-parent route status.
//!
//! The chain runs them in that order, as Istio's waypoint does (authentication, then
//! authorization, then the router), except that CUSTOM (ext_authz) policies are checked by the
//! authz filter after JWT validation rather than before it.

use waypoint_core::filter::{FilterSet, Install};

pub mod authn;
pub mod authz;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod route;
pub mod scope;

pub use scope::WaypointScope;

/// Everything the built-in filters can be told: what `waypoint run`'s policy flags set. One
/// struct, so a setting is either here and reaches its filter, or does not exist.
#[derive(Clone, Debug, Default)]
pub struct BuiltinSettings {
    /// Which policies are this waypoint's; RequestAuthentication and AuthorizationPolicy read
    /// the same scope.
    pub scope: WaypointScope,
    /// ext_authz providers CUSTOM policies may name.
    pub ext_authz: Vec<authz::ExtAuthzProvider>,
    /// Path normalization before policy matching and for the backend (Istio's BASE by default).
    pub path_normalization: authz::PathNormalization,
    /// Trusted proxy hops in `X-Forwarded-For` (see [`authz::AuthzFactory::xff_trusted_hops`]).
    pub xff_trusted_hops: Option<usize>,
}

/// The built-in filters, built from one [`BuiltinSettings`]. Installed (see [`Install`]) they
/// append authn, authz and route to the chain, in that order; a vendor's filters installed
/// before them run first, after them run once a route is chosen.
#[derive(Debug, Default)]
pub struct Builtins {
    authn: authn::AuthnFactory,
    authz: authz::AuthzFactory,
}

impl Builtins {
    /// The built-in filters with `settings`.
    pub fn new(settings: BuiltinSettings) -> Self {
        // Destructured in full: a setting added to BuiltinSettings and not wired here does not
        // compile.
        let BuiltinSettings {
            scope,
            ext_authz,
            path_normalization,
            xff_trusted_hops,
        } = settings;
        Builtins {
            authn: authn::AuthnFactory {
                scope: scope.clone(),
                ..Default::default()
            },
            authz: authz::AuthzFactory {
                scope,
                providers: ext_authz.into_iter().map(|p| (p.name.clone(), p)).collect(),
                normalization: path_normalization,
                xff_trusted_hops,
            },
        }
    }

    /// The AuthorizationPolicy filter's factory, for explaining decisions offline
    /// (`waypoint authz`).
    pub fn authz(&self) -> &authz::AuthzFactory {
        &self.authz
    }
}

impl Install for Builtins {
    fn add_to(self, filters: &mut FilterSet) {
        filters
            .factory(self.authn)
            .factory(self.authz)
            .factory(route::RouteFactory);
    }
}
