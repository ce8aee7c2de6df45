//! One way to register filters, for built-ins and vendors alike.
//!
//! A [`FilterSet`] is everything a waypoint's chain is made of: the factories of the chain, in
//! order, and the `ExtensionRef` filters by kind. A bundle of filters (the built-ins, a vendor's
//! product) implements [`Install`] and adds itself to a set; the waypoint builder, `waypoint
//! check` and the filter test harness all take a bundle the same way, so a bundle cannot be
//! wired into one and forgotten in another.
//!
//! ```
//! use waypoint_core::filter::{Decision, FilterSet, Install, request_fn};
//!
//! /// A vendor's bundle: one header filter, no config.
//! struct Stamp;
//!
//! impl Install for Stamp {
//!     fn add_to(self, filters: &mut FilterSet) {
//!         filters.filter(request_fn("stamp", |req, _ctx| {
//!             req.headers_mut().insert("x-stamped", http::HeaderValue::from_static("yes"));
//!             Decision::Continue
//!         }));
//!     }
//! }
//!
//! let mut filters = FilterSet::new();
//! filters.install(Stamp);
//! assert_eq!(filters.names(), ["stamp"]);
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::config::Config;

use super::build::{BuildFn, Shared};
use super::{
    BuildContext, BuildOutput, Decision, Extension, ExtensionFactory, ExtensionRegistry, Filter,
    FilterChain, FilterFactory, Request, RequestContext,
};

/// A bundle of filters that adds itself to a [`FilterSet`]: the built-ins
/// (`waypoint_filters::Builtins`), a vendor's product, or a closure `|set: &mut FilterSet| …`.
pub trait Install {
    /// Adds this bundle's factories and extensions to `filters`.
    fn add_to(self, filters: &mut FilterSet);
}

impl<F: FnOnce(&mut FilterSet)> Install for F {
    fn add_to(self, filters: &mut FilterSet) {
        self(filters)
    }
}

/// A set installs into another: its factories after the other's, its extensions added.
impl Install for FilterSet {
    fn add_to(self, filters: &mut FilterSet) {
        filters.factories.extend(self.factories);
        filters.extensions.extend(self.extensions);
    }
}

/// The filters of a waypoint: the chain's factories, in request order, and the vendor filters
/// `ExtensionRef`s may name.
#[derive(Clone, Default)]
pub struct FilterSet {
    factories: Vec<Arc<dyn FilterFactory>>,
    extensions: ExtensionRegistry,
}

impl fmt::Debug for FilterSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterSet")
            .field("chain", &self.names())
            .field("extensions", &self.extensions)
            .finish()
    }
}

impl FilterSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a bundle.
    pub fn install(&mut self, bundle: impl Install) -> &mut Self {
        bundle.add_to(self);
        self
    }

    /// Appends a factory to the chain: its filter is rebuilt for every config snapshot.
    pub fn factory(&mut self, factory: impl FilterFactory) -> &mut Self {
        self.factories.push(Arc::new(factory));
        self
    }

    /// Appends a filter that needs nothing from config: every snapshot shares this instance.
    pub fn filter(&mut self, filter: impl Filter) -> &mut Self {
        self.factories.push(Arc::new(Shared(Arc::new(filter))));
        self
    }

    /// Appends a filter built for every snapshot by `build`, a factory without its own type.
    pub fn build_with<F>(&mut self, name: impl Into<String>, build: F) -> &mut Self
    where
        F: Fn(&mut BuildContext<'_>) -> Arc<dyn Filter> + Send + Sync + 'static,
    {
        self.factories.push(Arc::new(BuildFn {
            name: name.into(),
            build,
        }));
        self
    }

    /// Registers a typed `ExtensionRef` filter for `group`/`kind`: `build` gets the referenced
    /// object's `spec` as a `C` (see [`ExtensionRegistry::register_typed`]).
    pub fn extension<C, F>(&mut self, group: &str, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned + 'static,
        F: Fn(Extension<'_, C>) -> Result<Arc<dyn Filter>, String> + Send + Sync + 'static,
    {
        self.extensions.register_typed(group, kind, build);
        self
    }

    /// Registers an untyped `ExtensionRef` filter for `group`/`kind` (see
    /// [`ExtensionFactory`]).
    pub fn untyped_extension(
        &mut self,
        group: &str,
        kind: &str,
        factory: impl ExtensionFactory,
    ) -> &mut Self {
        self.extensions.register(group, kind, factory);
        self
    }

    /// Registers every `ExtensionRef` filter of `registry` (replacing those of the same group
    /// and kind).
    pub fn add_extensions(&mut self, registry: ExtensionRegistry) -> &mut Self {
        self.extensions.extend(registry);
        self
    }

    /// The chain's factories' names, in request order.
    pub fn names(&self) -> Vec<&str> {
        self.factories.iter().map(|f| f.name()).collect()
    }

    /// The `ExtensionRef` filters.
    pub fn extensions(&self) -> &ExtensionRegistry {
        &self.extensions
    }

    /// Builds the chain for `config`, with everything the factories reported.
    pub fn build(&self, config: &Config) -> (FilterChain, BuildOutput) {
        let mut cx = BuildContext::new(config, &self.extensions);
        let filters = self.factories.iter().map(|f| f.build(&mut cx)).collect();
        (FilterChain::new(filters), cx.finish())
    }

    /// The factories and the extension registry, for a snapshot store.
    pub fn into_parts(self) -> (Vec<Arc<dyn FilterFactory>>, ExtensionRegistry) {
        (self.factories, self.extensions)
    }
}

/// A filter with only a request phase, written as a synchronous closure: no trait to implement
/// and no `async_trait`. For filters that need their own state or other phases, implement
/// [`Filter`].
pub fn request_fn<F>(name: impl Into<String>, on_request: F) -> RequestFn<F>
where
    F: Fn(&mut Request, &mut RequestContext) -> Decision + Send + Sync + 'static,
{
    RequestFn {
        name: name.into(),
        on_request,
    }
}

/// The filter [`request_fn`] makes.
pub struct RequestFn<F> {
    name: String,
    on_request: F,
}

impl<F> fmt::Debug for RequestFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestFn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F> Filter for RequestFn<F>
where
    F: Fn(&mut Request, &mut RequestContext) -> Decision + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        (self.on_request)(req, ctx)
    }
}
