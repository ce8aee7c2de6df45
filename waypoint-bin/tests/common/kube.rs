//! `waypoint run --kube` against the in-process API emulator, from synchronous tests: the
//! emulator as a cluster's API server (TLS, a bearer token, list items without their type, as a
//! real server sends them), the waypoint on a Unix sandwich socket, and waiting for what a
//! cluster does eventually.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use waypoint_kube_emulator::{Emulator, EmulatorOptions};

use super::{Guard, free_port, waypoint};

/// How long a cluster may take to show a change.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The emulated API server as a cluster serves it: TLS, a token, typeless list items.
pub(crate) async fn emulator() -> Emulator {
    Emulator::start(EmulatorOptions {
        tls: true,
        token: Some("e2e-token".into()),
        bookmark_interval: Duration::from_secs(1),
        omit_list_item_type: true,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap()
}

/// A running `waypoint run --kube` on a Unix socket, with its admin port.
pub(crate) struct Kube {
    /// The process.
    pub guard: Guard,
    /// Its admin port.
    pub admin: u16,
    /// Its sandwich listener.
    pub sock: PathBuf,
}

/// `waypoint run --kube` reading `emulator`; its files in `dir`.
pub(crate) fn run_kube(emulator: &Emulator, dir: &Path) -> Kube {
    run_kube_with(emulator, dir, &[])
}

/// [`run_kube`] with environment `env`.
pub(crate) fn run_kube_with(emulator: &Emulator, dir: &Path, env: &[(&str, &str)]) -> Kube {
    run_kube_args(emulator, dir, &[], env)
}

/// `waypoint run --kube` with further `args` and `env`; its files (kubeconfig, socket) in `dir`.
pub(crate) fn run_kube_args(
    emulator: &Emulator,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Kube {
    let kubeconfig = dir.join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig).unwrap();
    let (admin, sock) = (free_port(), dir.join("kube.sock"));
    let guard = Guard(
        waypoint()
            .args(["run", "--kube"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .arg("--sandwich-listen")
            .arg(format!("unix:{}", sock.display()))
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    Kube { guard, admin, sock }
}

pub(crate) fn eventually(what: &str, mut done: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = done();
        match last {
            None => return,
            Some(state) if Instant::now() > deadline => panic!("{what}: {state}"),
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub(crate) fn admin_up(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

pub(crate) fn send(sock: &Path, destination: &str) -> Output {
    waypoint()
        .args(["send", "--to"])
        .arg(format!("unix:{}", sock.display()))
        .args(["--destination", destination, "--path", "/kube"])
        .args(["--identity", "spiffe://cluster.local/ns/default/sa/sleep"])
        .output()
        .unwrap()
}

/// Waits until a request to `destination` answers with `status` (e.g. `200 OK`).
pub(crate) fn served(sock: &Path, destination: &str, status: &str) {
    eventually(&format!("{destination} answers {status}"), || {
        let out = send(sock, destination);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.contains(status)).then_some(text)
    });
}
