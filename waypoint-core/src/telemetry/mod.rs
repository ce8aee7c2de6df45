//! Istio-standard observability the request path calls: metrics, access logs and trace context.
//!
//! ```text
//!  request ──▶ Telemetry::begin  (trace context into the headers, request body counted)
//!          ──▶ filters, upstream
//!  response ◀── Telemetry::finish (response body counted; when it ends or is dropped:
//!                                  istio_* metrics recorded, access log line queued)
//! ```
//!
//! - [`metrics`]: `istio_requests_total`, `istio_request_duration_milliseconds`,
//!   `istio_request_bytes`, `istio_response_bytes`, `istio_tcp_*`, the waypoint's config metrics
//!   and process metrics, with Istio's labels, so Kiali and Istio's dashboards work unchanged.
//! - [`access_log`]: one JSON (or text) line per request, written off the request path.
//! - [`trace`]: W3C `traceparent` propagation (with B3 and HBONE imports).
//! - [`otlp`]: when configured, one span per sampled request exported over OTLP/HTTP (JSON).

pub mod access_log;
pub mod metrics;
pub mod otlp;
pub mod trace;

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{Body, BoxError};
use crate::config::{Config, Endpoint, EndpointTransport};
use crate::conn::ConnInfo;
use crate::filter::{AuthzDecision, RequestContext};
use crate::flags::ResponseFlag;
use crate::tls::ExpectedIdentity;

use access_log::{AccessLogEntry, AccessLogOptions, AccessLogger, MAX_PATH_LEN, truncate};
use metrics::{
    ConfigMetrics, CountedIo, DestinationInfo, DestinationLabels, Label, ProcessCollector,
    RequestLabels, RequestMetrics, SourceLabels, TcpLabels, TcpMetrics, UNKNOWN, flags_label,
    security_policy,
};
use otlp::{OtlpExporter, OtlpOptions, SpanRecord};
use trace::TraceContext;

/// What to record besides the metrics, and what the waypoint knows of its place.
#[derive(Debug)]
pub struct TelemetryOptions {
    /// Access logging; `None` turns it off.
    pub access_log: Option<AccessLogOptions>,
    /// The DNS suffix of Services, for `destination_service` (`cluster.local`).
    pub cluster_domain: String,
    /// The cluster name (Istio's `CLUSTER_ID`) for `destination_cluster`; `unknown` when unset.
    pub cluster: Option<String>,
    /// OTLP span export; `None` exports nothing and starts nothing.
    pub otlp: Option<OtlpOptions>,
}

impl Default for TelemetryOptions {
    /// No access log, `cluster.local`, cluster unknown, no span export.
    fn default() -> Self {
        TelemetryOptions {
            access_log: None,
            cluster_domain: "cluster.local".to_owned(),
            cluster: None,
            otlp: None,
        }
    }
}

/// The request path's telemetry. Cheap to clone: clones share the same metrics and log.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use prometheus_client::registry::Registry;
/// use waypoint_core::telemetry::{Telemetry, TelemetryOptions};
/// use waypoint_core::{body, config::Config, conn::{Binding, ConnInfo}, filter::RequestContext};
///
/// let mut registry = Registry::default();
/// let telemetry = Telemetry::new(&mut registry, TelemetryOptions::default())?;
/// let conn = Arc::new(ConnInfo::new(Binding::Hbone));
/// let mut req = http::Request::new(body::empty());
/// let record = telemetry.begin(&mut req, &conn); // before the filters
/// assert!(req.headers().contains_key("traceparent"));
/// let ctx = RequestContext::new(conn, Arc::new(Config::default()));
/// let resp = body::local_reply(http::StatusCode::NOT_FOUND, "no route");
/// let resp = telemetry.finish(record, &ctx, resp); // after the response filters
/// drop(resp); // recorded when the body ends or is dropped
///
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("response_code=\"404\""));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    requests: RequestMetrics,
    authz: Family<AuthzLabels, Counter>,
    unbound: Family<UnboundLabels, Counter>,
    tcp: TcpMetrics,
    config: ConfigMetrics,
    access_log: Option<AccessLogger>,
    access_log_dropped: Counter,
    cluster_domain: String,
    cluster: Option<String>,
    otlp: Option<OtlpExporter>,
}

/// Labels of `waypoint_unbound_destination_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnboundLabels {
    reason: &'static str,
}

/// Labels of `waypoint_authz_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    decision: &'static str,
    action: Label,
    policy: Label,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("access_log", &self.inner.access_log.is_some())
            .field("cluster_domain", &self.inner.cluster_domain)
            .field("cluster", &self.inner.cluster)
            .field("otlp", &self.inner.otlp.is_some())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Creates every metric in `registry` (Istio's HTTP and TCP metrics, config reloads,
    /// process metrics, dropped access log lines) and starts the access log writer thread and,
    /// when configured, the OTLP exporter task (which must then run inside a Tokio runtime).
    /// Fails when that thread cannot be started, or with [`io::ErrorKind::InvalidInput`] when
    /// the OTLP options are unusable (an `https://` endpoint, a sample rate outside 0..=1).
    pub fn new(registry: &mut Registry, opts: TelemetryOptions) -> io::Result<Self> {
        let requests = RequestMetrics::new(registry);
        let tcp = TcpMetrics::new(registry);
        let config = ConfigMetrics::new(registry);
        ProcessCollector::register(registry);
        let authz = Family::<AuthzLabels, Counter>::default();
        registry.register(
            "waypoint_authz_decisions",
            "Authorization decisions by outcome, action and deciding policy",
            authz.clone(),
        );
        let unbound = Family::<UnboundLabels, Counter>::default();
        registry.register(
            "waypoint_unbound_destination",
            "Requests refused because their destination is not bound to this waypoint, by reason",
            unbound.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "waypoint_access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let access_log = opts
            .access_log
            .map(|o| AccessLogger::start(o, access_log_dropped.clone()))
            .transpose()?;
        let otlp = opts
            .otlp
            .map(|o| OtlpExporter::start(o, registry))
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Telemetry {
            inner: Arc::new(Inner {
                requests,
                authz,
                unbound,
                tcp,
                config,
                access_log,
                access_log_dropped,
                cluster_domain: opts.cluster_domain,
                cluster: opts.cluster,
                otlp,
            }),
        })
    }

    /// Counts a request refused because its destination is not bound to this waypoint
    /// (`reason`: see [`crate::config::binding::Unbound::reason`]).
    pub fn unbound_destination(&self, reason: &'static str) {
        self.inner
            .unbound
            .get_or_create(&UnboundLabels { reason })
            .inc();
    }

    /// Starts recording a request: propagates the trace context into its headers (see
    /// [`trace::propagate`]), counts its body bytes, and notes what the access log needs.
    pub fn begin(&self, req: &mut http::Request<Body>, conn: &ConnInfo) -> RequestRecord {
        let trace = trace::propagate(
            req.headers_mut(),
            conn.traceparent.as_deref(),
            &mut fastrand::Rng::new(),
        );
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let request_bytes = Arc::new(AtomicU64::new(0));
        let body = std::mem::replace(req.body_mut(), crate::body::empty());
        *req.body_mut() = UnsyncBoxBody::new(CountingBody {
            inner: body,
            count: request_bytes.clone(),
        });
        let log = self
            .inner
            .access_log
            .as_ref()
            .is_some_and(AccessLogger::sampled);
        let span = self.inner.otlp.as_ref().is_some_and(OtlpExporter::sampled);
        let request = (log || span).then(|| RequestLine {
            method: req.method().as_str().to_owned(),
            authority: crate::http::authority::request_authority(req)
                .map(|a| truncate(a, MAX_PATH_LEN).to_owned()),
            path: truncate(
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
                MAX_PATH_LEN,
            )
            .to_owned(),
            protocol: protocol_name(req.version()),
        });
        RequestRecord {
            start_time: SystemTime::now(),
            started: Instant::now(),
            head: req.method() == http::Method::HEAD,
            grpc,
            trace,
            request_bytes,
            request,
            log,
            span,
        }
    }

    /// Finishes recording: wraps the response body so that when it ends (or is dropped, e.g.
    /// the client went away) the `istio_*` metrics are recorded and the access log line queued.
    pub fn finish(
        &self,
        record: RequestRecord,
        ctx: &RequestContext,
        resp: http::Response<Body>,
    ) -> http::Response<Body> {
        let mut destination = DestinationLabels::resolve(
            ctx.upstream.as_ref().map(|u| u.backend.as_ref()),
            &ctx.conn,
            &ctx.config,
            &self.destination_info(),
        );
        // Over HBONE the endpoint's identity was verified: it is the destination principal.
        if let Some(Endpoint {
            transport:
                EndpointTransport::Hbone {
                    identity: ExpectedIdentity::Exact(id),
                },
            ..
        }) = &ctx.endpoint
        {
            destination.destination_principal = metrics::bounded(id.as_str());
        }
        let grpc_status = record
            .grpc
            .then(|| {
                resp.headers()
                    .get("grpc-status")
                    .and_then(grpc_status_label)
            })
            .flatten();
        let status = resp.status();
        // Servers send no body for these whatever the body says, and may never poll it.
        let bodyless = record.head
            || status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;
        let authz = ctx.extensions.get::<AuthzDecision>();
        if let Some(decision) = authz {
            let policy = decision
                .policy
                .as_ref()
                .map_or_else(|| "-".to_owned(), |p| format!("{}/{}", p.namespace, p.name));
            self.inner
                .authz
                .get_or_create(&AuthzLabels {
                    decision: if decision.allowed { "allow" } else { "deny" },
                    action: metrics::bounded(&decision.action),
                    policy: metrics::bounded(&policy),
                })
                .inc();
        }
        let pending = Pending {
            telemetry: self.clone(),
            bodyless,
            conn: ctx.conn.clone(),
            destination,
            status: status.as_u16(),
            flags: ctx.response_flags.clone(),
            route: ctx
                .route
                .as_ref()
                .map(|r| format!("{}/{}#{}", r.route.namespace, r.route.name, r.rule)),
            grpc_status,
            upstream_host: ctx.endpoint.as_ref().map(|e| e.address),
            authz: authz.map(|d| {
                let policy = d.policy.as_ref().map(|p| match d.rule {
                    Some(rule) => format!("{p}#{rule}"),
                    None => p.to_string(),
                });
                (if d.allowed { "allow" } else { "deny" }, policy)
            }),
            bytes_sent: 0,
            record,
        };
        resp.map(|inner| {
            UnsyncBoxBody::new(ResponseBody {
                inner,
                pending: Some(Box::new(pending)),
            })
        })
    }

    /// Records a config load or reload; on success also the version now served.
    pub fn reload(&self, ok: bool, version: u64) {
        self.inner.config.reload(ok, version);
    }

    /// The TCP labels of an inbound connection (destination: the Service at its original
    /// destination in `config`).
    pub fn tcp_labels(&self, conn: &ConnInfo, config: &Config) -> TcpLabels {
        TcpLabels::from_conn(conn, config, &self.destination_info())
    }

    /// Wraps an inbound stream so Istio's TCP metrics count it (see [`TcpMetrics::counted`]).
    pub fn counted<S>(&self, io: S, conn: &ConnInfo, config: &Config) -> CountedIo<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner.tcp.counted(io, &self.tcp_labels(conn, config))
    }

    /// The HTTP request metrics (for tests and vendors reading counts).
    pub fn request_metrics(&self) -> &RequestMetrics {
        &self.inner.requests
    }

    /// The TCP metrics.
    pub fn tcp_metrics(&self) -> &TcpMetrics {
        &self.inner.tcp
    }

    /// Access log lines dropped so far because the writer fell behind.
    pub fn access_log_dropped(&self) -> u64 {
        self.inner.access_log_dropped.get()
    }

    fn destination_info(&self) -> DestinationInfo<'_> {
        DestinationInfo {
            cluster_domain: &self.inner.cluster_domain,
            cluster: self.inner.cluster.as_deref(),
        }
    }
}

fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A gRPC status is a small number; anything else from the upstream is not a label value.
fn grpc_status_label(value: &http::HeaderValue) -> Option<Label> {
    let s = value.to_str().ok()?.trim();
    (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Cow::Owned(s.to_owned()))
}

/// What [`Telemetry::begin`] learned about a request, handed back to [`Telemetry::finish`].
#[derive(Debug)]
pub struct RequestRecord {
    start_time: SystemTime,
    started: Instant,
    head: bool,
    grpc: bool,
    trace: TraceContext,
    request_bytes: Arc<AtomicU64>,
    // Only copied when the request is access-logged or its span exported.
    request: Option<RequestLine>,
    log: bool,
    span: bool,
}

#[derive(Debug)]
struct RequestLine {
    method: String,
    authority: Option<String>,
    path: String,
    protocol: &'static str,
}

impl RequestRecord {
    /// The request's trace context (the waypoint's span).
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// Request body bytes read so far.
    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.load(Ordering::Relaxed)
    }
}

struct CountingBody {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl http_body::Body for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &res
            && let Some(data) = frame.data_ref()
        {
            this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Everything needed to record a request once its response body is done.
struct Pending {
    telemetry: Telemetry,
    bodyless: bool,
    conn: Arc<ConnInfo>,
    destination: DestinationLabels,
    status: u16,
    flags: Vec<ResponseFlag>,
    route: Option<String>,
    grpc_status: Option<Label>,
    upstream_host: Option<std::net::SocketAddr>,
    authz: Option<(&'static str, Option<String>)>,
    bytes_sent: u64,
    record: RequestRecord,
}

impl Pending {
    /// Records the request. `extra` is a flag for how the body ended abnormally: `UR` when the
    /// upstream body failed, `DC` when the client went away before the end.
    fn complete(mut self, extra: Option<ResponseFlag>) {
        let inner = &self.telemetry.inner;
        if let Some(flag) = extra
            && !self.flags.contains(&flag)
        {
            self.flags.push(flag);
        }
        let duration = self.record.started.elapsed();
        let request_bytes = self.record.request_bytes.load(Ordering::Relaxed);
        let labels = RequestLabels {
            reporter: Cow::Borrowed("waypoint"),
            source: SourceLabels::from_conn(&self.conn),
            destination: self.destination,
            request_protocol: Cow::Borrowed(if self.record.grpc { "grpc" } else { "http" }),
            response_code: Cow::Owned(self.status.to_string()),
            grpc_response_status: self.grpc_status.unwrap_or(Cow::Borrowed("")),
            connection_security_policy: security_policy(&self.conn),
            response_flags: flags_label(&self.flags),
        };
        inner
            .requests
            .record(&labels, duration, request_bytes, self.bytes_sent);

        let Some(line) = self.record.request else {
            return;
        };
        let service = &labels.destination.destination_service;
        if self.record.span
            && let Some(exporter) = &inner.otlp
        {
            let target = self
                .route
                .as_deref()
                .or((service != UNKNOWN).then_some(&**service));
            exporter.record(SpanRecord {
                trace: self.record.trace,
                name: match target {
                    Some(t) => format!("{} {t}", line.method),
                    None => line.method.clone(),
                },
                start: self.record.start_time,
                end: self.record.start_time + duration,
                method: line.method.clone(),
                path: line.path.clone(),
                status: self.status,
                authority: line.authority.clone(),
                peer_principal: self
                    .conn
                    .peer_identity
                    .as_ref()
                    .map(|id| id.as_str().to_owned()),
            });
        }
        let (true, Some(logger)) = (self.record.log, &inner.access_log) else {
            return;
        };
        logger.log(&AccessLogEntry {
            start_time: self.record.start_time,
            source_principal: self
                .conn
                .peer_identity
                .as_ref()
                .map(|id| id.as_str().to_owned()),
            source_address: self.conn.source,
            destination_address: self.conn.destination,
            destination_service: (service != UNKNOWN).then(|| service.to_string()),
            method: line.method,
            authority: line.authority,
            path: line.path,
            protocol: line.protocol,
            response_code: self.status,
            response_flags: labels.response_flags.to_string(),
            upstream_host: self.upstream_host,
            authz: self.authz.as_ref().map(|a| a.0),
            authz_policy: self.authz.as_ref().and_then(|a| a.1.clone()),
            bytes_received: request_bytes,
            bytes_sent: self.bytes_sent,
            duration_ms: duration.as_millis().try_into().unwrap_or(u64::MAX),
            trace_id: self.record.trace.trace_id_hex(),
            route: self.route,
        });
    }
}

/// The response body as sent downstream: counted, and recorded once when it ends.
struct ResponseBody {
    inner: Body,
    pending: Option<Box<Pending>>,
}

impl ResponseBody {
    fn complete(&mut self, extra: Option<ResponseFlag>) {
        if let Some(pending) = self.pending.take() {
            pending.complete(extra);
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(pending) = this.pending.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        pending.bytes_sent += data.len() as u64;
                    }
                    if let Some(trailers) = frame.trailers_ref()
                        && pending.record.grpc
                        && let Some(status) =
                            trailers.get("grpc-status").and_then(grpc_status_label)
                    {
                        pending.grpc_status = Some(status);
                    }
                }
                if this.inner.is_end_stream() {
                    this.complete(None);
                }
            }
            Poll::Ready(Some(Err(_))) => this.complete(Some(ResponseFlag::UpstreamRemoteReset)),
            Poll::Ready(None) => this.complete(None),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A server may stop polling once `is_end_stream` says so, or never poll a body it must
        // not send: both are normal ends.
        let normal =
            self.inner.is_end_stream() || self.pending.as_ref().is_some_and(|p| p.bodyless);
        let extra = (!normal).then_some(ResponseFlag::DownstreamConnectionTermination);
        self.complete(extra);
    }
}
