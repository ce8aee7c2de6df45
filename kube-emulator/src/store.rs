//! The emulated etcd: objects by (group, plural), one global resourceVersion counter, the
//! history of changes that watches replay, and the open watches that live changes go to.
//!
//! Everything sits behind one mutex and every method is synchronous: a write and the delivery
//! of its event to open watches happen under the same lock, so a watch registered at version N
//! sees every change after N exactly once, in order, with no gap between replay and live
//! events. The lock is never held across an await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) use crate::change::{Change, ChangeType, Resource, WatchMessage};
use crate::meta::{new_uid, rfc3339};
use crate::status::ApiError;

pub(crate) use crate::paging::ListPage;
use crate::paging::Pages;

mod controllers;
use controllers::{is_service, keep_cluster_ips};

struct Watcher {
    resource: Resource,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<WatchMessage>,
}

/// Where a watch starts.
pub(crate) struct WatchStart {
    /// Changes (or, from version "0", the current objects as ADDED) to send first.
    pub(crate) replay: Vec<Arc<Change>>,
    /// Live changes after the replay.
    pub(crate) live: mpsc::UnboundedReceiver<WatchMessage>,
}

/// The state of the emulated cluster.
pub(crate) struct Store {
    rv: u64,
    objects: HashMap<(String, String), BTreeMap<(String, String), Value>>,
    history: Vec<Arc<Change>>,
    /// Watches from a version below this one get 410 Expired.
    compacted_at: u64,
    watchers: Vec<Watcher>,
    pages: Pages,
    unserved: HashSet<(String, String)>,
    /// ClusterIPs handed out so far.
    services_allocated: u32,
}

/// The first resourceVersion handed out is above this, so that "0" (a client's "any
/// version") never names a real state.
const FIRST_RV: u64 = 1000;

impl Default for Store {
    fn default() -> Self {
        Store {
            rv: FIRST_RV,
            objects: HashMap::new(),
            history: Vec::new(),
            compacted_at: FIRST_RV,
            watchers: Vec::new(),
            pages: Pages::default(),
            unserved: HashSet::new(),
            services_allocated: 0,
        }
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Whether anything but `metadata`, `status`, `apiVersion` and `kind` differs: what bumps
/// `metadata.generation` (for our kinds that is `spec`, or `data` for Secrets).
fn content_changed(old: &Value, new: &Value) -> bool {
    const SKIP: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];
    let fields = |v: &Value| -> BTreeMap<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !SKIP.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    fields(old) != fields(new)
}

impl Store {
    /// The current resourceVersion.
    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Whether `group/version` is served (every version is, unless unserved).
    pub(crate) fn serves(&self, group: &str, version: &str) -> bool {
        !self
            .unserved
            .contains(&(group.to_owned(), version.to_owned()))
    }

    /// Serves `group/version` or stops serving it.
    pub(crate) fn set_served(&mut self, group: &str, version: &str, served: bool) {
        let key = (group.to_owned(), version.to_owned());
        if served {
            self.unserved.remove(&key);
        } else {
            self.unserved.insert(key);
        }
    }

    /// One object.
    pub(crate) fn get(&self, r: &Resource, namespace: Option<&str>, name: &str) -> Option<&Value> {
        self.objects
            .get(&r.key())?
            .get(&(r.scope(namespace).to_owned(), name.to_owned()))
    }

    /// Every stored object of every kind, by group, plural, namespace and name.
    pub(crate) fn all(&self) -> Vec<Value> {
        let mut collections: Vec<_> = self.objects.iter().collect();
        collections.sort_by(|a, b| a.0.cmp(b.0));
        collections
            .into_iter()
            .flat_map(|(_, objects)| objects.values().cloned())
            .collect()
    }

    /// One page of the collection (all namespaces when `namespace` is `None`).
    pub(crate) fn list(
        &mut self,
        r: &Resource,
        namespace: Option<&str>,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        if let Some(token) = continue_token {
            return self.pages.resume(token, limit);
        }
        let items: Vec<Value> = self
            .objects
            .get(&r.key())
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default();
        Ok(self.pages.first(items, self.rv, limit))
    }

    /// Creates an object (`status` is dropped unless `keep_status`, as a server with a
    /// status subresource does).
    pub(crate) fn create(
        &mut self,
        r: &Resource,
        namespace: Option<&str>,
        mut object: Value,
        keep_status: bool,
    ) -> Result<Value, ApiError> {
        let ns = r.scope(namespace).to_owned();
        let name = self.check_identity(r, &ns, &mut object, None)?;
        let key = (ns.clone(), name.clone());
        if self.get(r, Some(&ns), &name).is_some() {
            return Err(ApiError::already_exists(&r.qualified(), &name));
        }
        if !keep_status && let Some(fields) = object.as_object_mut() {
            fields.remove("status");
        }
        if is_service(r) {
            self.allocate_cluster_ip(&mut object);
        }
        let rv = self.next_rv();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(new_uid());
        meta["creationTimestamp"] = json!(rfc3339(SystemTime::now()));
        meta["generation"] = json!(1);
        meta["resourceVersion"] = json!(rv.to_string());
        if let Some(meta) = meta.as_object_mut() {
            meta.remove("deletionTimestamp");
            meta.remove("managedFields");
        }
        self.commit(r, key, ChangeType::Added, object)
    }

    /// Replaces an object's spec and metadata (status kept as stored unless
    /// `status_from_body`), conditional on a given `metadata.resourceVersion`.
    pub(crate) fn replace(
        &mut self,
        r: &Resource,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        status_from_body: bool,
    ) -> Result<Value, ApiError> {
        let ns = r.scope(namespace).to_owned();
        self.check_identity(r, &ns, &mut object, Some(name))?;
        let stored = self.precondition(r, &ns, name, &object)?;
        if is_service(r) {
            keep_cluster_ips(&stored, &mut object);
        }
        if !status_from_body || object.get("status").is_none() {
            set_status(&mut object, stored.get("status"));
        }
        let generation = meta_generation(&stored) + u64::from(content_changed(&stored, &object));
        let rv = self.next_rv();
        for field in ["uid", "creationTimestamp"] {
            object["metadata"][field] = stored["metadata"][field].clone();
        }
        object["metadata"]["generation"] = json!(generation);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if object.get("kind").is_none() {
            object["kind"] = stored["kind"].clone();
        }
        self.commit(r, (ns, name.to_owned()), ChangeType::Modified, object)
    }

    /// Replaces only the status of an object, conditional as [`Store::replace`] is; the
    /// generation stays.
    pub(crate) fn replace_status(
        &mut self,
        r: &Resource,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        let ns = r.scope(namespace).to_owned();
        self.check_identity(r, &ns, &mut body, Some(name))?;
        let mut object = self.precondition(r, &ns, name, &body)?;
        set_status(&mut object, body.get("status"));
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.commit(r, (ns, name.to_owned()), ChangeType::Modified, object)
    }

    /// Deletes an object; the DELETED event carries its last state at a new resourceVersion.
    pub(crate) fn delete(
        &mut self,
        r: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let key = (r.scope(namespace).to_owned(), name.to_owned());
        let removed = self.objects.get_mut(&r.key()).and_then(|m| m.remove(&key));
        let Some(mut object) = removed else {
            return Err(ApiError::not_found(&r.qualified(), name));
        };
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(r, key.0, ChangeType::Deleted, object.clone(), rv);
        if let Some(uid) = meta_str(&object, "uid").map(str::to_owned) {
            self.collect_dependents(&uid);
        }
        Ok(object)
    }

    /// Opens a watch of changes after `from` (`None`, `""` or `"0"`: the current objects as
    /// ADDED, then changes). 410 Expired when `from` predates the kept history.
    pub(crate) fn watch(
        &mut self,
        r: &Resource,
        namespace: Option<&str>,
        from: Option<&str>,
    ) -> Result<WatchStart, ApiError> {
        let replay: Vec<Arc<Change>> = match from.filter(|v| !v.is_empty() && *v != "0") {
            Some(version) => {
                let from: u64 = version.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {version:?}"))
                })?;
                if from < self.compacted_at {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {from} ({})",
                        self.compacted_at
                    )));
                }
                self.history
                    .iter()
                    .filter(|c| c.rv > from && c.concerns(r, namespace))
                    .cloned()
                    .collect()
            }
            None => {
                let current = self.list(r, namespace, None, None)?.items;
                current
                    .into_iter()
                    .map(|object| {
                        Arc::new(Change {
                            rv: self.rv,
                            group: r.group.clone(),
                            plural: r.plural.clone(),
                            namespace: meta_str(&object, "namespace").unwrap_or("").to_owned(),
                            change: ChangeType::Added,
                            object,
                        })
                    })
                    .collect()
            }
        };
        let (tx, live) = mpsc::unbounded_channel();
        self.watchers.push(Watcher {
            resource: r.clone(),
            namespace: namespace.map(str::to_owned),
            tx,
        });
        Ok(WatchStart { replay, live })
    }

    /// Forgets the history: watches from any version before now get 410, as do continue
    /// tokens handed out before.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted_at = self.rv;
        self.pages.expire_all();
    }

    /// Tells every open watch to break its connection.
    pub(crate) fn break_watches(&mut self) {
        for watcher in self.watchers.drain(..) {
            let _ = watcher.tx.send(WatchMessage::Break);
        }
    }

    /// Watches still open.
    pub(crate) fn open_watches(&mut self) -> usize {
        self.watchers.retain(|w| !w.tx.is_closed());
        self.watchers.len()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Checks the body's name and namespace against the URL and fills them in; returns the
    /// name.
    fn check_identity(
        &self,
        r: &Resource,
        ns: &str,
        object: &mut Value,
        url_name: Option<&str>,
    ) -> Result<String, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the body is not a JSON object".into(),
            ));
        }
        if !object.get("metadata").is_some_and(Value::is_object) {
            object["metadata"] = json!({});
        }
        let name = match (meta_str(object, "name"), url_name) {
            (Some(body), Some(url)) if body != url => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body}) does not match the name on the URL ({url})"
                )));
            }
            (Some(name), _) | (None, Some(name)) => name.to_owned(),
            (None, None) => {
                return Err(ApiError::bad_request(format!(
                    "{}: metadata.name: Required value: name is required",
                    r.qualified()
                )));
            }
        };
        match meta_str(object, "namespace") {
            Some(body) if r.namespaced && body != ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({body}) does not match the \
                     namespace sent on the request ({ns})"
                )));
            }
            _ => {}
        }
        let meta = &mut object["metadata"];
        meta["name"] = json!(name);
        if r.namespaced {
            meta["namespace"] = json!(ns);
        } else if let Some(meta) = meta.as_object_mut() {
            meta.remove("namespace");
        }
        Ok(name)
    }

    /// The stored object, when the body's `metadata.resourceVersion` (if any) is current.
    fn precondition(
        &self,
        r: &Resource,
        ns: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let stored = self
            .get(r, Some(ns), name)
            .ok_or_else(|| ApiError::not_found(&r.qualified(), name))?;
        match meta_str(body, "resourceVersion").filter(|v| !v.is_empty()) {
            Some(given) if Some(given) != meta_str(stored, "resourceVersion") => {
                Err(ApiError::conflict(&r.qualified(), name))
            }
            _ => Ok(stored.clone()),
        }
    }

    fn commit(
        &mut self,
        r: &Resource,
        key: (String, String),
        change: ChangeType,
        object: Value,
    ) -> Result<Value, ApiError> {
        let rv = self.rv;
        self.objects
            .entry(r.key())
            .or_default()
            .insert(key.clone(), object.clone());
        self.record(r, key.0, change, object.clone(), rv);
        Ok(object)
    }

    fn record(
        &mut self,
        r: &Resource,
        namespace: String,
        change: ChangeType,
        object: Value,
        rv: u64,
    ) {
        let change = Arc::new(Change {
            rv,
            group: r.group.clone(),
            plural: r.plural.clone(),
            namespace,
            change,
            object,
        });
        self.watchers.retain(|w| {
            if !change.concerns(&w.resource, w.namespace.as_deref()) {
                return !w.tx.is_closed();
            }
            w.tx.send(WatchMessage::Change(change.clone())).is_ok()
        });
        self.history.push(change);
    }
}

/// Gives `object` the status `status`, or none.
fn set_status(object: &mut Value, status: Option<&Value>) {
    if let Some(fields) = object.as_object_mut() {
        match status {
            Some(status) => fields.insert("status".to_owned(), status.clone()),
            None => fields.remove("status"),
        };
    }
}

fn meta_generation(object: &Value) -> u64 {
    object["metadata"]["generation"].as_u64().unwrap_or(1)
}
