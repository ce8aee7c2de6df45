//! Golden files for `waypoint controller`'s rendering: each `golden/<case>.input.yaml` holds a
//! GatewayClass and a Gateway; `golden/<case>.yaml` holds what the controller applies for it
//! (or, for a refused Gateway, the condition it reports instead), as YAML.
//!
//! After an intended change, regenerate and review the diff:
//! `WAYPOINT_UPDATE_GOLDEN=1 cargo test -p waypoint-kube --test controller_golden`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use waypoint_kube::controller::{RenderOptions, Resources, render};
use waypoint_kube::status::ControllerName;

const UPDATE: &str = "WAYPOINT_UPDATE_GOLDEN";

fn options() -> RenderOptions {
    RenderOptions {
        controller: ControllerName::default(),
        image: "ghcr.io/example/waypoint:0.1.0".into(),
        trust_domain: "cluster.local".into(),
        ca_address: "istiod.istio-system.svc:15012".into(),
        cluster_domain: "cluster.local".into(),
        replicas: 1,
        resources: Resources::default(),
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, options).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_saphyr::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// What the controller does with the Gateway of `input`: the objects, or the refusal.
fn rendered(input: &[Value]) -> Vec<Value> {
    let class = input.iter().find(|o| o["kind"] == "GatewayClass");
    let gateway = input
        .iter()
        .find(|o| o["kind"] == "Gateway")
        .expect("a Gateway");
    match render(gateway, class, &options()) {
        Ok(provision) => provision
            .namespaced
            .into_iter()
            .chain(provision.cluster)
            .collect(),
        Err(refusal) => vec![json!({
            "refused": {"reason": refusal.reason, "message": refusal.message},
        })],
    }
}

#[test]
fn every_gateway_renders_to_its_golden_objects() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".input.yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 6, "golden cases missing: {cases:?}");
    let update = std::env::var_os(UPDATE).is_some();
    let mut failures = Vec::new();
    for input_path in cases {
        let case = input_path.to_string_lossy().replace(".input.yaml", "");
        let golden_path = PathBuf::from(format!("{case}.yaml"));
        let actual = rendered(&read_yaml(&input_path));
        if update {
            std::fs::write(&golden_path, to_yaml(&actual)).unwrap();
            continue;
        }
        let expected = read_yaml(&golden_path);
        if expected != actual {
            failures.push(format!(
                "{}: differs; got:\n{}",
                golden_path.display(),
                to_yaml(&actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(regenerate with {UPDATE}=1 after an intended change)",
        failures.join("\n")
    );
}
