//! `examples/egress`: the egress waypoint the README shows, run from its own manifests through
//! the binary (the script itself builds with cargo, so the test runs its steps instead): an
//! "external" `waypoint echo --tls-cert --tls-key` server, a ServiceEntry bound to the
//! waypoint, an AuthorizationPolicy allowing only `sleep`, and TLS originated by the
//! DestinationRule. Only the port and the CA path differ from the example.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::run::Running;
use common::{Guard, free_port, waypoint};

/// `waypoint send` to the entry's VIP as `identity`: status line and body.
fn send(running: &Running, identity: &str) -> String {
    let out = waypoint()
        .args(["send", "--to", &format!("127.0.0.1:{}", running.sandwich)])
        .args([
            "--destination",
            "240.240.0.10:80",
            "--host",
            "api.example.com",
        ])
        .args(["--identity", identity, "--path", "/v1/status"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mints the example's CA and server certificate into `dir`, as `run.sh` does.
fn certificates(dir: &Path) {
    let ok = |args: &[&str]| {
        let out = waypoint().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let ca = dir.join("ca");
    let api = dir.join("api");
    let ca = ca.to_str().unwrap();
    ok(&["certs", "ca", "--out", ca, "--trust-domain", "example.com"]);
    ok(&[
        "certs",
        "issue",
        "--ca",
        ca,
        "--identity",
        "spiffe://example.com/ns/external/sa/api",
        "--out",
        api.to_str().unwrap(),
    ]);
}

#[test]
fn the_egress_example_lets_sleep_out_over_originated_tls_and_denies_others() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let port = free_port();
    let api = dir.path().join("api");
    let _external = Guard(
        waypoint()
            .args(["echo", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--pod", "api-example-com", "--tls-cert"])
            .arg(api.join("cert-chain.pem"))
            .arg("--tls-key")
            .arg(api.join("key.pem"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the TLS echo never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/egress/manifests.yaml");
    let manifests = std::fs::read_to_string(example)
        .unwrap()
        .replace("targetPort: 18443", &format!("targetPort: {port}"))
        .replace(
            "target/egress-example/ca/ca-cert.pem",
            dir.path().join("ca/ca-cert.pem").to_str().unwrap(),
        );
    let (running, _config) = Running::start(&manifests, &[], &[]);

    let allowed = send(&running, "spiffe://cluster.local/ns/default/sa/sleep");
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(allowed.contains("\"pod\":\"api-example-com\""), "{allowed}");
    // The echo answered over TLS: it reports the server name the waypoint sent.
    assert!(
        allowed.contains("\"serverName\":\"api.example.com\""),
        "{allowed}"
    );

    let denied = send(&running, "spiffe://cluster.local/ns/default/sa/intruder");
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(!denied.contains("\"pod\""), "{denied}");
}

#[test]
fn echo_tls_flags_need_each_other_and_a_readable_key() {
    let out = waypoint()
        .args(["echo", "--tls-cert", "/nonexistent.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key"),
        "{out:?}"
    );
    let out = waypoint()
        .args(["echo", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("--tls-cert /nonexistent.pem"), "{log}");
}
