//! The spine: what happens to a connection once a transport accepted it, and to each request on
//! it, read top to bottom in this file.
//!
//! A request crosses five files; each arrow below is one call:
//!
//! ```text
//!  transport/listener.rs   accept loop, one for every binding
//!        │                 (sandwich: PROXY header over TCP or a Unix socket;
//!        │                  HBONE: one per CONNECT stream)
//!        │ (BoxedIo, ConnInfo)
//!        ▼
//!  pipeline.rs             Pipeline::serve_connection
//!        │                 count bytes → frontend TLS when the destination is an HTTPS listener
//!        ▼
//!  http/server.rs          HttpServer::serve: HTTP/1.1 or h2c, drain, memory watermark
//!        │ one call per request
//!        ▼
//!  pipeline.rs             Pipeline::handle
//!        │                 snapshot → trace context → binding check → upgrade policy
//!        │                 → overload limits (in-flight slot, body size)
//!        ▼
//!  filter/mod.rs           FilterChain::run_request   (a filter may answer: Respond)
//!        ▼
//!  upstream/mod.rs         Upstream::forward: endpoint choice, pools, tries, mirrors
//!        ▼
//!  filter/mod.rs           FilterChain::run_response
//!        ▼
//!  pipeline.rs             complete: one Completion rides on the response body; when the
//!                          body ends it releases the upstream lease, records metrics and
//!                          the access log, runs the filters' on_finished, frees the slot
//! ```
//!
//! Why one file: the per-connection glue used to be a closure in the runtime's assembly code
//! and the per-request work a `Proxy` type elsewhere, so following a request meant jumping
//! between assembly and serving. Here the order of the steps *is* the order of the code;
//! [`crate::runtime`] only builds a [`Pipeline`] and hands it to the listeners, and
//! [`HttpServer`] knows nothing of it beyond the request handler it is given.
//!
//! Every request loads one [`Snapshot`] and is served with it start
//! to finish, so a reload never changes a request in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use hyper::body::Incoming;

use crate::body::{self, Body, local_reply};
use crate::completion::Completion;
use crate::config::binding::Destination;
use crate::conn::ConnInfo;
use crate::filter::{Decision, RequestContext};
use crate::flags::ResponseFlag;
use crate::http::upgrade::{Granted, close_after_answer};
use crate::http::{HttpServer, UpgradePolicy};
use crate::overload::{Overload, RequestGuard};
use crate::shutdown::Shutdown;
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::telemetry::{RequestRecord, Telemetry};
use crate::tls::frontend::accept;
use crate::transport::BoxedIo;
use crate::upstream::{Upstream, UpstreamLease};

/// How long a client of an HTTPS listener may take to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The request path of a running waypoint: serves the connections every listener accepts and
/// the requests on them, with the snapshot store's chain and the upstream, observed by
/// telemetry. Upgrades and `CONNECT` are decided by an `UpgradePolicy` first (see
/// `http/upgrade.rs`): a refused one never reaches the chain or a backend.
#[derive(Debug)]
pub struct Pipeline {
    store: Arc<SnapshotStore>,
    upstream: Arc<Upstream>,
    telemetry: Telemetry,
    http: HttpServer,
    upgrades: UpgradePolicy,
    overload: Option<Arc<Overload>>,
}

impl Pipeline {
    /// A pipeline reading snapshots from `store`, serving HTTP with `http`, forwarding with
    /// `upstream`, and recording metrics, access logs and trace context with `telemetry`.
    /// Upgrades: WebSocket only.
    pub fn new(
        store: Arc<SnapshotStore>,
        http: HttpServer,
        upstream: Arc<Upstream>,
        telemetry: Telemetry,
    ) -> Self {
        Pipeline {
            store,
            upstream,
            telemetry,
            http,
            upgrades: UpgradePolicy::default(),
            overload: None,
        }
    }

    /// The same pipeline deciding upgrades with `policy`.
    pub(crate) fn with_upgrade_policy(mut self, policy: UpgradePolicy) -> Self {
        self.upgrades = policy;
        self
    }

    /// Applies `overload`'s request limits: over the in-flight limit a request is answered 503
    /// `overloaded` with response flag `OM`; a body over the size limit 413.
    pub fn with_overload(mut self, overload: Arc<Overload>) -> Self {
        self.overload = Some(overload);
        self
    }

    /// The snapshot store.
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    // ---- Per connection -------------------------------------------------------------------

    /// Serves one accepted connection until it ends: its bytes are counted, a destination that
    /// is an HTTPS listener gets TLS first, then every request on it goes to
    /// [`Pipeline::handle`]. `shutdown` is held until the connection ends, so a drain waits
    /// for it.
    ///
    /// The counting and the TLS lookup happen before the returned future is first polled: a
    /// transport that spawns the future (HBONE does, per stream) has the connection counted
    /// at once.
    pub fn serve_connection(
        self: &Arc<Self>,
        io: BoxedIo,
        mut conn: ConnInfo,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + use<> {
        let pipeline = self.clone();
        let config = self.store.load().config.clone();
        let io: BoxedIo = Box::new(self.telemetry.counted(io, &conn, &config));
        // The server config comes from the same snapshot as the counting labels, so a reload
        // never mixes certificates within one connection.
        let frontend = conn
            .destination
            .and_then(|d| config.frontend_tls.get(d).cloned());
        async move {
            let io: BoxedIo = match frontend {
                None => io,
                // Boxed: the handshake future is larger than the HTTP server's, and inline it
                // would size every connection's task, TLS or not.
                Some(tls) => match Box::pin(accept(io, tls, TLS_HANDSHAKE_TIMEOUT)).await {
                    Ok((io, info)) => {
                        conn.tls = Some(info);
                        Box::new(io)
                    }
                    Err(error) => {
                        tracing::warn!(source = ?conn.source, destination = ?conn.destination,
                            %error, "closing connection: TLS handshake with the client failed");
                        return;
                    }
                },
            };
            let http = pipeline.http.clone();
            let handler = move |req, conn| {
                let pipeline = pipeline.clone();
                async move { pipeline.handle(req, conn).await }
            };
            http.serve(io, Arc::new(conn), handler, shutdown).await
        }
    }

    // ---- Per request ----------------------------------------------------------------------

    /// Serves one request that arrived on `conn`: binding check, upgrade policy, overload
    /// limits, the chain and the upstream, then `complete`.
    pub async fn handle(
        &self,
        req: hyper::Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> http::Response<Body> {
        let snapshot = self.store.load();
        let mut req = req.map(body::boxed);
        // Before the chain, so filters and the upstream see the propagated trace context.
        let record = self.telemetry.begin(&mut req, &conn);
        let mut ctx = RequestContext::new(conn, snapshot.config.clone());
        // Binding first: traffic that is not this waypoint's reaches no filter and no backend.
        if let Some(resp) = self.refuse_unbound(&mut ctx) {
            return self.complete(resp, record, ctx, snapshot, UpstreamLease::default(), None);
        }
        // Upgrades next: a refused one never takes an in-flight slot.
        let granted = match self.upgrades.admit(&mut req, &ctx.conn) {
            Ok(granted) => granted,
            Err(refused) => {
                close_after_answer(&mut req);
                let resp = refused.into_response();
                return self.complete(resp, record, ctx, snapshot, UpstreamLease::default(), None);
            }
        };
        let limits = self.overload.as_deref().map(Overload::requests);
        let in_flight = match limits.map(|l| l.begin()).transpose() {
            Ok(guard) => guard.flatten(),
            Err(()) => {
                ctx.response_flags.push(ResponseFlag::OverloadManager);
                let resp = local_reply(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
                return self.complete(resp, record, ctx, snapshot, UpstreamLease::default(), None);
            }
        };
        let (resp, lease) = match limits.map(|l| l.limit_body(&mut req)).transpose() {
            Err(too_large) => {
                let resp = local_reply(StatusCode::PAYLOAD_TOO_LARGE, too_large.to_string());
                (resp, UpstreamLease::default())
            }
            Ok(trip) => {
                let served = self
                    .filter_and_forward(&snapshot, req, &mut ctx, granted.as_ref())
                    .await;
                // The upstream saw an aborted request; its answer (or our 502) is not the
                // client's: the client sent too much. (Its lease goes: the connection closes.)
                match trip.flatten() {
                    Some(trip) if trip.tripped() => {
                        let message = "request body over the size limit";
                        let resp = local_reply(StatusCode::PAYLOAD_TOO_LARGE, message);
                        (resp, UpstreamLease::default())
                    }
                    _ => served,
                }
            }
        };
        tracing::debug!(
            source = ?ctx.conn.source,
            destination = ?ctx.conn.destination,
            identity = ctx.conn.peer_identity.as_ref().map(|i| i.as_str()),
            status = resp.status().as_u16(),
            flags = ?ctx.response_flags,
            elapsed_us = ctx.started.elapsed().as_micros() as u64,
            "request"
        );
        self.complete(resp, record, ctx, snapshot, lease, in_flight)
    }

    /// With binding enforced (`--gateway`), the answer to a request whose destination is not
    /// bound to this waypoint: 404 with response flag `NR` (Envoy's "no route"), naming the
    /// reason (every request of the connection gets the same answer: its destination does not
    /// change). Istio's Envoy waypoint has no filter chain for such a destination and resets
    /// the connection without a word; an HTTP answer says why while forwarding nothing, and
    /// never dials a Service VIP (which would loop back here).
    fn refuse_unbound(&self, ctx: &mut RequestContext) -> Option<http::Response<Body>> {
        if !ctx.config.binding().enforced() {
            return None;
        }
        let Destination::Unbound(why) = ctx.config.destination(ctx.conn.destination) else {
            return None;
        };
        self.telemetry.unbound_destination(why.reason());
        tracing::info!(
            source = ?ctx.conn.source,
            destination = ?ctx.conn.destination,
            reason = why.reason(),
            "refused: {why}"
        );
        ctx.response_flags.push(ResponseFlag::NoRoute);
        Some(local_reply(
            StatusCode::NOT_FOUND,
            format!("waypoint: destination not served: {why}"),
        ))
    }

    /// The request chain, then the upstream when no filter answered, then the response chain.
    async fn filter_and_forward(
        &self,
        snapshot: &Snapshot,
        mut req: http::Request<Body>,
        ctx: &mut RequestContext,
        granted: Option<&Granted>,
    ) -> (http::Response<Body>, UpstreamLease) {
        match snapshot.chain.run_request(&mut req, ctx).await {
            Decision::Respond(resp) => (resp, UpstreamLease::default()),
            Decision::Continue => {
                self.upgrades.recheck(&mut req, &ctx.conn);
                let (mut resp, lease) = self.upstream.forward_leased(req, ctx).await;
                if ctx
                    .response_flags
                    .contains(&ResponseFlag::UpstreamProtocolError)
                {
                    self.upgrades.backend_error(granted);
                }
                snapshot.chain.run_response(&mut resp, ctx).await;
                (resp, lease)
            }
        }
    }

    // ---- Completion -----------------------------------------------------------------------

    /// The last step of every request, answered by us or by a backend: `resp` leaves with the
    /// request's one completion (see [`crate::completion`] for what it does and in which
    /// order): when its body ends or is dropped, the upstream lease is released, telemetry
    /// records the request, the filters' end-of-request phase runs and the in-flight slot is
    /// given back.
    fn complete(
        &self,
        resp: http::Response<Body>,
        record: RequestRecord,
        ctx: RequestContext,
        snapshot: Arc<Snapshot>,
        lease: UpstreamLease,
        slot: Option<RequestGuard>,
    ) -> http::Response<Body> {
        let completion = Completion {
            record: self.telemetry.pending(record, &ctx, &resp),
            status: resp.status(),
            lease,
            ctx,
            snapshot,
            slot,
        };
        resp.map(|body| body::watch(body, completion))
    }
}
