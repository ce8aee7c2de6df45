//! Starting, probing and stopping the systems under test: the upstream, a waypoint process and
//! an Envoy process configured for a [`Job`], with the proxy pinned to its own core.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use waypoint_core::tls::{CertPaths, CertStore};
use waypoint_core::upstream::{HboneClientOptions, HbonePool};
use waypoint_core::wire::proxy_protocol::encode_v2;

use super::configs::{self, Job, SERVICE_VIP, TLV_PEER_IDENTITY};
use super::load::{self, Dialer, LoadSpec};
use super::procs::{self, CpuWindow, Peers, Pinning, Proc};
use super::report::Row;

/// Identity of the waypoint's certificate (HBONE scenario, and Envoy's mTLS baseline).
pub const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/default/sa/waypoint";
/// Identity of the HBONE client (the client ztunnel).
pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/cart";
/// Identity of the destination ztunnel stand-in.
pub const DEST_ID: &str = "spiffe://cluster.local/ns/default/sa/echo";
/// An identity no AuthorizationPolicy of the runs allows (the policy probes' other client).
pub const INTRUDER_ID: &str = "spiffe://cluster.local/ns/intruder/sa/mallory";
/// ALLOW AuthorizationPolicies of the HTTP scenarios (one principal each).
pub const POLICIES: usize = 10;
/// The port of the destination ztunnel stand-in: both proxies reach a mesh endpoint at
/// `<endpoint ip>:15008`, so the endpoint gets a loopback address of its own, picked at random
/// in 127.88.0.0/16 so that runs side by side on one machine do not collide.
pub const DEST_HBONE_PORT: u16 = 15008;

/// A TCP port on 127.0.0.1 free at the time of asking, for a process started right after to
/// bind.
///
/// It is picked *below* the kernel's ephemeral range (`net.ipv4.ip_local_port_range`): a port
/// from that range (what binding port 0 returns) can be taken between our check and the
/// child's bind by any outgoing connection's source port, and the load tests open thousands.
/// Outgoing connections never take a port below the range, so only another test picking the
/// same random port at the same moment could collide.
pub fn free_port() -> Result<u16, String> {
    let low = ephemeral_range_start().unwrap_or(32768);
    if low > FIRST_PICKED_PORT + 1000 {
        for _ in 0..64 {
            let port = fastrand::u16(FIRST_PICKED_PORT..low);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The lowest port [`free_port`] picks: above the well-known and common service ports.
const FIRST_PICKED_PORT: u16 = 10000;

/// The first port of the kernel's ephemeral range, where Linux says.
fn ephemeral_range_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// A GET to `addr` over a fresh connection: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// The PROXY v2 header a co-located ztunnel writes for a client with `identity`.
pub fn proxy_header(identity: &str) -> Arc<Vec<u8>> {
    let source: SocketAddr = SocketAddr::from(([10, 244, 0, 7], 43210));
    let dest: SocketAddr = SERVICE_VIP
        .parse()
        .unwrap_or(SocketAddr::from(([10, 96, 0, 10], 80)));
    Arc::new(encode_v2(
        source,
        dest,
        &[(TLV_PEER_IDENTITY, identity.as_bytes())],
    ))
}

/// Everything a run shares: peers, pinning, scratch directory, the upstream, certificates.
pub struct Bench {
    /// Programs found.
    pub peers: Peers,
    /// Cores.
    pub pin: Pinning,
    /// Short runs.
    pub quick: bool,
    /// Scratch directory (configs, logs, certificates).
    pub dir: PathBuf,
    /// `/proc` clock ticks per second.
    pub ticks: f64,
    /// The 1 KiB upstream.
    pub upstream: SocketAddr,
    /// The destination ztunnel stand-in, when it could bind.
    pub dest_hbone: Option<SocketAddr>,
    /// The TCP echo backend of the `tcp` scenario (same upstream process).
    pub tcp_echo: Option<SocketAddr>,
    /// Certificates (Istio layout) under `dir/certs/{waypoint,client,echo}`, when minted.
    pub certs: Option<PathBuf>,
    _upstream_proc: Proc,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bench({})", self.dir.display())
    }
}

/// A proxy process under test.
#[derive(Debug)]
pub struct Running {
    /// The process.
    pub proc: Proc,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Spawn to ready.
    pub startup: Duration,
}

impl Running {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

fn mint_certs(waypoint: &Path, dir: &Path) -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new(waypoint)
            .arg("certs")
            .args(args)
            .output()
            .map_err(|e| format!("waypoint certs: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "waypoint certs {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let ca = dir.join("ca");
    let ca_s = ca.display().to_string();
    run(&["ca", "--out", &ca_s, "--trust-domain", "cluster.local"])?;
    // `allowed` is the HBONE scenario's client: the identity the last AuthorizationPolicy
    // allows, as the sandwich scenarios' PROXY headers name it.
    let allowed = configs::client_identity(POLICIES);
    for (name, id) in [
        ("waypoint", WAYPOINT_ID),
        ("client", CLIENT_ID),
        ("echo", DEST_ID),
        ("allowed", allowed.as_str()),
        ("intruder", INTRUDER_ID),
    ] {
        let out = dir.join(name).display().to_string();
        run(&["issue", "--ca", &ca_s, "--identity", id, "--out", &out])?;
    }
    Ok(())
}

impl Bench {
    /// Mints certificates with `waypoint certs`, starts the upstream (and the destination
    /// ztunnel stand-in) on the load cores.
    pub fn start(peers: Peers, pin: Pinning, quick: bool, dir: PathBuf) -> Result<Bench, String> {
        let waypoint = peers.waypoint.clone().ok_or("waypoint binary missing")?;
        let certs_dir = dir.join("certs");
        let certs = match mint_certs(&waypoint, &certs_dir) {
            Ok(()) => Some(certs_dir),
            Err(e) => {
                eprintln!("warning: {e}; the hbone scenario will fail");
                None
            }
        };
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let start_upstream = |hbone: Option<SocketAddr>| -> Result<(Proc, Vec<String>), String> {
            let mut cmd = pin.command(&pin.load_cores, None, 0, &exe);
            cmd.arg("upstream");
            if let (Some(addr), Some(c)) = (hbone, &certs) {
                cmd.args(["--hbone", &addr.to_string(), "--certs"])
                    .arg(c.join("echo"));
            }
            let log = dir.join(format!("upstream-{}.log", hbone.is_some()));
            let p = Proc::spawn("upstream", cmd, &log)?;
            wait_ready(p, &log, Instant::now())
        };
        let mut started = Err("no certificates: no HBONE stand-in".to_owned());
        for _ in 0..if certs.is_some() { 3 } else { 0 } {
            let ip = std::net::Ipv4Addr::new(127, 88, fastrand::u8(1..=254), fastrand::u8(1..=254));
            let addr = SocketAddr::from((ip, DEST_HBONE_PORT));
            started = start_upstream(Some(addr));
            match &started {
                Ok(_) => break,
                Err(e) => eprintln!("warning: upstream with HBONE stand-in on {addr} failed ({e})"),
            }
        }
        let (proc_, lines) = match started {
            Ok(x) => x,
            Err(_) => start_upstream(None)?,
        };
        let find = |prefix: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        };
        let upstream = find("http ").ok_or("upstream printed no address")?;
        Ok(Bench {
            ticks: procs::clock_ticks(),
            dest_hbone: find("hbone "),
            tcp_echo: find("tcp-echo "),
            upstream,
            certs,
            peers,
            pin,
            quick,
            dir,
            _upstream_proc: proc_,
        })
    }

    /// Measured window, warm-up.
    pub fn durations(&self) -> (Duration, Duration) {
        if self.quick {
            (Duration::from_secs(2), Duration::from_millis(500))
        } else {
            (Duration::from_secs(20), Duration::from_secs(3))
        }
    }

    /// `prlimit` and the open-file limit to give proxies: 65,536 (enough for the
    /// idle-connections scenario) or the hard limit if lower; no prlimit when the inherited soft
    /// limit is already that high.
    fn nofile(&self) -> (Option<&Path>, u64) {
        let (soft, hard) = procs::own_nofile_limits().unwrap_or((1024, 1024));
        let want = hard.min(65_536);
        if want <= soft {
            (None, soft)
        } else {
            (self.peers.prlimit.as_deref(), want)
        }
    }

    fn scratch(&self, label: &str) -> Result<PathBuf, String> {
        let d = self.dir.join(label);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(d)
    }

    /// Starts a waypoint for `job` (config written into a fresh directory `label`), with
    /// `extra` flags, and waits for `/healthz/ready`.
    pub async fn start_waypoint(
        &self,
        label: &str,
        job: &Job,
        extra: &[String],
    ) -> Result<Running, String> {
        self.start_waypoint_with(label, job, &configs::waypoint_manifests(job), extra)
            .await
    }

    /// [`Bench::start_waypoint`] with the given manifests instead of the HTTP job's.
    pub async fn start_waypoint_with(
        &self,
        label: &str,
        job: &Job,
        manifests: &str,
        extra: &[String],
    ) -> Result<Running, String> {
        let bin = self
            .peers
            .waypoint
            .as_ref()
            .ok_or("waypoint binary missing")?;
        let dir = self.scratch(label)?;
        let config = dir.join("config");
        std::fs::create_dir_all(&config).map_err(|e| e.to_string())?;
        std::fs::write(config.join("manifests.yaml"), manifests).map_err(|e| e.to_string())?;
        let listen = SocketAddr::from(([127, 0, 0, 1], job.listen_port));
        let admin = SocketAddr::from(([127, 0, 0, 1], job.admin_port));
        let (prlimit, nofile) = self.nofile();
        let mut cmd = self
            .pin
            .command(&self.pin.proxy_cores, prlimit, nofile, bin);
        cmd.arg("run").arg("--config").arg(&config).args([
            "--admin-addr",
            &admin.to_string(),
            "--worker-threads",
            "1",
        ]);
        if !extra.iter().any(|a| a == "--no-sandwich") {
            cmd.args(["--sandwich-listen", &listen.to_string()]);
        }
        cmd.args(extra);
        launch_waypoint(cmd, &dir.join("waypoint.log"), listen, admin).await
    }

    /// Starts Envoy for `job` (`--concurrency 1`) and waits for its admin `/ready`.
    pub async fn start_envoy(&self, label: &str, job: &Job) -> Result<Running, String> {
        self.start_envoy_with(label, job, &configs::envoy_yaml(job)?)
            .await
    }

    /// [`Bench::start_envoy`] with the given bootstrap (YAML) instead of the HTTP job's.
    pub async fn start_envoy_with(
        &self,
        label: &str,
        job: &Job,
        bootstrap: &str,
    ) -> Result<Running, String> {
        let bin = self
            .peers
            .envoy
            .as_ref()
            .ok_or("envoy not installed (benches/scripts/install-peers.sh)")?;
        let dir = self.scratch(label)?;
        let (prlimit, nofile) = self.nofile();
        let cmd = self
            .pin
            .command(&self.pin.proxy_cores, prlimit, nofile, bin);
        launch_envoy(cmd, job, bootstrap, &dir).await
    }

    /// A fresh job with new ports.
    pub fn job(&self, proxy_protocol: bool, routes: usize, policies: usize) -> Result<Job, String> {
        Ok(Job {
            listen_port: free_port()?,
            admin_port: free_port()?,
            upstream: self.upstream,
            proxy_protocol,
            routes,
            policies,
            tls: None,
            mesh_endpoints: false,
        })
    }

    /// Runs `spec` through `dialer`, sampling the CPU of `pid` inside the window and its peak
    /// RSS afterwards.
    pub async fn measure(
        &self,
        proxy: &str,
        variant: &str,
        pid: Option<u32>,
        dialer: &Dialer,
        spec: &LoadSpec,
    ) -> Row {
        let mut window = CpuWindow::new(pid, self.ticks);
        let r = load::run(dialer, spec, &mut window).await;
        let mut row = Row::from_load(proxy, variant, &r, window.used);
        row.rss_mib = pid.and_then(|p| procs::status_mib(p, "VmHWM"));
        row
    }

    /// The certificates directory and the destination ztunnel stand-in, which the HBONE
    /// scenarios need.
    pub fn hbone_destination(&self) -> Result<(&Path, SocketAddr), String> {
        match (&self.certs, self.dest_hbone) {
            (Some(certs), Some(dest)) => Ok((certs, dest)),
            _ => {
                Err("no certificates or no destination stand-in (see the warnings at start)".into())
            }
        }
    }

    /// An HBONE client pool, as a client ztunnel holding the certificate minted as `who`
    /// (`client`, `allowed`, `intruder`).
    pub fn hbone_client(&self, who: &str) -> Result<Arc<HbonePool>, String> {
        let certs = self.certs.as_ref().ok_or("no certificates")?;
        let store = CertStore::load(CertPaths::in_dir(certs.join(who)), Vec::new())
            .map_err(|e| e.to_string())?;
        Ok(HbonePool::new(store, HboneClientOptions::default()))
    }
}

/// Spawns a `waypoint run` command (logging to `log`) and waits for its admin server's
/// `/healthz/ready` (60 s at most).
pub async fn launch_waypoint(
    cmd: Command,
    log: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
) -> Result<Running, String> {
    let timeout = Duration::from_secs(60);
    launch(
        "waypoint",
        cmd,
        log,
        (listen, admin),
        "/healthz/ready",
        timeout,
    )
    .await
}

/// Spawns proxy `name` (logging to `log`) and waits up to `timeout` for a 200 from its admin
/// server (`addrs.1`) at `ready_path`.
/// Runs Envoy (`cmd`, not yet given arguments) on `bootstrap`, serving `job`'s ports, as every
/// row runs it: one worker thread, no hot restart, warnings only; its files in `dir`. Waits
/// until it is ready. The tests that run the real Envoy start it here too, unpinned.
pub(crate) async fn launch_envoy(
    mut cmd: Command,
    job: &Job,
    bootstrap: &str,
    dir: &Path,
) -> Result<Running, String> {
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, bootstrap).map_err(|e| e.to_string())?;
    cmd.arg("-c").arg(&config).args([
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ]);
    let admin = SocketAddr::from(([127, 0, 0, 1], job.admin_port));
    let listen = SocketAddr::from(([127, 0, 0, 1], job.listen_port));
    launch(
        "envoy",
        cmd,
        &dir.join("envoy.log"),
        (listen, admin),
        "/ready",
        Duration::from_secs(120),
    )
    .await
}

pub(crate) async fn launch(
    name: &str,
    cmd: Command,
    log: &Path,
    (listen, admin): (SocketAddr, SocketAddr),
    ready_path: &str,
    timeout: Duration,
) -> Result<Running, String> {
    let started = Instant::now();
    let mut proc_ = Proc::spawn(name, cmd, log)?;
    let ready = procs::wait_until(timeout, || async {
        matches!(http_get(admin, ready_path).await, Ok((200, _)))
    })
    .await;
    proc_.check_alive()?;
    if ready.is_none() {
        return Err(format!(
            "{name} not ready in {} s; log:\n{}",
            timeout.as_secs(),
            procs::log_tail(&proc_.log, 15)
        ));
    }
    Ok(Running {
        proc: proc_,
        listen,
        admin,
        startup: started.elapsed(),
    })
}

/// Whether the waypoint whose admin server is `admin` answers 200 on `/healthz/ready`.
pub async fn is_ready(admin: SocketAddr) -> bool {
    matches!(http_get(admin, "/healthz/ready").await, Ok((200, _)))
}

/// The config version the waypoint's `/config_dump` shows.
pub async fn config_version(admin: SocketAddr) -> Option<u64> {
    let (status, body) = http_get(admin, "/config_dump").await.ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["version"].as_u64()
}

/// Waits for the upstream child to print `ready`.
fn wait_ready(mut p: Proc, log: &Path, started: Instant) -> Result<(Proc, Vec<String>), String> {
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l == "ready") {
            return Ok((p, text.lines().map(String::from).collect()));
        }
        p.check_alive()?;
        if started.elapsed() > Duration::from_secs(10) {
            return Err("upstream did not start in 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
