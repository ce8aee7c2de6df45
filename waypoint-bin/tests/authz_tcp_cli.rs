//! `waypoint authz --tcp [--sni]` through the real binary: a TCP connection's decision under
//! Istio's rules for HTTP-only fields, and the flags' guard rails.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Output;

use common::waypoint;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: tcp-postgres, port: 5432}, {name: tls, port: 443}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-callers, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: db}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/app"]}}]
    to: [{operation: {methods: [GET]}}]
  - from: [{source: {principals: ["cluster.local/ns/default/sa/app"]}}]
    to: [{operation: {ports: ["5432", "443"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin-sni, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: db}]
  action: DENY
  rules:
  - when: [{key: connection.sni, values: [admin.example.com]}]
"#;

const APP: &str = "spiffe://cluster.local/ns/default/sa/app";

fn ask(config: &Path, args: &[&str]) -> Output {
    waypoint()
        .args(["authz", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn authz_tcp_explains_a_connection_with_the_http_rule_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("db.yaml");
    std::fs::write(&config, MANIFESTS).unwrap();

    // As a request, rule 0 (methods: GET) decides; as a connection it cannot match, rule 1 does.
    let request = ask(
        &config,
        &["--destination", "10.96.0.30:5432", "--identity", APP],
    );
    assert!(request.status.success(), "{request:?}");
    assert!(
        stdout(&request).contains("default/db-callers rule 0"),
        "{}",
        stdout(&request)
    );
    let tcp = ask(
        &config,
        &[
            "--tcp",
            "--destination",
            "10.96.0.30:5432",
            "--identity",
            APP,
        ],
    );
    assert!(tcp.status.success(), "{tcp:?}");
    let out = stdout(&tcp);
    assert!(
        out.starts_with("ALLOWED") && out.contains("default/db-callers rule 1"),
        "{out}"
    );

    let intruder = ask(
        &config,
        &[
            "--tcp",
            "--destination",
            "10.96.0.30:5432",
            "--identity",
            "spiffe://cluster.local/ns/default/sa/intruder",
        ],
    );
    assert_eq!(intruder.status.code(), Some(1));
    let out = stdout(&intruder);
    assert!(
        out.starts_with("DENIED") && out.contains("none matches"),
        "{out}"
    );
}

#[test]
fn authz_tcp_sni_is_matched_by_connection_sni() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("db.yaml");
    std::fs::write(&config, MANIFESTS).unwrap();
    let with_sni = |sni: &str| {
        ask(
            &config,
            &[
                "--tcp",
                "--sni",
                sni,
                "--destination",
                "10.96.0.30:443",
                "--identity",
                APP,
            ],
        )
    };
    let denied = with_sni("admin.example.com");
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(
        stdout(&denied).contains("DENY policy AuthorizationPolicy default/no-admin-sni rule 0")
    );
    let allowed = with_sni("db.example.com");
    assert!(allowed.status.success(), "{allowed:?}");
}

#[test]
fn authz_tcp_refuses_http_attributes_and_sni_needs_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("db.yaml");
    std::fs::write(&config, MANIFESTS).unwrap();
    for http_flag in [
        ["--path", "/x"],
        ["-X", "POST"],
        ["--host", "db"],
        ["-H", "a: b"],
    ] {
        let mut args = vec!["--tcp", "--destination", "10.96.0.30:5432"];
        args.extend(http_flag);
        let out = ask(&config, &args);
        assert_eq!(out.status.code(), Some(2), "{http_flag:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
    let out = ask(
        &config,
        &["--sni", "a.example", "--destination", "10.96.0.30:443"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tcp"));
}

#[test]
fn authz_tcp_custom_fails_closed_unless_the_ext_authz_provider_is_fail_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("db.yaml");
    let custom = "\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: default}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: db}]\n  action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]\n";
    std::fs::write(&config, format!("{MANIFESTS}{custom}")).unwrap();
    let base = [
        "--tcp",
        "--destination",
        "10.96.0.30:5432",
        "--identity",
        APP,
    ];

    let mut closed = base.to_vec();
    closed.extend(["--ext-authz", "opa=127.0.0.1:9191"]);
    let out = ask(&config, &closed);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with("DENIED")
            && text.contains("CUSTOM policy AuthorizationPolicy default/ext rule 0")
            && text.contains("cannot check a TCP connection"),
        "{text}"
    );

    let mut open = base.to_vec();
    open.extend(["--ext-authz", "opa=127.0.0.1:9191,fail_open"]);
    let out = ask(&config, &open);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with("ALLOWED") && text.contains("not checked") && text.contains("fail-open"),
        "{text}"
    );
}
