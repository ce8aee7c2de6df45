//! The status we write stays within what the Gateway API CRDs let an API server accept.

use serde_json::{Value, json};
use waypoint_core::config::Condition;

use super::desired::{Desired, StatusKind, desired_status};
use super::desired_tests::{cond, key, snapshot};
use super::merge::merged_status;
use super::merge_tests::{self, with_time};
use super::schema::{
    MAX_CONDITIONS, MAX_PARENTS, api_attached_routes, api_condition, api_conditions,
};

const US: &str = "waypoint.dev/gateway-controller";
const THEM: &str = "istio.io/gateway-controller";
const NOW: &str = "2026-12-02T20:00:00Z";

/// A reason as the API takes it: a letter, then letters, digits, `_`, `,` or `:`, not ending
/// in `,` or `:`, at most 1024 characters.
fn is_api_reason(reason: &str) -> bool {
    let mut chars = reason.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let body_ok = reason
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'));
    starts_with_letter && body_ok && !reason.ends_with([',', ':']) && reason.len() <= 1024
}

fn with_reason(reason: &str) -> Condition {
    Condition {
        kind: "Accepted".into(),
        status: false,
        reason: reason.into(),
        message: "m".into(),
    }
}

/// Every condition of `list` has what the API requires, and types are unique.
fn assert_api_conditions(list: &Value, at: &str) {
    let conditions = list.as_array().unwrap_or_else(|| panic!("{at}: {list}"));
    assert!(conditions.len() <= MAX_CONDITIONS, "{at}: too many");
    let mut types: Vec<&str> = Vec::new();
    for c in conditions {
        for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
            assert!(c[field].is_string(), "{at}: {field} missing in {c}");
        }
        assert!(["True", "False", "Unknown"].contains(&c["status"].as_str().unwrap_or("")));
        assert!(
            is_api_reason(c["reason"].as_str().unwrap_or("")),
            "{at}: {c}"
        );
        let kind = c["type"].as_str().unwrap_or("");
        assert!(!types.contains(&kind), "{at}: second {kind}");
        types.push(kind);
    }
}

fn assert_no_nulls(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("{at}: null"),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, x)| assert_no_nulls(x, &format!("{at}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .for_each(|(k, x)| assert_no_nulls(x, &format!("{at}.{k}"))),
        _ => {}
    }
}

#[test]
fn every_status_we_write_has_the_fields_the_api_requires_and_no_nulls() {
    let desired = desired_status(&snapshot(), &Default::default());
    let mut parents_seen = 0;
    let mut listeners_seen = 0;
    for (object, want) in &desired.objects {
        let at = object.to_string();
        let Some(status) = merged_status(None, want, US, "infra", NOW) else {
            continue;
        };
        assert_no_nulls(&status, &at);
        if let Desired::Fields(_) = want {
            assert_api_conditions(&status["conditions"], &at);
        }
        for l in status["listeners"].as_array().into_iter().flatten() {
            listeners_seen += 1;
            assert!(l["name"].as_str().is_some_and(|n| !n.is_empty()), "{at}");
            assert!(l["attachedRoutes"].is_i64(), "{at}: {l}");
            assert!(
                l["supportedKinds"].is_array(),
                "{at}: supportedKinds even when no kind is supported"
            );
            assert_api_conditions(&l["conditions"], &at);
        }
        for p in status["parents"].as_array().into_iter().flatten() {
            parents_seen += 1;
            assert!(
                p["parentRef"]["name"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            );
            assert_eq!(p["controllerName"], US);
            assert!(
                !p["conditions"].as_array().is_none_or(Vec::is_empty),
                "{at}"
            );
            assert_api_conditions(&p["conditions"], &at);
        }
    }
    assert!(
        listeners_seen >= 4 && parents_seen >= 2,
        "the fixture covers every part"
    );
}

#[test]
fn a_condition_reason_always_matches_the_api_pattern() {
    let long = "R".repeat(2000);
    for reason in [
        "Invalid certificate",
        "9Lives",
        "Bad-Ref",
        "",
        "-",
        "Trailing:,",
        "ünïcode",
        long.as_str(),
    ] {
        let written = api_condition(&with_reason(reason), None);
        let written = written["reason"].as_str().unwrap_or("");
        assert!(is_api_reason(written), "{reason:?} became {written:?}");
    }
    let cleaned = api_condition(&with_reason("Invalid certificate"), None);
    assert_eq!(cleaned["reason"], "Invalidcertificate");
    assert_eq!(api_condition(&with_reason("-"), None)["reason"], "Unknown");
}

#[test]
fn a_valid_reason_is_written_as_given() {
    for reason in ["Accepted", "NoMatchingListenerHostname", "a_b,c:d", "X"] {
        assert_eq!(api_condition(&with_reason(reason), None)["reason"], reason);
    }
}

#[test]
fn a_message_longer_than_the_api_allows_is_cut_on_a_character_boundary() {
    let mut c = with_reason("Invalid");
    c.message = "é".repeat(20_000); // 40000 bytes, 2 bytes a character
    let written = api_condition(&c, None);
    let message = written["message"].as_str().unwrap_or("");
    assert_eq!(message.len(), 32_768);
    assert!(message.chars().all(|ch| ch == 'é'));
    c.message = "short".into();
    assert_eq!(api_condition(&c, None)["message"], "short");
}

#[test]
fn a_negative_generation_is_left_out_rather_than_refused() {
    let c = with_reason("Accepted");
    assert!(
        api_condition(&c, Some(-1))
            .get("observedGeneration")
            .is_none()
    );
    assert!(api_condition(&c, None).get("observedGeneration").is_none());
    assert_eq!(api_condition(&c, Some(0))["observedGeneration"], 0);
    assert_eq!(api_condition(&c, Some(4))["observedGeneration"], 4);
}

#[test]
fn at_most_eight_conditions_are_written_one_per_type_the_first_winning() {
    let mut many: Vec<Condition> = (0..12)
        .map(|i| cond(&format!("Type{i}"), true, "Fine"))
        .collect();
    many.insert(1, cond("Type0", false, "Duplicate"));
    let written = api_conditions(&many, Some(1));
    let types: Vec<&str> = written.iter().filter_map(|c| c["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "Type0", "Type1", "Type2", "Type3", "Type4", "Type5", "Type6", "Type7"
        ]
    );
    assert_eq!(written[0]["status"], "True", "the first Type0 wins");
}

#[test]
fn attached_routes_stays_within_the_api_integer() {
    assert_eq!(api_attached_routes(3), 3);
    assert_eq!(api_attached_routes(u32::MAX), i32::MAX);
}

/// An entry of `controller` for Gateway `parent`, as the API server holds it.
fn entry(controller: &str, parent: &str) -> Value {
    with_time(merge_tests::entry(controller, parent, "True"), NOW)
}

#[test]
fn a_route_never_gets_more_than_32_parent_entries_and_other_controllers_entries_stay() {
    let theirs: Vec<Value> = (0..20).map(|i| entry(THEM, &format!("t{i}"))).collect();
    let old = json!({ "parents": theirs });
    let ours: Vec<Value> = (0..20).map(|i| entry(US, &format!("o{i}"))).collect();
    let desired = Desired::RouteParents {
        ours,
        only_gateway: None,
    };
    let merged = merged_status(Some(&old), &desired, US, "ns", NOW).expect("a status");
    let parents = merged["parents"].as_array().expect("parents");
    assert_eq!(parents.len(), MAX_PARENTS);
    assert_eq!(parents[..20], theirs[..], "theirs, untouched and in place");
    let names: Vec<&str> = parents[20..]
        .iter()
        .filter_map(|p| p["parentRef"]["name"].as_str())
        .collect();
    let first_ours: Vec<String> = (0..12).map(|i| format!("o{i}")).collect();
    assert_eq!(
        names, first_ours,
        "our first 12 fit; the rest are not written"
    );
}

#[test]
fn a_route_parent_without_conditions_is_not_written() {
    let mut snapshot = snapshot();
    for p in &mut snapshot.route_parents {
        p.conditions.clear();
    }
    let desired = desired_status(&snapshot, &Default::default());
    let web = desired
        .objects
        .get(&key(StatusKind::HttpRoute, Some("infra"), "web"));
    assert!(
        matches!(web, Some(Desired::RouteParents { ours, .. }) if ours.is_empty()),
        "{web:?}"
    );
}
