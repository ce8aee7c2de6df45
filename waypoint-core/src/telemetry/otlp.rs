//! OpenTelemetry span export over OTLP/HTTP with the JSON encoding: one SERVER span per sampled
//! request, so the waypoint shows up in the traces its `traceparent` propagation links together.
//!
//! ```text
//!  request path ──try_send──▶ bounded queue ──▶ batcher task ──POST <endpoint>/v1/traces──▶ collector
//!   (never waits: a full        (2048 spans)     (512 spans or     (HTTP/1.1, 5 s timeout,
//!    queue drops the span)                         1 s, first wins)   one attempt per batch)
//! ```
//!
//! The body is an `ExportTraceServiceRequest` in the OTLP JSON mapping: trace and span ids are
//! lower-case hex (not base64), 64-bit integers (times, `intValue`) are decimal strings, and
//! enums (`kind`, `status.code`) are numbers. The export goes through the side-call client
//! ([`crate::http::client`]): `http://` collectors, or `https://` ones verified against the
//! Web-PKI roots compiled into waypoint (a hosted collector; no private CA can be configured).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::mpsc;

use super::access_log::truncate;
use super::trace::TraceContext;
use crate::http::client::{HttpUrl, SideCallError, SideClient, UrlError};

/// The path OTLP/HTTP collectors take traces on, appended to the endpoint.
pub(crate) const TRACES_PATH: &str = "/v1/traces";
/// The most spans one export request carries.
pub(crate) const MAX_BATCH: usize = 512;
/// How long a span may wait for its batch to fill before the batch is sent anyway.
pub(crate) const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long one export (connect, send, response) may take before it is abandoned.
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many spans may wait for the exporter; beyond that spans are dropped and counted.
pub(crate) const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;
/// The longest `url.path` attribute, in bytes (the same bound as access log paths).
pub(crate) const MAX_URL_PATH: usize = 1024;

/// `kind` of a span the waypoint serves (OTLP `SPAN_KIND_SERVER`).
const SPAN_KIND_SERVER: u8 = 2;
/// `status.code` of a failed span (OTLP `STATUS_CODE_ERROR`).
const STATUS_CODE_ERROR: u8 = 2;
/// How much of a collector's error response is kept for the log line.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Where and how much to export.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpOptions {
    /// The collector's base URL, `http://host:port` (optionally with a path prefix);
    /// spans are POSTed to `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// The fraction of requests whose span is exported, from 0.0 to 1.0.
    pub sample: f64,
}

impl Default for OtlpOptions {
    /// A collector on the same host at the standard OTLP/HTTP port, every request sampled.
    fn default() -> Self {
        OtlpOptions {
            endpoint: "http://127.0.0.1:4318".to_owned(),
            sample: 1.0,
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not an `http://host[:port][/prefix]` URL.
    #[error("OTLP endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The sample rate is not a number from 0 to 1.
    #[error("OTLP sample rate {0} is not between 0.0 and 1.0")]
    InvalidSample(f64),
    /// There is no Tokio runtime to run the exporter task on.
    #[error("the OTLP exporter must be started inside a Tokio runtime")]
    NoRuntime,
}

/// Where export requests go, resolved once at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    /// The collector's URL as configured, split.
    url: HttpUrl,
    /// The request path: the endpoint's prefix plus [`TRACES_PATH`].
    path: String,
}

fn parse_endpoint(endpoint: &str) -> Result<Target, OtlpError> {
    let invalid = |reason| OtlpError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let url = HttpUrl::parse(endpoint).map_err(|e| match e {
        UrlError::NotAUrl => invalid("not a URL"),
        UrlError::NotHttp => invalid("the scheme must be http:// or https://"),
        UrlError::NoHost => invalid("no host"),
        UrlError::Credentials => invalid("credentials in the URL are not supported"),
    })?;
    if url.query().is_some() {
        return Err(invalid("a query string is not allowed"));
    }
    let path = format!("{}{TRACES_PATH}", url.path().trim_end_matches('/'));
    Ok(Target { url, path })
}

/// One finished request, as its span is exported.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SpanRecord {
    /// Trace id, the waypoint's span id and the parent span id.
    pub trace: TraceContext,
    /// The span name: `<method> <route or destination service>`.
    pub name: String,
    /// When the request arrived.
    pub start: SystemTime,
    /// When its response ended.
    pub end: SystemTime,
    /// `http.request.method`.
    pub method: String,
    /// `url.path`: the request path (a query is cut off; so is anything beyond
    /// [`MAX_URL_PATH`] bytes).
    pub path: String,
    /// `http.response.status_code`; 5xx marks the span as an error.
    pub status: u16,
    /// `server.address`: the request's authority, when it had one.
    pub authority: Option<String>,
    /// `peer.principal`: the client's SPIFFE identity, when authenticated.
    pub peer_principal: Option<String>,
}

/// The handle the request path records spans through. Dropping it (with the last clone of the
/// `Telemetry` holding it) lets the exporter send what is queued and stop.
#[derive(Debug)]
pub(crate) struct OtlpExporter {
    tx: mpsc::Sender<SpanRecord>,
    sample: f64,
    dropped: Counter,
}

impl OtlpExporter {
    /// Checks `opts`, registers the exporter's metrics (`waypoint_otlp_spans_dropped_total`,
    /// `waypoint_otlp_export_failures_total`, `waypoint_otlp_spans_exported_total`) and spawns
    /// the export task on the current Tokio runtime.
    pub(crate) fn start(opts: OtlpOptions, registry: &mut Registry) -> Result<Self, OtlpError> {
        if !(0.0..=1.0).contains(&opts.sample) {
            return Err(OtlpError::InvalidSample(opts.sample));
        }
        let target = parse_endpoint(&opts.endpoint)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtlpError::NoRuntime)?;
        let (dropped, failures, exported) =
            (Counter::default(), Counter::default(), Counter::default());
        registry.register(
            "waypoint_otlp_spans_dropped",
            "Spans dropped because the OTLP export queue was full",
            dropped.clone(),
        );
        registry.register(
            "waypoint_otlp_export_failures",
            "OTLP export requests that failed (their spans are lost)",
            failures.clone(),
        );
        registry.register(
            "waypoint_otlp_spans_exported",
            "Spans a collector accepted",
            exported.clone(),
        );
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        runtime.spawn(run(rx, target, failures, exported));
        Ok(OtlpExporter {
            tx,
            sample: opts.sample,
            dropped,
        })
    }

    /// Whether the next request's span is to be exported (drawn at the configured rate).
    pub(crate) fn sampled(&self) -> bool {
        self.sample >= 1.0 || (self.sample > 0.0 && fastrand::f64() < self.sample)
    }

    /// Queues a span without waiting; when the queue is full the span is dropped and counted.
    pub(crate) fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    /// Spans dropped so far because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// The export task: batches spans and sends each batch once. A failed batch is logged,
/// counted and dropped, so a dead collector costs one attempt per batch and no memory.
async fn run(
    mut rx: mpsc::Receiver<SpanRecord>,
    target: Target,
    failures: Counter,
    exported: Counter,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_INTERVAL;
        let mut open = true;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        let body = encode(&batch);
        match export(&target, body).await {
            Ok(()) => {
                exported.inc_by(batch.len() as u64);
            }
            Err(reason) => {
                failures.inc();
                tracing::warn!(
                    collector = %target.url.authority,
                    spans = batch.len(),
                    "OTLP export failed, spans dropped: {reason}"
                );
            }
        }
        batch.clear();
        if !open {
            return;
        }
    }
}

/// POSTs one body to the collector over a fresh HTTP/1.1 connection (at most one per
/// [`BATCH_INTERVAL`] under light load, so pooling would buy little), within [`EXPORT_TIMEOUT`].
async fn export(target: &Target, body: Vec<u8>) -> Result<(), String> {
    let request = http::Request::post(target.path.as_str())
        .header(http::header::HOST, target.url.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    let client = SideClient::new(EXPORT_TIMEOUT, MAX_ERROR_BODY);
    let response = client
        .send_url(&target.url, request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // The body is read (bounded) so the connection ends cleanly and an error can be shown;
    // OTLP's partial-success details are not acted on, so a body that breaks off or is too
    // long is no failure. Running out of time is.
    let text = match response.body().await {
        Ok(text) => text,
        Err(e @ SideCallError::Timeout(_)) => return Err(e.to_string()),
        Err(_) => Bytes::new(),
    };
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&text);
        Err(format!(
            "collector answered {status}: {}",
            truncate(text.trim(), 200)
        ))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource {
    attributes: [KeyValue<'static>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Vec<Span<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Span<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    name: &'a str,
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'static str,
    value: AnyValue<'a>,
}

/// Serialises as `{"stringValue": ...}` / `{"intValue": "..."}`, the OTLP JSON `AnyValue`.
#[derive(Serialize)]
enum AnyValue<'a> {
    #[serde(rename = "stringValue")]
    String(&'a str),
    #[serde(rename = "intValue")]
    Int(String),
}

#[derive(Serialize)]
struct Status {
    code: u8,
}

fn unix_nanos(t: SystemTime) -> String {
    let nanos = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX).to_string()
}

fn span_json(s: &SpanRecord) -> Span<'_> {
    let path = s.path.split('?').next().unwrap_or_default();
    let mut attributes = vec![
        KeyValue {
            key: "http.request.method",
            value: AnyValue::String(&s.method),
        },
        KeyValue {
            key: "url.path",
            value: AnyValue::String(truncate(path, MAX_URL_PATH)),
        },
        KeyValue {
            key: "http.response.status_code",
            value: AnyValue::Int(s.status.to_string()),
        },
    ];
    if let Some(authority) = &s.authority {
        attributes.push(KeyValue {
            key: "server.address",
            value: AnyValue::String(authority),
        });
    }
    if let Some(principal) = &s.peer_principal {
        attributes.push(KeyValue {
            key: "peer.principal",
            value: AnyValue::String(principal),
        });
    }
    Span {
        trace_id: format!("{:032x}", s.trace.trace_id),
        span_id: format!("{:016x}", s.trace.span_id),
        parent_span_id: s.trace.parent_span_id.map(|p| format!("{p:016x}")),
        name: &s.name,
        kind: SPAN_KIND_SERVER,
        start_time_unix_nano: unix_nanos(s.start),
        end_time_unix_nano: unix_nanos(s.end),
        attributes,
        status: (s.status >= 500).then_some(Status {
            code: STATUS_CODE_ERROR,
        }),
    }
}

/// The `ExportTraceServiceRequest` JSON for `spans`.
fn encode(spans: &[SpanRecord]) -> Vec<u8> {
    let request = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: [KeyValue {
                    key: "service.name",
                    value: AnyValue::String("waypoint"),
                }],
            },
            scope_spans: [ScopeSpans {
                scope: Scope {
                    name: "waypoint",
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans: spans.iter().map(span_json).collect(),
            }],
        }],
    };
    // Serialising plain structs of strings and integers into memory cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::TraceSource;

    fn span(status: u16, path: &str) -> SpanRecord {
        SpanRecord {
            trace: TraceContext {
                trace_id: 0x0af7651916cd43dd8448eb211c80319c,
                span_id: 0x00f067aa0ba902b7,
                parent_span_id: None,
                flags: 1,
                source: TraceSource::New,
            },
            name: "GET shop/echo#0".into(),
            start: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            end: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_223_456_789),
            method: "GET".into(),
            path: path.into(),
            status,
            authority: None,
            peer_principal: None,
        }
    }

    #[test]
    fn endpoints_are_parsed_http_or_https() {
        let t = parse_endpoint("http://otel-collector.istio-system:4318").unwrap();
        assert_eq!(
            (t.url.host.as_str(), t.url.port, t.path.as_str()),
            ("otel-collector.istio-system", 4318, "/v1/traces")
        );
        let t = parse_endpoint("http://[::1]:4318/otlp/").unwrap();
        assert_eq!(
            (t.url.host.as_str(), t.url.authority.as_str()),
            ("::1", "[::1]:4318")
        );
        assert_eq!(t.path, "/otlp/v1/traces");
        assert_eq!(parse_endpoint("http://collector").unwrap().url.port, 80);
        let t = parse_endpoint("https://collector.example").unwrap();
        assert_eq!((t.url.port, t.url.tls), (443, true));
        assert!(!parse_endpoint("http://collector").unwrap().url.tls);
        for bad in [
            "collector:4318",
            "grpc://c:4317",
            "http://u:p@c:4318",
            "http://c/?x=1",
        ] {
            assert!(
                matches!(parse_endpoint(bad), Err(OtlpError::InvalidEndpoint { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn spans_use_the_otlp_json_mapping() {
        let long = format!("/{}?secret=1", "a".repeat(2000));
        let json: serde_json::Value =
            serde_json::from_slice(&encode(&[span(200, "/a?b=c"), span(503, &long)])).unwrap();
        let spans = &json["resourceSpans"][0]["scopeSpans"][0]["spans"];
        let ok = &spans[0];
        assert_eq!(ok["traceId"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(ok["spanId"], "00f067aa0ba902b7");
        assert!(ok.get("parentSpanId").is_none());
        assert_eq!(ok["kind"], 2);
        assert_eq!(ok["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(ok["endTimeUnixNano"], "1700000000223456789");
        assert_eq!(ok["attributes"][1]["value"]["stringValue"], "/a");
        assert_eq!(ok["attributes"][2]["value"]["intValue"], "200");
        assert!(ok.get("status").is_none());
        let failed = &spans[1];
        assert_eq!(failed["status"]["code"], 2);
        let path = failed["attributes"][1]["value"]["stringValue"]
            .as_str()
            .unwrap();
        assert_eq!(path.len(), MAX_URL_PATH);
        assert!(!path.contains("secret"));
    }

    #[tokio::test]
    async fn a_full_queue_drops_spans_instead_of_waiting() {
        let mut registry = Registry::default();
        // The endpoint is never reached: the export task cannot run before this test yields.
        let exporter = OtlpExporter::start(
            OtlpOptions {
                endpoint: "http://127.0.0.1:9".into(),
                sample: 1.0,
            },
            &mut registry,
        )
        .unwrap();
        for _ in 0..QUEUE_CAPACITY + 10 {
            exporter.record(span(200, "/"));
        }
        // The task has not run yet on this single-threaded test runtime: exactly the excess
        // was dropped.
        assert_eq!(exporter.dropped(), 10);
    }

    #[test]
    fn bad_sample_rates_and_missing_runtime_are_refused() {
        let mut registry = Registry::default();
        let opts = |sample| OtlpOptions {
            sample,
            ..OtlpOptions::default()
        };
        assert_eq!(
            OtlpExporter::start(opts(1.5), &mut registry).unwrap_err(),
            OtlpError::InvalidSample(1.5)
        );
        assert!(OtlpExporter::start(opts(f64::NAN), &mut registry).is_err());
        assert_eq!(
            OtlpExporter::start(opts(1.0), &mut registry).unwrap_err(),
            OtlpError::NoRuntime
        );
    }
}
