//! Tries to the backend: each on a fresh endpoint pick, under the per-try (backend) timeout,
//! all of them together under the request timeout, repeated as the route's [`RetryPolicy`]
//! says. The final answer is the last try's.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::balance::{InFlight, InFlightBody, pick_avoiding};
use super::pool::PooledBody;
use super::replay::Replay;
use super::{Upstream, UpstreamConfig, forward, remove_hop_by_hop, service_name};
use crate::body::{Body, boxed, local_reply};
use crate::config::ServiceBackend;
use crate::filter::{RequestContext, RetryPolicy, UpstreamTarget};
use crate::flags::ResponseFlag;
use crate::http::upgrade::switch_was_offered;

/// The time a request may take: the request timeout (the route's, else the waypoint default)
/// from the moment forwarding starts, and the backend timeout for each try. A zero timeout
/// means none, as in the Gateway API.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    request: Option<Duration>,
    per_try: Option<Duration>,
    deadline: Option<Instant>,
}

impl Budget {
    pub(super) fn new(target: &UpstreamTarget, cfg: &UpstreamConfig) -> Self {
        // A zero default means none, as a zero route timeout does.
        let default = Some(cfg.request_timeout).filter(|d| !d.is_zero());
        let request = target.request_timeout.limit(default);
        Budget {
            request,
            per_try: target.backend_timeout.limit(None),
            deadline: request.and_then(|d| Instant::now().checked_add(d)),
        }
    }

    /// The limit of the next try, and the timeout to name when it expires: the backend timeout
    /// or what is left of the request timeout, whichever ends first.
    fn next_try(&self) -> Option<(Duration, Expiry)> {
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        match (left, self.per_try) {
            (Some(left), Some(per_try)) if per_try < left => Some((per_try, Expiry::Try(per_try))),
            (Some(left), _) => Some((left, Expiry::Request(self.request.unwrap_or(left)))),
            (None, Some(per_try)) => Some((per_try, Expiry::Try(per_try))),
            (None, None) => None,
        }
    }

    /// Runs `fut` within what is left of the request timeout.
    pub(super) async fn bound<F: Future>(&self, fut: F) -> Result<F::Output, Duration> {
        match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, fut)
                .await
                .map_err(|_| self.request.unwrap_or_default()),
            None => Ok(fut.await),
        }
    }

    /// Waits `backoff`; false when the request timeout ends first (having waited until then).
    async fn back_off(&self, backoff: Duration) -> bool {
        self.bound(tokio::time::sleep(backoff)).await.is_ok()
    }

    /// How long a mirrored copy may take: the request's own limits, else `fallback`.
    pub(super) fn mirror_limit(&self, fallback: Duration) -> Duration {
        [self.request, self.per_try]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(fallback)
    }
}

/// Which timeout ended a try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// The backend (per-try) timeout: another try may follow.
    Try(Duration),
    /// The request timeout: nothing may follow.
    Request(Duration),
}

/// How the downstream request is sent: its first try, its copies for retries, and whether it
/// upgrades the connection.
pub(super) struct Outgoing<'a> {
    pub(super) first: Request<Body>,
    pub(super) replay: Option<&'a Replay>,
    pub(super) upgrade: bool,
    pub(super) downstream_upgrade: Option<DownstreamUpgrade>,
}

/// The client's side of a protocol switch it asked for: its connection once the response is
/// sent, and the protocols its `Upgrade` offered.
pub(super) struct DownstreamUpgrade {
    pub(super) on: OnUpgrade,
    pub(super) offered: Vec<String>,
}

impl Upstream {
    /// Sends `out` to endpoints of `target`, trying again as its retry policy allows (only when
    /// the request was kept whole), and returns the last try's response or a local reply.
    pub(super) async fn send_tries(
        &self,
        out: Outgoing<'_>,
        target: &UpstreamTarget,
        budget: &Budget,
        ctx: &mut RequestContext,
    ) -> Response<Body> {
        let backend = &target.backend;
        let policy = target.retry.as_deref().filter(|_| out.replay.is_some());
        let Outgoing {
            first,
            replay,
            upgrade,
            mut downstream_upgrade,
        } = out;
        let mut next = Some(first);
        let mut retries = 0u32;
        let mut last = None;
        loop {
            let Some(mut req) = next.take().or_else(|| replay.map(Replay::request)) else {
                // Unreachable: a policy needs a kept request. Answer rather than panic.
                return local_reply(StatusCode::INTERNAL_SERVER_ERROR, "retry without a copy");
            };
            let Some(endpoint) = pick_avoiding(&backend.endpoints, last) else {
                return no_healthy_upstream(ctx, backend);
            };
            let address = endpoint.address;
            ctx.endpoint = Some(endpoint.clone());
            let guard = InFlight::start(&endpoint.stats);
            let route = self.route(endpoint, &ctx.conn);
            forward::prepare(&mut req, address, backend.protocol, upgrade);

            let limit = budget.next_try();
            let exchange = self.pool.send(backend.protocol, route, req);
            let result = match limit {
                Some((limit, _)) => tokio::time::timeout(limit, exchange).await.ok(),
                None => Some(exchange.await),
            };
            let may_retry = policy.filter(|p| retries < p.attempts);
            let why = match result {
                Some(Ok(resp)) => match may_retry {
                    Some(p) if p.retries_status(resp.status()) => {
                        let why = format!("status {}", resp.status());
                        discard(resp);
                        why
                    }
                    _ => {
                        if retries > 0 && policy.is_some_and(|p| p.retries_status(resp.status())) {
                            ctx.response_flags
                                .push(ResponseFlag::UpstreamRetryLimitExceeded);
                        }
                        return match finish(resp, guard, downstream_upgrade.take(), address) {
                            Ok(resp) => resp,
                            Err(reason) => unexpected_switch(ctx, backend, address, &reason),
                        };
                    }
                },
                Some(Err(reason)) => {
                    if may_retry.is_none() {
                        return connect_failed(ctx, backend, address, &reason, retries > 0);
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
                            return timed_out(ctx, backend, address, d, retries > 0);
                        }
                    }
                }
            };
            drop(guard);
            retries += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let backoff = may_retry.map_or(RetryPolicy::DEFAULT_BACKOFF, |p| p.backoff);
            tracing::debug!(
                endpoint = %address,
                service = %service_name(backend),
                retry = retries,
                reason = %why,
                backoff_ms = backoff.as_millis() as u64,
                "retrying upstream request"
            );
            if !budget.back_off(backoff).await {
                let limit = budget.request.unwrap_or_default();
                return timed_out(ctx, backend, address, limit, true);
            }
            last = Some(address);
        }
    }
}

/// Drops the response of a try that will be retried. A small body is read to its end in the
/// background first, so its HTTP/1.1 connection goes back to the pool instead of closing.
fn discard(resp: Response<PooledBody>) {
    const SMALL: u64 = 64 * 1024;
    let body = resp.into_body();
    if body.size_hint().upper().is_some_and(|n| n <= SMALL) {
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), body.collect()).await;
        });
    }
}

/// The backend's response on its way out: an upgrade joined into a tunnel, hop-by-hop headers
/// removed, the endpoint counted busy until the body is read.
///
/// A 101 becomes a tunnel only when the client asked to switch and the backend switched to a
/// protocol it offered; any other 101 is the reason in `Err`, and dropping the response closes
/// the backend connection (a switched connection never returns to the pool).
fn finish(
    mut resp: Response<PooledBody>,
    guard: InFlight,
    downstream_upgrade: Option<DownstreamUpgrade>,
    address: SocketAddr,
) -> Result<Response<Body>, String> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let downstream = match downstream_upgrade {
            Some(d) => switch_was_offered(&d.offered, resp.headers()).map(|()| d.on)?,
            None => return Err("101 to a request that asked for no upgrade".to_owned()),
        };
        let upstream = hyper::upgrade::on(&mut resp);
        forward::tunnel(downstream, upstream, address, guard);
        remove_hop_by_hop(resp.headers_mut(), true);
        return Ok(resp.map(boxed));
    }
    remove_hop_by_hop(resp.headers_mut(), false);
    Ok(resp.map(|body| boxed(InFlightBody::new(body, guard))))
}

/// 502 for a backend that switched protocols unasked; never a tunnel.
fn unexpected_switch(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
    address: SocketAddr,
    reason: &str,
) -> Response<Body> {
    ctx.response_flags.push(ResponseFlag::UpstreamProtocolError);
    tracing::warn!(
        endpoint = %address,
        service = %service_name(backend),
        %reason,
        "upstream switched protocols without an allowed upgrade; closing it"
    );
    local_reply(
        StatusCode::BAD_GATEWAY,
        format!("upstream {address} switched protocols unasked: {reason}"),
    )
}

pub(super) fn no_healthy_upstream(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
) -> Response<Body> {
    ctx.response_flags.push(ResponseFlag::NoHealthyUpstream);
    tracing::warn!(service = %service_name(backend), "no healthy upstream");
    local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no healthy upstream for Service {}", service_name(backend)),
    )
}

fn timed_out(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
    address: SocketAddr,
    limit: Duration,
    retried: bool,
) -> Response<Body> {
    ctx.response_flags
        .push(ResponseFlag::UpstreamRequestTimeout);
    if retried {
        ctx.response_flags
            .push(ResponseFlag::UpstreamRetryLimitExceeded);
    }
    tracing::warn!(
        endpoint = %address,
        service = %service_name(backend),
        timeout_ms = limit.as_millis() as u64,
        "upstream request timeout"
    );
    local_reply(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "upstream request timeout after {}ms to {address}",
            limit.as_millis()
        ),
    )
}

fn connect_failed(
    ctx: &mut RequestContext,
    backend: &ServiceBackend,
    address: SocketAddr,
    reason: &str,
    retried: bool,
) -> Response<Body> {
    ctx.response_flags
        .push(ResponseFlag::UpstreamConnectionFailure);
    if retried {
        ctx.response_flags
            .push(ResponseFlag::UpstreamRetryLimitExceeded);
    }
    tracing::warn!(
        endpoint = %address,
        service = %service_name(backend),
        %reason,
        "upstream connect error"
    );
    local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("upstream connect error to {address}: {reason}"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AppProtocol, ResourceRef};
    use crate::filter::Timeout;

    fn target(request: Option<u64>, backend: Option<u64>) -> UpstreamTarget {
        let mut t = UpstreamTarget::new(Arc::new(ServiceBackend {
            service: ResourceRef::new("Service", "ns", "svc"),
            port: 80,
            cluster_ips: vec![],
            protocol: AppProtocol::Http1,
            endpoints: vec![],
        }));
        let ms = |d: Option<u64>| {
            d.map_or(Timeout::Default, |ms| {
                Timeout::from_gateway(Duration::from_millis(ms))
            })
        };
        t.request_timeout = ms(request);
        t.backend_timeout = ms(backend);
        t
    }

    /// The first try's limit, rounded to 10 ms (time passes between building and asking).
    fn first(request: Option<u64>, backend: Option<u64>) -> Option<(u64, Expiry)> {
        let budget = Budget::new(&target(request, backend), &UpstreamConfig::default());
        budget
            .next_try()
            .map(|(d, e)| ((d.as_millis() as u64).div_ceil(10) * 10, e))
    }

    #[test]
    fn a_try_gets_the_tighter_of_request_and_backend_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(
            first(None, None),
            Some((15_000, Expiry::Request(ms(15_000))))
        );
        assert_eq!(
            first(Some(300), None),
            Some((300, Expiry::Request(ms(300))))
        );
        assert_eq!(
            first(Some(300), Some(100)),
            Some((100, Expiry::Try(ms(100))))
        );
        assert_eq!(
            first(None, Some(20_000)),
            Some((15_000, Expiry::Request(ms(15_000))))
        );
        assert_eq!(first(Some(0), Some(200)), Some((200, Expiry::Try(ms(200)))));
        assert_eq!(first(Some(0), None), None);
        assert_eq!(service_name(&target(None, None).backend), "ns/svc:80");
    }

    #[tokio::test(start_paused = true)]
    async fn later_tries_get_what_is_left_and_backoff_stops_at_the_deadline() {
        let budget = Budget::new(&target(Some(300), Some(200)), &UpstreamConfig::default());
        assert!(budget.back_off(Duration::from_millis(150)).await);
        let (limit, expiry) = budget.next_try().unwrap();
        assert_eq!(limit, Duration::from_millis(150));
        assert_eq!(expiry, Expiry::Request(Duration::from_millis(300)));
        let start = Instant::now();
        assert!(!budget.back_off(Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(150));
        assert_eq!(
            budget.mirror_limit(Duration::from_secs(9)),
            Duration::from_millis(200)
        );
        let none = Budget::new(&target(Some(0), None), &UpstreamConfig::default());
        assert_eq!(
            none.mirror_limit(Duration::from_secs(9)),
            Duration::from_secs(9)
        );
    }
}
