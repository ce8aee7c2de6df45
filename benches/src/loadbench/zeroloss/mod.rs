//! Zero loss under change: the waypoint is reloaded, its certificates rotated, an endpoint
//! removed, or the process drained, while an open-loop load runs, and every request is
//! accounted for.
//!
//! Each scenario is a function taking its scale (rate, how many changes, how long), so the same
//! code is a `loadbench` scenario at the scale (1,000 rps, 100 reloads) against the
//! release binary and a test at a small scale (`waypoint-bin/tests/zero_loss.rs`) against the
//! debug one. Only the waypoint is measured: the question is loss, not speed.
//!
//! The counting is stricter than the throughput scenarios': there is no warm-up or window.
//! Every request the schedule produced is counted once, as succeeded (2xx) or failed by kind:
//! a non-2xx answer (by status), a connection that could not be opened, one that broke after
//! the request left (reset, closed early), or no answer within the timeout (a hang). A
//! request that never left because its connection was already closing (after a
//! `Connection: close` answer, or a GOAWAY), or that an HTTP/2 server declared unprocessed
//! (a stream above its final GOAWAY's last stream id, or REFUSED_STREAM: RFC 9113 makes both
//! safe to retry), is sent again on a new connection, as HTTP clients do; that is counted apart
//! (`resent`) and is not a failure. Where the backend's own count is exact (reload, drain), the
//! scenarios also check that it answered exactly as many requests as the clients saw succeed,
//! so a request processed and then lost cannot hide among the resent ones.

pub mod backend;
pub mod certs;
pub mod drain;
pub mod endpoints;
pub mod reload;
pub mod sections;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use super::configs::AUTHORITY;
use super::hist::Histogram;
use super::load::{Dialer, Exchange, Protocol, exchange, handshake};
use super::procs::Pinning;
use super::runner::{Running, free_port, http_get, launch_waypoint};

/// At most this many failure messages are kept, to say why.
const KEPT_ERRORS: usize = 5;

/// Every request of a run, by outcome.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Latency of the successful requests, from their scheduled send time.
    pub latency: Histogram,
    /// Requests the schedule produced (each counted once, whatever became of it).
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered with another status: count per status.
    pub statuses: BTreeMap<u16, u64>,
    /// No connection could be opened for them.
    pub connect_errors: u64,
    /// Sent, then the connection failed before the answer was complete.
    pub broken: u64,
    /// No complete answer within the timeout.
    pub timeouts: u64,
    /// Never left after three connections in a row were closing (counted as failed).
    pub unsent: u64,
    /// Sent again on a new connection because the old one was closing before they left, or
    /// the server declared them unprocessed (not failures: see the module documentation).
    pub resent: u64,
    /// Answers that carried `Connection: close`.
    pub closes: u64,
    /// The first few failures, in words.
    pub errors: Vec<String>,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl Tally {
    /// Non-2xx answers, all statuses together.
    pub fn non_2xx(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Every request that did not succeed.
    pub fn failed(&self) -> u64 {
        self.non_2xx() + self.connect_errors + self.broken + self.timeouts + self.unsent
    }

    /// True when every failure is an answer with `status` (no reset, hang or refused
    /// connection).
    pub fn failed_only_with(&self, status: u16) -> bool {
        self.failed() == self.statuses.get(&status).copied().unwrap_or(0)
    }

    fn note(&mut self, why: String) {
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(why);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency.merge(&other.latency);
        self.sent += other.sent;
        self.ok += other.ok;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.connect_errors += other.connect_errors;
        self.broken += other.broken;
        self.timeouts += other.timeouts;
        self.unsent += other.unsent;
        self.resent += other.resent;
        self.closes += other.closes;
        for e in other.errors {
            self.note(e);
        }
    }

    /// One line: sent, succeeded, failed by kind.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "sent {}, succeeded {}, failed {}",
            self.sent,
            self.ok,
            self.failed()
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("status {s}: {n}"))
            .collect();
        let _ = write!(
            out,
            " ({}connection refused/failed: {}, broken mid-request: {}, timed out: {}, never sent: {})",
            if statuses.is_empty() {
                String::new()
            } else {
                statuses.join(", ") + ", "
            },
            self.connect_errors,
            self.broken,
            self.timeouts,
            self.unsent
        );
        let _ = write!(
            out,
            "; resent (connection closing, or declared unprocessed): {}; answers with Connection: close: {}",
            self.resent, self.closes
        );
        if !self.errors.is_empty() {
            let _ = write!(out, "; first errors: {}", self.errors.join(" | "));
        }
        out
    }
}

/// An open-loop load: requests scheduled at a fixed rate, spread over connections that each
/// carry one request at a time.
#[derive(Clone, Debug)]
pub struct OpenLoad {
    /// Requests per second.
    pub rate: f64,
    /// Connections (and so the most requests in flight).
    pub connections: usize,
    /// HTTP flavour (HTTP/2 streams are one at a time per connection here).
    pub protocol: Protocol,
    /// Request path.
    pub path: String,
    /// Host / `:authority`.
    pub authority: String,
    /// A request without a complete answer after this long is a hang.
    pub timeout: Duration,
}

impl OpenLoad {
    /// HTTP/1.1 at `rate` over `connections`, to `path` on the benchmark's Service, with a 10 s
    /// hang timeout.
    pub fn new(rate: f64, connections: usize, path: &str) -> Self {
        OpenLoad {
            rate,
            connections,
            protocol: Protocol::Http1,
            path: path.to_owned(),
            authority: AUTHORITY.to_owned(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Starts the load through `dialer`; it runs until [`LoadHandle::stop`].
    pub fn start(&self, dialer: Dialer) -> LoadHandle {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        let rx = Arc::new(Mutex::new(rx));
        let load = Arc::new(self.clone());
        let mut tasks = JoinSet::new();
        for _ in 0..self.connections.max(1) {
            tasks.spawn(worker(dialer.clone(), load.clone(), rx.clone()));
        }
        let period = Duration::from_secs_f64(1.0 / self.rate.max(1e-3));
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = stop_rx.wait_for(|stop| *stop) => break,
                    _ = tokio::time::sleep_until(next) => {}
                }
                if tx.send(next.into_std()).is_err() {
                    break;
                }
                next += period;
            }
        });
        LoadHandle {
            stop: stop_tx,
            tasks,
            started: Instant::now(),
        }
    }
}

/// A running [`OpenLoad`].
#[derive(Debug)]
pub struct LoadHandle {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Tally>,
    started: Instant,
}

impl LoadHandle {
    /// How long it has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops scheduling, lets every scheduled request finish (each bounded by the timeout) and
    /// returns the counts.
    pub async fn stop(mut self) -> Tally {
        let _ = self.stop.send(true);
        let mut total = Tally {
            elapsed: self.started.elapsed(),
            ..Default::default()
        };
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(t) => total.merge(t),
                Err(e) => total.note(format!("load task failed: {e}")),
            }
        }
        total
    }
}

async fn worker(
    dialer: Dialer,
    load: Arc<OpenLoad>,
    schedule: Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>,
) -> Tally {
    let mut t = Tally::default();
    let mut sender = None;
    loop {
        let Some(scheduled) = schedule.lock().await.recv().await else {
            break;
        };
        t.sent += 1;
        for attempt in 0..3 {
            if sender.is_none() {
                let opened = tokio::time::timeout(load.timeout, async {
                    handshake(dialer.dial().await?, load.protocol).await
                })
                .await
                .unwrap_or_else(|_| Err("connect timed out".into()));
                match opened {
                    Ok(s) => sender = Some(s),
                    Err(e) => {
                        t.connect_errors += 1;
                        t.note(e);
                        break;
                    }
                }
            }
            let Some(s) = sender.as_mut() else { break };
            let answer =
                tokio::time::timeout(load.timeout, exchange(s, &load.path, &load.authority));
            match answer.await {
                Err(_) => {
                    t.timeouts += 1;
                    t.note(format!("no answer in {:?}", load.timeout));
                    sender = None;
                }
                Ok(Exchange::Answered { status, close }) => {
                    if close {
                        t.closes += 1;
                        sender = None;
                    }
                    if status.is_success() {
                        t.ok += 1;
                        t.latency.record(scheduled.elapsed());
                    } else {
                        *t.statuses.entry(status.as_u16()).or_default() += 1;
                        t.note(format!("status {status}"));
                    }
                }
                Ok(Exchange::NotSent(e)) => {
                    sender = None;
                    if attempt < 2 {
                        t.resent += 1;
                        continue;
                    }
                    t.unsent += 1;
                    t.note(e);
                }
                Ok(Exchange::Broken(e)) => {
                    t.broken += 1;
                    t.note(e);
                    sender = None;
                }
            }
            break;
        }
    }
    t
}

/// Where the scenarios run: which waypoint binary, a scratch directory, and (in loadbench)
/// the cores to pin it to.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The `waypoint` binary.
    pub bin: PathBuf,
    /// Scratch directory (configs, logs, certificates).
    pub dir: PathBuf,
    /// Pin the waypoint to its core, as the other loadbench scenarios do.
    pub pin: Option<Pinning>,
    /// Environment variables every waypoint started here gets (e.g. `WAYPOINT_DRAIN_GRACE`).
    pub env: Vec<(String, String)>,
}

impl Setup {
    /// The config directory of the waypoint labelled `label`.
    pub fn config_dir(&self, label: &str) -> PathBuf {
        self.dir.join(label).join("config")
    }

    /// Replaces the watched manifests of `label` atomically (write aside, then rename), as a
    /// ConfigMap update does: the waypoint never reads half a file.
    pub fn write_config(&self, label: &str, manifests: &str) -> Result<(), String> {
        let dir = self.config_dir(label);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = self.dir.join(label).join("manifests.yaml.tmp");
        std::fs::write(&tmp, manifests).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join("manifests.yaml")).map_err(|e| e.to_string())
    }

    /// Starts `waypoint run` labelled `label` on `manifests` (one worker thread, config polled
    /// every 100 ms unless `extra` says otherwise) with a sandwich listener unless `extra` has
    /// `--no-sandwich`, and waits until it is ready.
    pub async fn start_waypoint(
        &self,
        label: &str,
        manifests: &str,
        extra: &[String],
    ) -> Result<Running, String> {
        self.write_config(label, manifests)?;
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut cmd = match &self.pin {
            Some(pin) => pin.command(&pin.proxy_cores, None, 0, &self.bin),
            None => Command::new(&self.bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_dir(label))
            .args(["--admin-addr", &admin.to_string(), "--worker-threads", "1"]);
        if !extra.iter().any(|a| a == "--reload-interval") {
            cmd.args(["--reload-interval", "100ms"]);
        }
        if !extra.iter().any(|a| a == "--no-sandwich") {
            cmd.args(["--sandwich-listen", &listen.to_string()]);
        }
        cmd.args(extra);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        launch_waypoint(
            cmd,
            &self.dir.join(label).join("waypoint.log"),
            listen,
            admin,
        )
        .await
    }
}

/// `waypoint_config_reloads_total{result="failed"}` from the admin server's `/metrics`.
pub async fn failed_reloads(admin: SocketAddr) -> Option<u64> {
    let (_, body) = http_get(admin, "/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.starts_with("waypoint_config_reloads_total{result=\"failed\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// A Service `name` at `vip`:80 whose endpoints are `endpoints`, one EndpointSlice each (so
/// each may have its own port), and no route.
pub fn service(name: &str, vip: &str, endpoints: &[SocketAddr]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {vip}\n  ports: [{{name: http, port: 80}}]\n"
    );
    for (i, e) in endpoints.iter().enumerate() {
        let _ = write!(
            out,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{i}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
            e.port(),
            e.ip()
        );
    }
    out
}

/// An HTTPRoute `name` attached to Service `echo` (port 80) with one rule whose body (after
/// `- `) is `rule`.
pub fn route(name: &str, rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo, port: 80}}]\n  rules:\n  - {rule}\n"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_every_failure_kind_and_says_which_are_only_a_status() {
        let mut t = Tally {
            sent: 10,
            ok: 7,
            ..Default::default()
        };
        t.statuses.insert(503, 2);
        assert!(t.failed_only_with(503));
        t.broken = 1;
        assert_eq!(t.failed(), 3);
        assert!(!t.failed_only_with(503));
        assert!(t.summary().contains("status 503: 2"), "{}", t.summary());
        assert!(t.summary().contains("broken mid-request: 1"));
    }

    #[test]
    fn services_get_one_endpoint_slice_per_endpoint() {
        let yaml = service(
            "echo",
            "10.96.0.10",
            &[
                "127.0.0.1:1000".parse().unwrap(),
                "127.0.0.1:2000".parse().unwrap(),
            ],
        );
        assert_eq!(yaml.matches("kind: EndpointSlice").count(), 2);
        assert!(yaml.contains("port: 2000"));
    }
}
