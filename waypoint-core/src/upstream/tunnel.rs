//! Protocol upgrades carried through (a WebSocket, say): the backend's response decides whether
//! the exchange becomes a byte tunnel, and the tunnel copies bytes both ways until either side
//! closes.

use std::net::SocketAddr;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::balance::InFlight;
use super::lease::UpstreamLease;
use super::pool::Return;
use super::remove_hop_by_hop;
use crate::http::upgrade::switch_was_offered;

/// The client's side of a protocol switch it asked for: its connection once the response is
/// sent, and the protocols its `Upgrade` offered.
pub(super) struct DownstreamUpgrade {
    pub(super) on: OnUpgrade,
    pub(super) offered: Vec<String>,
}

/// The backend's response on its way out: an upgrade joined into a tunnel, hop-by-hop headers
/// removed, and the lease that keeps the endpoint counted busy (and holds the HTTP/1.1
/// connection) until the body is read.
///
/// A 101 becomes a tunnel only when the client asked to switch and the backend switched to a
/// protocol it offered; any other 101 is the reason in `Err`, and dropping the response closes
/// the backend connection (a switched connection never returns to the pool).
pub(super) fn finish(
    mut resp: Response<Incoming>,
    conn: Option<Return>,
    guard: InFlight,
    downstream_upgrade: Option<DownstreamUpgrade>,
    address: SocketAddr,
) -> Result<(Response<Incoming>, UpstreamLease), String> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let downstream = match downstream_upgrade {
            Some(d) => switch_was_offered(&d.offered, resp.headers()).map(|()| d.on)?,
            None => return Err("101 to a request that asked for no upgrade".to_owned()),
        };
        let upstream = hyper::upgrade::on(&mut resp);
        tunnel(downstream, upstream, address, guard);
        remove_hop_by_hop(resp.headers_mut(), true);
        return Ok((resp, UpstreamLease::default()));
    }
    remove_hop_by_hop(resp.headers_mut(), false);
    Ok((resp, UpstreamLease::new(conn, guard)))
}

/// Joins the two halves of an upgraded exchange (say, a WebSocket) once hyper hands them over,
/// and copies bytes both ways until either side closes. The request counts as in flight for the
/// tunnel's lifetime.
fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, endpoint: SocketAddr, guard: InFlight) {
    tokio::spawn(async move {
        let _guard = guard;
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "protocol upgrade failed");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((sent, received)) => {
                tracing::debug!(%endpoint, sent, received, "upgraded connection closed")
            }
            Err(e) => tracing::debug!(%endpoint, error = %e, "upgraded connection failed"),
        }
    });
}
