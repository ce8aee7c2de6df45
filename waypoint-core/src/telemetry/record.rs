//! One request's record, from [`Telemetry::begin`] to its completion: what the request head
//! said, the bytes each body carried, and the recording itself (metrics, span, access log line)
//! once the response body is over. Who sees that end (the pipeline's completion, or
//! [`Telemetry::finish`] alone) calls [`PendingRecord::complete`] once.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body::Frame;

use super::Telemetry;
use super::access_log::AccessLogEntry;
use super::metrics::{DestinationLabels, Label, UNKNOWN, flags_label};
use super::otlp::SpanRecord;
use super::series::RequestOutcome;
use super::trace::TraceContext;
use crate::body::{BodyEnd, BodyWatch, BoxError};
use crate::conn::ConnInfo;
use crate::flags::ResponseFlag;

/// A gRPC status is a small number; anything else from the upstream is not a label value.
pub(super) fn grpc_status_label(value: &http::HeaderValue) -> Option<Label> {
    let s = value.to_str().ok()?.trim();
    (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Cow::Owned(s.to_owned()))
}

/// What [`Telemetry::begin`] learned about a request, handed back to [`Telemetry::finish`].
#[derive(Debug)]
pub struct RequestRecord {
    pub(super) start_time: SystemTime,
    pub(super) started: Instant,
    pub(super) head: bool,
    pub(super) grpc: bool,
    pub(super) trace: TraceContext,
    pub(super) request_bytes: Arc<AtomicU64>,
    // Only copied when the request is access-logged or its span exported.
    pub(super) request: Option<RequestLine>,
    pub(super) log: bool,
    pub(super) span: bool,
}

#[derive(Debug)]
pub(super) struct RequestLine {
    pub(super) method: String,
    pub(super) authority: Option<String>,
    pub(super) path: String,
    pub(super) protocol: &'static str,
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

/// Everything needed to record a request once its response body is done: built by
/// [`Telemetry::pending`] after the response filters, completed by whoever sees the body end
/// (the request's completion, or [`Telemetry::finish`]'s wrapper).
pub(crate) struct PendingRecord {
    pub(super) telemetry: Telemetry,
    pub(super) bodyless: bool,
    pub(super) conn: Arc<ConnInfo>,
    pub(super) destination: Arc<DestinationLabels>,
    pub(super) status: u16,
    pub(super) flags: Vec<ResponseFlag>,
    pub(super) route: Option<String>,
    pub(super) grpc_status: Option<Label>,
    pub(super) upstream_host: Option<std::net::SocketAddr>,
    pub(super) authz: Option<(&'static str, Option<String>)>,
    pub(super) bytes_sent: u64,
    pub(super) record: RequestRecord,
}

impl PendingRecord {
    /// Counts a response frame on its way to the client: its data bytes, and the gRPC status
    /// of its trailers.
    pub(crate) fn on_frame(&mut self, frame: &Frame<Bytes>) {
        if let Some(data) = frame.data_ref() {
            self.bytes_sent += data.len() as u64;
        }
        if let Some(trailers) = frame.trailers_ref()
            && self.record.grpc
            && let Some(status) = trailers.get("grpc-status").and_then(grpc_status_label)
        {
            self.grpc_status = Some(status);
        }
    }

    /// The response flag for how the body ended, when it ended abnormally: `UR` when it
    /// failed (the upstream broke off), `DC` when the client went away before its end. A body
    /// the server must not send (`HEAD`, 1xx, 204, 304) may be dropped unread: a normal end.
    pub(crate) fn end_flag(&self, end: BodyEnd) -> Option<ResponseFlag> {
        match end {
            BodyEnd::Complete => None,
            BodyEnd::Failed => Some(ResponseFlag::UpstreamRemoteReset),
            BodyEnd::Dropped if self.bodyless => None,
            BodyEnd::Dropped => Some(ResponseFlag::DownstreamConnectionTermination),
        }
    }

    /// Records the request (metrics, span, access log line) with `extra`, the flag of how the
    /// body ended ([`PendingRecord::end_flag`]), and returns what was recorded.
    pub(crate) fn complete(mut self, extra: Option<ResponseFlag>) -> Totals {
        let inner = &self.telemetry.inner;
        if let Some(flag) = extra
            && !self.flags.contains(&flag)
        {
            self.flags.push(flag);
        }
        let duration = self.record.started.elapsed();
        let request_bytes = self.record.request_bytes.load(Ordering::Relaxed);
        self.telemetry.with_request_series(
            &self.conn,
            &self.destination,
            RequestOutcome {
                grpc: self.record.grpc,
                status: self.status,
                grpc_status: &self.grpc_status,
                flags: &self.flags,
            },
            |series| series.record(duration, request_bytes, self.bytes_sent),
        );
        let totals = Totals {
            duration,
            request_bytes,
            response_bytes: self.bytes_sent,
        };

        let Some(line) = self.record.request else {
            return totals;
        };
        let service = &self.destination.destination_service;
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
            return totals;
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
            response_flags: flags_label(&self.flags).to_string(),
            upstream_host: self.upstream_host,
            authz: self.authz.as_ref().map(|a| a.0),
            authz_policy: self.authz.as_ref().and_then(|a| a.1.clone()),
            bytes_received: request_bytes,
            bytes_sent: self.bytes_sent,
            duration_ms: duration.as_millis().try_into().unwrap_or(u64::MAX),
            trace_id: self.record.trace.trace_id_hex(),
            route: self.route,
        });
        totals
    }
}

/// What a completed request recorded: the figures the end-of-request filter phase sees too.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Totals {
    /// From the request's arrival until its response body ended.
    pub(crate) duration: Duration,
    /// Request body bytes read from the client.
    pub(crate) request_bytes: u64,
    /// Response body bytes sent to the client.
    pub(crate) response_bytes: u64,
}

/// Alone ([`Telemetry::finish`]), the record watches the response body itself.
impl BodyWatch for PendingRecord {
    fn on_frame(&mut self, frame: &Frame<Bytes>) -> Result<(), BoxError> {
        PendingRecord::on_frame(self, frame);
        Ok(())
    }

    fn on_end(self, end: BodyEnd) {
        let extra = self.end_flag(end);
        self.complete(extra);
    }
}

/// Counts the request body's bytes as the upstream reads them.
pub(super) struct RequestBytes(pub(super) Arc<AtomicU64>);

impl BodyWatch for RequestBytes {
    fn on_frame(&mut self, frame: &Frame<Bytes>) -> Result<(), BoxError> {
        if let Some(data) = frame.data_ref() {
            self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}
