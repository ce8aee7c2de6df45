//! `loadbench allocations` through the real binary: the section counts, in the report.
#![allow(missing_docs, clippy::unwrap_used)]

use std::process::Command;

/// The number before " allocations" in a report line `- <what>: <n> allocations, ...`.
fn allocations_of(report: &str, what: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.starts_with(&format!("- {what}: ")))
        .unwrap_or_else(|| panic!("no line for {what:?} in:\n{report}"));
    let after = &line[what.len() + 4..];
    after
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

#[test]
fn the_allocations_scenario_writes_counts_per_request_into_the_report() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_loadbench"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .arg("allocations")
        // This section runs the waypoint library in loadbench's own process and starts no
        // proxy; loadbench still insists on some executable as the waypoint binary.
        .env("WAYPOINT_BIN", std::env::current_exe().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let report = std::fs::read_to_string(out.path().join("REPORT.md")).unwrap();
    assert!(report.contains("\n## allocations\n"), "{report}");
    assert!(!report.contains("not counted:"), "{report}");
    let through = allocations_of(&report, "through the waypoint (client, waypoint, upstream)");
    let direct = allocations_of(&report, "direct to the upstream (client, upstream)");
    let share = allocations_of(&report, "the waypoint's share");
    assert!(direct > 0.0 && through > direct, "{report}");
    assert!((share - (through - direct)).abs() < 0.11, "{report}");
}
