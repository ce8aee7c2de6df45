//! The HTTP side: accept connections (plain or TLS, HTTP/1.1 or HTTP/2), check the bearer
//! token, read the URL as a resource path, and turn each verb into a store operation. Every
//! answer, failures included, is recorded for tests.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::apply;
use crate::body::{ResponseBody, json_body};
use crate::kinds::join_api_version;
use crate::meta::merge_patch;
use crate::options::ExpiredWatch;
use crate::route::{Query, ResourcePath};
use crate::shared::{RecordedRequest, Shared};
use crate::status::ApiError;
use crate::store::Resource;
use crate::watch::{self, WatchParams};

/// Request bodies above this are refused; our objects are a few KiB.
const MAX_BODY: usize = 32 << 20;

/// Accepts connections until the task is aborted; aborting drops every connection with it.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "emulator: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_connection(stream, shared).await,
                    Err(e) => tracing::debug!(error = %e, "emulator: TLS handshake failed"),
                },
                None => serve_connection(stream, shared).await,
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, "emulator: connection ended with an error");
    }
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<ResponseBody> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let response = answer(&shared, request)
        .await
        .unwrap_or_else(|error| respond(error.code, &error.to_status()));
    shared.record(RecordedRequest {
        method,
        path,
        query,
        status_code: response.status().as_u16(),
        time: SystemTime::now(),
    });
    response
}

fn respond(code: u16, value: &Value) -> Response<ResponseBody> {
    with_body(code, json_body(value))
}

fn with_body(code: u16, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `object` as served at `api_version`, with or without its type fields.
pub(crate) fn present(mut object: Value, api_version: &str, with_type: bool) -> Value {
    if let Some(fields) = object.as_object_mut() {
        if with_type {
            fields.insert("apiVersion".into(), json!(api_version));
        } else {
            fields.remove("apiVersion");
            fields.remove("kind");
        }
    }
    object
}

fn authorized(shared: &Shared, request: &Request<Incoming>) -> bool {
    let Some(token) = &shared.options.token else {
        return true;
    };
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == token)
}

/// The resource type a URL addresses; 404 when the URL's scope does not fit a known type.
fn resolve(shared: &Shared, path: &ResourcePath) -> Result<Resource, ApiError> {
    let kinds = shared.kinds();
    let Some(known) = kinds.by_plural(&path.group, &path.plural) else {
        return Ok(Resource {
            group: path.group.clone(),
            plural: path.plural.clone(),
            kind: None,
            namespaced: path.namespace.is_some(),
        });
    };
    // A cluster-scoped type under a namespace, or one namespaced object without one.
    let misplaced = matches!(
        (known.namespaced, &path.namespace, &path.name),
        (false, Some(_), _) | (true, None, Some(_))
    );
    if misplaced {
        return Err(ApiError::no_resource());
    }
    Ok(Resource {
        group: path.group.clone(),
        plural: path.plural.clone(),
        kind: Some(known.kind.clone()),
        namespaced: known.namespaced,
    })
}

/// Gives a written object the `apiVersion` of its URL and its kind when it lacks them, so
/// that stored objects always say what they are.
fn fill_type(object: &mut Value, api_version: &str, resource: &Resource) {
    if let Some(fields) = object.as_object_mut() {
        fields
            .entry("apiVersion")
            .or_insert_with(|| json!(api_version));
        if let Some(kind) = &resource.kind {
            fields.entry("kind").or_insert_with(|| json!(kind));
        }
    }
}

async fn read_bytes(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    Ok(Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
        .to_bytes())
}

async fn read_json(request: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = read_bytes(request).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))
}

/// `PATCH` with `application/apply-patch+yaml` (see `apply`): 201 when it created the object,
/// else 200.
fn server_side_apply(
    shared: &Shared,
    resource: &Resource,
    ns: Option<&str>,
    name: &str,
    query: &Query,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    if query.field_manager.is_none() {
        return Err(ApiError::bad_request(
            "PATCH /apply: fieldManager is required for apply requests".into(),
        ));
    }
    let applied = apply::parse_body(body)
        .map_err(|e| ApiError::bad_request(format!("the apply body is not YAML: {e}")))?;
    for field in ["apiVersion", "kind"] {
        if applied.get(field).and_then(Value::as_str).is_none() {
            return Err(ApiError::bad_request(format!(
                "{}: {field}: Required value: an applied object names its {field}",
                resource.qualified()
            )));
        }
    }
    let mut store = shared.store();
    match store.get(resource, ns, name).cloned() {
        None => {
            let mut object = applied;
            if object.get("metadata").and_then(|m| m.get("name")).is_none() {
                object["metadata"]["name"] = json!(name);
            }
            Ok((201, store.create(resource, ns, object, false)?))
        }
        Some(stored) => {
            let mut merged = apply::apply_over(&stored, &applied);
            // Unconditional: an apply carries no resourceVersion precondition.
            if let Some(meta) = merged["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
            Ok((200, store.replace(resource, ns, name, merged, false)?))
        }
    }
}

async fn answer(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    if shared.unavailable() {
        return Err(ApiError::unavailable());
    }
    if !authorized(shared, &request) {
        return Err(ApiError::unauthorized());
    }
    let path = ResourcePath::parse(request.uri().path()).ok_or_else(ApiError::no_resource)?;
    if !shared.store().serves(&path.group, &path.version) {
        return Err(ApiError::no_resource());
    }
    let resource = resolve(shared, &path)?;
    let query = Query::parse(request.uri().query().unwrap_or(""));
    let api_version = join_api_version(&path.group, &path.version);
    let ns = path.namespace.as_deref();
    let method = request.method().clone();
    let ok = |object: Value| respond(200, &present(object, &api_version, true));
    match (&method, path.name.as_deref(), path.status) {
        (&Method::GET, None, false) if query.watch => {
            Ok(open_watch(shared, &resource, ns, &query, &api_version))
        }
        (&Method::GET, None, false) => Ok(list(shared, &resource, ns, &query, &api_version)?),
        (&Method::GET, Some(name), _) => {
            let object = shared.store().get(&resource, ns, name).cloned();
            object
                .map(ok)
                .ok_or_else(|| ApiError::not_found(&resource.qualified(), name))
        }
        (&Method::POST, None, false) => {
            let mut body = read_json(request).await?;
            fill_type(&mut body, &api_version, &resource);
            let created = shared.store().create(&resource, ns, body, false)?;
            Ok(respond(201, &present(created, &api_version, true)))
        }
        (&Method::PUT, Some(name), status) => {
            let mut body = read_json(request).await?;
            fill_type(&mut body, &api_version, &resource);
            let mut store = shared.store();
            let written = if status {
                store.replace_status(&resource, ns, name, body)?
            } else {
                store.replace(&resource, ns, name, body, false)?
            };
            Ok(ok(written))
        }
        (&Method::PATCH, Some(name), status) => {
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            match content_type.split(';').next().map(str::trim) {
                Some("application/merge-patch+json") => {}
                Some("application/apply-patch+yaml") if !status => {
                    let body = read_bytes(request).await?;
                    return server_side_apply(shared, &resource, ns, name, &query, &body)
                        .map(|(code, object)| respond(code, &present(object, &api_version, true)));
                }
                _ => return Err(ApiError::unsupported_media_type(&content_type)),
            }
            let patch = read_json(request).await?;
            let mut store = shared.store();
            let mut merged = store
                .get(&resource, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&resource.qualified(), name))?;
            merge_patch(&mut merged, &patch);
            let written = if status {
                store.replace_status(&resource, ns, name, merged)?
            } else {
                store.replace(&resource, ns, name, merged, false)?
            };
            Ok(ok(written))
        }
        (&Method::DELETE, Some(name), false) => {
            Ok(ok(shared.store().delete(&resource, ns, name)?))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

fn list(
    shared: &Shared,
    resource: &Resource,
    ns: Option<&str>,
    query: &Query,
    api_version: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let page = shared
        .store()
        .list(resource, ns, query.limit, query.continue_token.as_deref())?;
    let kind = resource.kind.clone().or_else(|| {
        page.items
            .first()
            .and_then(|o| o["kind"].as_str().map(str::to_owned))
    });
    let with_type = !shared.options.omit_list_item_type;
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(|o| present(o, api_version, with_type))
        .collect();
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(page.remaining);
    }
    Ok(respond(
        200,
        &json!({
            "kind": format!("{}List", kind.unwrap_or_default()),
            "apiVersion": api_version,
            "metadata": metadata,
            "items": items,
        }),
    ))
}

fn open_watch(
    shared: &Arc<Shared>,
    resource: &Resource,
    ns: Option<&str>,
    query: &Query,
    api_version: &str,
) -> Response<ResponseBody> {
    let started = shared
        .store()
        .watch(resource, ns, query.resource_version.as_deref());
    let start = match started {
        Ok(start) => start,
        Err(error)
            if error.code == 410 && shared.options.expired_watch == ExpiredWatch::ErrorEvent =>
        {
            return with_body(200, watch::expired_body(&error).boxed());
        }
        Err(error) => return respond(error.code, &error.to_status()),
    };
    let params = WatchParams {
        api_version: api_version.to_owned(),
        kind: resource.kind.clone().unwrap_or_default(),
        bookmarks: query.bookmarks.then_some(shared.options.bookmark_interval),
        timeout: query.timeout_seconds.map(Duration::from_secs),
    };
    with_body(200, watch::start(shared.clone(), start, params).boxed())
}
