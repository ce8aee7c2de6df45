//! The fake's answers to the `KubeApi` verbs. Each verb records its call (and takes a scripted
//! failure or delay) first, then acts on the one store the way the API server does.

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use waypoint_kube::{ApiResource, KubeApi, KubeError, ObjectList, WatchEvents};

use super::FakeApi;
use super::store::{Call, Verb, Watcher, key, path_of};

/// What a call asked, for the record.
struct Asked<'a> {
    verb: Verb,
    namespace: Option<&'a str>,
    name: &'a str,
    body: Option<&'a Value>,
    from: Option<&'a str>,
}

impl FakeApi {
    /// Records the call, then answers its scripted failure or waits its scripted delay.
    async fn begin(&self, resource: &ApiResource, asked: Asked<'_>) -> Result<(), KubeError> {
        let path = path_of(resource);
        let delay = {
            let mut state = self.lock();
            state.record(Call {
                verb: asked.verb,
                path: path.clone(),
                namespace: asked.namespace.map(str::to_owned),
                name: asked.name.to_owned(),
                body: asked.body.cloned(),
                from: asked.from.map(str::to_owned),
                at: Instant::now(),
            })?;
            state.take_delay(asked.verb, &path)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    /// A replace of the whole object, or of its status only (the status subresource keeps
    /// the rest): NotFound when it is gone, Conflict when `object`'s version is stale.
    async fn conditional_replace(
        &self,
        resource: &ApiResource,
        asked: Asked<'_>,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let (verb, namespace, name) = (asked.verb, asked.namespace, asked.name);
        self.begin(resource, asked).await?;
        let mut state = self.lock();
        let k = key(resource, namespace, name);
        let current = state.current(resource, &k, object)?;
        let updated = if verb == Verb::ReplaceStatus {
            let mut updated = current;
            updated["status"] = object["status"].clone();
            updated
        } else {
            object.clone()
        };
        Ok(state.write(resource, k, updated))
    }

    fn write_asked<'a>(
        verb: Verb,
        ns: Option<&'a str>,
        name: &'a str,
        body: &'a Value,
    ) -> Asked<'a> {
        Asked {
            verb,
            namespace: ns,
            name,
            body: Some(body),
            from: None,
        }
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
        let asked = Asked {
            verb: Verb::Get,
            namespace,
            name,
            body: None,
            from: None,
        };
        self.begin(resource, asked).await?;
        let answer = {
            let mut state = self.lock();
            let k = key(resource, namespace, name);
            let answer = state.object(resource, &k);
            state.change_after_get(resource, k);
            answer
        };
        // The answer travels back while other tasks run: what was read may be stale by the
        // time the caller acts on it, as over a network.
        tokio::task::yield_now().await;
        Ok(answer)
    }

    async fn list(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        continue_token: Option<&str>,
    ) -> Result<ObjectList, KubeError> {
        let asked = Asked {
            verb: Verb::List,
            namespace,
            name: "",
            body: None,
            from: continue_token,
        };
        self.begin(resource, asked).await?;
        let start: usize = match continue_token {
            None => 0,
            Some(t) => t
                .parse()
                .map_err(|_| KubeError::Decode(format!("bad continue token {t}")))?,
        };
        let mut state = self.lock();
        let version = state.version.to_string();
        let c = state.collections.entry(path_of(resource)).or_default();
        let matching: Vec<&Value> = c
            .objects
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, o)| o)
            .collect();
        let end = (start + self.page_size).min(matching.len());
        let items = matching[start.min(end)..end]
            .iter()
            .map(|o| {
                // Like the API server: list items carry no apiVersion/kind.
                let mut o = (*o).clone();
                if let Some(fields) = o.as_object_mut() {
                    fields.remove("kind");
                    fields.remove("apiVersion");
                }
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
        let asked = Asked {
            verb: Verb::Watch,
            namespace,
            name: "",
            body: None,
            from: Some(resource_version),
        };
        self.begin(resource, asked).await?;
        let from: u64 = resource_version
            .parse()
            .map_err(|_| KubeError::Decode(format!("bad resourceVersion {resource_version}")))?;
        let mut state = self.lock();
        if from + 1 < state.compacted {
            return Err(KubeError::Gone(format!("too old resource version: {from}")));
        }
        let (sender, events) = mpsc::channel(1024);
        let c = state.collections.entry(path_of(resource)).or_default();
        for (rv, event) in &c.log {
            if *rv > from && Watcher::sees(namespace, event) {
                sender
                    .try_send(Ok(event.clone()))
                    .map_err(|_| KubeError::Transport("watch backlog overflow".into()))?;
            }
        }
        c.watchers.push(Watcher {
            namespace: namespace.map(str::to_owned),
            sender,
        });
        Ok(events)
    }

    async fn create(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        self.begin(
            resource,
            Self::write_asked(Verb::Create, namespace, name, object),
        )
        .await?;
        let mut state = self.lock();
        let k = key(resource, namespace, name);
        if state.object(resource, &k).is_some() {
            return Err(KubeError::Conflict(format!("{name} already exists")));
        }
        Ok(state.write(resource, k, object.clone()))
    }

    async fn replace(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let asked = Self::write_asked(Verb::Replace, namespace, name, object);
        self.conditional_replace(resource, asked, object).await
    }

    async fn replace_status(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let asked = Self::write_asked(Verb::ReplaceStatus, namespace, name, object);
        self.conditional_replace(resource, asked, object).await
    }

    // The fake plays the API as the data plane uses it; the controller's apply and delete are
    // tested against the emulator, which implements them.
    async fn apply(
        &self,
        _resource: &ApiResource,
        _namespace: Option<&str>,
        _name: &str,
        _object: &Value,
        _field_manager: &str,
    ) -> Result<Value, KubeError> {
        Err(unsupported("apply"))
    }

    async fn delete(
        &self,
        _resource: &ApiResource,
        _namespace: Option<&str>,
        _name: &str,
    ) -> Result<bool, KubeError> {
        Err(unsupported("delete"))
    }
}

fn unsupported(verb: &str) -> KubeError {
    KubeError::Api {
        code: 405,
        reason: "MethodNotAllowed".into(),
        message: format!("the fake API does not {verb}"),
    }
}
