//! What a write produced, as the history keeps it and watches receive it, and the resource
//! type a request addresses.

use std::sync::Arc;

use serde_json::Value;

/// A resource type as a request addresses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resource {
    /// API group (`""` for core).
    pub(crate) group: String,
    /// URL plural.
    pub(crate) plural: String,
    /// The kind, when known from the kind table.
    pub(crate) kind: Option<String>,
    /// Whether objects live in namespaces.
    pub(crate) namespaced: bool,
}

impl Resource {
    /// `plural.group` (or `plural` for core), as the API server names a resource in messages.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(crate) fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    /// The namespace an object of this type is stored under (`""` when cluster-scoped).
    pub(crate) fn scope<'a>(&self, namespace: Option<&'a str>) -> &'a str {
        if self.namespaced {
            namespace.unwrap_or("")
        } else {
            ""
        }
    }
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeType {
    /// Created.
    Added,
    /// Replaced, patched, or its status written.
    Modified,
    /// Deleted (the object is its last state).
    Deleted,
}

impl ChangeType {
    /// The watch event `type`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One write, as kept in the history and sent to watches.
#[derive(Debug)]
pub(crate) struct Change {
    /// The resourceVersion the write produced.
    pub(crate) rv: u64,
    pub(crate) group: String,
    pub(crate) plural: String,
    pub(crate) namespace: String,
    /// What happened.
    pub(crate) change: ChangeType,
    /// The object after the write (before it, for a delete), with the new resourceVersion.
    pub(crate) object: Value,
}

impl Change {
    pub(crate) fn concerns(&self, resource: &Resource, namespace: Option<&str>) -> bool {
        self.group == resource.group
            && self.plural == resource.plural
            && namespace.is_none_or(|ns| ns == self.namespace)
    }
}

/// What an open watch receives from the store.
#[derive(Debug)]
pub(crate) enum WatchMessage {
    /// A live change.
    Change(Arc<Change>),
    /// The emulator breaks the connection (fault injection).
    Break,
}
