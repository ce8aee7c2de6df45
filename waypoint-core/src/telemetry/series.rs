//! Each connection's memory of the label sets its requests were recorded with.
//!
//! Istio's request metrics carry some 25 labels. Finding a request's series in the four
//! families means building those labels (a dozen strings) and hashing all of them four times,
//! and counting its authorization decision means formatting the policy's name and hashing
//! again. Yet on one connection these barely change: the source labels are the connection's,
//! the destination labels those of the few backends its requests go to, and the rest (status,
//! flags, gRPC status, the deciding policy) take few values. So each connection keeps the last
//! few it used, keyed by what they are made of (compared, not hashed, and nothing built to
//! compare), with handles on their series: a request like one seen before on its connection
//! records with no lookup and no allocation. Anything new is looked up in the families as
//! before, so the series, and what `/metrics` shows, are the same either way.
//!
//! The memory is bounded ([`MAX_ENTRIES`] of each kind, the oldest forgotten first), lives as
//! long as the connection, and belongs to the [`Telemetry`] that made it: label sets depend on
//! its cluster settings and series on its registry, so another `Telemetry` recording the same
//! connection finds nothing of the first one's. A copy of a [`ConnInfo`] starts with an empty
//! memory, so a copy changed before use never finds labels made for the original.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use prometheus_client::metrics::counter::Counter;

use super::metrics::{
    self, DestinationLabels, DestinationSource, Label, OwnedDestinationSource, RequestLabels,
    RequestSeries, SourceLabels, flags_label, security_policy,
};
use super::{AuthzLabels, Inner, Telemetry};
use crate::config::ResourceRef;
use crate::conn::ConnInfo;
use crate::filter::AuthzDecision;
use crate::flags::ResponseFlag;

/// Entries of each kind a connection keeps.
const MAX_ENTRIES: usize = 8;

/// What one connection remembers (see the module documentation).
#[derive(Default)]
pub(crate) struct ConnSeries(Mutex<Memory>);

#[derive(Default)]
struct Memory {
    destinations: Vec<DestinationEntry>,
    series: Vec<SeriesEntry>,
    authz: Vec<AuthzEntry>,
}

struct DestinationEntry {
    owner: Weak<Inner>,
    source: OwnedDestinationSource,
    principal: Option<Box<str>>,
    labels: Arc<DestinationLabels>,
}

/// Keyed by its destination entry's labels (the very `Arc`, held here, so never mistaken for
/// another's), which also ties it to their owner.
struct SeriesEntry {
    destination: Arc<DestinationLabels>,
    grpc: bool,
    status: u16,
    grpc_status: Option<Label>,
    flags: Vec<ResponseFlag>,
    series: RequestSeries,
}

struct AuthzEntry {
    owner: Weak<Inner>,
    allowed: bool,
    action: Box<str>,
    policy: Option<ResourceRef>,
    counter: Counter,
}

impl Clone for ConnSeries {
    /// An empty memory: a copy may be changed before it is used.
    fn clone(&self) -> Self {
        ConnSeries::default()
    }
}

impl fmt::Debug for ConnSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnSeries").finish_non_exhaustive()
    }
}

impl ConnSeries {
    fn lock(&self) -> MutexGuard<'_, Memory> {
        // A poisoned lock only means a panic elsewhere mid-update; entries are whole or absent.
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Keeps at most [`MAX_ENTRIES`] in `entries` after one more is pushed: the oldest goes.
/// Grows one entry at a time: most connections use one or two label sets and keep them for
/// life, idle ones included, so room for more would be memory held for nothing (a `Vec`
/// doubles, from four).
fn push_bounded<T>(entries: &mut Vec<T>, entry: T) {
    if entries.len() >= MAX_ENTRIES {
        entries.remove(0);
    } else if entries.len() == entries.capacity() {
        entries.reserve_exact(1);
    }
    entries.push(entry);
}

/// What a request's series depend on besides its connection and destination.
pub(crate) struct RequestOutcome<'a> {
    pub(crate) grpc: bool,
    pub(crate) status: u16,
    pub(crate) grpc_status: &'a Option<Label>,
    pub(crate) flags: &'a [ResponseFlag],
}

impl Telemetry {
    fn owns(&self, owner: &Weak<Inner>) -> bool {
        // The `Weak` keeps its allocation alive, so an equal address is this very `Inner`.
        std::ptr::eq(owner.as_ptr(), Arc::as_ptr(&self.inner))
    }

    /// The destination labels of `source` with `principal` (the endpoint's verified identity),
    /// from `conn`'s memory or made and remembered.
    pub(crate) fn destination_of(
        &self,
        conn: &ConnInfo,
        source: DestinationSource<'_>,
        principal: Option<&str>,
    ) -> Arc<DestinationLabels> {
        let mut memory = conn.series.lock();
        if let Some(entry) = memory.destinations.iter().find(|e| {
            self.owns(&e.owner) && e.source.is(source) && e.principal.as_deref() == principal
        }) {
            return Arc::clone(&entry.labels);
        }
        let mut labels = source.labels(&self.destination_info());
        if let Some(principal) = principal {
            labels.destination_principal = metrics::bounded(principal);
        }
        let labels = Arc::new(labels);
        push_bounded(
            &mut memory.destinations,
            DestinationEntry {
                owner: Arc::downgrade(&self.inner),
                source: OwnedDestinationSource::new(source),
                principal: principal.map(Box::from),
                labels: Arc::clone(&labels),
            },
        );
        labels
    }

    /// Runs `f` on the request series of a request on `conn` to `destination` (from
    /// [`Telemetry::destination_of`]) that ended as `outcome`, found in `conn`'s memory or
    /// looked up in the families and remembered.
    pub(crate) fn with_request_series<T>(
        &self,
        conn: &ConnInfo,
        destination: &Arc<DestinationLabels>,
        outcome: RequestOutcome<'_>,
        f: impl FnOnce(&RequestSeries) -> T,
    ) -> T {
        let mut memory = conn.series.lock();
        if let Some(entry) = memory.series.iter().find(|e| {
            Arc::ptr_eq(&e.destination, destination)
                && e.grpc == outcome.grpc
                && e.status == outcome.status
                && e.grpc_status == *outcome.grpc_status
                && e.flags == outcome.flags
        }) {
            return f(&entry.series);
        }
        let labels = RequestLabels {
            reporter: Label::Borrowed("waypoint"),
            source: SourceLabels::from_conn(conn),
            destination: DestinationLabels::clone(destination),
            request_protocol: Label::Borrowed(if outcome.grpc { "grpc" } else { "http" }),
            response_code: Label::Owned(outcome.status.to_string()),
            grpc_response_status: outcome.grpc_status.clone().unwrap_or(Label::Borrowed("")),
            connection_security_policy: security_policy(conn),
            response_flags: flags_label(outcome.flags),
        };
        let series = self.inner.requests.series(&labels);
        let out = f(&series);
        push_bounded(
            &mut memory.series,
            SeriesEntry {
                destination: Arc::clone(destination),
                grpc: outcome.grpc,
                status: outcome.status,
                grpc_status: outcome.grpc_status.clone(),
                flags: outcome.flags.to_vec(),
                series,
            },
        );
        out
    }

    /// Counts one authorization decision on `conn` in `waypoint_authz_decisions_total`.
    pub(crate) fn count_authz_on(&self, conn: &ConnInfo, decision: &AuthzDecision) {
        let mut memory = conn.series.lock();
        if let Some(entry) = memory.authz.iter().find(|e| {
            self.owns(&e.owner)
                && e.allowed == decision.allowed
                && *e.action == *decision.action
                && e.policy == decision.policy
        }) {
            entry.counter.inc();
            return;
        }
        let counter = self.authz_counter(decision);
        counter.inc();
        push_bounded(
            &mut memory.authz,
            AuthzEntry {
                owner: Arc::downgrade(&self.inner),
                allowed: decision.allowed,
                action: decision.action.as_str().into(),
                policy: decision.policy.clone(),
                counter,
            },
        );
    }

    /// The series of `decision` in `waypoint_authz_decisions_total`.
    pub(super) fn authz_counter(&self, decision: &AuthzDecision) -> Counter {
        let policy = decision
            .policy
            .as_ref()
            .map_or_else(|| "-".to_owned(), |p| format!("{}/{}", p.namespace, p.name));
        self.inner.authz.get_or_create_owned(&AuthzLabels {
            decision: if decision.allowed { "allow" } else { "deny" },
            action: metrics::bounded(&decision.action),
            policy: metrics::bounded(&policy),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_holds_room_for_the_entries_it_has_and_forgets_the_oldest_past_the_bound() {
        let mut entries = Vec::new();
        for i in 0..MAX_ENTRIES {
            push_bounded(&mut entries, i);
            assert_eq!(entries.capacity(), i + 1, "one slot per entry, none spare");
        }
        push_bounded(&mut entries, MAX_ENTRIES);
        assert_eq!(entries, (1..=MAX_ENTRIES).collect::<Vec<_>>());
        assert_eq!(entries.capacity(), MAX_ENTRIES);
    }
}
