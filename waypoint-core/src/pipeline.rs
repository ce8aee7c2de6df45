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
//!        │                 protocol of the destination (Config::protocol; detection when
//!        │                 no port named one) ── TCP / TLS passthrough ──▶ proxy_stream
//!        │                 (binding, run_connection, connect_stream, splice: see stream/)
//!        │ HTTP: count bytes → frontend TLS when the destination is an HTTPS listener
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
use crate::config::PortProtocol;
use crate::config::binding::{Destination, terminates_tls_for_bytes};
use crate::conn::ConnInfo;
use crate::filter::{ConnectionContext, ConnectionDecision, Decision, RequestContext};
use crate::flags::ResponseFlag;
use crate::http::upgrade::{Granted, close_after_answer};
use crate::http::{HttpServer, UpgradePolicy};
use crate::overload::{Overload, RequestGuard};
use crate::shutdown::Shutdown;
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::stream::hello::read_client_hello;
use crate::stream::splice::{SpliceEnd, splice};
use crate::stream::{StreamConfig, dialled_upstream};
use crate::telemetry::{RequestRecord, StreamEnd, Telemetry};
use crate::tls::frontend::accept;
use crate::transport::detect::{Detected, detect};
use crate::transport::{BoxedIo, Rewind};
use crate::upstream::{StreamUpstream, Upstream, UpstreamLease};

/// How long a client of an HTTPS listener may take to complete its TLS handshake, and a TLS
/// passthrough client to send its ClientHello.
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
    streams: StreamConfig,
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
            streams: StreamConfig::default(),
        }
    }

    /// The same pipeline with `streams`' protocol detection and TCP idle timeouts.
    pub fn with_streams(mut self, streams: StreamConfig) -> Self {
        self.streams = streams;
        self
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

    /// Serves one accepted connection until it ends, by the protocol its original destination
    /// selects ([`crate::config::Config::protocol`]): HTTP goes to [`Pipeline::serve_http`];
    /// TCP and TLS passthrough to [`Pipeline::proxy_stream`]; a port no protocol was named
    /// for first has its first bytes read ([`detect`]) and replayed to whichever serves it.
    /// `shutdown` is held until the connection ends, so a drain waits for it.
    ///
    /// A connection known to be HTTP is counted (`istio_tcp_*`) before the returned future is
    /// first polled: a transport that spawns the future (HBONE does, per stream) has it
    /// counted at once. Others are counted once their protocol, and for TCP their upstream,
    /// is known (see [`crate::telemetry`]), so no connection is counted twice.
    pub fn serve_connection(
        self: &Arc<Self>,
        io: BoxedIo,
        conn: ConnInfo,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + use<> {
        let pipeline = self.clone();
        let snapshot = self.store.load();
        let mut protocol = snapshot.config.protocol(conn.destination).kind;
        if protocol == PortProtocol::Detect && self.streams.detection_timeout.is_zero() {
            protocol = PortProtocol::Http;
        }
        let io: BoxedIo = match protocol {
            PortProtocol::Http => Box::new(self.telemetry.counted(io, &conn, &snapshot.config)),
            _ => io,
        };
        // Boxed: a `ConnInfo` is some 560 bytes, and each async layer that takes it by value
        // keeps a slot of its size for the connection's whole life (three here), idle or not.
        let conn = Box::new(conn);
        async move {
            let (io, protocol) = match protocol {
                PortProtocol::Detect => {
                    let mut io = io;
                    let (verdict, read) = detect(&mut io, pipeline.streams.detection_timeout).await;
                    let io = Rewind::new(read, io);
                    match verdict {
                        Detected::Http => {
                            let counted = pipeline.telemetry.counted(io, &conn, &snapshot.config);
                            (Box::new(counted) as BoxedIo, PortProtocol::Http)
                        }
                        Detected::Tcp => (Box::new(io) as BoxedIo, PortProtocol::Tcp),
                    }
                }
                other => (io, other),
            };
            match protocol {
                PortProtocol::Http => pipeline.serve_http(io, conn, snapshot, shutdown).await,
                _ => {
                    let _held = shutdown;
                    // Boxed: dialling and splicing would otherwise size every connection's
                    // task, HTTP ones included.
                    Box::pin(pipeline.proxy_stream(io, *conn, snapshot, protocol)).await
                }
            }
        }
    }

    /// Serves an HTTP connection: TLS first when the destination is an HTTPS listener, then
    /// every request on it goes to [`Pipeline::handle`].
    async fn serve_http(
        self: Arc<Self>,
        io: BoxedIo,
        mut conn: Box<ConnInfo>,
        snapshot: Arc<Snapshot>,
        shutdown: Shutdown,
    ) {
        // The server config comes from the same snapshot as the counting labels, so a reload
        // never mixes certificates within one connection.
        let frontend = conn
            .destination
            .and_then(|d| snapshot.config.frontend_tls.get(d).cloned());
        drop(snapshot);
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
        let http = self.http.clone();
        let pipeline = self;
        let handler = move |req, conn| {
            let pipeline = pipeline.clone();
            async move { pipeline.handle(req, conn).await }
        };
        http.serve(io, Arc::from(conn), handler, shutdown).await
    }

    // ---- Per proxied connection (TCP, TLS passthrough) ----------------------------------

    /// Proxies a connection as bytes: [`Pipeline::open_stream`] decides where they go (or
    /// refuses), then they are spliced until both sides end or the idle timeout, and the
    /// connection is recorded (metrics, access log line).
    async fn proxy_stream(
        &self,
        mut io: BoxedIo,
        conn: ConnInfo,
        snapshot: Arc<Snapshot>,
        protocol: PortProtocol,
    ) {
        let start_time = std::time::SystemTime::now();
        let mut ctx = ConnectionContext::new(Arc::new(conn), snapshot.config.clone(), protocol);
        // TLS passed through: the ClientHello's server name first (routes match it), its
        // bytes replayed upstream unchanged.
        let hello = match protocol {
            PortProtocol::Tls => {
                let (hello, read) = read_client_hello(&mut io, TLS_HANDSHAKE_TIMEOUT).await;
                io = Box::new(Rewind::new(read, io));
                hello.map(|h| ctx.sni = h.server_name)
            }
            _ => Ok(()),
        };
        let opened = match hello {
            Ok(()) => self.open_stream(&mut ctx, &snapshot).await,
            Err(reason) => Err(format!("no usable ClientHello: {reason}")),
        };
        // A spliced connection may last hours: it keeps its config (in `ctx`), not the chain.
        drop(snapshot);
        let endpoint = opened.as_ref().ok().map(|u| u.endpoint.clone());
        let labels = self.telemetry.stream_labels(&ctx, endpoint.as_ref());
        let client = self.telemetry.tcp_metrics().counted(io, &labels);
        let mut end = StreamEnd {
            start_time,
            upstream_host: endpoint.as_ref().map(|e| e.address),
            bytes_received: 0,
            bytes_sent: 0,
        };
        match opened {
            Err(reason) => {
                tracing::info!(
                    source = ?ctx.conn.source,
                    destination = ?ctx.conn.destination,
                    identity = ctx.conn.peer_identity.as_ref().map(|i| i.as_str()),
                    flags = ?ctx.response_flags,
                    "closing {} connection without forwarding: {reason}", ctx.protocol
                );
                // Recorded before the client sees the close, so whoever it tells finds the
                // decision counted.
                self.telemetry.record_stream(&ctx, &labels, end);
                drop(client);
            }
            Ok(upstream) => {
                let StreamUpstream { io, .. } = upstream;
                let spliced = splice(client, io, self.streams.idle_timeout).await;
                end.bytes_received = spliced.from_client;
                end.bytes_sent = spliced.to_client;
                let reason = match &spliced.end {
                    SpliceEnd::Closed => "closed".to_owned(),
                    SpliceEnd::IdleTimeout => format!(
                        "idle for {}ms (--tcp-idle-timeout)",
                        self.streams.idle_timeout.as_millis()
                    ),
                    SpliceEnd::Failed(why) => why.clone(),
                };
                tracing::debug!(
                    source = ?ctx.conn.source,
                    destination = ?ctx.conn.destination,
                    upstream = ?end.upstream_host,
                    received = end.bytes_received,
                    sent = end.bytes_sent,
                    %reason,
                    "{} connection ended", ctx.protocol
                );
                self.telemetry.record_stream(&ctx, &labels, end);
            }
        }
    }

    /// Where a proxied connection goes, or why it goes nowhere (the flag saying so is in
    /// `ctx`): binding, the filters' connection phase, the upstream the client dialled when no
    /// filter chose one, then a connected endpoint.
    async fn open_stream(
        &self,
        ctx: &mut ConnectionContext,
        snapshot: &Snapshot,
    ) -> Result<StreamUpstream, String> {
        let destination = ctx.conn.destination;
        // Binding first: traffic that is not this waypoint's reaches no filter and no backend.
        if ctx.config.binding().enforced()
            && let Destination::Unbound(why) = ctx.config.destination(destination)
        {
            self.telemetry.unbound_destination(why.reason());
            ctx.response_flags.push(ResponseFlag::NoRoute);
            return Err(format!("destination not served: {why}"));
        }
        if let Some(listener) = destination.and_then(|d| ctx.config.gateway_listener_at(d))
            && terminates_tls_for_bytes(listener)
        {
            ctx.response_flags.push(ResponseFlag::NoRoute);
            return Err(format!(
                "listener {:?} terminates TLS for TCP traffic, which is not supported \
                 (use tls.mode Passthrough, or an HTTPS listener)",
                listener.name
            ));
        }
        if let ConnectionDecision::Close(reason) = snapshot.chain.run_connection(ctx).await {
            return Err(reason);
        }
        if ctx.upstream.is_none() {
            ctx.upstream = dialled_upstream(ctx);
        }
        let Some(target) = ctx.upstream.clone() else {
            ctx.response_flags.push(ResponseFlag::NoRoute);
            return Err(match destination {
                Some(d) => format!("no route to {d}"),
                None => "no route: the connection has no known destination".to_owned(),
            });
        };
        self.upstream
            .connect_stream(&target.backend, &ctx.conn)
            .await
            .map_err(|e| {
                ctx.response_flags.push(e.flag);
                e.to_string()
            })
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
