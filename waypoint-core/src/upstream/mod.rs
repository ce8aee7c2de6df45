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
//! | no response headers within the timeout | 504 | `UT` |
//!
//! The waypoint is transparent: it removes hop-by-hop headers ([`remove_hop_by_hop`]) and adds
//! none. A WebSocket-style upgrade to an HTTP/1.1 backend is carried through as a byte tunnel.

mod balance;
mod forward;
mod hop;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

pub use balance::pick;
pub use hop::{is_upgrade, remove_hop_by_hop};

use crate::body::{Body, boxed, local_reply};
use crate::config::{AppProtocol, ServiceBackend};
use crate::filter::{RequestContext, UpstreamTarget};
use balance::{InFlight, InFlightBody};

/// The waypoint's own upstream settings (flags, not Kubernetes resources).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// How long to wait for a TCP connection to an endpoint.
    pub connect_timeout: Duration,
    /// The timeout until response headers when the route sets none (Envoy's default is 15 s).
    /// Zero disables it.
    pub request_timeout: Duration,
    /// How long an unused pooled connection stays open.
    pub idle_timeout: Duration,
    /// The most idle HTTP/1.1 connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 64,
        }
    }
}

/// The upstream connector: connection pools to every endpoint, shared by all requests. Build
/// one per process and share it (in an `Arc`); config reloads do not touch it, so pooled
/// connections survive them.
pub struct Upstream {
    cfg: UpstreamConfig,
    http1: Client<HttpConnector, Body>,
    h2c: Arc<forward::H2Pool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("cfg", &self.cfg).finish()
    }
}

impl Upstream {
    /// Builds the connector with `cfg`. Needs a Tokio runtime only once requests are sent.
    pub fn new(cfg: UpstreamConfig) -> Self {
        Upstream {
            http1: forward::http1_client(&cfg),
            h2c: forward::H2Pool::new(&cfg),
            cfg,
        }
    }

    /// The settings this connector was built with.
    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
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
            ctx.response_flags.push("NR");
            let message = match ctx.conn.destination {
                Some(dest) => format!("no route to {dest}"),
                None => "no route: the connection has no known destination".to_owned(),
            };
            return local_reply(StatusCode::NOT_FOUND, message);
        };
        let backend = &target.backend;
        let Some(endpoint) = pick(&backend.endpoints) else {
            ctx.response_flags.push("UH");
            tracing::warn!(service = %service_name(backend), "no healthy upstream");
            return local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no healthy upstream for Service {}", service_name(backend)),
            );
        };
        let address = endpoint.address;
        let guard = InFlight::start(&endpoint.stats);

        // Only HTTP/1.1 can switch protocols in place; toward an h2c backend the upgrade headers
        // are plain hop-by-hop headers and go.
        let upgrade = backend.protocol == AppProtocol::Http1
            && req.version() <= Version::HTTP_11
            && is_upgrade(req.headers());
        // Taken before the request leaves: the handle on the downstream connection lives in the
        // request's extensions.
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        forward::prepare(&mut req, address, backend.protocol, upgrade);

        let exchange = self.send(backend.protocol, address, req);
        let result = match effective_timeout(&target, &self.cfg) {
            Some(limit) => match tokio::time::timeout(limit, exchange).await {
                Ok(result) => result,
                Err(_) => {
                    ctx.response_flags.push("UT");
                    tracing::warn!(
                        endpoint = %address,
                        service = %service_name(backend),
                        timeout_ms = limit.as_millis() as u64,
                        "upstream request timeout"
                    );
                    return local_reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "upstream request timeout after {}ms to {address}",
                            limit.as_millis()
                        ),
                    );
                }
            },
            None => exchange.await,
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(reason) => {
                ctx.response_flags.push("UF");
                tracing::warn!(
                    endpoint = %address,
                    service = %service_name(backend),
                    %reason,
                    "upstream connect error"
                );
                return local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("upstream connect error to {address}: {reason}"),
                );
            }
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(downstream) = downstream_upgrade
        {
            let upstream = hyper::upgrade::on(&mut resp);
            forward::tunnel(downstream, upstream, address, guard);
            remove_hop_by_hop(resp.headers_mut(), true);
            return resp.map(boxed);
        }
        remove_hop_by_hop(resp.headers_mut(), false);
        resp.map(|body| boxed(InFlightBody::new(body, guard)))
    }

    async fn send(
        &self,
        protocol: AppProtocol,
        endpoint: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        match protocol {
            AppProtocol::Http1 => self
                .http1
                .request(req)
                .await
                .map_err(|e| forward::describe(&e)),
            AppProtocol::H2c => self.h2c.send(endpoint, req).await,
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

/// The limit until response headers: the route's request timeout (or the waypoint default),
/// further bounded by its backend timeout. A zero timeout means none, as in the Gateway API.
fn effective_timeout(target: &UpstreamTarget, cfg: &UpstreamConfig) -> Option<Duration> {
    let request = target.request_timeout.unwrap_or(cfg.request_timeout);
    [Some(request), target.backend_timeout]
        .into_iter()
        .flatten()
        .filter(|d| !d.is_zero())
        .min()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::config::ResourceRef;

    fn target(request: Option<u64>, backend: Option<u64>) -> UpstreamTarget {
        UpstreamTarget {
            backend: Arc::new(ServiceBackend {
                service: ResourceRef::new("Service", "ns", "svc"),
                port: 80,
                cluster_ips: vec![],
                protocol: AppProtocol::Http1,
                endpoints: vec![],
            }),
            request_timeout: request.map(Duration::from_millis),
            backend_timeout: backend.map(Duration::from_millis),
        }
    }

    #[test]
    fn timeout_is_the_tighter_of_request_and_backend() {
        let cfg = UpstreamConfig::default();
        let ms = |v: u64| Some(Duration::from_millis(v));
        assert_eq!(effective_timeout(&target(None, None), &cfg), ms(15_000));
        assert_eq!(effective_timeout(&target(Some(300), None), &cfg), ms(300));
        assert_eq!(
            effective_timeout(&target(Some(300), Some(100)), &cfg),
            ms(100)
        );
        assert_eq!(
            effective_timeout(&target(None, Some(20_000)), &cfg),
            ms(15_000)
        );
        assert_eq!(
            effective_timeout(&target(Some(0), Some(200)), &cfg),
            ms(200)
        );
        assert_eq!(effective_timeout(&target(Some(0), None), &cfg), None);
        assert_eq!(service_name(&target(None, None).backend), "ns/svc:80");
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
        assert_eq!(ctx.response_flags, ["NR"]);

        ctx.response_flags.clear();
        ctx.upstream = Some(target(None, None));
        let resp = up.forward(req(), &mut ctx).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(ctx.response_flags, ["UH"]);
    }
}
