//! Body phases: how a filter sees request and response bodies, frame by frame or whole.
//!
//! Bodies stream through the waypoint as `Bytes` frames and are never buffered whole unless a
//! filter asks. A filter has two ways in:
//!
//! - **Streaming.** From `on_request` (or `on_response`) a filter attaches a [`BodyObserver`]
//!   with [`RequestContext::observe_request_body`] (or
//!   [`observe_response_body`](RequestContext::observe_response_body)). The observer owns its
//!   state (it borrows nothing from the context) and sees every data frame and the trailers as
//!   they pass; it may change them in place. The outermost chain wraps the body **once**, with
//!   every observer attached, after its phase ran; a request no filter observes is not wrapped
//!   at all. Observers run inside the body's `poll_frame`, so they are synchronous and must not
//!   block. An observer that rejects a frame ([`BodyRejected`]) fails the body: a request body
//!   fails towards the upstream (the client gets the upstream failure answer, 502 `UF`, or a
//!   reset if the response had begun), a response body fails towards the client (the stream is
//!   reset). A body with an observer has no length hint, since observers may change the size;
//!   HTTP/1.1 sends it chunked.
//! - **Whole.** A filter that needs all of it (to verify a signature, say) reads it in its own
//!   phase with [`read_request_body`] or [`read_response_body`], up to a limit it names. Over
//!   the limit nothing is truncated: a request is answered **413 Payload Too Large**, a response
//!   is replaced by **502 Bad Gateway**. Within the limit the bytes are put back, so later
//!   filters and the upstream see the same body.
//!
//! Request observers see the body in chain order; response observers in the order the response
//! phase attached them (the filter nearest the upstream first), which is the order data flows.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError, boxed, full, local_reply};

use super::{Request, RequestContext, Response};

/// Sees one body frame by frame. See the [module documentation](self) for when it runs.
pub trait BodyObserver: Send + 'static {
    /// Sees one data frame, and may replace or change it (an empty frame is allowed).
    fn on_data(&mut self, data: &mut Bytes) -> Result<(), BodyRejected>;

    /// Sees the trailers, when the body has any. The default leaves them unchanged.
    fn on_trailers(&mut self, _trailers: &mut http::HeaderMap) -> Result<(), BodyRejected> {
        Ok(())
    }

    /// Called once when the body ended normally (not when it failed or was dropped early).
    fn on_end(&mut self) {}
}

/// Why an observer stopped a body; the body fails with this error.
#[derive(Debug, thiserror::Error)]
#[error("body rejected by a filter: {0}")]
pub struct BodyRejected(pub String);

/// The observers attached to one request's bodies and not yet installed.
#[derive(Default)]
pub(super) struct BodyObservers {
    request: Vec<Box<dyn BodyObserver>>,
    response: Vec<Box<dyn BodyObserver>>,
}

impl fmt::Debug for BodyObservers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyObservers")
            .field("request", &self.request.len())
            .field("response", &self.response.len())
            .finish()
    }
}

impl RequestContext {
    /// Attaches `observer` to the request body (call it from `on_request`). It sees the body
    /// if the request is forwarded; a request a filter answered is not.
    pub fn observe_request_body(&mut self, observer: impl BodyObserver) {
        self.bodies.request.push(Box::new(observer));
    }

    /// Attaches `observer` to the response body (call it from `on_response`, or from
    /// `on_request` to see whichever response comes back).
    pub fn observe_response_body(&mut self, observer: impl BodyObserver) {
        self.bodies.response.push(Box::new(observer));
    }
}

/// Wraps the request body with the request observers attached so far, if any.
pub(super) fn install_request(req: &mut Request, ctx: &mut RequestContext) {
    let observers = std::mem::take(&mut ctx.bodies.request);
    wrap(req.body_mut(), observers);
}

/// Wraps the response body with the response observers attached so far, if any.
pub(super) fn install_response(resp: &mut Response, ctx: &mut RequestContext) {
    let observers = std::mem::take(&mut ctx.bodies.response);
    wrap(resp.body_mut(), observers);
}

fn wrap(body: &mut Body, observers: Vec<Box<dyn BodyObserver>>) {
    if observers.is_empty() {
        return;
    }
    let inner = std::mem::replace(body, crate::body::empty());
    *body = boxed(Observed {
        inner,
        observers,
        ended: false,
    });
}

/// A body passed through observers: the one wrapper the chain installs.
struct Observed {
    inner: Body,
    observers: Vec<Box<dyn BodyObserver>>,
    ended: bool,
}

impl Observed {
    fn observe(&mut self, frame: Frame<Bytes>) -> Result<Frame<Bytes>, BodyRejected> {
        let frame = match frame.into_data() {
            Ok(mut data) => {
                for observer in &mut self.observers {
                    observer.on_data(&mut data)?;
                }
                return Ok(Frame::data(data));
            }
            Err(frame) => frame,
        };
        match frame.into_trailers() {
            Ok(mut trailers) => {
                for observer in &mut self.observers {
                    observer.on_trailers(&mut trailers)?;
                }
                Ok(Frame::trailers(trailers))
            }
            Err(other) => Ok(other),
        }
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(this.observe(frame).map_err(Into::into))),
            Some(Err(error)) => Poll::Ready(Some(Err(error))),
            None => {
                this.ended = true;
                for observer in &mut this.observers {
                    observer.on_end();
                }
                Poll::Ready(None)
            }
        }
    }

    // Not the inner body's: an empty body must still be polled once so observers see its end.
    fn is_end_stream(&self) -> bool {
        self.ended
    }

    // Unknown: observers may change the size.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Reads the whole request body, at most `limit` bytes, and puts it back so the request goes on
/// unchanged. Over the limit the answer to send is `Err`: **413** (a body that fails to arrive:
/// **400**). Use it from `on_request`:
///
/// ```
/// # use waypoint_core::filter::{Decision, Request, body::read_request_body};
/// # async fn on_request(req: &mut Request) -> Decision {
/// let body = match read_request_body(req, 64 * 1024).await {
///     Ok(body) => body,
///     Err(answer) => return Decision::Respond(answer),
/// };
/// # let _ = body; Decision::Continue }
/// ```
pub async fn read_request_body(req: &mut Request, limit: usize) -> Result<Bytes, Response> {
    match read_whole(req.body_mut(), limit).await {
        Ok(bytes) => Ok(bytes),
        Err(ReadError::TooLarge) => Err(local_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )),
        Err(ReadError::Failed(error)) => Err(local_reply(
            StatusCode::BAD_REQUEST,
            format!("request body could not be read: {error}"),
        )),
    }
}

/// Reads the whole response body, at most `limit` bytes, and puts it back. Over the limit (or
/// when the upstream's body fails) the response is replaced by a **502** local reply and `None`
/// is returned. Use it from `on_response`.
pub async fn read_response_body(resp: &mut Response, limit: usize) -> Option<Bytes> {
    let failure = match read_whole(resp.body_mut(), limit).await {
        Ok(bytes) => return Some(bytes),
        Err(ReadError::TooLarge) => format!("response body larger than {limit} bytes"),
        Err(ReadError::Failed(error)) => format!("response body could not be read: {error}"),
    };
    *resp = local_reply(StatusCode::BAD_GATEWAY, failure);
    None
}

enum ReadError {
    TooLarge,
    Failed(BoxError),
}

/// Reads `body` whole (up to `limit`), leaving the bytes read in its place. Trailers, if any,
/// are dropped: a filter that reads a body whole owns its framing.
async fn read_whole(body: &mut Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut whole = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ReadError::Failed)?.into_data() else {
            continue;
        };
        if whole.len() + data.len() > limit {
            return Err(ReadError::TooLarge);
        }
        whole.extend_from_slice(&data);
    }
    let whole = whole.freeze();
    *body = full(whole.clone());
    Ok(whole)
}
