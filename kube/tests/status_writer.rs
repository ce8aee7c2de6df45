//! The status writer against a scripted API server: what it writes, what it keeps, what it
//! leaves alone, and how it behaves when the server conflicts, is away, or the Lease is not ours.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{FakeApi, Verb};
use serde_json::{Value, json};
use waypoint_core::config::parse_manifests;
use waypoint_core::filter::ExtensionRegistry;
use waypoint_core::shutdown::{self, ShutdownTrigger};
use waypoint_core::snapshot::SnapshotStore;
use waypoint_filters::route::RouteFactory;
use waypoint_kube::KubeError;
use waypoint_kube::api::ApiResource;
use waypoint_kube::api::kinds::{GATEWAY, GATEWAY_CLASS, HTTP_ROUTE, LEASE, TCP_ROUTE};
use waypoint_kube::status::{LeaseSettings, Scope, StatusMetrics, StatusSettings, StatusWriter};

const US: &str = "waypoint.dev/gateway-controller";
const ISTIO: &str = "istio.io/gateway-controller";

/// The cluster as the config source would have read it.
const CONFIG: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: waypoint, generation: 1}
spec: {controllerName: waypoint.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: infra, generation: 4}
spec:
  gatewayClassName: waypoint
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
status:
  addresses: [{type: IPAddress, value: 10.0.0.9}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: infra}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra, generation: 2}
spec:
  parentRefs: [{name: wp}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
"#;

fn server_objects(api: &FakeApi) {
    api.put(
        &GATEWAY_CLASS,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "waypoint", "generation": 1},
               "spec": {"controllerName": US}}),
    );
    api.put(
        &GATEWAY,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "wp", "namespace": "infra", "generation": 4},
               "spec": {"gatewayClassName": "waypoint",
                        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
               "status": {"addresses": [{"type": "Hostname", "value": "wp.infra.svc.cluster.local"},
                                        {"type": "IPAddress", "value": "10.0.0.9"}]}}),
    );
    api.put(&HTTP_ROUTE, route(vec![istio_entry()]));
}

fn route(parents: Vec<Value>) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "web", "namespace": "infra", "generation": 2},
           "spec": {"parentRefs": [{"name": "wp"}], "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]},
           "status": {"parents": parents}})
}

/// Istio <= 1.30's own entry for a Service parent, with fields we do not know.
fn istio_entry() -> Value {
    json!({"parentRef": {"group": "", "kind": "Service", "name": "svc", "port": 80},
           "controllerName": ISTIO,
           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Route was valid",
                           "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
           "x-istio": {"zeta": 1, "alpha": [3, 2, 1]}})
}

fn our_entry_for(parent: &str) -> Value {
    json!({"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra", "name": parent},
           "controllerName": US,
           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "attached",
                           "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
}

struct Running {
    api: Arc<FakeApi>,
    store: Arc<SnapshotStore>,
    metrics: StatusMetrics,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

fn lease(identity: &str) -> LeaseSettings {
    LeaseSettings::new("waypoint-status-wp".into(), "infra".into(), identity.into())
}

fn start(api: Arc<FakeApi>, identity: &str) -> Running {
    start_with(api, identity, CONFIG)
}

fn start_with(api: Arc<FakeApi>, identity: &str, config: &str) -> Running {
    let store = Arc::new(SnapshotStore::new(
        vec![Arc::new(RouteFactory)],
        ExtensionRegistry::default(),
    ));
    store.apply(parse_manifests(config, "cluster").expect("the config parses"));
    let scope = Scope {
        gateway: Some(("infra".into(), "wp".into())),
        ..Scope::default()
    };
    let metrics = StatusMetrics::default();
    let writer = StatusWriter::new(api.clone(), StatusSettings::new(scope, lease(identity)))
        .with_metrics(metrics.clone());
    let (trigger, shutdown) = shutdown::channel();
    let task = tokio::spawn(writer.run(store.subscribe(), shutdown));
    Running {
        api,
        store,
        metrics,
        trigger,
        task,
    }
}

impl Running {
    async fn stop(self) {
        assert!(self.trigger.shutdown(Duration::from_secs(5)).await);
        self.task.await.expect("the writer ends cleanly");
    }

    fn route(&self) -> Value {
        self.api
            .object(&HTTP_ROUTE, Some("infra"), "web")
            .expect("the route")
    }
}

fn settle() -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_secs(3))
}

#[tokio::test(start_paused = true)]
async fn the_holder_writes_class_gateway_and_route_status_under_its_controller_name() {
    let api = FakeApi::new();
    server_objects(&api);
    let run = start(api.clone(), "a");
    settle().await;
    let class = api.object(&GATEWAY_CLASS, None, "waypoint").expect("class");
    assert_eq!(class["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(class["status"]["conditions"][0]["status"], "True");
    let gw = api.object(&GATEWAY, Some("infra"), "wp").expect("gateway");
    assert_eq!(gw["status"]["conditions"][0]["observedGeneration"], 4);
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1);
    assert!(gw["status"]["conditions"][0]["lastTransitionTime"].is_string());
    let route = run.route();
    let ours = &route["status"]["parents"][1];
    assert_eq!(ours["controllerName"], US);
    assert_eq!(ours["parentRef"]["name"], "wp");
    assert_eq!(ours["conditions"][0]["type"], "Accepted");
    assert_eq!(ours["conditions"][0]["status"], "True");
    assert_eq!(ours["conditions"][0]["observedGeneration"], 2);
    assert_eq!(run.metrics.writes("HTTPRoute", "written"), 1);
    assert_eq!(
        api.object(&LEASE, Some("infra"), "waypoint-status-wp")
            .expect("lease")["spec"]["holderIdentity"],
        "a"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_gateway_keeps_the_addresses_its_deploying_controller_wrote() {
    let api = FakeApi::new();
    server_objects(&api);
    let before =
        api.object(&GATEWAY, Some("infra"), "wp").expect("gateway")["status"]["addresses"].clone();
    let run = start(api.clone(), "a");
    settle().await;
    let gw = api.object(&GATEWAY, Some("infra"), "wp").expect("gateway");
    assert_eq!(gw["status"]["addresses"], before);
    assert_eq!(
        gw["spec"]["listeners"][0]["name"], "http",
        "the rest of the object is kept"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn other_controllers_entries_are_kept_byte_for_byte_and_in_place() {
    let api = FakeApi::new();
    server_objects(&api);
    let run = start(api.clone(), "a");
    settle().await;
    let parents = run.route()["status"]["parents"].clone();
    assert_eq!(parents.as_array().map(Vec::len), Some(2));
    assert_eq!(
        serde_json::to_string(&parents[0]).expect("json"),
        serde_json::to_string(&istio_entry()).expect("json")
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn our_stale_entries_are_removed_and_a_sibling_waypoints_are_kept() {
    let api = FakeApi::new();
    server_objects(&api);
    // A previous holder wrote an entry for a listener of our Gateway the route no longer names;
    // a waypoint of another Gateway, under the same controller name, wrote its own.
    let mut stale = our_entry_for("wp");
    stale["parentRef"]["sectionName"] = json!("removed");
    api.put(
        &HTTP_ROUTE,
        route(vec![
            stale,
            our_entry_for("other-waypoint"),
            istio_entry(),
            our_entry_for("wp"),
        ]),
    );
    let run = start(api.clone(), "a");
    settle().await;
    let parents = run.route()["status"]["parents"].clone();
    let names: Vec<&Value> = parents
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| &p["parentRef"]["name"])
        .collect();
    assert_eq!(names, ["other-waypoint", "svc", "wp"]);
    assert_eq!(parents[0], our_entry_for("other-waypoint"));
    assert!(parents[2]["parentRef"].get("sectionName").is_none());
    // The entry for wp kept its place and, its status unchanged, its time.
    assert_eq!(
        parents[2]["conditions"][0]["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(parents[2]["conditions"][0]["observedGeneration"], 2);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_written_when_the_server_already_has_it() {
    let api = FakeApi::new();
    server_objects(&api);
    let first = start(api.clone(), "a");
    settle().await;
    let writes = api.calls_of(Verb::ReplaceStatus, &HTTP_ROUTE).len();
    assert_eq!(writes, 1);
    // The same config again: the writer remembers what the server has and does not even read.
    let gets = api.calls_of(Verb::Get, &HTTP_ROUTE).len();
    first
        .store
        .apply(parse_manifests(CONFIG, "cluster").expect("the config parses"));
    settle().await;
    assert_eq!(api.calls_of(Verb::Get, &HTTP_ROUTE).len(), gets);
    first.stop().await;
    // A new replica remembers nothing: it reads everything once and writes nothing.
    let all_writes = api.calls_of(Verb::ReplaceStatus, &HTTP_ROUTE).len()
        + api.calls_of(Verb::ReplaceStatus, &GATEWAY).len()
        + api.calls_of(Verb::ReplaceStatus, &GATEWAY_CLASS).len();
    let second = start(api.clone(), "b");
    settle().await;
    assert!(
        api.calls_of(Verb::Get, &HTTP_ROUTE).len() > gets,
        "the new replica read the route"
    );
    let after = api.calls_of(Verb::ReplaceStatus, &HTTP_ROUTE).len()
        + api.calls_of(Verb::ReplaceStatus, &GATEWAY).len()
        + api.calls_of(Verb::ReplaceStatus, &GATEWAY_CLASS).len();
    assert_eq!(after, all_writes);
    second.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_conflict_is_read_again_and_the_retry_keeps_the_concurrent_change() {
    let api = FakeApi::new();
    server_objects(&api);
    // Another controller adds its entry between our read and our write.
    let late = json!({"parentRef": {"name": "their-gw"}, "controllerName": "example.com/other", "conditions": []});
    let added = late.clone();
    api.change_after_get(&HTTP_ROUTE, "web", move |route| {
        if let Some(parents) = route["status"]["parents"].as_array_mut() {
            parents.push(added);
        }
    });
    let run = start(api.clone(), "a");
    settle().await;
    let writes = api.calls_of(Verb::ReplaceStatus, &HTTP_ROUTE);
    assert_eq!(
        writes.len(),
        2,
        "the first write conflicted, the second landed"
    );
    let parents = run.route()["status"]["parents"].clone();
    assert_eq!(parents[1], late, "the concurrent entry survived");
    assert_eq!(parents[2]["controllerName"], US);
    assert_eq!(run.metrics.writes("HTTPRoute", "conflict"), 1);
    assert_eq!(run.metrics.writes("HTTPRoute", "written"), 1);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_replica_without_the_lease_writes_nothing() {
    let api = FakeApi::new();
    server_objects(&api);
    let holder = start(api.clone(), "a");
    settle().await;
    let writes = api.calls_of(Verb::ReplaceStatus, &HTTP_ROUTE).len();
    // A second replica, and a change both see: only the holder writes it.
    let other = start(api.clone(), "b");
    let changed = CONFIG.replace("generation: 2", "generation: 3");
    holder
        .store
        .apply(parse_manifests(&changed, "cluster").expect("parses"));
    other
        .store
        .apply(parse_manifests(&changed, "cluster").expect("parses"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writers: Vec<String> = api
        .calls_of(Verb::ReplaceStatus, &HTTP_ROUTE)
        .iter()
        .map(|c| {
            c.body
                .as_ref()
                .map(|b| {
                    b["status"]["parents"][1]["conditions"][0]["observedGeneration"].to_string()
                })
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        writers.len(),
        writes + 1,
        "one write of generation 3: {writers:?}"
    );
    assert_eq!(other.metrics.writes("HTTPRoute", "written"), 0);
    assert_eq!(holder.metrics.writes("HTTPRoute", "written"), 2);
    assert!(api.calls_of(Verb::Replace, &LEASE).iter().all(|c| {
        c.body
            .as_ref()
            .is_some_and(|b| b["spec"]["holderIdentity"] == "a")
    }));
    other.stop().await;
    holder.stop().await;
}

#[tokio::test(start_paused = true)]
async fn with_the_api_server_away_writes_back_off_then_succeed() {
    let api = FakeApi::new();
    server_objects(&api);
    for _ in 0..4 {
        api.fail(
            Verb::Get,
            &HTTP_ROUTE,
            KubeError::Transport("connection refused".into()),
        );
    }
    let run = start(api.clone(), "a");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let attempts: Vec<_> = api
        .calls_of(Verb::Get, &HTTP_ROUTE)
        .iter()
        .map(|c| c.at)
        .collect();
    assert_eq!(
        attempts.len(),
        5,
        "4 failures, the read that worked, none after: {attempts:?}"
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    // 500 ms doubling; the first write pass of the class and Gateway went through.
    for (gap, want) in gaps.iter().zip([500, 1000, 2000, 4000]) {
        assert!(*gap >= Duration::from_millis(want), "gaps {gaps:?}");
        assert!(*gap < Duration::from_millis(want * 2), "gaps {gaps:?}");
    }
    assert_eq!(run.route()["status"]["parents"][1]["controllerName"], US);
    assert_eq!(run.metrics.writes("HTTPRoute", "error"), 4);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_route_deleted_before_the_write_is_skipped() {
    let api = FakeApi::new();
    server_objects(&api);
    api.fail(
        Verb::ReplaceStatus,
        &HTTP_ROUTE,
        KubeError::NotFound("web".into()),
    );
    let run = start(api.clone(), "a");
    settle().await;
    assert_eq!(run.metrics.writes("HTTPRoute", "not_found"), 1);
    assert_eq!(run.metrics.writes("HTTPRoute", "error"), 0);
    assert_eq!(
        api.calls_of(Verb::ReplaceStatus, &HTTP_ROUTE).len(),
        1,
        "not retried"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_newer_snapshot_supersedes_a_pass_in_progress() {
    let api = FakeApi::new();
    server_objects(&api);
    // The first write of the route hangs; meanwhile the route changes.
    api.delay(Verb::ReplaceStatus, &HTTP_ROUTE, Duration::from_secs(60));
    let run = start(api.clone(), "a");
    settle().await;
    assert_eq!(
        api.calls_of(Verb::ReplaceStatus, &HTTP_ROUTE).len(),
        1,
        "the first write is in flight"
    );
    let changed = CONFIG.replace("generation: 2", "generation: 3");
    run.store
        .apply(parse_manifests(&changed, "cluster").expect("parses"));
    settle().await;
    let route = run.route();
    assert_eq!(
        route["status"]["parents"][1]["conditions"][0]["observedGeneration"],
        3
    );
    // Long after the abandoned write would have finished, the newer status is still there.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(run.route(), route);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_tcp_route_served_only_at_v1alpha2_gets_its_status_written_there() {
    let api = FakeApi::new();
    server_objects(&api);
    api.remove_resource(&TCP_ROUTE);
    let v1alpha2 = ApiResource {
        version: "v1alpha2",
        ..TCP_ROUTE
    };
    let spec = json!({"parentRefs": [{"name": "wp", "sectionName": "tcp"}],
                      "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]});
    api.put(
        &v1alpha2,
        json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
               "metadata": {"name": "db", "namespace": "infra", "generation": 3}, "spec": spec}),
    );
    let config = CONFIG.replace(
        "listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]",
        "listeners: [{name: http, port: 80, protocol: HTTP}, {name: tcp, port: 9000, protocol: TCP}]",
    ) + "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: db, namespace: infra, generation: 3}\nspec:\n  parentRefs: [{name: wp, sectionName: tcp}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n";
    let run = start_with(api.clone(), "a", &config);
    settle().await;
    let route = api
        .object(&v1alpha2, Some("infra"), "db")
        .expect("the route");
    let ours = &route["status"]["parents"][0];
    assert_eq!(ours["controllerName"], US);
    assert_eq!(ours["parentRef"]["sectionName"], "tcp");
    assert_eq!(ours["conditions"][0]["type"], "Accepted");
    assert_eq!(ours["conditions"][0]["status"], "True");
    assert_eq!(ours["conditions"][0]["observedGeneration"], 3);
    assert_eq!(run.metrics.writes("TCPRoute", "written"), 1);
    let gw = api.object(&GATEWAY, Some("infra"), "wp").expect("gateway");
    assert_eq!(gw["status"]["listeners"][1]["attachedRoutes"], 1);
    assert_eq!(
        gw["status"]["listeners"][1]["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "TCPRoute"}])
    );
    run.stop().await;
}
