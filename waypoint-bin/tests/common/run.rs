//! An echo backend and a `waypoint run` process on a TCP sandwich listener, driven from
//! synchronous tests: what the flag and binding tests start for each case.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Guard, free_port, waypoint};

/// A `waypoint echo` backend (also usable as an ext_authz check server: it answers 200 to
/// anything but `/status/NNN`). Its answers name the pod `echo-pod`.
pub(crate) struct Echo {
    /// The port it listens on.
    pub port: u16,
    _process: Guard,
}

impl Echo {
    /// An echo backend on `127.0.0.1`.
    pub(crate) fn start() -> Echo {
        Echo::start_on("127.0.0.1")
    }

    /// An echo backend on loopback address `ip` (`127.0.0.2` plays a pod IP).
    pub(crate) fn start_on(ip: &str) -> Echo {
        let port = free_port();
        let process = waypoint()
            .args(["echo", "--listen", &format!("{ip}:{port}")])
            .args(["--pod", "echo-pod"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(Instant::now() < deadline, "echo never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Echo {
            port,
            _process: Guard(process),
        }
    }
}

/// A `waypoint run` process on a TCP sandwich listener, ready (admin `/healthz/ready` 200).
pub(crate) struct Running {
    /// The sandwich (PROXY protocol) listener's port.
    pub sandwich: u16,
    /// The admin server's port.
    pub admin: u16,
    /// Its standard output (the access log), line by line.
    pub stdout: mpsc::Receiver<String>,
    _process: Guard,
}

impl Running {
    /// Starts `waypoint run` on `manifests` with `flags` and environment `env`; the directory
    /// holding the manifests lives as long as the returned guard.
    pub(crate) fn start(
        manifests: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> (Running, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, manifests).unwrap();
        let (sandwich, admin) = (free_port(), free_port());
        let mut command = waypoint();
        command
            .args(["run", "--config"])
            .arg(&config)
            .args(["--sandwich-listen", &format!("127.0.0.1:{sandwich}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let process = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !admin_get_when_up(admin, "/healthz/ready").starts_with("HTTP/1.1 200") {
            assert!(Instant::now() < deadline, "waypoint never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let running = Running {
            sandwich,
            admin,
            stdout,
            _process: process,
        };
        (running, dir)
    }

    /// Sends one request to original destination `destination` as ztunnel would (PROXY v2
    /// naming the caller `spiffe://cluster.local/ns/default/sa/sleep` at `source`) and returns
    /// the status line and body as `waypoint send` prints them.
    pub(crate) fn send_to(
        &self,
        destination: &str,
        source: &str,
        path: &str,
        headers: &[&str],
    ) -> String {
        let mut command = waypoint();
        command
            .args(["send", "--to", &format!("127.0.0.1:{}", self.sandwich)])
            .args(["--destination", destination, "--source", source])
            .args(["--identity", "spiffe://cluster.local/ns/default/sa/sleep"])
            .args(["--path", path]);
        for h in headers {
            command.args(["-H", h]);
        }
        let out = command.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The admin server's answer to GET `path`.
    pub(crate) fn admin(&self, path: &str) -> String {
        admin_get_when_up(self.admin, path)
    }
}

/// A GET to the admin server that answers empty while it is not listening yet.
pub(crate) fn admin_get_when_up(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

/// Served by the echo backend (its JSON names the pod).
pub(crate) fn served(response: &str) -> bool {
    response.contains("200 OK") && response.contains("\"pod\":\"echo-pod\"")
}

/// Denied by the waypoint's RBAC, never reaching the backend.
pub(crate) fn rbac_denied(response: &str) -> bool {
    response.contains("403")
        && response.contains("RBAC: access denied")
        && !response.contains("\"pod\"")
}

/// Runs `waypoint check` on `manifests` with `flags`: (success, stdout).
pub(crate) fn check(manifests: &str, flags: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config: &Path = &dir.path().join("config.yaml");
    std::fs::write(config, manifests).unwrap();
    let out = waypoint()
        .args(["check", "--config"])
        .arg(config)
        .args(flags)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stdout)
}

/// An AuthorizationPolicy `namespace`/`name` with `targetRefs: [target]` and the rest of its
/// spec `body` (YAML lines indented by two).
pub(crate) fn policy(namespace: &str, name: &str, target: &str, body: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  targetRefs: [{target}]\n{body}"
    )
}
