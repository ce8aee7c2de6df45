//! Native HBONE, the ambient mesh tunnel: mutual TLS 1.3 with SPIFFE identities, then one
//! HTTP/2 `CONNECT` stream per tunnelled TCP connection (`docs/wire.md`).
//!
//! - [`server`]: [`HboneListener`], the inbound side on `:15008`. Each CONNECT stream becomes a
//!   [`BoxedIo`](crate::transport::BoxedIo) and a [`ConnInfo`](crate::conn::ConnInfo) for the
//!   same handler the sandwich listener feeds.
//! - [`stream`]: [`H2Stream`], one HTTP/2 stream as a byte stream, shared by the server and the
//!   upstream client.

pub mod server;
pub mod stream;

pub use server::{
    HboneListener, HboneOptions, HboneRejection, forwarded_for, is_valid_traceparent,
};
pub use stream::H2Stream;
