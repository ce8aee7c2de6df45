//! Request mirrors: a copy of the request to one endpoint of another backend, sent in a task of
//! its own so it never delays or fails the request it copies; its response is read and dropped.
//! Copies in flight are bounded; beyond the bound they are dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;

use super::balance::{InFlight, pick};
use super::replay::Replay;
use super::{Upstream, forward, service_name};
use crate::conn::ConnInfo;
use crate::filter::MirrorTarget;

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
struct Slot(Arc<Counters>);

impl Slot {
    fn take(counters: &Arc<Counters>, max: usize) -> Option<Slot> {
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

impl Upstream {
    /// Sends a copy of the kept request to one endpoint of `mirror`, in the background, for at
    /// most `limit`. Without a kept request (its body too large or of unknown length) the
    /// copy is skipped.
    pub(super) fn mirror(
        &self,
        mirror: &MirrorTarget,
        replay: Option<&Replay>,
        conn: &ConnInfo,
        limit: Duration,
    ) {
        let counters = &self.counters;
        let backend = &mirror.backend;
        let Some(replay) = replay else {
            counters.mirrors_skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(mirror = %service_name(backend), "mirror skipped: request body not kept");
            return;
        };
        let Some(slot) = Slot::take(counters, self.cfg.max_mirrors_in_flight) else {
            counters.mirrors_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(mirror = %service_name(backend), "mirror dropped: too many in flight");
            return;
        };
        let Some(endpoint) = pick(&backend.endpoints) else {
            counters.mirrors_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(mirror = %service_name(backend), "mirror failed: no healthy upstream");
            return;
        };
        let address = endpoint.address;
        let protocol = backend.protocol;
        let mut req = replay.request();
        forward::prepare(&mut req, address, protocol, false);
        let route = self.route(endpoint, conn);
        let guard = InFlight::start(&endpoint.stats);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let exchange = async {
                let resp = pool.send(protocol, route, req).await?;
                let status = resp.status();
                // Read to the end so the connection can serve again.
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| forward::describe(&e))?;
                Ok::<_, String>(status)
            };
            let outcome = match tokio::time::timeout(limit, exchange).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("timeout after {}ms", limit.as_millis())),
            };
            let counters = &slot.0;
            match outcome {
                Ok(status) => {
                    counters.mirrors_sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %address, status = status.as_u16(), "mirror answered");
                }
                Err(reason) => {
                    counters.mirrors_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %address, %reason, "mirror failed");
                }
            }
        });
    }
}
