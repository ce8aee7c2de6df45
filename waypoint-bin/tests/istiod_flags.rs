//! `waypoint run`'s certificate-from-istiod flags, through the real binary against the fake CA:
//! `--ca-address`, `--ca-token-path`, `--ca-root-path`, `--ca-validity`, `--cluster-id`,
//! `--pod-namespace` / `POD_NAMESPACE`, `--service-account` / `SERVICE_ACCOUNT`, their
//! defaults, and `--certs-dir` winning over the CA.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use waypoint_core::identity::SpiffeId;
use waypoint_core::tls::DevCa;

use common::ca::{CaFixture, TOKEN};
use common::run::admin_get_when_up;
use common::{Guard, free_port, waypoint};

/// Environment a developer's shell or CI could set that would change what these tests mean.
const CLEARED_ENV: &[&str] = &[
    "POD_NAMESPACE",
    "SERVICE_ACCOUNT",
    "CLUSTER_ID",
    "CA_ADDRESS",
    "WAYPOINT_CA_TOKEN_PATH",
    "WAYPOINT_CA_ROOT_PATH",
    "WAYPOINT_CA_VALIDITY",
    "WAYPOINT_CERTS_DIR",
    "WAYPOINT_TRUST_DOMAIN",
];

/// A `waypoint run` process with native HBONE on a free port, no sandwich listener, its
/// stderr collected.
struct Run {
    hbone: SocketAddr,
    admin: u16,
    stderr: Arc<Mutex<String>>,
    process: Guard,
    _config: tempfile::TempDir,
}

impl Run {
    fn start(flags: &[&str], env: &[(&str, &str)]) -> Run {
        let config = tempfile::tempdir().unwrap();
        let path = config.path().join("config.yaml");
        std::fs::write(&path, common::service("echo", "10.96.0.10", 9)).unwrap();
        let (hbone, admin) = (free_port(), free_port());
        let hbone: SocketAddr = ([127, 0, 0, 1], hbone).into();
        let mut command = waypoint();
        command
            .args(["run", "--no-sandwich", "--config"])
            .arg(&path)
            .args(["--hbone-listen", &hbone.to_string()])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for name in CLEARED_ENV {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, collected) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Run {
            hbone,
            admin,
            stderr,
            process: Guard(child),
            _config: config,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for `/healthz/ready` to answer 200.
    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let admin = self.admin;
        while !tokio::task::spawn_blocking(move || admin_get_when_up(admin, "/healthz/ready"))
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
        {
            assert!(
                Instant::now() < deadline,
                "never ready; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the process to exit; returns whether it succeeded.
    async fn exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.process.0.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "still running; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for stderr to contain `text`.
    async fn logs(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn ca_flags(ca: &CaFixture) -> Vec<String> {
    vec![
        "--ca-address".into(),
        ca.fake.addr().to_string(),
        "--ca-token-path".into(),
        ca.token_path.display().to_string(),
        "--ca-root-path".into(),
        ca.root_path.display().to_string(),
    ]
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hbone_without_certs_dir_comes_up_ready_with_a_certificate_from_the_ca() {
    let ca = CaFixture::start().await;
    let mut flags = ca_flags(&ca);
    flags.extend(
        [
            "--cluster-id",
            "west",
            "--ca-validity",
            "2h",
            "--trust-domain",
            "example.org",
        ]
        .map(String::from),
    );
    // The fake CA trusts any trust domain the CSR names, like istiod for its own.
    let run = Run::start(
        &strs(&flags),
        &[("POD_NAMESPACE", "infra"), ("SERVICE_ACCOUNT", "waypoint")],
    );
    run.ready().await;
    let expected = id("spiffe://example.org/ns/infra/sa/waypoint");
    let requests = ca.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(requests[0].cluster_id.as_deref(), Some("west"));
    assert_eq!(requests[0].validity_secs, 7200);
    assert_eq!(requests[0].csr_identity.as_deref(), Some(expected.as_str()));
    // The HBONE listener presents it (the client checks the identity and the CA's root).
    ca.presented_leaf(run.hbone, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_flags_work_like_their_env_and_cluster_id_and_validity_default_to_istios() {
    let ca = CaFixture::start().await;
    let mut flags = ca_flags(&ca);
    flags.extend(["--pod-namespace", "gw", "--service-account", "edge"].map(String::from));
    let run = Run::start(&strs(&flags), &[]);
    run.ready().await;
    let request = &ca.fake.requests()[0];
    assert_eq!(
        request.csr_identity.as_deref(),
        Some("spiffe://cluster.local/ns/gw/sa/edge")
    );
    assert_eq!(request.cluster_id.as_deref(), Some("Kubernetes"));
    assert_eq!(request.validity_secs, 24 * 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_dir_wins_over_the_ca() {
    let ca = CaFixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let from_files = id("spiffe://cluster.local/ns/files/sa/wp");
    // The files are issued by another CA: the client must trust it to see them presented.
    let dev = DevCa::generate("cluster.local").unwrap();
    dev.write_workload_dir(dir.path(), &from_files, Duration::from_secs(3600))
        .unwrap();
    let mut flags = ca_flags(&ca);
    flags.extend(["--certs-dir".to_owned(), dir.path().display().to_string()]);
    let run = Run::start(
        &strs(&flags),
        &[("POD_NAMESPACE", "infra"), ("SERVICE_ACCOUNT", "waypoint")],
    );
    run.ready().await;
    assert!(ca.fake.requests().is_empty(), "the CA was asked");
    assert!(
        run.stderr().contains(from_files.as_str()),
        "{}",
        run.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hbone_without_certs_dir_or_identity_exits_naming_what_to_set() {
    let ca = CaFixture::start().await;
    let mut run = Run::start(&strs(&ca_flags(&ca)), &[("POD_NAMESPACE", "infra")]);
    assert!(!run.exit().await);
    let stderr = run.stderr();
    assert!(
        stderr.contains("SERVICE_ACCOUNT") && stderr.contains("--certs-dir"),
        "{stderr}"
    );
    assert!(ca.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_signing_another_identity_stops_the_start_naming_both() {
    let ca = CaFixture::start().await;
    ca.fake
        .issue_as(Some(id("spiffe://cluster.local/ns/default/sa/default")));
    let mut run = Run::start(
        &strs(&ca_flags(&ca)),
        &[("POD_NAMESPACE", "infra"), ("SERVICE_ACCOUNT", "waypoint")],
    );
    assert!(!run.exit().await);
    let stderr = run.stderr();
    assert!(
        stderr.contains("spiffe://cluster.local/ns/default/sa/default")
            && stderr.contains("spiffe://cluster.local/ns/infra/sa/waypoint"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_failing_at_first_is_asked_again_until_the_waypoint_is_ready() {
    let ca = CaFixture::start().await;
    ca.fake.fail_next(14, "istiod is starting");
    ca.fake.fail_next(14, "istiod is starting");
    let run = Run::start(
        &strs(&ca_flags(&ca)),
        &[("POD_NAMESPACE", "infra"), ("SERVICE_ACCOUNT", "waypoint")],
    );
    run.logs("UNAVAILABLE (14): istiod is starting").await;
    run.ready().await;
    assert_eq!(ca.fake.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_token_root_and_address_are_where_istio_puts_them() {
    let ca = CaFixture::start().await;
    let env = [("POD_NAMESPACE", "infra"), ("SERVICE_ACCOUNT", "waypoint")];
    // Each run retries forever on what it cannot read or reach; its log names the default.
    let run = Run::start(&[], &env);
    run.logs("/var/run/secrets/tokens/istio-token").await;
    drop(run);
    let token = ca.token_path.display().to_string();
    let run = Run::start(&["--ca-token-path", &token], &env);
    run.logs("/var/run/secrets/istio/root-cert.pem").await;
    drop(run);
    let root = ca.root_path.display().to_string();
    let run = Run::start(&["--ca-token-path", &token, "--ca-root-path", &root], &env);
    run.logs("CA istiod.istio-system.svc:15012").await;
}
