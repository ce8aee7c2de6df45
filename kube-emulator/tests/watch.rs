//! Watches over HTTP: replay from a resourceVersion then live changes in order, bookmarks,
//! 410 after compaction (as an ERROR event and as HTTP 410), timeouts, broken connections.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{End, Watch, eventually, get};
use serde_json::{Value, json};
use waypoint_kube_emulator::{Emulator, EmulatorOptions, ExpiredWatch};

const SERVICES: &str = "/api/v1/namespaces/apps/services";

fn service(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"ports": [{"port": port}]},
    })
}

fn summary(event: &Value) -> (String, String, String) {
    (
        event["type"].as_str().unwrap().to_owned(),
        event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        event["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn emulator(options: EmulatorOptions) -> Emulator {
    Emulator::start(options).await.unwrap()
}

#[tokio::test]
async fn a_watch_from_a_resource_version_sees_every_later_change_in_order_then_live_ones() {
    let emu = emulator(EmulatorOptions::default()).await;
    emu.apply(service("before", 80)).unwrap();
    let (_, list) = get(&emu, SERVICES).await;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    // Changes between the list and the watch are replayed from the history.
    let a = emu.apply(service("a", 80)).unwrap();
    let a2 = emu.apply(service("a", 81)).unwrap();
    emu.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "elsewhere", "namespace": "other"}}))
        .unwrap();
    let mut watch = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={from}"),
    )
    .await;
    assert_eq!(watch.status, 200);
    let rv = |o: &Value| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "a".into(), rv(&a))
    );
    let modified = watch.next().await.unwrap();
    assert_eq!(summary(&modified), ("MODIFIED".into(), "a".into(), rv(&a2)));
    assert_eq!(modified["object"]["spec"]["ports"][0]["port"], 81);
    assert_eq!(modified["object"]["apiVersion"], "v1");

    // Live changes follow; another namespace's are not sent.
    emu.apply(service("b", 80)).unwrap();
    let deleted = emu.delete("v1", "Service", "apps", "a").unwrap().unwrap();
    let added = watch.next().await.unwrap();
    assert_eq!(
        (
            added["type"].as_str(),
            added["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    let gone = watch.next().await.unwrap();
    assert_eq!(summary(&gone), ("DELETED".into(), "a".into(), rv(&deleted)));
    assert_eq!(gone["object"]["spec"]["ports"][0]["port"], 81);
    assert_eq!(emu.open_watches(), 1);
}

#[tokio::test]
async fn a_watch_from_version_zero_starts_with_the_current_objects() {
    let emu = emulator(EmulatorOptions::default()).await;
    emu.apply(service("a", 80)).unwrap();
    emu.apply(service("a", 81)).unwrap();
    let mut watch = Watch::open(&emu, &format!("{SERVICES}?watch=1&resourceVersion=0")).await;
    let first = watch.next().await.unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["spec"]["ports"][0]["port"], 81);
    emu.apply(service("c", 80)).unwrap();
    assert_eq!(
        watch.next().await.unwrap()["object"]["metadata"]["name"],
        "c"
    );
}

#[tokio::test]
async fn bookmarks_arrive_when_asked_and_carry_the_current_version() {
    let emu = emulator(EmulatorOptions {
        bookmark_interval: Duration::from_millis(50),
        ..EmulatorOptions::default()
    })
    .await;
    let from = emu.resource_version();
    let mut watch = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={from}&allowWatchBookmarks=true"),
    )
    .await;
    let written = emu.apply(service("a", 80)).unwrap();
    // Bookmarks before the write (a slow machine) carry the version before it.
    let added = watch.next_change().await.unwrap();
    assert_eq!(added["type"], "ADDED");
    // Nothing else changes, so the next event is a bookmark at the write's version.
    let bookmark = watch.next().await.unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "Service");
    assert_eq!(bookmark["object"]["apiVersion"], "v1");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        written["metadata"]["resourceVersion"]
    );

    // Without allowWatchBookmarks, none come.
    let mut quiet = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={from}"),
    )
    .await;
    assert_eq!(quiet.next().await.unwrap()["type"], "ADDED");
    let nothing = tokio::time::timeout(Duration::from_millis(300), quiet.next()).await;
    assert!(nothing.is_err(), "no event expected, got {nothing:?}");
}

#[tokio::test]
async fn a_watch_from_before_a_compaction_gets_an_expired_error_event_then_the_end() {
    let emu = emulator(EmulatorOptions::default()).await;
    let old = emu.resource_version();
    emu.apply(service("a", 80)).unwrap();
    emu.compact();
    let mut watch = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={old}"),
    )
    .await;
    assert_eq!(watch.status, 200);
    let error = watch.next().await.unwrap();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["kind"], "Status");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert_eq!(watch.next().await, Err(End::Clean));

    // From the current version the watch is fine.
    let now = emu.resource_version();
    let mut fresh = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={now}"),
    )
    .await;
    emu.apply(service("b", 80)).unwrap();
    assert_eq!(fresh.next().await.unwrap()["type"], "ADDED");
}

#[tokio::test]
async fn in_http_status_mode_an_expired_watch_is_answered_410() {
    let emu = emulator(EmulatorOptions {
        expired_watch: ExpiredWatch::HttpStatus,
        ..EmulatorOptions::default()
    })
    .await;
    let old = emu.resource_version();
    emu.apply(service("a", 80)).unwrap();
    emu.compact();
    let (code, status) = get(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={old}"),
    )
    .await;
    assert_eq!(code, 410);
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Expired"))
    );
}

#[tokio::test]
async fn a_watch_ends_cleanly_at_its_timeout() {
    let emu = emulator(EmulatorOptions::default()).await;
    let now = emu.resource_version();
    let mut watch = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={now}&timeoutSeconds=1"),
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(watch.next().await, Err(End::Clean));
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn break_watches_ends_every_open_stream_abruptly() {
    let emu = emulator(EmulatorOptions::default()).await;
    let now = emu.resource_version();
    let mut services = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={now}"),
    )
    .await;
    let mut routes = Watch::open(
        &emu,
        &format!("/apis/gateway.networking.k8s.io/v1/httproutes?watch=true&resourceVersion={now}"),
    )
    .await;
    eventually("two open watches", || emu.open_watches() == 2).await;
    emu.break_watches();
    assert_eq!(services.next().await, Err(End::Broken));
    assert_eq!(routes.next().await, Err(End::Broken));
    eventually("no open watches", || emu.open_watches() == 0).await;

    // An outage breaks them too.
    let mut again = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={now}"),
    )
    .await;
    emu.set_unavailable(true);
    assert_eq!(again.next().await, Err(End::Broken));
}

#[tokio::test]
async fn a_watch_whose_client_left_is_forgotten() {
    let emu = emulator(EmulatorOptions::default()).await;
    let now = emu.resource_version();
    let watch = Watch::open(
        &emu,
        &format!("{SERVICES}?watch=true&resourceVersion={now}"),
    )
    .await;
    eventually("one open watch", || emu.open_watches() == 1).await;
    drop(watch);
    // The next change finds the watch's client gone.
    let mut n = 0;
    eventually("the watch to close", || {
        n += 1;
        emu.apply(service("a", 80 + (n % 100) as u16)).unwrap();
        emu.open_watches() == 0
    })
    .await;
}
