//! Entry points for the coverage-guided fuzz targets in `fuzz/`, behind the `fuzzing` feature.
//!
//! The fuzzers must exercise the very checks a peer's bytes meet, not a copy of them, yet those
//! checks are private: they belong to the transport, not to the API vendors build on. This
//! module is the narrow door between the two. Each function calls the real internal code and
//! adds nothing; it is hidden from the docs and compiled only when the fuzz crate asks for it.

use std::net::SocketAddr;

use crate::conn::ConnInfo;
use crate::identity::SpiffeId;
use crate::transport::hbone::HboneRejection;

/// The HBONE server's vetting of one stream's request head (method, `:authority`,
/// `forwarded`, `baggage`, `traceparent`), as `open_stream` runs it on every CONNECT.
pub fn hbone_connect<B>(
    req: &http::Request<B>,
    peer_addr: SocketAddr,
    peer_identity: &SpiffeId,
) -> Result<ConnInfo, HboneRejection> {
    crate::transport::hbone::vet_connect(req, peer_addr, peer_identity)
}
