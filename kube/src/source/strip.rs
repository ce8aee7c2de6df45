//! Dropping what waypoint never reads before an object is stored.
//!
//! A reflector keeps every watched object in memory for the life of the process, and in a big
//! cluster Pods dominate: a Pod is several kilobytes of spec and status of which waypoint reads
//! a handful of fields (identity, labels, the ambient redirection annotation, IPs, readiness).
//! `managedFields` and the `last-applied-configuration` annotation are often larger than the
//! object itself and are never read. Secrets other than `kubernetes.io/tls` are not kept at
//! all: the builder reads only TLS Secrets (HTTPS listener certificates), and a proxy holding
//! every token and password of the cluster in memory is a liability.

use serde_json::{Map, Value};

/// The annotation `kubectl apply` stores the whole previous object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The Pod annotation istio-cni sets on captured pods.
const REDIRECTION: &str = "ambient.istio.io/redirection";
/// The Secret type waypoint reads.
const TLS_SECRET: &str = "kubernetes.io/tls";

/// `object` reduced to what waypoint reads, or `None` when it keeps nothing of this object.
pub fn strip(kind: &str, mut object: Value) -> Option<Value> {
    let map = object.as_object_mut()?;
    match kind {
        "Pod" => Some(Value::Object(strip_pod(map))),
        "Namespace" => {
            let mut kept = Map::new();
            copy(map, &mut kept, &["apiVersion", "kind"]);
            let meta = pick(map.get("metadata"), &["name", "labels"]);
            kept.insert("metadata".into(), Value::Object(meta));
            Some(Value::Object(kept))
        }
        "Secret" if map.get("type").and_then(Value::as_str) != Some(TLS_SECRET) => None,
        _ => {
            if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                meta.remove("managedFields");
                if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
                    annotations.remove(LAST_APPLIED);
                }
            }
            Some(object)
        }
    }
}

fn strip_pod(pod: &Map<String, Value>) -> Map<String, Value> {
    let mut kept = Map::new();
    copy(pod, &mut kept, &["apiVersion", "kind"]);
    let mut meta = pick(
        pod.get("metadata"),
        &["name", "namespace", "uid", "labels", "resourceVersion"],
    );
    let annotation = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(REDIRECTION));
    if let Some(value) = annotation {
        let mut annotations = Map::new();
        annotations.insert(REDIRECTION.into(), value.clone());
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    kept.insert("metadata".into(), Value::Object(meta));
    let spec = pick(pod.get("spec"), &["serviceAccountName", "nodeName"]);
    kept.insert("spec".into(), Value::Object(spec));
    let mut status = pick(pod.get("status"), &["podIP", "podIPs", "phase"]);
    let conditions = pod.get("status").and_then(|s| s.get("conditions"));
    if let Some(Value::Array(conditions)) = conditions {
        let ready: Vec<Value> = conditions
            .iter()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            .cloned()
            .collect();
        status.insert("conditions".into(), Value::Array(ready));
    }
    kept.insert("status".into(), Value::Object(status));
    kept
}

/// The `keys` of the mapping `from` (absent ones skipped).
fn pick(from: Option<&Value>, keys: &[&str]) -> Map<String, Value> {
    let mut kept = Map::new();
    if let Some(Value::Object(from)) = from {
        copy(from, &mut kept, keys);
    }
    kept
}

fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, keys: &[&str]) {
    for key in keys {
        if let Some(value) = from.get(*key) {
            to.insert((*key).to_owned(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_keep_identity_labels_redirection_ips_and_readiness_only() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "a"},
                "annotations": {REDIRECTION: "enabled", "other": "x", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"kind": "ReplicaSet"}]
            },
            "spec": {"serviceAccountName": "sa", "nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {
                "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}], "phase": "Running",
                "hostIP": "1.2.3.4",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]
            }
        });
        assert_eq!(
            strip("Pod", pod),
            Some(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                    "labels": {"app": "a"},
                    "annotations": {REDIRECTION: "enabled"}
                },
                "spec": {"serviceAccountName": "sa", "nodeName": "n1"},
                "status": {
                    "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}], "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}]
                }
            }))
        );
    }

    #[test]
    fn namespaces_keep_name_and_labels() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "a", "labels": {"l": "v"}, "uid": "u", "managedFields": []},
            "spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(
            strip("Namespace", ns),
            Some(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "a", "labels": {"l": "v"}}}))
        );
    }

    #[test]
    fn other_kinds_lose_managed_fields_and_last_applied_only() {
        let route = json!({"kind": "HTTPRoute", "metadata": {"name": "r",
            "managedFields": [{}], "annotations": {LAST_APPLIED: "{}", "keep": "me"}},
            "spec": {"rules": []}});
        assert_eq!(
            strip("HTTPRoute", route),
            Some(json!({"kind": "HTTPRoute", "metadata": {"name": "r",
                "annotations": {"keep": "me"}}, "spec": {"rules": []}}))
        );
    }

    #[test]
    fn only_tls_secrets_are_kept() {
        let tls =
            json!({"kind": "Secret", "type": TLS_SECRET, "metadata": {"name": "c"}, "data": {}});
        assert!(strip("Secret", tls).is_some());
        let token = json!({"kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "t"}, "data": {"token": "c2VjcmV0"}});
        assert_eq!(strip("Secret", token), None);
        assert_eq!(
            strip("Secret", json!({"kind": "Secret"})),
            None,
            "Opaque by default"
        );
    }
}
