//! Event-level tests of the Kubernetes config source against a scripted `KubeApi`: what the
//! reflectors see becomes configs through the same builder the files feed.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{FakeApi, Verb};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use waypoint_core::config::Config;
use waypoint_core::config::build::EndpointStatsCache;
use waypoint_core::config::source::ConfigSource;
use waypoint_core::shutdown::{self, ShutdownTrigger};
use waypoint_kube::api::ApiResource;
use waypoint_kube::api::kinds::*;
use waypoint_kube::source::SourceMetrics;
use waypoint_kube::{KubeError, KubeSource, KubeSourceOptions};

const WAIT: Duration = Duration::from_secs(5);

fn service(ns: &str, name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "managedFields": [{"manager": "x"}]},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80}]}})
}

fn route(ns: &str, name: &str, backend: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": backend, "port": 80}],
                 "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}})
}

struct Running {
    configs: mpsc::Receiver<Config>,
    metrics: SourceMetrics,
    _trigger: ShutdownTrigger,
}

impl Running {
    async fn next(&mut self) -> Config {
        tokio::time::timeout(WAIT, self.configs.recv())
            .await
            .expect("a config in time")
            .expect("the source is running")
    }

    /// The next config for which `done` holds (intermediate ones skipped).
    async fn until(&mut self, done: impl Fn(&Config) -> bool) -> Config {
        loop {
            let config = self.next().await;
            if done(&config) {
                return config;
            }
        }
    }

    async fn nothing_for(&mut self, quiet: Duration) {
        if let Ok(Some(config)) = tokio::time::timeout(quiet, self.configs.recv()).await {
            panic!("unexpected config: {:?}", names(&config));
        }
    }
}

fn start(api: Arc<FakeApi>, namespace: Option<&str>) -> Running {
    let source = KubeSource::new(
        api,
        KubeSourceOptions {
            namespace: namespace.map(str::to_owned),
            coalesce_quiet: Duration::from_millis(30),
            coalesce_max: Duration::from_millis(300),
        },
    );
    let metrics = source.metrics().clone();
    let (tx, configs) = mpsc::channel(16);
    let (trigger, shutdown) = shutdown::channel();
    let cache = Arc::new(EndpointStatsCache::default());
    tokio::spawn(Box::new(source).run(cache, tx, shutdown));
    Running {
        configs,
        metrics,
        _trigger: trigger,
    }
}

fn names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .statuses
        .iter()
        .map(|s| format!("{} [{}]", s.resource, s.source))
        .collect();
    names.sort();
    names
}

fn service_names(config: &Config) -> Vec<String> {
    config
        .resources
        .services
        .iter()
        .map(|s| s.resource.metadata.name.clone())
        .collect()
}

#[tokio::test]
async fn listed_objects_become_the_first_config_labelled_by_kind_and_name() {
    let api = FakeApi::new();
    api.put(&SERVICE, service("default", "echo", "10.0.0.1"));
    api.put(&HTTP_ROUTE, route("default", "echo", "echo"));
    let mut running = start(api.clone(), None);
    let config = running.next().await;
    assert_eq!(service_names(&config), ["echo"]);
    assert_eq!(
        names(&config),
        [
            "HTTPRoute default/echo [kube:HTTPRoute default/echo]",
            "Service default/echo [kube:Service default/echo]"
        ]
    );
    assert!(
        config.statuses.iter().all(|s| s.is_ok()),
        "{:?}",
        config.statuses
    );
    assert_eq!(running.metrics.snapshots(), 1);
    running.nothing_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn adds_updates_and_deletes_reach_later_configs() {
    let api = FakeApi::new();
    api.put(&SERVICE, service("default", "a", "10.0.0.1"));
    let mut running = start(api.clone(), None);
    running.next().await;

    api.put(&SERVICE, service("default", "b", "10.0.0.2"));
    let config = running.until(|c| c.resources.services.len() == 2).await;
    assert_eq!(service_names(&config), ["a", "b"]);

    api.put(&SERVICE, service("default", "a", "10.0.0.9"));
    let config = running
        .until(|c| c.resources.services[0].resource.spec.cluster_ip.as_deref() == Some("10.0.0.9"))
        .await;
    assert_eq!(service_names(&config), ["a", "b"]);

    api.delete(&SERVICE, "default", "a", false);
    let config = running.until(|c| c.resources.services.len() == 1).await;
    assert_eq!(service_names(&config), ["b"]);
}

#[tokio::test]
async fn a_watch_that_gets_410_lists_again_and_a_deletion_missed_meanwhile_converges() {
    let api = FakeApi::new();
    api.put(&SERVICE, service("default", "a", "10.0.0.1"));
    api.put(&SERVICE, service("default", "b", "10.0.0.2"));
    let mut running = start(api.clone(), None);
    assert_eq!(service_names(&running.next().await), ["a", "b"]);

    // The connection drops; meanwhile `a` is deleted (no event reaches us) and history is
    // compacted, so resuming the watch answers 410 and only a re-list can see the deletion.
    api.break_watches(Some(|| KubeError::Transport("connection reset".into())));
    api.delete(&SERVICE, "default", "a", true);
    api.compact();
    let config = running.until(|c| c.resources.services.len() == 1).await;
    assert_eq!(service_names(&config), ["b"]);
    assert!(running.metrics.restarts("Service", "transport") >= 1);

    // A 410 inside the stream also re-lists.
    api.break_watches(Some(|| KubeError::Gone("too old".into())));
    api.delete(&SERVICE, "default", "b", true);
    api.compact();
    let config = running.until(|c| c.resources.services.is_empty()).await;
    assert!(service_names(&config).is_empty());
    assert!(running.metrics.restarts("Service", "gone") >= 1);
}

#[tokio::test]
async fn a_bookmark_advances_the_version_the_next_watch_starts_from() {
    let api = FakeApi::new();
    let mut running = start(api.clone(), None);
    running.next().await;
    let rv = api.bookmark(&SERVICE);
    // Let the reflector read the bookmark, then end the watch cleanly (the server's timeout).
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.break_watches(None);
    let resumed = format!("watch /v1/services rv={rv}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !api.call_lines().contains(&resumed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            api.call_lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A clean end resumes the watch; it does not list again.
    let lists = api
        .call_lines()
        .iter()
        .filter(|c| c.starts_with("list /v1/services"))
        .count();
    assert_eq!(lists, 1);
}

#[tokio::test]
async fn lists_follow_continue_tokens_across_pages() {
    let api = FakeApi::with_page_size(2);
    for i in 0..5 {
        api.put(
            &SERVICE,
            service("default", &format!("s{i}"), &format!("10.0.0.{i}")),
        );
    }
    let mut running = start(api.clone(), None);
    let config = running.next().await;
    assert_eq!(service_names(&config), ["s0", "s1", "s2", "s3", "s4"]);
    let pages: Vec<String> = api
        .call_lines()
        .into_iter()
        .filter(|c| c.starts_with("list /v1/services"))
        .collect();
    assert_eq!(
        pages,
        [
            "list /v1/services ns=* continue=",
            "list /v1/services ns=* continue=2",
            "list /v1/services ns=* continue=4"
        ]
    );
}

#[tokio::test]
async fn a_burst_of_events_builds_one_snapshot() {
    let api = FakeApi::new();
    let mut running = start(api.clone(), None);
    running.next().await;
    for i in 0..50 {
        api.put(
            &SERVICE,
            service("default", &format!("s{i}"), &format!("10.0.1.{i}")),
        );
    }
    let config = running.next().await;
    assert_eq!(config.resources.services.len(), 50);
    running.nothing_for(Duration::from_millis(200)).await;
    assert_eq!(running.metrics.snapshots(), 2);
}

#[tokio::test]
async fn nothing_is_sent_until_every_kind_has_listed_once() {
    let api = FakeApi::new();
    api.put(&SERVICE, service("default", "a", "10.0.0.1"));
    api.fail(Verb::List, &POD, KubeError::Transport("refused".into()));
    api.fail(
        Verb::List,
        &POD,
        KubeError::Api {
            code: 503,
            reason: "ServiceUnavailable".into(),
            message: "".into(),
        },
    );
    let mut running = start(api.clone(), None);
    // Two failed lists back off 100-200 ms and 200-400 ms: no config before they are retried.
    running.nothing_for(Duration::from_millis(250)).await;
    let config = running.next().await;
    assert_eq!(service_names(&config), ["a"]);
    assert_eq!(running.metrics.restarts("Pod", "transport"), 1);
    assert_eq!(running.metrics.restarts("Pod", "api_error"), 1);
}

#[tokio::test]
async fn reference_grants_fall_back_to_v1beta1_when_v1_is_not_served() {
    let api = FakeApi::new();
    api.remove_resource(&REFERENCE_GRANT);
    api.put(
        &REFERENCE_GRANT_V1BETA1,
        json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "g", "namespace": "backends"},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}],
                     "to": [{"group": "", "kind": "Service"}]}}),
    );
    let mut running = start(api.clone(), None);
    let config = running.next().await;
    assert_eq!(config.resources.reference_grants.len(), 1);
    assert!(
        api.call_lines()
            .iter()
            .any(|c| c.starts_with("watch gateway.networking.k8s.io/v1beta1/referencegrants"))
    );
}

#[tokio::test]
async fn service_entries_are_watched_and_read_at_v1beta1_where_v1_is_not_served() {
    let api = FakeApi::new();
    api.remove_resource(&SERVICE_ENTRY);
    let v1beta1 = ApiResource {
        version: "v1beta1",
        ..SERVICE_ENTRY
    };
    api.put(
        &v1beta1,
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "ServiceEntry",
            "metadata": {"name": "api", "namespace": "egress"},
            "spec": {"hosts": ["api.example.com"], "addresses": ["240.0.0.1"],
                "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
                "resolution": "STATIC", "endpoints": [{"address": "203.0.113.5"}]}}),
    );
    let mut running = start(api.clone(), None);
    let config = running.next().await;
    assert_eq!(config.resources.service_entries.len(), 1);
    let backend = config.service_at("240.0.0.1:443".parse().unwrap()).unwrap();
    assert_eq!(backend.service.to_string(), "ServiceEntry egress/api");
    let calls = api.call_lines();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("watch networking.istio.io/v1beta1/serviceentries")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn tcp_and_tls_routes_are_read_at_the_newest_version_served_and_absent_crds_read_as_none() {
    // TCPRoute served at v1alpha2 only; TLSRoute not at all (no CRD installed).
    let api = FakeApi::new();
    api.remove_resource(&TCP_ROUTE);
    api.remove_resource(&TLS_ROUTE);
    for version in ["v1alpha3", "v1alpha2"] {
        api.remove_resource(&ApiResource {
            version,
            ..TLS_ROUTE
        });
    }
    let tcp_v1alpha2 = ApiResource {
        version: "v1alpha2",
        ..TCP_ROUTE
    };
    api.put(
        &tcp_v1alpha2,
        json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]}}),
    );
    let mut running = start(api.clone(), None);
    // The source syncs (and builds) although TLSRoute is not served at any version.
    let config = running.next().await;
    assert_eq!(config.resources.tcp_routes.len(), 1);
    assert!(config.resources.tls_routes.is_empty());
    let calls = api.call_lines();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("watch gateway.networking.k8s.io/v1alpha2/tcproutes")),
        "{calls:?}"
    );
    for version in ["v1", "v1alpha3", "v1alpha2"] {
        let list = format!("list gateway.networking.k8s.io/{version}/tlsroutes");
        assert!(
            calls.iter().any(|c| c.starts_with(&list)),
            "{list}: {calls:?}"
        );
    }
}

#[tokio::test]
async fn an_invalid_object_is_left_out_with_a_status_naming_its_field() {
    let api = FakeApi::new();
    api.put(&SERVICE, service("default", "a", "10.0.0.1"));
    let mut bad = route("default", "bad", "a");
    bad["spec"]["rules"][0]["backendRefs"][0]["port"] = json!("eighty");
    api.put(&HTTP_ROUTE, bad);
    let mut running = start(api.clone(), None);
    let config = running.next().await;
    assert_eq!(service_names(&config), ["a"]);
    assert!(config.resources.http_routes.is_empty());
    let status = config
        .statuses
        .iter()
        .find(|s| s.resource.name == "bad")
        .unwrap();
    assert_eq!(status.source, "kube:HTTPRoute default/bad");
    let message = &status.conditions[0].message;
    assert!(
        message.starts_with("HTTPRoute default/bad: spec.rules[0].backendRefs[0].port"),
        "{message}"
    );
}

#[tokio::test]
async fn a_namespace_restricts_namespaced_kinds_only() {
    let api = FakeApi::new();
    api.put(&SERVICE, service("mine", "a", "10.0.0.1"));
    api.put(&SERVICE, service("other", "b", "10.0.0.2"));
    let mut running = start(api.clone(), Some("mine"));
    let config = running.next().await;
    assert_eq!(service_names(&config), ["a"]);
    let calls = api.call_lines();
    assert!(
        calls.contains(&"list /v1/services ns=mine continue=".to_owned()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"list /v1/namespaces ns=* continue=".to_owned()),
        "{calls:?}"
    );
    assert!(
        calls.contains(
            &"list gateway.networking.k8s.io/v1/gatewayclasses ns=* continue=".to_owned()
        ),
        "{calls:?}"
    );
}
