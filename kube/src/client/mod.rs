//! The HTTP client of the API server: [`KubeClient`] implements [`KubeApi`] over hyper 1 and
//! rustls, with no Kubernetes client library (kube-rs and k8s-openapi take longer to build than
//! the rest of waypoint, and objects stay JSON anyway).
//!
//! Short requests (get, list pages, writes) reuse a few idle connections and are bounded by
//! [`REQUEST_TIMEOUT`]; each watch gets a connection of its own, asks the server to end it
//! after [`WATCH_TIMEOUT_SECONDS`] and is cut by us [`WATCH_SLACK`] later if the server does
//! not. Error answers are mapped from the API's `Status` object onto [`KubeError`] so callers
//! can tell "list again" (410) from "retry" (409) from "give up".

pub mod config;
mod connect;
pub mod stream;

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::{ApiResource, KubeApi, KubeError, ObjectList, WatchEvent, WatchEvents};
pub use config::{Auth, ClientConfig, ConfigError};
use connect::Connector;
use stream::{LineSplitter, fill_type, parse_event};

/// How long a short request (everything but a watch) may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The `timeoutSeconds` a watch asks for: the server ends it cleanly after this.
pub const WATCH_TIMEOUT_SECONDS: u64 = 290;
/// How long after [`WATCH_TIMEOUT_SECONDS`] a watch the server did not end is cut.
pub const WATCH_SLACK: Duration = Duration::from_secs(30);
/// Objects per list page.
pub const LIST_PAGE_SIZE: usize = 500;
/// Idle connections kept for short requests.
const IDLE_CONNECTIONS: usize = 4;
/// Events buffered per watch before the reader waits for the consumer.
const WATCH_BUFFER: usize = 256;

/// A [`KubeApi`] over HTTP(S).
#[derive(Debug)]
pub struct KubeClient {
    connector: Connector,
    auth: Auth,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl KubeClient {
    /// A client for `config`; fails on an unusable CA, client certificate or server URL.
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        Ok(KubeClient {
            connector: Connector::new(&config)?,
            auth: config.auth,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A client configured from the environment ([`ClientConfig::from_environment`]).
    pub fn from_environment() -> Result<Self, ConfigError> {
        Self::new(ClientConfig::from_environment()?)
    }

    fn build_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Body<'_>>,
    ) -> Result<Request<Full<Bytes>>, KubeError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.connector.authority())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "waypoint");
        let token = match &self.auth {
            Auth::None => None,
            Auth::Token(token) => Some(token.clone()),
            Auth::TokenFile(file) => Some(
                file.token()
                    .map_err(|e| KubeError::Transport(format!("API token: {e}")))?,
            ),
        };
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(http::header::CONTENT_TYPE, body.content_type);
                Bytes::from(
                    serde_json::to_vec(body.value).map_err(|e| KubeError::Decode(e.to_string()))?,
                )
            }
            None => Bytes::new(),
        };
        request
            .body(Full::new(body))
            .map_err(|e| KubeError::Decode(format!("cannot build a request for {path}: {e}")))
    }

    /// Sends a short request on an idle connection (or a new one) and reads the whole answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Body<'_>>,
    ) -> Result<Value, KubeError> {
        let exchange = async {
            // An idle connection the server closed meanwhile fails before any answer: try once
            // more on a fresh one (the request was not processed).
            let (sender, response) = match self.take_idle() {
                Some(mut sender) => {
                    let request = self.build_request(method.clone(), path, body)?;
                    match sender.send_request(request).await {
                        Ok(response) => (sender, response),
                        Err(e) if e.is_canceled() || e.is_closed() => {
                            self.fresh_exchange(&method, path, body).await?
                        }
                        Err(e) => {
                            return Err(KubeError::Transport(format!("{method} {path}: {e}")));
                        }
                    }
                }
                None => self.fresh_exchange(&method, path, body).await?,
            };
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| KubeError::Transport(format!("{method} {path}: {e}")))?
                .to_bytes();
            self.put_idle(sender);
            Ok::<_, KubeError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                KubeError::Transport(format!("{method} {path}: no answer in {REQUEST_TIMEOUT:?}"))
            })??;
        answer(status, &body)
    }

    async fn fresh_exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Body<'_>>,
    ) -> Result<(SendRequest<Full<Bytes>>, hyper::Response<Incoming>), KubeError> {
        let mut sender = self.connector.connect().await?;
        let request = self.build_request(method.clone(), path, body)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| KubeError::Transport(format!("{method} {path}: {e}")))?;
        Ok((sender, response))
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !sender.is_closed() && idle.len() < IDLE_CONNECTIONS {
            idle.push(sender);
        }
    }
}

/// The JSON of a successful answer, or the error its `Status` describes.
/// A request body and how it is to be read.
struct Body<'a> {
    value: &'a Value,
    content_type: &'static str,
}

impl<'a> Body<'a> {
    fn json(value: &'a Value) -> Self {
        Body {
            value,
            content_type: "application/json",
        }
    }
}

fn answer(status: StatusCode, body: &[u8]) -> Result<Value, KubeError> {
    let json = serde_json::from_slice::<Value>(body);
    if status.is_success() {
        return json.map_err(|e| KubeError::Decode(format!("answer is not JSON: {e}")));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    Err(status_error(status.as_u16(), json.ok().as_ref(), &text))
}

/// The error of an API `Status` object (or of a bare status code with `fallback` text).
pub(crate) fn status_error(code: u16, status: Option<&Value>, fallback: &str) -> KubeError {
    let field = |name: &str| {
        status
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut message = field("message");
    if message.is_empty() {
        message = fallback.trim().to_owned();
    }
    match code {
        404 => KubeError::NotFound(message),
        409 => KubeError::Conflict(message),
        410 => KubeError::Gone(message),
        _ => KubeError::Api {
            code,
            reason: field("reason"),
            message,
        },
    }
}

/// `path?k=v&...` with the values percent-encoded.
fn with_query(path: String, params: &[(&str, &str)]) -> String {
    let mut url = path;
    for (i, (key, value)) in params.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(key);
        url.push('=');
        for byte in value.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                url.push(char::from(byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    url
}

#[async_trait::async_trait]
impl KubeApi for KubeClient {
    async fn get(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, KubeError> {
        let path = resource.object_path(namespace, name);
        match self.call(Method::GET, &path, None).await {
            Ok(mut object) => {
                fill_type(&mut object, resource);
                Ok(Some(object))
            }
            Err(KubeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        continue_token: Option<&str>,
    ) -> Result<ObjectList, KubeError> {
        let limit = LIST_PAGE_SIZE.to_string();
        let mut params = vec![("limit", limit.as_str())];
        if let Some(token) = continue_token {
            params.push(("continue", token));
        }
        let path = with_query(resource.collection_path(namespace), &params);
        let mut list = self.call(Method::GET, &path, None).await?;
        let meta = |key: &str| {
            list.pointer(&format!("/metadata/{key}"))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let resource_version = meta("resourceVersion").ok_or_else(|| {
            KubeError::Decode(format!("{} list has no resourceVersion", resource.kind))
        })?;
        let continue_token = meta("continue");
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(KubeError::Decode(format!(
                    "{} list: `items` is not a list",
                    resource.kind
                )));
            }
        };
        let items = items
            .into_iter()
            .map(|mut item| {
                fill_type(&mut item, resource);
                item
            })
            .collect();
        Ok(ObjectList {
            items,
            resource_version,
            continue_token,
        })
    }

    async fn watch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<WatchEvents, KubeError> {
        let timeout = WATCH_TIMEOUT_SECONDS.to_string();
        let path = with_query(
            resource.collection_path(namespace),
            &[
                ("watch", "1"),
                ("resourceVersion", resource_version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", &timeout),
            ],
        );
        // A connection of its own, not returned to the idle set: the body streams for minutes.
        let start = self.fresh_exchange(&Method::GET, &path, None);
        let (_, response) = tokio::time::timeout(REQUEST_TIMEOUT, start)
            .await
            .map_err(|_| {
                KubeError::Transport(format!("watch {path}: no answer in {REQUEST_TIMEOUT:?}"))
            })??;
        if !response.status().is_success() {
            let status = response.status();
            let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(answer(status, &body)
                .err()
                .unwrap_or_else(|| KubeError::Decode(format!("watch {path}: answered {status}"))));
        }
        let (events, received) = mpsc::channel(WATCH_BUFFER);
        let deadline = Duration::from_secs(WATCH_TIMEOUT_SECONDS) + WATCH_SLACK;
        let resource = *resource;
        tokio::spawn(async move {
            let read = read_watch(response.into_body(), resource, events);
            if tokio::time::timeout(deadline, read).await.is_err() {
                tracing::debug!(kind = resource.kind, "watch outlived its timeout; cut");
            }
        });
        Ok(received)
    }

    async fn create(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let path = resource.collection_path(namespace);
        self.call(Method::POST, &path, Some(&Body::json(object)))
            .await
    }

    async fn replace(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let path = resource.object_path(namespace, name);
        self.call(Method::PUT, &path, Some(&Body::json(object)))
            .await
    }

    async fn replace_status(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, KubeError> {
        let path = format!("{}/status", resource.object_path(namespace, name));
        self.call(Method::PUT, &path, Some(&Body::json(object)))
            .await
    }

    async fn apply(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
        field_manager: &str,
    ) -> Result<Value, KubeError> {
        let path = with_query(
            resource.object_path(namespace, name),
            &[("fieldManager", field_manager), ("force", "true")],
        );
        // JSON is YAML: the apply content type takes either.
        let body = Body {
            value: object,
            content_type: "application/apply-patch+yaml",
        };
        self.call(Method::PATCH, &path, Some(&body)).await
    }

    async fn delete(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, KubeError> {
        // Background propagation: the server's garbage collector removes what the object owns.
        let path = with_query(
            resource.object_path(namespace, name),
            &[("propagationPolicy", "Background")],
        );
        match self.call(Method::DELETE, &path, None).await {
            Ok(_) => Ok(true),
            Err(KubeError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Reads a watch body into `events` until it ends, an error ends it, or the consumer leaves.
async fn read_watch(
    mut body: Incoming,
    resource: ApiResource,
    events: mpsc::Sender<Result<WatchEvent, KubeError>>,
) {
    let mut splitter = LineSplitter::default();
    loop {
        let (lines, last) = match body.frame().await {
            None => (
                std::mem::take(&mut splitter).finish().into_iter().collect(),
                true,
            ),
            Some(Err(e)) => {
                let _ = events
                    .send(Err(KubeError::Transport(format!("watch broke: {e}"))))
                    .await;
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => match splitter.push(&data) {
                    Ok(lines) => (lines, false),
                    Err(e) => {
                        let _ = events.send(Err(e)).await;
                        return;
                    }
                },
                Err(_) => continue, // trailers
            },
        };
        for line in lines {
            match parse_event(&line, &resource) {
                Ok(None) => {}
                Ok(Some(event)) => {
                    if events.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = events.send(Err(e)).await;
                    return;
                }
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
