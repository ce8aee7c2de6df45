//! The HTTP client against the API emulator over TLS with a token, configured from the
//! kubeconfig the emulator writes: both ways a server reports an expired watch end in `Gone`,
//! a wrong token is refused, and objects round-trip.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use waypoint_kube::api::kinds::SERVICE;
use waypoint_kube::client::ClientConfig;
use waypoint_kube::{KubeApi, KubeClient, KubeError, WatchEvent};
use waypoint_kube_emulator::{Emulator, EmulatorOptions, ExpiredWatch};

async fn emulator(expired_watch: ExpiredWatch) -> Emulator {
    Emulator::start(EmulatorOptions {
        tls: true,
        token: Some("client-token".into()),
        expired_watch,
        omit_list_item_type: true,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap()
}

fn client_for(emulator: &Emulator, dir: &tempfile::TempDir) -> KubeClient {
    let path = dir.path().join("kubeconfig");
    emulator.write_kubeconfig(&path).unwrap();
    KubeClient::new(ClientConfig::from_kubeconfig(&path).unwrap()).unwrap()
}

fn service(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}})
}

#[tokio::test]
async fn an_expired_watch_is_gone_whether_told_by_event_or_by_status() {
    for mode in [ExpiredWatch::ErrorEvent, ExpiredWatch::HttpStatus] {
        let dir = tempfile::tempdir().unwrap();
        let emulator = emulator(mode).await;
        let client = client_for(&emulator, &dir);
        emulator.apply(service("a")).unwrap();
        let listed = client.list(&SERVICE, None, None).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(
            listed.items[0]["kind"], "Service",
            "filled in by the client"
        );
        emulator.apply(service("b")).unwrap();
        emulator.compact();
        let gone = match client.watch(&SERVICE, None, &listed.resource_version).await {
            Err(e) => e,
            Ok(mut events) => tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap()
                .unwrap_err(),
        };
        assert!(matches!(gone, KubeError::Gone(_)), "{mode:?}: {gone}");
    }
}

#[tokio::test]
async fn a_watch_from_the_list_version_sees_later_changes() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator(ExpiredWatch::ErrorEvent).await;
    let client = client_for(&emulator, &dir);
    let listed = client.list(&SERVICE, Some("default"), None).await.unwrap();
    let mut events = client
        .watch(&SERVICE, Some("default"), &listed.resource_version)
        .await
        .unwrap();
    emulator.apply(service("a")).unwrap();
    emulator.delete("v1", "Service", "default", "a").unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
        {
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            Some(Ok(event)) => seen.push(event),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(&seen[0], WatchEvent::Added(o) if o["metadata"]["name"] == "a"));
    assert!(matches!(&seen[1], WatchEvent::Deleted(o) if o["metadata"]["name"] == "a"));
    // A watch cut by the server ends the stream (the reflector then lists again).
    emulator.break_watches();
    let end = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert!(
        matches!(end, None | Some(Err(KubeError::Transport(_)))),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_the_servers_status() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator(ExpiredWatch::ErrorEvent).await;
    let path = dir.path().join("kubeconfig");
    let text = emulator.kubeconfig().replace("client-token", "wrong-token");
    assert!(
        text.contains("wrong-token"),
        "the kubeconfig carries the token: {text}"
    );
    std::fs::write(&path, text).unwrap();
    let client = KubeClient::new(ClientConfig::from_kubeconfig(&path).unwrap()).unwrap();
    let err = client.list(&SERVICE, None, None).await.unwrap_err();
    assert!(matches!(err, KubeError::Api { code: 401, .. }), "{err}");
}

#[tokio::test]
async fn objects_round_trip_through_get_create_and_conditional_replace() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator(ExpiredWatch::ErrorEvent).await;
    let client = client_for(&emulator, &dir);
    assert_eq!(
        client.get(&SERVICE, Some("default"), "a").await.unwrap(),
        None
    );
    let created = client
        .create(&SERVICE, Some("default"), &service("a"))
        .await
        .unwrap();
    let again = client
        .create(&SERVICE, Some("default"), &service("a"))
        .await
        .unwrap_err();
    assert!(matches!(again, KubeError::Conflict(_)), "{again}");
    let mut stale = created.clone();
    client
        .replace(&SERVICE, Some("default"), "a", &created)
        .await
        .unwrap();
    stale["spec"]["clusterIP"] = json!("10.0.0.2");
    let err = client
        .replace(&SERVICE, Some("default"), "a", &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KubeError::Conflict(_)),
        "a stale resourceVersion conflicts: {err}"
    );
    let got = client
        .get(&SERVICE, Some("default"), "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["kind"], "Service");
}

#[tokio::test]
async fn apply_creates_then_updates_as_our_field_manager_and_delete_takes_the_owned_objects_along()
{
    use waypoint_kube::api::kinds::{GATEWAY, SERVICE_ACCOUNT};
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator(ExpiredWatch::ErrorEvent).await;
    let client = client_for(&emulator, &dir);
    let gateway = emulator
        .apply(
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"}, "spec": {"gatewayClassName": "c"}}),
        )
        .unwrap();
    let owned = |label: &str| {
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "gw", "namespace": "default", "labels": {"v": label},
                "ownerReferences": [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "name": "gw", "uid": gateway["metadata"]["uid"], "controller": true}]}})
    };
    let created = client
        .apply(
            &SERVICE_ACCOUNT,
            Some("default"),
            "gw",
            &owned("1"),
            "test-manager",
        )
        .await
        .unwrap();
    assert_eq!(created["metadata"]["labels"]["v"], "1");
    let updated = client
        .apply(
            &SERVICE_ACCOUNT,
            Some("default"),
            "gw",
            &owned("2"),
            "test-manager",
        )
        .await
        .unwrap();
    assert_eq!(updated["metadata"]["labels"]["v"], "2");
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    let apply = emulator
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PATCH")
        .unwrap();
    assert!(
        apply.query.contains("fieldManager=test-manager") && apply.query.contains("force=true")
    );

    // A Service applied without a ClusterIP gets one, and keeps it through later applies.
    let bare = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "gw", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}});
    let first = client
        .apply(&SERVICE, Some("default"), "gw", &bare, "m")
        .await
        .unwrap();
    let ip = first["spec"]["clusterIP"].clone();
    assert!(
        ip.as_str().is_some_and(|ip| ip.starts_with("10.96.")),
        "{first}"
    );
    let second = client
        .apply(&SERVICE, Some("default"), "gw", &bare, "m")
        .await
        .unwrap();
    assert_eq!(second["spec"]["clusterIP"], ip);

    assert!(
        client
            .delete(&GATEWAY, Some("default"), "gw")
            .await
            .unwrap()
    );
    assert!(
        !client
            .delete(&GATEWAY, Some("default"), "gw")
            .await
            .unwrap(),
        "already gone"
    );
    let account = client
        .get(&SERVICE_ACCOUNT, Some("default"), "gw")
        .await
        .unwrap();
    assert!(account.is_none(), "collected with its owner");
    let unowned = client.get(&SERVICE, Some("default"), "gw").await.unwrap();
    assert!(
        unowned.is_some(),
        "an object without the owner reference stays"
    );
}

#[tokio::test]
async fn an_apply_without_a_field_manager_or_a_kind_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = emulator(ExpiredWatch::ErrorEvent).await;
    let client = client_for(&emulator, &dir);
    let typeless = json!({"metadata": {"name": "x", "namespace": "default"}});
    let err = client
        .apply(&SERVICE, Some("default"), "x", &typeless, "m")
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::Api { code: 400, .. }), "{err}");
    let err = client
        .apply(&SERVICE, Some("default"), "x", &service("x"), "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fieldManager"), "{err}");
}
