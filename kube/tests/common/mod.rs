//! One scripted, in-memory `KubeApi` for every event-level test of the kube crate: the config
//! source's reflectors and the status writer and its Lease talk to the same fake, as they
//! talk to one API server in production.
//!
//! It keeps one object store under one etcd-like resourceVersion counter (`store.rs`), so a
//! status write the writer makes is a `Modified` event a reflector would see, and a
//! conditional replace with a stale version conflicts as it would against etcd. Watches
//! replay the event log from the version they ask for; compaction makes older versions answer
//! 410. Lists come in pages. Tests script the rest: a failure for the next call of a verb on
//! a resource, a delay, a concurrent change right after a read, broken watches, a resource
//! whose CRD is missing. Every call is recorded (`Call` prints as `list <path> ns=..
//! continue=..`, `watch <path> rv=..`) so tests can assert what was asked.

#![allow(dead_code)]

mod store;
mod verbs;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use waypoint_kube::{ApiResource, KubeError};

pub(crate) use store::{Call, Verb};
use store::{State, key, key_of, path_of};

/// Objects per list page unless a test asks for smaller pages.
const DEFAULT_PAGE_SIZE: usize = 100;

/// The fake API server.
pub(crate) struct FakeApi {
    state: Mutex<State>,
    /// Objects per list page.
    page_size: usize,
}

impl FakeApi {
    /// An empty API server answering lists in pages of 100.
    pub(crate) fn new() -> Arc<Self> {
        Self::with_page_size(DEFAULT_PAGE_SIZE)
    }

    /// An empty API server answering lists in pages of `page_size` objects.
    pub(crate) fn with_page_size(page_size: usize) -> Arc<Self> {
        Arc::new(FakeApi {
            state: Mutex::default(),
            page_size,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or updates `object` (namespace and name from its metadata) with a new
    /// resourceVersion, telling watchers.
    pub(crate) fn put(&self, resource: &ApiResource, object: Value) {
        let k = key_of(resource, &object);
        self.lock().write(resource, k, object);
    }

    /// Deletes an object, telling watchers unless `silently` (an event lost in an outage).
    pub(crate) fn delete(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        silently: bool,
    ) {
        let k = key(resource, Some(namespace), name);
        self.lock().remove(resource, &k, silently);
    }

    /// The stored object.
    pub(crate) fn object(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.lock()
            .object(resource, &key(resource, namespace, name))
    }

    /// Sends a bookmark at a new version to `resource`'s watchers; that version.
    pub(crate) fn bookmark(&self, resource: &ApiResource) -> String {
        self.lock().bookmark(resource)
    }

    /// Forgets the event history: watches from older versions answer 410.
    pub(crate) fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.version + 1;
        for c in state.collections.values_mut() {
            c.log.clear();
        }
    }

    /// Ends every open watch, with `error` as the last item when given.
    pub(crate) fn break_watches(&self, error: Option<fn() -> KubeError>) {
        let mut state = self.lock();
        for c in state.collections.values_mut() {
            for w in c.watchers.drain(..) {
                if let Some(make) = error {
                    let _ = w.sender.try_send(Err(make()));
                }
            }
        }
    }

    /// Makes every call on `resource` answer 404 (its CRD is not installed).
    pub(crate) fn remove_resource(&self, resource: &ApiResource) {
        self.lock().missing.push(path_of(resource));
    }

    /// The next `verb` on `resource` answers `err`. Failures queue in order.
    pub(crate) fn fail(&self, verb: Verb, resource: &ApiResource, err: KubeError) {
        self.lock()
            .failures
            .push_back((verb, path_of(resource), err));
    }

    /// The next `verb` on `resource` takes `delay` before it acts (a slow API server).
    pub(crate) fn delay(&self, verb: Verb, resource: &ApiResource, delay: Duration) {
        self.lock().delays.push((verb, path_of(resource), delay));
    }

    /// Right after the next GET of `name` answers, the stored object changes (a new
    /// resourceVersion): a concurrent writer, so a replace with what was read conflicts.
    pub(crate) fn change_after_get(
        &self,
        resource: &ApiResource,
        name: &str,
        change: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        self.lock()
            .after_get
            .push((path_of(resource), name.to_owned(), Box::new(change)));
    }

    /// Every call so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every call so far, each as its one-line description.
    pub(crate) fn call_lines(&self) -> Vec<String> {
        self.calls().iter().map(Call::to_string).collect()
    }

    /// The calls of `verb` on `resource`.
    pub(crate) fn calls_of(&self, verb: Verb, resource: &ApiResource) -> Vec<Call> {
        let path = path_of(resource);
        self.calls()
            .into_iter()
            .filter(|c| c.verb == verb && c.path == path)
            .collect()
    }
}
