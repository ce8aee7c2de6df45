//! A scripted `KubeApi`: an in-memory collection per resource type with etcd-like resource
//! versions, an event log that watches replay from, compaction (old versions answer 410),
//! paged lists, injected failures, and a record of every call.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use waypoint_kube::{ApiResource, KubeApi, KubeError, ObjectList, WatchEvent, WatchEvents};

type Key = (String, String);
type Sender = mpsc::Sender<Result<WatchEvent, KubeError>>;

#[derive(Default)]
struct Collection {
    objects: BTreeMap<Key, Value>,
    /// (resourceVersion, event) in order.
    log: Vec<(u64, WatchEvent)>,
    watchers: Vec<Sender>,
}

#[derive(Default)]
struct State {
    version: u64,
    /// Watches from a version below this answer 410.
    compacted: u64,
    collections: HashMap<String, Collection>,
    /// Resource paths (`group/version/plural`) that answer 404.
    missing: Vec<String>,
    /// Failures the next lists of a plural answer with, in order.
    list_failures: HashMap<String, VecDeque<KubeError>>,
    /// Every call: `list <plural> ns=<ns> continue=<token>`, `watch <plural> rv=<rv>`.
    calls: Vec<String>,
}

/// The fake API server.
pub struct FakeApi {
    state: Mutex<State>,
    /// Objects per list page.
    pub page_size: usize,
}

fn path_of(r: &ApiResource) -> String {
    format!("{}/{}/{}", r.group, r.version, r.plural)
}

fn key_of(o: &Value) -> Key {
    let meta = &o["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("").to_owned(),
        meta["name"].as_str().unwrap().to_owned(),
    )
}

impl FakeApi {
    pub fn new(page_size: usize) -> Self {
        FakeApi {
            state: Mutex::default(),
            page_size,
        }
    }

    /// Creates or updates `object` in `resource`'s collection, telling watchers.
    pub fn apply(&self, resource: &ApiResource, mut object: Value) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let rv = s.version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let c = s.collections.entry(path_of(resource)).or_default();
        let key = key_of(&object);
        let event = if c.objects.insert(key, object.clone()).is_some() {
            WatchEvent::Modified(object)
        } else {
            WatchEvent::Added(object)
        };
        c.log.push((rv, event.clone()));
        c.watchers.retain(|w| w.try_send(Ok(event.clone())).is_ok());
    }

    /// Deletes an object, telling watchers unless `silently` (an event lost in an outage).
    pub fn delete(&self, resource: &ApiResource, namespace: &str, name: &str, silently: bool) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let rv = s.version;
        let c = s.collections.entry(path_of(resource)).or_default();
        let Some(mut object) = c.objects.remove(&(namespace.to_owned(), name.to_owned())) else {
            return;
        };
        if silently {
            return;
        }
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = WatchEvent::Deleted(object);
        c.log.push((rv, event.clone()));
        c.watchers.retain(|w| w.try_send(Ok(event.clone())).is_ok());
    }

    /// Sends a bookmark at the current version to `resource`'s watchers.
    pub fn bookmark(&self, resource: &ApiResource) -> String {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let rv = s.version.to_string();
        let c = s.collections.entry(path_of(resource)).or_default();
        c.watchers
            .retain(|w| w.try_send(Ok(WatchEvent::Bookmark(rv.clone()))).is_ok());
        rv
    }

    /// Forgets the event history: watches from older versions answer 410.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.version + 1;
        for c in s.collections.values_mut() {
            c.log.clear();
        }
    }

    /// Ends every open watch, with `error` as the last item when given.
    pub fn break_watches(&self, error: Option<fn() -> KubeError>) {
        let mut s = self.state.lock().unwrap();
        for c in s.collections.values_mut() {
            for w in c.watchers.drain(..) {
                if let Some(make) = error {
                    let _ = w.try_send(Err(make()));
                }
            }
        }
    }

    /// Makes `resource` answer 404 (its CRD is not installed).
    pub fn remove_resource(&self, resource: &ApiResource) {
        self.state.lock().unwrap().missing.push(path_of(resource));
    }

    /// The next lists of `resource` fail with these errors, in order.
    pub fn fail_lists(&self, resource: &ApiResource, errors: Vec<KubeError>) {
        self.state
            .lock()
            .unwrap()
            .list_failures
            .insert(path_of(resource), errors.into());
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }
}

#[async_trait::async_trait]
impl KubeApi for FakeApi {
    async fn get(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, KubeError> {
        let s = self.state.lock().unwrap();
        let ns = namespace.filter(|_| resource.namespaced).unwrap_or("");
        Ok(s.collections
            .get(&path_of(resource))
            .and_then(|c| c.objects.get(&(ns.to_owned(), name.to_owned())).cloned()))
    }

    async fn list(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        continue_token: Option<&str>,
    ) -> Result<ObjectList, KubeError> {
        let mut s = self.state.lock().unwrap();
        let path = path_of(resource);
        s.calls.push(format!(
            "list {path} ns={} continue={}",
            namespace.unwrap_or("*"),
            continue_token.unwrap_or("")
        ));
        if s.missing.contains(&path) {
            return Err(KubeError::NotFound(format!("{path} is not served")));
        }
        if let Some(error) = s.list_failures.get_mut(&path).and_then(VecDeque::pop_front) {
            return Err(error);
        }
        let version = s.version.to_string();
        let c = s.collections.entry(path).or_default();
        let start: usize = continue_token.map_or(0, |t| t.parse().unwrap());
        let matching: Vec<&Value> = c
            .objects
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, o)| o)
            .collect();
        let end = (start + self.page_size).min(matching.len());
        let items = matching[start..end]
            .iter()
            .map(|o| {
                // Like the API server: list items carry no apiVersion/kind.
                let mut o = (*o).clone();
                o.as_object_mut().unwrap().remove("kind");
                o.as_object_mut().unwrap().remove("apiVersion");
                o
            })
            .collect();
        Ok(ObjectList {
            items,
            resource_version: version,
            continue_token: (end < matching.len()).then(|| end.to_string()),
        })
    }

    async fn watch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<WatchEvents, KubeError> {
        let mut s = self.state.lock().unwrap();
        let path = path_of(resource);
        s.calls.push(format!("watch {path} rv={resource_version}"));
        let from: u64 = resource_version
            .parse()
            .map_err(|_| KubeError::Decode("bad rv".into()))?;
        if from + 1 < s.compacted {
            return Err(KubeError::Gone(format!("too old resource version: {from}")));
        }
        let (tx, rx) = mpsc::channel(1024);
        let c = s.collections.entry(path).or_default();
        for (rv, event) in &c.log {
            let in_ns = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                    namespace.is_none_or(|ns| key_of(o).0 == ns)
                }
                WatchEvent::Bookmark(_) => true,
            };
            if *rv > from && in_ns {
                tx.try_send(Ok(event.clone())).unwrap();
            }
        }
        c.watchers.push(tx);
        Ok(rx)
    }

    async fn create(
        &self,
        _: &ApiResource,
        _: Option<&str>,
        _: &Value,
    ) -> Result<Value, KubeError> {
        unimplemented!("the config source never writes")
    }

    async fn replace(
        &self,
        _: &ApiResource,
        _: Option<&str>,
        _: &str,
        _: &Value,
    ) -> Result<Value, KubeError> {
        unimplemented!("the config source never writes")
    }

    async fn replace_status(
        &self,
        _: &ApiResource,
        _: Option<&str>,
        _: &str,
        _: &Value,
    ) -> Result<Value, KubeError> {
        unimplemented!("the config source never writes")
    }
}
