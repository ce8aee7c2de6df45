//! The inbound HBONE binding: [`HboneListener`] on `:15008` terminates mutual TLS and HTTP/2
//! and turns each `CONNECT` stream into a [`BoxedIo`](crate::transport::BoxedIo) and a
//! [`ConnInfo`](crate::conn::ConnInfo) for the same accept loop and connection handler the
//! sandwich listener feeds. The wire facts it shares with the HBONE client (port, HTTP/2 bounds,
//! CONNECT headers, [`H2Stream`](crate::wire::hbone::H2Stream)) are [`crate::wire::hbone`].

mod connect;
pub(crate) mod server;

pub(crate) use connect::vet_connect;

pub use server::{HboneListener, HboneOptions, HboneRejection};
