//! The waypoint under test: a real `waypoint run` process reading the cluster the harness
//! plays (a config directory it writes, or its emulated API server), with its sandwich
//! listener and admin server on free loopback ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use waypoint_core::http::client::{SideCallError, SideClient};

/// How `/config_dump` is read: a dump of the whole suite's config is a few megabytes, and an
/// admin server that stops answering fails the read instead of hanging the suite.
const CONFIG_DUMP_CLIENT: SideClient = SideClient {
    timeout: Duration::from_secs(10),
    max_body: 64 * 1024 * 1024,
};

/// A running waypoint.
#[derive(Debug)]
pub struct Waypoint {
    child: Child,
    /// Its sandwich (PROXY v2) listener.
    pub sandwich: SocketAddr,
    /// Its admin server.
    pub admin: SocketAddr,
    /// Files mode: the directory the config is written to.
    config_dir: Option<PathBuf>,
    applied: u64,
}

/// Where the waypoint reads the cluster from.
#[derive(Clone, Debug)]
pub enum Launch {
    /// `--config DIR`: the harness writes `DIR/cluster.json`.
    Files(PathBuf),
    /// `--kube` with `KUBECONFIG` pointing at the harness's API server.
    Kube(PathBuf),
}

/// Why the waypoint could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Starting, writing config or talking to the admin server failed.
    #[error("{0}")]
    Io(String),
    /// A config was not applied in time.
    #[error("config version {want} not applied within {secs} s (at {have}); see the waypoint log")]
    NotApplied {
        /// The version waited for.
        want: u64,
        /// The version seen last.
        have: u64,
        /// How long was waited.
        secs: u64,
    },
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ProcessError + '_ {
    move |e| ProcessError::Io(format!("{what}: {e}"))
}

/// A free loopback port (bound, read and released; the waypoint binds it right after).
fn free_port() -> Result<SocketAddr, ProcessError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("free port"))?;
    l.local_addr().map_err(io("free port"))
}

impl Waypoint {
    /// Starts `binary` reading the cluster from `launch`, its log going to `log`.
    pub async fn start(
        binary: &Path,
        launch: &Launch,
        log: &Path,
    ) -> Result<Waypoint, ProcessError> {
        let sandwich = free_port()?;
        let admin = free_port()?;
        let log_file = std::fs::File::create(log).map_err(io("waypoint log"))?;
        let mut command = Command::new(binary);
        command.arg("run");
        let config_dir = match launch {
            Launch::Files(dir) => {
                command.arg("--config").arg(dir);
                Some(dir.clone())
            }
            Launch::Kube(kubeconfig) => {
                command.arg("--kube").env("KUBECONFIG", kubeconfig);
                command.args(["--controller-name", crate::apiserver::CONTROLLER_NAME]);
                None
            }
        };
        let child = command
            .args(["--sandwich-listen", &sandwich.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--reload-interval", "100ms", "--request-timeout", "15s"])
            .args(["--connect-timeout", "2s", "--drain-timeout", "1s"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(io("waypoint log"))?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProcessError::Io(format!("starting {}: {e}", binary.display())))?;
        let mut waypoint = Waypoint {
            child,
            sandwich,
            admin,
            config_dir,
            applied: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(dump) = waypoint.config_dump().await {
                waypoint.applied = dump["version"].as_u64().unwrap_or(0);
                if TcpStream::connect(sandwich).await.is_ok() {
                    return Ok(waypoint);
                }
            }
            if let Ok(Some(status)) = waypoint.child.try_wait() {
                return Err(ProcessError::Io(format!(
                    "waypoint exited at start: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(ProcessError::Io(
                    "waypoint did not start within 20 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes the cluster config and waits until the waypoint has applied it; returns the
    /// `/config_dump` of the applied snapshot.
    pub async fn apply(&mut self, config: &str) -> Result<Value, ProcessError> {
        let dir = self
            .config_dir
            .as_ref()
            .ok_or_else(|| ProcessError::Io("this waypoint reads no config files".into()))?;
        // Write beside and rename, so the watcher never reads half a file.
        let tmp = dir.join(".cluster.json.tmp");
        std::fs::write(&tmp, config).map_err(io("writing config"))?;
        std::fs::rename(&tmp, dir.join("cluster.json")).map_err(io("writing config"))?;
        self.await_snapshot().await
    }

    /// Waits until the waypoint has applied a snapshot newer than the last one seen; returns
    /// its `/config_dump`.
    pub async fn await_snapshot(&mut self) -> Result<Value, ProcessError> {
        let want = self.applied + 1;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut have = self.applied;
        while Instant::now() < deadline {
            if let Ok(dump) = self.config_dump().await {
                have = dump["version"].as_u64().unwrap_or(0);
                if have >= want {
                    self.applied = have;
                    return Ok(dump);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ProcessError::NotApplied {
            want,
            have,
            secs: 15,
        })
    }

    /// GET `/config_dump` from the admin server, through the waypoint's side-call client.
    pub async fn config_dump(&self) -> Result<Value, ProcessError> {
        let body = self.admin_get("/config_dump").await?;
        serde_json::from_slice(&body).map_err(|e| ProcessError::Io(format!("config_dump: {e}")))
    }

    /// GET `/metrics` (Prometheus text) from the admin server.
    pub async fn metrics(&self) -> Result<String, ProcessError> {
        let body = self.admin_get("/metrics").await?;
        String::from_utf8(body.to_vec()).map_err(|e| ProcessError::Io(format!("metrics: {e}")))
    }

    async fn admin_get(&self, path: &str) -> Result<Bytes, ProcessError> {
        let req = http::Request::get(path)
            .header(http::header::HOST, "admin")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ProcessError::Io(e.to_string()))?;
        let admin_error = |e: SideCallError| ProcessError::Io(format!("admin server: {e}"));
        CONFIG_DUMP_CLIENT
            .send(&self.admin.to_string(), req)
            .await
            .map_err(admin_error)?
            .body()
            .await
            .map_err(admin_error)
    }

    /// Stops the process.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
