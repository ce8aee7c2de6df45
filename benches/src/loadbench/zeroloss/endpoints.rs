//! An endpoint disappears under load: its backend is killed (listener and every connection
//! dropped at once) and, at the same moment, the EndpointSlice naming it is removed from the
//! watched config, as when a pod is deleted. Until the waypoint has reloaded, requests may
//! still pick the dead endpoint, and the ones in flight on it are cut.
//!
//! Run twice: with a Gateway API `retry` on the route, a failed try goes to the other
//! endpoint and no request may fail; without, the failed ones must be clean 503 answers
//! (never a reset, a hang or a refused connection) and are counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::{OpenLoad, Setup, Tally, route, service};
use crate::loadbench::load::Dialer;
use crate::loadbench::runner::{config_version, proxy_header};

/// The scale of a run.
#[derive(Clone, Debug)]
pub struct EndpointPlan {
    /// Load, requests per second.
    pub rate: f64,
    /// Load connections.
    pub connections: usize,
    /// The backends' answer delay (so requests are in flight when one dies).
    pub delay: Duration,
    /// Load before the endpoint goes.
    pub before: Duration,
    /// Load after the waypoint reloaded.
    pub after: Duration,
    /// The route retries (`retry: {attempts: 2}`, codes 503).
    pub retries: bool,
}

/// What a run saw.
#[derive(Clone, Debug)]
pub struct EndpointOutcome {
    /// Every request.
    pub tally: Tally,
    /// From the kill to `/config_dump` showing the config without the endpoint.
    pub reload_after: Option<Duration>,
    /// Requests the killed backend answered before it died, and the survivor in all.
    pub served: (u64, u64),
}

/// Service `echo` with endpoints `endpoints`, one route, retrying or not.
pub fn manifests(endpoints: &[SocketAddr], retries: bool) -> String {
    let retry = if retries {
        "retry: {codes: [503], attempts: 2, backoff: 0s}\n    "
    } else {
        ""
    };
    [
        service("echo", "10.96.0.10", endpoints),
        route(
            "echo",
            &format!("{retry}backendRefs: [{{name: echo, port: 80}}]"),
        ),
    ]
    .join("---\n")
}

/// Runs the scenario: see the module documentation.
pub async fn run(setup: &Setup, plan: &EndpointPlan) -> Result<EndpointOutcome, String> {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let doomed = Backend::start(local, "doomed", plan.delay)
        .await
        .map_err(|e| e.to_string())?;
    let survivor = Backend::start(local, "survivor", plan.delay)
        .await
        .map_err(|e| e.to_string())?;
    let label = if plan.retries {
        "zero-loss-endpoint-retry"
    } else {
        "zero-loss-endpoint-no-retry"
    };
    let both = [doomed.addr(), survivor.addr()];
    let waypoint = setup
        .start_waypoint(label, &manifests(&both, plan.retries), &[])
        .await?;
    let dialer = Dialer::Tcp {
        addr: waypoint.listen,
        proxy_header: Some(proxy_header("spiffe://cluster.local/ns/shop/sa/cart")),
    };
    let load = OpenLoad::new(plan.rate, plan.connections, "/items").start(dialer);
    tokio::time::sleep(plan.before).await;
    let version = config_version(waypoint.admin).await.unwrap_or(0);
    setup.write_config(label, &manifests(&[survivor.addr()], plan.retries))?;
    let killed_at = Instant::now();
    let served_doomed = doomed.served();
    doomed.kill();
    let mut reload_after = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        if config_version(waypoint.admin)
            .await
            .is_some_and(|v| v > version)
        {
            reload_after = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(plan.after).await;
    let tally = load.stop().await;
    Ok(EndpointOutcome {
        tally,
        reload_after,
        served: (served_doomed, survivor.served()),
    })
}
