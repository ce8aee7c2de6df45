//! Inbound transports: how bytes reach the waypoint and what is known about their sender.
//!
//! Every binding ends in the same pair: a byte stream ([`BoxedIo`]) and a
//! [`ConnInfo`](crate::conn::ConnInfo). Code after that point (HTTP serving, filters) never learns
//! which binding the bytes came through.
//!
//! The binding built here is the *sandwich*: a co-located ztunnel terminates HBONE, opens TCP to
//! `127.0.0.1:15088` (or, as our extension, a Unix socket), writes a PROXY protocol v2 header whose
//! TLVs carry the source identity (`0xD0`), the targeted service (`0xD1`) and optionally the source
//! workload's metadata (`0xE0` by default), then copies the raw application bytes.
//!
//! - [`proxy_protocol`]: a pure decoder of PROXY v1/v2 headers, the async header reader with its
//!   timeout and size limit, the mapping to `ConnInfo`, an encoder for clients and tests, and
//!   [`Rewind`], which replays bytes read past the header.
//! - [`listener`]: [`SandwichListener`], the accept loop over TCP or a Unix socket.
//! - [`metrics`]: [`TransportMetrics`], the accepted and rejected connection counters.
//! - [`peer`]: [`PeerCheck`], who may connect to a Unix socket listener (`SO_PEERCRED`).

use tokio::io::{AsyncRead, AsyncWrite};

pub mod hbone;
pub mod listener;
pub mod metrics;
pub mod peer;
pub mod proxy_protocol;

pub use listener::{ListenAddr, ListenAddrError, ListenerOptions, SandwichListener};
pub use metrics::TransportMetrics;
pub use peer::{PeerCheck, PeerRejection};
pub use proxy_protocol::{
    Decoded, ProxyConfig, ProxyError, ProxyHeader, Rewind, conn_info, decode, encode_v2,
    read_header,
};

/// A bidirectional byte stream handed to the HTTP layer, whatever binding it came through.
///
/// A trait of its own (rather than spelling the bounds out) so that [`BoxedIo`] can erase the
/// concrete stream type: a TCP stream, a Unix stream, an HBONE tunnel, each possibly wrapped in
/// [`Rewind`].
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A type-erased inbound stream, as handed to a connection handler.
pub type BoxedIo = Box<dyn Io>;
