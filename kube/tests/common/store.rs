//! The fake's one object store: every kind's objects under one etcd-like resourceVersion
//! counter, the event log watches replay from, the open watches, and the record of calls.
//! Every write, whether a test scripts it or the code under test makes it through a verb,
//! goes through [`State::write`] or [`State::remove`], so watchers see the writers' changes
//! exactly as the API server would show them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use waypoint_kube::{ApiResource, KubeError, WatchEvent};

/// A verb of [`waypoint_kube::KubeApi`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    List,
    Watch,
    Create,
    Replace,
    ReplaceStatus,
}

/// One recorded call.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub verb: Verb,
    /// The resource path, `group/version/plural` (`/v1/services` for the core group).
    pub path: String,
    /// The namespace asked for; `None` for cluster-wide calls.
    pub namespace: Option<String>,
    /// The object's name; empty for lists and watches.
    pub name: String,
    /// The body of a write.
    pub body: Option<Value>,
    /// The continue token of a list page, the resourceVersion of a watch.
    pub from: Option<String>,
    pub at: Instant,
}

impl fmt::Display for Call {
    /// `list <path> ns=<ns|*> continue=<token>`, `watch <path> rv=<rv>`, `<verb> <path> <name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self.from.as_deref().unwrap_or("");
        match self.verb {
            Verb::List => {
                let ns = self.namespace.as_deref().unwrap_or("*");
                write!(f, "list {} ns={ns} continue={from}", self.path)
            }
            Verb::Watch => write!(f, "watch {} rv={from}", self.path),
            verb => write!(f, "{verb:?} {} {}", self.path, self.name),
        }
    }
}

/// Namespace ("" when cluster-scoped) and name of an object within its resource.
pub(super) type Key = (String, String);
type Sender = mpsc::Sender<Result<WatchEvent, KubeError>>;

/// One open watch and the namespace it is limited to.
pub(super) struct Watcher {
    pub namespace: Option<String>,
    pub sender: Sender,
}

/// The objects of one resource type and their history.
#[derive(Default)]
pub(super) struct Collection {
    pub objects: BTreeMap<Key, Value>,
    /// (resourceVersion, event) in order, since the last compaction.
    pub log: Vec<(u64, WatchEvent)>,
    pub watchers: Vec<Watcher>,
}

/// A change the next GET of an object makes right after it answers (a concurrent writer).
pub(super) type Change = Box<dyn FnOnce(&mut Value) + Send>;

/// Everything the fake knows, behind one lock.
#[derive(Default)]
pub(super) struct State {
    pub version: u64,
    /// Watches from a version below this answer 410.
    pub compacted: u64,
    pub collections: HashMap<String, Collection>,
    /// Resource paths that answer 404 (their CRD is not installed).
    pub missing: Vec<String>,
    pub calls: Vec<Call>,
    /// Failures the next call of a verb on a resource path answers with, in order.
    pub failures: VecDeque<(Verb, String, KubeError)>,
    pub delays: Vec<(Verb, String, Duration)>,
    pub after_get: Vec<(String, String, Change)>,
}

/// `group/version/plural`, so v1 and v1beta1 of one kind are distinct resources.
pub(super) fn path_of(resource: &ApiResource) -> String {
    format!(
        "{}/{}/{}",
        resource.group, resource.version, resource.plural
    )
}

/// Where an object lives: cluster-scoped kinds ignore the namespace, as the API server does.
pub(super) fn key(resource: &ApiResource, namespace: Option<&str>, name: &str) -> Key {
    let ns = namespace.filter(|_| resource.namespaced).unwrap_or("");
    (ns.to_owned(), name.to_owned())
}

/// The key of an object from its own metadata.
pub(super) fn key_of(resource: &ApiResource, object: &Value) -> Key {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    key(resource, meta["namespace"].as_str(), name)
}

pub(super) fn version_of(object: &Value) -> Option<&str> {
    object["metadata"]["resourceVersion"].as_str()
}

fn namespace_of(event: &WatchEvent) -> Option<&str> {
    match event {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
            Some(o["metadata"]["namespace"].as_str().unwrap_or(""))
        }
        WatchEvent::Bookmark(_) => None,
    }
}

impl Watcher {
    /// Whether this watch sees `event`: bookmarks always, objects of its namespace.
    pub(super) fn sees(namespace: Option<&str>, event: &WatchEvent) -> bool {
        match (namespace, namespace_of(event)) {
            (Some(want), Some(ns)) => want == ns,
            _ => true,
        }
    }
}

impl Collection {
    /// Sends `event` to the watches that see it, dropping the closed ones.
    pub(super) fn tell(&mut self, event: &WatchEvent) {
        self.watchers.retain(|w| {
            !Watcher::sees(w.namespace.as_deref(), event)
                || w.sender.try_send(Ok(event.clone())).is_ok()
        });
    }
}

impl State {
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Stores `object` under `k` with a new resourceVersion, logs and tells watchers; the
    /// stored copy.
    pub(super) fn write(&mut self, resource: &ApiResource, k: Key, mut object: Value) -> Value {
        let rv = self.next_version();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let c = self.collections.entry(path_of(resource)).or_default();
        let event = match c.objects.insert(k, object.clone()) {
            Some(_) => WatchEvent::Modified(object.clone()),
            None => WatchEvent::Added(object.clone()),
        };
        c.log.push((rv, event.clone()));
        c.tell(&event);
        object
    }

    /// Removes an object; logs and tells watchers unless `silently` (an event lost in an outage).
    pub(super) fn remove(&mut self, resource: &ApiResource, k: &Key, silently: bool) {
        let rv = self.next_version();
        let c = self.collections.entry(path_of(resource)).or_default();
        let Some(mut object) = c.objects.remove(k) else {
            return;
        };
        if silently {
            return;
        }
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = WatchEvent::Deleted(object);
        c.log.push((rv, event.clone()));
        c.tell(&event);
    }

    /// Sends a bookmark at a new version to `resource`'s watchers; that version.
    pub(super) fn bookmark(&mut self, resource: &ApiResource) -> String {
        let rv = self.next_version().to_string();
        let c = self.collections.entry(path_of(resource)).or_default();
        c.tell(&WatchEvent::Bookmark(rv.clone()));
        rv
    }

    pub(super) fn object(&self, resource: &ApiResource, k: &Key) -> Option<Value> {
        self.collections
            .get(&path_of(resource))
            .and_then(|c| c.objects.get(k))
            .cloned()
    }

    /// The stored object `object` replaces: NotFound when there is none, Conflict when
    /// `object` names another resourceVersion.
    pub(super) fn current(
        &self,
        resource: &ApiResource,
        k: &Key,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let name = &k.1;
        let Some(current) = self.object(resource, k) else {
            return Err(KubeError::NotFound(name.clone()));
        };
        if version_of(object).is_some_and(|v| Some(v) != version_of(&current)) {
            return Err(KubeError::Conflict(format!("{name} changed")));
        }
        Ok(current)
    }

    /// Records a call; the scripted answer for it: 404 for a removed resource, else the
    /// next failure queued for this verb on this resource.
    pub(super) fn record(&mut self, call: Call) -> Result<(), KubeError> {
        let (verb, path) = (call.verb, call.path.clone());
        self.calls.push(call);
        if self.missing.contains(&path) {
            return Err(KubeError::NotFound(format!("{path} is not served")));
        }
        let scripted = self
            .failures
            .iter()
            .position(|(v, p, _)| *v == verb && *p == path);
        match scripted.and_then(|i| self.failures.remove(i)) {
            Some((_, _, err)) => Err(err),
            None => Ok(()),
        }
    }

    /// The delay scripted for the next `verb` on `path`, used up.
    pub(super) fn take_delay(&mut self, verb: Verb, path: &str) -> Option<Duration> {
        let at = self
            .delays
            .iter()
            .position(|(v, p, _)| *v == verb && p == path);
        at.map(|i| self.delays.remove(i).2)
    }

    /// Applies the change scripted for after a GET of `k`, if any.
    pub(super) fn change_after_get(&mut self, resource: &ApiResource, k: Key) {
        let path = path_of(resource);
        let at = self
            .after_get
            .iter()
            .position(|(p, n, _)| *p == path && *n == k.1);
        let Some(i) = at else { return };
        let (_, _, change) = self.after_get.remove(i);
        if let Some(mut object) = self.object(resource, &k) {
            change(&mut object);
            self.write(resource, k, object);
        }
    }
}
