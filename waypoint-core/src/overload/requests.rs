//! Per-request limits: how many requests may be in flight, and how large a request body may be.
//!
//! A request is in flight from its head until its response body has been sent or dropped, so a
//! long download or a gRPC stream keeps its slot; the slot ([`RequestGuard`]) is held by the
//! request's completion, which gives it back last. The body limit never buffers: [`BodyLimit`]
//! counts frames as they pass and turns the one that crosses the limit into an error, which
//! aborts the upstream
//! request (HTTP/1.1: no final chunk and the connection closed; HTTP/2: RST_STREAM), so the
//! upstream can never take a cut body for a whole one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};

use super::OverloadMetrics;
use crate::body::{Body, BodyWatch, BoxError};

/// The in-flight and body-size limits (see [`super::OverloadOptions`]).
#[derive(Debug)]
pub struct RequestLimits {
    max_in_flight: Option<usize>,
    max_body: Option<u64>,
    in_flight: Arc<AtomicUsize>,
    metrics: OverloadMetrics,
}

/// A request body declared (by `content-length`) larger than the limit: answer 413.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request body of {declared} bytes is over the limit of {limit} bytes")]
pub(crate) struct BodyTooLarge {
    /// The declared length.
    pub declared: u64,
    /// The limit.
    pub limit: u64,
}

/// Set when a streamed body crossed the limit, so the caller answers 413 rather than whatever
/// the aborted upstream exchange produced.
#[derive(Clone, Debug, Default)]
pub(crate) struct BodyTrip(Arc<AtomicBool>);

impl BodyTrip {
    /// True once the body was cut off.
    pub(crate) fn tripped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl RequestLimits {
    pub(super) fn new(
        max_in_flight: Option<usize>,
        max_body: Option<u64>,
        metrics: OverloadMetrics,
    ) -> Self {
        RequestLimits {
            max_in_flight,
            max_body,
            in_flight: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// Takes an in-flight slot. `Ok(None)`: no limit is set, nothing is tracked. `Err(())`:
    /// the limit is reached; the refusal is counted, the caller answers 503 with flag `OM`.
    #[allow(clippy::result_unit_err)]
    pub fn begin(&self) -> Result<Option<RequestGuard>, ()> {
        let Some(limit) = self.max_in_flight else {
            return Ok(None);
        };
        let taken = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            });
        if taken.is_err() {
            self.metrics.inc_request_refused("in_flight_limit");
            return Err(());
        }
        self.metrics.in_flight_gauge().inc();
        Ok(Some(RequestGuard {
            in_flight: self.in_flight.clone(),
            metrics: self.metrics.clone(),
        }))
    }

    /// Applies the body limit to `req`: `Err` when its declared length is already over it
    /// (counted; answer 413); otherwise the body is wrapped to be cut off at the limit, and the
    /// returned [`BodyTrip`] says afterwards whether it was.
    pub(crate) fn limit_body(
        &self,
        req: &mut http::Request<Body>,
    ) -> Result<Option<BodyTrip>, BodyTooLarge> {
        let Some(limit) = self.max_body else {
            return Ok(None);
        };
        let declared = req.body().size_hint().lower();
        if declared > limit {
            self.metrics.inc_request_refused("body_too_large");
            return Err(BodyTooLarge { declared, limit });
        }
        if req.body().is_end_stream() {
            return Ok(None);
        }
        let trip = BodyTrip::default();
        let inner = std::mem::replace(req.body_mut(), crate::body::empty());
        *req.body_mut() = crate::body::watch(
            inner,
            BodyLimit {
                left: limit,
                limit,
                trip: trip.clone(),
                metrics: self.metrics.clone(),
            },
        );
        Ok(Some(trip))
    }
}

/// One request's in-flight slot; given back when dropped.
#[derive(Debug)]
pub struct RequestGuard {
    in_flight: Arc<AtomicUsize>,
    metrics: OverloadMetrics,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.metrics.in_flight_gauge().dec();
    }
}

/// Fails a request body when more than `limit` bytes pass.
struct BodyLimit {
    left: u64,
    limit: u64,
    trip: BodyTrip,
    metrics: OverloadMetrics,
}

impl BodyWatch for BodyLimit {
    fn on_frame(&mut self, frame: &Frame<Bytes>) -> Result<(), BoxError> {
        let Some(data) = frame.data_ref() else {
            return Ok(());
        };
        let n = data.len() as u64;
        if n > self.left {
            self.trip.0.store(true, Ordering::Release);
            self.metrics.inc_request_refused("body_too_large_streamed");
            return Err(format!(
                "request body over the limit of {} bytes; aborted",
                self.limit
            )
            .into());
        }
        self.left -= n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    fn limits(in_flight: Option<usize>, body: Option<u64>) -> RequestLimits {
        RequestLimits::new(in_flight, body, OverloadMetrics::new(None))
    }

    #[test]
    fn the_request_over_the_in_flight_limit_is_refused_until_one_finishes() {
        let l = limits(Some(2), None);
        let a = l.begin().unwrap().unwrap();
        let _b = l.begin().unwrap().unwrap();
        assert!(l.begin().is_err());
        assert_eq!(l.metrics.requests_refused("in_flight_limit"), 1);
        assert_eq!(l.metrics.requests_in_flight(), 2);
        // The slot is held until the guard (in the request's completion) goes.
        assert!(l.begin().is_err());
        drop(a);
        assert!(l.begin().unwrap().is_some());
        assert!(limits(None, None).begin().unwrap().is_none());
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_up_front() {
        let l = limits(None, Some(10));
        let mut req = http::Request::new(crate::body::full("x".repeat(11)));
        let err = l.limit_body(&mut req).unwrap_err();
        assert_eq!((err.declared, err.limit), (11, 10));
        assert_eq!(l.metrics.requests_refused("body_too_large"), 1);
        let mut req = http::Request::new(crate::body::full("x".repeat(10)));
        assert!(l.limit_body(&mut req).is_ok());
        assert_eq!(
            req.body().size_hint().exact(),
            Some(10),
            "the hint survives"
        );
    }

    #[tokio::test]
    async fn a_streamed_body_is_cut_off_with_an_error_at_the_limit() {
        let l = limits(None, Some(10));
        let chunks = [b"aaaa".as_slice(), b"bbbb", b"cccc"].to_vec();
        let mut req = http::Request::new(Body::new(Chunks(chunks.into())));
        let trip = l.limit_body(&mut req).unwrap().unwrap();
        let body = req.into_body();
        let err = body.collect().await.unwrap_err();
        assert!(
            err.to_string().contains("over the limit of 10 bytes"),
            "{err}"
        );
        assert!(trip.tripped());
        assert_eq!(l.metrics.requests_refused("body_too_large_streamed"), 1);
    }

    /// A body of ready chunks with no declared length, as a chunked upload.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(
                self.get_mut()
                    .0
                    .pop_front()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
            )
        }
    }
}
