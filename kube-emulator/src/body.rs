//! Response bodies: whole JSON documents, and the streamed body of a watch.
//!
//! A watch body is fed from a channel by the task that runs the watch. Sending an `Err` into
//! it makes hyper abort the response mid-stream (no terminating chunk on HTTP/1.1, a reset on
//! HTTP/2): that is how `break_watches()` plays a lost connection rather than a clean end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::Value;
use tokio::sync::mpsc;

/// Any error a body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response.
pub(crate) type ResponseBody = BoxBody<Bytes, BoxError>;

/// A complete JSON body.
pub(crate) fn json_body(value: &Value) -> ResponseBody {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

/// A body streamed from a channel; it ends when the sender is dropped.
pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Result<Bytes, BoxError>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|next| next.map(|chunk| chunk.map(Frame::data)))
    }
}
