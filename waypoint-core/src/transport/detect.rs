//! Protocol detection: whether a connection to a port nothing named a protocol for carries
//! HTTP, decided on its first bytes.
//!
//! HTTP when the bytes begin an HTTP/1.x request line (`METHOD SP request-target SP HTTP/1.`
//! and a digit: the method a token of uppercase letters, so every registered method and any
//! extension method written as they are) or the HTTP/2 connection preface
//! (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`). More is read while the bytes so far are still a prefix
//! of one of them. Anything else is TCP, and so is silence until the timeout: a server-first
//! protocol (MySQL, SMTP) waits for the server to speak, and after the timeout it does.
//!
//! The whole request line up to the version is required, not just `TOKEN SP`, because inline
//! commands of byte protocols look like one (Redis's `SET key value`): those have no
//! `HTTP/1.x` where the version goes. A request line longer than [`MAX_DETECTION_BYTES`]
//! that is still a prefix is taken as HTTP, so the HTTP server answers it (414 or 400)
//! rather than the bytes being sent somewhere as TCP.
//!
//! The bytes read are handed back with the verdict; the caller replays them
//! ([`Rewind`](super::Rewind)) to whichever side serves the connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The most bytes detection reads before deciding.
pub const MAX_DETECTION_BYTES: usize = 8 * 1024;

/// Longest method token considered (the longest registered method is 17 bytes).
const MAX_METHOD_LEN: usize = 24;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const VERSION_PREFIX: &[u8] = b"HTTP/1.";

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line or the HTTP/2 preface.
    Http,
    /// Anything else, or nothing within the timeout.
    Tcp,
}

/// The verdict on `buf`, the first bytes of a connection: `None` while they are still a
/// prefix of an HTTP/1.x request line or the HTTP/2 preface and more are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if buf.len() >= H2_PREFACE.len() {
            Some(Detected::Http)
        } else {
            None
        };
    }
    request_line(buf)
}

/// `METHOD SP target SP HTTP/1.<digit>`, read as far as `buf` goes.
fn request_line(buf: &[u8]) -> Option<Detected> {
    let method = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method == 0 || method > MAX_METHOD_LEN {
        return Some(Detected::Tcp);
    }
    // Only the method so far: more is needed.
    let rest = buf.get(method..).filter(|r| !r.is_empty())?;
    let Some(rest) = rest.strip_prefix(b" ") else {
        return Some(Detected::Tcp);
    };
    // The request-target: visible ASCII, at least one byte.
    let target = rest.iter().take_while(|b| b.is_ascii_graphic()).count();
    let rest = &rest[target..];
    if rest.is_empty() {
        return None;
    }
    if target == 0 {
        return Some(Detected::Tcp);
    }
    let Some(version) = rest.strip_prefix(b" ") else {
        return Some(Detected::Tcp);
    };
    let n = version.len().min(VERSION_PREFIX.len());
    if version[..n] != VERSION_PREFIX[..n] {
        return Some(Detected::Tcp);
    }
    match version.get(VERSION_PREFIX.len()) {
        None => None,
        Some(d) if d.is_ascii_digit() => Some(Detected::Http),
        Some(_) => Some(Detected::Tcp),
    }
}

/// Reads the first bytes of `io` until [`classify`] decides, the client stops sending (end of
/// stream or an error: TCP, which then sees the end), [`MAX_DETECTION_BYTES`] are read (HTTP,
/// see the module documentation), or `timeout` passes (TCP). Returns the verdict and every
/// byte read, to replay.
pub async fn detect<S: AsyncRead + Unpin>(io: &mut S, timeout: Duration) -> (Detected, Bytes) {
    let deadline = Instant::now() + timeout;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= MAX_DETECTION_BYTES {
            return (Detected::Http, buf.freeze());
        }
        let room = MAX_DETECTION_BYTES - buf.len();
        let mut chunk = (&mut *io).take(room as u64);
        match tokio::time::timeout_at(deadline, chunk.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return (Detected::Tcp, buf.freeze()),
            Ok(Ok(_)) => {
                if let Some(verdict) = classify(&buf) {
                    return (verdict, buf.freeze());
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
