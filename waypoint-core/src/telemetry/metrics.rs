//! Istio's standard metrics (`istio_requests_total`, `istio_tcp_*`, ...) with Istio's labels, the
//! waypoint's own config metrics, and process metrics read from `/proc/self` at scrape time.
//!
//! Everything registers into a caller-owned [`Registry`], so a vendor merges ours into theirs.
//! Label values from the network are capped at [`MAX_LABEL_LEN`] bytes and never include request
//! paths or authorities, whose cardinality a client controls.

use std::borrow::Cow;

use crate::flags::ResponseFlag;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{Config, ServiceBackend};
use crate::conn::ConnInfo;

/// Longest label value kept, in bytes; longer values are cut at a character boundary.
pub(crate) const MAX_LABEL_LEN: usize = 128;

/// The value Istio writes for a label it cannot know.
pub(crate) const UNKNOWN: &str = "unknown";

/// Istio's buckets for `istio_request_duration_milliseconds`.
pub(crate) const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets for `istio_request_bytes` and `istio_response_bytes`.
pub(crate) const SIZE_BUCKETS: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// A label value.
pub(crate) type Label = Cow<'static, str>;

/// A label value from untrusted input: cut to [`MAX_LABEL_LEN`] bytes, `unknown` when empty.
pub(crate) fn bounded(value: &str) -> Label {
    if value.is_empty() {
        return Cow::Borrowed(UNKNOWN);
    }
    let mut end = value.len().min(MAX_LABEL_LEN);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(value[..end].to_owned())
}

fn opt(value: Option<&str>) -> Label {
    value.map_or(Cow::Borrowed(UNKNOWN), bounded)
}

/// Istio's `source_*` labels, learned from the connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabels {
    /// The workload name from the baggage (`k8s.<kind>.name`).
    pub source_workload: Label,
    /// The baggage namespace, else the peer identity's namespace.
    pub source_workload_namespace: Label,
    /// The peer's SPIFFE URI (`spiffe://td/ns/x/sa/y`).
    pub source_principal: Label,
    /// The baggage `service.name` (Istio's `app` label).
    pub source_app: Label,
    /// The baggage `service.version`.
    pub source_version: Label,
    /// The baggage `service.name`, as Istio's canonical service (Kiali groups apps by it).
    pub source_canonical_service: Label,
    /// The baggage `service.version`, as Istio's canonical revision.
    pub source_canonical_revision: Label,
    /// The baggage `k8s.cluster.name`.
    pub source_cluster: Label,
}

impl SourceLabels {
    /// The source labels of a connection.
    pub(crate) fn from_conn(conn: &ConnInfo) -> Self {
        let meta = &conn.source_workload;
        let namespace = meta
            .namespace
            .as_deref()
            .or(conn.peer_identity.as_ref().map(|id| id.namespace()));
        SourceLabels {
            source_workload: opt(meta.workload_name.as_deref()),
            source_workload_namespace: opt(namespace),
            source_principal: opt(conn.peer_identity.as_ref().map(|id| id.as_str())),
            source_app: opt(meta.service_name.as_deref()),
            source_version: opt(meta.service_version.as_deref()),
            source_canonical_service: opt(meta.service_name.as_deref()),
            source_canonical_revision: opt(meta.service_version.as_deref()),
            source_cluster: opt(meta.cluster.as_deref()),
        }
    }
}

/// Istio's `destination_*` labels, learned from the backend Service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DestinationLabels {
    /// The Pod's name for workload-addressed traffic; else unknown (the waypoint does not
    /// learn which workload owns a Service's endpoint).
    pub destination_workload: Label,
    /// The Service's namespace (endpoints of a Service live in its namespace).
    pub destination_workload_namespace: Label,
    /// Unknown: the endpoint's identity is not verified on this path.
    pub destination_principal: Label,
    /// Unknown (the endpoint's labels are not known).
    pub destination_app: Label,
    /// Unknown (the endpoint's labels are not known).
    pub destination_version: Label,
    /// `<name>.<namespace>.svc.<cluster domain>`.
    pub destination_service: Label,
    /// The Service name.
    pub destination_service_name: Label,
    /// The Service namespace.
    pub destination_service_namespace: Label,
    /// Unknown (the endpoint's labels are not known).
    pub destination_canonical_service: Label,
    /// Unknown (the endpoint's labels are not known).
    pub destination_canonical_revision: Label,
    /// The cluster this waypoint serves, when configured.
    pub destination_cluster: Label,
}

/// Where the destination labels come from and what the waypoint knows of its own place.
#[derive(Clone, Debug)]
pub(crate) struct DestinationInfo<'a> {
    /// The DNS suffix of Services (`cluster.local`).
    pub cluster_domain: &'a str,
    /// The cluster name (Istio's `CLUSTER_ID`), if known.
    pub cluster: Option<&'a str>,
}

impl DestinationLabels {
    /// Labels for a request that reached no known Service.
    pub(crate) fn unknown(info: &DestinationInfo<'_>) -> Self {
        let u = || Cow::Borrowed(UNKNOWN);
        DestinationLabels {
            destination_workload: u(),
            destination_workload_namespace: u(),
            destination_principal: u(),
            destination_app: u(),
            destination_version: u(),
            destination_service: u(),
            destination_service_name: u(),
            destination_service_namespace: u(),
            destination_canonical_service: u(),
            destination_canonical_revision: u(),
            destination_cluster: opt(info.cluster),
        }
    }

    /// Labels for the Service `namespace`/`name`.
    pub(crate) fn service(namespace: &str, name: &str, info: &DestinationInfo<'_>) -> Self {
        let mut labels = Self::unknown(info);
        labels.destination_service =
            bounded(&format!("{name}.{namespace}.svc.{}", info.cluster_domain));
        labels.destination_service_name = bounded(name);
        labels.destination_service_namespace = bounded(namespace);
        labels.destination_workload_namespace = bounded(namespace);
        labels
    }

    /// Labels for a ServiceEntry of `namespace` known by `host`: as Istio reports one, the
    /// host is both the destination service and its name.
    pub(crate) fn service_entry(namespace: &str, host: &str, info: &DestinationInfo<'_>) -> Self {
        let mut labels = Self::unknown(info);
        labels.destination_service = bounded(host);
        labels.destination_service_name = bounded(host);
        labels.destination_service_namespace = bounded(namespace);
        labels
    }

    /// Labels for the Pod `namespace`/`name` addressed directly (no Service).
    pub(crate) fn workload(namespace: &str, name: &str, info: &DestinationInfo<'_>) -> Self {
        let mut labels = Self::unknown(info);
        labels.destination_workload = bounded(name);
        labels.destination_workload_namespace = bounded(namespace);
        labels
    }

    /// Labels for a Service given only by hostname (PROXY TLV 0xD1): name and namespace are
    /// read from `<name>.<namespace>.svc...` when it has that form.
    pub(crate) fn hostname(host: &str, info: &DestinationInfo<'_>) -> Self {
        let mut parts = host.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(ns), Some("svc")) if !name.is_empty() && !ns.is_empty() => {
                let mut labels = Self::service(ns, name, info);
                labels.destination_service = bounded(host);
                labels
            }
            _ => {
                let mut labels = Self::unknown(info);
                labels.destination_service = bounded(host);
                labels
            }
        }
    }

    /// The labels of the chosen backend; without one, of the Service the client dialled (the
    /// original destination, or the PROXY header's service hostname); else unknown.
    pub(crate) fn resolve(
        backend: Option<&ServiceBackend>,
        conn: &ConnInfo,
        config: &Config,
        info: &DestinationInfo<'_>,
    ) -> Self {
        DestinationSource::resolve(backend, conn, config).labels(info)
    }
}

/// Where a request's destination labels come from, borrowed from the config and the
/// connection. Under one [`DestinationInfo`] equal sources give equal labels, so a label set
/// made once is found again by comparing these one or two strings (see `telemetry::series`)
/// instead of being rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DestinationSource<'a> {
    /// A Pod addressed directly (workload-addressed traffic, no Service).
    Workload { namespace: &'a str, name: &'a str },
    /// A ServiceEntry of `namespace`, known by `host`.
    ServiceEntry { namespace: &'a str, host: &'a str },
    /// A Service.
    Service { namespace: &'a str, name: &'a str },
    /// A Service known only by its hostname (PROXY TLV 0xD1).
    Hostname(&'a str),
    /// Nothing known.
    Unknown,
}

impl<'a> DestinationSource<'a> {
    /// The chosen backend; without one, the Service the client dialled (the original
    /// destination, or the PROXY header's service hostname); else unknown.
    pub(crate) fn resolve(
        backend: Option<&'a ServiceBackend>,
        conn: &'a ConnInfo,
        config: &'a Config,
    ) -> Self {
        let backend = backend.or_else(|| {
            conn.destination
                .and_then(|d| config.service_at(d))
                .map(|b| b.as_ref())
        });
        if let Some(b) = backend {
            let (namespace, name) = (b.service.namespace.as_str(), b.service.name.as_str());
            // Workload-addressed traffic (see `config::binding`): a Pod, no Service.
            if b.service.kind == "Pod" {
                return Self::Workload { namespace, name };
            }
            if let Some(host) = config.service_entry_host(&b.service) {
                return Self::ServiceEntry { namespace, host };
            }
            return Self::Service { namespace, name };
        }
        match conn.target_service.as_deref() {
            Some(host) if !host.is_empty() => Self::Hostname(host),
            _ => Self::Unknown,
        }
    }

    /// The labels of this destination.
    pub(crate) fn labels(self, info: &DestinationInfo<'_>) -> DestinationLabels {
        match self {
            Self::Workload { namespace, name } => {
                DestinationLabels::workload(namespace, name, info)
            }
            Self::ServiceEntry { namespace, host } => {
                DestinationLabels::service_entry(namespace, host, info)
            }
            Self::Service { namespace, name } => DestinationLabels::service(namespace, name, info),
            Self::Hostname(host) => DestinationLabels::hostname(host, info),
            Self::Unknown => DestinationLabels::unknown(info),
        }
    }

    /// The variant and its strings, for comparing with an [`OwnedDestinationSource`].
    fn parts(self) -> (u8, &'a str, &'a str) {
        match self {
            Self::Workload { namespace, name } => (0, namespace, name),
            Self::ServiceEntry { namespace, host } => (1, namespace, host),
            Self::Service { namespace, name } => (2, namespace, name),
            Self::Hostname(host) => (3, host, ""),
            Self::Unknown => (4, "", ""),
        }
    }
}

/// A [`DestinationSource`] kept beyond the config it was borrowed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OwnedDestinationSource(u8, Box<str>, Box<str>);

impl OwnedDestinationSource {
    pub(crate) fn new(source: DestinationSource<'_>) -> Self {
        let (variant, a, b) = source.parts();
        OwnedDestinationSource(variant, a.into(), b.into())
    }

    /// Whether `source` is the one kept.
    pub(crate) fn is(&self, source: DestinationSource<'_>) -> bool {
        let (variant, a, b) = source.parts();
        self.0 == variant && *self.1 == *a && *self.2 == *b
    }
}

/// The full label set of Istio's HTTP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// Always `waypoint`.
    pub reporter: Label,
    /// Who sent the request.
    #[prometheus(flatten)]
    pub source: SourceLabels,
    /// Where it went.
    #[prometheus(flatten)]
    pub destination: DestinationLabels,
    /// `http` or `grpc`.
    pub request_protocol: Label,
    /// The HTTP status sent downstream.
    pub response_code: Label,
    /// The gRPC status (`grpc-status` trailer or header); empty when not gRPC.
    pub grpc_response_status: Label,
    /// `mutual_tls` when the peer identity is proven, else `none`.
    pub connection_security_policy: Label,
    /// `-`, or the Envoy-style flags joined by commas.
    pub response_flags: Label,
}

/// `mutual_tls` when the connection's peer identity is proven, else `none`.
pub(crate) fn security_policy(conn: &ConnInfo) -> Label {
    Cow::Borrowed(if conn.peer_identity.is_some() {
        "mutual_tls"
    } else {
        "none"
    })
}

/// Envoy's rendering of response flags: `-` when none.
pub(crate) fn flags_label(flags: &[ResponseFlag]) -> Label {
    match flags {
        [] => Cow::Borrowed("-"),
        [one] => Cow::Borrowed(one.as_str()),
        many => {
            let codes: Vec<&str> = many.iter().map(|f| f.as_str()).collect();
            bounded(&codes.join(","))
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// Istio's HTTP request metrics.
#[derive(Clone, Debug)]
pub(crate) struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<RequestLabels>,
    request_bytes: HistogramFamily<RequestLabels>,
    response_bytes: HistogramFamily<RequestLabels>,
}

impl RequestMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let metrics = RequestMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(size_histogram),
            response_bytes: Family::new_with_constructor(size_histogram),
        };
        registry.register(
            "istio_requests",
            "Requests handled by the waypoint",
            metrics.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration, from the request head to the last response byte",
            metrics.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            metrics.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            metrics.response_bytes.clone(),
        );
        metrics
    }

    /// The four series of `labels`, made on first use. Each is a handle on the family's own
    /// series: recording through it is recording in the family, without looking the labels up
    /// again. (Series are never removed from these families, so a handle never goes stale.)
    pub(crate) fn series(&self, labels: &RequestLabels) -> RequestSeries {
        RequestSeries {
            requests: self.requests.get_or_create_owned(labels),
            duration: self.duration.get_or_create_owned(labels),
            request_bytes: self.request_bytes.get_or_create_owned(labels),
            response_bytes: self.response_bytes.get_or_create_owned(labels),
        }
    }
}

/// One label set's series of the four request metrics (see [`RequestMetrics::series`]).
#[derive(Clone, Debug)]
pub(crate) struct RequestSeries {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl RequestSeries {
    /// Records one finished request.
    pub(crate) fn record(&self, duration: Duration, request_bytes: u64, response_bytes: u64) {
        self.requests.inc();
        self.duration.observe(duration.as_secs_f64() * 1000.0);
        self.request_bytes.observe(request_bytes as f64);
        self.response_bytes.observe(response_bytes as f64);
    }
}

/// The label set of Istio's TCP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// Always `waypoint`.
    pub reporter: Label,
    /// Who opened the connection.
    #[prometheus(flatten)]
    pub(crate) source: SourceLabels,
    /// The Service the client dialled (for a proxied connection: its chosen backend).
    #[prometheus(flatten)]
    pub(crate) destination: DestinationLabels,
    /// Always `tcp`.
    pub request_protocol: Label,
    /// `mutual_tls` when the peer identity is proven, else `none`.
    pub connection_security_policy: Label,
    /// `-` for HTTP connections (their requests carry the flags); for a connection proxied
    /// as bytes, the flags of its connection phase and connect (`NR`, `UH`, `UF`, `RBAC`).
    pub response_flags: Label,
}

impl TcpLabels {
    /// The labels of an inbound connection: source from `conn`, destination the Service at
    /// its original destination in `config`.
    pub(crate) fn from_conn(conn: &ConnInfo, config: &Config, info: &DestinationInfo<'_>) -> Self {
        TcpLabels {
            reporter: Cow::Borrowed("waypoint"),
            source: SourceLabels::from_conn(conn),
            destination: DestinationLabels::resolve(None, conn, config, info),
            request_protocol: Cow::Borrowed("tcp"),
            connection_security_policy: security_policy(conn),
            response_flags: Cow::Borrowed("-"),
        }
    }
}

/// Istio's TCP connection metrics.
#[derive(Clone, Debug, Default)]
pub struct TcpMetrics {
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
}

impl TcpMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = TcpMetrics::default();
        registry.register(
            "istio_tcp_connections_opened",
            "Inbound connections opened",
            m.opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "Inbound connections closed",
            m.closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to downstream clients",
            m.sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from downstream clients",
            m.received.clone(),
        );
        m
    }

    /// Wraps an inbound stream: counts it opened now, its bytes as they pass (so long-lived
    /// connections show traffic before they end), and closed when it is dropped.
    pub fn counted<S>(&self, io: S, labels: &TcpLabels) -> CountedIo<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.opened.get_or_create(labels).inc();
        CountedIo {
            io,
            sent: self.sent.get_or_create_owned(labels),
            received: self.received.get_or_create_owned(labels),
            closed: self.closed.get_or_create_owned(labels),
        }
    }

    /// `(opened, closed, sent bytes, received bytes)` so far for `labels`.
    pub fn totals(&self, labels: &TcpLabels) -> (u64, u64, u64, u64) {
        let get = |f: &Family<TcpLabels, Counter>| f.get(labels).map_or(0, |c| c.get());
        (
            get(&self.opened),
            get(&self.closed),
            get(&self.sent),
            get(&self.received),
        )
    }
}

/// A stream whose bytes and lifetime are counted in [`TcpMetrics`].
#[derive(Debug)]
pub struct CountedIo<S> {
    io: S,
    sent: Counter,
    received: Counter,
    closed: Counter,
}

impl<S> CountedIo<S> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S> Drop for CountedIo<S> {
    fn drop(&mut self) {
        self.closed.inc();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            this.received.inc_by(n as u64);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.sent.inc_by(n as u64);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.sent.inc_by(n as u64);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: Cow<'static, str>,
}

/// The waypoint's config reload metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConfigMetrics {
    reloads: Family<ResultLabels, Counter>,
    version: Gauge,
    last_reload: Gauge<f64, AtomicU64>,
}

impl ConfigMetrics {
    /// Creates the metrics (both reload results start at zero) and registers them.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = ConfigMetrics::default();
        for result in ["ok", "failed"] {
            drop(m.reloads.get_or_create(&ResultLabels {
                result: Cow::Borrowed(result),
            }));
        }
        registry.register(
            "waypoint_config_reloads",
            "Config loads and reloads, by result",
            m.reloads.clone(),
        );
        registry.register(
            "waypoint_config_snapshot_version",
            "Version of the config snapshot being served",
            m.version.clone(),
        );
        registry.register(
            "waypoint_config_last_reload_timestamp_seconds",
            "Unix time of the last successful config load",
            m.last_reload.clone(),
        );
        m
    }

    /// Records a load attempt; a successful one also sets the served version and the time.
    pub(crate) fn reload(&self, ok: bool, version: u64) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: Cow::Borrowed(result),
            })
            .inc();
        if ok {
            self.version.set(i64::try_from(version).unwrap_or(i64::MAX));
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.last_reload.set(now);
        }
    }
}

/// Process metrics read from `/proc/self` on each scrape (Linux; nothing elsewhere):
/// `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl ProcessCollector {
    /// Registers the collector into `registry`.
    pub(crate) fn register(registry: &mut Registry) {
        registry.register_collector(Box::new(ProcessCollector));
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times: the kernel reports them in USER_HZ,
/// which is 100 on every Linux architecture Rust targets.
const USER_HZ: f64 = 100.0;

/// The resident set size of this process, from `/proc/self/status` (`VmRSS`); `None` off Linux.
/// Also read by the memory watermark ([`crate::overload::memory`]).
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come state (field 3) ... utime is field 14, stime field 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn open_fds() -> Option<i64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // One of the entries is the directory handle being read; it is not the process's own.
    Some((dir.count() as i64 - 1).max(0))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(rss) = resident_bytes() {
            let gauge = ConstGauge::new(i64::try_from(rss).unwrap_or(i64::MAX));
            let m = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(m)?;
        }
        if let Some(cpu) = cpu_seconds() {
            let counter = ConstCounter::new(cpu);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(m)?;
        }
        if let Some(fds) = open_fds() {
            let gauge = ConstGauge::new(fds);
            let m = encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_at_char_boundary() {
        assert_eq!(bounded(""), "unknown");
        assert_eq!(bounded("abc"), "abc");
        let long = "é".repeat(100);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_LABEL_LEN);
        assert_eq!(cut.len(), 128);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn proc_self_is_read() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
        assert!(open_fds().is_some_and(|n| n >= 3));
    }
}
