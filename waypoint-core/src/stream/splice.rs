//! Splicing a client connection to its upstream: bytes copied both ways until both directions
//! end, one side's end of stream passed on as a half-close, an idle timeout over the pair.
//!
//! Half-close: when one side stops sending (its read returns end of stream) the other side's
//! write half is shut down (TCP `FIN`, or the end of the HBONE stream), and the opposite
//! direction keeps flowing: a client that sends its request and shuts down its write side
//! still receives every byte of the answer. The splice ends when both directions ended, when
//! either fails (a reset: the other direction cannot be completed meaningfully, both sides
//! are dropped), or when no byte moved either way for the idle timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The copy buffer each direction starts with: enough for request/response protocols, small
/// for the many idle connections a proxy holds.
const INITIAL_BUFFER: usize = 16 * 1024;
/// The most a direction's buffer grows to. A read that fills the buffer means a bulk transfer:
/// doubling it (up to this) cuts the system calls per byte, which is where a splice spends
/// its time (the kernel's TCP work is the rest).
const MAX_BUFFER: usize = 256 * 1024;

/// How a splice went.
#[derive(Debug)]
pub(crate) struct Spliced {
    /// Bytes read from the client and written upstream.
    pub(crate) from_client: u64,
    /// Bytes read from upstream and written to the client.
    pub(crate) to_client: u64,
    /// Why it ended.
    pub(crate) end: SpliceEnd,
}

/// Why a splice ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SpliceEnd {
    /// Both sides finished sending.
    Closed,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// A read or write failed on one side (named), the error in words.
    Failed(String),
}

/// Copies between `client` and `upstream` until the splice ends (see the module
/// documentation). `idle` zero disables the idle timeout.
pub(crate) async fn splice<C, U>(client: C, upstream: U, idle: Duration) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let activity = Activity::new();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let copies = async {
        tokio::try_join!(
            copy_half(
                &mut client_read,
                &mut upstream_write,
                &up,
                &activity,
                "client"
            ),
            copy_half(
                &mut upstream_read,
                &mut client_write,
                &down,
                &activity,
                "upstream"
            ),
        )
    };
    let end = tokio::select! {
        result = copies => match result {
            Ok(_) => SpliceEnd::Closed,
            Err(why) => SpliceEnd::Failed(why),
        },
        () = activity.idle_for(idle) => SpliceEnd::IdleTimeout,
    };
    Spliced {
        from_client: up.load(Ordering::Relaxed),
        to_client: down.load(Ordering::Relaxed),
        end,
    }
}

/// One direction: read until end of stream, then shut the writer down (the half-close).
async fn copy_half<R, W>(
    from: &mut R,
    to: &mut W,
    copied: &AtomicU64,
    activity: &Activity,
    from_name: &str,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let to_name = if from_name == "client" {
        "upstream"
    } else {
        "client"
    };
    let mut buf = vec![0u8; INITIAL_BUFFER];
    loop {
        let n = from
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading from the {from_name}: {e}"))?;
        let filled = n == buf.len();
        if n == 0 {
            // The peer may already be gone; its own direction reports that.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n])
            .await
            .map_err(|e| format!("writing to the {to_name}: {e}"))?;
        copied.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
        if filled && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// When bytes last moved, for the idle timeout (milliseconds since the splice began: one
/// atomic store per copy, no clock read shared under a lock).
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle` (never when `idle` is zero).
    async fn idle_for(&self, idle: Duration) {
        if idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = self.started + last + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

#[cfg(test)]
#[path = "splice_tests.rs"]
mod tests;
