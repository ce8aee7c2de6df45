//! The objects every reflector has seen, one slot per watched kind, and the signal that
//! something changed.
//!
//! Slots are ordered maps keyed by namespace and name, so a snapshot lists objects in the same
//! order whatever order the events came in: the builder's duplicate detection and the order of
//! statuses then never depend on timing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::Notify;

use crate::api::ApiResource;

/// Namespace (empty for cluster-scoped objects) and name.
pub(crate) type ObjectKey = (String, String);

/// The namespace and name of `object`; `None` when it has no name.
pub(crate) fn object_key(object: &Value) -> Option<ObjectKey> {
    let meta = object.get("metadata")?;
    let name = meta.get("name").and_then(Value::as_str)?;
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some((namespace.to_owned(), name.to_owned()))
}

#[derive(Default)]
struct Slot {
    synced: bool,
    objects: BTreeMap<ObjectKey, Value>,
}

/// Every kind's objects.
pub(crate) struct Stores {
    kinds: Vec<&'static str>,
    slots: Mutex<Vec<Slot>>,
    /// Notified on every change (a permit is kept when nobody waits, so none is lost).
    pub(crate) changed: Notify,
}

impl Stores {
    /// Empty, unsynced slots for `resources`, in that order.
    pub(crate) fn new(resources: &[ApiResource]) -> Self {
        Stores {
            kinds: resources.iter().map(|r| r.kind).collect(),
            slots: Mutex::new(resources.iter().map(|_| Slot::default()).collect()),
            changed: Notify::new(),
        }
    }

    fn with_slot(&self, slot: usize, change: impl FnOnce(&mut Slot)) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(slot) {
            change(slot);
        }
        drop(slots);
        self.changed.notify_one();
    }

    /// Replaces a slot's objects with a fresh list and marks it synced.
    pub(crate) fn replace(&self, slot: usize, items: Vec<Value>) {
        let kind = self.kinds.get(slot).copied().unwrap_or_default();
        let mut objects = BTreeMap::new();
        for item in items {
            match object_key(&item) {
                Some(key) => {
                    objects.insert(key, item);
                }
                None => tracing::warn!(kind, "ignoring a listed object without a name"),
            }
        }
        self.with_slot(slot, |s| {
            s.objects = objects;
            s.synced = true;
        });
    }

    /// Adds or replaces one object.
    pub(crate) fn upsert(&self, slot: usize, object: Value) {
        match object_key(&object) {
            Some(key) => self.with_slot(slot, |s| {
                s.objects.insert(key, object);
            }),
            None => {
                let kind = self.kinds.get(slot).copied().unwrap_or_default();
                tracing::warn!(kind, "ignoring a watched object without a name");
            }
        }
    }

    /// Removes one object.
    pub(crate) fn remove(&self, slot: usize, key: &ObjectKey) {
        self.with_slot(slot, |s| {
            s.objects.remove(key);
        });
    }

    /// Every slot's objects, in slot order; `None` until every slot has synced.
    pub(crate) fn slots(&self) -> Option<Vec<Vec<Value>>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if !slots.iter().all(|s| s.synced) {
            return None;
        }
        Some(
            slots
                .iter()
                .map(|s| s.objects.values().cloned().collect())
                .collect(),
        )
    }

    /// Every object with its source label (`kube:HTTPRoute default/echo`), by kind in slot
    /// order, then namespace and name; `None` until every slot has synced.
    pub(crate) fn objects(&self) -> Option<Vec<(String, Value)>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if !slots.iter().all(|s| s.synced) {
            return None;
        }
        let mut all = Vec::with_capacity(slots.iter().map(|s| s.objects.len()).sum());
        for (kind, slot) in self.kinds.iter().zip(slots.iter()) {
            for ((namespace, name), object) in &slot.objects {
                let label = if namespace.is_empty() {
                    format!("kube:{kind} {name}")
                } else {
                    format!("kube:{kind} {namespace}/{name}")
                };
                all.push((label, object.clone()));
            }
        }
        Some(all)
    }
}
