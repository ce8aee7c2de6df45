//! The admin server, on loopback by default (`127.0.0.1:15000`, where Envoy's admin listens):
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /metrics` | every metric of the registry, OpenMetrics text |
//! | `GET /healthz/ready` | 200 `ready` once started and a config (version ≥ 1) is served, else 503; 503 too while memory is over `--memory-limit` |
//! | `GET /config_dump` | the served snapshot as JSON: version, resource statuses, per-parent route status (`routeParents`), Gateways and listeners (`gateways`), Services and endpoints (with, per port under outlier detection, the endpoints ejected now: `trafficPolicy.outlierDetection.ejected`) |
//! | `POST`/`PUT /logging?level=<filter>` | changes the log filter (e.g. `info,waypoint_core=debug`) |
//!
//! It has no authentication: keep it on loopback (or behind a NetworkPolicy).

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::binding::Binding;
use crate::config::traffic_policy::PortPolicy;
use crate::config::{AppProtocol, Endpoint, EndpointTransport};
use crate::overload::Overload;
use crate::route_status::{gateway_classes_json, gateways_json, route_parents_json};
use crate::shutdown::Shutdown;
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::telemetry::access_log::rfc3339_millis;
use crate::upstream::{OutlierView, Upstream};
use crate::wire::percent_decode;

/// Changes the process's log filter; the error is shown to the caller.
pub(crate) type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the admin server reads.
#[derive(Clone)]
pub struct AdminState {
    /// The registry scraped at `/metrics`.
    pub registry: Arc<Registry>,
    /// The snapshot store shown at `/config_dump` and checked by readiness.
    pub store: Arc<SnapshotStore>,
    /// Set by the owner once the listeners serve; readiness also needs a config version ≥ 1.
    pub ready: Arc<AtomicBool>,
    /// Called by `/logging`; `None` answers 501.
    pub set_log_level: Option<SetLogLevel>,
    /// Overload state: readiness fails while memory is over the watermark, so the Service
    /// sends new connections to other replicas. `None`: not consulted.
    pub overload: Option<Arc<Overload>>,
    /// The controller name whose GatewayClasses `/config_dump` reports status for
    /// (`gatewayClasses`); `None`: none.
    pub controller_name: Option<String>,
    /// The upstream connector, whose runtime state (outlier ejections) `/config_dump` shows
    /// next to each Service port; `None`: not shown.
    pub upstream: Option<Arc<Upstream>>,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("store", &self.store)
            .field("ready", &self.ready)
            .field("set_log_level", &self.set_log_level.is_some())
            .finish_non_exhaustive()
    }
}

/// The admin HTTP/1.1 server.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AdminState>,
}

impl AdminServer {
    /// Envoy's admin address, which tooling expects.
    pub(crate) const DEFAULT_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

    /// Binds the admin listener (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, state: AdminState) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(AdminServer {
            listener,
            local_addr,
            state: Arc::new(state),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` fires; open connections then finish their current request.
    pub async fn serve(self, shutdown: Shutdown) {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.wait() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %err, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let state = self.state.clone();
            let conn_shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(respond(&state, &req)) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = conn_shutdown.wait() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    }
}

type AdminResponse = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> AdminResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

fn text(status: StatusCode, body: impl Into<String>) -> AdminResponse {
    let mut body = body.into();
    body.push('\n');
    reply(status, "text/plain; charset=utf-8", body)
}

fn respond<B>(state: &AdminState, req: &Request<B>) -> AdminResponse {
    let method = req.method();
    let get = method == Method::GET;
    match req.uri().path() {
        "/metrics" if get => metrics(state),
        "/healthz/ready" if get => ready(state),
        "/config_dump" if get => config_dump(state),
        "/logging" if method == Method::POST || method == Method::PUT => {
            logging(state, req.uri().query())
        }
        "/metrics" | "/healthz/ready" | "/config_dump" | "/logging" => {
            let allow = if req.uri().path() == "/logging" {
                "POST, PUT"
            } else {
                "GET"
            };
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz/ready, /config_dump, /logging?level=",
        ),
    }
}

fn metrics(state: &AdminState) -> AdminResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
        Ok(()) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            out,
        ),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"),
    }
}

fn ready(state: &AdminState) -> AdminResponse {
    let version = state.store.load().version;
    if !state.ready.load(Ordering::Acquire) {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready: starting")
    } else if version < 1 {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no config loaded",
        )
    } else if state
        .overload
        .as_ref()
        .is_some_and(|o| o.memory_overloaded())
    {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: memory over the limit",
        )
    } else {
        text(StatusCode::OK, "ready")
    }
}

/// The snapshot as `/config_dump` shows it; GatewayClasses of `controller` with their status.
pub(crate) fn config_dump_json(snapshot: &Snapshot, controller: Option<&str>) -> Value {
    let resources: Vec<Value> = snapshot
        .statuses()
        .into_iter()
        .map(|s| {
            json!({
                "kind": s.resource.kind,
                "namespace": s.resource.namespace,
                "name": s.resource.name,
                "source": s.source,
                "conditions": s.conditions,
            })
        })
        .collect();
    let mut backends: Vec<_> = snapshot.config.backends().collect();
    backends.sort_by(|a, b| {
        (&a.service.namespace, &a.service.name, a.port).cmp(&(
            &b.service.namespace,
            &b.service.name,
            b.port,
        ))
    });
    let services: Vec<Value> = backends
        .into_iter()
        .map(|b| {
            json!({
                "namespace": b.service.namespace,
                "name": b.service.name,
                "port": b.port,
                "cluster_ips": b.cluster_ips,
                "protocol": match b.protocol.upstream {
                    AppProtocol::Http1 => "http1",
                    AppProtocol::H2c => "h2c",
                },
                "portProtocol": &b.protocol,
                "endpoints": b.endpoints.iter().map(endpoint_json).collect::<Vec<_>>(),
                "trafficPolicy": traffic_policy_json(&b.policy),
            })
        })
        .collect();
    json!({
        "version": snapshot.version,
        "applied_at": rfc3339_millis(snapshot.applied_at),
        "resources": resources,
        "routeParents": route_parents_json(&snapshot.route_parents),
        "gateways": gateways_json(&snapshot.gateways),
        "gatewayClasses": gateway_classes_json(&snapshot.config.resources, controller),
        "services": services,
        "binding": binding_json(snapshot.config.binding()),
    })
}

/// The DestinationRule settings of a Service port: each block with the rule it came from.
fn traffic_policy_json(policy: &PortPolicy) -> Value {
    let mut blocks: serde_json::Map<String, Value> = policy
        .blocks()
        .into_iter()
        .map(|(name, from, settings)| {
            let block = json!({"from": from.to_string(), "settings": settings});
            (name.to_owned(), block)
        })
        .collect();
    if let Some(rule) = &policy.tls_refused_by {
        blocks.insert("tlsRefusedBy".to_owned(), json!(rule.to_string()));
    }
    Value::Object(blocks)
}

/// What is bound to this waypoint's Gateway (`enforced: false` without `--gateway`).
fn binding_json(binding: &Binding) -> Value {
    let workloads: Vec<Value> = binding
        .workloads()
        .into_iter()
        .map(|w| {
            json!({
                "namespace": w.pod.namespace,
                "name": w.pod.name,
                "serviceAccount": w.service_account,
                "ips": w.ips,
                "labels": w.labels,
                "transport": transport_json(&w.transport),
            })
        })
        .collect();
    let decisions: Vec<Value> = binding
        .decisions()
        .iter()
        .map(|d| {
            json!({
                "kind": d.object.kind,
                "namespace": d.object.namespace,
                "name": d.object.name,
                "bound": d.bound,
                "reason": d.reason,
                "message": d.message,
            })
        })
        .collect();
    json!({
        "enforced": binding.enforced(),
        "gateway": binding.gateway().map(|g| format!("{}/{}", g.namespace, g.name)),
        "trafficType": binding.traffic_type().to_string(),
        "listener": binding.bound_listener(),
        "problems": binding.problems(),
        "workloads": workloads,
        "decisions": decisions,
    })
}

fn endpoint_json(e: &Endpoint) -> Value {
    let mut v = transport_json(&e.transport);
    v["address"] = json!(e.address);
    v
}

/// `{"transport": "plain"}` or `{"transport": "hbone", "identity": ...}`.
fn transport_json(t: &EndpointTransport) -> Value {
    match t {
        EndpointTransport::Plain => json!({"transport": "plain"}),
        EndpointTransport::Hbone { identity } => json!({
            "transport": "hbone",
            "identity": identity.to_string(),
        }),
    }
}

fn config_dump(state: &AdminState) -> AdminResponse {
    let snapshot = state.store.load();
    let mut dump = config_dump_json(&snapshot, state.controller_name.as_deref());
    if let Some(upstream) = &state.upstream {
        add_outliers(&mut dump, &upstream.outlier_views(), SystemTime::now());
    }
    let mut body = serde_json::to_vec_pretty(&dump).unwrap_or_default();
    body.push(b'\n');
    reply(StatusCode::OK, "application/json", body)
}

/// Adds to the `trafficPolicy.outlierDetection` block of each entry of `dump`'s `services` the
/// detection's state: the endpoints ejected now (`ejected`: address, times ejected, until
/// when) and the ejections so far by detector (`ejectionsTotal`). The state is the upstream's
/// (it outlives reloads); which ports have the block is the snapshot's.
fn add_outliers(dump: &mut Value, views: &[OutlierView], now: SystemTime) {
    let Some(services) = dump.get_mut("services").and_then(Value::as_array_mut) else {
        return;
    };
    for service in services {
        let view = views.iter().find(|v| {
            service["namespace"] == v.service.namespace.as_str()
                && service["name"] == v.service.name.as_str()
                && service["port"] == v.port
        });
        let Some(block) = service
            .pointer_mut("/trafficPolicy/outlierDetection")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let ejected: Vec<Value> = view
            .map(|v| v.ejected.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|e| {
                json!({
                    "address": e.address,
                    "ejections": e.ejections,
                    "ejectedUntil": rfc3339_millis(now + e.remaining),
                })
            })
            .collect();
        let totals: serde_json::Map<String, Value> = view
            .map(|v| v.ejections_total.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|(reason, n)| (reason.as_str().to_owned(), json!(n)))
            .collect();
        block.insert("ejected".to_owned(), json!(ejected));
        block.insert("ejectionsTotal".to_owned(), json!(totals));
    }
}

fn logging(state: &AdminState, query: Option<&str>) -> AdminResponse {
    let Some(set) = &state.set_log_level else {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "changing the log level is not supported by this process",
        );
    };
    let level = query.and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "level")
            .map(|(_, v)| percent_decode(v))
    });
    let Some(level) = level.filter(|l| !l.trim().is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing ?level=<filter>, e.g. ?level=info,waypoint_core=debug",
        );
    };
    match set(level.trim()) {
        Ok(()) => text(StatusCode::OK, format!("log level set to {}", level.trim())),
        Err(reason) => text(
            StatusCode::BAD_REQUEST,
            format!("invalid log level {:?}: {reason}", level.trim()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Condition, Config, ResourceRef};
    use crate::filter::FilterChain;
    use crate::route_status::{GatewayStatus, ListenerStatus, ParentRefKey, RouteParentStatus};

    fn c(kind: &str, status: bool, reason: &str) -> Condition {
        Condition {
            kind: kind.into(),
            status,
            reason: reason.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn config_dump_has_route_parents_and_gateways() {
        let route = ResourceRef::new("HTTPRoute", "ns", "r");
        let parent = |kind: &str, section: Option<&str>, port| RouteParentStatus {
            route: route.clone(),
            parent: ParentRefKey {
                group: if kind == "Gateway" {
                    "gateway.networking.k8s.io".into()
                } else {
                    String::new()
                },
                kind: kind.into(),
                namespace: "ns".into(),
                name: "g".into(),
                section_name: section.map(Into::into),
                port,
            },
            conditions: vec![
                c("Accepted", true, "Accepted"),
                c("ResolvedRefs", false, "BackendNotFound"),
            ],
            observed_generation: Some(4),
        };
        let snapshot = Snapshot {
            config: Arc::new(Config::default()),
            chain: FilterChain::default(),
            reports: Vec::new(),
            route_parents: vec![
                parent("Gateway", None, None),
                parent("Service", None, Some(80)),
            ],
            gateways: vec![GatewayStatus {
                gateway: ResourceRef::new("Gateway", "ns", "g"),
                addresses: vec!["10.0.0.1".into()],
                conditions: vec![c("Accepted", true, "Accepted")],
                listeners: vec![ListenerStatus {
                    name: "http".into(),
                    port: 80,
                    attached_routes: 2,
                    supported_kinds: vec!["HTTPRoute"],
                    conditions: vec![c("Accepted", true, "Accepted")],
                }],
                observed_generation: Some(7),
            }],
            version: 3,
            applied_at: std::time::SystemTime::UNIX_EPOCH,
        };
        let dump = config_dump_json(&snapshot, None);
        assert_eq!(
            dump["routeParents"],
            json!([{"kind": "HTTPRoute", "namespace": "ns", "name": "r", "parents": [
                {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                    "namespace": "ns", "name": "g", "sectionName": null, "port": null},
                 "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "m", "observedGeneration": 4},
                    {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "message": "m", "observedGeneration": 4}]},
                {"parentRef": {"group": "", "kind": "Service",
                    "namespace": "ns", "name": "g", "sectionName": null, "port": 80},
                 "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "m", "observedGeneration": 4},
                    {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "message": "m", "observedGeneration": 4}]}
            ]}])
        );
        assert_eq!(
            dump["gateways"],
            json!([{"namespace": "ns", "name": "g", "addresses": ["10.0.0.1"],
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "m",
                    "observedGeneration": 7}],
                "listeners": [{"name": "http", "port": 80, "attachedRoutes": 2,
                    "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                    "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "m",
                        "observedGeneration": 7}]}]}])
        );
        // A false per-parent condition makes the route not OK in the per-resource view.
        let statuses = snapshot.statuses();
        let r = statuses.iter().find(|s| s.resource == route).unwrap();
        assert!(!r.is_ok());
        assert!(
            r.conditions[0].message.contains("parent Gateway ns/g"),
            "{r:?}"
        );
    }

    #[test]
    fn decodes_query_values() {
        assert_eq!(
            percent_decode("info%2Cwaypoint_core%3Ddebug"),
            "info,waypoint_core=debug"
        );
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
