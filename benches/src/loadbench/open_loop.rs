//! The open-loop (fixed-rate) generator: requests leave on a schedule, within a few microseconds
//! of their due time, and every latency is measured twice: from the *scheduled* send time (a
//! stalled proxy is charged for every request that queued behind the stall, no coordinated
//! omission) and from the *actual* send. The generator also measures itself: its lateness
//! (actual send - scheduled send) is reported next to the latencies, so a reader can tell how
//! much of a number is the generator's.
//!
//! # Why a thread of its own, and no tokio
//!
//! The first version scheduled requests with tokio's timer, whose resolution is a millisecond:
//! every request left up to 1 ms late and, measured from its scheduled time, the direct floor at
//! 1,000 rps read p50 ~ 1 ms on loopback, hiding the proxies' added latency (tens of µs) under
//! the timer's. Waking a tokio task from a precise timer thread would instead cost a cross-thread
//! wake per request (an eventfd write, the runtime's thread scheduled in, the task polled): tens
//! of µs on a busy core, and not the same every time.
//!
//! So one OS thread owns the whole load: it dials the connections (plain TCP, optionally with a
//! PROXY v2 header first), then runs a loop that
//! 1. moves every request whose due time has passed into a FIFO of pending requests,
//! 2. writes each pending request on an idle connection (round robin over the idle ones), taking
//!    the send time just before the `write`,
//! 3. waits in one `ppoll` over all its sockets until a response arrives or until
//!    [`SPIN`] before the next due time (the thread's timer slack is set to 1 ns so the kernel does
//!    not add its default 50 µs), then spins: `ppoll` with a zero timeout, over and over, until the
//!    due time. Spinning while still polling the sockets means a response that arrives during the
//!    spin is timed as precisely as one that wakes the thread.
//!
//! At 1,000 rps the spin costs at most a fifth of a core ([`SPIN`] per millisecond), on the load
//! core. Responses are read by the same thread, parsed by [`parse_response`] (status line and
//! headers with `httparse`, then `Content-Length`, chunked or until-close framing), so a response
//! is timed the moment its last byte is read, with no task hand-off either.
//!
//! # What counts
//!
//! - A request that finds no idle connection at its due time (all of them are waiting for
//!   answers) waits in the FIFO; it is sent when a connection frees up, and its latency from the
//!   scheduled time includes that wait. Such a request is *not* in the lateness histogram (the
//!   wait is the system under test's, not the generator's); it is counted as `waited`.
//! - Lateness is recorded for requests scheduled inside the measured window; latencies (both) for
//!   successful requests *completed* inside it, as in the closed loop.
//! - A connection that fails, or that the server closes (`Connection: close`, or an end of stream
//!   on an idle connection), is dialed again when it is next needed; the dial is on the
//!   generator's thread, so its time shows in the lateness of that request.
//!
//! Only HTTP/1.1 over plain TCP is supported (the `fixed-rate` scenario's job); other dialers and
//! h2c are refused with an error rather than silently measured another way.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use super::hist::Histogram;
use super::load::{Dialer, LoadResult, LoadSpec, Protocol, Window};

/// How long before a due time the thread stops sleeping and spins. It covers the kernel's wake-up
/// latency on a busy core (timer interrupt, scheduling in); a wake-up later than this shows up
/// as lateness.
pub const SPIN: Duration = Duration::from_micros(200);

/// Longest a dial may take before the request it was for counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// What the open loop measures on top of a [`LoadResult`].
#[derive(Clone, Debug, Default)]
pub struct OpenStats {
    /// Latency from the actual send (`write`) to the last byte of the answer, for the same
    /// requests as the result's main histogram (which measures from the scheduled time).
    pub from_send: Histogram,
    /// The generator's own lateness: actual send - scheduled send, for requests scheduled in the
    /// window that had an idle connection when due.
    pub lateness: Histogram,
    /// Requests scheduled in the window that found every connection busy and waited for one.
    pub waited: u64,
}

impl OpenStats {
    pub(crate) fn merge(&mut self, other: &OpenStats) {
        self.from_send.merge(&other.from_send);
        self.lateness.merge(&other.lateness);
        self.waited += other.waited;
    }
}

/// Request `i` is due at `t0 + i / rate`, computed from `i` each time (not by adding a period
/// over and over), so the schedule does not drift by the period's rounding.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    t0: Instant,
    rate: f64,
}

impl Schedule {
    /// `rate` requests per second from `t0` (rates below one per 1,000 s are raised to it).
    pub fn new(t0: Instant, rate: f64) -> Schedule {
        Schedule {
            t0,
            rate: rate.max(1e-3),
        }
    }

    /// When request `i` (from 0) is due.
    pub fn due(&self, i: u64) -> Instant {
        let nanos = (i as f64 * 1e9 / self.rate).round();
        self.t0 + Duration::from_nanos(nanos as u64)
    }
}

/// The measured window: from the end of the warm-up to the end of the run.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    /// Window opens.
    pub start: Instant,
    /// Window closes; nothing is sent after it.
    pub stop: Instant,
}

impl Times {
    fn new(t0: Instant, spec: &LoadSpec) -> Times {
        Times {
            start: t0 + spec.warmup,
            stop: t0 + spec.warmup + spec.duration,
        }
    }

    /// A request completed at `done` counts.
    fn counts(&self, done: Instant) -> bool {
        done >= self.start && done <= self.stop
    }

    /// A request scheduled at `at` belongs to the window (its lateness is recorded).
    fn scheduled_in(&self, at: Instant) -> bool {
        at >= self.start && at < self.stop
    }
}

/// A request that is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// Its scheduled send time.
    pub at: Instant,
    /// No connection was idle when the generator found it due.
    pub waited: bool,
}

/// Which request goes out next and on which connection: the schedule, the FIFO of due requests
/// and the round robin of idle connections. No I/O and no clock of its own (`now` is passed in),
/// so its decisions can be tested exactly.
#[derive(Debug)]
pub struct Dispatch {
    schedule: Schedule,
    stop: Instant,
    next: u64,
    pending: VecDeque<Due>,
    idle: VecDeque<usize>,
}

impl Dispatch {
    /// `connections` idle connections (0..connections), nothing sent yet; nothing is scheduled
    /// at or after `stop`.
    pub fn new(schedule: Schedule, stop: Instant, connections: usize) -> Dispatch {
        Dispatch {
            schedule,
            stop,
            next: 0,
            pending: VecDeque::new(),
            idle: (0..connections).collect(),
        }
    }

    /// Moves every request due at or before `now` into the FIFO, marking those that cannot get
    /// an idle connection as waiting.
    pub fn release(&mut self, now: Instant) {
        loop {
            let at = self.schedule.due(self.next);
            if at > now || at >= self.stop {
                return;
            }
            self.next += 1;
            let waited = self.pending.len() >= self.idle.len();
            self.pending.push_back(Due { at, waited });
        }
    }

    /// The oldest due request and the connection to send it on, when both exist.
    pub fn next_send(&mut self) -> Option<(usize, Due)> {
        if self.pending.is_empty() {
            return None;
        }
        let conn = self.idle.pop_front()?;
        let due = self.pending.pop_front()?;
        Some((conn, due))
    }

    /// Connection `conn` has no request in flight any more (answered, failed or never sent).
    pub fn idle_again(&mut self, conn: usize) {
        self.idle.push_back(conn);
    }

    /// Until when the thread may wait for responses only: the next due time while a connection
    /// is idle to send it on, else the end of the run (a response will free a connection first).
    pub fn wake_at(&self) -> Instant {
        if !self.pending.is_empty() || self.idle.is_empty() {
            return self.stop;
        }
        self.schedule.due(self.next).min(self.stop)
    }
}

/// What the generator records, with the window rules applied.
#[derive(Debug)]
pub struct Tally {
    times: Times,
    /// The result so far; `open` is always `Some`.
    pub result: LoadResult,
}

impl Tally {
    /// An empty tally for `times`.
    pub fn new(times: Times) -> Tally {
        Tally {
            times,
            result: LoadResult {
                open: Some(OpenStats::default()),
                ..Default::default()
            },
        }
    }

    fn open(&mut self) -> &mut OpenStats {
        self.result.open.get_or_insert_with(OpenStats::default)
    }

    /// `due` was written at `sent`.
    pub fn sent(&mut self, due: Due, sent: Instant) {
        if !self.times.scheduled_in(due.at) {
            return;
        }
        if due.waited {
            self.open().waited += 1;
        } else {
            let late = sent.saturating_duration_since(due.at);
            self.open().lateness.record(late);
        }
    }

    /// The answer to `due` (written at `sent`) was complete at `done` with `status`.
    pub fn answered(&mut self, due: Due, sent: Instant, done: Instant, status: u16) {
        if !(200..300).contains(&status) {
            self.failed(done, format!("status {status}"));
            return;
        }
        if !self.times.counts(done) {
            return;
        }
        self.result.ok += 1;
        self.result
            .hist
            .record(done.saturating_duration_since(due.at));
        self.open()
            .from_send
            .record(done.saturating_duration_since(sent));
    }

    /// A request failed at `at` (dial, write, read or framing error, or a non-2xx answer).
    pub fn failed(&mut self, at: Instant, why: String) {
        if self.times.counts(at) {
            self.result.errors += 1;
        }
        if self.result.first_error.is_none() {
            self.result.first_error = Some(why);
        }
    }
}

/// One answer found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Final status (interim 1xx answers are skipped).
    pub status: u16,
    /// The server will close the connection after this answer.
    pub close: bool,
    /// Bytes of the buffer the answer took, interim answers included.
    pub len: usize,
}

/// Most headers an answer may have.
const MAX_HEADERS: usize = 64;

/// Parses the HTTP/1.1 answer to a GET at the start of `buf`: `Ok(None)` while incomplete;
/// `eof`: the server has closed, so a body without length ends here and anything else incomplete
/// is an error.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Parsed>, String> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(&buf[offset..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if eof => {
                return Err("connection closed before a complete answer".into());
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("bad answer: {e}")),
        };
        let status = resp.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            offset += head;
            continue;
        }
        let mut close = resp.version == Some(0);
        let mut length = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("");
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?;
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .split(',')
                    .next_back()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        close = false;
                    }
                }
            }
        }
        let start = offset + head;
        let body = &buf[start..];
        let body_len = if status == 204 || status == 304 {
            Some(0)
        } else if chunked {
            chunked_len(body)?
        } else if let Some(n) = length {
            (body.len() >= n).then_some(n)
        } else if eof {
            // No framing: the body runs to the end of the connection (RFC 9112, 6.3).
            close = true;
            Some(body.len())
        } else {
            None
        };
        return match body_len {
            Some(n) => Ok(Some(Parsed {
                status,
                close,
                len: start + n,
            })),
            None if eof => Err("connection closed inside an answer's body".into()),
            None => Ok(None),
        };
    }
}

/// Length of a complete chunked body at the start of `body` (trailers included), `None` while
/// incomplete.
fn chunked_len(body: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0;
    loop {
        let (line, size) = match httparse::parse_chunk_size(&body[pos..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("bad chunk size".into()),
        };
        pos += line;
        if size == 0 {
            // Trailer fields, then an empty line.
            let rest = &body[pos..];
            if rest.starts_with(b"\r\n") {
                return Ok(Some(pos + 2));
            }
            return Ok(rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| pos + i + 4));
        }
        let size = usize::try_from(size).map_err(|_| "chunk too large".to_owned())?;
        let end = pos.saturating_add(size).saturating_add(2);
        if body.len() < end {
            return Ok(None);
        }
        if &body[end - 2..end] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        pos = end;
    }
}

/// Where the generator connects.
#[derive(Clone, Debug)]
enum Target {
    Fixed(SocketAddr),
    Shared(Arc<RwLock<SocketAddr>>),
}

/// A dialer the generator's thread can use: plain TCP, optional PROXY v2 header.
#[derive(Clone, Debug)]
struct TcpDialer {
    target: Target,
    proxy_header: Option<Arc<Vec<u8>>>,
}

impl TcpDialer {
    fn for_dialer(dialer: &Dialer) -> Result<TcpDialer, String> {
        match dialer {
            Dialer::Tcp { addr, proxy_header } => Ok(TcpDialer {
                target: Target::Fixed(*addr),
                proxy_header: proxy_header.clone(),
            }),
            Dialer::Shared { addr, proxy_header } => Ok(TcpDialer {
                target: Target::Shared(addr.clone()),
                proxy_header: proxy_header.clone(),
            }),
            other => Err(format!(
                "the open-loop generator dials plain TCP only, not {other:?}"
            )),
        }
    }

    /// A connected, non-blocking socket with the PROXY header (if any) written.
    fn dial(&self) -> Result<TcpStream, String> {
        let addr = match &self.target {
            Target::Fixed(a) => *a,
            Target::Shared(a) => *a.read().unwrap_or_else(|p| p.into_inner()),
        };
        let mut s = TcpStream::connect_timeout(&addr, DIAL_TIMEOUT)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        if let Some(h) = &self.proxy_header {
            let _ = s.set_write_timeout(Some(DIAL_TIMEOUT));
            s.write_all(h)
                .map_err(|e| format!("PROXY header to {addr}: {e}"))?;
        }
        s.set_nonblocking(true)
            .map_err(|e| format!("non-blocking {addr}: {e}"))?;
        Ok(s)
    }
}

/// One connection of the generator.
#[derive(Debug, Default)]
struct Conn {
    stream: Option<TcpStream>,
    /// Bytes of the answer read so far.
    buf: Vec<u8>,
    /// The request waiting for its answer, and when it was written.
    in_flight: Option<(Due, Instant)>,
}

/// Runs `spec` at `rate` requests per second against `dialer` on a thread of its own;
/// `window` is told when the measured window opens and closes.
pub async fn run(
    dialer: &Dialer,
    spec: &LoadSpec,
    rate: f64,
    window: &mut dyn Window,
) -> LoadResult {
    let refused = |why: String| LoadResult {
        errors: 1,
        first_error: Some(why),
        elapsed: spec.duration,
        ..Default::default()
    };
    if spec.protocol != Protocol::Http1 {
        return refused("the open-loop generator speaks HTTP/1.1 only".into());
    }
    let tcp = match TcpDialer::for_dialer(dialer) {
        Ok(d) => d,
        Err(e) => return refused(e),
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Instant>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<LoadResult>();
    let thread_spec = spec.clone();
    let spawned = std::thread::Builder::new()
        .name("open-loop".into())
        .spawn(move || {
            let result = generate(&tcp, &thread_spec, rate, ready_tx);
            let _ = done_tx.send(result);
        });
    if let Err(e) = spawned {
        return refused(format!("cannot start the generator thread: {e}"));
    }
    if let Ok(t0) = ready_rx.await {
        let times = Times::new(t0, spec);
        tokio::time::sleep_until(times.start.into()).await;
        window.begin();
        tokio::time::sleep_until(times.stop.into()).await;
        window.end();
    }
    let mut result = done_rx
        .await
        .unwrap_or_else(|_| refused("the generator thread ended without a result".into()));
    result.elapsed = spec.duration;
    result
}

/// The generator thread: dials, tells `ready` when the schedule starts, runs it to the end.
fn generate(
    dialer: &TcpDialer,
    spec: &LoadSpec,
    rate: f64,
    ready: tokio::sync::oneshot::Sender<Instant>,
) -> LoadResult {
    // Without this the kernel may wake a sleeping thread up to 50 µs late (the default slack).
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
    let n = spec.connections.max(1);
    let mut first_error = None;
    let mut conns: Vec<Conn> = (0..n)
        .map(|_| match dialer.dial() {
            Ok(s) => Conn {
                stream: Some(s),
                ..Default::default()
            },
            Err(e) => {
                first_error.get_or_insert(e);
                Conn::default()
            }
        })
        .collect();
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\n\r\n",
        spec.path, spec.authority
    )
    .into_bytes();
    let t0 = Instant::now();
    let times = Times::new(t0, spec);
    let mut tally = Tally::new(times);
    tally.result.first_error = first_error;
    let _ = ready.send(t0);
    let mut dispatch = Dispatch::new(Schedule::new(t0, rate), times.stop, n);
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if now >= times.stop {
            break;
        }
        dispatch.release(now);
        while let Some((c, due)) = dispatch.next_send() {
            if !send(&mut conns[c], dialer, &request, due, &mut tally) {
                dispatch.idle_again(c);
            }
        }
        let wake = dispatch.wake_at();
        let timeout = wake
            .saturating_duration_since(Instant::now())
            .saturating_sub(SPIN);
        let ready = wait(&conns, timeout);
        for c in ready {
            if on_readable(&mut conns[c], &mut scratch, &mut tally) {
                dispatch.idle_again(c);
            }
        }
    }
    tally.result
}

/// Writes `request` for `due` on `conn` (dialing it first if needed). False when it failed and
/// the connection is free again.
fn send(conn: &mut Conn, dialer: &TcpDialer, request: &[u8], due: Due, tally: &mut Tally) -> bool {
    if conn.stream.is_none() {
        match dialer.dial() {
            Ok(s) => conn.stream = Some(s),
            Err(e) => {
                tally.failed(Instant::now(), e);
                return false;
            }
        }
    }
    let Some(stream) = conn.stream.as_mut() else {
        return false;
    };
    let sent = Instant::now();
    if let Err(e) = write_all(stream, request) {
        conn.stream = None;
        tally.failed(Instant::now(), format!("write: {e}"));
        return false;
    }
    tally.sent(due, sent);
    conn.buf.clear();
    conn.in_flight = Some((due, sent));
    true
}

/// Writes all of `bytes` on a non-blocking socket (a request fits an empty send buffer, so the
/// wait is for the rare full one).
fn write_all(stream: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(&*stream, PollFlags::OUT)];
                let limit = Timespec::try_from(DIAL_TIMEOUT).unwrap_or(Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
                if rustix::event::poll(&mut fds, Some(&limit)).unwrap_or(0) == 0 {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits up to `timeout` (zero: just looks) for any open connection to become readable;
/// returns their indices.
fn wait(conns: &[Conn], timeout: Duration) -> Vec<usize> {
    let mut which = Vec::with_capacity(conns.len());
    let mut fds = Vec::with_capacity(conns.len());
    for (i, c) in conns.iter().enumerate() {
        if let Some(s) = &c.stream {
            which.push(i);
            fds.push(PollFd::new(s, PollFlags::IN));
        }
    }
    let limit = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    });
    match rustix::event::poll(&mut fds, Some(&limit)) {
        Ok(0) | Err(_) => Vec::new(),
        Ok(_) => fds
            .iter()
            .zip(which)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(_, i)| i)
            .collect(),
    }
}

/// Reads what `conn` has. True when the connection has become free for another request (its
/// answer is complete or it failed); an idle connection that is readable has been closed by
/// the server (or sent bytes nobody asked for) and is dropped, to be dialed again when needed.
fn on_readable(conn: &mut Conn, scratch: &mut [u8], tally: &mut Tally) -> bool {
    let Some(stream) = conn.stream.as_mut() else {
        return false;
    };
    let mut eof = false;
    let mut failure = None;
    loop {
        match stream.read(scratch) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => conn.buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                failure = Some(format!("read: {e}"));
                break;
            }
        }
    }
    let now = Instant::now();
    let Some((due, sent)) = conn.in_flight else {
        conn.stream = None;
        conn.buf.clear();
        return false;
    };
    let outcome = match failure {
        Some(e) => Err(e),
        None => parse_response(&conn.buf, eof),
    };
    match outcome {
        Ok(None) => false,
        Ok(Some(p)) => {
            tally.answered(due, sent, now, p.status);
            if p.close || eof || p.len != conn.buf.len() {
                // Closing, or bytes after the answer that no request asked for.
                conn.stream = None;
            }
            conn.buf.clear();
            conn.in_flight = None;
            true
        }
        Err(e) => {
            tally.failed(now, e);
            conn.stream = None;
            conn.buf.clear();
            conn.in_flight = None;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn schedule_is_evenly_spaced_and_does_not_drift() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0);
        assert_eq!(s.due(0), t0);
        assert_eq!(s.due(1), t0 + ms(1));
        assert_eq!(s.due(30_000), t0 + Duration::from_secs(30));
        // A period that is not a whole number of nanoseconds: adding 333,333,333 ns three times
        // would end 1 ns early; computing from the index does not.
        let third = Schedule::new(t0, 3.0);
        assert_eq!(third.due(3), t0 + Duration::from_secs(1));
        assert_eq!(third.due(1), t0 + Duration::from_nanos(333_333_333));
        assert_eq!(third.due(2), t0 + Duration::from_nanos(666_666_667));
    }

    #[test]
    fn dispatch_releases_only_due_requests_and_never_at_or_after_stop() {
        let t0 = Instant::now();
        let mut d = Dispatch::new(Schedule::new(t0, 1000.0), t0 + ms(3), 4);
        d.release(t0 + us(500));
        assert_eq!(d.next_send().map(|(_, due)| due.at), Some(t0));
        assert_eq!(d.next_send(), None, "request 1 is not due before 1 ms");
        assert_eq!(d.wake_at(), t0 + ms(1));
        d.release(t0 + ms(10));
        let sent: Vec<Instant> =
            std::iter::from_fn(|| d.next_send().map(|(_, due)| due.at)).collect();
        assert_eq!(sent, vec![t0 + ms(1), t0 + ms(2)], "t0 + 3 ms is the stop");
        assert_eq!(d.wake_at(), t0 + ms(3));
    }

    #[test]
    fn a_late_wake_sends_every_missed_request_with_its_own_scheduled_time() {
        let t0 = Instant::now();
        let mut d = Dispatch::new(Schedule::new(t0, 1000.0), t0 + ms(100), 16);
        // The thread was descheduled for 5 ms: six requests are due at once.
        d.release(t0 + ms(5));
        let mut out = Vec::new();
        while let Some((conn, due)) = d.next_send() {
            out.push((conn, due));
        }
        assert_eq!(out.len(), 6);
        for (i, (conn, due)) in out.iter().enumerate() {
            assert_eq!(*conn, i, "round robin over the idle connections");
            assert_eq!(due.at, t0 + ms(i as u64));
            assert!(
                !due.waited,
                "connections were idle: this is the generator's lateness"
            );
        }
    }

    #[test]
    fn a_request_with_no_idle_connection_waits_and_is_sent_on_the_first_one_freed() {
        let t0 = Instant::now();
        let mut d = Dispatch::new(Schedule::new(t0, 1000.0), t0 + ms(100), 2);
        d.release(t0);
        let (a, _) = d.next_send().unwrap();
        d.release(t0 + ms(1));
        let (b, _) = d.next_send().unwrap();
        // Both connections busy: requests 2 and 3 wait.
        d.release(t0 + ms(3));
        assert_eq!(d.next_send(), None);
        assert_eq!(
            d.wake_at(),
            t0 + ms(100),
            "nothing to send until an answer frees one"
        );
        d.idle_again(b);
        let (conn, due) = d.next_send().unwrap();
        assert_eq!((conn, due.at, due.waited), (b, t0 + ms(2), true));
        d.idle_again(a);
        let (conn, due) = d.next_send().unwrap();
        assert_eq!((conn, due.at, due.waited), (a, t0 + ms(3), true));
    }

    fn window(t0: Instant) -> Times {
        Times {
            start: t0 + ms(10),
            stop: t0 + ms(20),
        }
    }

    #[test]
    fn an_answer_is_recorded_from_the_scheduled_time_and_from_the_send() {
        let t0 = Instant::now();
        let mut t = Tally::new(window(t0));
        let due = Due {
            at: t0 + ms(12),
            waited: false,
        };
        let sent = due.at + us(10);
        t.sent(due, sent);
        t.answered(due, sent, sent + us(100), 200);
        let open = t.result.open.as_ref().unwrap();
        assert_eq!(t.result.ok, 1);
        assert_eq!(t.result.hist.max(), us(110));
        assert_eq!(open.from_send.max(), us(100));
        assert_eq!(open.lateness.max(), us(10));
        assert_eq!(open.lateness.count(), 1);
        assert_eq!(open.waited, 0);
    }

    #[test]
    fn a_late_start_is_charged_to_the_latency_from_the_scheduled_time() {
        let t0 = Instant::now();
        let mut t = Tally::new(window(t0));
        // Sent 3 ms late because every connection was busy: not generator lateness, but the
        // request's latency from its schedule includes the wait.
        let due = Due {
            at: t0 + ms(11),
            waited: true,
        };
        let sent = due.at + ms(3);
        t.sent(due, sent);
        t.answered(due, sent, sent + us(50), 200);
        let open = t.result.open.as_ref().unwrap();
        assert_eq!(t.result.hist.max(), ms(3) + us(50));
        assert_eq!(open.from_send.max(), us(50));
        assert_eq!(open.lateness.count(), 0);
        assert_eq!(open.waited, 1);
    }

    #[test]
    fn only_the_window_counts_and_non_2xx_is_an_error() {
        let t0 = Instant::now();
        let mut t = Tally::new(window(t0));
        let early = Due {
            at: t0 + ms(1),
            waited: false,
        };
        t.sent(early, early.at + us(5));
        t.answered(early, early.at + us(5), early.at + us(90), 200);
        // Scheduled in the window, answered after it: lateness yes, latency no.
        let last = Due {
            at: t0 + ms(19),
            waited: false,
        };
        t.sent(last, last.at + us(7));
        t.answered(last, last.at + us(7), t0 + ms(21), 200);
        let mid = Due {
            at: t0 + ms(15),
            waited: false,
        };
        t.sent(mid, mid.at);
        t.answered(mid, mid.at, mid.at + us(80), 503);
        let open = t.result.open.as_ref().unwrap();
        assert_eq!(t.result.ok, 0);
        assert_eq!(t.result.hist.count(), 0);
        assert_eq!(open.lateness.count(), 2);
        assert_eq!(t.result.errors, 1);
        assert_eq!(t.result.first_error.as_deref(), Some("status 503"));
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

    #[test]
    fn a_content_length_answer_is_complete_only_with_its_whole_body() {
        for cut in 0..OK.len() {
            assert_eq!(parse_response(&OK[..cut], false), Ok(None), "cut at {cut}");
        }
        let p = parse_response(OK, false).unwrap().unwrap();
        assert_eq!((p.status, p.close, p.len), (200, false, OK.len()));
        assert!(parse_response(&OK[..OK.len() - 1], true).is_err());
    }

    #[test]
    fn chunked_answers_with_extensions_and_trailers_are_framed() {
        let plain =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n";
        let trailers =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nx-t: 1\r\n\r\n";
        for body in [&plain[..], &trailers[..]] {
            for cut in 0..body.len() {
                assert_eq!(
                    parse_response(&body[..cut], false),
                    Ok(None),
                    "cut at {cut}"
                );
            }
            assert_eq!(
                parse_response(body, false).unwrap().unwrap().len,
                body.len()
            );
        }
        let bad = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhiXX0\r\n\r\n";
        assert!(parse_response(bad, false).is_err());
    }

    #[test]
    fn interim_answers_are_skipped_and_close_is_honoured() {
        let two = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let p = parse_response(two, false).unwrap().unwrap();
        assert_eq!((p.status, p.close, p.len), (404, true, two.len()));
        let old = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_response(old, false).unwrap().unwrap().close);
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_response(no_content, false).unwrap().unwrap().len,
            no_content.len()
        );
    }

    #[test]
    fn an_unframed_body_ends_at_the_close() {
        let r = b"HTTP/1.1 200 OK\r\n\r\nsome bytes";
        assert_eq!(parse_response(r, false), Ok(None));
        let p = parse_response(r, true).unwrap().unwrap();
        assert_eq!((p.status, p.close, p.len), (200, true, r.len()));
        assert!(parse_response(b"garbage\r\n\r\n", false).is_err());
    }
}
