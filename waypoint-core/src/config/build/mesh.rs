//! Which endpoints are in the ambient mesh, and which identity their ztunnel must prove.
//!
//! Istio puts a workload in the ambient mesh when its namespace is labelled
//! `istio.io/dataplane-mode: ambient`, unless the pod itself says `istio.io/dataplane-mode:
//! none` (a pod label `ambient` opts a pod in on its own). What istiod trusts in the end is
//! the pod annotation `ambient.istio.io/redirection: enabled`, which istio-cni sets once it has
//! really captured the pod: a pod carrying it is in the mesh whatever the labels say (the
//! labels are intent; the annotation is the fact). The waypoint reads the `Namespace` and
//! `Pod` objects among the manifests (kept verbatim as [`RawObject`]s) and, for clusters whose
//! namespaces are not in the manifests, a list of ambient namespaces from its own flags.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use crate::config::EndpointTransport;
use crate::config::resources::{RawObject, Sourced};
use crate::identity::SpiffeId;
use crate::tls::ExpectedIdentity;

/// The label Istio reads on namespaces and pods to enrol them in the ambient mesh.
pub(crate) const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";

/// The pod annotation istio-cni sets (`enabled`) once the pod's traffic is captured.
pub(super) const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";

/// Mesh settings the manifests do not carry (the waypoint's flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshOptions {
    /// The mesh's trust domain, for the identities endpoints must prove (`cluster.local`).
    pub trust_domain: String,
    /// Namespaces in the ambient mesh even without a labelled `Namespace` manifest.
    pub ambient_namespaces: BTreeSet<String>,
    /// This waypoint's Gateway (`namespace`, `name`), from `--gateway`. When set, only what is
    /// bound to it is served (see [`crate::config::binding`]); when unset, every Service.
    /// Its namespace is also where DestinationRules are looked for first.
    pub gateway: Option<(String, String)>,
    /// Istio's root namespace (`istio-system`): mesh-wide DestinationRules live there.
    pub root_namespace: String,
    /// The DNS suffix of Services (`cluster.local`): a DestinationRule's short host `reviews`
    /// is `reviews.<namespace>.svc.<cluster domain>`.
    pub cluster_domain: String,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            trust_domain: "cluster.local".to_owned(),
            ambient_namespaces: BTreeSet::new(),
            gateway: None,
            root_namespace: "istio-system".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// The mesh membership facts of one config build, indexed once.
pub(crate) struct MeshIndex<'a> {
    opts: &'a MeshOptions,
    ambient: HashSet<&'a str>,
    pods: HashMap<(&'a str, &'a str), &'a RawObject>,
}

impl<'a> MeshIndex<'a> {
    pub(crate) fn new(opts: &'a MeshOptions, others: &'a [Sourced<RawObject>]) -> Self {
        let mut ambient = HashSet::new();
        let mut pods = HashMap::new();
        for obj in others.iter().map(|o| &o.resource) {
            if obj.group() != "" {
                continue;
            }
            match obj.kind.as_str() {
                // Namespaces are cluster-scoped: the name is the namespace.
                "Namespace" if dataplane_mode(obj) == Some("ambient") => {
                    ambient.insert(obj.metadata.name.as_str());
                }
                "Pod" => {
                    pods.insert((obj.metadata.namespace(), obj.metadata.name.as_str()), obj);
                }
                _ => {}
            }
        }
        MeshIndex {
            opts,
            ambient,
            pods,
        }
    }

    /// The transport for an endpoint of an EndpointSlice in `slice_ns` whose `targetRef` is
    /// `target`.
    pub(super) fn transport(&self, slice_ns: &str, target: Option<&Value>) -> EndpointTransport {
        let pod_ref = target.filter(|t| t.get("kind").and_then(Value::as_str) == Some("Pod"));
        let pod_ns = pod_ref
            .and_then(|t| t.get("namespace"))
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or(slice_ns);
        let pod = pod_ref
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .and_then(|name| self.pods.get(&(pod_ns, name)).copied());
        self.pod_transport(pod_ns, slice_ns, pod)
    }

    /// The transport for a pod of `pod_ns` (the object, when known), reached through an
    /// EndpointSlice of `slice_ns` (the pod's own namespace when addressed directly).
    pub(crate) fn pod_transport(
        &self,
        pod_ns: &str,
        slice_ns: &str,
        pod: Option<&RawObject>,
    ) -> EndpointTransport {
        let captured = pod.is_some_and(|p| {
            p.metadata
                .annotations
                .get(REDIRECTION_ANNOTATION)
                .map(String::as_str)
                == Some("enabled")
        });
        let in_mesh = match pod.and_then(dataplane_mode) {
            _ if captured => true,
            Some("none") => false,
            Some("ambient") => true,
            _ => [pod_ns, slice_ns]
                .iter()
                .any(|ns| self.ambient.contains(ns) || self.opts.ambient_namespaces.contains(*ns)),
        };
        if !in_mesh {
            return EndpointTransport::Plain;
        }
        let exact = pod.and_then(|pod| {
            SpiffeId::new(&self.opts.trust_domain, pod_ns, service_account(pod)).ok()
        });
        let identity = match exact {
            Some(id) => ExpectedIdentity::Exact(id),
            None => ExpectedIdentity::Namespace {
                trust_domain: self.opts.trust_domain.clone(),
                namespace: pod_ns.to_owned(),
            },
        };
        EndpointTransport::Hbone { identity }
    }
}

/// A pod's `spec.serviceAccountName`; Kubernetes runs a pod without one as `default`.
pub(crate) fn service_account(pod: &RawObject) -> &str {
    pod.body
        .get("spec")
        .and_then(|s| s.get("serviceAccountName"))
        .and_then(Value::as_str)
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default")
}

fn dataplane_mode(obj: &RawObject) -> Option<&str> {
    obj.metadata
        .labels
        .get(DATAPLANE_MODE_LABEL)
        .map(String::as_str)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::config::resources::ObjectMeta;
    use serde_json::json;

    fn raw(
        kind: &str,
        ns: Option<&str>,
        name: &str,
        mode: Option<&str>,
        body: Value,
    ) -> Sourced<RawObject> {
        let mut metadata = ObjectMeta {
            name: name.into(),
            namespace: ns.map(Into::into),
            ..Default::default()
        };
        if let Some(mode) = mode {
            metadata
                .labels
                .insert(DATAPLANE_MODE_LABEL.into(), mode.into());
        }
        Sourced {
            source: "test".into(),
            resource: RawObject {
                api_version: "v1".into(),
                kind: kind.into(),
                metadata,
                body,
            },
        }
    }

    fn pod_ref(ns: &str, name: &str) -> Value {
        json!({"kind": "Pod", "namespace": ns, "name": name})
    }

    fn exact(ns: &str, sa: &str) -> EndpointTransport {
        EndpointTransport::Hbone {
            identity: ExpectedIdentity::Exact(SpiffeId::new("td.example", ns, sa).unwrap()),
        }
    }

    #[test]
    fn membership_and_identity() {
        let others = vec![
            raw("Namespace", None, "shop", Some("ambient"), json!({})),
            raw("Namespace", None, "legacy", Some("none"), json!({})),
            raw(
                "Pod",
                Some("shop"),
                "cart-1",
                None,
                json!({"spec": {"serviceAccountName": "cart"}}),
            ),
            raw("Pod", Some("shop"), "plain-1", None, json!({"spec": {}})),
            raw(
                "Pod",
                Some("shop"),
                "out-1",
                Some("none"),
                json!({"spec": {}}),
            ),
            raw(
                "Pod",
                Some("legacy"),
                "in-1",
                Some("ambient"),
                json!({"spec": {"serviceAccountName": "x"}}),
            ),
        ];
        let mut opts = MeshOptions {
            trust_domain: "td.example".into(),
            ..Default::default()
        };
        opts.ambient_namespaces.insert("flagged".into());
        let index = MeshIndex::new(&opts, &others);

        assert_eq!(
            index.transport("shop", Some(&pod_ref("shop", "cart-1"))),
            exact("shop", "cart")
        );
        // No serviceAccountName: Kubernetes runs the pod as `default`.
        assert_eq!(
            index.transport("shop", Some(&pod_ref("shop", "plain-1"))),
            exact("shop", "default")
        );
        // Pod not among the manifests, or no targetRef: any identity of the namespace.
        let ns_only = EndpointTransport::Hbone {
            identity: ExpectedIdentity::Namespace {
                trust_domain: "td.example".into(),
                namespace: "shop".into(),
            },
        };
        assert_eq!(
            index.transport("shop", Some(&pod_ref("shop", "gone"))),
            ns_only
        );
        assert_eq!(index.transport("shop", None), ns_only);
        assert_eq!(
            index.transport("shop", Some(&json!({"kind": "Node", "name": "cart-1"}))),
            ns_only
        );
        // Pod labels override the namespace either way.
        assert_eq!(
            index.transport("shop", Some(&pod_ref("shop", "out-1"))),
            EndpointTransport::Plain
        );
        assert_eq!(
            index.transport("legacy", Some(&pod_ref("legacy", "in-1"))),
            exact("legacy", "x")
        );
        assert_eq!(index.transport("legacy", None), EndpointTransport::Plain);
        // Namespaces named by flag, and namespaces nobody enrolled.
        assert!(matches!(
            index.transport("flagged", None),
            EndpointTransport::Hbone { .. }
        ));
        assert_eq!(index.transport("other", None), EndpointTransport::Plain);
    }

    #[test]
    fn a_pod_istio_cni_captured_is_in_the_mesh_whatever_its_labels_say() {
        let mut captured = raw(
            "Pod",
            Some("plain"),
            "db-1",
            None,
            json!({"spec": {"serviceAccountName": "db"}}),
        );
        captured
            .resource
            .metadata
            .annotations
            .insert(REDIRECTION_ANNOTATION.into(), "enabled".into());
        let mut disabled = raw("Pod", Some("plain"), "db-2", None, json!({"spec": {}}));
        disabled
            .resource
            .metadata
            .annotations
            .insert(REDIRECTION_ANNOTATION.into(), "disabled".into());
        let opts = MeshOptions {
            trust_domain: "td.example".into(),
            ..Default::default()
        };
        let others = vec![captured, disabled];
        let index = MeshIndex::new(&opts, &others);
        assert_eq!(
            index.transport("plain", Some(&pod_ref("plain", "db-1"))),
            exact("plain", "db")
        );
        assert_eq!(
            index.transport("plain", Some(&pod_ref("plain", "db-2"))),
            EndpointTransport::Plain
        );
    }
}
