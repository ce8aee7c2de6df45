//! Vendor filters named by Gateway API `ExtensionRef`s, registered by API group and kind.
//!
//! An `ExtensionRef` on a route rule names an object (`group`, `kind`, `name`, in the route's
//! namespace). Manifests of vendor kinds are kept verbatim in the config, so the factory
//! registered for that group/kind can read the object it was pointed at. Two ways to register:
//!
//! - **Typed** ([`ExtensionRegistry::register_typed`], or
//!   [`FilterSet::extension`](super::FilterSet::extension)): the object's `spec` is deserialized
//!   into the vendor's own `serde::Deserialize` type before the factory runs; a spec that does
//!   not fit is refused with the path of the field at fault (`spec.header.name: invalid type`).
//!   The factory gets an [`Extension`] that can also report conditions on the object.
//! - **Untyped** ([`ExtensionFactory`], [`ExtensionRegistry::register`]): the factory gets the
//!   object's manifest as JSON, or `None` when the config holds no such object.
//!
//! A failed build is reported twice: on the route (the rule is refused, as for any invalid
//! filter) and on the vendor object (`Accepted=False`, reason `Invalid`), so the owner of either
//! sees why.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::ResourceRef;

use super::{BuildReport, Filter};

/// Builds a vendor filter from the referenced object's manifest, untyped.
pub trait ExtensionFactory: Send + Sync + 'static {
    /// Builds the filter for the referenced object. `object` is the object's manifest when the
    /// config holds one of that kind and name (vendor kinds are kept verbatim), `None` otherwise.
    fn build(
        &self,
        name: &str,
        namespace: &str,
        object: Option<&Value>,
    ) -> Result<Arc<dyn Filter>, String>;
}

impl<F> ExtensionFactory for F
where
    F: Fn(&str, &str, Option<&Value>) -> Result<Arc<dyn Filter>, String> + Send + Sync + 'static,
{
    fn build(
        &self,
        name: &str,
        namespace: &str,
        object: Option<&Value>,
    ) -> Result<Arc<dyn Filter>, String> {
        self(name, namespace, object)
    }
}

/// Why the filter an `ExtensionRef` names could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    /// No factory is registered for the group and kind.
    #[error("no filter is registered for {group}/{kind}")]
    NotRegistered {
        /// The API group.
        group: String,
        /// The kind.
        kind: String,
    },
    /// A typed factory's object is not in the config.
    #[error("{kind} {namespace}/{name} not found")]
    ObjectNotFound {
        /// The kind.
        kind: String,
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// The object's `spec` does not deserialize into the factory's type.
    #[error("{path}: {message}")]
    InvalidSpec {
        /// The field at fault, from the object's root (`spec.header.name`).
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The factory refused the object.
    #[error("{0}")]
    Refused(String),
}

/// The object an `ExtensionRef` names, as the registry resolves it.
pub(super) struct ExtensionTarget<'a> {
    pub(super) group: &'a str,
    pub(super) kind: &'a str,
    pub(super) name: &'a str,
    pub(super) namespace: &'a str,
    pub(super) object: Option<&'a Value>,
}

impl ExtensionTarget<'_> {
    pub(super) fn resource(&self) -> ResourceRef {
        ResourceRef::new(self.kind, self.namespace, self.name)
    }
}

/// What a typed extension factory builds from: the referenced object's name and its `spec`, in
/// the vendor's type, and a way to report conditions on the object.
pub struct Extension<'a, C> {
    /// The object's name.
    pub name: &'a str,
    /// The object's namespace (the route's).
    pub namespace: &'a str,
    /// The object's `spec`, deserialized.
    pub spec: C,
    resource: ResourceRef,
    reports: &'a mut Vec<BuildReport>,
}

impl<C: fmt::Debug> fmt::Debug for Extension<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extension")
            .field("resource", &self.resource)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl<C> Extension<'_, C> {
    /// The referenced object.
    pub fn resource(&self) -> &ResourceRef {
        &self.resource
    }

    /// Records a false condition on the referenced object (`condition`/`reason` as your API
    /// names them, `message` for people). It shows in `waypoint check`, `/config_dump` and the
    /// logs, like the built-ins' reports. The build may still succeed (a deprecated field, say).
    pub fn report(
        &mut self,
        condition: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.reports.push(BuildReport {
            resource: self.resource.clone(),
            condition: condition.into(),
            reason: reason.into(),
            message: message.into(),
        });
    }
}

/// One registered factory, typed or not, as the registry calls it.
trait BuildExtension: Send + Sync + 'static {
    fn build(
        &self,
        target: &ExtensionTarget<'_>,
        reports: &mut Vec<BuildReport>,
    ) -> Result<Arc<dyn Filter>, ExtensionError>;
}

struct Untyped<F>(F);

impl<F: ExtensionFactory> BuildExtension for Untyped<F> {
    fn build(
        &self,
        target: &ExtensionTarget<'_>,
        _reports: &mut Vec<BuildReport>,
    ) -> Result<Arc<dyn Filter>, ExtensionError> {
        self.0
            .build(target.name, target.namespace, target.object)
            .map_err(ExtensionError::Refused)
    }
}

struct Typed<C, F> {
    build: F,
    spec: PhantomData<fn() -> C>,
}

impl<C, F> BuildExtension for Typed<C, F>
where
    C: DeserializeOwned + 'static,
    F: Fn(Extension<'_, C>) -> Result<Arc<dyn Filter>, String> + Send + Sync + 'static,
{
    fn build(
        &self,
        target: &ExtensionTarget<'_>,
        reports: &mut Vec<BuildReport>,
    ) -> Result<Arc<dyn Filter>, ExtensionError> {
        let object = target
            .object
            .ok_or_else(|| ExtensionError::ObjectNotFound {
                kind: target.kind.to_owned(),
                namespace: target.namespace.to_owned(),
                name: target.name.to_owned(),
            })?;
        // An object without a spec reads as an empty one, so a type whose fields all have
        // defaults accepts it.
        let empty = Value::Object(Default::default());
        let spec = object.get("spec").unwrap_or(&empty);
        let spec: C = serde_path_to_error::deserialize(spec).map_err(|error| {
            let path = error.path().to_string();
            ExtensionError::InvalidSpec {
                path: if path == "." {
                    "spec".into()
                } else {
                    format!("spec.{path}")
                },
                message: error.into_inner().to_string(),
            }
        })?;
        (self.build)(Extension {
            name: target.name,
            namespace: target.namespace,
            spec,
            resource: target.resource(),
            reports,
        })
        .map_err(ExtensionError::Refused)
    }
}

/// Vendor filters by (API group, kind), for Gateway API `ExtensionRef` filters.
#[derive(Default, Clone)]
pub struct ExtensionRegistry {
    factories: HashMap<(String, String), Arc<dyn BuildExtension>>,
}

impl fmt::Debug for ExtensionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl ExtensionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an untyped factory for `ExtensionRef`s of `group`/`kind`, replacing any before
    /// it.
    pub fn register(
        &mut self,
        group: &str,
        kind: &str,
        factory: impl ExtensionFactory,
    ) -> &mut Self {
        self.insert(group, kind, Arc::new(Untyped(factory)))
    }

    /// Registers a typed factory for `ExtensionRef`s of `group`/`kind`, replacing any before
    /// it: the referenced object's `spec` is deserialized into `C` first (see the
    /// [module documentation](self)).
    pub fn register_typed<C, F>(&mut self, group: &str, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned + 'static,
        F: Fn(Extension<'_, C>) -> Result<Arc<dyn Filter>, String> + Send + Sync + 'static,
    {
        let typed = Typed {
            build,
            spec: PhantomData,
        };
        self.insert(group, kind, Arc::new(typed))
    }

    fn insert(&mut self, group: &str, kind: &str, factory: Arc<dyn BuildExtension>) -> &mut Self {
        self.factories
            .insert((group.to_owned(), kind.to_owned()), factory);
        self
    }

    /// True when a factory is registered for `group`/`kind`.
    pub fn contains(&self, group: &str, kind: &str) -> bool {
        self.factories
            .contains_key(&(group.to_owned(), kind.to_owned()))
    }

    /// Adds every factory of `other`, replacing those of the same group and kind.
    pub fn extend(&mut self, other: ExtensionRegistry) {
        self.factories.extend(other.factories);
    }

    pub(super) fn build(
        &self,
        target: &ExtensionTarget<'_>,
        reports: &mut Vec<BuildReport>,
    ) -> Result<Arc<dyn Filter>, ExtensionError> {
        let factory = self
            .factories
            .get(&(target.group.to_owned(), target.kind.to_owned()))
            .ok_or_else(|| ExtensionError::NotRegistered {
                group: target.group.to_owned(),
                kind: target.kind.to_owned(),
            })?;
        factory.build(target, reports)
    }
}
