//! Checking the status a case expects against the waypoint's `/config_dump`: route parent
//! conditions (`routeParents`) and Gateway listener attachment counts (`gateways`), the same
//! facts upstream reads from the API server.

use serde_json::Value;

use crate::case::{ConditionCheck, ListenerCheck, StatusCheck};

/// `Kind namespace/name` → its parts.
fn split_ref(r: &str) -> Result<(&str, &str, &str), String> {
    let (kind, rest) = r
        .split_once(' ')
        .ok_or_else(|| format!("{r:?}: expected `Kind namespace/name`"))?;
    let (ns, name) = rest
        .split_once('/')
        .ok_or_else(|| format!("{r:?}: expected `Kind namespace/name`"))?;
    Ok((kind, ns, name))
}

fn is_true(v: &Value) -> bool {
    v == "True" || v == true
}

fn route_entry<'d>(dump: &'d Value, route: &str) -> Result<Option<&'d Value>, String> {
    let (kind, ns, name) = split_ref(route)?;
    Ok(dump["routeParents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == kind && r["namespace"] == ns && r["name"] == name))
}

fn parent_label(p: &Value) -> String {
    let r = &p["parentRef"];
    format!(
        "{} {}/{}",
        r["kind"].as_str().unwrap_or_default(),
        r["namespace"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default()
    )
}

/// The `/config_dump` status of Gateway `namespace/name`.
fn gateway_entry<'d>(dump: &'d Value, gateway: &str) -> Result<&'d Value, String> {
    let (ns, name) = gateway
        .split_once('/')
        .ok_or_else(|| format!("{gateway:?}: expected `namespace/name`"))?;
    dump["gateways"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["namespace"] == ns && g["name"] == name)
        .ok_or_else(|| format!("Gateway {gateway} has no status"))
}

/// What upstream's `GatewayAndRoutesMustBeAccepted` requires of a Gateway a test sends to: an
/// address, and every listener `ResolvedRefs`, `Accepted` and `Programmed`.
pub fn gateway_ready(dump: &Value, gateway: &str) -> Result<(), String> {
    let gw = gateway_entry(dump, gateway)?;
    if gw["addresses"].as_array().is_none_or(|a| a.is_empty()) {
        return Err(format!("Gateway {gateway} has no address"));
    }
    for listener in gw["listeners"].as_array().into_iter().flatten() {
        for kind in ["ResolvedRefs", "Accepted", "Programmed"] {
            let ok = listener["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == kind && is_true(&c["status"]));
            if !ok {
                return Err(format!(
                    "Gateway {gateway} listener {}: {kind} is not True",
                    listener["name"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

/// What upstream's suite waits for before any test (`GWCMustHaveAcceptedConditionTrue`,
/// `NamespacesMustBeReady`): our GatewayClass `Accepted` (when the view lists classes: the
/// API server's does), and each of the base `gateways` (`namespace/name`) `Accepted` and
/// `Programmed`, all at their latest generation. Any reason will do, as upstream's does.
pub fn suite_ready(dump: &Value, class: &str, gateways: &[String]) -> Result<(), String> {
    let holds = |kind: &str| ConditionCheck {
        kind: kind.into(),
        status: true,
        reason: None,
        any_reason: true,
    };
    if dump.get("gatewayClasses").is_some() {
        let accepted = StatusCheck {
            gateway_class: Some(class.into()),
            conditions: vec![holds("Accepted")],
            ..StatusCheck::default()
        };
        check(dump, &accepted)?;
    }
    for gateway in gateways {
        let ready = StatusCheck {
            gateway: Some(gateway.clone()),
            conditions: vec![holds("Accepted"), holds("Programmed")],
            ..StatusCheck::default()
        };
        check(dump, &ready)?;
    }
    Ok(())
}

/// Checks one expectation; `Err` says what differs.
pub fn check(dump: &Value, s: &StatusCheck) -> Result<(), String> {
    if let Some(route) = &s.route {
        return check_route(dump, route, s);
    }
    if let Some(gateway) = &s.gateway {
        return check_gateway(dump, gateway, s);
    }
    if let Some(class) = &s.gateway_class {
        return check_gateway_class(dump, class, s);
    }
    Ok(())
}

fn check_route(dump: &Value, route: &str, s: &StatusCheck) -> Result<(), String> {
    let entry = route_entry(dump, route)?;
    let parents: Vec<&Value> = entry
        .map(|e| e["parents"].as_array().into_iter().flatten().collect())
        .unwrap_or_default();
    if s.no_accepted_parents {
        let not_accepted = ConditionCheck {
            kind: "Accepted".into(),
            status: false,
            reason: None,
            any_reason: true,
        };
        match parents[..] {
            [] => {}
            [p] => find_condition(&p["conditions"], &not_accepted)
                .map_err(|e| format!("{route}: parent {}: {e}", parent_label(p)))?,
            _ => {
                return Err(format!(
                    "{route}: {} parent statuses, expected at most one (not accepted)",
                    parents.len()
                ));
            }
        }
    }
    // Upstream judges a route only once every parent's conditions are at its generation.
    if let Some(generation) = entry.and_then(|e| e["generation"].as_i64()) {
        for p in &parents {
            latest(&p["conditions"], generation)
                .map_err(|e| format!("{route} parent {}: {e}", parent_label(p)))?;
        }
    }
    if let Some(want) = s.observed_generation {
        if parents.is_empty() {
            return Err(format!("{route}: no parent status"));
        }
        for p in &parents {
            observed_generation_is(&p["conditions"], want)
                .map_err(|e| format!("{route} parent {}: {e}", parent_label(p)))?;
        }
    }
    if let Some(want) = &s.parents {
        let mut have: Vec<String> = parents.iter().map(|p| parent_label(p)).collect();
        let mut want = want.clone();
        have.sort();
        want.sort();
        if have != want {
            return Err(format!("{route}: parents {have:?}, expected {want:?}"));
        }
    }
    if let Some(parent) = &s.parent {
        let label = {
            let (k, ns, n) = split_ref(parent)?;
            format!("{k} {ns}/{n}")
        };
        let Some(p) = parents.iter().find(|p| parent_label(p) == label) else {
            if s.conditions.is_empty() {
                return Ok(());
            }
            return Err(format!("{route}: no status for parent {label}"));
        };
        for want in &s.conditions {
            find_condition(&p["conditions"], want)
                .map_err(|e| format!("{route} parent {label}: {e}"))?;
        }
    }
    Ok(())
}

fn check_gateway(dump: &Value, gateway: &str, s: &StatusCheck) -> Result<(), String> {
    let gw = gateway_entry(dump, gateway)?;
    if let Some(generation) = gw["generation"].as_i64() {
        latest(&gw["conditions"], generation).map_err(|e| format!("Gateway {gateway}: {e}"))?;
    }
    for want in &s.conditions {
        find_condition(&gw["conditions"], want).map_err(|e| format!("Gateway {gateway}: {e}"))?;
    }
    if let Some(want) = s.observed_generation {
        observed_generation_is(&gw["conditions"], want)
            .map_err(|e| format!("Gateway {gateway}: {e}"))?;
        for l in gw["listeners"].as_array().into_iter().flatten() {
            observed_generation_is(&l["conditions"], want).map_err(|e| {
                let name = l["name"].as_str().unwrap_or_default();
                format!("Gateway {gateway} listener {name}: {e}")
            })?;
        }
    }
    if let Some(want) = &s.listeners {
        check_listeners(gateway, gw, want)?;
    }
    if s.zero_routes {
        let listeners: Vec<&Value> = gw["listeners"].as_array().into_iter().flatten().collect();
        let zero = match listeners[..] {
            [] => true,
            [l] => l["attachedRoutes"].as_u64() == Some(0),
            _ => false,
        };
        if !zero {
            return Err(format!(
                "Gateway {gateway}: {} listener statuses with {:?} attached routes, expected none or one with 0",
                listeners.len(),
                listeners
                    .iter()
                    .map(|l| l["attachedRoutes"].as_u64().unwrap_or(0))
                    .collect::<Vec<_>>()
            ));
        }
    }
    if let Some(want) = s.attached_routes {
        let have: u64 = gw["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| s.listener.as_ref().is_none_or(|n| l["name"] == n.as_str()))
            .map(|l| l["attachedRoutes"].as_u64().unwrap_or(0))
            .sum();
        if have != want {
            return Err(format!(
                "Gateway {gateway}: {have} attached routes, expected {want}"
            ));
        }
    }
    Ok(())
}

/// A GatewayClass as the view lists it (`gatewayClasses`: ours only).
fn check_gateway_class(dump: &Value, class: &str, s: &StatusCheck) -> Result<(), String> {
    let entry = dump["gatewayClasses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == class)
        .ok_or_else(|| format!("GatewayClass {class} has no status of ours"))?;
    if let Some(generation) = entry["generation"].as_i64() {
        latest(&entry["conditions"], generation)
            .map_err(|e| format!("GatewayClass {class}: {e}"))?;
    }
    for want in &s.conditions {
        find_condition(&entry["conditions"], want)
            .map_err(|e| format!("GatewayClass {class}: {e}"))?;
    }
    if let Some(want) = s.observed_generation {
        observed_generation_is(&entry["conditions"], want)
            .map_err(|e| format!("GatewayClass {class}: {e}"))?;
    }
    Ok(())
}

/// Upstream's `ConditionsHaveLatestObservedGeneration`: no condition in `conditions` is older
/// than the object's `generation`. The API-server view carries the generation of every
/// object; `/config_dump` computes status from the object it shows, so it has none to lag.
fn latest(conditions: &Value, generation: i64) -> Result<(), String> {
    let stale: Vec<String> = conditions
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["observedGeneration"].as_i64() != Some(generation))
        .map(|c| {
            format!(
                "{} ({})",
                c["type"].as_str().unwrap_or_default(),
                c["observedGeneration"]
            )
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    Err(format!(
        "conditions not at generation {generation}: {}",
        stale.join(", ")
    ))
}

/// Every condition in `conditions` (at least one) carries `observedGeneration: want`.
fn observed_generation_is(conditions: &Value, want: i64) -> Result<(), String> {
    if conditions.as_array().is_none_or(|all| all.is_empty()) {
        return Err("no conditions".into());
    }
    latest(conditions, want)
}

/// Upstream's `findConditionInList`: a condition of that type with that status and the
/// reason the check expects ([`ConditionCheck::expected_reason`]).
fn find_condition(conditions: &Value, want: &ConditionCheck) -> Result<(), String> {
    let Some(have) = conditions
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == want.kind.as_str())
    else {
        return Err(format!("no {} condition", want.kind));
    };
    let status_ok = is_true(&have["status"]) == want.status;
    let reason_ok = want.expected_reason().is_none_or(|r| have["reason"] == r);
    if status_ok && reason_ok {
        return Ok(());
    }
    Err(format!(
        "{} is {}/{} ({}), expected {}/{}",
        want.kind,
        have["status"],
        have["reason"].as_str().unwrap_or_default(),
        have["message"].as_str().unwrap_or_default(),
        want.status,
        want.expected_reason().unwrap_or("any reason"),
    ))
}

/// Upstream's `gatewayListenersMatch`.
fn check_listeners(gateway: &str, gw: &Value, want: &[ListenerCheck]) -> Result<(), String> {
    let have: Vec<&Value> = gw["listeners"].as_array().into_iter().flatten().collect();
    if have.len() != want.len() {
        return Err(format!(
            "Gateway {gateway}: {} listener statuses, expected {}",
            have.len(),
            want.len()
        ));
    }
    for w in want {
        let label = format!("Gateway {gateway} listener {}", w.name);
        let l = have
            .iter()
            .find(|l| l["name"] == w.name.as_str())
            .ok_or_else(|| format!("{label}: no status"))?;
        // A required field of ListenerStatus: a status without it says nothing about kinds,
        // which must not pass for "none".
        let Some(reported) = l["supportedKinds"].as_array() else {
            return Err(format!("{label}: the status has no supportedKinds"));
        };
        let kinds: Vec<(&str, &str)> = reported
            .iter()
            .map(|k| {
                (
                    k["group"].as_str().unwrap_or("gateway.networking.k8s.io"),
                    k["kind"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        if w.supported_kinds.is_empty() && !kinds.is_empty() {
            return Err(format!("{label}: supportedKinds {kinds:?}, expected none"));
        }
        for kind in &w.supported_kinds {
            if !kinds.contains(&("gateway.networking.k8s.io", kind.as_str())) {
                return Err(format!("{label}: supportedKinds {kinds:?} lack {kind}"));
            }
        }
        let attached = l["attachedRoutes"].as_u64().unwrap_or(0);
        if attached != w.attached_routes {
            return Err(format!(
                "{label}: {attached} attached routes, expected {}",
                w.attached_routes
            ));
        }
        for c in &w.conditions {
            find_condition(&l["conditions"], c).map_err(|e| format!("{label}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::ConditionCheck;
    use serde_json::json;

    fn dump() -> Value {
        json!({
            "routeParents": [{"kind": "HTTPRoute", "namespace": "infra", "name": "r",
                "parents": [{"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                           "namespace": "infra", "name": "gw"},
                             "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners"}]}]}],
            "gateways": [{"namespace": "infra", "name": "gw",
                "listeners": [{"name": "http", "attachedRoutes": 2}, {"name": "other", "attachedRoutes": 1}]}],
        })
    }

    fn route_check(status: bool, reason: &str) -> StatusCheck {
        StatusCheck {
            route: Some("HTTPRoute infra/r".into()),
            parent: Some("Gateway infra/gw".into()),
            conditions: vec![ConditionCheck {
                kind: "Accepted".into(),
                status,
                reason: Some(reason.into()),
                any_reason: false,
            }],
            no_accepted_parents: true,
            ..StatusCheck::default()
        }
    }

    #[test]
    fn conditions_and_counts() {
        let d = dump();
        assert!(check(&d, &route_check(false, "NotAllowedByListeners")).is_ok());
        assert!(check(&d, &route_check(true, "Accepted")).is_err());
        assert!(check(&d, &route_check(false, "NoMatchingParent")).is_err());
        let mut gw = route_check(true, "x");
        gw.route = None;
        gw.conditions.clear();
        gw.gateway = Some("infra/gw".into());
        gw.attached_routes = Some(3);
        assert!(check(&d, &gw).is_ok());
        gw.listener = Some("http".into());
        assert!(check(&d, &gw).is_err());
    }

    #[test]
    fn listeners_are_judged_whole_as_upstream_judges_them() {
        let d = json!({"gateways": [{"namespace": "infra", "name": "gw", "listeners": [
            {"name": "tls-passthrough", "attachedRoutes": 0,
             "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "TLSRoute"}],
             "conditions": [{"type": "ResolvedRefs", "status": "False", "reason": "InvalidRouteKinds"}]}]}]});
        let listener = |kinds: &[&str], reason: &str, attached: u64| ListenerCheck {
            name: "tls-passthrough".into(),
            supported_kinds: kinds.iter().map(|k| k.to_string()).collect(),
            conditions: vec![ConditionCheck {
                kind: "ResolvedRefs".into(),
                status: false,
                reason: Some(reason.into()),
                any_reason: false,
            }],
            attached_routes: attached,
        };
        let mut c = route_check(true, "x");
        c.route = None;
        c.conditions.clear();
        c.gateway = Some("infra/gw".into());
        c.listeners = Some(vec![listener(&["TLSRoute"], "InvalidRouteKinds", 0)]);
        assert!(check(&d, &c).is_ok());
        c.listeners = Some(vec![listener(&["TCPRoute"], "InvalidRouteKinds", 0)]);
        assert!(check(&d, &c).unwrap_err().contains("lack TCPRoute"));
        // No kinds expected means none may be reported.
        c.listeners = Some(vec![listener(&[], "InvalidRouteKinds", 0)]);
        assert!(check(&d, &c).unwrap_err().contains("expected none"));
        c.listeners = Some(vec![listener(&["TLSRoute"], "Invalid", 0)]);
        assert!(check(&d, &c).is_err());
        c.listeners = Some(vec![listener(&["TLSRoute"], "InvalidRouteKinds", 1)]);
        assert!(check(&d, &c).is_err());
        c.listeners = Some(vec![]);
        assert!(
            check(&d, &c)
                .unwrap_err()
                .contains("1 listener statuses, expected 0")
        );
    }

    #[test]
    fn gateway_and_class_conditions_are_judged_with_their_generation() {
        let d = json!({
            "gateways": [{"namespace": "infra", "name": "gw",
                "conditions": [{"type": "Accepted", "status": "False", "reason": "InvalidParameters",
                                "observedGeneration": 2}],
                "listeners": [{"name": "http", "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}]}]}],
            "gatewayClasses": [{"name": "wp", "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 3}]}],
        });
        let accepted = |status, reason: &str| ConditionCheck {
            kind: "Accepted".into(),
            status,
            reason: Some(reason.into()),
            any_reason: false,
        };
        let gw = |c: ConditionCheck, generation| StatusCheck {
            gateway: Some("infra/gw".into()),
            conditions: vec![c],
            observed_generation: generation,
            ..StatusCheck::default()
        };
        assert!(check(&d, &gw(accepted(false, "InvalidParameters"), None)).is_ok());
        assert!(check(&d, &gw(accepted(true, "Accepted"), None)).is_err());
        // The listener's condition is a generation behind.
        let stale = check(&d, &gw(accepted(false, "InvalidParameters"), Some(2))).unwrap_err();
        assert!(stale.contains("listener http"), "{stale}");
        let class = |generation| StatusCheck {
            gateway_class: Some("wp".into()),
            conditions: vec![accepted(true, "Accepted")],
            observed_generation: Some(generation),
            ..StatusCheck::default()
        };
        assert!(check(&d, &class(3)).is_ok());
        assert!(check(&d, &class(2)).is_err());
        let mut other = class(3);
        other.gateway_class = Some("theirs".into());
        assert!(check(&d, &other).unwrap_err().contains("no status of ours"));
    }

    #[test]
    fn stale_conditions_fail_every_check_once_the_generation_is_known() {
        let view = |observed: i64| {
            json!({
                "routeParents": [{"kind": "HTTPRoute", "namespace": "infra", "name": "r", "generation": 2,
                    "parents": [{"parentRef": {"kind": "Gateway", "namespace": "infra", "name": "gw"},
                                 "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                                 "observedGeneration": observed}]}]}],
                "gateways": [{"namespace": "infra", "name": "gw", "generation": 1, "listeners": [],
                    "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1},
                                   {"type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": observed}]}],
                "gatewayClasses": [{"name": "wp", "generation": 1, "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}]}],
            })
        };
        // No generation named in the check: the object's own is required.
        let route = StatusCheck {
            route: Some("HTTPRoute infra/r".into()),
            ..StatusCheck::default()
        };
        assert!(check(&view(2), &route).is_ok());
        let stale = check(&view(1), &route).unwrap_err();
        assert!(stale.contains("not at generation 2"), "{stale}");
        let gateways = ["infra/gw".to_owned()];
        assert!(suite_ready(&view(1), "wp", &gateways).is_ok());
        let not_latest = suite_ready(&view(2), "wp", &gateways).unwrap_err();
        assert!(not_latest.contains("Programmed (2)"), "{not_latest}");
        let unowned = suite_ready(&view(1), "theirs", &gateways).unwrap_err();
        assert!(unowned.contains("GatewayClass theirs"), "{unowned}");
    }

    #[test]
    fn zero_routes_and_no_accepted_parents_are_as_narrow_as_upstream() {
        let gateway = |listeners: Value| json!({"gateways": [{"namespace": "infra", "name": "gw", "listeners": listeners}]});
        let zero = StatusCheck {
            gateway: Some("infra/gw".into()),
            zero_routes: true,
            ..StatusCheck::default()
        };
        assert!(check(&gateway(json!([])), &zero).is_ok());
        assert!(check(&gateway(json!([{"name": "a", "attachedRoutes": 0}])), &zero).is_ok());
        assert!(check(&gateway(json!([{"name": "a", "attachedRoutes": 1}])), &zero).is_err());
        // Two listeners with none attached is not what upstream accepts either.
        let two = json!([{"name": "a", "attachedRoutes": 0}, {"name": "b", "attachedRoutes": 0}]);
        assert!(check(&gateway(two), &zero).is_err());

        let route = |parents: Value| json!({"routeParents": [{"kind": "HTTPRoute", "namespace": "infra", "name": "r", "parents": parents}]});
        let none_accepted = StatusCheck {
            route: Some("HTTPRoute infra/r".into()),
            no_accepted_parents: true,
            ..StatusCheck::default()
        };
        let parent = |conditions: Value| json!({"parentRef": {"kind": "Gateway", "namespace": "infra", "name": "gw"}, "conditions": conditions});
        let refused =
            parent(json!([{"type": "Accepted", "status": "False", "reason": "NoMatchingParent"}]));
        assert!(check(&route(json!([])), &none_accepted).is_ok());
        assert!(check(&route(json!([refused.clone()])), &none_accepted).is_ok());
        // A parent that says nothing about acceptance, or two parents, do not pass.
        assert!(check(&route(json!([parent(json!([]))])), &none_accepted).is_err());
        assert!(check(&route(json!([refused.clone(), refused])), &none_accepted).is_err());
    }
}
