//! Wire codecs both directions share: what the waypoint reads from a peer on the way in is what
//! it writes on the way out, so each format lives in one module that [`crate::transport`]
//! (inbound) and [`crate::upstream`] (outbound) both use, and neither imports the other.
//!
//! - [`proxy_protocol`]: the PROXY v1/v2 header as bytes (a pure decoder, an encoder, the TLV
//!   types Istio uses).
//! - [`hbone`]: HBONE's shared facts (port, HTTP/2 bounds, `forwarded` and `traceparent`) and
//!   [`H2Stream`](hbone::H2Stream), one HTTP/2 stream as a byte stream.
//! - [`client_hello`]: the TLS ClientHello's server name and ALPN, read without terminating
//!   TLS (inbound only: TLS passthrough routes by it).
//! - [`baggage`]: W3C baggage to and from [`WorkloadMetadata`](crate::conn::WorkloadMetadata).
//! - [`Io`] and [`BoxedIo`]: the byte stream every binding and every dial path produces.

use tokio::io::{AsyncRead, AsyncWrite};

pub mod baggage;
pub mod client_hello;
pub mod hbone;
pub mod proxy_protocol;

/// A bidirectional byte stream, whatever carries it.
///
/// A trait of its own (rather than spelling the bounds out) so that [`BoxedIo`] can erase the
/// concrete stream type: a TCP stream, a Unix stream, an HBONE tunnel, each possibly wrapped
/// (a replay of bytes read ahead, TLS, byte counting).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A type-erased byte stream: what an inbound binding hands the pipeline, and what an upstream
/// dial path hands the HTTP pools.
pub type BoxedIo = Box<dyn Io>;

/// A percent-decoded baggage value or query parameter (an escape that is not `%` and two hex
/// digits stays as is; bytes that do not form UTF-8 become U+FFFD).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_escape_stays_as_written() {
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
