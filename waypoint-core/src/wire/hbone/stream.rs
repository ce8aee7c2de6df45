//! [`H2Stream`]: one HTTP/2 stream seen as a byte stream, the inside of an HBONE tunnel.
//!
//! Used on both ends: the server wraps the request body and the response's send half of an
//! accepted CONNECT, a client wraps the request's send half and the response body. Reads
//! return flow-control credit as the caller consumes bytes, so a slow reader slows the peer
//! instead of growing a buffer; writes only hand h2 as many bytes as the peer's window allows.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one `poll_write` hands to h2. Bounds the copy made per call and the capacity a
/// single stream asks the connection for, so one busy tunnel cannot claim the whole
/// connection window from its neighbours in one go.
const MAX_WRITE_CHUNK: usize = 256 * 1024;

/// An HTTP/2 stream as an [`AsyncRead`] + [`AsyncWrite`] byte stream.
///
/// Reading yields the DATA frames of `recv` and ends (`Ok(0)`) at the peer's END_STREAM.
/// Writing sends DATA frames on `send`; [`AsyncWrite::poll_shutdown`] sends END_STREAM, the
/// tunnel's equivalent of a TCP FIN. A stream reset by the peer reads and writes as
/// [`io::ErrorKind::ConnectionReset`] (or [`io::ErrorKind::BrokenPipe`] when writing after our
/// own end of stream). Dropping it without shutdown lets h2 reset the stream.
///
/// ```no_run
/// # async fn f(mut client: h2::client::SendRequest<bytes::Bytes>) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use waypoint_core::wire::hbone::H2Stream;
///
/// let req = http::Request::connect("10.0.0.1:80").body(())?;
/// let (response, send) = client.send_request(req, false)?;
/// let response = response.await?;
/// let mut tunnel = H2Stream::new(send, response.into_body());
/// tunnel.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await?;
/// let mut reply = Vec::new();
/// tunnel.read_to_end(&mut reply).await?;
/// # Ok(()) }
/// ```
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// The rest of the last DATA frame, not yet read by the caller.
    pending: Bytes,
    read_done: bool,
    write_done: bool,
}

impl fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.recv.stream_id().as_u32())
            .field("pending", &self.pending.len())
            .field("read_done", &self.read_done)
            .field("write_done", &self.write_done)
            .finish()
    }
}

impl H2Stream {
    /// Joins the two halves of one HTTP/2 stream: `send` for our DATA frames, `recv` for the
    /// peer's.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
            read_done: false,
            write_done: false,
        }
    }

    /// The HTTP/2 stream id, for logs.
    pub(crate) fn stream_id(&self) -> u32 {
        self.recv.stream_id().as_u32()
    }
}

/// Maps an h2 error to the `io::Error` a byte-stream user expects: resets and GOAWAYs are a
/// reset connection, transport failures keep their own kind.
fn io_error(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    if error.is_reset() || error.is_go_away() {
        return io::Error::new(io::ErrorKind::ConnectionReset, error);
    }
    io::Error::other(error)
}

fn reset_error(reason: Reason) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("HTTP/2 stream reset by peer: {reason}"),
    )
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        while this.pending.is_empty() {
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                None => this.read_done = true,
                // A peer that has said everything it will say may stop the exchange with
                // NO_ERROR; for a reader that is the end of the stream, not a failure.
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) && e.is_reset() => {
                    this.read_done = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        // Credit goes back only for what the caller took, so the peer can have at most one
        // window of data waiting on us. An error means the stream is already gone and there is
        // nobody left to credit.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_done {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after end of HTTP/2 stream",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(MAX_WRITE_CHUNK);
        this.send.reserve_capacity(want);
        while this.send.capacity() == 0 {
            match this.send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io_error(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "HTTP/2 stream closed",
                    )));
                }
                // No capacity yet: a reset is the one event that will never bring any, so
                // watch for it too or the writer would wait forever.
                Poll::Pending => {
                    return match this.send.poll_reset(cx) {
                        Poll::Ready(Ok(reason)) => Poll::Ready(Err(reset_error(reason))),
                        Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(e))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
        let n = this.send.capacity().min(want);
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames handed to h2 are written by the connection task as soon as it runs; there is
        // nothing held back here to push out.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_done {
            return Poll::Ready(Ok(()));
        }
        this.write_done = true;
        // Capacity asked for but never used would stay assigned to a finished stream.
        this.send.reserve_capacity(0);
        this.send
            .send_data(Bytes::new(), true)
            .map_err(io_error)
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// An h2 client and server over an in-memory pipe, each connection driven by its own task.
    /// Returns the client's handle and the server's accepted CONNECT streams.
    async fn pair(
        server_builder: h2::server::Builder,
    ) -> (
        h2::client::SendRequest<Bytes>,
        tokio::sync::mpsc::Receiver<(http::Request<RecvStream>, h2::server::SendResponse<Bytes>)>,
    ) {
        let (c, s): (DuplexStream, DuplexStream) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut conn = server_builder.handshake::<_, Bytes>(s).await.unwrap();
            while let Some(Ok(req)) = conn.accept().await {
                if tx.send(req).await.is_err() {
                    break;
                }
            }
        });
        let (client, conn) = h2::client::handshake(c).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        (client, rx)
    }

    async fn open(
        client: &mut h2::client::SendRequest<Bytes>,
        rx: &mut tokio::sync::mpsc::Receiver<(
            http::Request<RecvStream>,
            h2::server::SendResponse<Bytes>,
        )>,
    ) -> (H2Stream, H2Stream) {
        let req = http::Request::connect("10.0.0.1:80").body(()).unwrap();
        let (resp, client_send) = client.send_request(req, false).unwrap();
        let (req, mut respond) = rx.recv().await.unwrap();
        let server_send = respond
            .send_response(http::Response::new(()), false)
            .unwrap();
        let resp = resp.await.unwrap();
        (
            H2Stream::new(client_send, resp.into_body()),
            H2Stream::new(server_send, req.into_body()),
        )
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_shutdown_is_eof() {
        let (mut client, mut rx) = pair(h2::server::Builder::new()).await;
        let (mut c, mut s) = open(&mut client, &mut rx).await;
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        s.write_all(b"pong").await.unwrap();
        s.shutdown().await.unwrap();
        // A second shutdown is harmless; a write after it is refused.
        s.shutdown().await.unwrap();
        assert_eq!(
            s.write_all(b"x").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pong");
    }

    #[tokio::test]
    async fn large_writes_respect_small_windows() {
        // Windows far smaller than the payload: the write must wait for credit that only the
        // reader's consumption returns, rather than buffering the whole payload.
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(16 * 1024)
            .initial_connection_window_size(32 * 1024);
        let (mut client, mut rx) = pair(builder).await;
        let (c, mut s) = open(&mut client, &mut rx).await;
        let payload: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let writer = tokio::spawn(async move {
            let mut c = c;
            c.write_all(&payload).await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        // Read slowly in small pieces so flow control is exercised many times.
        let mut got = Vec::new();
        let mut chunk = [0u8; 7000];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn peer_reset_is_an_io_error_on_both_halves() {
        let (mut client, mut rx) = pair(h2::server::Builder::new()).await;
        let (mut c, s) = open(&mut client, &mut rx).await;
        let H2Stream { mut send, .. } = s;
        send.send_reset(Reason::CANCEL);
        let mut buf = [0u8; 16];
        let err = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        // Enough to exhaust the default 64 KiB window if the reset went unnoticed.
        let err = tokio::time::timeout(Duration::from_secs(5), c.write_all(&[0u8; 200_000]))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn no_error_reset_after_data_reads_as_eof() {
        let (mut client, mut rx) = pair(h2::server::Builder::new()).await;
        let (mut c, s) = open(&mut client, &mut rx).await;
        let H2Stream { mut send, .. } = s;
        send.send_data(Bytes::from_static(b"bye"), false).unwrap();
        let mut got = [0u8; 3];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bye");
        // h2 drops unsent data on reset, so the reset only follows data the reader has seen.
        send.send_reset(Reason::NO_ERROR);
        let mut rest = Vec::new();
        let res = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(res.is_ok(), "{res:?}");
        assert!(rest.is_empty());
    }
}
