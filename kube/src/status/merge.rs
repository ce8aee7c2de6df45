//! Merging what we want ([`Desired`]) into a status as the API server holds it.
//!
//! - Conditions get `lastTransitionTime`: the time already there when a condition of the same
//!   type had the same `status` (the Kubernetes convention, and the CRD schemas require the
//!   field), else now. So a status we rewrite unchanged is byte-identical to the one read, and
//!   the writer can skip it.
//! - GatewayClass and Gateway: our fields replace theirs; every other field of `status` (the
//!   `addresses` the deploying controller writes) is kept as read.
//! - Routes: `status.parents` is shared. Every entry of another controller is kept as the same
//!   JSON value at the same position; each of ours is replaced in place by the desired entry for
//!   the same parent, or removed when there is none (stale); desired entries not yet present
//!   are appended. The list is capped as the API caps it (see `schema`): our entries give way.

use serde_json::{Map, Value, json};
use waypoint_core::config::resources::GATEWAY_API_GROUP;

use super::desired::Desired;
use super::schema::cap_parents;

/// The status `old` becomes with `desired` merged in; equal to `old` when there is nothing to
/// write (`None` for a route that has no status and none of our entries).
pub(crate) fn merged_status(
    old: Option<&Value>,
    desired: &Desired,
    controller: &str,
    route_namespace: &str,
    now: &str,
) -> Option<Value> {
    match desired {
        Desired::Fields(fields) => Some(owned_fields(old, fields, now)),
        Desired::RouteParents { ours, only_gateway } => {
            let owner = Owner {
                controller,
                only_gateway: only_gateway.as_ref(),
                route_namespace,
            };
            route_parents(old, ours, &owner, now)
        }
    }
}

fn owned_fields(old: Option<&Value>, fields: &Value, now: &str) -> Value {
    let mut status = match old {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    for (field, value) in fields.as_object().into_iter().flatten() {
        let before = old.and_then(|o| o.get(field));
        let merged = match field.as_str() {
            "conditions" => conditions(value, before, now),
            "listeners" => listeners(value, before, now),
            _ => value.clone(),
        };
        status.insert(field.clone(), merged);
    }
    Value::Object(status)
}

/// `new` conditions with `lastTransitionTime` carried over from `old` where the status did not
/// change.
fn conditions(new: &Value, old: Option<&Value>, now: &str) -> Value {
    merge_items(new, old, "type", |c, previous| {
        let kept = previous
            .filter(|o| o.get("status") == c.get("status"))
            .and_then(|o| o.get("lastTransitionTime"))
            .filter(|t| t.is_string());
        c["lastTransitionTime"] = kept.cloned().unwrap_or_else(|| json!(now));
    })
}

/// Listener statuses, each listener's conditions merged with the listener of the same name.
fn listeners(new: &Value, old: Option<&Value>, now: &str) -> Value {
    merge_items(new, old, "name", |l, previous| {
        let before = previous.and_then(|p| p.get("conditions"));
        l["conditions"] = conditions(&l["conditions"], before, now);
    })
}

/// Each item of the array `new`, changed by `merge` with the item of `old` that has the same
/// `key` field (if any).
fn merge_items(
    new: &Value,
    old: Option<&Value>,
    key: &str,
    merge: impl Fn(&mut Value, Option<&Value>),
) -> Value {
    let old = old.and_then(Value::as_array);
    let merged = new
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let previous = old
                .into_iter()
                .flatten()
                .find(|o| o.get(key) == item.get(key));
            let mut item = item.clone();
            merge(&mut item, previous);
            item
        })
        .collect();
    Value::Array(merged)
}

/// Decides which entries of a route's `status.parents` are ours to replace or remove.
struct Owner<'a> {
    controller: &'a str,
    only_gateway: Option<&'a (String, String)>,
    route_namespace: &'a str,
}

impl Owner<'_> {
    fn key<'v>(&'v self, entry: &'v Value) -> Option<ParentKey<'v>> {
        entry
            .get("parentRef")
            .map(|r| ParentKey::of(r, self.route_namespace))
    }

    /// Ours: our controller name and, with `--gateway`, our Gateway or a parent we want an
    /// entry for (a Service we serve).
    fn owns(&self, entry: &Value, ours: &[Value]) -> bool {
        if entry.get("controllerName").and_then(Value::as_str) != Some(self.controller) {
            return false;
        }
        let Some((namespace, name)) = self.only_gateway else {
            return true;
        };
        let key = self.key(entry);
        let our_gateway = key.as_ref().is_some_and(|k| {
            k.group == GATEWAY_API_GROUP
                && k.kind == "Gateway"
                && k.namespace == namespace
                && k.name == name
        });
        our_gateway || ours.iter().any(|o| self.key(o) == key)
    }
}

fn route_parents(
    old: Option<&Value>,
    ours: &[Value],
    owner: &Owner<'_>,
    now: &str,
) -> Option<Value> {
    let old_parents: &[Value] = old
        .and_then(|s| s.get("parents"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    if ours.is_empty() && !old_parents.iter().any(|e| owner.owns(e, ours)) {
        // Nothing of ours, before or after: the status stays as it is.
        return old.cloned();
    }
    let mut placed = vec![false; ours.len()];
    let mut parents = Vec::with_capacity(old_parents.len() + ours.len());
    for entry in old_parents {
        if !owner.owns(entry, ours) {
            parents.push(entry.clone());
            continue;
        }
        let at = ours
            .iter()
            .enumerate()
            .position(|(i, o)| !placed[i] && owner.key(o) == owner.key(entry));
        if let Some(i) = at {
            placed[i] = true;
            parents.push(with_times(&ours[i], Some(entry), now));
        }
    }
    for (i, entry) in ours.iter().enumerate() {
        if !placed[i] {
            parents.push(with_times(entry, None, now));
        }
    }
    cap_parents(&mut parents, |e| owner.owns(e, ours));
    let mut status = match old {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    status.insert("parents".into(), Value::Array(parents));
    Some(Value::Object(status))
}

fn with_times(entry: &Value, old: Option<&Value>, now: &str) -> Value {
    let mut entry = entry.clone();
    let before = old.and_then(|o| o.get("conditions"));
    entry["conditions"] = conditions(&entry["conditions"], before, now);
    entry
}

/// A parentRef with the API's defaults applied, for matching entries written by anyone.
#[derive(PartialEq, Eq)]
struct ParentKey<'a> {
    group: &'a str,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    section_name: Option<&'a str>,
    port: Option<u64>,
}

impl<'a> ParentKey<'a> {
    fn of(r: &'a Value, route_namespace: &'a str) -> Self {
        let text = |field: &str| r.get(field).and_then(Value::as_str);
        ParentKey {
            group: text("group").unwrap_or(GATEWAY_API_GROUP),
            kind: text("kind").unwrap_or("Gateway"),
            namespace: text("namespace").unwrap_or(route_namespace),
            name: text("name").unwrap_or_default(),
            section_name: text("sectionName"),
            port: r.get("port").and_then(Value::as_u64),
        }
    }
}

/// Now, as Kubernetes writes `metav1.Time`: RFC 3339, UTC, whole seconds.
pub(crate) fn now_seconds() -> String {
    let millis = waypoint_core::telemetry::access_log::rfc3339_millis(std::time::SystemTime::now());
    // `2026-08-01T12:34:56.789Z` → `2026-08-01T12:34:56Z`
    match millis.rsplit_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => millis,
    }
}

/// Now, as Kubernetes writes `metav1.MicroTime` (a Lease's times): six fractional digits.
pub(super) fn now_micros() -> String {
    let millis = waypoint_core::telemetry::access_log::rfc3339_millis(std::time::SystemTime::now());
    match millis.strip_suffix('Z') {
        Some(head) => format!("{head}000Z"),
        None => millis,
    }
}
