//! Building a chain for a config snapshot: the factories, what they build with, and what they
//! report.
//!
//! A filter is built once per snapshot, so everything it needs from config (route tables,
//! compiled policies, a vendor's typed `ExtensionRef` spec) is compiled before the first request
//! and only read afterwards. Problems are reported per resource and the resource is left out;
//! the rest is served.

use std::fmt;
use std::sync::Arc;

use crate::config::{Config, ResourceRef};
use crate::route_status::{GatewayStatus, RouteParentStatus};

use super::Filter;
use super::extension::{ExtensionError, ExtensionRegistry, ExtensionTarget};

/// Builds one filter of the chain for each config snapshot.
///
/// A filter that needs nothing from config does not need its own factory:
/// [`FilterSet::filter`](super::FilterSet::filter) shares one instance across snapshots, and
/// [`FilterSet::build_with`](super::FilterSet::build_with) takes a closure.
pub trait FilterFactory: Send + Sync + 'static {
    /// The filter's name, for logs.
    fn name(&self) -> &str;
    /// Builds the filter for `cx.config()`.
    fn build(&self, cx: &mut BuildContext<'_>) -> Arc<dyn Filter>;
}

impl<F: FilterFactory + ?Sized> FilterFactory for Arc<F> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn build(&self, cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        (**self).build(cx)
    }
}

/// The factory of a filter that needs no per-snapshot compilation: every snapshot gets the same
/// instance.
pub(super) struct Shared(pub(super) Arc<dyn Filter>);

impl FilterFactory for Shared {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn build(&self, _cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        self.0.clone()
    }
}

/// A factory written as a closure over the build context.
pub(super) struct BuildFn<F> {
    pub(super) name: String,
    pub(super) build: F,
}

impl<F> FilterFactory for BuildFn<F>
where
    F: Fn(&mut BuildContext<'_>) -> Arc<dyn Filter> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn build(&self, cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        (self.build)(cx)
    }
}

/// A problem a filter factory found with a resource while building.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildReport {
    /// The resource at fault.
    pub resource: ResourceRef,
    /// The condition type, as the upstream API names it (`Accepted`, `ResolvedRefs`).
    pub condition: String,
    /// The reason, as the upstream API names it (`BackendNotFound`, `InvalidKind`, ...).
    pub reason: String,
    /// A human message naming the field.
    pub message: String,
}

/// What a [`FilterFactory`] gets to build with.
pub struct BuildContext<'a> {
    config: &'a Config,
    extensions: &'a ExtensionRegistry,
    reports: Vec<BuildReport>,
    route_parents: Vec<RouteParentStatus>,
    gateways: Vec<GatewayStatus>,
}

impl fmt::Debug for BuildContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("extensions", self.extensions)
            .field("reports", &self.reports)
            .finish_non_exhaustive()
    }
}

/// Everything the factories of one build reported.
#[derive(Debug, Default)]
pub struct BuildOutput {
    /// Per-resource problems.
    pub reports: Vec<BuildReport>,
    /// Per-parent route conditions.
    pub route_parents: Vec<RouteParentStatus>,
    /// Gateway and listener status.
    pub gateways: Vec<GatewayStatus>,
}

impl<'a> BuildContext<'a> {
    /// A build context over `config`, resolving `ExtensionRef`s with `extensions`.
    pub fn new(config: &'a Config, extensions: &'a ExtensionRegistry) -> Self {
        BuildContext {
            config,
            extensions,
            reports: Vec::new(),
            route_parents: Vec::new(),
            gateways: Vec::new(),
        }
    }

    /// The validated config being built.
    pub fn config(&self) -> &'a Config {
        self.config
    }

    /// The registry of vendor filters, for Gateway API `ExtensionRef`.
    pub fn extensions(&self) -> &'a ExtensionRegistry {
        self.extensions
    }

    /// Builds the vendor filter a Gateway API `ExtensionRef` names: `group`/`kind`/`name` in
    /// `namespace` (the route's). The registered factory gets the referenced object from the
    /// config; what it reports lands on that object. When the build fails, the object (if the
    /// config holds it) gets a false `Accepted` condition with reason `Invalid`, and the error
    /// is returned for the caller to report on the route.
    pub fn build_extension(
        &mut self,
        group: &str,
        kind: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Arc<dyn Filter>, ExtensionError> {
        let object = self
            .config
            .resources
            .other(group, kind, namespace, name)
            .map(|o| &o.body);
        let target = ExtensionTarget {
            group,
            kind,
            name,
            namespace,
            object,
        };
        let result = self.extensions.build(&target, &mut self.reports);
        if let (Err(error), Some(_)) = (&result, object) {
            self.reports.push(BuildReport {
                resource: target.resource(),
                condition: "Accepted".into(),
                reason: "Invalid".into(),
                message: error.to_string(),
            });
        }
        result
    }

    /// Records a problem with a resource (it shows in `waypoint check` and the logs).
    pub fn report(&mut self, report: BuildReport) {
        self.reports.push(report);
    }

    /// The problems recorded so far.
    pub fn reports(&self) -> &[BuildReport] {
        &self.reports
    }

    /// Records the conditions of a route for one of its parents (`status.parents[]`).
    pub fn report_parent(&mut self, status: RouteParentStatus) {
        self.route_parents.push(status);
    }

    /// Records the status of a Gateway and its listeners.
    pub fn report_gateway(&mut self, status: GatewayStatus) {
        self.gateways.push(status);
    }

    /// The problems recorded, without the route and Gateway status.
    pub fn into_reports(self) -> Vec<BuildReport> {
        self.reports
    }

    /// Everything recorded.
    pub fn finish(self) -> BuildOutput {
        BuildOutput {
            reports: self.reports,
            route_parents: self.route_parents,
            gateways: self.gateways,
        }
    }
}
