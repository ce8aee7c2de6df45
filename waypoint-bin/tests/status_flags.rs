//! `--controller-name` and `--status-lease`: refused at startup when they cannot work, carried
//! to the run settings the status writer is built from when they can.

mod common;

use clap::Parser;
use waypoint_bin::cli::{Cli, Command};

fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = common::waypoint()
        .args(["run", "--config", "/nonexistent"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("waypoint runs");
    assert_eq!(out.status.code(), Some(2), "refused as a usage error");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_istio_controller_name_is_refused_at_startup_saying_why() {
    let stderr = refused(&["--controller-name", "istio.io/x"], &[]);
    assert!(stderr.contains("--controller-name"), "{stderr}");
    assert!(stderr.contains("istiod provisions and owns"), "{stderr}");
    let stderr = refused(
        &[],
        &[("WAYPOINT_CONTROLLER_NAME", "istio.io/gateway-controller")],
    );
    assert!(stderr.contains("istiod provisions and owns"), "{stderr}");
}

#[test]
fn a_controller_name_without_a_domain_is_refused_at_startup() {
    let stderr = refused(&["--controller-name", "my-controller"], &[]);
    assert!(stderr.contains("domain-prefixed path"), "{stderr}");
}

#[test]
fn a_status_lease_name_the_api_server_would_refuse_is_refused_at_startup() {
    let stderr = refused(&["--status-lease", "Status_Lease"], &[]);
    assert!(stderr.contains("is not a Lease name"), "{stderr}");
    let stderr = refused(&[], &[("WAYPOINT_STATUS_LEASE", "-bad")]);
    assert!(stderr.contains("is not a Lease name"), "{stderr}");
}

fn status_flags(args: &[&str]) -> waypoint_bin::cli::StatusFlags {
    let argv = ["waypoint", "run", "--config", "x.yaml"].iter().chain(args);
    let cli = Cli::try_parse_from(argv).expect("the flags parse");
    let Command::Run(run) = cli.command else {
        panic!("not run");
    };
    run.into_settings(None).status
}

#[test]
fn the_flags_reach_the_status_writer_settings_with_defaults_when_absent() {
    let given = status_flags(&[
        "--controller-name",
        "example.com/waypoint",
        "--status-lease",
        "wp-status",
    ]);
    assert_eq!(given.controller_name.as_str(), "example.com/waypoint");
    assert_eq!(given.lease_name.as_deref(), Some("wp-status"));
    let defaults = status_flags(&[]);
    assert_eq!(
        defaults.controller_name.as_str(),
        "waypoint.dev/gateway-controller"
    );
    assert_eq!(
        defaults.lease_name, None,
        "derived from the Gateway at startup"
    );
}
