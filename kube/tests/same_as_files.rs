//! One fixture, two sources: the quickstart manifests read from their file and the same objects
//! served by a (scripted) API server give the same `/config_dump`, source labels aside.

#![allow(clippy::unwrap_used)]

mod fake;

use std::sync::Arc;
use std::time::Duration;

use fake::FakeApi;
use serde_json::Value;
use tokio::sync::mpsc;
use waypoint_core::admin::config_dump_json;
use waypoint_core::config::build::EndpointStatsCache;
use waypoint_core::config::load::parse_manifests_with;
use waypoint_core::config::source::ConfigSource;
use waypoint_core::filter::ExtensionRegistry;
use waypoint_core::proxy::SnapshotStore;
use waypoint_core::shutdown;
use waypoint_filters::{BuiltinSettings, Builtins};
use waypoint_kube::api::kinds;
use waypoint_kube::source::WATCHED;
use waypoint_kube::{KubeSource, KubeSourceOptions};

const FIXTURE: &str = include_str!("../../examples/quickstart/manifests.yaml");

/// The dump with what legitimately differs removed: snapshot version and time, source labels,
/// and the order of the top-level lists (files keep document order, the API source sorts).
fn normalized(mut dump: Value) -> Value {
    let map = dump.as_object_mut().unwrap();
    map.remove("version");
    map.remove("applied_at");
    for (_, list) in map.iter_mut() {
        if let Value::Array(items) = list {
            for item in items.iter_mut() {
                if let Some(item) = item.as_object_mut() {
                    item.remove("source");
                }
            }
            items.sort_by_key(|item| item.to_string());
        }
    }
    dump
}

fn dump_of(config: waypoint_core::config::Config) -> Value {
    let store = SnapshotStore::new(
        Builtins::new(BuiltinSettings::default()).factories(),
        ExtensionRegistry::new(),
    );
    normalized(config_dump_json(&store.apply(config)))
}

#[tokio::test]
async fn the_quickstart_from_files_and_from_the_api_gives_the_same_config_dump() {
    let from_files =
        parse_manifests_with(FIXTURE, "manifests.yaml", &EndpointStatsCache::default()).unwrap();
    assert!(!from_files.statuses.is_empty());

    let api = Arc::new(FakeApi::new(100));
    let docs: Vec<Value> = serde_saphyr::from_multiple(FIXTURE).unwrap();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap();
        let resource = WATCHED
            .iter()
            .chain([&kinds::REFERENCE_GRANT_V1BETA1])
            .find(|r| r.kind == kind)
            .unwrap_or_else(|| panic!("the fixture has a kind the source does not watch: {kind}"));
        api.apply(resource, doc);
    }
    let source = KubeSource::new(api, KubeSourceOptions::default());
    let (tx, mut configs) = mpsc::channel(1);
    let (_trigger, stop) = shutdown::channel();
    let cache = Arc::new(EndpointStatsCache::default());
    tokio::spawn(Box::new(source).run(cache, tx, stop));
    let from_api = tokio::time::timeout(Duration::from_secs(5), configs.recv())
        .await
        .unwrap()
        .unwrap();

    let (files, api) = (dump_of(from_files), dump_of(from_api));
    assert_eq!(files, api);
    assert!(!files["services"].as_array().unwrap().is_empty());
    assert!(!files["resources"].as_array().unwrap().is_empty());
}
