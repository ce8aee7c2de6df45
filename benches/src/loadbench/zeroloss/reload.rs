//! Config reloads under load: two valid manifests that differ in a route's backend weights
//! (90/10 and 10/90 between two Services) and in a response header the route sets, written in
//! turn over the watched config. After each write the next one waits until `/config_dump`
//! shows a newer version, so every reload is known to have been applied, not merely written.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::{OpenLoad, Setup, Tally, failed_reloads, route, service};
use crate::loadbench::load::Dialer;
use crate::loadbench::runner::{config_version, proxy_header};

/// The scale of a run.
#[derive(Clone, Debug)]
pub struct ReloadPlan {
    /// Reloads to apply.
    pub reloads: usize,
    /// Load, requests per second.
    pub rate: f64,
    /// Load connections.
    pub connections: usize,
}

/// What a run saw.
#[derive(Clone, Debug)]
pub struct ReloadOutcome {
    /// Every request.
    pub tally: Tally,
    /// Reloads seen applied (the version moved on after the write).
    pub applied: usize,
    /// `/config_dump` version before the first and after the last reload.
    pub versions: (u64, u64),
    /// `waypoint_config_reloads_total{result="failed"}` at the end.
    pub failed_reloads: Option<u64>,
    /// Requests each backend answered.
    pub served: (u64, u64),
    /// How long the reloads took, all together.
    pub elapsed: Duration,
}

impl ReloadOutcome {
    /// The backends answered exactly one request per success the client saw.
    pub fn served_once(&self) -> bool {
        self.served.0 + self.served.1 == self.tally.ok
    }
}

/// The manifests of generation `g`: even generations weigh `echo-a` 90, odd ones 10.
pub fn manifests(a: SocketAddr, b: SocketAddr, g: usize) -> String {
    let (wa, wb) = if g.is_multiple_of(2) {
        (90, 10)
    } else {
        (10, 90)
    };
    let rule = format!(
        "filters: [{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: x-config, value: gen-{}}}]}}}}]\n    \
         backendRefs: [{{name: echo-a, port: 80, weight: {wa}}}, {{name: echo-b, port: 80, weight: {wb}}}]",
        g % 2
    );
    [
        service("echo", "10.96.0.10", &[]),
        service("echo-a", "10.96.0.11", &[a]),
        service("echo-b", "10.96.0.12", &[b]),
        route("echo", &rule),
    ]
    .join("---\n")
}

/// Starts two backends and a waypoint, runs the load, applies `plan.reloads` reloads one after
/// the other, then stops the load and counts.
pub async fn run(setup: &Setup, plan: &ReloadPlan) -> Result<ReloadOutcome, String> {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = Backend::start(local, "a", Duration::ZERO)
        .await
        .map_err(|e| e.to_string())?;
    let b = Backend::start(local, "b", Duration::ZERO)
        .await
        .map_err(|e| e.to_string())?;
    let label = "zero-loss-reload";
    let waypoint = setup
        .start_waypoint(label, &manifests(a.addr(), b.addr(), 0), &[])
        .await?;
    let dialer = Dialer::Tcp {
        addr: waypoint.listen,
        proxy_header: Some(proxy_header("spiffe://cluster.local/ns/shop/sa/cart")),
    };
    let load = OpenLoad::new(plan.rate, plan.connections, "/items").start(dialer);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = config_version(waypoint.admin)
        .await
        .ok_or("no /config_dump version")?;
    let started = Instant::now();
    let (mut version, mut applied) = (first, 0);
    for g in 1..=plan.reloads {
        setup.write_config(label, &manifests(a.addr(), b.addr(), g))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match config_version(waypoint.admin).await {
                Some(v) if v > version => {
                    version = v;
                    applied += 1;
                    break;
                }
                _ if Instant::now() > deadline => break,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    let elapsed = started.elapsed();
    // Keep the load on the last config a moment, so requests routed by it are counted too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = load.stop().await;
    Ok(ReloadOutcome {
        tally,
        applied,
        versions: (first, version),
        failed_reloads: failed_reloads(waypoint.admin).await,
        served: (a.served(), b.served()),
        elapsed,
    })
}
