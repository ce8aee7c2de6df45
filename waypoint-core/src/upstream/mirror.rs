//! The bookkeeping of request mirrors ([`Upstream::mirror`](super::Upstream) sends them): what
//! became of the copies, and the bounded slots of those in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[cfg(doc)]
use super::Upstream;

/// Counters of what the upstream did besides forwarding, shared with mirror tasks.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) mirrors_sent: AtomicU64,
    pub(super) mirrors_failed: AtomicU64,
    pub(super) mirrors_dropped: AtomicU64,
    pub(super) mirrors_skipped: AtomicU64,
    pub(super) mirrors_in_flight: AtomicUsize,
    pub(super) retries: AtomicU64,
}

/// What the upstream did besides forwarding, since it was built ([`Upstream::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Mirrored copies that got a response (any status).
    pub mirrors_sent: u64,
    /// Mirrored copies that got none: no endpoint, connect failure, timeout.
    pub mirrors_failed: u64,
    /// Mirrored copies not sent because too many were in flight.
    pub mirrors_dropped: u64,
    /// Mirrored copies not sent because the request body could not be kept (too large, or of
    /// unknown length).
    pub mirrors_skipped: u64,
    /// Mirrored copies in flight now.
    pub mirrors_in_flight: usize,
    /// Retries sent.
    pub retries: u64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> UpstreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UpstreamStats {
            mirrors_sent: get(&self.mirrors_sent),
            mirrors_failed: get(&self.mirrors_failed),
            mirrors_dropped: get(&self.mirrors_dropped),
            mirrors_skipped: get(&self.mirrors_skipped),
            mirrors_in_flight: self.mirrors_in_flight.load(Ordering::Relaxed),
            retries: get(&self.retries),
        }
    }
}

/// One of the bounded mirror slots, given back when the copy is done.
pub(super) struct Slot(pub(super) Arc<Counters>);

impl Slot {
    pub(super) fn take(counters: &Arc<Counters>, max: usize) -> Option<Slot> {
        let taken =
            counters
                .mirrors_in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                });
        taken.ok().map(|_| Slot(counters.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.mirrors_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
