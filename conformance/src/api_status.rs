//! Status as upstream reads it: from the objects on the API server. The waypoint (in `--kube`
//! mode) writes `status` on Gateways and routes under its controllerName; this module turns
//! what it wrote into the shape [`status::check`](crate::status::check) judges, so the checks
//! stay one piece of code whichever way the status was obtained.
//!
//! Only entries under our controllerName count, as upstream filters `status.parents` by the
//! implementation's controller: another controller's entry never makes a case pass.

use serde_json::{Value, json};

/// The `routeParents`, `gateways` and `gatewayClasses` view of `objects` (every object the API
/// server holds): routes with their `status.parents` written by `controller`, Gateways with
/// their status, GatewayClasses whose `spec.controllerName` is `controller` with theirs. Each
/// entry carries the object's `generation`, which its conditions' `observedGeneration` must
/// reach.
pub fn status_view(objects: &[Value], controller: &str) -> Value {
    let mut routes = Vec::new();
    let mut gateways = Vec::new();
    let mut classes = Vec::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        let namespace = o["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let generation = &o["metadata"]["generation"];
        match kind {
            "HTTPRoute" | "GRPCRoute" | "TCPRoute" | "TLSRoute" => {
                let parents: Vec<Value> = o["status"]["parents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["controllerName"] == controller)
                    .map(|p| parent_view(p, namespace))
                    .collect();
                if !parents.is_empty() {
                    routes.push(json!({"kind": kind, "namespace": namespace, "name": name,
                        "generation": generation, "parents": parents}));
                }
            }
            "Gateway" => {
                let status = &o["status"];
                // A Gateway nobody has written conditions for is not ours (or not yet seen).
                if status["conditions"].as_array().is_none_or(|c| c.is_empty()) {
                    continue;
                }
                let addresses: Vec<&Value> = status["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| &a["value"])
                    .collect();
                gateways.push(json!({
                    "namespace": namespace,
                    "name": name,
                    "generation": generation,
                    "addresses": addresses,
                    "conditions": status["conditions"],
                    "listeners": status["listeners"].as_array().cloned().unwrap_or_default(),
                }));
            }
            "GatewayClass" if o["spec"]["controllerName"] == controller => {
                classes.push(json!({
                    "name": name,
                    "generation": generation,
                    "conditions": o["status"]["conditions"],
                }));
            }
            _ => {}
        }
    }
    json!({"routeParents": routes, "gateways": gateways, "gatewayClasses": classes})
}

/// A `status.parents[]` entry with the parentRef defaults the API leaves implicit filled in.
fn parent_view(p: &Value, route_namespace: &str) -> Value {
    let r = &p["parentRef"];
    let text = |v: &Value, default: &str| v.as_str().unwrap_or(default).to_owned();
    json!({
        "parentRef": {
            "group": text(&r["group"], "gateway.networking.k8s.io"),
            "kind": text(&r["kind"], "Gateway"),
            "namespace": text(&r["namespace"], route_namespace),
            "name": text(&r["name"], ""),
            "sectionName": r["sectionName"],
            "port": r["port"],
        },
        "conditions": p["conditions"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{ConditionCheck, StatusCheck};
    use crate::status;

    const OURS: &str = "waypoint.dev/gateway-controller";

    fn route() -> Value {
        json!({
            "kind": "HTTPRoute",
            "metadata": {"namespace": "infra", "name": "r", "generation": 2},
            "status": {"parents": [
                {"parentRef": {"name": "gw"}, "controllerName": "istio.io/gateway-controller",
                 "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                 "observedGeneration": 2}]},
                {"parentRef": {"name": "gw"}, "controllerName": OURS,
                 "conditions": [{"type": "Accepted", "status": "False",
                                 "reason": "NotAllowedByListeners", "observedGeneration": 2}]},
            ]},
        })
    }

    fn check(reason: &str, status_true: bool) -> StatusCheck {
        StatusCheck {
            route: Some("HTTPRoute infra/r".into()),
            parent: Some("Gateway infra/gw".into()),
            conditions: vec![ConditionCheck {
                kind: "Accepted".into(),
                status: status_true,
                reason: Some(reason.into()),
                any_reason: false,
            }],
            observed_generation: Some(2),
            parents: Some(vec!["Gateway infra/gw".into()]),
            ..StatusCheck::default()
        }
    }

    #[test]
    fn only_entries_under_our_controller_name_are_judged() {
        let view = status_view(&[route()], OURS);
        assert!(status::check(&view, &check("NotAllowedByListeners", false)).is_ok());
        // The other controller's Accepted=True entry must not make the route look accepted.
        assert!(status::check(&view, &check("Accepted", true)).is_err());
        // Under a name that wrote nothing, the route has no parent status at all.
        let nobody = status_view(&[route()], "example.com/other");
        assert!(status::check(&nobody, &check("NotAllowedByListeners", false)).is_err());
    }

    #[test]
    fn gateways_carry_addresses_and_listeners_as_written() {
        let gw = json!({
            "kind": "Gateway",
            "metadata": {"namespace": "infra", "name": "gw"},
            "status": {
                "addresses": [{"type": "IPAddress", "value": "10.97.0.2"}],
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
                "listeners": [{"name": "http", "attachedRoutes": 1, "conditions": [
                    {"type": "Accepted", "status": "True"}, {"type": "ResolvedRefs", "status": "True"},
                    {"type": "Programmed", "status": "True"}]}],
            },
        });
        let view = status_view(std::slice::from_ref(&gw), OURS);
        assert!(status::gateway_ready(&view, "infra/gw").is_ok());
        let mut unwritten = gw;
        unwritten["status"] = json!({"addresses": [{"value": "10.97.0.2"}]});
        let view = status_view(&[unwritten], OURS);
        assert!(status::gateway_ready(&view, "infra/gw").is_err());
    }
}
