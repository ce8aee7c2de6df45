//! Forwarding to the chosen backend's endpoints over pooled connections.
//!
//! Routing records an [`UpstreamTarget`] in the request context; [`Upstream::forward`] picks an
//! endpoint (least request, power of two choices: [`pick`]), rewrites the request for it, sends
//! it over a pooled connection (HTTP/1.1, or HTTP/2 with prior knowledge for h2c backends), and
//! streams the response back. Every failure is a local reply with the status Envoy would give
//! and its response flag in the context:
//!
//! | case | status | flag |
//! |---|---|---|
//! | no upstream chosen | 404 | `NR` |
//! | backend without ready endpoints | 503 | `UH` |
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
//! The waypoint is transparent: it removes hop-by-hop headers ([`remove_hop_by_hop`]) and adds
//! none. A WebSocket-style upgrade to an HTTP/1.1 backend is carried through as a byte tunnel,
//! but only when the backend's `101` names a protocol the request offered; any other `101` is a
//! backend error and the backend connection is closed (which upgrades get this far at all is
//! the listeners' [`UpgradePolicy`](crate::http::UpgradePolicy)).
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

mod balance;
mod connect;
mod forward;
mod hbone;
mod hop;
mod mirror;
mod pool;
mod replay;
mod retry;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, Version};

pub use balance::pick;
pub use connect::TunnelSource;
pub use hbone::{HBONE_PORT, HboneClientOptions, HboneError, HbonePool, HboneStream};
pub(crate) use hop::{HTTP2_SETTINGS, tokens as header_tokens};
pub use hop::{is_upgrade, remove_hop_by_hop};
pub use mirror::UpstreamStats;

use crate::body::{Body, local_reply};
use crate::config::{AppProtocol, Endpoint, EndpointTransport, ServiceBackend};
use crate::conn::ConnInfo;
use crate::filter::{MirrorTarget, RequestContext};
#[cfg(doc)]
use crate::filter::{RetryPolicy, UpstreamTarget};
use crate::flags::ResponseFlag;
use crate::tls::CertStore;
use connect::{Connector, Route};
use mirror::Counters;
use pool::HttpPool;
use replay::Replay;
use retry::{Budget, DownstreamUpgrade, Outgoing};

/// How long a mirrored copy may take when the request it copies has no timeout at all.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections held by the upstream pools at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolSizes {
    /// Idle HTTP/1.1 connections ready for reuse.
    pub http1_idle: usize,
    /// Open HTTP/2 (h2c) connections.
    pub http2: usize,
    /// Open HBONE (mTLS HTTP/2) connections carrying tunnels.
    pub hbone: usize,
}

/// Exposes [`Upstream::pool_sizes`] as `waypoint_upstream_pool_connections{kind}` and
/// [`Upstream::stats`] as `waypoint_upstream_mirror_requests_total{result}` (`sent`, `failed`,
/// `dropped`, `skipped`) and `waypoint_upstream_retries_total`, read at scrape time.
#[derive(Debug)]
pub struct PoolCollector(pub Arc<Upstream>);

impl prometheus_client::collector::Collector for PoolCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let sizes = self.0.pool_sizes();
        let mut family = encoder.encode_descriptor(
            "waypoint_upstream_pool_connections",
            "Connections held by the upstream pools",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (kind, n) in [
            ("http1_idle", sizes.http1_idle),
            ("http2", sizes.http2),
            ("hbone", sizes.hbone),
        ] {
            let gauge = prometheus_client::metrics::gauge::ConstGauge::new(
                i64::try_from(n).unwrap_or(i64::MAX),
            );
            gauge.encode(family.encode_family(&[("kind", kind)])?)?;
        }

        let stats = self.0.stats();
        let counter = prometheus_client::metrics::counter::ConstCounter::new;
        let mut family = encoder.encode_descriptor(
            "waypoint_upstream_mirror_requests",
            "Mirrored request copies, by what became of them",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (result, n) in [
            ("sent", stats.mirrors_sent),
            ("failed", stats.mirrors_failed),
            ("dropped", stats.mirrors_dropped),
            ("skipped", stats.mirrors_skipped),
        ] {
            counter(n).encode(family.encode_family(&[("result", result)])?)?;
        }
        counter(stats.retries).encode(encoder.encode_descriptor(
            "waypoint_upstream_retries",
            "Retries sent to backends",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?)?;
        Ok(())
    }
}

/// How the waypoint reaches endpoints (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Plain TCP to endpoint addresses, always. The sandwich default: the in-pod ztunnel
    /// captures the connection and sends it as HBONE.
    #[default]
    Plain,
    /// HBONE to endpoints in the mesh when a workload certificate is configured, plain TCP to
    /// the others (and to every endpoint without a certificate).
    Auto,
    /// Every connection through the co-located ztunnel's Unix socket at this path, behind a
    /// PROXY v2 header naming the endpoint (our extension).
    ZtunnelUnix(PathBuf),
}

/// The waypoint's own upstream settings (flags, not Kubernetes resources).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// How long to wait for a connection to an endpoint (TCP, or every handshake of a tunnel).
    pub connect_timeout: Duration,
    /// The timeout until response headers when the route sets none (Envoy's default is 15 s).
    /// Zero disables it.
    pub request_timeout: Duration,
    /// How long an unused pooled HTTP connection stays open (zero: none is kept).
    pub idle_timeout: Duration,
    /// The most idle HTTP/1.1 connections kept per endpoint (and, over tunnels, per client).
    pub max_idle_per_endpoint: usize,
    /// Which transport carries the HTTP connections.
    pub mode: UpstreamMode,
    /// HBONE client settings (used in [`UpstreamMode::Auto`]).
    pub hbone: HboneClientOptions,
    /// The waypoint's own IP, named as PROXY source toward the co-located ztunnel when the
    /// original client is unknown. Unset, the unspecified address is sent.
    pub own_ip: Option<IpAddr>,
    /// The largest request body kept in memory so the request can be retried or mirrored
    /// (its length must be known up front); larger bodies stream once, unretried, unmirrored.
    pub max_replay_body: usize,
    /// The most mirrored copies in flight at once; more are dropped (and counted).
    pub max_mirrors_in_flight: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(90),
            // High enough that a burst of concurrent requests does not churn connections (each
            // new one costs a handshake and, under load, can overflow the backend's accept
            // queue); idle ones are still closed after `idle_timeout`.
            max_idle_per_endpoint: 1024,
            mode: UpstreamMode::Plain,
            hbone: HboneClientOptions::default(),
            own_ip: None,
            max_replay_body: 64 * 1024,
            max_mirrors_in_flight: 1024,
        }
    }
}

/// The upstream connector: connection pools to every endpoint, shared by all requests. Build
/// one per process and share it (in an `Arc`); config reloads do not touch it, so pooled
/// connections survive them.
pub struct Upstream {
    cfg: UpstreamConfig,
    pool: Arc<HttpPool>,
    counters: Arc<Counters>,
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
        let connector = Connector {
            connect_timeout: cfg.connect_timeout,
            hbone,
            ztunnel,
            certs,
            own_ip: cfg.own_ip,
        };
        Upstream {
            pool: HttpPool::new(connector, &cfg),
            cfg,
            counters: Arc::default(),
        }
    }

    /// The settings this connector was built with.
    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// The HBONE connection pool, when this connector sends HBONE.
    pub fn hbone_pool(&self) -> Option<&Arc<HbonePool>> {
        self.pool.connector().hbone.as_ref()
    }

    /// How many connections the pools hold now.
    pub fn pool_sizes(&self) -> PoolSizes {
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

    /// Forwards `req` to an endpoint of `ctx.upstream` and returns the backend's response, its
    /// body streaming. Failures become local replies (see the module documentation) with their
    /// response flag pushed to `ctx.response_flags`.
    pub async fn forward(
        &self,
        mut req: Request<Body>,
        ctx: &mut RequestContext,
    ) -> Response<Body> {
        let Some(target) = ctx.upstream.clone() else {
            ctx.response_flags.push(ResponseFlag::NoRoute);
            let message = match ctx.conn.destination {
                Some(dest) => format!("no route to {dest}"),
                None => "no route: the connection has no known destination".to_owned(),
            };
            return local_reply(StatusCode::NOT_FOUND, message);
        };
        let backend = &target.backend;
        if backend.endpoints.is_empty() {
            return retry::no_healthy_upstream(ctx, backend);
        }
        let budget = Budget::new(&target, &self.cfg);

        // Only HTTP/1.1 can switch protocols in place; toward an h2c backend the upgrade headers
        // are plain hop-by-hop headers and go.
        let upgrade = backend.protocol == AppProtocol::Http1
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
                Ok(Err(e)) => {
                    ctx.response_flags
                        .push(ResponseFlag::DownstreamProtocolError);
                    return local_reply(
                        StatusCode::BAD_REQUEST,
                        format!("request body could not be read: {e}"),
                    );
                }
                Err(limit) => {
                    ctx.response_flags
                        .push(ResponseFlag::UpstreamRequestTimeout);
                    return local_reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "request body not received within the {}ms request timeout",
                            limit.as_millis()
                        ),
                    );
                }
            }
        } else {
            None
        };
        for mirror in mirrors {
            let limit = budget.mirror_limit(MIRROR_TIMEOUT);
            self.mirror(mirror, replay.as_ref(), &ctx.conn, limit);
        }

        let out = Outgoing {
            first: req,
            replay: replay.as_ref(),
            upgrade,
            downstream_upgrade,
        };
        self.send_tries(out, &target, &budget, ctx).await
    }

    /// The transport for `endpoint` under this connector's mode.
    fn route(&self, endpoint: &Endpoint, conn: &ConnInfo) -> Route {
        let connector = self.pool.connector();
        match (&self.cfg.mode, &endpoint.transport) {
            (UpstreamMode::ZtunnelUnix(_), _) => Route::Ztunnel {
                endpoint: endpoint.address,
                source: TunnelSource::from_conn(conn),
            },
            (UpstreamMode::Auto, EndpointTransport::Hbone { identity })
                if connector.hbone.is_some() =>
            {
                Route::Hbone {
                    endpoint: endpoint.address,
                    identity: identity.clone(),
                    source: TunnelSource::from_conn(conn),
                }
            }
            _ => Route::Plain(endpoint.address),
        }
    }
}

/// `Service ns/name:port`, as messages name a backend.
fn service_name(backend: &ServiceBackend) -> String {
    format!(
        "{}/{}:{}",
        backend.service.namespace, backend.service.name, backend.port
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::config::ResourceRef;

    #[test]
    fn collector_exposes_pools_mirrors_and_retries() {
        let up = Arc::new(Upstream::new(UpstreamConfig::default()));
        up.counters
            .mirrors_dropped
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        up.counters
            .retries
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(PoolCollector(up)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "waypoint_upstream_pool_connections{kind=\"http1_idle\"} 0",
            "waypoint_upstream_mirror_requests_total{result=\"dropped\"} 3",
            "waypoint_upstream_mirror_requests_total{result=\"sent\"} 0",
            "waypoint_upstream_retries_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

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
                service: ResourceRef::new("Service", "ns", "svc"),
                port: 80,
                cluster_ips: vec![],
                protocol: AppProtocol::Http1,
                endpoints: vec![],
            },
        )));
        let resp = up.forward(req(), &mut ctx).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(ctx.response_flags, [ResponseFlag::NoHealthyUpstream]);
    }
}
