//! The `waypoint` binary as an operator runs it: `check`, and `run` + `echo` + `send` as real
//! processes, stopped with SIGTERM.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, waypoint};

fn manifests(echo_port: u16) -> String {
    common::service("echo", "10.96.0.10", echo_port)
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send(sock: &Path, path: &str) -> Output {
    waypoint()
        .args(["send", "--to"])
        .arg(format!("unix:{}", sock.display()))
        .args([
            "--destination",
            "10.96.0.10:80",
            "--identity",
            "spiffe://cluster.local/ns/default/sa/sleep",
        ])
        .args(["--path", path])
        .output()
        .unwrap()
}

#[test]
fn check_reports_rejected_resources_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, manifests(8080)).unwrap();
    let out = waypoint()
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("Service default/echo")),
        "{stdout}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!("{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: broken}}\nspec:\n  clusterIP: not-an-ip\n  ports: [{{port: 80}}]\n", manifests(8080)),
    )
    .unwrap();
    let out = waypoint()
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("REJECTED Service default/broken"),
        "{stdout}"
    );
    assert!(stdout.contains("clusterIP"), "the field is named: {stdout}");
}

/// Runs `waypoint <args>` with stdout a pipe whose reader is already gone, as
/// `waypoint check | head -0` leaves it.
fn run_into_closed_pipe(args: &[&str], config: &Path) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    waypoint()
        .args(args)
        .arg(config)
        .stdout(writer)
        .output()
        .unwrap()
}

#[test]
fn a_reader_that_leaves_early_is_no_failure_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, manifests(8080)).unwrap();
    let quickstart =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/manifests.yaml");
    let authz = [
        "authz",
        "--destination",
        "10.96.0.10:80",
        "--identity",
        "spiffe://cluster.local/ns/default/sa/sleep",
        "--path",
        "/hello",
        "--config",
    ];
    for (args, config) in [
        (&["check", "--config"][..], &good),
        (&authz[..], &quickstart),
    ] {
        let out = run_into_closed_pipe(args, config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {stderr}");
    }
}

#[test]
fn check_prints_per_parent_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: waypoint\n  listeners: [{name: http, port: 80, protocol: HTTP, hostname: a.example}]\nstatus: {addresses: [{type: IPAddress, value: 10.0.0.1}]}\n";
    let route = |name: &str, host: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]\n"
        )
    };
    std::fs::write(
        &file,
        format!(
            "{}---\n{gateway}---\n{}---\n{}",
            manifests(8080),
            route("good", "a.example"),
            route("elsewhere", "b.example")
        ),
    )
    .unwrap();
    let out = waypoint()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The route no listener hostname takes is not OK, and says why, per parent.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ok      HTTPRoute default/good"),
        "{stdout}"
    );
    assert!(
        stdout.contains("REJECTED HTTPRoute default/elsewhere"),
        "{stdout}"
    );
    assert!(stdout.contains("parent Gateway default/gw:"), "{stdout}");
    assert!(
        stdout.contains("Accepted=false NoMatchingListenerHostname"),
        "{stdout}"
    );
    assert!(
        stdout.contains("listener http port 80: 1 route(s) attached"),
        "{stdout}"
    );
}

#[test]
fn check_lists_tcp_and_tls_routes_with_their_parents_and_listener_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("l4.yaml");
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: waypoint\n  listeners:\n  - {name: tcp, port: 9000, protocol: TCP}\n  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}\n  - {name: term, port: 8443, protocol: TLS, tls: {mode: Terminate}}\nstatus: {addresses: [{type: IPAddress, value: 10.0.0.1}]}\n";
    let tcp = "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: db}\nspec:\n  parentRefs: [{name: gw, sectionName: tcp}]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n";
    let tls = "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: web}\nspec:\n  parentRefs: [{name: gw, sectionName: tcp}]\n  hostnames: [a.example]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n";
    std::fs::write(
        &file,
        format!("{}---\n{gateway}---\n{tcp}---\n{tls}", manifests(8080)),
    )
    .unwrap();
    let out = waypoint()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The TLSRoute names the TCP listener: refused there, and said why.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok      TCPRoute default/db"), "{stdout}");
    assert!(stdout.contains("REJECTED TLSRoute default/web"), "{stdout}");
    assert!(
        stdout.contains("Accepted=false NotAllowedByListeners"),
        "{stdout}"
    );
    assert!(
        stdout.contains("listener tcp port 9000: 1 route(s) attached"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Accepted=false UnsupportedValue: tls.mode Terminate"),
        "{stdout}"
    );
}

#[test]
fn run_serves_over_a_unix_socket_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let echo_port = common::free_port();
    let _echo = Guard(
        waypoint()
            .args([
                "echo",
                "--listen",
                &format!("127.0.0.1:{echo_port}"),
                "--pod",
                "echo-cli",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, manifests(echo_port)).unwrap();
    let sock = dir.path().join("waypoint.sock");
    let admin_port = common::free_port();
    let mut run = Guard(
        waypoint()
            .args(["run", "--config"])
            .arg(&config)
            .arg("--sandwich-listen")
            .arg(format!("unix:{}", sock.display()))
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&sock);

    // The echo backend may still be starting: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = send(&sock, "/via-cli");
        if String::from_utf8_lossy(&out.stdout).contains("200 OK") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("200 OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"pod\":\"echo-cli\""), "{stdout}");
    assert!(stdout.contains("\"path\":\"/via-cli\""), "{stdout}");

    // An unknown destination is answered 404 with the destination named.
    let out = waypoint()
        .args(["send", "--to"])
        .arg(format!("unix:{}", sock.display()))
        .args(["--destination", "10.1.2.3:80", "--path", "/"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("404") && stdout.contains("10.1.2.3:80"),
        "{stdout}"
    );

    // The admin server is ready and counts the request with Istio's labels.
    assert!(common::admin_get(admin_port, "/healthz/ready").starts_with("HTTP/1.1 200"));
    let metrics = common::admin_get(admin_port, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\"")
                && l.contains("response_code=\"200\"")),
        "{metrics}"
    );

    // SIGTERM: the process exits cleanly and removes its socket.
    let status = Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = run.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "waypoint did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(!sock.exists(), "the socket file is removed on exit");
}

#[test]
fn authz_explains_decisions_on_the_quickstart_policy() {
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/manifests.yaml");
    let ask = |identity: &str| {
        waypoint()
            .args(["authz", "--config"])
            .arg(&config)
            .args([
                "--destination",
                "10.96.0.10:80",
                "--identity",
                identity,
                "--path",
                "/hello",
            ])
            .output()
            .unwrap()
    };
    let allowed = ask("spiffe://cluster.local/ns/default/sa/sleep");
    assert!(allowed.status.success());
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert!(
        stdout.starts_with("ALLOWED")
            && stdout.contains("AuthorizationPolicy default/echo-callers rule 0"),
        "{stdout}"
    );
    let denied = ask("spiffe://cluster.local/ns/default/sa/intruder");
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stdout).starts_with("DENIED"));
}
