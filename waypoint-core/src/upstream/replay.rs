//! Requests kept whole so they can be sent more than once, to retries and mirrors. Only a body
//! that is empty, or small with a length known up front, is kept; anything else streams once.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::body::{Body, BoxError, full};

/// Reads `body` whole, failing beyond `limit` bytes: a length hint is the sender's word, and
/// the limit holds even if it was wrong. One frame, the usual case, is kept without a copy.
async fn read_at_most(mut body: Body, limit: usize) -> Result<Bytes, BoxError> {
    let mut first = Bytes::new();
    let mut rest = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: requests kept whole carry none we forward
        };
        if first.len() + rest.len() + data.len() > limit {
            return Err(format!("request body longer than announced (over {limit} bytes)").into());
        }
        if first.is_empty() && rest.is_empty() {
            first = data;
        } else {
            if rest.is_empty() {
                rest.extend_from_slice(&first);
            }
            rest.extend_from_slice(&data);
        }
    }
    Ok(if rest.is_empty() {
        first
    } else {
        rest.freeze()
    })
}

/// A request's head and whole body, to build copies from.
#[derive(Debug)]
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    /// Keeps `req` when its body is known to be at most `limit` bytes: reads the body once and
    /// puts it back as one frame shared with the copy. `Ok(None)` leaves a body that is larger
    /// or of unknown length untouched, to stream. An error is the client's body failing.
    pub(crate) async fn keep(
        req: &mut Request<Body>,
        limit: usize,
    ) -> Result<Option<Replay>, BoxError> {
        let fits = req
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n <= limit as u64);
        if !fits {
            return Ok(None);
        }
        let body = if req.body().is_end_stream() {
            Bytes::new()
        } else {
            let body = std::mem::replace(req.body_mut(), crate::body::empty());
            read_at_most(body, limit).await?
        };
        *req.body_mut() = full(body.clone());
        Ok(Some(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body,
        }))
    }

    /// A fresh copy of the request (without the original's extensions).
    pub(crate) fn request(&self) -> Request<Body> {
        let mut req = Request::new(full(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::body::boxed;

    async fn bytes(req: Request<Body>) -> Bytes {
        req.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn small_known_body_is_kept_and_put_back() {
        let mut req = Request::post("/p?q=1")
            .header("x-a", "1")
            .body(full("hello"))
            .unwrap();
        let replay = Replay::keep(&mut req, 16).await.unwrap().unwrap();
        let copy = replay.request();
        assert_eq!(copy.method(), Method::POST);
        assert_eq!(copy.uri(), "/p?q=1");
        assert_eq!(copy.headers()["x-a"], "1");
        assert_eq!(bytes(copy).await, "hello");
        assert_eq!(bytes(replay.request()).await, "hello");
        assert_eq!(bytes(req).await, "hello");
    }

    #[tokio::test]
    async fn large_or_unknown_body_streams_untouched() {
        let mut req = Request::post("/").body(full(vec![7u8; 17])).unwrap();
        assert!(Replay::keep(&mut req, 16).await.unwrap().is_none());
        assert_eq!(bytes(req).await.len(), 17);

        // A stream of unknown length is never read ahead.
        let mut req = Request::post("/")
            .body(boxed(Unsized(Some(Bytes::from_static(b"x")))))
            .unwrap();
        assert!(req.body().size_hint().exact().is_none());
        assert!(Replay::keep(&mut req, 16).await.unwrap().is_none());
        assert_eq!(bytes(req).await, "x");
    }

    /// One chunk, its length not announced.
    struct Unsized(Option<Bytes>);

    impl http_body::Body for Unsized {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn empty_body_is_kept() {
        let mut req = Request::get("/").body(crate::body::empty()).unwrap();
        let replay = Replay::keep(&mut req, 0).await.unwrap().unwrap();
        assert!(bytes(replay.request()).await.is_empty());
    }
}
