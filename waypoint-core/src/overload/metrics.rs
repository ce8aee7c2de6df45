//! The overload metrics. Every refusal is a counter with a reason, so a dashboard can tell
//! "we were full" from "the peer misbehaved" (the transport's own rejection counters).

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerReason {
    listener: String,
    reason: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: Cow<'static, str>,
}

/// Why a request was refused, the `reason` label of `waypoint_requests_refused_total`.
pub(crate) const REQUEST_REASONS: [&str; 4] = [
    "in_flight_limit",
    "body_too_large",
    "body_too_large_streamed",
    "headers_too_large",
];

/// Overload counters and gauges, shared by every listener of a process:
///
/// - `waypoint_connections_refused_total{listener, reason}`: connections closed at accept (or
///   HBONE streams answered 503); reason `listener_limit`, `total_limit` or `memory`;
/// - `waypoint_downstream_connections{listener}`: connections open now;
/// - `waypoint_requests_in_flight`: requests between head and end of response;
/// - `waypoint_requests_refused_total{reason}`: `in_flight_limit` (503 `OM`), `body_too_large`
///   (413 from `content-length`), `body_too_large_streamed` (aborted mid-body),
///   `headers_too_large` (HTTP/1.1 head over the limit, 431);
/// - `waypoint_memory_overloaded`: 1 while the resident memory is over the watermark;
/// - `waypoint_memory_limit_bytes`: the watermark (0 when none);
/// - `waypoint_overload_connections_closed_total{state}`: connections closed to free memory,
///   `idle` or `busy`.
#[derive(Clone, Debug, Default)]
pub struct OverloadMetrics {
    refused: Family<ListenerReason, Counter>,
    open: Family<ListenerLabel, Gauge>,
    in_flight: Gauge,
    requests_refused: Family<ReasonLabel, Counter>,
    memory_overloaded: Gauge,
    memory_limit: Gauge,
    shed: Family<StateLabel, Counter>,
}

impl OverloadMetrics {
    pub(crate) fn new(memory_limit: Option<u64>) -> Self {
        let m = OverloadMetrics::default();
        for reason in REQUEST_REASONS {
            drop(m.requests_refused.get_or_create(&ReasonLabel {
                reason: Cow::Borrowed(reason),
            }));
        }
        for state in ["idle", "busy"] {
            drop(m.shed.get_or_create(&StateLabel {
                state: Cow::Borrowed(state),
            }));
        }
        m.memory_limit.set(
            memory_limit
                .and_then(|l| i64::try_from(l).ok())
                .unwrap_or(0),
        );
        m
    }

    /// Registers every metric into `registry` (they stay shared with `self`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "waypoint_connections_refused",
            "Downstream connections refused by an overload limit, by listener and reason",
            self.refused.clone(),
        );
        registry.register(
            "waypoint_downstream_connections",
            "Downstream connections open now, by listener",
            self.open.clone(),
        );
        registry.register(
            "waypoint_requests_in_flight",
            "Requests received whose response has not finished",
            self.in_flight.clone(),
        );
        registry.register(
            "waypoint_requests_refused",
            "Requests refused by an overload limit, by reason",
            self.requests_refused.clone(),
        );
        registry.register(
            "waypoint_memory_overloaded",
            "1 while resident memory is over the memory limit (new connections refused)",
            self.memory_overloaded.clone(),
        );
        registry.register(
            "waypoint_memory_limit_bytes",
            "The resident memory watermark, 0 when none is set",
            self.memory_limit.clone(),
        );
        registry.register(
            "waypoint_overload_connections_closed",
            "Connections closed to bring memory under the limit, by state (idle, busy)",
            self.shed.clone(),
        );
    }

    /// Starts the series of `listener` at zero, so dashboards see it before the first refusal.
    pub(crate) fn init_listener(&self, listener: &str) {
        for reason in ["listener_limit", "total_limit", "memory"] {
            drop(self.refused.get_or_create(&ListenerReason {
                listener: listener.to_owned(),
                reason: Cow::Borrowed(reason),
            }));
        }
    }

    pub(crate) fn open_gauge(&self, listener: &str) -> Gauge {
        self.open
            .get_or_create(&ListenerLabel {
                listener: listener.to_owned(),
            })
            .clone()
    }

    pub(crate) fn inc_refused(&self, listener: &str, reason: &'static str) {
        self.refused
            .get_or_create(&ListenerReason {
                listener: listener.to_owned(),
                reason: Cow::Borrowed(reason),
            })
            .inc();
    }

    pub(crate) fn in_flight_gauge(&self) -> &Gauge {
        &self.in_flight
    }

    pub(crate) fn inc_request_refused(&self, reason: &'static str) {
        self.requests_refused
            .get_or_create(&ReasonLabel {
                reason: Cow::Borrowed(reason),
            })
            .inc();
    }

    pub(crate) fn set_memory_overloaded(&self, on: bool) {
        self.memory_overloaded.set(i64::from(on));
    }

    pub(crate) fn inc_shed(&self, state: &'static str, n: usize) {
        self.shed
            .get_or_create(&StateLabel {
                state: Cow::Borrowed(state),
            })
            .inc_by(n as u64);
    }

    /// Connections refused so far on `listener` for `reason`.
    pub fn connections_refused(&self, listener: &str, reason: &str) -> u64 {
        self.refused
            .get(&ListenerReason {
                listener: listener.to_owned(),
                reason: Cow::Owned(reason.to_owned()),
            })
            .map_or(0, |c| c.get())
    }

    /// Requests refused so far for `reason`.
    #[cfg(test)]
    pub(crate) fn requests_refused(&self, reason: &str) -> u64 {
        self.requests_refused
            .get(&ReasonLabel {
                reason: Cow::Owned(reason.to_owned()),
            })
            .map_or(0, |c| c.get())
    }

    /// Requests in flight now.
    #[cfg(test)]
    pub(crate) fn requests_in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Connections closed so far to free memory, `idle` or `busy`.
    #[cfg(test)]
    pub(crate) fn connections_shed(&self, state: &str) -> u64 {
        self.shed
            .get(&StateLabel {
                state: Cow::Owned(state.to_owned()),
            })
            .map_or(0, |c| c.get())
    }
}
