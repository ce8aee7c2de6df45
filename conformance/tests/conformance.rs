//! Runs every conformance case against the real `waypoint` binary and the upstream manifests,
//! and fails on any failed case. The manifests come from `WAYPOINT_CONFORMANCE_DIR` (CI points
//! it at `../shared/conformance/gateway-api-v1.6.1`); without them the test fails under
//! `CI=true` and says it did not run otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use waypoint_conformance::{report, runner};

fn manifests() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("WAYPOINT_CONFORMANCE_DIR").map(PathBuf::from),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/gateway-api-v1.6.1"),
        ),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| runner::conformance_root(d).is_some())
}

/// The `waypoint` binary `cargo test --workspace` built beside this test.
fn waypoint_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("WAYPOINT_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<this test> -> target/<profile>/waypoint
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    profile_dir.join("waypoint")
}

/// Every case through the API server (`waypoint run --kube`, status read from the objects).
#[test]
fn upstream_conformance_suite_through_the_api_server() {
    run_suite(runner::SourceMode::Kube, "conformance-report.yaml");
}

/// Every case from manifest files (`waypoint run --config`, status from `/config_dump`).
#[test]
fn upstream_conformance_suite_from_manifest_files() {
    run_suite(runner::SourceMode::Files, "conformance-report-files.yaml");
}

/// The two suites run one after the other: their echo pods listen on the same loopback
/// addresses (a pod keeps its IP for its name, as in a cluster).
static ONE_SUITE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn, then finds the upstream manifests. `None` (after saying so)
/// when they are missing outside CI, where the test then passes without running; in CI a
/// missing checkout fails the test.
fn turn_with_manifests() -> Option<(std::sync::MutexGuard<'static, ()>, PathBuf)> {
    // A suite that failed poisons the lock; the other still runs.
    let turn = ONE_SUITE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(manifests) = manifests() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the Gateway API conformance manifests are missing: set WAYPOINT_CONFORMANCE_DIR"
        );
        eprintln!(
            "conformance manifests not found: set WAYPOINT_CONFORMANCE_DIR; the test did not run"
        );
        return None;
    };
    Some((turn, manifests))
}

fn run_suite(source: runner::SourceMode, report_name: &str) {
    let Some((_turn, manifests)) = turn_with_manifests() else {
        return;
    };
    let waypoint = waypoint_binary();
    assert!(
        waypoint.is_file(),
        "{} is missing: run `cargo test --workspace` (it builds the waypoint binary) or set WAYPOINT_BIN",
        waypoint.display()
    );
    let work_dir = tempfile::tempdir().expect("temp dir");
    let opts = runner::Options {
        manifests,
        cases: Path::new(env!("CARGO_MANIFEST_DIR")).join("cases"),
        waypoint,
        work_dir: work_dir.path().to_owned(),
        only: Vec::new(),
        consistency_timeout: Duration::from_secs(10),
        source,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let results = rt.block_on(runner::run(&opts)).expect("harness runs");
    let summary = report::summary(&results);
    eprintln!("{summary}");
    let report_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(report_name);
    std::fs::write(&report_path, report::build(&results).to_yaml()).expect("write report");
    eprintln!("ConformanceReport: {}", report_path.display());
    assert!(results.len() >= 70, "only {} cases ran", results.len());
    let failed: Vec<_> = results
        .iter()
        .filter(|r| matches!(r.outcome, runner::Outcome::Failed(_)))
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        let log = std::fs::read_to_string(work_dir.path().join("waypoint.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "waypoint log (last lines):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(
        failed.is_empty(),
        "failed conformance cases ({source:?}): {failed:?}\n{summary}"
    );
}

/// The command's `--source` picks how the waypoint reads the cluster: `files` leaves the
/// manifest file `waypoint run --config` watched in the work directory, `kube` the kubeconfig of
/// the emulated API server `waypoint run --kube` watched. One case each, through the binary.
#[test]
fn the_source_flag_chooses_files_or_the_api_server() {
    let Some((_turn, manifests)) = turn_with_manifests() else {
        return;
    };
    for (source, left_behind, absent) in [
        ("files", "config/cluster.json", "kubeconfig"),
        ("kube", "kubeconfig", "config/cluster.json"),
    ] {
        let work_dir = tempfile::tempdir().expect("temp dir");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_waypoint-conformance"))
            .arg("--manifests")
            .arg(&manifests)
            .arg("--waypoint")
            .arg(waypoint_binary())
            .arg("--work-dir")
            .arg(work_dir.path())
            .args(["--source", source, "--only", "HTTPRouteSimpleSameNamespace"])
            .output()
            .expect("run waypoint-conformance");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--source {source}: {stderr}");
        // The gateway and the mesh variant of the case both match `--only`.
        assert!(
            stderr.contains("2 cases: 2 passed"),
            "--source {source}: {stderr}"
        );
        assert!(
            work_dir.path().join(left_behind).is_file(),
            "--source {source}"
        );
        assert!(!work_dir.path().join(absent).exists(), "--source {source}");
    }
}
