//! The body type that flows through the filter chain, small helpers for local replies, and the
//! one body wrapper (`watch`) every part of the request path uses to count, limit or finish
//! a body.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming HTTP body: request and response bodies pass through the chain as `Bytes` frames,
/// never buffered whole.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into a [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body holding `bytes` at once.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(Full::new(bytes.into()))
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A local reply from the waypoint itself: `status`, a `text/plain` body ending in a newline.
///
/// ```
/// let resp = waypoint_core::body::local_reply(http::StatusCode::NOT_FOUND, "no route");
/// assert_eq!(resp.status(), 404);
/// ```
pub fn local_reply(status: http::StatusCode, message: impl Into<String>) -> http::Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut resp = http::Response::new(full(message));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// How a watched body ended, as its [`BodyWatch`] hears it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// Read to its end (or dropped once nothing was left to read).
    Complete,
    /// Failed with an error: its source (the upstream, the client) broke off.
    Failed,
    /// Dropped before its end: whoever read it (the client) went away.
    Dropped,
}

/// What a body wrapper does besides passing frames on: see each frame, and hear once how the
/// body ended. Every body wrapper in the crate is a [`watch`] with one of these, so the frame
/// delegation (`poll_frame`, `is_end_stream`, `size_hint`, the end-of-stream and `Drop` rules)
/// is written once.
pub(crate) trait BodyWatch: Send + 'static {
    /// Sees a frame on its way. An `Err` replaces the frame and cuts the body off there: the
    /// reader gets the error, then the end.
    fn on_frame(&mut self, _frame: &Frame<Bytes>) -> Result<(), BoxError> {
        Ok(())
    }

    /// Hears how the body ended: called exactly once, at the latest when the body is dropped.
    fn on_end(self, _end: BodyEnd)
    where
        Self: Sized,
    {
    }
}

/// `body`, watched by `watch` (see [`BodyWatch`]). One allocation: the wrapper is the box.
pub(crate) fn watch<B, W>(body: B, watch: W) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    W: BodyWatch,
{
    Body::new(Watched {
        inner: body,
        watch: Some(watch),
        cut: false,
    })
}

/// The one body wrapper: frames pass through `inner`, `watch` sees them and hears the end.
struct Watched<B: http_body::Body, W: BodyWatch> {
    inner: B,
    /// Taken when the end is reported, so it is reported once.
    watch: Option<W>,
    /// Set when the watch refused a frame: the body ends there, whatever `inner` still holds.
    cut: bool,
}

// The watch is never pinned: it is only reached through `&mut`, so the wrapper moves freely
// whenever its body does.
impl<B: http_body::Body + Unpin, W: BodyWatch> Unpin for Watched<B, W> {}

impl<B: http_body::Body, W: BodyWatch> Watched<B, W> {
    fn end(&mut self, end: BodyEnd) {
        if let Some(watch) = self.watch.take() {
            watch.on_end(end);
        }
    }
}

impl<B, W> http_body::Body for Watched<B, W>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    W: BodyWatch,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.cut {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                this.end(BodyEnd::Failed);
                return Poll::Ready(Some(Err(e.into())));
            }
            None => {
                this.end(BodyEnd::Complete);
                return Poll::Ready(None);
            }
        };
        if let Some(watch) = this.watch.as_mut()
            && let Err(e) = watch.on_frame(&frame)
        {
            this.cut = true;
            this.end(BodyEnd::Failed);
            return Poll::Ready(Some(Err(e)));
        }
        // A server may stop polling once `is_end_stream` says so: the last frame is the end.
        if this.inner.is_end_stream() {
            this.end(BodyEnd::Complete);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: http_body::Body, W: BodyWatch> Drop for Watched<B, W> {
    fn drop(&mut self) {
        // Nothing left to read (no content, or its length reached with the last frame) is an
        // end all the same; anything else was abandoned by its reader.
        let end = match self.cut || self.inner.is_end_stream() {
            true => BodyEnd::Complete,
            false => BodyEnd::Dropped,
        };
        self.end(end);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Writes down the bytes it saw and how the body ended.
    #[derive(Clone, Default)]
    struct Ends(Arc<Mutex<(u64, Vec<BodyEnd>)>>);

    impl BodyWatch for Ends {
        fn on_frame(&mut self, frame: &Frame<Bytes>) -> Result<(), BoxError> {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            self.0.lock().unwrap().0 += n;
            Ok(())
        }

        fn on_end(self, end: BodyEnd) {
            self.0.lock().unwrap().1.push(end);
        }
    }

    /// Frames handed out one per poll, of unknown length: only polling finds the end.
    struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, BoxError>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    /// `chunks`, then an error when `fails`.
    fn stream(chunks: &[&'static str], fails: bool) -> Frames {
        let mut frames: std::collections::VecDeque<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if fails {
            frames.push_back(Err("reset".into()));
        }
        Frames(frames)
    }

    #[tokio::test]
    async fn the_end_is_heard_once_as_complete_failed_or_dropped() {
        let ends = Ends::default();
        let body = watch(stream(&["ab", "c"], false), ends.clone());
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abc");
        assert_eq!(*ends.0.lock().unwrap(), (3, vec![BodyEnd::Complete]));

        let ends = Ends::default();
        let body = watch(stream(&["ab"], true), ends.clone());
        assert!(body.collect().await.is_err());
        assert_eq!(*ends.0.lock().unwrap(), (2, vec![BodyEnd::Failed]));

        let ends = Ends::default();
        let mut body = watch(stream(&["ab", "c"], false), ends.clone());
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(*ends.0.lock().unwrap(), (2, vec![BodyEnd::Dropped]));

        // A body whose length is reached with its last frame ends there, before a reader asks
        // for more; one with nothing in it ends when dropped unread.
        let ends = Ends::default();
        let mut body = watch(full("xyz"), ends.clone());
        body.frame().await.unwrap().unwrap();
        assert_eq!(*ends.0.lock().unwrap(), (3, vec![BodyEnd::Complete]));
        drop(body);
        assert_eq!(ends.0.lock().unwrap().1.len(), 1);
        let ends = Ends::default();
        drop(watch(empty(), ends.clone()));
        assert_eq!(*ends.0.lock().unwrap(), (0, vec![BodyEnd::Complete]));
    }
}
