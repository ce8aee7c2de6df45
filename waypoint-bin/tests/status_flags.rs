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

/// The `gatewayClasses` of `/config_dump` from `waypoint run --config` over two
/// GatewayClasses, with `args` and environment `env`.
fn dumped_classes(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let classes = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: mine, generation: 2}\nspec: {controllerName: example.com/mine}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: default-class}\nspec: {controllerName: waypoint.dev/gateway-controller}\n";
    let (run, _dir) = common::run::Running::start(classes, args, env);
    let dump = run.admin("/config_dump");
    let body = dump.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let dump: serde_json::Value = serde_json::from_str(body).expect("a JSON dump");
    dump["gatewayClasses"].clone()
}

#[test]
fn the_controller_name_picks_the_gateway_classes_config_dump_reports_accepted() {
    let names = |classes: serde_json::Value| -> Vec<String> {
        let list = classes.as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(dumped_classes(&[], &[])), ["default-class"]);
    let mine = dumped_classes(&["--controller-name", "example.com/mine"], &[]);
    assert_eq!(names(mine.clone()), ["mine"]);
    assert_eq!(mine[0]["conditions"][0]["reason"], "Accepted");
    assert_eq!(mine[0]["conditions"][0]["observedGeneration"], 2);
    let from_env = dumped_classes(&[], &[("WAYPOINT_CONTROLLER_NAME", "example.com/mine")]);
    assert_eq!(names(from_env), ["mine"]);
}
