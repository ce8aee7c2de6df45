//! Merging desired status into the object as read: times, foreign fields, foreign entries.

use serde_json::{Value, json};

use super::desired::Desired;
use super::merge::merged_status;

const US: &str = "waypoint.dev/gateway-controller";
const THEM: &str = "istio.io/gateway-controller";
const THEN: &str = "2026-01-01T00:00:00Z";
const NOW: &str = "2026-12-02T20:00:00Z";

fn accepted(status: &str) -> Value {
    json!({"type": "Accepted", "status": status, "reason": "Accepted", "message": "m", "observedGeneration": 1})
}

pub(super) fn entry(controller: &str, parent: &str, status: &str) -> Value {
    json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "ns", "name": parent},
        "controllerName": controller,
        "conditions": [accepted(status)],
    })
}

pub(super) fn with_time(mut v: Value, time: &str) -> Value {
    for c in v["conditions"].as_array_mut().expect("conditions") {
        c["lastTransitionTime"] = json!(time);
    }
    v
}

/// Our entries, every entry of our controller being ours (no `--gateway`).
fn parents(ours: Vec<Value>) -> Desired {
    Desired::RouteParents {
        ours,
        only_gateway: None,
    }
}

#[test]
fn an_unchanged_condition_keeps_its_time_and_a_flipped_one_gets_now() {
    let old = json!({"conditions": [with_time(json!({"conditions": [accepted("True")]}), THEN)["conditions"][0]]});
    let same = Desired::Fields(json!({"conditions": [accepted("True")]}));
    let merged = merged_status(Some(&old), &same, US, "", NOW);
    assert_eq!(merged.as_ref(), Some(&old), "nothing to write");
    let flipped = Desired::Fields(json!({"conditions": [accepted("False")]}));
    let merged = merged_status(Some(&old), &flipped, US, "", NOW).expect("a status");
    assert_eq!(merged["conditions"][0]["lastTransitionTime"], NOW);
    assert_eq!(merged["conditions"][0]["status"], "False");
}

#[test]
fn a_gateway_keeps_the_addresses_another_controller_wrote() {
    let addresses = json!([{"type": "Hostname", "value": "wp.infra.svc.cluster.local"}, {"type": "IPAddress", "value": "10.0.0.1"}]);
    let old = json!({"addresses": addresses, "conditions": []});
    let desired = Desired::Fields(json!({
        "conditions": [accepted("True")],
        "listeners": [{"name": "http", "attachedRoutes": 1, "supportedKinds": [], "conditions": [accepted("True")]}],
    }));
    let merged = merged_status(Some(&old), &desired, US, "", NOW).expect("a status");
    assert_eq!(merged["addresses"], addresses);
    assert_eq!(
        merged["listeners"][0]["conditions"][0]["lastTransitionTime"],
        NOW
    );
    // Written once, merged again: identical, so the writer skips it.
    let again = merged_status(Some(&merged), &desired, US, "", "2030-01-01T00:00:00Z");
    assert_eq!(again.as_ref(), Some(&merged));
}

#[test]
fn route_entries_of_others_stay_in_place_ours_are_replaced_and_stale_ones_removed() {
    let theirs_first = with_time(entry(THEM, "a", "True"), THEN);
    let ours_kept = with_time(entry(US, "b", "True"), THEN);
    let theirs_mid = json!({"parentRef": {"kind": "Service", "group": "", "name": "svc"}, "controllerName": THEM,
                            "conditions": [], "extra": {"unknown": [1, 2]}});
    let ours_stale = with_time(entry(US, "gone", "True"), THEN);
    let old = json!({"parents": [theirs_first, ours_kept, theirs_mid, ours_stale]});
    let desired = parents(vec![entry(US, "new", "True"), entry(US, "b", "False")]);
    let merged = merged_status(Some(&old), &desired, US, "ns", NOW).expect("a status");
    let parents = merged["parents"].as_array().expect("parents");
    let names: Vec<&Value> = parents.iter().map(|p| &p["parentRef"]["name"]).collect();
    assert_eq!(names, ["a", "b", "svc", "new"]);
    assert_eq!(
        serde_json::to_string(&parents[0]).expect("json"),
        serde_json::to_string(&old["parents"][0]).expect("json")
    );
    assert_eq!(
        serde_json::to_string(&parents[2]).expect("json"),
        serde_json::to_string(&old["parents"][2]).expect("json")
    );
    assert_eq!(parents[1]["conditions"][0]["status"], "False");
    assert_eq!(parents[1]["conditions"][0]["lastTransitionTime"], NOW);
    assert_eq!(parents[3]["conditions"][0]["lastTransitionTime"], NOW);
}

#[test]
fn our_entry_matches_a_parent_ref_written_without_defaults() {
    // Another writer (or an older us) left group, kind and namespace out.
    let old = json!({"parents": [{"parentRef": {"name": "b"}, "controllerName": US,
                                   "conditions": [with_time(json!({"conditions": [accepted("True")]}), THEN)["conditions"][0]]}]});
    let desired = parents(vec![entry(US, "b", "True")]);
    let merged = merged_status(Some(&old), &desired, US, "ns", NOW).expect("a status");
    assert_eq!(merged["parents"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        merged["parents"][0]["conditions"][0]["lastTransitionTime"],
        THEN
    );
}

#[test]
fn a_route_with_nothing_of_ours_before_or_after_is_left_alone() {
    let desired = parents(Vec::new());
    assert_eq!(merged_status(None, &desired, US, "ns", NOW), None);
    let old = json!({"parents": [entry(THEM, "a", "True")]});
    assert_eq!(
        merged_status(Some(&old), &desired, US, "ns", NOW),
        Some(old)
    );
}

#[test]
fn a_malformed_status_from_the_server_is_replaced_not_a_panic() {
    let old = json!("not an object");
    let desired = parents(vec![entry(US, "b", "True")]);
    let merged = merged_status(Some(&old), &desired, US, "ns", NOW).expect("a status");
    assert_eq!(merged["parents"].as_array().map(Vec::len), Some(1));
    let old = json!({"parents": "nope", "conditions": 5});
    let desired = Desired::Fields(json!({"conditions": [accepted("True")]}));
    let merged = merged_status(Some(&old), &desired, US, "", NOW).expect("a status");
    assert_eq!(merged["conditions"][0]["lastTransitionTime"], NOW);
}

#[test]
fn with_a_gateway_named_entries_of_sibling_waypoints_under_our_controller_are_kept() {
    // Another waypoint, same controller name, serves Gateway ns/other.
    let sibling = with_time(entry(US, "other", "True"), THEN);
    let stale = with_time(entry(US, "mine", "True"), THEN);
    let old = json!({"parents": [sibling, stale]});
    let desired = Desired::RouteParents {
        ours: Vec::new(),
        only_gateway: Some(("ns".into(), "mine".into())),
    };
    let merged = merged_status(Some(&old), &desired, US, "ns", NOW).expect("a status");
    assert_eq!(
        merged["parents"],
        json!([old["parents"][0]]),
        "ours went, the sibling's stayed"
    );
}
