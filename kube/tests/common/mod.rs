//! A scripted, in-memory `KubeApi` for the status writer and Lease tests: it keeps objects with
//! resourceVersions as the API server does (conditional replace, Conflict on a stale version,
//! status subresource writes that keep the rest of the object), records every call, and answers
//! from a script when told to (a failure for the next call of a verb on a kind, or a concurrent
//! change right after a read).

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::time::Instant;
use waypoint_kube::{ApiResource, KubeApi, KubeError, ObjectList, WatchEvents};

/// A verb of [`KubeApi`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Create,
    Replace,
    ReplaceStatus,
}

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    pub verb: Verb,
    pub plural: &'static str,
    pub name: String,
    pub body: Option<Value>,
    pub at: Instant,
}

type Key = (&'static str, Option<String>, String);
type Change = Box<dyn FnOnce(&mut Value) + Send>;

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    version: u64,
    calls: Vec<Call>,
    failures: VecDeque<(Verb, &'static str, KubeError)>,
    after_get: Vec<(&'static str, String, Change)>,
    delays: Vec<(Verb, &'static str, std::time::Duration)>,
}

/// The fake API server.
#[derive(Default)]
pub struct FakeApi {
    state: Mutex<State>,
}

fn key(resource: &ApiResource, namespace: Option<&str>, name: &str) -> Key {
    let ns = namespace.filter(|_| resource.namespaced).map(str::to_owned);
    (resource.plural, ns, name.to_owned())
}

fn version_of(object: &Value) -> Option<&str> {
    object["metadata"]["resourceVersion"].as_str()
}

impl State {
    /// Stores `object` under `k` with a new resourceVersion; the stored copy.
    fn store(&mut self, k: Key, mut object: Value) -> Value {
        self.bump(&mut object);
        self.objects.insert(k, object.clone());
        object
    }

    /// The stored object `object` replaces: NotFound when there is none, Conflict when
    /// `object` names another resourceVersion.
    fn current(&self, k: &Key, object: &Value) -> Result<Value, KubeError> {
        let name = &k.2;
        let Some(current) = self.objects.get(k) else {
            return Err(KubeError::NotFound(name.clone()));
        };
        if version_of(object).is_some_and(|v| Some(v) != version_of(current)) {
            return Err(KubeError::Conflict(format!("{name} changed")));
        }
        Ok(current.clone())
    }

    fn bump(&mut self, object: &mut Value) {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
    }

    fn record(
        &mut self,
        verb: Verb,
        resource: &ApiResource,
        name: &str,
        body: Option<&Value>,
    ) -> Result<(), KubeError> {
        self.calls.push(Call {
            verb,
            plural: resource.plural,
            name: name.to_owned(),
            body: body.cloned(),
            at: Instant::now(),
        });
        let scripted = self
            .failures
            .iter()
            .position(|(v, p, _)| *v == verb && *p == resource.plural);
        match scripted.and_then(|i| self.failures.remove(i)) {
            Some((_, _, err)) => Err(err),
            None => Ok(()),
        }
    }
}

impl FakeApi {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeApi::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `object` (namespace and name from its metadata) with a new resourceVersion.
    pub fn put(&self, resource: &ApiResource, object: Value) {
        let ns = object["metadata"]["namespace"].as_str().map(str::to_owned);
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.lock()
            .store(key(resource, ns.as_deref(), &name), object);
    }

    /// The stored object.
    pub fn object(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.lock()
            .objects
            .get(&key(resource, namespace, name))
            .cloned()
    }

    /// The next `verb` on `resource` answers `err`. Failures queue in order.
    pub fn fail(&self, verb: Verb, resource: &ApiResource, err: KubeError) {
        self.lock().failures.push_back((verb, resource.plural, err));
    }

    /// Right after the next GET of `name` answers, the stored object changes (a new
    /// resourceVersion): a concurrent writer, so a replace with what was read conflicts.
    pub fn change_after_get(
        &self,
        resource: &ApiResource,
        name: &str,
        change: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        self.lock()
            .after_get
            .push((resource.plural, name.to_owned(), Box::new(change)));
    }

    fn read(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, KubeError> {
        let mut state = self.lock();
        state.record(Verb::Get, resource, name, None)?;
        let k = key(resource, namespace, name);
        let answer = state.objects.get(&k).cloned();
        let change = state
            .after_get
            .iter()
            .position(|(p, n, _)| *p == resource.plural && n == name);
        if let Some(i) = change {
            let (_, _, change) = state.after_get.remove(i);
            if let Some(mut object) = state.objects.remove(&k) {
                change(&mut object);
                state.store(k, object);
            }
        }
        Ok(answer)
    }

    /// The next `verb` on `resource` takes `delay` before it acts (a slow API server).
    pub fn delay(&self, verb: Verb, resource: &ApiResource, delay: std::time::Duration) {
        self.lock().delays.push((verb, resource.plural, delay));
    }

    async fn pause(&self, verb: Verb, resource: &ApiResource) {
        let delay = {
            let mut state = self.lock();
            let at = state
                .delays
                .iter()
                .position(|(v, p, _)| *v == verb && *p == resource.plural);
            at.map(|i| state.delays.remove(i).2)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls of `verb` on `resource`.
    pub fn calls_of(&self, verb: Verb, resource: &ApiResource) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.verb == verb && c.plural == resource.plural)
            .collect()
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
        let answer = self.read(resource, namespace, name);
        // The answer travels back while other tasks run: what was read may be stale by the
        // time the caller acts on it, as over a network.
        tokio::task::yield_now().await;
        answer
    }

    async fn list(
        &self,
        _: &ApiResource,
        _: Option<&str>,
        _: Option<&str>,
    ) -> Result<ObjectList, KubeError> {
        Err(KubeError::Api {
            code: 405,
            reason: "MethodNotAllowed".into(),
            message: "not scripted".into(),
        })
    }
    async fn watch(
        &self,
        _: &ApiResource,
        _: Option<&str>,
        _: &str,
    ) -> Result<WatchEvents, KubeError> {
        Err(KubeError::Api {
            code: 405,
            reason: "MethodNotAllowed".into(),
            message: "not scripted".into(),
        })
    }

    async fn create(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut state = self.lock();
        state.record(Verb::Create, resource, &name, Some(object))?;
        let k = key(resource, namespace, &name);
        if state.objects.contains_key(&k) {
            return Err(KubeError::Conflict(format!("{name} already exists")));
        }
        Ok(state.store(k, object.clone()))
    }

    async fn replace(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let mut state = self.lock();
        state.record(Verb::Replace, resource, name, Some(object))?;
        let k = key(resource, namespace, name);
        state.current(&k, object)?;
        Ok(state.store(k, object.clone()))
    }

    async fn replace_status(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, KubeError> {
        self.lock()
            .record(Verb::ReplaceStatus, resource, name, Some(object))?;
        self.pause(Verb::ReplaceStatus, resource).await;
        let mut state = self.lock();
        let k = key(resource, namespace, name);
        let current = state.current(&k, object)?;
        // The status subresource changes status only.
        let mut updated = current;
        updated["status"] = object["status"].clone();
        Ok(state.store(k, updated))
    }
}
