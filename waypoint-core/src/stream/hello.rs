//! Reading the ClientHello of a TLS connection the waypoint passes through: its server name
//! (SNI) is what TLSRoutes match, and the bytes read go upstream unchanged.
//!
//! The client speaks first in TLS, so unlike detection there is no "nothing came, so it is
//! something else": silence until the handshake timeout, bytes that are not a ClientHello, a
//! hello larger than [`MAX_CLIENT_HELLO`], or a client that closes before its hello is
//! complete, each closes the connection with the reason logged. The parser itself is
//! [`crate::wire::client_hello`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::wire::client_hello::{ClientHello, MAX_CLIENT_HELLO, parse};

/// Reads from `io` until its first bytes are a complete ClientHello, or why they are not one
/// (see the module documentation), within `timeout`. Returns the outcome and every byte
/// read, to replay.
pub(crate) async fn read_client_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> (Result<ClientHello, String>, Bytes) {
    let deadline = Instant::now() + timeout;
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        // One byte past the limit, so a hello that does not fit is seen to be too large.
        let room = (MAX_CLIENT_HELLO + 1).saturating_sub(buf.len());
        let mut limited = (&mut *io).take(room as u64);
        let outcome = match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Err(_) => Err(format!(
                "no complete ClientHello within {}ms",
                timeout.as_millis()
            )),
            Ok(Err(e)) => Err(format!("reading the ClientHello: {e}")),
            Ok(Ok(0)) => Err(match buf.len() {
                0 => "the client closed without sending a ClientHello".to_owned(),
                n => format!("the client closed after {n} bytes of an incomplete ClientHello"),
            }),
            Ok(Ok(_)) => match parse(&buf) {
                Ok(Some(hello)) => Ok(hello),
                Ok(None) if buf.len() > MAX_CLIENT_HELLO => {
                    Err(format!("ClientHello longer than {MAX_CLIENT_HELLO} bytes"))
                }
                Ok(None) => continue,
                Err(e) => Err(e.to_string()),
            },
        };
        return (outcome, buf.freeze());
    }
}
