//! Objects over HTTP: lists and paging, create/replace/status/patch/delete with the API
//! server's conflict and generation rules, scopes, served versions, outages, the request log.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Call, get, json};
use http::Method;
use serde_json::{Value, json};
use waypoint_kube_emulator::{Emulator, EmulatorOptions, ResourceKind};

const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes";

fn route(name: &str, hostname: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"hostnames": [hostname]},
    })
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorOptions::default()).await.unwrap()
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_paged_list_shows_one_version_across_pages_even_when_objects_change_between() {
    let emu = emulator().await;
    for name in ["a", "b", "c", "d", "e"] {
        emu.apply(route(name, "x.example")).unwrap();
    }
    let (code, first) = get(&emu, &format!("{ROUTES}?limit=2")).await;
    assert_eq!(code, 200);
    assert_eq!(first["kind"], "HTTPRouteList");
    assert_eq!(first["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let version = first["metadata"]["resourceVersion"].clone();
    assert_eq!(version, emu.resource_version());

    // A change between pages is not seen by the rest of this list.
    emu.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "apps", "d")
        .unwrap()
        .unwrap();
    let token = first["metadata"]["continue"].as_str().unwrap();
    let (_, second) = get(&emu, &format!("{ROUTES}?limit=2&continue={token}")).await;
    assert_eq!(names(&second), ["c", "d"]);
    assert_eq!(second["metadata"]["resourceVersion"], version);
    let token = second["metadata"]["continue"].as_str().unwrap();
    let (_, last) = get(&emu, &format!("{ROUTES}?limit=2&continue={token}")).await;
    assert_eq!(names(&last), ["e"]);
    assert!(last["metadata"].get("continue").is_none());
    assert_eq!(last["items"][0]["kind"], "HTTPRoute");

    // A fresh list sees the delete.
    let (_, all) = get(&emu, ROUTES).await;
    assert_eq!(names(&all), ["a", "b", "c", "e"]);
}

#[tokio::test]
async fn a_continue_token_from_before_a_compaction_is_expired() {
    let emu = emulator().await;
    for name in ["a", "b", "c"] {
        emu.apply(route(name, "x.example")).unwrap();
    }
    let (_, first) = get(&emu, &format!("{ROUTES}?limit=1")).await;
    emu.compact();
    let token = first["metadata"]["continue"].as_str().unwrap();
    let (code, status) = get(&emu, &format!("{ROUTES}?limit=1&continue={token}")).await;
    assert_eq!(code, 410);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Expired");
}

#[tokio::test]
async fn list_items_can_come_without_their_type_as_a_real_server_sends_them() {
    let emu = Emulator::start(EmulatorOptions {
        omit_list_item_type: true,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    emu.apply(route("a", "x.example")).unwrap();
    let (_, list) = get(&emu, ROUTES).await;
    assert_eq!(list["kind"], "HTTPRouteList");
    let item = &list["items"][0];
    assert!(item.get("apiVersion").is_none() && item.get("kind").is_none());
    assert_eq!(item["metadata"]["name"], "a");
    // A single GET still carries them.
    let (_, one) = get(&emu, &format!("{ROUTES}/a")).await;
    assert_eq!(one["kind"], "HTTPRoute");
}

#[tokio::test]
async fn create_fills_server_metadata_and_a_second_create_is_already_exists() {
    let emu = emulator().await;
    let call = || Call::new(Method::POST, ROUTES).body(route("web", "a.example"));
    let (code, created) = json(&emu, call()).await;
    assert_eq!(code, 201);
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "apps");
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(meta["resourceVersion"], emu.resource_version());

    let (code, status) = json(&emu, call()).await;
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "AlreadyExists");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["code"], 409);
}

#[tokio::test]
async fn a_put_with_a_stale_resource_version_is_a_conflict() {
    let emu = emulator().await;
    let stored = emu.apply(route("web", "a.example")).unwrap();
    let stale = stored["metadata"]["resourceVersion"].clone();
    emu.apply(route("web", "b.example")).unwrap();

    let mut body = route("web", "c.example");
    body["metadata"]["resourceVersion"] = stale;
    let (code, status) = json(
        &emu,
        Call::new(Method::PUT, &format!("{ROUTES}/web")).body(body),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "Conflict");
    let now = emu
        .get("gateway.networking.k8s.io/v1", "HTTPRoute", "apps", "web")
        .unwrap();
    assert_eq!(now["spec"]["hostnames"][0], "b.example");

    // With the current version (or none) the write goes through.
    let mut body = route("web", "c.example");
    body["metadata"]["resourceVersion"] = now["metadata"]["resourceVersion"].clone();
    let (code, written) = json(
        &emu,
        Call::new(Method::PUT, &format!("{ROUTES}/web")).body(body),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(written["spec"]["hostnames"][0], "c.example");
}

#[tokio::test]
async fn a_status_put_keeps_spec_and_generation_and_a_spec_put_bumps_generation() {
    let emu = emulator().await;
    let stored = emu.apply(route("web", "a.example")).unwrap();
    assert_eq!(stored["metadata"]["generation"], 1);
    let path = format!("{ROUTES}/web/status");

    // The status write carries a different spec: it is ignored.
    let mut body = route("web", "evil.example");
    body["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
    body["status"] = json!({"parents": [{"controllerName": "example.com/waypoint"}]});
    let (code, written) = json(&emu, Call::new(Method::PUT, &path).body(body.clone())).await;
    assert_eq!(code, 200);
    assert_eq!(written["spec"]["hostnames"][0], "a.example");
    assert_eq!(written["metadata"]["generation"], 1);
    assert_eq!(
        written["status"]["parents"][0]["controllerName"],
        "example.com/waypoint"
    );
    assert_ne!(
        written["metadata"]["resourceVersion"],
        stored["metadata"]["resourceVersion"]
    );

    // The same (now stale) version again: conflict.
    let (code, _) = json(&emu, Call::new(Method::PUT, &path).body(body)).await;
    assert_eq!(code, 409);

    // A spec PUT bumps the generation and keeps the status as stored.
    let (code, replaced) = json(
        &emu,
        Call::new(Method::PUT, &format!("{ROUTES}/web")).body(route("web", "b.example")),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(replaced["metadata"]["generation"], 2);
    assert_eq!(
        replaced["status"]["parents"][0]["controllerName"],
        "example.com/waypoint"
    );
    assert_eq!(replaced["metadata"]["uid"], stored["metadata"]["uid"]);

    // A metadata-only change does not.
    let mut labelled = route("web", "b.example");
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let (_, relabelled) = json(
        &emu,
        Call::new(Method::PUT, &format!("{ROUTES}/web")).body(labelled),
    )
    .await;
    assert_eq!(relabelled["metadata"]["generation"], 2);
}

#[tokio::test]
async fn merge_patches_apply_to_the_object_and_to_its_status() {
    let emu = emulator().await;
    emu.apply(route("web", "a.example")).unwrap();
    fn patch<'a>(path: &'a str, body: Value, content_type: &'static str) -> Call<'a> {
        Call::new(Method::PATCH, path)
            .body(body)
            .content_type(content_type)
    }
    let object = format!("{ROUTES}/web");
    let status = format!("{ROUTES}/web/status");

    let (code, patched) = json(
        &emu,
        patch(
            &status,
            json!({"status": {"parents": []}, "spec": {"hostnames": ["no"]}}),
            "application/merge-patch+json",
        ),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(patched["status"], json!({"parents": []}));
    assert_eq!(patched["spec"]["hostnames"][0], "a.example");

    let (code, patched) = json(
        &emu,
        patch(
            &object,
            json!({"metadata": {"labels": {"a": "b"}}, "spec": {"hostnames": ["z.example"]}}),
            "application/merge-patch+json",
        ),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(patched["metadata"]["labels"]["a"], "b");
    assert_eq!(patched["metadata"]["generation"], 2);
    assert_eq!(patched["status"], json!({"parents": []}));

    let (code, _) = json(
        &emu,
        patch(
            &object,
            json!({"metadata": {"resourceVersion": "1"}}),
            "application/merge-patch+json",
        ),
    )
    .await;
    assert_eq!(code, 409);
    let (code, status) = json(
        &emu,
        patch(&object, json!([]), "application/json-patch+json"),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
}

#[tokio::test]
async fn delete_returns_the_object_and_then_it_is_not_found() {
    let emu = emulator().await;
    emu.apply(route("web", "a.example")).unwrap();
    let path = format!("{ROUTES}/web");
    let (code, deleted) = json(&emu, Call::new(Method::DELETE, &path)).await;
    assert_eq!(
        (code, deleted["metadata"]["name"].as_str()),
        (200, Some("web"))
    );
    let (code, status) = get(&emu, &path).await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    let (code, _) = json(&emu, Call::new(Method::DELETE, &path)).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn cluster_scoped_kinds_live_outside_namespaces_and_wide_lists_span_namespaces() {
    let emu = emulator().await;
    emu.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {istio.io/use-waypoint: wp}}\n\
         ---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: apps}\nspec: {ports: [{port: 80}]}\n\
         ---\n\
         # empty documents are skipped\n\
         ---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    let (code, ns) = get(&emu, "/api/v1/namespaces/apps").await;
    assert_eq!(code, 200);
    assert_eq!(ns["metadata"]["labels"]["istio.io/use-waypoint"], "wp");
    assert!(ns["metadata"].get("namespace").is_none());
    let (code, _) = get(&emu, "/api/v1/namespaces/apps/namespaces/apps").await;
    assert_eq!(code, 404);

    let (_, all) = get(&emu, "/api/v1/services").await;
    assert_eq!(names(&all), ["a", "b"]);
    assert_eq!(all["items"][1]["metadata"]["namespace"], "default");
    let (_, apps) = get(&emu, "/api/v1/namespaces/apps/services").await;
    assert_eq!(names(&apps), ["a"]);
    assert_eq!(emu.list("v1", "Service").len(), 2);
}

#[tokio::test]
async fn an_unserved_version_is_not_found_while_another_serves_the_same_objects() {
    let emu = emulator().await;
    emu.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "apps"},
        "spec": {"from": [], "to": []},
    }))
    .unwrap();
    emu.unserve("gateway.networking.k8s.io", "v1");
    let (code, status) = get(&emu, "/apis/gateway.networking.k8s.io/v1/referencegrants").await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    let (code, list) = get(
        &emu,
        "/apis/gateway.networking.k8s.io/v1beta1/referencegrants",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        list["items"][0]["apiVersion"],
        "gateway.networking.k8s.io/v1beta1"
    );
    emu.serve("gateway.networking.k8s.io", "v1");
    let (code, list) = get(&emu, "/apis/gateway.networking.k8s.io/v1/referencegrants").await;
    assert_eq!(code, 200);
    assert_eq!(
        list["items"][0]["apiVersion"],
        "gateway.networking.k8s.io/v1"
    );
}

#[tokio::test]
async fn an_unavailable_server_answers_503_until_it_is_back() {
    let emu = emulator().await;
    emu.set_unavailable(true);
    let (code, status) = get(&emu, ROUTES).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (503, Some("ServiceUnavailable"))
    );
    emu.set_unavailable(false);
    assert_eq!(get(&emu, ROUTES).await.0, 200);
}

#[tokio::test]
async fn the_request_log_records_method_path_query_and_status() {
    let emu = emulator().await;
    get(&emu, &format!("{ROUTES}?limit=5")).await;
    json(
        &emu,
        Call::new(Method::PUT, &format!("{ROUTES}/missing/status")).body(route("missing", "a")),
    )
    .await;
    let log = emu.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (
            log[0].method.as_str(),
            log[0].path.as_str(),
            log[0].query.as_str()
        ),
        ("GET", ROUTES, "limit=5")
    );
    assert_eq!(log[0].status_code, 200);
    assert!(!log[0].is_write() && log[1].is_write());
    assert_eq!(log[1].status_code, 404);
    emu.clear_requests();
    assert!(emu.requests().is_empty());
}

#[tokio::test]
async fn apply_needs_a_known_kind_and_registered_kinds_are_served_in_their_scope() {
    let emu = emulator().await;
    let widget =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    assert!(emu.apply(widget.clone()).is_err());
    emu.register_kind(ResourceKind::new("example.com", "Widget", "widgets", false));
    emu.apply(widget).unwrap();
    let (code, w) = get(&emu, "/apis/example.com/v1/widgets/w").await;
    assert_eq!((code, w["kind"].as_str()), (200, Some("Widget")));
    assert!(emu.get("example.com/v1", "Widget", "", "w").is_some());
}

#[tokio::test]
async fn every_object_can_be_read_at_once_each_saying_what_it_is() {
    let emu = emulator().await;
    emu.apply(route("web", "a.example")).unwrap();
    emu.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}))
        .unwrap();
    // Written over HTTP without apiVersion and kind: the URL says what it is.
    let (code, _) = json(
        &emu,
        Call::new(Method::POST, "/api/v1/namespaces/apps/services")
            .body(json!({"metadata": {"name": "s"}, "spec": {}})),
    )
    .await;
    assert_eq!(code, 201);
    let kinds: Vec<(String, String)> = emu
        .objects()
        .iter()
        .map(|o| {
            (
                o["apiVersion"].as_str().unwrap().to_owned(),
                o["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |a: &str, k: &str| (a.to_owned(), k.to_owned());
    assert_eq!(
        kinds,
        [
            pair("v1", "Namespace"),
            pair("v1", "Service"),
            pair("gateway.networking.k8s.io/v1", "HTTPRoute")
        ]
    );
}

#[tokio::test]
async fn a_status_patch_merges_into_the_stored_status_and_keeps_the_generation() {
    let emu = emulator().await;
    let mut with_status = route("r", "a.example");
    with_status["status"] = json!({"parents": [{"controllerName": "other"}]});
    emu.apply(with_status).unwrap();
    let api = "gateway.networking.k8s.io/v1";
    let patched = emu
        .patch_status(api, "HTTPRoute", "apps", "r", &json!({"addresses": ["x"]}))
        .unwrap()
        .unwrap();
    assert_eq!(patched["status"]["parents"][0]["controllerName"], "other");
    assert_eq!(patched["status"]["addresses"], json!(["x"]));
    assert_eq!(patched["metadata"]["generation"], 1);
    let missing = emu.patch_status(api, "HTTPRoute", "apps", "nope", &json!({}));
    assert!(missing.unwrap().is_none());
}
