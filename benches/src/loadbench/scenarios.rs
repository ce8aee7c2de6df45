//! The scenarios: each runs the waypoint, then Envoy, then the direct floor, under the same
//! load, and returns its table.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::configs::{AUTHORITY, Job, client_identity};
use super::load::{self, Dialer, LoadSpec, Mode, Protocol};
use super::procs;
use super::report::{Row, Section};
use super::runner::{Bench, Running, config_version, proxy_header};
use super::tools;
use super::zeroloss;

/// Every scenario, in run order (`reload` to `endpoint-loss`: zero loss under change, waypoint
/// only; `allocations`: the waypoint library in this process).
pub const ALL: [&str; 13] = [
    "sandwich-h1",
    "sandwich-h2c",
    "fixed-rate",
    "idle-conns",
    "route-scale",
    "hbone",
    "plain-crosscheck",
    "tcp",
    "reload",
    "cert-rotation",
    "drain",
    "endpoint-loss",
    "allocations",
];

/// Runs scenario `name`.
pub async fn run(bench: &Bench, name: &str) -> Section {
    let mut section = match name {
        "sandwich-h1" => sandwich(bench, name, Protocol::Http1, 64).await,
        "sandwich-h2c" => sandwich(bench, name, Protocol::H2c { streams: 32 }, 8).await,
        "fixed-rate" => fixed_rate(bench).await,
        "idle-conns" => idle_conns(bench).await,
        "route-scale" => route_scale(bench).await,
        "hbone" => super::hbone::run(bench).await,
        "plain-crosscheck" => crosscheck(bench).await,
        "tcp" => super::tcp::run(bench).await,
        "allocations" => allocations(bench).await,
        zero_loss if zeroloss::sections::NAMES.contains(&zero_loss) => {
            zeroloss::sections::run(bench, zero_loss).await
        }
        other => Section {
            description: format!("unknown scenario; known: {}", ALL.join(", ")),
            name: other.into(),
            ..Default::default()
        },
    };
    section.name = name.into();
    section
}

fn spec(bench: &Bench, job: &Job, protocol: Protocol, connections: usize) -> LoadSpec {
    let (duration, warmup) = bench.durations();
    LoadSpec {
        connections,
        protocol,
        mode: Mode::Closed,
        warmup,
        duration,
        path: job.path(),
        authority: AUTHORITY.into(),
    }
}

fn sandwich_dialer(addr: SocketAddr, identity: &str) -> Dialer {
    Dialer::Tcp {
        addr,
        proxy_header: Some(proxy_header(identity)),
    }
}

fn direct(bench: &Bench) -> Dialer {
    Dialer::Tcp {
        addr: bench.upstream,
        proxy_header: None,
    }
}

/// Checks the 10 ALLOW policies are enforced: an identity outside them must get 403.
async fn policy_probe(who: &str, listen: SocketAddr, job: &Job, section: &mut Section) {
    let intruder = sandwich_dialer(listen, "spiffe://cluster.local/ns/intruder/sa/mallory");
    let allowed = sandwich_dialer(listen, &client_identity(job.policies));
    let a = load::probe(&allowed, &job.path(), AUTHORITY).await;
    let i = load::probe(&intruder, &job.path(), AUTHORITY).await;
    let verdict = match (&a, &i) {
        (Ok(200), Ok(403)) => "enforced (allowed identity 200, other identity 403)".to_owned(),
        (Ok(200), Ok(200)) => {
            section.notes.push(format!(
                "{who} did NOT enforce the {} AuthorizationPolicies (an identity outside them got 200): its rows carry no authorization cost",
                job.policies
            ));
            "NOT enforced (other identity got 200)".to_owned()
        }
        _ => {
            section.notes.push(format!(
                "{who} policy probe unexpected: allowed identity {a:?}, other identity {i:?}"
            ));
            format!("unexpected: allowed {a:?}, other {i:?}")
        }
    };
    section.facts.push((format!("{who} policy check"), verdict));
}

async fn sandwich(bench: &Bench, name: &str, protocol: Protocol, conns: usize) -> Section {
    let (what, conn_text) = match protocol {
        Protocol::Http1 => ("HTTP/1.1 keep-alive", format!("{conns} connections")),
        Protocol::H2c { streams } => (
            "h2c",
            format!("{conns} connections x {streams} concurrent streams"),
        ),
    };
    let mut section = Section {
        name: name.into(),
        description: format!(
            "{conn_text}, {what}, closed loop; each connection starts with a PROXY v2 header (TLV 0xD0 = client identity) as a co-located ztunnel writes it. 1 KiB answers, one HTTPRoute, 10 ALLOW AuthorizationPolicies (one principal each; the client matches the last). Envoy: proxy_protocol listener filter + set_filter_state (kgateway's sandwich waypoint) + RBAC on io.istio.peer_principal."
        ),
        ..Default::default()
    };
    for proxy in ["waypoint", "envoy"] {
        let row = async {
            let job = bench.job(true, 1, 10)?;
            let running = start(bench, proxy, &format!("{name}-{proxy}"), &job, &[]).await?;
            policy_probe(proxy, running.listen, &job, &mut section).await;
            let dialer = sandwich_dialer(running.listen, &client_identity(job.policies));
            let s = spec(bench, &job, protocol, conns);
            Ok::<_, String>(
                bench
                    .measure(proxy, "", Some(running.pid()), &dialer, &s)
                    .await,
            )
        }
        .await;
        section
            .rows
            .push(row.unwrap_or_else(|e| Row::failed(proxy, "", &e)));
    }
    let job = bench.job(true, 1, 10);
    if let Ok(job) = job {
        let s = spec(bench, &job, protocol, conns);
        section
            .rows
            .push(bench.measure("direct", "", None, &direct(bench), &s).await);
    }
    section
}

async fn start(
    bench: &Bench,
    proxy: &str,
    label: &str,
    job: &Job,
    extra: &[String],
) -> Result<Running, String> {
    if proxy == "waypoint" {
        bench.start_waypoint(label, job, extra).await
    } else {
        bench.start_envoy(label, job).await
    }
}

async fn fixed_rate(bench: &Bench) -> Section {
    let seconds = if bench.quick { 5 } else { 30 };
    let mut section = Section {
        description: format!(
            "Open loop: 1000 requests/s for {seconds} s over 16 HTTP/1.1 keep-alive connections with PROXY v2 headers, same job as sandwich-h1. The generator is a thread of its own that sleeps until {spin} µs before each due time, then spins, and writes the request itself; it reads the answers on the same thread. Latency from each request's scheduled send time (no coordinated omission); under each row, the same requests from the actual send, and the generator's own lateness (actual - scheduled send) in that run; then each proxy's added latency over direct. Compare CPU s/1000 req with Istio's published Envoy waypoint cost (about 0.25 vCPU at 1000 rps with 2 worker threads, i.e. 0.25 CPU s/1000 req).",
            spin = super::open_loop::SPIN.as_micros()
        ),
        ..Default::default()
    };
    let mk = |job: &Job| LoadSpec {
        connections: 16,
        protocol: Protocol::Http1,
        mode: Mode::Open { rate: 1000.0 },
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(seconds),
        path: job.path(),
        authority: AUTHORITY.into(),
    };
    for proxy in ["waypoint", "envoy"] {
        let row = async {
            let job = bench.job(true, 1, 10)?;
            let running = start(bench, proxy, &format!("fixed-{proxy}"), &job, &[]).await?;
            let dialer = sandwich_dialer(running.listen, &client_identity(job.policies));
            Ok::<_, String>(
                bench
                    .measure(proxy, "", Some(running.pid()), &dialer, &mk(&job))
                    .await,
            )
        }
        .await;
        section
            .rows
            .push(row.unwrap_or_else(|e| Row::failed(proxy, "", &e)));
    }
    if let Ok(job) = bench.job(true, 1, 10) {
        section.rows.push(
            bench
                .measure("direct", "", None, &direct(bench), &mk(&job))
                .await,
        );
    }
    section
}

/// Requests counted by `allocations` on each path (warm-up: a tenth as many); `--quick`
/// counts a tenth of that.
const ALLOCATION_REQUESTS: usize = 20_000;

async fn allocations(bench: &Bench) -> Section {
    let n = if bench.quick {
        ALLOCATION_REQUESTS / 10
    } else {
        ALLOCATION_REQUESTS
    };
    let mut section = Section {
        description: format!(
            "Heap allocations per request, counted by this process's global allocator (the system's, counting) with the waypoint library running in process: the sandwich-h1 job (PROXY v2 with the client identity, one HTTPRoute, 10 ALLOW AuthorizationPolicies, the 1 KiB upstream) over one keep-alive HTTP/1.1 connection, {n} requests after {} of warm-up; then the same requests straight to the upstream, and the difference is the waypoint's share. Envoy is not counted (its allocator is its own). Same measurement as `cargo bench -p waypoint-benches --bench allocations`.",
            n / 10
        ),
        ..Default::default()
    };
    match super::allocations::measure(n / 10, n).await {
        Ok(counts) => {
            for (what, c) in [
                (
                    "through the waypoint (client, waypoint, upstream)",
                    counts.through,
                ),
                ("direct to the upstream (client, upstream)", counts.direct),
                ("the waypoint's share", counts.share()),
            ] {
                section.facts.push((
                    what.into(),
                    format!(
                        "{:.1} allocations, {:.0} bytes per request",
                        c.allocations, c.bytes
                    ),
                ));
            }
        }
        Err(e) => section.notes.push(format!("not counted: {e}")),
    }
    section
}

async fn idle_conns(bench: &Bench) -> Section {
    let wanted = if bench.quick { 1_000 } else { 10_000 };
    let limit = procs::own_nofile_limit().unwrap_or(1024) as usize;
    let n = wanted.min(limit.saturating_sub(200));
    let mut section = Section {
        description: format!(
            "{n} HTTP/1.1 keep-alive connections, each with a PROXY v2 header and one request, then left idle for 1 s; peak RSS is the proxy's VmHWM, `rss after` its VmRSS with all connections open. Latency columns are those first requests (opened 200 at a time). Proxies get an open-file limit of 65,536 or this process's hard limit if lower (via prlimit)."
        ),
        ..Default::default()
    };
    if n < wanted {
        section.notes.push(format!(
            "only {n} connections: this process may open {limit} files (raise `ulimit -n`)"
        ));
    }
    if bench.peers.prlimit.is_none() {
        section
            .notes
            .push("prlimit missing: the proxies keep the inherited open-file limit".into());
    }
    for proxy in ["waypoint", "envoy"] {
        let row = async {
            let job = bench.job(true, 1, 10)?;
            let running = start(bench, proxy, &format!("idle-{proxy}"), &job, &[]).await?;
            let pid = running.pid();
            let before = procs::status_mib(pid, "VmRSS");
            let dialer = sandwich_dialer(running.listen, &client_identity(job.policies));
            let (held, r) = load::open_idle(&dialer, n, 200, &job.path(), AUTHORITY).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = procs::status_mib(pid, "VmRSS");
            let mut row = Row::from_load(proxy, "", &r, None);
            row.rps = None;
            row.rss_mib = procs::status_mib(pid, "VmHWM");
            if let (Some(b), Some(a)) = (before, after) {
                let per = (a - b) * 1024.0 / held.len().max(1) as f64;
                section.facts.push((
                    format!("{proxy} rss"),
                    format!(
                        "{b:.1} MiB before, {a:.1} MiB with {} idle connections ({per:.1} KiB each)",
                        held.len()
                    ),
                ));
            }
            drop(held);
            Ok::<_, String>(row)
        }
        .await;
        section
            .rows
            .push(row.unwrap_or_else(|e| Row::failed(proxy, "", &e)));
    }
    section
}

async fn route_scale(bench: &Bench) -> Section {
    let big = 10_000;
    let mut section = Section {
        description: format!(
            "64 HTTP/1.1 connections with PROXY v2 headers, no policies, 10 vs {big} HTTPRoutes (one PathPrefix rule each, equal length; the request matches the route of lowest precedence). waypoint: started with 10 routes, measured, then the {big}-route manifests are written over the watched config (poll interval 250 ms) and `reload` is the time until `/config_dump` shows the new version; then measured again. Envoy has no file reload in this setup: it is started with the {big}-route bootstrap, and its start-to-ready time is reported."
        ),
        ..Default::default()
    };
    // waypoint: 10 routes, reload to `big`, measure both.
    let wp = async {
        let job = bench.job(true, 10, 0)?;
        let extra = vec!["--reload-interval".to_owned(), "250ms".to_owned()];
        let running = bench.start_waypoint("routes-waypoint", &job, &extra).await?;
        let dialer = sandwich_dialer(running.listen, &client_identity(0));
        let small = bench
            .measure("waypoint", "10 routes", Some(running.pid()), &dialer, &spec(bench, &job, Protocol::Http1, 64))
            .await;
        let version = config_version(running.admin).await.unwrap_or(0);
        let mut big_job = job.clone();
        big_job.routes = big;
        let config = bench.dir.join("routes-waypoint/config");
        let tmp = bench.dir.join("routes-waypoint/manifests.yaml.tmp");
        std::fs::write(&tmp, super::configs::waypoint_manifests(&big_job))
            .map_err(|e| e.to_string())?;
        let written = Instant::now();
        std::fs::rename(&tmp, config.join("manifests.yaml")).map_err(|e| e.to_string())?;
        let mut reload = None;
        while written.elapsed() < Duration::from_secs(120) {
            if config_version(running.admin).await.is_some_and(|v| v > version) {
                reload = Some(written.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut rows = vec![small];
        match reload {
            Some(d) => {
                section.facts.push((
                    format!("waypoint reload 10 -> {big} routes"),
                    format!("{:.2} s (file written -> /config_dump shows the new version; includes up to one 250 ms poll)", d.as_secs_f64()),
                ));
                rows.push(
                    bench
                        .measure("waypoint", "10,000 routes", Some(running.pid()), &dialer, &spec(bench, &big_job, Protocol::Http1, 64))
                        .await,
                );
            }
            None => rows.push(Row::failed("waypoint", "10,000 routes", "reload not seen in 120 s")),
        }
        drop(running);
        // Start-to-ready with the big config, for comparison with Envoy's.
        let mut fresh = big_job.clone();
        fresh.listen_port = super::runner::free_port()?;
        fresh.admin_port = super::runner::free_port()?;
        if let Ok(r) = bench.start_waypoint("routes-waypoint-start", &fresh, &[]).await {
            section.facts.push((
                format!("waypoint start to ready with {big} routes"),
                format!("{:.2} s", r.startup.as_secs_f64()),
            ));
        }
        Ok::<_, String>(rows)
    }
    .await;
    match wp {
        Ok(rows) => section.rows.extend(rows),
        Err(e) => section.rows.push(Row::failed("waypoint", "10 routes", &e)),
    }
    for (routes, variant) in [(10, "10 routes"), (big, "10,000 routes")] {
        let row = async {
            let job = bench.job(true, routes, 0)?;
            let running = bench
                .start_envoy(&format!("routes-envoy-{routes}"), &job)
                .await?;
            if routes == big {
                section.facts.push((
                    format!("envoy start to ready with {big} routes"),
                    format!("{:.2} s", running.startup.as_secs_f64()),
                ));
            }
            let dialer = sandwich_dialer(running.listen, &client_identity(0));
            Ok::<_, String>(
                bench
                    .measure(
                        "envoy",
                        variant,
                        Some(running.pid()),
                        &dialer,
                        &spec(bench, &job, Protocol::Http1, 64),
                    )
                    .await,
            )
        }
        .await;
        section
            .rows
            .push(row.unwrap_or_else(|e| Row::failed("envoy", variant, &e)));
    }
    if let Ok(job) = bench.job(true, 10, 0) {
        section.rows.push(
            bench
                .measure(
                    "direct",
                    "",
                    None,
                    &direct(bench),
                    &spec(bench, &job, Protocol::Http1, 64),
                )
                .await,
        );
    }
    section
}

/// Runs a tool (wrk or h2load) on the load cores, sampling `pid`'s CPU around it.
async fn run_tool(
    bench: &Bench,
    program: &std::path::Path,
    args: Vec<String>,
    pid: Option<u32>,
) -> (String, Option<f64>) {
    let mut cmd = bench.pin.command(&bench.pin.load_cores, None, 0, program);
    cmd.args(&args);
    let ticks = bench.ticks;
    let before = pid.and_then(|p| procs::cpu_seconds(p, ticks));
    let out = tokio::task::spawn_blocking(move || cmd.output()).await;
    let after = pid.and_then(|p| procs::cpu_seconds(p, ticks));
    let text = match out {
        Ok(Ok(o)) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(Err(e)) => format!("cannot run {}: {e}", program.display()),
        Err(e) => e.to_string(),
    };
    let cpu = match (before, after) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    (text, cpu)
}

async fn crosscheck(bench: &Bench) -> Section {
    let (duration, _) = bench.durations();
    let secs = duration.as_secs().max(1);
    let mut section = Section {
        description: format!(
            "Plain HTTP (no PROXY header, no policies) measured by standard tools, {secs} s each: `wrk -t1 -c64` (HTTP/1.1) and `h2load -c8 -m32` (h2c), against the upstream and each proxy (waypoint with `--proxy-optional`, Envoy without the proxy_protocol listener filter). CPU per 1000 requests includes the tool's start-up; wrk gives no p99.9 and h2load no percentiles."
        ),
        ..Default::default()
    };
    let tools: Vec<(&str, Option<std::path::PathBuf>)> = vec![
        ("wrk h1", bench.peers.wrk.clone()),
        ("h2load h2c", bench.peers.h2load.clone()),
    ];
    for proxy in ["waypoint", "envoy", "direct"] {
        let setup = async {
            if proxy == "direct" {
                return Ok::<_, String>((None, bench.upstream, bench.job(false, 1, 0)?));
            }
            let job = bench.job(false, 1, 0)?;
            let running = start(
                bench,
                proxy,
                &format!("plain-{proxy}"),
                &job,
                &["--proxy-optional".to_owned()],
            )
            .await?;
            let listen = running.listen;
            Ok((Some(running), listen, job))
        }
        .await;
        let (running, addr, job) = match setup {
            Ok(x) => x,
            Err(e) => {
                for (variant, _) in &tools {
                    section.rows.push(Row::failed(proxy, variant, &e));
                }
                continue;
            }
        };
        let pid = running.as_ref().map(Running::pid);
        let url = format!("http://{addr}{}", job.path());
        for (variant, program) in &tools {
            let Some(program) = program else {
                section.rows.push(Row::failed(
                    proxy,
                    variant,
                    "not installed (benches/scripts/install-peers.sh)",
                ));
                continue;
            };
            let args: Vec<String> = if variant.starts_with("wrk") {
                vec![
                    "-t1".into(),
                    "-c64".into(),
                    format!("-d{secs}s"),
                    "--latency".into(),
                    "-H".into(),
                    format!("Host: {AUTHORITY}"),
                    url.clone(),
                ]
            } else {
                vec![
                    "-t1".into(),
                    "-c8".into(),
                    "-m32".into(),
                    "-D".into(),
                    secs.to_string(),
                    "-H".into(),
                    format!(":authority: {AUTHORITY}"),
                    url.clone(),
                ]
            };
            let (out, cpu) = run_tool(bench, program, args, pid).await;
            let mut row = if variant.starts_with("wrk") {
                tools::parse_wrk(proxy, variant, &out)
            } else {
                tools::parse_h2load(proxy, variant, &out)
            };
            if let (Some(cpu), Some(rps)) = (cpu, row.rps) {
                let n = rps * secs as f64;
                if n > 0.0 {
                    row.cpu_per_1000 = Some(cpu / (n / 1000.0));
                }
            }
            row.rss_mib = pid.and_then(|p| procs::status_mib(p, "VmHWM"));
            if proxy == "waypoint" && row.errors > 0 {
                section.notes.push(format!("waypoint answered non-2xx to {variant} without a PROXY header: it routes by the original destination, which a plain connection does not carry (expect 404), so this row measures the no-route path, not proxying"));
            }
            section.rows.push(row);
        }
        drop(running);
    }
    section
}
