//! `waypoint run --kube` flags through the real binary, without an API server: which
//! combinations are accepted, what a bad client configuration says, and that nothing is served
//! before the API server has been read.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Guard, admin_get, free_port, waypoint};

fn kubeconfig(dir: &std::path::Path, server: &str, user: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts: [{{name: c, context: {{cluster: k, user: u}}}}]\nclusters: [{{name: k, cluster: {{server: '{server}'}}}}]\nusers: [{{name: u, user: {user}}}]\n"
        ),
    )
    .unwrap();
    path
}

fn stderr_of(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (bool, String) {
    let mut cmd = waypoint();
    cmd.args(args).env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn run_needs_exactly_one_of_config_and_kube() {
    let (ok, text) = stderr_of(&["run"], &[]);
    assert!(!ok && text.contains("--config"), "{text}");
    let (ok, text) = stderr_of(&["run", "--config", "x.yaml", "--kube"], &[]);
    assert!(!ok && text.contains("cannot be used with"), "{text}");
    let (ok, text) = stderr_of(&["run", "--config", "x.yaml", "--namespace", "ns"], &[]);
    assert!(
        !ok && text.contains("--kube"),
        "--namespace needs --kube: {text}"
    );
}

#[test]
fn kube_with_a_credential_plugin_exits_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), "https://127.0.0.1:1", "{exec: {command: aws}}");
    let (ok, text) = stderr_of(
        &["run", "--admin-addr", "off", "--no-sandwich"],
        &[
            ("WAYPOINT_KUBE", "true".as_ref()),
            ("KUBECONFIG", path.as_os_str()),
        ],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("uses `exec`, a credential plugin"), "{text}");
}

#[test]
fn kube_mode_is_not_ready_and_serves_nothing_until_the_api_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the API server's port: every list fails and is retried with backoff.
    let api_port = free_port();
    let path = kubeconfig(
        dir.path(),
        &format!("http://127.0.0.1:{api_port}"),
        "{token: t}",
    );
    let (admin, sandwich) = (free_port(), free_port());
    let _run = Guard(
        waypoint()
            .args(["run", "--kube", "--namespace", "default"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--sandwich-listen", &format!("127.0.0.1:{sandwich}")])
            .env("KUBECONFIG", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() {
            break admin_get(admin, "/healthz/ready");
        }
        assert!(Instant::now() < deadline, "the admin server never came up");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    // The failures are counted while we wait; still not ready, still no listener.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = admin_get(admin, "/metrics");
        if metrics
            .contains("waypoint_kube_watch_restarts_total{kind=\"Service\",reason=\"transport\"}")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(admin_get(admin, "/healthz/ready").starts_with("HTTP/1.1 503"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", sandwich)).is_err(),
        "the sandwich listener must not be bound before the first sync"
    );
}
