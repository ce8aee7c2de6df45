//! The `hbone` scenario: both proxies as native HBONE waypoints, HBONE in and HBONE out.
//!
//! A client ztunnel (an [`HbonePool`](waypoint_core::upstream::HbonePool) holding the
//! certificate of the identity the last AuthorizationPolicy allows) opens one CONNECT tunnel
//! per load connection to the proxy's HBONE port, naming the Service VIP; the proxy terminates
//! mutual TLS and the CONNECT, routes the HTTP/1.1 inside (one HTTPRoute, 10 ALLOW
//! AuthorizationPolicies by principal, the principal being the tunnel's client certificate),
//! and sends the request on through a tunnel of its own, mutual TLS with its own certificate,
//! to the destination ztunnel stand-in at `<pod ip>:15008`, which copies it to the upstream.
//!
//! - waypoint: `--hbone-listen` and `--upstream auto` (the namespace is in the mesh);
//! - Envoy: the bootstrap of [`configs`], shaped as istiod builds its waypoint
//!   (`connect_terminate` → internal listener `main_internal` → `connect_originate`);
//! - direct: the same tunnels straight to the stand-in, one HBONE hop instead of two.
//!
//! Each proxy is first probed with the allowed identity (must get 200, else its row fails) and
//! with another one (must get 403, else the report says the policies were not enforced). Then
//! 64 tunnels carry keep-alive requests in a closed loop (rps, latency, CPU s per 1000
//! requests), and one tunnel carries one bulk answer of 1 GiB (`--quick`: 128 MiB), reported as
//! facts: GiB/s and CPU s per GiB, with the ratios waypoint/Envoy and each proxy/direct.

pub mod configs;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use waypoint_core::tls::ExpectedIdentity;

use super::configs::{AUTHORITY, Job, SERVICE_VIP};
use super::load::{self, Dialer, LoadSpec, Mode, Protocol, Window};
use super::procs::CpuWindow;
use super::report::{Row, Section, bulk_ratio_fact};
use super::runner::{Bench, DEST_ID, POLICIES, Running, WAYPOINT_ID};
use super::upstream::bulk_path;

/// Tunnels of the request load.
pub const CONNECTIONS: usize = 64;
/// The bulk answer of a full run; `--quick` moves [`QUICK_BULK_BYTES`].
pub const BULK_BYTES: u64 = 1 << 30;
/// The bulk answer of a `--quick` run.
pub const QUICK_BULK_BYTES: u64 = 128 << 20;
/// A bulk transfer slower than this fails (1 GiB at 40 MiB/s).
const BULK_TIMEOUT: Duration = Duration::from_secs(25);

fn bulk_bytes(bench: &Bench) -> u64 {
    if bench.quick {
        QUICK_BULK_BYTES
    } else {
        BULK_BYTES
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Tunnels through `via` to `target` as the client minted `who`, expecting `peer` there.
fn dialer(
    bench: &Bench,
    who: &str,
    via: SocketAddr,
    target: SocketAddr,
    peer: &str,
) -> Result<Dialer, String> {
    Ok(Dialer::Hbone {
        pool: bench.hbone_client(who)?,
        via,
        target,
        expected: vec![ExpectedIdentity::Exact(
            peer.parse().map_err(|e| format!("{peer}: {e}"))?,
        )],
    })
}

fn load_spec(bench: &Bench, job: &Job) -> LoadSpec {
    let (duration, warmup) = bench.durations();
    LoadSpec {
        connections: CONNECTIONS,
        protocol: Protocol::Http1,
        mode: Mode::Closed,
        warmup,
        duration,
        path: job.path(),
        authority: AUTHORITY.into(),
    }
}

/// One bulk transfer: bytes received, time from the request to the last byte.
#[derive(Clone, Copy, Debug)]
pub struct Bulk {
    /// Body bytes received.
    pub bytes: u64,
    /// Request sent to last byte received.
    pub elapsed: Duration,
    /// The proxy's CPU seconds meanwhile.
    pub cpu: Option<f64>,
}

impl Bulk {
    /// GiB per second.
    pub fn gib_per_s(&self) -> f64 {
        gib(self.bytes) / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU seconds per GiB carried.
    pub fn cpu_per_gib(&self) -> Option<f64> {
        self.cpu.map(|c| c / gib(self.bytes).max(1e-9))
    }
}

/// GETs `bytes` bytes through one fresh tunnel of `dialer` (HTTP/1.1), timing from the request
/// to the last byte; `window` brackets the same span. Fails on a non-200 answer, on a short or
/// long body, or after [`BULK_TIMEOUT`].
pub async fn bulk(
    dialer: &Dialer,
    path: &str,
    bytes: u64,
    window: &mut CpuWindow,
) -> Result<Bulk, String> {
    let io = dialer.dial().await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("bulk handshake: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(bulk_path(path, bytes))
        .header(http::header::HOST, AUTHORITY)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    window.begin();
    let started = Instant::now();
    let transfer = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("bulk request: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("bulk answer: status {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("bulk body after {got} bytes: {e}"))?;
            if let Some(data) = frame.data_ref() {
                got += data.len() as u64;
            }
        }
        Ok(got)
    };
    let got = tokio::time::timeout(BULK_TIMEOUT, transfer)
        .await
        .map_err(|_| format!("bulk transfer not done in {} s", BULK_TIMEOUT.as_secs()))??;
    let elapsed = started.elapsed();
    window.end();
    if got != bytes {
        return Err(format!("bulk body of {got} bytes, {bytes} asked for"));
    }
    Ok(Bulk {
        bytes: got,
        elapsed,
        cpu: window.used,
    })
}

/// The allowed identity must get 200; another one 403 (the verdict becomes a fact, a miss a
/// note). An allowed identity refused fails the proxy's rows.
async fn probes(
    bench: &Bench,
    who: &str,
    via: SocketAddr,
    job: &Job,
    section: &mut Section,
) -> Result<(), String> {
    let vip: SocketAddr = SERVICE_VIP.parse().map_err(|e| format!("{e}"))?;
    let allowed = dialer(bench, "allowed", via, vip, WAYPOINT_ID)?;
    match load::probe(&allowed, &job.path(), AUTHORITY).await {
        Ok(200) => {}
        other => return Err(format!("the allowed identity got {other:?}, not 200")),
    }
    let intruder = dialer(bench, "intruder", via, vip, WAYPOINT_ID)?;
    let verdict = match load::probe(&intruder, &job.path(), AUTHORITY).await {
        Ok(403) => "enforced (allowed identity 200, other identity 403)".to_owned(),
        other => {
            section.notes.push(format!(
                "{who} did NOT enforce the {} AuthorizationPolicies on the tunnel's identity (another identity got {other:?}): its rows carry no authorization cost",
                job.policies
            ));
            format!("NOT enforced (other identity got {other:?})")
        }
    };
    section.facts.push((format!("{who} policy check"), verdict));
    Ok(())
}

async fn start(
    bench: &Bench,
    proxy: &str,
    job: &Job,
    certs: &std::path::Path,
) -> Result<Running, String> {
    let label = format!("hbone-{proxy}");
    if proxy == "waypoint" {
        let hbone = SocketAddr::from(([127, 0, 0, 1], job.listen_port)).to_string();
        let certs = certs.join("waypoint").display().to_string();
        let extra: Vec<String> = [
            "--no-sandwich",
            "--hbone-listen",
            &hbone,
            "--certs-dir",
            &certs,
            "--upstream",
            "auto",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        bench.start_waypoint(&label, job, &extra).await
    } else {
        bench
            .start_envoy_with(&label, job, &configs::envoy_yaml(job)?)
            .await
    }
}

/// Records a bulk result as a fact.
fn bulk_fact(section: &mut Section, who: &str, bulk: &Result<Bulk, String>) {
    let text = match bulk {
        Ok(b) => {
            let cpu = b
                .cpu_per_gib()
                .map_or_else(String::new, |c| format!(", proxy CPU {c:.3} s per GiB"));
            format!(
                "{:.2} GiB in {:.2} s: {:.2} GiB/s{cpu}",
                gib(b.bytes),
                b.elapsed.as_secs_f64(),
                b.gib_per_s()
            )
        }
        Err(e) => format!("FAILED: {e}"),
    };
    section.facts.push((format!("{who} bulk"), text));
}

/// Runs the `hbone` scenario.
pub async fn run(bench: &Bench) -> Section {
    let mut section = Section {
        description: format!(
            "Both proxies as native HBONE waypoints: {CONNECTIONS} HTTP/1.1 keep-alive connections, each inside its own HBONE tunnel (mutual TLS 1.3, HTTP/2 CONNECT to the Service VIP, pooled as a client ztunnel pools them; the client certificate's identity is the one the last of {POLICIES} ALLOW AuthorizationPolicies allows), one HTTPRoute; out through the proxy's own HBONE tunnel (its certificate, mutual TLS, CONNECT to <pod ip>:15008) to a destination-ztunnel stand-in in front of the upstream. waypoint: `--hbone-listen`, `--upstream auto`. Envoy: Istio's waypoint shape (CONNECT terminated into internal listener main_internal, HTTP routing + RBAC on io.istio.peer_principal there, CONNECT originated through internal listener connect_originate). direct: the same tunnels straight to the stand-in (one HBONE hop instead of two). Bulk (facts): one tunnel, one {:.2} GiB answer.",
            gib(bulk_bytes(bench))
        ),
        ..Default::default()
    };
    let (certs, dest) = match bench.hbone_destination() {
        Ok(found) => found,
        Err(e) => {
            for who in ["waypoint", "envoy", "direct"] {
                section.rows.push(Row::failed(who, "", &e));
            }
            return section;
        }
    };
    let pod = SocketAddr::new(dest.ip(), bench.upstream.port());
    let mut bulks = Vec::new();
    for proxy in ["waypoint", "envoy"] {
        let measured = async {
            let mut job = bench.job(false, 1, POLICIES)?;
            job.mesh_endpoints = true;
            job.upstream = pod;
            job.tls = Some(certs.join("waypoint"));
            let running = start(bench, proxy, &job, certs).await?;
            let via = SocketAddr::from(([127, 0, 0, 1], job.listen_port));
            probes(bench, proxy, via, &job, &mut section).await?;
            let vip: SocketAddr = SERVICE_VIP.parse().map_err(|e| format!("{e}"))?;
            let load = dialer(bench, "allowed", via, vip, WAYPOINT_ID)?;
            let pid = running.pid();
            let row = bench
                .measure(proxy, "", Some(pid), &load, &load_spec(bench, &job))
                .await;
            let one = dialer(bench, "allowed", via, vip, WAYPOINT_ID)?;
            let mut window = CpuWindow::new(Some(pid), bench.ticks);
            let b = bulk(&one, &job.path(), bulk_bytes(bench), &mut window).await;
            Ok::<_, String>((row, b))
        }
        .await;
        match measured {
            Ok((row, b)) => {
                section.rows.push(row);
                bulk_fact(&mut section, proxy, &b);
                bulks.push((proxy, b.ok()));
            }
            Err(e) => {
                section.rows.push(Row::failed(proxy, "", &e));
                section
                    .facts
                    .push((format!("{proxy} bulk"), "not run: the proxy failed".into()));
            }
        }
    }
    let direct = async {
        let job = bench.job(false, 1, 0)?;
        let tunnels = dialer(bench, "allowed", dest, pod, DEST_ID)?;
        let mut row = bench
            .measure("direct", "", None, &tunnels, &load_spec(bench, &job))
            .await;
        row.note = format!("one HBONE hop to the stand-in. {}", row.note);
        let one = dialer(bench, "allowed", dest, pod, DEST_ID)?;
        let mut window = CpuWindow::new(None, bench.ticks);
        let b = bulk(&one, &job.path(), bulk_bytes(bench), &mut window).await;
        Ok::<_, String>((row, b))
    }
    .await;
    match direct {
        Ok((row, b)) => {
            section.rows.push(row);
            bulk_fact(&mut section, "direct", &b);
            bulks.push(("direct", b.ok()));
        }
        Err(e) => section.rows.push(Row::failed("direct", "", &e)),
    }
    ratios(&mut section, &bulks);
    section
}

/// The bulk ratios: waypoint/Envoy (throughput and CPU per GiB), and each proxy/direct.
fn ratios(section: &mut Section, bulks: &[(&str, Option<Bulk>)]) {
    let find = |who: &str| bulks.iter().find(|(p, _)| *p == who).and_then(|(_, b)| *b);
    if let (Some(w), Some(e)) = (find("waypoint"), find("envoy")) {
        section.facts.push(bulk_ratio_fact(
            (w.gib_per_s(), w.cpu_per_gib()),
            (e.gib_per_s(), e.cpu_per_gib()),
        ));
    }
    if let Some(d) = find("direct") {
        let of = |who: &str| {
            find(who).map_or("-".to_owned(), |b| {
                format!("{:.2}x", b.gib_per_s() / d.gib_per_s().max(1e-9))
            })
        };
        section.facts.push((
            "bulk throughput / direct (one HBONE hop)".into(),
            format!("waypoint {}, envoy {}", of("waypoint"), of("envoy")),
        ));
    }
}

#[cfg(test)]
mod tests;
