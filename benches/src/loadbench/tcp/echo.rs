//! The TCP side of the benchmark: an echo backend, and the clients that drive it through a
//! proxy.
//!
//! - [`serve`]: every connection's bytes are written back; the client's half-close (EOF) is
//!   passed on as the echo's own half-close, so a bulk transfer ends cleanly.
//! - [`run_echo`]: N connections, each in a closed loop writing one message and reading it back
//!   whole, for a fixed time after a warm-up; a message's latency is write start to the last
//!   byte read. Every echo is compared with what was sent.
//! - [`run_bulk`]: one connection writing `total` bytes and reading them back concurrently,
//!   then half-closing; the transfer counts when exactly `total` bytes came back before EOF.
//! - [`probe`]: one message on a fresh connection, with a deadline, saying what came back when
//!   it is not the echo (an HTTP error page from a proxy that does not carry TCP, a close).
//!
//! Every read has a deadline ([`IO_TIMEOUT`]): a proxy that swallows bytes fails the row, it
//! never hangs the run.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::loadbench::load::{Dialer, LoadResult, Window};

/// The longest wait for any single read or write before the connection counts as failed.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Echoes every connection accepted on `listener`, forever.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::with_capacity(64 * 1024, r);
            if tokio::io::copy_buf(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
    }
}

/// The `i`-th message of `size` bytes: varying content, so a stale or shifted echo is caught.
fn message(size: usize, i: u64) -> Vec<u8> {
    (0..size).map(|j| (j as u64 + i) as u8).collect()
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: nothing for {} s", IO_TIMEOUT.as_secs())),
    }
}

/// Reads until `buf` is full or the peer closes; returns how many bytes came.
async fn read_full(io: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> Result<usize, String> {
    let mut got = 0;
    while got < buf.len() {
        let n = timed("read", io.read(&mut buf[got..])).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// What came back instead of an echo, for people: the bytes as text when they look like text.
fn describe(got: &[u8]) -> String {
    if got.is_empty() {
        return "the connection was closed before any byte came back".into();
    }
    let head = &got[..got.len().min(80)];
    let text = String::from_utf8_lossy(head);
    let first_line = text.lines().next().unwrap_or_default();
    format!(
        "{} bytes that are not the echo, starting {first_line:?}",
        got.len()
    )
}

/// One round trip on `io`: writes `msg`, reads it back.
async fn round_trip(
    io: &mut (impl AsyncRead + AsyncWrite + Unpin),
    msg: &[u8],
    buf: &mut [u8],
) -> Result<(), String> {
    timed("write", io.write_all(msg)).await?;
    let got = read_full(io, buf).await?;
    if got == msg.len() && buf[..got] == *msg {
        Ok(())
    } else {
        Err(describe(&buf[..got]))
    }
}

/// Sends one `size`-byte message on a fresh connection and expects it back within
/// [`IO_TIMEOUT`].
pub async fn probe(dialer: &Dialer, size: usize) -> Result<(), String> {
    let mut io = dialer.dial().await?;
    let msg = message(size, 7);
    let mut buf = vec![0; size];
    round_trip(&mut io, &msg, &mut buf).await
}

/// What a closed-loop echo run does.
#[derive(Clone, Copy, Debug)]
pub struct EchoSpec {
    /// Concurrent connections.
    pub connections: usize,
    /// Bytes per message.
    pub message: usize,
    /// Before the window: connections open, proxies warm up.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// Runs `spec` through `dialer`: messages completed inside the window count (`ok`), with
/// their latency; a failed connection counts one error and is opened again.
pub async fn run_echo(dialer: &Dialer, spec: EchoSpec, window: &mut dyn Window) -> LoadResult {
    let t0 = Instant::now();
    let start = t0 + spec.warmup;
    let stop = start + spec.duration;
    let mut tasks = JoinSet::new();
    for c in 0..spec.connections.max(1) {
        let dialer = dialer.clone();
        tasks.spawn(async move {
            let mut out = LoadResult::default();
            let mut buf = vec![0; spec.message];
            let mut i = c as u64;
            while Instant::now() < stop {
                let mut io = match dialer.dial().await {
                    Ok(io) => io,
                    Err(e) => {
                        note_error(&mut out, Instant::now() >= start, e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while Instant::now() < stop {
                    i += 1;
                    let msg = message(spec.message, i);
                    let sent = Instant::now();
                    let result = round_trip(&mut io, &msg, &mut buf).await;
                    let done = Instant::now();
                    let counts = done >= start && done <= stop;
                    match result {
                        Ok(()) if counts => {
                            out.ok += 1;
                            out.hist.record(done - sent);
                        }
                        Ok(()) => {}
                        Err(e) => {
                            note_error(&mut out, counts, e);
                            break;
                        }
                    }
                }
            }
            out
        });
    }
    tokio::time::sleep_until(start.into()).await;
    window.begin();
    tokio::time::sleep_until(stop.into()).await;
    window.end();
    let mut total = LoadResult {
        elapsed: spec.duration,
        ..Default::default()
    };
    // A round trip in flight at the end ends within IO_TIMEOUT; then the workers are stopped.
    let deadline = tokio::time::sleep(IO_TIMEOUT + Duration::from_secs(1));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(r)) => {
                    total.hist.merge(&r.hist);
                    total.ok += r.ok;
                    total.errors += r.errors;
                    if total.first_error.is_none() {
                        total.first_error = r.first_error;
                    }
                }
                Some(Err(_)) => {}
                None => break,
            },
            _ = &mut deadline => {
                tasks.abort_all();
                break;
            }
        }
    }
    total
}

fn note_error(out: &mut LoadResult, counted: bool, why: String) {
    if counted {
        out.errors += 1;
    }
    if out.first_error.is_none() {
        out.first_error = Some(why);
    }
}

/// What a bulk transfer measured.
#[derive(Clone, Copy, Debug)]
pub struct BulkResult {
    /// Bytes sent (and, when it succeeded, received back).
    pub bytes: u64,
    /// From the first byte written to EOF read.
    pub elapsed: Duration,
}

impl BulkResult {
    /// GiB per second in each direction.
    pub fn gib_per_s(&self) -> f64 {
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        gib / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Writes `total` bytes on one connection while reading the echo, half-closes, and waits for
/// the echo's EOF. Fails when fewer or more bytes come back, or nothing moves for
/// [`IO_TIMEOUT`].
pub async fn run_bulk(
    dialer: &Dialer,
    total: u64,
    window: &mut dyn Window,
) -> Result<BulkResult, String> {
    let io = dialer.dial().await?;
    let (mut r, mut w) = tokio::io::split(io);
    window.begin();
    let started = Instant::now();
    let writer = async move {
        let chunk = message(64 * 1024, 0);
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            timed("bulk write", w.write_all(&chunk[..n])).await?;
            left -= n as u64;
        }
        timed("bulk half-close", w.shutdown()).await?;
        Ok::<_, String>(w)
    };
    let reader = async {
        let mut buf = vec![0; 64 * 1024];
        let mut got = 0u64;
        loop {
            let n = timed("bulk read", r.read(&mut buf)).await?;
            if n == 0 {
                return Ok::<_, String>(got);
            }
            got += n as u64;
        }
    };
    let (written, received) = tokio::join!(writer, reader);
    let elapsed = started.elapsed();
    window.end();
    let _w = written?;
    let received = received?;
    if received != total {
        return Err(format!(
            "sent {total} bytes, {received} came back before EOF"
        ));
    }
    Ok(BulkResult {
        bytes: total,
        elapsed,
    })
}
