//! Write batching for HTTP/2 connections: the frames every stream of a connection produced
//! before its task runs again leave in one `write`, not one each.
//!
//! # Why
//!
//! The `h2` crate writes through its own small encoder buffer, and a DATA frame of 256 bytes or
//! more is not copied into it but chained after it; with one chained frame pending the encoder
//! takes no further frame, so it writes the socket before the next one. Each response with a
//! body of that size therefore costs its own `write` system call, even when many streams
//! answered at once. Each stream also answers from its own task, and each answer wakes the
//! connection task, which tokio runs next (its LIFO slot): the connection writes as soon as one
//! stream has answered, before the tasks of the other finished exchanges have run. Under load
//! the `write` (loopback TCP included: the receiving side's work is charged to it) was most of
//! what an h2c request cost beyond an HTTP/1.1 one.
//!
//! # How
//!
//! [`BatchedWrites`] sits between hyper and the connection's byte stream and takes writes into
//! its own buffer. The first flush that finds bytes waiting does not write: it wakes the
//! connection's task, which tokio then queues *behind* the tasks already runnable (a task that
//! wakes itself while running is rescheduled as a yield), and reports the flush done. Those
//! tasks (upstream exchanges finishing, streams answering) add their frames meanwhile; when the
//! connection task runs again the next flush writes everything in one go. A flush is deferred at
//! most once per poll of the connection ([`PollCount`] tells polls apart), so a deferred flush
//! always happens at the next poll, which the self-wake guarantees; the cost when idle is one
//! extra poll of the connection per burst of writes.
//!
//! Nothing is held back beyond that next poll, and the buffer is bounded: past
//! [`FLUSH_AT`] bytes a write first writes the socket, and waits for it like any write would
//! (back-pressure is the socket's, as before). A shutdown writes everything first.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes past which a write goes to the socket before taking more: a few frames of the
/// default 16 KiB size, so large bodies stream as before and memory per connection stays small.
const FLUSH_AT: usize = 64 * 1024;

/// A buffer this large is given back once written out, so an idle connection keeps none.
const KEEP_AT_MOST: usize = 16 * 1024;

/// Counts the polls of the future that drives a connection: a flush deferred in one poll is
/// done in the next.
#[derive(Clone, Debug, Default)]
pub(crate) struct PollCount(Arc<AtomicU64>);

impl PollCount {
    /// Marks the start of a poll of the connection. Called by the task that owns the
    /// connection, before each poll of it.
    pub(crate) fn next(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A byte stream whose writes are gathered and written once per poll of the connection (see
/// the module documentation). Reads pass through.
pub(crate) struct BatchedWrites<IO> {
    io: IO,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `io`.
    written: usize,
    polls: PollCount,
    /// The poll in which a flush was deferred, while one is.
    deferred_in: Option<u64>,
}

impl<IO> BatchedWrites<IO> {
    /// Wraps `io`; the connection's owner calls [`PollCount::next`] on `polls` before every
    /// poll of the connection.
    pub(crate) fn new(io: IO, polls: PollCount) -> Self {
        BatchedWrites {
            io,
            buf: Vec::new(),
            written: 0,
            polls,
            deferred_in: None,
        }
    }
}

impl<IO: AsyncWrite + Unpin> BatchedWrites<IO> {
    /// Writes the buffer out; `Ready(Ok)` once all of it is written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.buf.capacity() > KEEP_AT_MOST {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.written = 0;
        self.deferred_in = None;
        Poll::Ready(Ok(()))
    }

    /// Room for more: over the bound, what is buffered is written first.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.buf.len() >= FLUSH_AT {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for BatchedWrites<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut n = 0;
        for slice in slices {
            self.buf.extend_from_slice(slice);
            n += slice.len();
        }
        Poll::Ready(Ok(n))
    }

    /// Gathering the slices is a copy either way: h2 then chains a frame's payload after its
    /// head instead of writing them separately.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.written < self.buf.len() {
            let now = self.polls.now();
            match self.deferred_in {
                // Deferred in this very poll: the self-wake is already on its way.
                Some(poll) if poll == now => return Poll::Ready(Ok(())),
                Some(_) => ready!(self.poll_write_out(cx))?,
                None => {
                    self.deferred_in = Some(now);
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
            }
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    /// A socket that records each write, and can refuse them (a full send buffer).
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        full: bool,
        shut: bool,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.full {
                return Poll::Pending;
            }
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(io: &mut BatchedWrites<Socket>, cx: &mut Context<'_>, data: &[u8]) -> Poll<usize> {
        Pin::new(io).poll_write(cx, data).map(|r| r.unwrap())
    }

    fn flush(io: &mut BatchedWrites<Socket>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(io).poll_flush(cx).map(|r| r.unwrap())
    }

    #[test]
    fn frames_flushed_during_one_poll_reach_the_socket_in_one_write_at_the_next_poll() {
        let wakes = Arc::new(CountingWaker::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let polls = PollCount::default();
        let mut io = BatchedWrites::new(Socket::default(), polls.clone());

        polls.next();
        for frame in [&b"one"[..], b"two", b"three"] {
            assert_eq!(write(&mut io, &mut cx, frame), Poll::Ready(frame.len()));
            assert_eq!(flush(&mut io, &mut cx), Poll::Ready(()));
        }
        // Nothing written yet, and the task was asked to run again (once) so it will be.
        assert!(io.io.writes.is_empty());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);

        polls.next();
        assert_eq!(flush(&mut io, &mut cx), Poll::Ready(()));
        assert_eq!(io.io.writes, vec![b"onetwothree".to_vec()]);
        // Written out: the next burst is deferred again, once.
        assert_eq!(write(&mut io, &mut cx, b"four"), Poll::Ready(4));
        assert_eq!(flush(&mut io, &mut cx), Poll::Ready(()));
        assert_eq!(io.io.writes.len(), 1);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_flush_with_nothing_buffered_neither_defers_nor_wakes() {
        let wakes = Arc::new(CountingWaker::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = BatchedWrites::new(Socket::default(), PollCount::default());
        assert_eq!(flush(&mut io, &mut cx), Poll::Ready(()));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_shutdown_writes_everything_buffered_before_closing() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let polls = PollCount::default();
        let mut io = BatchedWrites::new(Socket::default(), polls);
        assert_eq!(write(&mut io, &mut cx, b"goaway"), Poll::Ready(6));
        assert_eq!(flush(&mut io, &mut cx), Poll::Ready(()));
        let shut = Pin::new(&mut io).poll_shutdown(&mut cx);
        assert!(matches!(shut, Poll::Ready(Ok(()))));
        assert_eq!(io.io.writes, vec![b"goaway".to_vec()]);
        assert!(io.io.shut);
    }

    #[test]
    fn past_the_bound_a_write_waits_for_the_socket_instead_of_buffering_more() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let polls = PollCount::default();
        let mut io = BatchedWrites::new(Socket::default(), polls);
        let frame = vec![7u8; FLUSH_AT];
        assert_eq!(write(&mut io, &mut cx, &frame), Poll::Ready(FLUSH_AT));
        io.io.full = true;
        // The socket takes nothing: neither does the buffer.
        assert_eq!(write(&mut io, &mut cx, b"more"), Poll::Pending);
        assert_eq!(io.buf.len(), FLUSH_AT);
        io.io.full = false;
        assert_eq!(write(&mut io, &mut cx, b"more"), Poll::Ready(4));
        assert_eq!(io.io.writes, vec![frame]);
        assert_eq!(io.buf, b"more");
    }

    #[test]
    fn a_deferred_flush_that_finds_the_socket_full_waits_for_it() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let polls = PollCount::default();
        let mut io = BatchedWrites::new(Socket::default(), polls.clone());
        assert_eq!(write(&mut io, &mut cx, b"frame"), Poll::Ready(5));
        assert_eq!(flush(&mut io, &mut cx), Poll::Ready(()));
        polls.next();
        io.io.full = true;
        assert_eq!(flush(&mut io, &mut cx), Poll::Pending);
        io.io.full = false;
        assert_eq!(flush(&mut io, &mut cx), Poll::Ready(()));
        assert_eq!(io.io.writes, vec![b"frame".to_vec()]);
    }
}
