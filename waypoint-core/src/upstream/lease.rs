//! What a forwarded request holds on the upstream side until its response body is over: the
//! endpoint's in-flight count (which the balancer reads) and, over HTTP/1.1, the connection to
//! give back to the pool. [`Upstream::forward_leased`](super::Upstream::forward_leased) hands
//! it over beside the response instead of wrapping the body, so the request's one completion
//! can release it with the rest of the end-of-request work.

use super::balance::InFlight;
use super::limits::Slot;
use super::pool::Return;
use crate::body::{BodyEnd, BodyWatch};

/// The upstream side of a request in flight (see the module documentation). Released by
/// [`UpstreamLease::release`]; dropped, it closes its connection and ends the in-flight count.
#[derive(Default)]
pub(crate) struct UpstreamLease {
    conn: Option<Return>,
    in_flight: Option<InFlight>,
    /// The request's unit of its backend's `http2MaxRequests`.
    request: Option<Slot>,
}

impl std::fmt::Debug for UpstreamLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLease")
            .field("conn", &self.conn.is_some())
            .field("in_flight", &self.in_flight.is_some())
            .finish()
    }
}

impl UpstreamLease {
    /// Holds `conn` (if any) and the endpoint counted busy by `in_flight`.
    pub(super) fn new(conn: Option<Return>, in_flight: InFlight) -> Self {
        UpstreamLease {
            conn,
            in_flight: Some(in_flight),
            request: None,
        }
    }

    /// Also holds the request's slot of its backend's request limit until the body ends.
    pub(super) fn holding(mut self, request: Slot) -> Self {
        self.request = Some(request);
        self
    }

    /// Ends the lease as the response body ended: the connection goes back to the pool only
    /// after a complete body (any other end leaves it in an unknown state, so it closes); the
    /// endpoint stops counting the request either way.
    pub(crate) fn release(self, end: BodyEnd) {
        if let (BodyEnd::Complete, Some(conn)) = (end, self.conn) {
            conn.give_back();
        }
    }
}

/// Alone ([`Upstream::forward`](super::Upstream::forward)), the lease watches the body itself.
impl BodyWatch for UpstreamLease {
    fn on_end(self, end: BodyEnd) {
        self.release(end);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::body::watch;
    use crate::config::EndpointStats;

    fn lease(stats: &Arc<EndpointStats>) -> UpstreamLease {
        UpstreamLease::new(None, InFlight::start(stats))
    }

    #[tokio::test]
    async fn the_endpoint_stays_busy_until_the_body_ends_or_is_dropped() {
        let stats = Arc::new(EndpointStats::default());
        let in_flight = || stats.in_flight.load(Ordering::Relaxed);

        let body = watch(Full::new(Bytes::from_static(b"hi")), lease(&stats));
        assert_eq!(in_flight(), 1);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hi");
        assert_eq!(in_flight(), 0);

        // A streaming body is released when its last frame was read, before the body is dropped.
        let mut body = watch(Chunks(vec![b"a", b"b"]), lease(&stats));
        assert_eq!(in_flight(), 1);
        assert!(body.frame().await.is_some());
        assert_eq!(in_flight(), 1);
        while body.frame().await.is_some() {}
        assert_eq!(in_flight(), 0);
        drop(body);
        assert_eq!(in_flight(), 0);

        let body = watch(Full::new(Bytes::from_static(b"x")), lease(&stats));
        assert_eq!(in_flight(), 1);
        drop(body);
        assert_eq!(in_flight(), 0);
    }

    /// A body of several frames that only knows it ended when asked for one more.
    struct Chunks(Vec<&'static [u8]>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.0.is_empty() {
                return Poll::Ready(None);
            }
            let chunk = self.0.remove(0);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk)))))
        }
    }
}
