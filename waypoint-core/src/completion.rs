//! The end of a request, in one place. Everything that must happen once the response body the
//! client gets is over (metrics, access log, span, connection return, load-balancer
//! accounting, the filters' end-of-request phase, the in-flight slot) is one [`Completion`]
//! the pipeline builds from its parts, carried by the body's one wrapper ([`body::watch`]).
//!
//! The body ends one of three ways ([`BodyEnd`]): read to its end, failed (the upstream broke
//! off: flag `UR`), or dropped early (the client went away: `DC`, unless the response is one
//! a server sends without a body). Then, in this order:
//!
//! 1. the flag of an abnormal end joins the request's response flags;
//! 2. the [`UpstreamLease`] is released: the HTTP/1.1 connection back to its pool (after a
//!    complete body only) and the endpoint no longer counted busy. First, because the backend
//!    is done with the request and the balancer should know at once;
//! 3. telemetry records the request (`istio_*` metrics, span, access log line);
//! 4. the filters' end-of-request phase ([`Filter::on_finished`](crate::filter::Filter)) sees
//!    the final context, status, flags, duration and byte counts — the same figures telemetry
//!    recorded;
//! 5. the overload in-flight slot is given back. Last, so the limit covers all the work a
//!    request costs.
//!
//! This runs where the body ends: in the server's poll of the last frame, or in the wrapper's
//! `Drop`. It is synchronous and quick; slow work (the access log writer, span export) is
//! already handed to tasks of its own.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body::Frame;

use crate::body::{BodyEnd, BodyWatch, BoxError};
use crate::filter::{Finished, RequestContext};
use crate::overload::RequestGuard;
use crate::snapshot::Snapshot;
use crate::telemetry::PendingRecord;
use crate::upstream::UpstreamLease;

/// What is left to do when a request's response body is over (see the module documentation
/// for the order).
pub(crate) struct Completion {
    /// The upstream connection and the endpoint's in-flight count; empty for a local reply.
    pub(crate) lease: UpstreamLease,
    /// Telemetry's record, which also counts the response bytes.
    pub(crate) record: PendingRecord,
    /// The status sent to the client.
    pub(crate) status: StatusCode,
    /// The request's context as the response filters left it.
    pub(crate) ctx: RequestContext,
    /// The snapshot the request was served with: its chain runs the end-of-request phase.
    pub(crate) snapshot: Arc<Snapshot>,
    /// The overload in-flight slot, when a limit is set.
    pub(crate) slot: Option<RequestGuard>,
}

impl BodyWatch for Completion {
    fn on_frame(&mut self, frame: &Frame<Bytes>) -> Result<(), BoxError> {
        self.record.on_frame(frame);
        Ok(())
    }

    fn on_end(self, end: BodyEnd) {
        let Completion {
            lease,
            record,
            status,
            mut ctx,
            snapshot,
            slot,
        } = self;
        let extra = record.end_flag(end);
        if let Some(flag) = extra
            && !ctx.response_flags.contains(&flag)
        {
            ctx.response_flags.push(flag);
        }
        // A body dropped unread because it must not be sent is a complete one for the pool.
        let lease_end = match (end, extra) {
            (BodyEnd::Dropped, None) => BodyEnd::Complete,
            _ => end,
        };
        lease.release(lease_end);
        let totals = record.complete(extra);
        snapshot.chain.run_finished(&Finished {
            ctx: &ctx,
            status,
            duration: totals.duration,
            request_bytes: totals.request_bytes,
            response_bytes: totals.response_bytes,
        });
        drop(slot);
    }
}
