//! The hardening flags of `waypoint run`, set as an operator sets them (flags and environment
//! variables) on the real binary: the Unix socket peer check and the upgrade allow-list.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, waypoint};
use waypoint_core::wire::proxy_protocol::encode_v2;

/// A uid and gid no test process runs as.
const STRANGER: &str = "4242";

/// A running `waypoint run` on a Unix socket; killed when dropped.
struct Run {
    child: Child,
    sock: PathBuf,
    admin_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, common::service("echo", "10.96.0.10", 9)).unwrap();
    let sock = dir.path().join("waypoint.sock");
    let log = dir.path().join("stderr.log");
    let admin_port = free_port();
    let child = waypoint()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--sandwich-listen")
        .arg(format!("unix:{}", sock.display()))
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut run = Run {
        child,
        sock,
        admin_port,
        log,
        _dir: dir,
    };
    // Ready means serving: the socket file alone appears a moment before the process has
    // finished starting (and stays if it then fails, as when its admin port was taken).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = run.child.try_wait() {
            let log = std::fs::read_to_string(&run.log).unwrap_or_default();
            panic!("waypoint exited ({status}) while starting:\n{log}");
        }
        let ready = common::run::admin_get_when_up(run.admin_port, "/healthz/ready");
        if run.sock.exists() && ready.starts_with("HTTP/1.1 200") {
            return run;
        }
        assert!(Instant::now() < deadline, "waypoint never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test process's own uid and gid, as the kernel will report them for our connections.
fn own_ids(dir: &Path) -> (u32, u32) {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"").unwrap();
    let md = std::fs::metadata(&probe).unwrap();
    (md.uid(), md.gid())
}

/// Sends `request` after a PROXY header naming 10.96.0.99:80 (no route there); returns what
/// came back before the waypoint closed the connection.
fn exchange(sock: &Path, request: &str) -> String {
    let mut stream = UnixStream::connect(sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let header = encode_v2(
        "10.244.1.5:40000".parse().unwrap(),
        "10.96.0.99:80".parse().unwrap(),
        &[(0xD0, b"spiffe://cluster.local/ns/default/sa/sleep")],
    );
    // A refused peer may be gone before the write: that is the point.
    let _ = stream
        .write_all(&header)
        .and_then(|()| stream.write_all(request.as_bytes()));
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const PLAIN: &str = "GET / HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n";

fn metrics(run: &Run) -> String {
    common::admin_get(run.admin_port, "/metrics")
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn a_unix_socket_peer_with_the_allowed_uid_and_gid_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (uid, gid) = own_ids(dir.path());
    let run = start(
        &[
            "--unix-socket-peer-uid",
            &uid.to_string(),
            "--unix-socket-peer-gid",
            &gid.to_string(),
        ],
        &[],
    );
    let answer = exchange(&run.sock, PLAIN);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let m = metrics(&run);
    assert!(
        has_line(
            &m,
            "waypoint_unix_peer_rejected_total{reason=\"uid_mismatch\"} 0"
        ),
        "{m}"
    );
}

#[test]
fn a_unix_socket_peer_with_another_uid_is_closed_unread_logged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (uid, _) = own_ids(dir.path());
    // Through the environment variable, as a Deployment would set it.
    let run = start(&[], &[("WAYPOINT_UNIX_SOCKET_PEER_UID", STRANGER)]);
    assert_eq!(
        exchange(&run.sock, PLAIN),
        "",
        "a refused peer got an answer"
    );
    let m = metrics(&run);
    assert!(
        has_line(
            &m,
            "waypoint_unix_peer_rejected_total{reason=\"uid_mismatch\"} 1"
        ),
        "{m}"
    );
    // Nothing was read, so no PROXY header was judged either.
    assert!(!m.contains("waypoint_connections_accepted_total{"), "{m}");
    let log = std::fs::read_to_string(&run.log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("peer not allowed"))
        .unwrap_or_else(|| panic!("no log line: {log}"));
    assert!(line.contains("pid="), "{line}");
    assert!(line.contains(&format!("uid={uid}")), "{line}");
    assert!(line.contains("gid="), "{line}");
    assert!(line.contains("uid_mismatch"), "{line}");
}

#[test]
fn a_unix_socket_peer_with_another_gid_is_refused() {
    let run = start(&["--unix-socket-peer-gid", STRANGER], &[]);
    assert_eq!(exchange(&run.sock, PLAIN), "");
    let m = metrics(&run);
    assert!(
        has_line(
            &m,
            "waypoint_unix_peer_rejected_total{reason=\"gid_mismatch\"} 1"
        ),
        "{m}"
    );
}

const WEBSOCKET: &str = "GET /chat HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade, close\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn allowed_upgrades_decides_which_upgrade_passes_the_listener() {
    // Default: WebSocket passes the upgrade policy and goes on to routing (no route: 404).
    let run = start(&[], &[]);
    let answer = exchange(&run.sock, WEBSOCKET);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    drop(run);

    // None allowed: refused before routing, and counted.
    let run = start(&[], &[("WAYPOINT_ALLOWED_UPGRADES", "none")]);
    let answer = exchange(&run.sock, WEBSOCKET);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("upgrade to \"websocket\" is not allowed"));
    let m = metrics(&run);
    assert!(
        has_line(
            &m,
            "waypoint_upgrades_total{protocol=\"websocket\",decision=\"refused\"} 1"
        ),
        "{m}"
    );
    drop(run);

    // A custom protocol, named on the command line in any case.
    let custom =
        "GET / HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade, close\r\nUpgrade: x-raw-tcp\r\n\r\n";
    let run = start(&["--allowed-upgrades", "websocket,X-Raw-TCP"], &[]);
    let answer = exchange(&run.sock, custom);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[test]
fn allowing_h2c_is_refused_at_startup_with_the_reason() {
    for (args, envs) in [
        (vec!["--allowed-upgrades", "websocket,h2c"], vec![]),
        (vec![], vec![("WAYPOINT_ALLOWED_UPGRADES", "H2C")]),
    ] {
        let out = waypoint()
            .args(["run", "--config", "/nonexistent", "--admin-addr", "off"])
            .args(args)
            .envs(envs)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("h2c upgrade can never be allowed"),
            "{stderr}"
        );
    }
}
