//! Per-backend circuit breakers and connection settings: what a DestinationRule's
//! `connectionPool` does at the waypoint.
//!
//! Istio turns `connectionPool` into an Envoy cluster's circuit-breaker thresholds and HTTP
//! protocol options; a backend here is what a cluster is there: one Service port. The mapping:
//!
//! | DestinationRule field | Envoy setting | here |
//! |---|---|---|
//! | `tcp.maxConnections` | `max_connections` | open HTTP/1.1 connections of the backend ([`Limit::Connections`]) |
//! | `http.http1MaxPendingRequests` | `max_pending_requests` | requests waiting for an HTTP/1.1 connection ([`Limit::Pending`]) |
//! | `http.http2MaxRequests` | `max_requests` | requests in flight to the backend, either protocol ([`Limit::Requests`]) |
//! | `http.maxRetries` | `max_retries` | retries in flight to the backend ([`Limit::Retries`]) |
//! | `http.maxRequestsPerConnection` | common `max_requests_per_connection` | a connection closes after that many requests |
//! | `tcp.maxConnectionDuration` | common `max_connection_duration` | a connection takes no new request once that old |
//! | `http.idleTimeout` (else `tcp.idleTimeout`) | common `idle_timeout` | the pool's idle timeout, for this backend's connections |
//! | `tcp.connectTimeout` | `connect_timeout` | the dial timeout |
//! | `tcp.tcpKeepalive` | `upstream_connection_options.tcp_keepalive` | `SO_KEEPALIVE` and its `TCP_KEEP*` options on plain TCP dials |
//! | `http.http2KeepAlive` | HTTP/2 `connection_keepalive` | PING interval and timeout toward h2c backends |
//!
//! Unset (or zero, as Istio reads its `int32` fields) thresholds are unlimited: Istio sets them
//! to 2^32-1, which [`Limits::default`] spells `u32::MAX`.
//!
//! # State
//!
//! The counters live in a [`Breaker`] per backend (Service and port), held by the
//! [`Upstream`](super::Upstream) in [`Breakers`], never in the config snapshot: a reload keeps
//! them, so requests in flight across a reload still count, and a changed threshold applies to
//! the next request that compares against it (each request carries the [`Limits`] of the
//! snapshot it was routed with). A [`Slot`] is one unit of one counter, returned when dropped:
//! a request's slot lives in its [`UpstreamLease`](super::UpstreamLease) until the response
//! body ends, a connection's in the task that drives it, a retry's until the retry's response
//! headers arrive.
//!
//! # Overflow
//!
//! Over `maxConnections`, an HTTP/1.1 request waits for a connection to come free (pending);
//! over `http1MaxPendingRequests`, over `http2MaxRequests`, the request gets Envoy's answer: 503
//! with response flag `UO`. Over `maxRetries` the retry is not sent and the try's own answer
//! stands. Each refusal is counted by backend and limit
//! (`waypoint_upstream_overflow_total{limit}`).
//!
//! Where we differ from Envoy, on purpose and to keep one pool per endpoint:
//! - h2c connections count toward `maxConnections` but never wait for it: there is one per
//!   endpoint, as in Envoy's HTTP/2 pool, which also opens a host's first connection regardless.
//! - A request waiting for an HTTP/1.1 connection already holds its `http2MaxRequests` slot.
//! - When a waiting request finds every connection of its backend idle on *other* endpoints,
//!   it closes one of those so it can dial its own (Envoy's per-host pools do likewise).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::resources::{ConnectionPoolSettings, GoDuration};
use crate::config::{ResourceRef, ServiceBackend};

/// The four circuit breakers of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Limit {
    /// Requests waiting for an HTTP/1.1 connection (`http1MaxPendingRequests`).
    Pending,
    /// Requests in flight (`http2MaxRequests`).
    Requests,
    /// Open connections (`maxConnections`).
    Connections,
    /// Retries in flight (`maxRetries`).
    Retries,
}

impl Limit {
    pub(crate) const ALL: [Limit; 4] = [
        Limit::Pending,
        Limit::Requests,
        Limit::Connections,
        Limit::Retries,
    ];

    /// The `limit` label of the overflow counter.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Limit::Pending => "pending",
            Limit::Requests => "requests",
            Limit::Connections => "connections",
            Limit::Retries => "retries",
        }
    }

    /// The DestinationRule field that sets it, as messages name it.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Limit::Pending => "http1MaxPendingRequests",
            Limit::Requests => "http2MaxRequests",
            Limit::Connections => "maxConnections",
            Limit::Retries => "maxRetries",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `SO_KEEPALIVE` settings for plain TCP dials; unset parts keep the system's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Keepalive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub time: Option<Duration>,
    /// Time between probes (`TCP_KEEPINTVL`).
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`).
    pub probes: Option<u32>,
}

/// How connections of one backend are opened and how long they serve. `None` everywhere is
/// today's behaviour: the waypoint's own flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnSettings {
    /// Overrides `UpstreamConfig::connect_timeout`.
    pub connect_timeout: Option<Duration>,
    /// Turns on TCP keepalive for plain TCP dials.
    pub keepalive: Option<Keepalive>,
    /// Overrides `UpstreamConfig::idle_timeout`.
    pub idle_timeout: Option<Duration>,
    /// Requests a connection serves before it closes.
    pub max_requests: Option<u32>,
    /// Age after which a connection takes no new request.
    pub max_age: Option<Duration>,
    /// HTTP/2 PING interval and timeout toward h2c backends.
    pub h2_keepalive: Option<(Duration, Duration)>,
}

impl ConnSettings {
    /// Whether a connection opened at `born` that served `served` requests may take another.
    pub(crate) fn may_serve(&self, served: u32, born: Instant) -> bool {
        self.max_requests.is_none_or(|max| served < max)
            && self.max_age.is_none_or(|age| born.elapsed() < age)
    }
}

/// A backend's thresholds and connection settings, as one snapshot's DestinationRules set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    pub conn: ConnSettings,
}

impl Default for Limits {
    /// Unlimited, as Istio leaves Envoy's thresholds (2^32-1), and today's timeouts.
    fn default() -> Self {
        Limits {
            max_connections: u32::MAX,
            max_pending: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
            conn: ConnSettings::default(),
        }
    }
}

impl Limits {
    /// Istio's reading of `connectionPool`: a positive count is a threshold, zero or unset
    /// is unlimited; `http.idleTimeout` wins over `tcp.idleTimeout`, whose `0s` (Istio's
    /// "disabled") keeps the waypoint's own idle timeout.
    pub(crate) fn from_settings(settings: &ConnectionPoolSettings) -> Self {
        let threshold = |n: i32| u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(u32::MAX);
        let tcp = settings.tcp.clone().unwrap_or_default();
        let http = settings.http.clone().unwrap_or_default();
        let d = |g: Option<GoDuration>| g.map(|g| g.0);
        let idle_timeout = d(http.idle_timeout)
            .or(d(tcp.idle_timeout))
            .filter(|t| !t.is_zero());
        Limits {
            max_connections: threshold(tcp.max_connections),
            max_pending: threshold(http.http1_max_pending_requests),
            max_requests: threshold(http.http2_max_requests),
            max_retries: threshold(http.max_retries),
            conn: ConnSettings {
                connect_timeout: d(tcp.connect_timeout),
                keepalive: tcp.tcp_keepalive.map(|ka| Keepalive {
                    time: d(ka.time),
                    interval: d(ka.interval),
                    probes: ka.probes,
                }),
                idle_timeout,
                max_requests: u32::try_from(http.max_requests_per_connection)
                    .ok()
                    .filter(|&n| n > 0),
                max_age: d(tcp.max_connection_duration),
                h2_keepalive: http
                    .http2_keep_alive
                    .and_then(|ka| Some((d(ka.interval)?, d(ka.timeout)?))),
            },
        }
    }

    fn max(&self, limit: Limit) -> u32 {
        match limit {
            Limit::Pending => self.max_pending,
            Limit::Requests => self.max_requests,
            Limit::Connections => self.max_connections,
            Limit::Retries => self.max_retries,
        }
    }
}

/// The limits `backend`'s DestinationRule `connectionPool` sets; unlimited without one.
pub(crate) fn of_backend(backend: &ServiceBackend) -> Limits {
    match &backend.policy.connection_pool {
        Some(applied) => Limits::from_settings(&applied.settings),
        None => Limits::default(),
    }
}

/// The live counters of one backend (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    in_use: [AtomicU32; 4],
    overflows: [AtomicU64; 4],
    /// Signalled when an HTTP/1.1 connection of the backend goes idle or closes: a pending
    /// request may now proceed.
    freed: Notify,
}

impl Breaker {
    /// One unit of `limit` when fewer than `max` are in use; `None` at the limit (not counted
    /// as an overflow: the caller decides whether it is one, see [`Breaker::overflowed`]).
    pub(crate) fn try_take(self: &Arc<Self>, limit: Limit, max: u32) -> Option<Slot> {
        let counter = &self.in_use[limit.index()];
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then(|| n + 1)
            })
            .ok()?;
        Some(Slot {
            breaker: Arc::clone(self),
            limit,
        })
    }

    /// One unit of `limit` whatever the threshold: for what is counted but never refused.
    pub(crate) fn count(self: &Arc<Self>, limit: Limit) -> Slot {
        self.in_use[limit.index()].fetch_add(1, Ordering::AcqRel);
        Slot {
            breaker: Arc::clone(self),
            limit,
        }
    }

    /// Counts a request or retry refused by `limit`.
    pub(crate) fn overflowed(&self, limit: Limit) {
        self.overflows[limit.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Units of `limit` in use now.
    #[cfg(test)]
    pub(crate) fn in_use(&self, limit: Limit) -> u32 {
        self.in_use[limit.index()].load(Ordering::Acquire)
    }

    /// Refusals by `limit` since the breaker was made.
    pub(crate) fn overflows(&self, limit: Limit) -> u64 {
        self.overflows[limit.index()].load(Ordering::Relaxed)
    }

    /// Wakes the requests waiting for a connection of this backend.
    pub(crate) fn free(&self) {
        self.freed.notify_waiters();
    }

    /// Resolves at the next [`Breaker::free`] after it was enabled.
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }
}

/// One unit of one [`Limit`] of a backend, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    breaker: Arc<Breaker>,
    limit: Limit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.breaker.in_use[self.limit.index()].fetch_sub(1, Ordering::AcqRel);
        if self.limit == Limit::Connections {
            self.breaker.free();
        }
    }
}

/// What identifies a backend's breaker: the Service and its port.
pub(crate) type BackendKey = (ResourceRef, u16);

/// One Service's breakers, by port.
type PortBreakers = Vec<(u16, Arc<Breaker>)>;

/// Every backend's [`Breaker`], for the life of the [`Upstream`](super::Upstream).
///
/// Entries are never dropped: there is one per Service port ever routed to, a handful of
/// atomics each, and their overflow counts must stay monotonic for Prometheus.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    /// By Service, then port: a request finds its breaker by borrowing its backend's name, with
    /// nothing cloned (the lookup is on every request, the insertion once per backend).
    map: Mutex<HashMap<ResourceRef, PortBreakers>>,
}

impl Breakers {
    /// The breaker of `backend`, made on first use.
    pub(crate) fn of(&self, backend: &ServiceBackend) -> Arc<Breaker> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let find = |ports: &[(u16, Arc<Breaker>)]| {
            ports
                .iter()
                .find(|(port, _)| *port == backend.port)
                .map(|(_, breaker)| Arc::clone(breaker))
        };
        if let Some(breaker) = map
            .get(&backend.service)
            .and_then(|ports| find(ports.as_slice()))
        {
            return breaker;
        }
        let breaker = Arc::<Breaker>::default();
        map.entry(backend.service.clone())
            .or_default()
            .push((backend.port, Arc::clone(&breaker)));
        breaker
    }

    /// Every backend's breaker, for metrics.
    pub(crate) fn all(&self) -> Vec<(BackendKey, Arc<Breaker>)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map
            .iter()
            .flat_map(|(service, ports)| {
                ports
                    .iter()
                    .map(|(port, b)| ((service.clone(), *port), Arc::clone(b)))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// What one request carries to the pools: its backend's breaker and the limits in force.
#[derive(Clone, Debug)]
pub(crate) struct BackendLimits {
    pub breaker: Arc<Breaker>,
    pub limits: Limits,
}

impl BackendLimits {
    /// A breaker nobody else shares and no limits: for callers outside the request path.
    #[cfg(test)]
    pub(crate) fn unlimited() -> Self {
        BackendLimits {
            breaker: Arc::default(),
            limits: Limits::default(),
        }
    }

    /// A unit of `limit` below its threshold, or the overflow counted and `None`.
    pub(crate) fn take_or_overflow(&self, limit: Limit) -> Option<Slot> {
        let slot = self.breaker.try_take(limit, self.limits.max(limit));
        if slot.is_none() {
            self.breaker.overflowed(limit);
        }
        slot
    }

    /// A new connection's slot when below `maxConnections`, else `None` (nothing counted:
    /// the request then waits as pending).
    pub(crate) fn try_connection(&self) -> Option<Slot> {
        self.breaker
            .try_take(Limit::Connections, self.limits.max_connections)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::config::{AppProtocol, ProtocolSelection};

    fn limits(max: u32) -> BackendLimits {
        BackendLimits {
            breaker: Arc::default(),
            limits: Limits {
                max_connections: max,
                max_pending: max,
                max_requests: max,
                max_retries: max,
                conn: ConnSettings::default(),
            },
        }
    }

    #[test]
    fn a_limit_refuses_beyond_its_threshold_and_counts_the_refusal() {
        let l = limits(2);
        for limit in [Limit::Pending, Limit::Requests, Limit::Retries] {
            let a = l.take_or_overflow(limit).unwrap();
            let _b = l.take_or_overflow(limit).unwrap();
            assert!(l.take_or_overflow(limit).is_none());
            assert_eq!(l.breaker.in_use(limit), 2);
            assert_eq!(l.breaker.overflows(limit), 1);
            // A slot given back makes room again.
            drop(a);
            assert_eq!(l.breaker.in_use(limit), 1);
            assert!(l.take_or_overflow(limit).is_some());
        }
        assert_eq!(l.breaker.overflows(Limit::Connections), 0);
    }

    #[test]
    fn a_connection_at_the_limit_is_not_an_overflow() {
        let l = limits(1);
        let first = l.try_connection().unwrap();
        assert!(l.try_connection().is_none());
        assert_eq!(l.breaker.overflows(Limit::Connections), 0);
        drop(first);
        assert!(l.try_connection().is_some());
    }

    #[test]
    fn counted_slots_ignore_the_threshold_but_occupy_it() {
        let l = limits(1);
        let forced = l.breaker.count(Limit::Connections);
        let _again = l.breaker.count(Limit::Connections);
        assert_eq!(l.breaker.in_use(Limit::Connections), 2);
        assert!(l.try_connection().is_none());
        drop(forced);
        assert_eq!(l.breaker.in_use(Limit::Connections), 1);
    }

    #[test]
    fn unset_limits_are_unlimited() {
        let l = BackendLimits::unlimited();
        let held: Vec<_> = (0..1000)
            .map(|_| l.take_or_overflow(Limit::Requests).unwrap())
            .collect();
        assert_eq!(held.len(), 1000);
        assert_eq!(l.breaker.overflows(Limit::Requests), 0);
    }

    #[test]
    fn a_lower_threshold_applies_to_the_next_request_and_keeps_the_count() {
        // Requests admitted under the old limit still count under the new one.
        let mut l = limits(10);
        let held: Vec<_> = (0..3)
            .map(|_| l.take_or_overflow(Limit::Requests).unwrap())
            .collect();
        l.limits.max_requests = 3;
        assert!(l.take_or_overflow(Limit::Requests).is_none());
        drop(held);
        assert!(l.take_or_overflow(Limit::Requests).is_some());
    }

    #[tokio::test]
    async fn a_closed_connection_wakes_the_waiting_requests() {
        let l = limits(1);
        let conn = l.try_connection().unwrap();
        let breaker = Arc::clone(&l.breaker);
        let waiter = tokio::spawn(async move {
            let freed = breaker.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            freed.await;
        });
        tokio::task::yield_now().await;
        drop(conn);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was woken")
            .unwrap();
    }

    #[test]
    fn breakers_are_per_service_port_and_shared_across_snapshots() {
        let backend = |port| ServiceBackend {
            service: ResourceRef::new("Service", "ns", "svc"),
            port,
            cluster_ips: vec![],
            protocol: ProtocolSelection::http(AppProtocol::Http1),
            endpoints: vec![],
            policy: Default::default(),
        };
        let breakers = Breakers::default();
        let a = breakers.of(&backend(80));
        // Another snapshot's ServiceBackend for the same port: the same breaker.
        assert!(Arc::ptr_eq(&a, &breakers.of(&backend(80))));
        assert!(!Arc::ptr_eq(&a, &breakers.of(&backend(81))));
        assert_eq!(breakers.all().len(), 2);
    }

    #[test]
    fn istios_connection_pool_maps_to_thresholds_and_connection_settings() {
        let settings: ConnectionPoolSettings = serde_saphyr::from_str(
            r#"
tcp:
  maxConnections: 7
  connectTimeout: 250ms
  tcpKeepalive: {probes: 3, time: 10s}
  maxConnectionDuration: 1h
  idleTimeout: 45s
http:
  http1MaxPendingRequests: 5
  http2MaxRequests: 0
  maxRequestsPerConnection: 2
  maxRetries: 4
  http2KeepAlive: {interval: 10s, timeout: 3s}
"#,
        )
        .unwrap();
        let secs = Duration::from_secs;
        assert_eq!(
            Limits::from_settings(&settings),
            Limits {
                max_connections: 7,
                max_pending: 5,
                // Zero is Istio's "unset": unlimited.
                max_requests: u32::MAX,
                max_retries: 4,
                conn: ConnSettings {
                    connect_timeout: Some(Duration::from_millis(250)),
                    keepalive: Some(Keepalive {
                        time: Some(secs(10)),
                        interval: None,
                        probes: Some(3),
                    }),
                    // tcp.idleTimeout stands in when http.idleTimeout is unset.
                    idle_timeout: Some(secs(45)),
                    max_requests: Some(2),
                    max_age: Some(secs(3600)),
                    h2_keepalive: Some((secs(10), secs(3))),
                },
            }
        );

        // http.idleTimeout wins; a zero tcp.idleTimeout keeps the waypoint's own.
        let both: ConnectionPoolSettings =
            serde_saphyr::from_str("{tcp: {idleTimeout: 45s}, http: {idleTimeout: 5s}}").unwrap();
        assert_eq!(
            Limits::from_settings(&both).conn.idle_timeout,
            Some(secs(5))
        );
        let zero: ConnectionPoolSettings =
            serde_saphyr::from_str("{tcp: {idleTimeout: 0s}}").unwrap();
        assert_eq!(Limits::from_settings(&zero), Limits::default());
    }

    #[test]
    fn a_connection_serves_until_its_request_count_or_age_is_reached() {
        let now = Instant::now();
        assert!(ConnSettings::default().may_serve(u32::MAX, now));
        let two = ConnSettings {
            max_requests: Some(2),
            ..Default::default()
        };
        assert!(two.may_serve(1, now));
        assert!(!two.may_serve(2, now));
        let young = ConnSettings {
            max_age: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        assert!(young.may_serve(100, now));
        let old = ConnSettings {
            max_age: Some(Duration::ZERO),
            ..Default::default()
        };
        assert!(!old.may_serve(0, now));
    }
}
