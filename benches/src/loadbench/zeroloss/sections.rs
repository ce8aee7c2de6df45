//! The zero-loss scenarios as `loadbench` report sections, at the scale (1,000 rps,
//! 100 reloads; `--quick` shrinks the counts and the times, not the rate).
//!
//! Envoy is not run here. Each change would need machinery this benchmark does not have for
//! it: reloads and endpoint removal need an xDS server (a file-based bootstrap is static),
//! certificate rotation needs SDS, and Envoy's drain needs a hot restart or the admin
//! `drain_listeners` call plus a second instance. The question is loss, which is absolute, so
//! the waypoint's counts stand on their own.

use std::time::Duration;

use super::certs::{self, CertPlan, LocalMesh};
use super::drain::{self, DrainPlan};
use super::endpoints::{self, EndpointPlan};
use super::reload::{self, ReloadPlan};
use super::{Setup, Tally};
use crate::loadbench::load::Protocol;
use crate::loadbench::report::{Row, Section};
use crate::loadbench::runner::Bench;

/// The zero-loss scenario names.
pub const NAMES: [&str; 4] = ["reload", "cert-rotation", "drain", "endpoint-loss"];

/// Runs zero-loss scenario `name` (one of [`NAMES`]).
pub async fn run(bench: &Bench, name: &str) -> Section {
    let Some(bin) = bench.peers.waypoint.clone() else {
        return failed(name, "waypoint binary missing");
    };
    let setup = Setup {
        bin,
        dir: bench.dir.clone(),
        pin: Some(bench.pin.clone()),
        env: Vec::new(),
    };
    let quick = bench.quick;
    match name {
        "reload" => reload_section(&setup, quick).await,
        "cert-rotation" => cert_section(&setup, quick).await,
        "drain" => drain_section(&setup, quick).await,
        "endpoint-loss" => endpoint_section(&setup, quick).await,
        other => failed(other, "not a zero-loss scenario"),
    }
}

fn failed(name: &str, why: &str) -> Section {
    Section {
        name: name.into(),
        rows: vec![Row::failed("waypoint", "", why)],
        ..Default::default()
    }
}

/// A table row from a tally: successes per second of load, latency, failures.
fn row(variant: &str, t: &Tally) -> Row {
    let (h, elapsed) = (&t.latency, t.elapsed);
    Row {
        proxy: "waypoint".into(),
        variant: variant.into(),
        rps: Some(t.ok as f64 / elapsed.as_secs_f64().max(1e-9)),
        p50: h.quantile(0.5),
        p99: h.quantile(0.99),
        p999: h.quantile(0.999),
        errors: t.failed(),
        note: format!("sent {}, succeeded {}", t.sent, t.ok),
        cdf: h.cdf(),
        ..Default::default()
    }
}

fn counts(section: &mut Section, what: &str, t: &Tally) {
    section.facts.push((format!("{what} counts"), t.summary()));
}

const LATENCY: &str = "Latency is from each request's scheduled send time; every scheduled request is counted, with no warm-up or window (see `zeroloss/mod.rs`).";

async fn reload_section(setup: &Setup, quick: bool) -> Section {
    let plan = ReloadPlan {
        reloads: if quick { 20 } else { 100 },
        rate: 1000.0,
        connections: 32,
    };
    let mut section = Section {
        name: "reload".into(),
        description: format!(
            "{} config reloads under an open-loop load of {} rps (32 HTTP/1.1 keep-alive connections, PROXY v2). Two valid manifests are written in turn over the watched config (atomic rename, `--reload-interval 100ms`): they swap a route's weights between two backends (90/10, 10/90) and the value of a response header the route sets. Each write waits until `/config_dump` shows a newer version. {LATENCY}",
            plan.reloads, plan.rate
        ),
        ..Default::default()
    };
    match reload::run(setup, &plan).await {
        Ok(out) => {
            section.rows.push(row("", &out.tally));
            counts(&mut section, "waypoint", &out.tally);
            section.facts.push((
                "reloads applied".into(),
                format!(
                    "{} of {} (config version {} -> {}), failed reloads (waypoint_config_reloads_total{{result=\"failed\"}}): {}, in {:.1} s",
                    out.applied,
                    plan.reloads,
                    out.versions.0,
                    out.versions.1,
                    out.failed_reloads.map_or("?".into(), |n| n.to_string()),
                    out.elapsed.as_secs_f64()
                ),
            ));
            section.facts.push((
                "requests per backend".into(),
                format!(
                    "a: {}, b: {} (one per client success: {})",
                    out.served.0,
                    out.served.1,
                    out.served_once()
                ),
            ));
        }
        Err(e) => section.rows.push(Row::failed("waypoint", "", &e)),
    }
    section
}

async fn cert_section(setup: &Setup, quick: bool) -> Section {
    let plan = CertPlan {
        rate: 1000.0,
        connections: 32,
        rotations: if quick { 2 } else { 5 },
        pause: Duration::from_millis(if quick { 500 } else { 2000 }),
    };
    let mut section = Section {
        name: "cert-rotation".into(),
        description: format!(
            "{} rps open loop over 32 HBONE tunnels (the load generator is the client ztunnel) into the waypoint, which sends HBONE on to a destination-ztunnel stand-in (in the load generator's process, with a CA of its own). The waypoint's certificate files (it serves and dials with them) are replaced {} times with new ones from the same CA, {:.1} s apart, and the client ztunnel's too. After each rotation a fresh TLS handshake must be answered with the new certificate, and a fresh client (new TLS connection, rotated client certificate) must get a 200. {LATENCY}",
            plan.rate,
            plan.rotations,
            plan.pause.as_secs_f64()
        ),
        ..Default::default()
    };
    let mesh = match LocalMesh::start(&setup.dir.join("zero-loss-mesh")).await {
        Ok(mesh) => mesh,
        Err(e) => {
            section.rows.push(Row::failed("waypoint", "", &e));
            return section;
        }
    };
    match certs::run(setup, &plan, &mesh.env).await {
        Ok(out) => {
            section.rows.push(row("", &out.tally));
            counts(&mut section, "waypoint", &out.tally);
            section.facts.push((
                "rotations".into(),
                format!(
                    "{} of {} presented on a fresh handshake; {} of {} fresh clients got 200{}",
                    out.applied,
                    plan.rotations,
                    out.fresh_ok,
                    plan.rotations,
                    if out.problems.is_empty() {
                        String::new()
                    } else {
                        format!("; problems: {}", out.problems.join("; "))
                    }
                ),
            ));
            section.notes.push("The load's own tunnels ride HTTP/2 connections opened before the first rotation: rotation applies to new handshakes (checked after each one), existing connections keep their session, as in Istio.".into());
        }
        Err(e) => section.rows.push(Row::failed("waypoint", "", &e)),
    }
    section
}

async fn drain_section(setup: &Setup, quick: bool) -> Section {
    let plan = |protocol| DrainPlan {
        rate: 1000.0,
        protocol,
        connections: 64,
        delay: Duration::from_millis(20),
        slow: Duration::from_secs(2),
        grace: Duration::from_secs(2),
        before: Duration::from_secs(if quick { 2 } else { 5 }),
        after: Duration::from_secs(if quick { 1 } else { 3 }),
    };
    let first = plan(Protocol::Http1);
    let mut section = Section {
        name: "drain".into(),
        description: format!(
            "SIGTERM under {} rps over 64 connections with PROXY v2 (run twice: HTTP/1.1 keep-alive, then h2c with one stream at a time per connection); the backend answers after {} ms, so about {} requests are always in flight. Two waypoints serve the same config; the load generator dials whichever is ready, re-checking `/healthz/ready` every 50 ms, as kube-proxy or a ztunnel follows readiness. The first waypoint gets SIGTERM after {} s with `--drain-grace {}s`; two probes hold a {} s request across the signal on it, over HTTP/1.1 keep-alive and HTTP/2. {LATENCY}",
            first.rate,
            first.delay.as_millis(),
            (first.rate * first.delay.as_secs_f64()) as u64,
            first.before.as_secs(),
            first.grace.as_secs(),
            first.slow.as_secs()
        ),
        ..Default::default()
    };
    for (variant, protocol) in [
        ("HTTP/1.1 load", Protocol::Http1),
        ("h2c load", Protocol::H2c { streams: 1 }),
    ] {
        match drain::run(setup, &plan(protocol)).await {
            Ok(out) => {
                section.rows.push(row(variant, &out.tally));
                counts(&mut section, &format!("waypoint, {variant}"), &out.tally);
                let ms = |d: Option<Duration>| {
                    d.map_or("never".to_owned(), |d| {
                        format!("{:.0} ms", d.as_secs_f64() * 1e3)
                    })
                };
                section.facts.push((
                    format!("{variant}: after SIGTERM"),
                    format!(
                        "readiness false at {}, listener refusing at {}, process exited at {} ({})",
                        ms(out.ready_false_after),
                        ms(out.refused_after),
                        ms(out.exited_after.map(|e| e.0)),
                        match out.exited_after {
                            Some((_, true)) => "success",
                            Some((_, false)) => "FAILURE",
                            None => "still running",
                        }
                    ),
                ));
                section.facts.push((
                    format!("{variant}: backend answers"),
                    format!(
                        "{} (one per client success, probes included: {})",
                        out.served,
                        out.served_once()
                    ),
                ));
                section.facts.push((
                    format!("{variant}: HTTP/1.1 in-flight probe"),
                    format!("{:?}", out.h1),
                ));
                section.facts.push((
                    format!("{variant}: HTTP/2 in-flight probe"),
                    format!("{:?}", out.h2),
                ));
            }
            Err(e) => section.rows.push(Row::failed("waypoint", variant, &e)),
        }
    }
    section
}

async fn endpoint_section(setup: &Setup, quick: bool) -> Section {
    let mut section = Section {
        name: "endpoint-loss".into(),
        description: format!(
            "1000 rps open loop (32 HTTP/1.1 keep-alive connections, PROXY v2) to a Service with two endpoints (each answers after 10 ms). After {} s one endpoint's backend is killed (listener and connections dropped at once) and, at the same moment, its EndpointSlice is removed from the watched config (`--reload-interval 100ms`). Run with a route that retries (`retry: {{codes: [503], attempts: 2}}`: no request may fail) and without (failures must be clean 503s only). {LATENCY}",
            if quick { 2 } else { 5 }
        ),
        ..Default::default()
    };
    for retries in [true, false] {
        let variant = if retries {
            "with retry"
        } else {
            "without retry"
        };
        let plan = EndpointPlan {
            rate: 1000.0,
            connections: 32,
            delay: Duration::from_millis(10),
            before: Duration::from_secs(if quick { 2 } else { 5 }),
            after: Duration::from_secs(if quick { 1 } else { 3 }),
            retries,
        };
        match endpoints::run(setup, &plan).await {
            Ok(out) => {
                section.rows.push(row(variant, &out.tally));
                counts(&mut section, &format!("waypoint {variant}"), &out.tally);
                section.facts.push((
                    format!("{variant}: removal applied"),
                    format!(
                        "{} after the kill; all failures clean 503s: {}",
                        out.reload_after.map_or("never".into(), |d| format!(
                            "{:.0} ms",
                            d.as_secs_f64() * 1e3
                        )),
                        out.tally.failed_only_with(503)
                    ),
                ));
            }
            Err(e) => section.rows.push(Row::failed("waypoint", variant, &e)),
        }
    }
    section
}
