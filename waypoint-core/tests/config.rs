//! The config layer end to end: manifests in, statuses and service indexes out.

// Tests may unwrap (house rule); the lint only spares #[test] functions, not their helpers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use waypoint_core::config::build::EndpointStatsCache;
use waypoint_core::config::load::{fingerprint, load_path_with, parse_manifests_with};
use waypoint_core::config::resources::PolicyAttachment;
use waypoint_core::config::watch::watch;
use waypoint_core::config::{AppProtocol, Config, LoadError, ResourceStatus};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn parse(text: &str) -> Config {
    parse_manifests_with(text, "test.yaml", &EndpointStatsCache::new()).unwrap()
}

fn status_of<'a>(config: &'a Config, kind: &str, ns: &str, name: &str) -> Vec<&'a ResourceStatus> {
    config
        .statuses
        .iter()
        .filter(|s| {
            s.resource.kind == kind && s.resource.namespace == ns && s.resource.name == name
        })
        .collect()
}

fn endpoints(config: &Config, ns: &str, name: &str, port: u16) -> Vec<SocketAddr> {
    let mut eps: Vec<_> = config
        .service(ns, name, port)
        .unwrap()
        .endpoints
        .iter()
        .map(|e| e.address)
        .collect();
    eps.sort();
    eps
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn loads_a_multi_document_file() {
    let config = load_path_with(&fixtures().join("mesh.yaml"), &EndpointStatsCache::new()).unwrap();
    let r = &config.resources;
    assert_eq!(
        (
            r.services.len(),
            r.endpoint_slices.len(),
            r.http_routes.len()
        ),
        (1, 1, 1)
    );
    // The comment-only document still counts: the route is the fourth document.
    let file = fixtures().join("mesh.yaml").display().to_string();
    assert_eq!(r.http_routes[0].source, format!("{file}#4"));
    assert!(
        config.statuses.iter().all(|s| s.is_ok()),
        "{:#?}",
        config.statuses
    );
    assert_eq!(config.statuses.len(), 3);
    let timeouts = r.http_routes[0].spec.rules[0].timeouts.as_ref().unwrap();
    assert_eq!(timeouts.request.unwrap().0, Duration::from_secs(10));
    assert_eq!(
        timeouts.backend_request.unwrap().0,
        Duration::from_millis(2500)
    );
}

#[test]
fn loads_a_directory_skipping_hidden_and_foreign_files() {
    // `.hidden.yaml` and `notes.txt` hold syntax errors: reading either would fail the load.
    let dir = fixtures().join("dir");
    let config = load_path_with(&dir, &EndpointStatsCache::new()).unwrap();
    let r = &config.resources;
    assert_eq!(r.services.len(), 1);
    assert_eq!(r.http_routes.len(), 1);
    assert_eq!(r.grpc_routes.len(), 1);
    assert!(r.http_routes[0].source.ends_with("20-routes.yml#1"));
    assert!(r.grpc_routes[0].source.ends_with("20-routes.yml#2"));
    assert_eq!(
        endpoints(&config, "prod", "api", 8080),
        vec![addr("10.2.0.1:8080")]
    );
    assert!(config.service_at(addr("10.96.1.1:8080")).is_some());

    // The vendor kind from the JSON file is kept verbatim for its ExtensionRef filter.
    let ext = r.http_routes[0].spec.rules[0].filters[0]
        .extension_ref
        .as_ref()
        .unwrap();
    let object = r.other(&ext.group, &ext.kind, "prod", &ext.name).unwrap();
    assert_eq!(object.body["spec"]["requestsPerSecond"], 5);
    assert!(r.others[0].source.ends_with("30-vendor.json#1"));
    assert!(
        config.statuses.iter().all(|s| s.is_ok()),
        "{:#?}",
        config.statuses
    );
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  clusterIP: 10.96.0.1
  ports: [{name: http, port: 80}]
";

#[test]
fn a_bad_resource_is_named_precisely_and_the_rest_loads() {
    let text = format!(
        "{SERVICE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: foo}}
spec:
  rules:
  - matches: [{{path: {{type: Foo, value: /x}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: good, namespace: default}}
spec:
  rules: [{{backendRefs: [{{name: backend, port: 80}}]}}]
"
    );
    let config = parse(&text);
    let bad = status_of(&config, "HTTPRoute", "default", "foo");
    assert_eq!(bad.len(), 1);
    let cond = &bad[0].conditions[0];
    assert_eq!(
        (cond.kind.as_str(), cond.status, cond.reason.as_str()),
        ("Accepted", false, "Invalid")
    );
    assert_eq!(
        cond.message,
        "HTTPRoute default/foo: spec.rules[0].matches[0].path.type: unknown variant `Foo`, \
         expected one of `Exact`, `PathPrefix`, `RegularExpression`"
    );
    assert_eq!(bad[0].source, "test.yaml#2");
    assert_eq!(config.resources.http_routes.len(), 1);
    assert_eq!(config.resources.http_routes[0].metadata.name, "good");
    assert!(status_of(&config, "HTTPRoute", "default", "good")[0].is_ok());
    assert!(config.service("default", "backend", 80).is_some());
}

#[test]
fn semantic_checks_reject_with_the_field_path() {
    let cases = [
        (
            "matches: [{path: {value: v1}}]",
            "spec.rules[0].matches[0].path.value: `v1` must be an absolute path",
        ),
        (
            "backendRefs: [{name: backend, port: 80, weight: 1000001}]",
            "spec.rules[0].backendRefs[0].weight: must be 0-1000000",
        ),
        (
            "backendRefs: [{name: backend}]",
            "spec.rules[0].backendRefs[0].port: required for a Service",
        ),
        (
            "filters: [{type: URLRewrite}]",
            "spec.rules[0].filters[0].urlRewrite: required when type is URLRewrite",
        ),
        (
            "filters: [{type: RequestRedirect, requestRedirect: {}, urlRewrite: {}}]",
            "spec.rules[0].filters[0].urlRewrite: must not be set when type is RequestRedirect",
        ),
        (
            "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 5, fraction: {numerator: 1}}}]",
            "spec.rules[0].filters[0].requestMirror: only one of `percent` and `fraction` may be set",
        ),
        (
            "timeouts: {request: 1s, backendRequest: 2s}",
            "spec.rules[0].timeouts.backendRequest: 2s must not exceed",
        ),
        (
            "timeouts: {request: 1d}",
            "spec.rules[0].timeouts.request: invalid duration `1d`",
        ),
        (
            "retry: {codes: [200]}",
            "spec.rules[0].retry.codes[0]: 200 is not 400-599",
        ),
        (
            "filters: [{type: RequestRedirect, requestRedirect: {statusCode: 305}}]",
            "statusCode: invalid value: integer `305`",
        ),
    ];
    for (rule, expected) in cases {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\nspec:\n  rules:\n  - {rule}\n"
        );
        let config = parse(&text);
        assert!(config.resources.http_routes.is_empty(), "accepted: {rule}");
        let message = &config.statuses[0].conditions[0].message;
        assert!(message.starts_with("HTTPRoute ns/r: "), "{message}");
        assert!(
            message.contains(expected),
            "{rule}\n  got: {message}\n  want: {expected}"
        );
    }
    let config = parse(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g}\nspec:\n  rules: [{matches: [{method: {}}]}]\n",
    );
    assert!(config.resources.grpc_routes.is_empty());
    assert!(
        config.statuses[0].conditions[0]
            .message
            .contains("spec.rules[0].matches[0].method: one or both")
    );
}

#[test]
fn services_and_slices_are_validated() {
    let cases = [
        (
            "kind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.0.0.300, ports: [{port: 80}]}",
            "spec.clusterIP: `10.0.0.300` is not an IP address",
        ),
        (
            "kind: Service\nmetadata: {name: s}\nspec: {ports: [{name: a}]}",
            "spec.ports[0]: missing field `port`",
        ),
        (
            "kind: Service\nmetadata: {name: s}\nspec: {ports: [{name: a, port: 80}, {name: b, port: 80}]}",
            "spec.ports[1]: duplicate port 80/TCP",
        ),
        (
            "kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}",
            "spec.ports[0].port: must be 1-65535",
        ),
    ];
    for (doc, expected) in cases {
        let config = parse(&format!("apiVersion: v1\n{doc}\n"));
        assert!(config.resources.services.is_empty(), "{doc}");
        let message = &config.statuses[0].conditions[0].message;
        assert!(message.contains(expected), "got {message}, want {expected}");
    }
    let slice = |labels: &str, address: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: e, labels: {labels}}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{address}\"]}}]\n"
        )
    };
    let config = parse(&slice("{}", "10.0.0.1"));
    assert!(
        config.statuses[0].conditions[0]
            .message
            .contains("missing `kubernetes.io/service-name`")
    );
    let config = parse(&slice("{kubernetes.io/service-name: s}", "fd00::1"));
    assert!(
        config.statuses[0].conditions[0]
            .message
            .contains("endpoints[0].addresses[0]: `fd00::1` is not an IPv4 address")
    );
}

#[test]
fn how_a_policy_attaches_is_read_once_for_validation_and_the_filters() {
    let policy = |spec: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: app}}\nspec: {spec}\n"
        )
    };
    // A selector together with targets is refused by validation, as istiod refuses it.
    let config = parse(&policy(
        "{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Service, name: a}]}",
    ));
    assert!(config.resources.authorization_policies.is_empty());
    let message = &config.statuses[0].conditions[0].message;
    assert!(
        message.contains("spec: `selector` and `targetRef(s)` cannot be used together"),
        "{message}"
    );

    // The deprecated single target comes first, and each target carries its field path.
    let config = parse(&policy(
        "{targetRef: {kind: Service, name: a}, targetRefs: [{kind: Service, name: b}, {kind: Service, name: c}]}",
    ));
    let spec = &config.resources.authorization_policies[0].spec;
    let PolicyAttachment::Targets(targets) = spec.attachment() else {
        panic!("targets without a selector attach by their targets");
    };
    let read: Vec<(&str, &str)> = targets
        .iter()
        .map(|(field, target)| (field.as_str(), target.name.as_str()))
        .collect();
    assert_eq!(
        read,
        [
            ("spec.targetRef", "a"),
            ("spec.targetRefs[0]", "b"),
            ("spec.targetRefs[1]", "c")
        ]
    );

    // A selector alone, or nothing, is for ztunnel and sidecars: kept, and never a waypoint's.
    for (spec, attachment) in [
        (
            "{selector: {matchLabels: {app: a}}}",
            PolicyAttachment::Selector,
        ),
        ("{}", PolicyAttachment::Namespace),
    ] {
        let config = parse(&policy(spec));
        let policy = &config.resources.authorization_policies[0];
        assert_eq!(policy.spec.attachment(), attachment, "{spec}");
    }
}

#[test]
fn unknown_kinds_are_kept_and_duplicates_rejected() {
    let text = format!(
        "{SERVICE}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: backend, namespace: default}}
spec: {{replicas: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: default}}
spec: {{clusterIP: 10.96.0.99, ports: [{{port: 81}}]}}
"
    );
    let config = parse(&text);
    assert_eq!(config.resources.others.len(), 1);
    let deployment = config
        .resources
        .other("apps", "Deployment", "default", "backend")
        .unwrap();
    assert_eq!(deployment.body["spec"]["replicas"], 2);
    // The first Service wins; the later one is named as a duplicate.
    assert_eq!(config.resources.services.len(), 1);
    assert!(config.service("default", "backend", 80).is_some());
    assert!(config.service("default", "backend", 81).is_none());
    let statuses = status_of(&config, "Service", "default", "backend");
    assert_eq!(statuses.len(), 2);
    let dup = statuses.iter().find(|s| !s.is_ok()).unwrap();
    assert_eq!(dup.source, "test.yaml#3");
    assert!(
        dup.conditions[0]
            .message
            .contains("duplicate of the one in test.yaml#1"),
        "{dup:?}"
    );
}

#[test]
fn services_resolve_to_ready_endpoints() {
    let config = load_path_with(&fixtures().join("mesh.yaml"), &EndpointStatsCache::new()).unwrap();
    // Named slice port `http` (8081) wins over targetPort 8080; the not-ready endpoint is out,
    // an endpoint without conditions counts as ready.
    let http = config.service("shop", "echo", 80).unwrap();
    assert_eq!(
        endpoints(&config, "shop", "echo", 80),
        vec![addr("10.1.0.1:8081"), addr("10.1.0.3:8081")]
    );
    assert_eq!(http.protocol.upstream, AppProtocol::Http1);
    assert_eq!(
        endpoints(&config, "shop", "echo", 7070),
        vec![addr("10.1.0.1:9090"), addr("10.1.0.3:9090")]
    );
    assert_eq!(
        config
            .service("shop", "echo", 7070)
            .unwrap()
            .protocol
            .upstream,
        AppProtocol::H2c
    );
    // Dual stack: both cluster IPs lead to the same backend.
    let v4 = config.service_at(addr("10.96.0.10:80")).unwrap();
    let v6 = config.service_at(addr("[fd00::10]:80")).unwrap();
    assert!(Arc::ptr_eq(v4, v6) && Arc::ptr_eq(v4, http));
    assert!(config.service_at(addr("10.96.0.10:81")).is_none());
}

#[test]
fn endpoint_ports_protocols_and_address_families() {
    let text = "apiVersion: v1
kind: Service
metadata: {name: s, namespace: n}
spec:
  clusterIP: 10.96.0.2
  ports:
  - {name: web, port: 80, targetPort: 8080}
  - {name: rpc, port: 90}
  - {name: named, port: 100, targetPort: app}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-v6, namespace: n, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{name: rpc, port: 9000, appProtocol: grpc}]
endpoints:
- addresses: ['fd00::1']
- addresses: ['fd00::2']
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-fqdn, namespace: n, labels: {kubernetes.io/service-name: s}}
addressType: FQDN
endpoints: [{addresses: [db.example.com]}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: n}
spec: {clusterIP: None, ports: [{port: 80, appProtocol: kubernetes.io/h2c}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: n}
spec: {type: ExternalName, externalName: db.example.com, ports: [{port: 80}]}
";
    let config = parse(text);
    assert!(
        config.statuses.iter().all(|s| s.is_ok()),
        "{:#?}",
        config.statuses
    );
    // No slice port named `web`: the numeric targetPort is used.
    assert_eq!(
        endpoints(&config, "n", "s", 80),
        vec![addr("[fd00::1]:8080")]
    );
    assert_eq!(
        config.service("n", "s", 80).unwrap().protocol.upstream,
        AppProtocol::Http1
    );
    // The slice port named `rpc` gives the port and, by its appProtocol, h2c.
    assert_eq!(
        endpoints(&config, "n", "s", 90),
        vec![addr("[fd00::1]:9000")]
    );
    assert_eq!(
        config.service("n", "s", 90).unwrap().protocol.upstream,
        AppProtocol::H2c
    );
    // A named targetPort with no matching slice port cannot be resolved.
    assert!(endpoints(&config, "n", "s", 100).is_empty());
    // Headless: reachable by name for backendRefs, not by a VIP.
    let headless = config.service("n", "headless", 80).unwrap();
    assert!(headless.cluster_ips.is_empty() && headless.protocol.upstream == AppProtocol::H2c);
    assert_eq!(config.backends().count(), 4);
    // ExternalName: a valid resource without a backend.
    assert!(config.has_service("n", "ext"));
    assert!(config.service("n", "ext", 80).is_none());
}

#[test]
fn endpoint_stats_survive_reloads() {
    let cache = EndpointStatsCache::new();
    let path = fixtures().join("mesh.yaml");
    let first = load_path_with(&path, &cache).unwrap();
    let ep = |c: &Config| {
        c.service("shop", "echo", 80).unwrap().endpoints[0]
            .stats
            .clone()
    };
    ep(&first).in_flight.fetch_add(3, Ordering::Relaxed);
    let second = load_path_with(&path, &cache).unwrap();
    assert!(Arc::ptr_eq(&ep(&first), &ep(&second)));
    assert_eq!(ep(&second).in_flight.load(Ordering::Relaxed), 3);
    // Another cache knows nothing of them.
    let other = load_path_with(&path, &EndpointStatsCache::new()).unwrap();
    assert!(!Arc::ptr_eq(&ep(&first), &ep(&other)));
    // Once no snapshot holds an endpoint, a later one starts fresh.
    drop((first, second));
    let third = load_path_with(&path, &cache).unwrap();
    assert_eq!(ep(&third).in_flight.load(Ordering::Relaxed), 0);
}

/// Every manifest of the upstream Gateway API conformance suite parses, file by file.
#[test]
fn upstream_conformance_manifests_parse() {
    // WAYPOINT_CONFORMANCE_DIR names the copy of the upstream release (as .ci/run sets it).
    let root = std::env::var_os("WAYPOINT_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/gateway-api-v1.6.1")
        });
    let dir = root.join("conformance");
    if !dir.is_dir() {
        // In CI the manifests must be there: a silent skip would hide a broken setup.
        assert!(
            std::env::var_os("CI").is_none(),
            "no conformance manifests at {} (set WAYPOINT_CONFORMANCE_DIR)",
            dir.display()
        );
        println!(
            "skipping: no conformance manifests at {} (set WAYPOINT_CONFORMANCE_DIR)",
            dir.display()
        );
        return;
    }
    let mut dirs = vec![dir];
    let mut counts = BTreeMap::new();
    let mut files = 0;
    let mut expected_rejections = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            files += 1;
            let config = load_path_with(&path, &EndpointStatsCache::new())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let rejected: Vec<_> = config.statuses.iter().filter(|s| !s.is_ok()).collect();
            if path.ends_with("gateway-invalid-tls-configuration.yaml") {
                // Upstream ships one deliberately malformed Secret there (GatewayInvalidTLS-
                // Configuration); it, and only it, must be refused with the field named.
                let names: Vec<String> = rejected.iter().map(|s| s.resource.to_string()).collect();
                assert_eq!(
                    names,
                    ["Secret gateway-conformance-infra/malformed-certificate"],
                    "{}: {rejected:#?}",
                    path.display()
                );
                assert!(
                    rejected[0]
                        .conditions
                        .iter()
                        .any(|c| !c.status && c.message.contains("data[tls.crt]")),
                    "{rejected:#?}"
                );
                expected_rejections += 1;
            } else {
                assert!(rejected.is_empty(), "{}: {rejected:#?}", path.display());
            }
            let r = &config.resources;
            for (kind, n) in [
                ("Gateway", r.gateways.len()),
                ("HTTPRoute", r.http_routes.len()),
                ("GRPCRoute", r.grpc_routes.len()),
                ("TCPRoute", r.tcp_routes.len()),
                ("TLSRoute", r.tls_routes.len()),
                ("Service", r.services.len()),
                ("EndpointSlice", r.endpoint_slices.len()),
                ("ReferenceGrant", r.reference_grants.len()),
            ] {
                *counts.entry(kind.to_owned()).or_insert(0) += n;
            }
            for other in &r.others {
                *counts.entry(format!("(kept) {}", other.kind)).or_insert(0) += 1;
            }
        }
    }
    println!("{files} conformance files: {counts:?}");
    assert!(files > 50);
    assert_eq!(
        expected_rejections, 1,
        "the malformed Secret's file was not read"
    );
    assert!(counts["HTTPRoute"] > 50 && counts["GRPCRoute"] > 0 && counts["Gateway"] > 5);
    // Every TCPRoute and TLSRoute of the release is read as its kind (none kept verbatim).
    assert!(
        counts["TCPRoute"] >= 8 && counts["TLSRoute"] >= 15,
        "{counts:?}"
    );
    assert!(!counts.contains_key("(kept) TCPRoute") && !counts.contains_key("(kept) TLSRoute"));
}

type Changes = tokio::sync::mpsc::UnboundedReceiver<Result<Config, LoadError>>;

async fn next(rx: &mut Changes) -> Result<Config, LoadError> {
    let change = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    change.expect("no reload within 5 s").expect("watcher gone")
}

#[tokio::test]
async fn watch_reloads_on_change_and_reports_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, SERVICE).unwrap();
    let before = fingerprint(dir.path()).unwrap();
    assert_eq!(before, fingerprint(dir.path()).unwrap());

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Config, LoadError>>();
    let (trigger, shutdown) = waypoint_core::shutdown::channel();
    let task = tokio::spawn(watch(
        dir.path().to_path_buf(),
        Duration::from_millis(20),
        Arc::new(EndpointStatsCache::new()),
        move |change| {
            let _ = tx.send(change);
        },
        shutdown,
    ));

    // Nothing changed: no call.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rx.try_recv().is_err());

    // A change (same size, so only the contents tell): a new config.
    std::fs::write(&file, SERVICE.replace("port: 80", "port: 81")).unwrap();
    let config = next(&mut rx).await.unwrap();
    assert!(config.service("default", "backend", 81).is_some());

    // A broken file: an error, once.
    std::fs::write(&file, "kind: [\n").unwrap();
    let err = next(&mut rx).await.unwrap_err();
    assert!(err.to_string().contains("config.yaml line"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err());

    // Fixed again; then a new file in the directory is a change too.
    std::fs::write(&file, SERVICE).unwrap();
    assert!(next(&mut rx).await.is_ok());
    std::fs::write(
        dir.path().join("more.yaml"),
        SERVICE.replace("backend", "other"),
    )
    .unwrap();
    assert!(next(&mut rx).await.unwrap().has_service("default", "other"));

    assert!(trigger.shutdown(Duration::from_secs(5)).await);
    task.await.unwrap();
}

/// The serde types alone: defaults, closed sets, durations.
mod resources {
    use std::time::Duration;

    use waypoint_core::config::resources::*;

    #[test]
    fn durations_follow_gep_2257() {
        let ok = [
            ("0h", 0),
            ("0s", 0),
            ("0h0m0s", 0),
            ("1h", 3_600_000),
            ("500ms", 500),
            ("150m", 9_000_000),
            ("1h30m10s", 5_410_000),
            ("10s30m1h", 5_410_000),
            ("100ms200ms300ms", 600),
            ("1h2h20m10m", 12_600_000),
            ("01h", 3_600_000),
            ("99999ms", 99_999),
        ];
        for (s, ms) in ok {
            assert_eq!(
                parse_gateway_duration(s),
                Ok(Duration::from_millis(ms)),
                "{s}"
            );
        }
        for s in [
            "",
            "1",
            "1m1",
            "1d",
            "1h30m10s20ms50h",
            "999999h",
            "1.5h",
            "-15m",
            "1 s",
            "s",
            "1us",
        ] {
            let err = parse_gateway_duration(s).unwrap_err();
            assert!(err.contains(&format!("`{s}`")), "{err}");
        }
    }

    #[test]
    fn durations_format_in_standard_form() {
        for (input, canonical) in [
            ("0h", "0s"),
            ("150m", "2h30m"),
            ("7230s", "2h30s"),
            ("1500ms", "1s500ms"),
        ] {
            let d = GatewayDuration(parse_gateway_duration(input).unwrap());
            assert_eq!(d.to_string(), canonical);
        }
    }

    #[test]
    fn target_port_is_int_or_string() {
        let p: ServicePort = serde_json::from_str(r#"{"port":80,"targetPort":"http"}"#).unwrap();
        assert_eq!(p.target_port, Some(TargetPort::Name("http".into())));
        let p: ServicePort = serde_json::from_str(r#"{"port":80,"targetPort":8080}"#).unwrap();
        assert_eq!(p.target_port, Some(TargetPort::Number(8080)));
        let p: ServicePort = serde_json::from_str(r#"{"port":80,"targetPort":"9090"}"#).unwrap();
        assert_eq!(p.target_port, Some(TargetPort::Number(9090)));
        assert!(serde_json::from_str::<ServicePort>(r#"{"port":80,"targetPort":70000}"#).is_err());
    }

    #[test]
    fn route_defaults_are_the_api_servers() {
        let r: HttpRoute = serde_json::from_str(
            r#"{"metadata":{"name":"r"},"spec":{"rules":[{"backendRefs":[{"name":"s","port":80}],
                "filters":[{"type":"RequestRedirect","requestRedirect":{}}]}]}}"#,
        )
        .unwrap();
        let rule = &r.spec.rules[0];
        assert_eq!(rule.matches, vec![HttpRouteMatch::default()]);
        assert_eq!(rule.matches[0].path.kind, PathMatchType::PathPrefix);
        assert_eq!(rule.matches[0].path.value, "/");
        assert_eq!(rule.backend_refs[0].weight, 1);
        assert_eq!(rule.backend_refs[0].kind, "Service");
        assert_eq!(rule.backend_refs[0].group, "");
        let redirect = rule.filters[0].request_redirect.as_ref().unwrap();
        assert_eq!(redirect.status_code.code(), 302);
        let r: HttpRoute = serde_json::from_str(r#"{"metadata":{"name":"r"},"spec":{}}"#).unwrap();
        assert_eq!(r.spec.rules.len(), 1);
    }

    #[test]
    fn closed_sets_reject_unknown_values() {
        let err = serde_json::from_str::<RequestRedirect>(r#"{"statusCode":305}"#).unwrap_err();
        assert!(err.to_string().contains("305"), "{err}");
        let err = serde_json::from_str::<HttpRouteMatch>(r#"{"method":"FETCH"}"#).unwrap_err();
        assert!(err.to_string().contains("FETCH"), "{err}");
        let c: Cors = serde_json::from_str(r#"{"allowMethods":["GET","*"]}"#).unwrap();
        assert_eq!(
            c.allow_methods,
            vec![CorsMethod::Method(HttpMethod::Get), CorsMethod::Any]
        );
        assert_eq!(c.max_age, 5);
        let err = serde_json::from_str::<RuleOperation>(r#"{"notpaths":["/x"]}"#).unwrap_err();
        assert!(err.to_string().contains("notpaths"), "{err}");
    }
}
