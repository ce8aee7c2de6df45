//! Forwarding to the chosen backend's endpoints over pooled connections.
//!
//! Routing records an [`UpstreamTarget`] in the request context; [`Upstream::forward`] picks an
//! endpoint (by the backend's DestinationRule `loadBalancer`, least request by default: see
//! `balance`), rewrites the request for it, sends it over a pooled connection (HTTP/1.1, or
//! HTTP/2 with prior knowledge for h2c backends), and streams the response back. Every failure is a local reply with the status Envoy would give
//! and its response flag in the context:
//!
//! | case | status | flag |
//! |---|---|---|
//! | no upstream chosen | 404 | `NR` |
//! | backend without ready endpoints, or all of them ejected by outlier detection | 503 | `UH` |
//! | a circuit breaker of the backend (DestinationRule `connectionPool`, see `limits`) refused it | 503 | `UO` |
//! | connect refused / timed out, reset before response headers | 503 | `UF` |
//! | HBONE: TLS failure, server identity not the expected one, CONNECT answered non-200 | 503 | `UF` |
//! | no response headers within the timeout | 504 | `UT` |
//! | retries exhausted (with the flag of the last try's failure, if any) | last try's | `URX` |
//! | request body failed while being kept for retries or mirrors | 400 | `DPE` |
//! | backend answered 101 to a request that asked for no upgrade, or to another protocol | 502 | `UPE` |
//!
//! # Timeouts and retries
//!
//! The request timeout ([`UpstreamTarget::request_timeout`], else
//! [`UpstreamConfig::request_timeout`]) runs from the start of forwarding until response
//! headers, over every try together; the backend timeout bounds each try. A try whose status is
//! in the target's [`RetryPolicy`] codes, whose connection failed before response headers, or
//! whose backend timeout expired is tried again, up to `attempts` more times, each after
//! `backoff` and on another endpoint where the backend has one. The client gets the last try's
//! response; if the request timeout ends first (during a try or a backoff) it gets 504.
//!
//! # Mirrors
//!
//! Each [`MirrorTarget`] of the target, when its sample draw says so, gets a copy of the request
//! as forwarded (after every filter ran) at one endpoint of its backend, over the same pools and
//! transports. The copy is sent from a task of its own: its response is read and dropped, its
//! failures are counted ([`Upstream::stats`]) and logged at debug level, and it never delays or
//! fails the request it copies. It is bounded by the request's own timeouts (15 s when it has
//! none), and at most [`UpstreamConfig::max_mirrors_in_flight`] copies are in flight; beyond
//! that copies are dropped and counted.
//!
//! # Which requests are sent more than once
//!
//! Retries and mirrors need the request body more than once, so it is kept in memory only
//! when its length is known up front (`Content-Length`, or a body a filter set) and at most
//! [`UpstreamConfig::max_replay_body`] (64 KiB by default): read once, then shared by every
//! try and copy. A larger body or one of unknown length (chunked, most gRPC streams) streams
//! to the backend once as usual: it is **not retried**, and its mirrors are **skipped**
//! (counted, not sent with an empty body, which would mislead the mirror). Protocol upgrades
//! are neither retried nor mirrored.
//!
//! The waypoint is transparent: it removes hop-by-hop headers (`remove_hop_by_hop`) and adds
//! none. A WebSocket-style upgrade to an HTTP/1.1 backend is carried through as a byte tunnel,
//! but only when the backend's `101` names a protocol the request offered; any other `101` is a
//! backend error and the backend connection is closed (which upgrades get this far at all is
//! the listeners' `UpgradePolicy`).
//!
//! # Transports
//!
//! The HTTP connections to an endpoint run over one of three byte streams, chosen per endpoint
//! by [`UpstreamMode`] and the endpoint's [`EndpointTransport`]:
//!
//! - **Plain TCP** to the endpoint (pod) address. The default, [`UpstreamMode::Plain`], is what
//!   a *sandwiched* waypoint needs: the ztunnel in the waypoint's own pod captures the
//!   connection and sends it on as HBONE, recognising the waypoint's traffic. A Service VIP is
//!   never dialled (that would loop back to the waypoint); only endpoint addresses are.
//! - **HBONE** ([`HbonePool`]): mTLS HTTP/2 to `<endpoint ip>:15008`, one `CONNECT` per
//!   connection with `:authority` = `<endpoint ip>:<target port>` and the `baggage`,
//!   `forwarded` and `traceparent` headers ztunnel itself sends, naming the original client. The
//!   server must present the endpoint's expected identity. [`UpstreamMode::Auto`] uses it for
//!   endpoints in the mesh when the waypoint has a workload certificate
//!   ([`Upstream::with_certs`]), plain TCP otherwise: a waypoint that terminates HBONE itself.
//! - **The co-located ztunnel's Unix socket** ([`UpstreamMode::ZtunnelUnix`]), for every
//!   endpoint. *Our extension*, not something a stock ztunnel offers: the waypoint connects to
//!   the socket and writes a PROXY protocol v2 header (command PROXY, TCP over IPv4 or IPv6)
//!   whose source is the original client (or the waypoint itself, port 0, when unknown) and
//!   whose destination is the endpoint `ip:port`, with TLV `0xD0` = the waypoint's own SPIFFE
//!   identity when it has a certificate; then the HTTP bytes. The ztunnel decides how to reach
//!   the endpoint.
//!
//! Tunnels carry their client in their headers, so HTTP connections over a tunnel are pooled
//! per (endpoint, client address, client metadata): a pooled connection never speaks for
//! another client. Plain TCP connections are pooled per endpoint alone.
//!
//! # Where things are
//!
//! Every method of [`Upstream`] is in this file: forwarding, tries, mirrors. Around it:
//! `balance` (endpoint choice; `hash` and `hash_key` for consistent hashing), `budget`
//! (timeouts over tries), `rewrite` (the request as the
//! endpoint gets it), `pool` (HTTP connections) over `dial` (the byte stream of a
//! `DialPath`) and `hbone` (the HBONE client), `limits` (each backend's circuit breakers and
//! connection settings from its DestinationRule), `tunnel` (upgrades), `failure` (local replies
//! and error descriptions), `lease` (what a request holds until its response body ends:
//! `Upstream::forward_leased` hands it to the caller's completion instead of wrapping the
//! body), `replay`, `mirror` and `metrics` (bookkeeping), `config` (the settings), `outlier`
//! (the DestinationRule's `outlierDetection`: every try's outcome is reported to it, and the
//! endpoints it ejected are left out of the list the balancer picks from).

mod balance;
mod budget;
mod config;
mod dial;
mod failure;
mod hash;
mod hash_key;
mod hbone;
mod hop;
mod lease;
mod limits;
mod metrics;
mod mirror;
mod origination;
mod outlier;
mod pool;
mod replay;
mod rewrite;
mod stream;
mod tunnel;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;

pub use config::{UpstreamConfig, UpstreamMode};
pub use dial::TunnelSource;
pub use hbone::{HBONE_PORT, HboneClientOptions, HboneError, HbonePool, HboneStream};
pub(crate) use hop::{HTTP2_SETTINGS, tokens as header_tokens};
pub(crate) use hop::{is_upgrade, remove_hop_by_hop};
pub(crate) use lease::UpstreamLease;
pub(crate) use metrics::{PoolCollector, PoolSizes};
pub use mirror::UpstreamStats;
pub(crate) use origination::{Origination, OriginationSpec, SecretScope};
pub(crate) use outlier::BackendView as OutlierView;
pub(crate) use stream::StreamUpstream;

use crate::body::{self, Body, local_reply};
use crate::config::{AppProtocol, Endpoint, EndpointTransport, ServiceBackend};
use crate::conn::ConnInfo;
use crate::filter::{MirrorTarget, RequestContext, RetryPolicy, UpstreamTarget};
use crate::flags::ResponseFlag;
use crate::tls::CertStore;
use balance::{Balancers, Choice, InFlight};
use budget::{Budget, Expiry};
use dial::{DialPath, Dialer};
use limits::{BackendLimits, Breakers, Limit};
use mirror::{Counters, Slot};
use outlier::{Outliers, TryOutcome};
use pool::{HttpPool, SendError};
use replay::Replay;
use tunnel::DownstreamUpgrade;

/// How long a mirrored copy may take when the request it copies has no timeout at all.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

/// The upstream connector: connection pools to every endpoint, shared by all requests. Build
/// one per process and share it (in an `Arc`); config reloads do not touch it, so pooled
/// connections survive them.
pub struct Upstream {
    cfg: UpstreamConfig,
    pool: Arc<HttpPool>,
    counters: Arc<Counters>,
    /// Every backend's balancer state (DestinationRule `loadBalancer`): round-robin turns and
    /// hash tables, kept here so they survive reloads.
    balancers: Balancers,
    /// Every backend's circuit breakers (DestinationRule `connectionPool`): kept here, not in
    /// the config, so they survive reloads.
    breakers: Breakers,
    /// Every backend's outlier detection state (DestinationRule `outlierDetection`), kept
    /// here for the same reason.
    outliers: Outliers,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("cfg", &self.cfg).finish()
    }
}

impl Upstream {
    /// Builds the connector with `cfg` and no workload certificate (so no HBONE). Needs a Tokio
    /// runtime only once requests are sent.
    pub fn new(cfg: UpstreamConfig) -> Self {
        Self::with_certs(cfg, None)
    }

    /// Builds the connector with `cfg` and, when given, the waypoint's workload certificates:
    /// the client identity of HBONE connections ([`UpstreamMode::Auto`]) and the identity named
    /// to a co-located ztunnel ([`UpstreamMode::ZtunnelUnix`]).
    pub fn with_certs(cfg: UpstreamConfig, certs: Option<Arc<CertStore>>) -> Self {
        let hbone = match (&cfg.mode, &certs) {
            (UpstreamMode::Auto, Some(certs)) => {
                let mut opts = cfg.hbone.clone();
                opts.connect_timeout = opts.connect_timeout.min(cfg.connect_timeout);
                Some(HbonePool::new(certs.clone(), opts))
            }
            _ => None,
        };
        let ztunnel = match &cfg.mode {
            UpstreamMode::ZtunnelUnix(path) => Some(path.clone()),
            _ => None,
        };
        let dialer = Dialer {
            connect_timeout: cfg.connect_timeout,
            hbone,
            ztunnel,
            certs,
            own_ip: cfg.own_ip,
        };
        Upstream {
            pool: HttpPool::new(dialer, &cfg),
            cfg,
            counters: Arc::default(),
            balancers: Balancers::default(),
            breakers: Breakers::default(),
            outliers: Outliers::default(),
        }
    }

    /// The settings this connector was built with.
    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// The HBONE connection pool, when this connector sends HBONE.
    pub fn hbone_pool(&self) -> Option<&Arc<HbonePool>> {
        self.pool.dialer().hbone.as_ref()
    }

    /// How many connections the pools hold now.
    pub(crate) fn pool_sizes(&self) -> PoolSizes {
        let (http1_idle, http2) = self.pool.sizes();
        PoolSizes {
            http1_idle,
            http2,
            hbone: self.hbone_pool().map_or(0, |p| p.connections()),
        }
    }

    /// Mirror and retry counts since this connector was built.
    pub fn stats(&self) -> UpstreamStats {
        self.counters.snapshot()
    }

    /// Outlier detection's state of every backend that has had it, for the admin server.
    pub(crate) fn outlier_views(&self) -> Vec<OutlierView> {
        self.outliers.views(Instant::now())
    }

    /// Forwards `req` to an endpoint of `ctx.upstream` and returns the backend's response, its
    /// body streaming. Failures become local replies (see the module documentation) with their
    /// response flag pushed to `ctx.response_flags`. The body keeps the endpoint counted busy
    /// (and its HTTP/1.1 connection out of the pool) until it ends or is dropped.
    pub async fn forward(&self, req: Request<Body>, ctx: &mut RequestContext) -> Response<Body> {
        let (resp, lease) = self.forward_leased(req, ctx).await;
        resp.map(|body| body::watch(body, lease))
    }

    /// [`Upstream::forward`], with the response body as the backend sends it and the
    /// [`UpstreamLease`] apart: the caller releases it when the body it sends on ends (the
    /// pipeline's completion does, with the rest of the end-of-request work).
    pub(crate) async fn forward_leased(
        &self,
        mut req: Request<Body>,
        ctx: &mut RequestContext,
    ) -> (Response<Body>, UpstreamLease) {
        let local = |resp| (resp, UpstreamLease::default());
        let Some(target) = ctx.upstream.clone() else {
            ctx.response_flags.push(ResponseFlag::NoRoute);
            let message = match ctx.conn.destination {
                Some(dest) => format!("no route to {dest}"),
                None => "no route: the connection has no known destination".to_owned(),
            };
            return local(local_reply(StatusCode::NOT_FOUND, message));
        };
        let backend = &target.backend;
        if let Some(rule) = &backend.policy.tls_refused_by {
            return local(failure::tls_rule_refused(ctx, backend, rule));
        }
        if backend.endpoints.is_empty() {
            return local(failure::no_healthy_upstream(ctx, backend));
        }
        let budget = Budget::new(&target, &self.cfg);

        // Only HTTP/1.1 can switch protocols in place; toward an h2c backend the upgrade headers
        // are plain hop-by-hop headers and go.
        let upgrade = backend.protocol.upstream == AppProtocol::Http1
            && req.version() <= Version::HTTP_11
            && is_upgrade(req.headers());
        // Taken before the request leaves: the handle on the downstream connection lives in the
        // request's extensions. The offered protocols bound what the backend may switch to.
        let downstream_upgrade = upgrade.then(|| DownstreamUpgrade {
            offered: header_tokens(req.headers(), &http::header::UPGRADE).collect(),
            on: hyper::upgrade::on(&mut req),
        });

        // Retries and mirrors send the request more than once: keep it whole if it is small.
        // An upgrade is a connection, not a request to repeat.
        let mirrors: Vec<&MirrorTarget> = match upgrade {
            true => Vec::new(),
            false => target.mirrors.iter().filter(|m| m.sample()).collect(),
        };
        let replay = if !upgrade && (target.retry.is_some() || !mirrors.is_empty()) {
            match budget
                .bound(Replay::keep(&mut req, self.cfg.max_replay_body))
                .await
            {
                Ok(Ok(replay)) => replay,
                Ok(Err(e)) => return local(failure::body_unreadable(ctx, &e)),
                Err(limit) => return local(failure::body_too_slow(ctx, limit)),
            }
        } else {
            None
        };
        for mirror in mirrors {
            let limit = budget.mirror_limit(MIRROR_TIMEOUT);
            self.mirror(mirror, replay.as_ref(), &ctx.conn, limit);
        }

        let choice = self.balancers.for_request(&target.backend, &req, &ctx.conn);
        let out = Outgoing {
            first: req,
            replay: replay.as_ref(),
            upgrade,
            downstream_upgrade,
            choice,
        };
        self.send_tries(out, &target, &budget, ctx).await
    }

    /// Sends `out` to endpoints of `target`, trying again as its retry policy allows (only when
    /// the request was kept whole), and returns the last try's response or a local reply.
    async fn send_tries(
        &self,
        out: Outgoing<'_>,
        target: &UpstreamTarget,
        budget: &Budget,
        ctx: &mut RequestContext,
    ) -> (Response<Body>, UpstreamLease) {
        let local = |resp| (resp, UpstreamLease::default());
        let backend = &target.backend;
        let policy = target.retry.as_deref().filter(|_| out.replay.is_some());
        let Outgoing {
            first,
            replay,
            upgrade,
            mut downstream_upgrade,
            choice,
        } = out;
        let mut next = Some(first);
        let mut retries = 0u32;
        let mut last = None;
        let limits = self.limits_of(backend);
        // The retry in flight holds a unit of the backend's `maxRetries` until it is answered.
        let mut _retrying = None;
        let outlier = outlier::settings_of(backend);
        loop {
            let Some(mut req) = next.take().or_else(|| replay.map(Replay::request)) else {
                // Unreachable: a policy needs a kept request. Answer rather than panic.
                let resp = local_reply(StatusCode::INTERNAL_SERVER_ERROR, "retry without a copy");
                return local(resp);
            };
            // Ejected endpoints are left out before the balancer sees the list.
            let endpoints = self
                .outliers
                .eligible(backend, outlier.as_ref(), Instant::now());
            let Some(endpoint) = choice.pick(&endpoints, last) else {
                return local(failure::no_healthy_upstream(ctx, backend));
            };
            let address = endpoint.address;
            ctx.endpoint = Some(endpoint.clone());
            let guard = InFlight::start(&endpoint.stats);
            // The host names the TLS server only when the backend originates TLS; copied (the
            // request changes below) only then.
            let host = backend
                .policy
                .tls
                .as_ref()
                .and_then(|_| origination::request_host(&req).map(str::to_owned));
            let path = origination::conn_target(
                self.dial_path(endpoint, &ctx.conn),
                backend,
                host.as_deref(),
            );
            rewrite::prepare(&mut req, address, backend.protocol.upstream, upgrade);

            let Some(request_slot) = limits.take_or_overflow(Limit::Requests) else {
                return local(failure::overflow(ctx, backend, Limit::Requests));
            };
            let limit = budget.next_try();
            let exchange = self
                .pool
                .send(backend.protocol.upstream, path, req, &limits);
            let mut result = match limit {
                Some((limit, _)) => tokio::time::timeout(limit, exchange).await.ok(),
                None => Some(exchange.await),
            };
            if let Some(Ok((resp, _))) = &mut result {
                choice.mark(resp);
            }
            let may_retry = policy.filter(|p| retries < p.attempts);
            // A retry this try calls for needs a unit of the backend's `maxRetries`; without
            // one it is not sent and the try's own answer stands.
            let wants_retry = may_retry.is_some()
                && match &result {
                    Some(Ok((resp, _))) => {
                        may_retry.is_some_and(|p| p.retries_status(resp.status()))
                    }
                    Some(Err(SendError::Failed(_))) => true,
                    Some(Err(SendError::Overflow(_))) => false,
                    None => matches!(limit, Some((_, Expiry::Try(_)))),
                };
            let retry_slot = wants_retry
                .then(|| limits.take_or_overflow(Limit::Retries))
                .flatten();
            let may_retry = may_retry.filter(|_| !wants_retry || retry_slot.is_some());
            // A refusal by the backend's own circuit breaker says nothing about the endpoint.
            if !matches!(result, Some(Err(SendError::Overflow(_)))) {
                let outcome = TryOutcome::from_result(&result);
                self.outliers
                    .record(backend, outlier.as_ref(), address, outcome);
            }
            let why = match result {
                Some(Ok((resp, conn))) => match may_retry {
                    Some(p) if p.retries_status(resp.status()) => {
                        let why = format!("status {}", resp.status());
                        failure::discard(resp, conn);
                        why
                    }
                    _ => {
                        if retries > 0 && policy.is_some_and(|p| p.retries_status(resp.status())) {
                            ctx.response_flags
                                .push(ResponseFlag::UpstreamRetryLimitExceeded);
                        }
                        let upgrade = downstream_upgrade.take();
                        return match tunnel::finish(resp, conn, guard, upgrade, address) {
                            Ok((resp, lease)) => {
                                (resp.map(body::boxed), lease.holding(request_slot))
                            }
                            Err(reason) => {
                                local(failure::unexpected_switch(ctx, backend, address, &reason))
                            }
                        };
                    }
                },
                Some(Err(SendError::Overflow(limit))) => {
                    return local(failure::overflow(ctx, backend, limit));
                }
                Some(Err(SendError::Failed(reason))) => {
                    if may_retry.is_none() {
                        let retried = retries > 0;
                        return local(failure::connect_failed(
                            ctx, backend, address, &reason, retried,
                        ));
                    }
                    reason
                }
                None => {
                    let expiry = match limit {
                        Some((_, expiry)) => expiry,
                        None => Expiry::Request(Duration::ZERO),
                    };
                    match (expiry, may_retry) {
                        (Expiry::Try(_), Some(_)) => "backend timeout".to_owned(),
                        (Expiry::Try(d) | Expiry::Request(d), _) => {
                            let retried = retries > 0;
                            return local(failure::timed_out(ctx, backend, address, d, retried));
                        }
                    }
                }
            };
            drop(guard);
            drop(request_slot);
            _retrying = retry_slot;
            retries += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let backoff = may_retry.map_or(RetryPolicy::DEFAULT_BACKOFF, |p| p.backoff);
            tracing::debug!(
                endpoint = %address,
                service = %failure::service_name(backend),
                retry = retries,
                reason = %why,
                backoff_ms = backoff.as_millis() as u64,
                "retrying upstream request"
            );
            if !budget.back_off(backoff).await {
                let limit = budget.request.unwrap_or_default();
                return local(failure::timed_out(ctx, backend, address, limit, true));
            }
            last = Some(address);
        }
    }

    /// Sends a copy of the kept request to one endpoint of `mirror`, in the background, for at
    /// most `limit`, so it never delays or fails the request it copies; its response is read
    /// and dropped. Copies in flight are bounded; beyond the bound they are dropped and counted. Without a kept request (its body too large or of unknown length) the
    /// copy is skipped.
    fn mirror(
        &self,
        mirror: &MirrorTarget,
        replay: Option<&Replay>,
        conn: &ConnInfo,
        limit: Duration,
    ) {
        let counters = &self.counters;
        let backend = &mirror.backend;
        if backend.policy.tls_refused_by.is_some() {
            // Never in plain text what a refused rule meant to encrypt (see `forward_leased`).
            counters.mirrors_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(replay) = replay else {
            counters.mirrors_skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(mirror = %failure::service_name(backend), "mirror skipped: request body not kept");
            return;
        };
        let Some(slot) = Slot::take(counters, self.cfg.max_mirrors_in_flight) else {
            counters.mirrors_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(mirror = %failure::service_name(backend), "mirror dropped: too many in flight");
            return;
        };
        let mut req = replay.request();
        let choice = self.balancers.for_request(backend, &req, conn);
        let Some(endpoint) = choice.pick(&backend.endpoints, None) else {
            counters.mirrors_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(mirror = %failure::service_name(backend), "mirror failed: no healthy upstream");
            return;
        };
        let address = endpoint.address;
        let protocol = backend.protocol.upstream;
        rewrite::prepare(&mut req, address, protocol, false);
        let host = origination::request_host(&req).map(str::to_owned);
        let path =
            origination::conn_target(self.dial_path(endpoint, conn), backend, host.as_deref());
        let guard = InFlight::start(&endpoint.stats);
        let pool = self.pool.clone();
        // A copy is a request to the mirror's backend: it counts against that backend's limits.
        let limits = self.limits_of(backend);
        tokio::spawn(async move {
            let _guard = guard;
            let exchange = async {
                let _request = limits
                    .take_or_overflow(Limit::Requests)
                    .ok_or_else(|| SendError::Overflow(Limit::Requests).to_string())?;
                let (resp, conn) = pool
                    .send(protocol, path, req, &limits)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                // Read to the end so the connection can serve again.
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| failure::describe(&e))?;
                if let Some(conn) = conn {
                    conn.give_back();
                }
                Ok::<_, String>(status)
            };
            let outcome = match tokio::time::timeout(limit, exchange).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("timeout after {}ms", limit.as_millis())),
            };
            let counters = &slot.0;
            match outcome {
                Ok(status) => {
                    counters.mirrors_sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %address, status = status.as_u16(), "mirror answered");
                }
                Err(reason) => {
                    counters.mirrors_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %address, %reason, "mirror failed");
                }
            }
        });
    }

    /// The circuit breakers of `backend` and the limits its DestinationRule sets now.
    fn limits_of(&self, backend: &ServiceBackend) -> BackendLimits {
        BackendLimits {
            breaker: self.breakers.of(backend),
            limits: limits::of_backend(backend),
        }
    }

    /// How to reach `endpoint` under this connector's mode.
    fn dial_path(&self, endpoint: &Endpoint, conn: &ConnInfo) -> DialPath {
        let dialer = self.pool.dialer();
        match (&self.cfg.mode, &endpoint.transport) {
            (UpstreamMode::ZtunnelUnix(_), _) => DialPath::Ztunnel {
                endpoint: endpoint.address,
                source: TunnelSource::from_conn(conn),
            },
            (UpstreamMode::Auto, EndpointTransport::Hbone { identity })
                if dialer.hbone.is_some() =>
            {
                DialPath::Hbone {
                    endpoint: endpoint.address,
                    identity: identity.clone(),
                    source: TunnelSource::from_conn(conn),
                }
            }
            _ => DialPath::Plain(endpoint.address),
        }
    }
}

/// How the downstream request is sent: its first try, its copies for retries, and whether it
/// upgrades the connection.
struct Outgoing<'a> {
    first: Request<Body>,
    replay: Option<&'a Replay>,
    upgrade: bool,
    downstream_upgrade: Option<DownstreamUpgrade>,
    /// How each try picks its endpoint.
    choice: Choice,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::config::{ProtocolSelection, ResourceRef, ServiceBackend};

    #[tokio::test]
    async fn no_target_and_no_endpoints_are_local_replies() {
        use crate::conn::{Binding, ConnInfo};
        let up = Upstream::new(UpstreamConfig::default());
        let mut conn = ConnInfo::new(Binding::Plain {
            listener: "t".into(),
        });
        conn.destination = Some(([10, 96, 0, 1], 80).into());
        let mut ctx = RequestContext::new(Arc::new(conn), Default::default());
        let req = || Request::new(crate::body::empty());

        let resp = up.forward(req(), &mut ctx).await;
        assert_eq!(resp.status(), 404);
        assert_eq!(ctx.response_flags, [ResponseFlag::NoRoute]);

        ctx.response_flags.clear();
        ctx.upstream = Some(crate::filter::UpstreamTarget::new(Arc::new(
            ServiceBackend {
                policy: Default::default(),
                service: ResourceRef::new("Service", "ns", "svc"),
                port: 80,
                cluster_ips: vec![],
                protocol: ProtocolSelection::http(AppProtocol::Http1),
                endpoints: vec![],
            },
        )));
        let resp = up.forward(req(), &mut ctx).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(ctx.response_flags, [ResponseFlag::NoHealthyUpstream]);
    }
}
