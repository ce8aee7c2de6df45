//! The body type that flows through the filter chain, and small helpers for local replies.

use bytes::Bytes;
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
