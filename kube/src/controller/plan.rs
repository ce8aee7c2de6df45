//! One reconcile pass, decided: from the objects the controller watches to what it must apply,
//! delete and write. Pure, so every rule is unit tested; `run` carries the plan out.
//!
//! Rules:
//! - Ours: GatewayClasses whose `spec.controllerName` is our controller name (status
//!   `Accepted`), and the Gateways of those classes.
//! - A Gateway that renders is provisioned: each object is applied when the live copy lacks
//!   a field we set or holds another value there (so hand edits and deletions are undone, while
//!   fields the API server fills in are not fought over).
//! - A Gateway that does not render, or whose object names are taken by objects we did not
//!   create, gets `Accepted=False` and `Programmed=False` with the reason, and nothing.
//! - Whatever carries our labels and is not wanted any more is deleted: objects of deleted or
//!   refused Gateways, of Gateways that moved to another class, and ClusterRoleBindings left
//!   behind while the controller was down (the garbage collector cannot remove those).
//! - `status.addresses` of a provisioned Gateway: once a waypoint pod is Ready, the Service
//!   hostname then its ClusterIPs. Never removed while the Gateway exists (istiod would stop
//!   sending traffic to a waypoint that is merely restarting).

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};
use waypoint_core::config::Condition;

use crate::api::{ApiResource, kinds};
use crate::status::desired::{Desired, class_fields};
use crate::status::merge::merged_status;
use crate::status::schema::api_conditions;

use super::mode::Refusal;
use super::options::RenderOptions;
use super::render::{GATEWAY_NAME_LABEL, controller_label_value, object_name, render};
use super::{CONTROLLER_LABEL, MANAGED_BY, MANAGED_BY_LABEL};

/// The kinds the controller watches, in this order.
pub const WATCHED: [ApiResource; 7] = [
    kinds::GATEWAY_CLASS,
    kinds::GATEWAY,
    kinds::POD,
    kinds::SERVICE_ACCOUNT,
    kinds::SERVICE,
    kinds::DEPLOYMENT,
    kinds::CLUSTER_ROLE_BINDING,
];

/// The kinds we provision, namespaced ones in apply order.
const PROVISIONED: [ApiResource; 4] = [
    kinds::SERVICE_ACCOUNT,
    kinds::SERVICE,
    kinds::DEPLOYMENT,
    kinds::CLUSTER_ROLE_BINDING,
];

/// One object to delete.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deletion {
    /// Its kind.
    pub resource: &'static str,
    /// Its namespace (`None`: cluster-scoped).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

/// One status to write: `fields` merged into the status as read (other fields kept).
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    /// GatewayClass or Gateway.
    pub resource: ApiResource,
    /// The Gateway's namespace.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// The fields of `status` we own here.
    pub fields: Value,
}

/// What one pass does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Objects to apply, in order.
    pub apply: Vec<(ApiResource, Value)>,
    /// Objects to delete.
    pub delete: Vec<Deletion>,
    /// Statuses to write.
    pub status: Vec<StatusWrite>,
}

/// The plan for the watched objects `slots` (in [`WATCHED`] order).
pub fn plan(slots: &[Vec<Value>], options: &RenderOptions, now: &str) -> Plan {
    let empty = Vec::new();
    let slot = |i: usize| slots.get(i).unwrap_or(&empty);
    let (classes, gateways, pods) = (slot(0), slot(1), slot(2));
    let mut live: HashMap<(&str, Option<&str>, &str), &Value> = HashMap::new();
    for (i, resource) in PROVISIONED.iter().enumerate() {
        for object in slot(3 + i) {
            let namespace = text(object, "/metadata/namespace").filter(|_| resource.namespaced);
            let name = text(object, "/metadata/name").unwrap_or_default();
            live.insert((resource.kind, namespace, name), object);
        }
    }
    let controller_label = controller_label_value(options);
    let ours = |object: &Value| {
        let label = |key: &str| object.pointer("/metadata/labels").and_then(|l| l.get(key));
        label(MANAGED_BY_LABEL) == Some(&json!(MANAGED_BY))
            && label(CONTROLLER_LABEL) == Some(&json!(controller_label))
    };

    let mut result = Plan::default();
    let mut our_classes = HashMap::new();
    for class in classes {
        if class.pointer("/spec/controllerName") != Some(&json!(options.controller.as_str())) {
            continue;
        }
        let Some(name) = text(class, "/metadata/name") else {
            continue;
        };
        our_classes.insert(name, class);
        let fields = class_fields(generation(class));
        push_status(&mut result, class, kinds::GATEWAY_CLASS, fields, now);
    }
    let mut wanted: BTreeSet<(&'static str, Option<String>, String)> = BTreeSet::new();
    for gateway in gateways {
        let class_name = text(gateway, "/spec/gatewayClassName").unwrap_or_default();
        let Some(class) = our_classes.get(class_name) else {
            continue;
        };
        let (Some(namespace), Some(name)) = (
            text(gateway, "/metadata/namespace"),
            text(gateway, "/metadata/name"),
        ) else {
            continue;
        };
        let provision = render(gateway, Some(class), options).and_then(|p| {
            let all = p.namespaced.iter().chain(&p.cluster);
            match all.map(|o| taken(o, &live, &ours)).find_map(Result::err) {
                Some(refusal) => Err(refusal),
                None => Ok(p),
            }
        });
        let provision = match provision {
            Ok(provision) => provision,
            Err(refusal) => {
                let fields =
                    json!({ "conditions": refused_conditions(&refusal, generation(gateway)) });
                push_status(&mut result, gateway, kinds::GATEWAY, fields, now);
                continue;
            }
        };
        let rendered = provision.namespaced.into_iter().zip(PROVISIONED);
        let cluster = provision
            .cluster
            .into_iter()
            .map(|o| (o, kinds::CLUSTER_ROLE_BINDING));
        for (object, resource) in rendered.chain(cluster) {
            let key = key_of(&resource, &object);
            let current = live.get(&(key.0, key.1.as_deref(), key.2.as_str()));
            if !current.is_some_and(|c| contains(c, &object)) {
                result.apply.push((resource, object));
            }
            wanted.insert(key);
        }
        if let Some(addresses) = addresses(gateway, namespace, name, pods, &live, options) {
            push_status(
                &mut result,
                gateway,
                kinds::GATEWAY,
                json!({"addresses": addresses}),
                now,
            );
        }
    }
    for ((kind, namespace, name), object) in &live {
        let key = (*kind, namespace.map(str::to_owned), (*name).to_owned());
        if ours(object) && !wanted.contains(&key) {
            result.delete.push(Deletion {
                resource: kind,
                namespace: key.1,
                name: key.2,
            });
        }
    }
    result.delete.sort();
    result
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn generation(object: &Value) -> Option<i64> {
    object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
}

fn key_of(resource: &ApiResource, object: &Value) -> (&'static str, Option<String>, String) {
    let namespace = text(object, "/metadata/namespace").filter(|_| resource.namespaced);
    let name = text(object, "/metadata/name").unwrap_or_default();
    (resource.kind, namespace.map(str::to_owned), name.to_owned())
}

/// `Err` when an object of the same kind and name exists that we did not create: applying
/// with force would take it over.
fn taken(
    object: &Value,
    live: &HashMap<(&str, Option<&str>, &str), &Value>,
    ours: &impl Fn(&Value) -> bool,
) -> Result<(), Refusal> {
    let kind = text(object, "/kind").unwrap_or_default();
    let namespace = text(object, "/metadata/namespace");
    let name = text(object, "/metadata/name").unwrap_or_default();
    let namespace_key = namespace.filter(|_| kind != "ClusterRoleBinding");
    match live.get(&(kind, namespace_key, name)) {
        Some(existing) if !ours(existing) => Err(Refusal {
            reason: "Invalid",
            message: format!(
                "{kind} {}{name} exists and was not created by this controller: rename the Gateway or remove that {kind}",
                namespace.map(|n| format!("{n}/")).unwrap_or_default()
            ),
        }),
        _ => Ok(()),
    }
}

/// `Accepted=False` and `Programmed=False`, both saying why.
fn refused_conditions(refusal: &Refusal, generation: Option<i64>) -> Vec<Value> {
    let condition = |kind: &str, reason: &str| Condition {
        kind: kind.into(),
        status: false,
        reason: reason.into(),
        message: refusal.message.clone(),
    };
    api_conditions(
        &[
            condition("Accepted", refusal.reason),
            condition("Programmed", "Invalid"),
        ],
        generation,
    )
}

/// The addresses to publish, when a waypoint pod is Ready: hostname, then ClusterIPs.
fn addresses(
    gateway: &Value,
    namespace: &str,
    name: &str,
    pods: &[Value],
    live: &HashMap<(&str, Option<&str>, &str), &Value>,
    options: &RenderOptions,
) -> Option<Vec<Value>> {
    let ready = pods.iter().any(|pod| {
        text(pod, "/metadata/namespace") == Some(namespace)
            && pod
                .pointer("/metadata/labels")
                .and_then(|l| l.get(GATEWAY_NAME_LABEL))
                == Some(&json!(name))
            && pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
    });
    if !ready {
        return None;
    }
    let service = object_name(name);
    let mut addresses = vec![json!({
        "type": "Hostname",
        "value": format!("{service}.{namespace}.svc.{}", options.cluster_domain),
    })];
    if let Some(live_service) = live.get(&("Service", Some(namespace), service)) {
        let ips: Vec<&str> = match live_service
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
        {
            Some(ips) => ips.iter().filter_map(Value::as_str).collect(),
            None => text(live_service, "/spec/clusterIP").into_iter().collect(),
        };
        for ip in ips.into_iter().filter(|ip| !ip.is_empty() && *ip != "None") {
            addresses.push(json!({"type": "IPAddress", "value": ip}));
        }
    }
    // Already published: nothing to write (merging would find it equal anyway).
    (gateway.pointer("/status/addresses") != Some(&json!(addresses))).then_some(addresses)
}

/// Adds a status write when merging `fields` changes the status as watched.
fn push_status(plan: &mut Plan, object: &Value, resource: ApiResource, fields: Value, now: &str) {
    let old = object.get("status");
    let desired = Desired::Fields(fields.clone());
    let namespace = text(object, "/metadata/namespace").filter(|_| resource.namespaced);
    let merged = merged_status(old, &desired, "", namespace.unwrap_or_default(), now);
    if merged.as_ref() == old {
        return;
    }
    plan.status.push(StatusWrite {
        resource,
        namespace: namespace.map(str::to_owned),
        name: text(object, "/metadata/name")
            .unwrap_or_default()
            .to_owned(),
        fields,
    });
}

/// Whether `live` holds every field of `want` with the same value. Fields the API server adds
/// (defaults, `clusterIP`, `status`) do not count; lists must match item by item; an empty
/// map or list we want is satisfied by its absence (the server drops them).
pub fn contains(live: &Value, want: &Value) -> bool {
    match (live, want) {
        (Value::Object(live), Value::Object(want)) => {
            want.iter().all(|(key, value)| match live.get(key) {
                Some(live_value) => contains(live_value, value),
                None => is_empty(value),
            })
        }
        (Value::Array(live), Value::Array(want)) => {
            live.len() == want.len() && live.iter().zip(want).all(|(l, w)| contains(l, w))
        }
        _ => live == want,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Null => true,
        _ => false,
    }
}
