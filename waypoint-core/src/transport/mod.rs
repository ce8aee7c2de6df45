//! Inbound transports: how bytes reach the waypoint and what is known about their sender.
//!
//! Every binding ends in the same pair: a byte stream ([`BoxedIo`]) and a
//! [`ConnInfo`](crate::conn::ConnInfo), handed to the connection handler (the
//! [`Pipeline`](crate::pipeline::Pipeline)). Code after that point (HTTP serving, filters)
//! never learns which binding the bytes came through.
//!
//! Two bindings:
//! - the *sandwich*: a co-located ztunnel terminates HBONE, opens TCP to `127.0.0.1:15088` (or,
//!   as our extension, a Unix socket), writes a PROXY protocol v2 header whose TLVs carry the
//!   source identity (`0xD0`), the targeted service (`0xD1`) and optionally the source
//!   workload's metadata (`0xE0` by default), then copies the raw application bytes;
//! - native *HBONE* on `:15008`: mutual TLS and HTTP/2, one inbound connection per `CONNECT`.
//!
//! - [`listener`]: the one accept loop every binding runs, and [`ListenAddr`].
//! - `sandwich`: [`SandwichListener`] over TCP or a Unix socket (socket files, peer checks).
//! - [`hbone`]: the HBONE listener, [`HboneListener`](hbone::HboneListener).
//! - `proxy_header`: reading the PROXY header off a socket and mapping it to `ConnInfo` (the
//!   format itself is [`crate::wire::proxy_protocol`]).
//! - [`detect`]: HTTP or TCP, from a connection's first bytes (ports no protocol was named for).
//! - `rewind`: [`Rewind`], which replays bytes read past what was needed.
//! - `metrics`: [`TransportMetrics`], the accepted and rejected connection counters.
//! - `peer`: `PeerCheck`, who may connect to a Unix socket listener (`SO_PEERCRED`).

pub mod detect;
pub mod hbone;
pub mod listener;
pub(crate) mod metrics;
pub(crate) mod peer;
pub(crate) mod proxy_header;
pub(crate) mod rewind;
pub(crate) mod sandwich;

pub use crate::wire::{BoxedIo, Io};
pub use listener::{ListenAddr, ListenAddrError};
pub use metrics::TransportMetrics;
pub use proxy_header::{ProxyConfig, conn_info, read_header};
pub use rewind::Rewind;
pub use sandwich::{ListenerOptions, SandwichListener};
