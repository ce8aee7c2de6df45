//! The `tcp` scenario: a Service port carried as TCP, with L4 authorization, waypoint against
//! Envoy (`tcp_proxy` behind the network `rbac` filter), in front of a TCP echo backend.
//!
//! Each proxy gets the sandwich listener (PROXY v2 with the client identity in TLV 0xD0) and
//! the same ten ALLOW policies by principal (the client matches the last). Before measuring,
//! two probes: the allowed identity must get its bytes echoed (else the row fails and says what
//! came back instead; a waypoint built without the TCP path answers HTTP, or closes), and
//! another identity must be closed without an echo (else the report notes that the proxy did
//! not enforce the policies). Then:
//!
//! - `echo 1 KiB x64`: 64 connections, each in a closed loop echoing 1 KiB messages; msgs/s in
//!   the `rps` column, latency per round trip, CPU s per 1000 messages;
//! - `bulk`: one connection writing 1 GiB (`--quick`: 128 MiB) while reading the echo, then
//!   half-closing; throughput in GiB/s each way and CPU s per GiB echoed (each GiB crosses the
//!   proxy twice), reported as facts with the waypoint/Envoy ratios.
//!
//! `direct` rows run the same load straight to the backend.

pub mod configs;
pub mod echo;

use std::net::SocketAddr;

use super::configs::{Job, client_identity};
use super::load::Dialer;
use super::procs::{self, CpuWindow};
use super::report::{Row, Section, bulk_ratio_fact};
use super::runner::{Bench, Running, proxy_header};
use echo::{BulkResult, EchoSpec};

/// Bytes per echoed message.
pub const MESSAGE_BYTES: usize = 1024;
/// Concurrent echo connections.
pub const CONNECTIONS: usize = 64;
/// The bulk transfer of a full run; `--quick` moves [`QUICK_BULK_BYTES`].
pub const BULK_BYTES: u64 = 1 << 30;
/// The bulk transfer of a `--quick` run.
pub const QUICK_BULK_BYTES: u64 = 128 << 20;

const ECHO_VARIANT: &str = "echo 1 KiB x64";

fn sandwich(addr: SocketAddr, identity: &str) -> Dialer {
    Dialer::Tcp {
        addr,
        proxy_header: Some(proxy_header(identity)),
    }
}

fn echo_spec(bench: &Bench) -> EchoSpec {
    let (duration, warmup) = bench.durations();
    EchoSpec {
        connections: CONNECTIONS,
        message: MESSAGE_BYTES,
        warmup,
        duration,
    }
}

fn bulk_bytes(bench: &Bench) -> u64 {
    if bench.quick {
        QUICK_BULK_BYTES
    } else {
        BULK_BYTES
    }
}

/// What one proxy (or the direct path) measured.
struct Measured {
    echo: Row,
    bulk: Result<(BulkResult, Option<f64>), String>,
}

async fn measure(bench: &Bench, who: &str, pid: Option<u32>, dialer: &Dialer) -> Measured {
    let mut window = CpuWindow::new(pid, bench.ticks);
    let r = echo::run_echo(dialer, echo_spec(bench), &mut window).await;
    let mut row = Row::from_load(who, ECHO_VARIANT, &r, window.used);
    row.rss_mib = pid.and_then(|p| procs::status_mib(p, "VmHWM"));
    let mut window = CpuWindow::new(pid, bench.ticks);
    let bulk = echo::run_bulk(dialer, bulk_bytes(bench), &mut window)
        .await
        .map(|b| (b, window.used));
    Measured { echo: row, bulk }
}

/// The allowed identity must be echoed; another one must not be. Fails when the proxy does not
/// carry TCP at all.
async fn probes(
    who: &str,
    listen: SocketAddr,
    job: &Job,
    section: &mut Section,
) -> Result<(), String> {
    let allowed = sandwich(listen, &client_identity(job.policies));
    echo::probe(&allowed, MESSAGE_BYTES).await.map_err(|e| {
        format!("{who} did not echo for the allowed identity ({e}); a waypoint without the TCP proxy path (issue 15) answers as HTTP or closes")
    })?;
    let intruder = sandwich(listen, "spiffe://cluster.local/ns/intruder/sa/mallory");
    let verdict = match echo::probe(&intruder, MESSAGE_BYTES).await {
        Err(why) => format!("enforced (allowed identity echoed; other identity: {why})"),
        Ok(()) => {
            section.notes.push(format!(
                "{who} did NOT enforce the {} AuthorizationPolicies on TCP (another identity was echoed): its rows carry no authorization cost",
                job.policies
            ));
            "NOT enforced (other identity echoed)".into()
        }
    };
    section.facts.push((format!("{who} policy check"), verdict));
    Ok(())
}

async fn start(bench: &Bench, proxy: &str, job: &Job) -> Result<Running, String> {
    let label = format!("tcp-{proxy}");
    if proxy == "waypoint" {
        let manifests = configs::waypoint_manifests(job);
        bench
            .start_waypoint_with(&label, job, &manifests, &[])
            .await
    } else {
        bench
            .start_envoy_with(&label, job, &configs::envoy_yaml(job)?)
            .await
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Records a bulk result as a fact; returns (GiB/s, CPU s per GiB) for the ratios.
fn bulk_fact(
    section: &mut Section,
    who: &str,
    bulk: &Result<(BulkResult, Option<f64>), String>,
) -> Option<(f64, Option<f64>)> {
    let key = format!("{who} bulk");
    match bulk {
        Ok((b, cpu)) => {
            let per_gib = cpu.map(|c| c / gib(b.bytes).max(1e-9));
            let cpu_text =
                per_gib.map_or_else(String::new, |c| format!(", CPU {c:.3} s per GiB echoed"));
            section.facts.push((
                key,
                format!(
                    "{:.2} GiB echoed in {:.2} s: {:.2} GiB/s each way{cpu_text}",
                    gib(b.bytes),
                    b.elapsed.as_secs_f64(),
                    b.gib_per_s()
                ),
            ));
            Some((b.gib_per_s(), per_gib))
        }
        Err(e) => {
            section.facts.push((key, format!("FAILED: {e}")));
            None
        }
    }
}

/// Runs the `tcp` scenario.
pub async fn run(bench: &Bench) -> Section {
    let mut section = Section {
        description: format!(
            "TCP with L4 authorization: Service port named `{}` (TCP by Istio's port-name rule), PROXY v2 sandwich listener, 10 ALLOW AuthorizationPolicies by principal (the client matches the last), a TCP echo backend. `{ECHO_VARIANT}`: {CONNECTIONS} connections each echoing {MESSAGE_BYTES}-byte messages in a closed loop (rps = messages/s, CPU per 1000 messages). Bulk: one connection echoing {:.2} GiB with half-close at the end (facts: GiB/s each way, CPU s per GiB echoed). Envoy: proxy_protocol listener filter + set_filter_state + network RBAC on io.istio.peer_principal + tcp_proxy.",
            configs::PORT_NAME,
            gib(bulk_bytes(bench)),
        ),
        ..Default::default()
    };
    let Some(backend) = bench.tcp_echo else {
        for who in ["waypoint", "envoy", "direct"] {
            section.rows.push(Row::failed(
                who,
                ECHO_VARIANT,
                "the upstream started no TCP echo",
            ));
        }
        return section;
    };
    let mut bulk = Vec::new();
    for proxy in ["waypoint", "envoy"] {
        let measured = async {
            let mut job = bench.job(true, 1, 10)?;
            job.upstream = backend;
            let running = start(bench, proxy, &job).await?;
            probes(proxy, running.listen, &job, &mut section).await?;
            let dialer = sandwich(running.listen, &client_identity(job.policies));
            Ok::<_, String>(measure(bench, proxy, Some(running.pid()), &dialer).await)
        }
        .await;
        match measured {
            Ok(m) => {
                section.rows.push(m.echo);
                bulk.push((proxy, bulk_fact(&mut section, proxy, &m.bulk)));
            }
            Err(e) => {
                section.rows.push(Row::failed(proxy, ECHO_VARIANT, &e));
                section.facts.push((
                    format!("{proxy} bulk"),
                    "not run: the proxy failed its probe".into(),
                ));
            }
        }
    }
    let direct = Dialer::Tcp {
        addr: backend,
        proxy_header: None,
    };
    let m = measure(bench, "direct", None, &direct).await;
    section.rows.push(m.echo);
    bulk_fact(&mut section, "direct", &m.bulk);
    let find = |who: &str| bulk.iter().find(|(p, _)| *p == who).and_then(|(_, b)| *b);
    if let (Some(w), Some(e)) = (find("waypoint"), find("envoy")) {
        section.facts.push(bulk_ratio_fact(w, e));
    }
    section
}

#[cfg(test)]
mod tests;
