//! Istio-standard observability the request path calls: metrics, access logs and trace context.
//!
//! ```text
//!  request ──▶ Telemetry::begin   (trace context into the headers, request body counted)
//!          ──▶ filters, upstream
//!  response ◀── Telemetry::pending (a record of the response; the request's completion counts
//!                                   its body and, when it ends or is dropped, records the
//!                                   istio_* metrics, the span and the access log line)
//! ```
//!
//! [`Telemetry::finish`] does the same on its own, for a caller without a completion.
//!
//! - `metrics`: `istio_requests_total`, `istio_request_duration_milliseconds`,
//!   `istio_request_bytes`, `istio_response_bytes`, `istio_tcp_*`, the waypoint's config metrics
//!   and process metrics, with Istio's labels, so Kiali and Istio's dashboards work unchanged.
//! - [`access_log`]: one JSON (or text) line per request, written off the request path.
//! - `stream`: the same for connections proxied as bytes (TCP, TLS passthrough): TCP labels
//!   with the connection's destination and flags, one access log line per connection
//!   (`protocol` `TCP`/`TLS`, `response_code` 0, `authority` the SNI), its authorization
//!   decision counted.
//! - [`trace`]: W3C `traceparent` propagation (with B3 and HBONE imports).
//! - [`otlp`]: when configured, one span per sampled request exported over OTLP/HTTP (JSON).

pub mod access_log;
pub(crate) mod metrics;
pub mod otlp;
pub mod trace;

mod record;
mod series;
mod stream;

pub use metrics::{CountedIo, TcpLabels, TcpMetrics};
pub(crate) use record::PendingRecord;
pub use record::RequestRecord;
pub(crate) use series::ConnSeries;
pub(crate) use stream::StreamEnd;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::Body;
use crate::config::{Config, Endpoint, EndpointTransport};
use crate::conn::ConnInfo;
use crate::filter::{AuthzDecision, RequestContext, UpstreamTarget};
use crate::tls::ExpectedIdentity;

use access_log::{AccessLogOptions, AccessLogger, MAX_PATH_LEN, truncate};
use metrics::{
    ConfigMetrics, DestinationInfo, DestinationLabels, DestinationSource, Label, ProcessCollector,
    RequestMetrics,
};
use otlp::{OtlpExporter, OtlpOptions};
use record::{RequestBytes, RequestLine, grpc_status_label};

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
    /// the OTLP options are unusable (a malformed endpoint, a sample rate outside 0..=1).
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
    pub(crate) fn unbound_destination(&self, reason: &'static str) {
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
        *req.body_mut() = crate::body::watch(body, RequestBytes(request_bytes.clone()));
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

    /// Finishes recording on its own: wraps the response body so that when it ends (or is
    /// dropped, e.g. the client went away) the `istio_*` metrics are recorded and the access
    /// log line queued. (The proxy instead puts `Telemetry::pending`'s record in the
    /// request's one completion, beside the other end-of-request work.)
    pub fn finish(
        &self,
        record: RequestRecord,
        ctx: &RequestContext,
        resp: http::Response<Body>,
    ) -> http::Response<Body> {
        let pending = self.pending(record, ctx, &resp);
        resp.map(|body| crate::body::watch(body, pending))
    }

    /// The record of a request whose response (after the response filters) is `resp`, to be
    /// completed when its body ends; counts the authorization decision now.
    pub(crate) fn pending(
        &self,
        record: RequestRecord,
        ctx: &RequestContext,
        resp: &http::Response<Body>,
    ) -> PendingRecord {
        let destination = self.destination_of(
            &ctx.conn,
            DestinationSource::resolve(
                ctx.upstream.as_ref().map(|u| u.backend.as_ref()),
                &ctx.conn,
                &ctx.config,
            ),
            verified_principal(ctx.endpoint.as_ref()),
        );
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
            self.count_authz_on(&ctx.conn, decision);
        }
        // The route and decision are only written in the access log line and the span.
        let described = record.request.is_some();
        PendingRecord {
            telemetry: self.clone(),
            bodyless,
            conn: ctx.conn.clone(),
            destination,
            status: status.as_u16(),
            flags: ctx.response_flags.clone(),
            route: ctx
                .route
                .as_ref()
                .filter(|_| described)
                .map(|r| format!("{}/{}#{}", r.route.namespace, r.route.name, r.rule)),
            grpc_status,
            upstream_host: ctx.endpoint.as_ref().map(|e| e.address),
            authz: authz.filter(|_| record.log).map(authz_log_fields),
            bytes_sent: 0,
            record,
        }
    }

    /// Counts one authorization decision in `waypoint_authz_decisions_total`.
    fn count_authz(&self, decision: &AuthzDecision) {
        self.authz_counter(decision).inc();
    }

    /// The destination labels of a request or proxied connection sent to `upstream` (else
    /// the Service or Pod `conn` dialled), at `endpoint` when one was chosen.
    fn destination_labels(
        &self,
        upstream: Option<&UpstreamTarget>,
        conn: &ConnInfo,
        config: &Config,
        endpoint: Option<&Endpoint>,
    ) -> DestinationLabels {
        let backend = upstream.map(|u| u.backend.as_ref());
        let mut destination =
            DestinationLabels::resolve(backend, conn, config, &self.destination_info());
        if let Some(principal) = verified_principal(endpoint) {
            destination.destination_principal = metrics::bounded(principal);
        }
        destination
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

/// The identity of `endpoint` when it was verified: over HBONE it is the destination principal.
fn verified_principal(endpoint: Option<&Endpoint>) -> Option<&str> {
    match endpoint {
        Some(Endpoint {
            transport:
                EndpointTransport::Hbone {
                    identity: ExpectedIdentity::Exact(id),
                },
            ..
        }) => Some(id.as_str()),
        _ => None,
    }
}

/// The access log's `authz` and `authz_policy` fields for `decision`.
fn authz_log_fields(decision: &AuthzDecision) -> (&'static str, Option<String>) {
    let policy = decision.policy.as_ref().map(|p| match decision.rule {
        Some(rule) => format!("{p}#{rule}"),
        None => p.to_string(),
    });
    (if decision.allowed { "allow" } else { "deny" }, policy)
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
