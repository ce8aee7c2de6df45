//! The harness as API server: the cluster's objects are written to an in-process Kubernetes
//! API emulator that `waypoint run --kube` lists and watches, and the status the waypoint
//! writes back is read from there, as upstream's suite reads it from a real cluster.
//!
//! Each apply is a diff against the previous one, as `kubectl apply` and `kubectl delete`
//! would leave the cluster: changed objects are replaced, vanished ones deleted, untouched
//! ones left alone (so their `resourceVersion` and `generation` stay). Gateway addresses are
//! the deploying controller's to write: they go in with a status patch, beside the conditions
//! the waypoint writes.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use waypoint_kube_emulator::{Emulator, EmulatorOptions};

use crate::api_status::status_view;
use crate::cluster::{Cluster, GATEWAY_CLASS};

/// The controllerName the waypoint writes status under (its default).
pub const CONTROLLER_NAME: &str = "waypoint.dev/gateway-controller";

/// The bearer token the emulator demands, as a cluster demands a ServiceAccount's.
const TOKEN: &str = "conformance-harness-token";

/// `(apiVersion, kind, namespace, name)` of an object.
type Key = (String, String, String, String);

/// The emulated API server and what the harness last applied to it.
pub struct ApiServer {
    emulator: Emulator,
    applied: BTreeMap<Key, Value>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.emulator.url())
            .field("applied", &self.applied.len())
            .finish()
    }
}

fn key(o: &Value) -> Key {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let namespace = o["metadata"]["namespace"].as_str().unwrap_or("default");
    (
        text(&o["apiVersion"]),
        text(&o["kind"]),
        namespace.to_owned(),
        text(&o["metadata"]["name"]),
    )
}

/// What the harness writes: the object without status (not the writer's to set) and without
/// the generation and creation time the file mode stamps (the API server keeps its own).
fn spec_part(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = o["metadata"].as_object_mut() {
        meta.remove("generation");
        meta.remove("creationTimestamp");
    }
    o
}

impl ApiServer {
    /// Starts the emulator over TLS with a token, as a cluster's API server is reached, and
    /// writes the kubeconfig the waypoint reads to `kubeconfig`.
    pub async fn start(kubeconfig: &Path) -> Result<ApiServer, String> {
        let emulator = Emulator::start(EmulatorOptions {
            tls: true,
            token: Some(TOKEN.to_owned()),
            ..EmulatorOptions::default()
        })
        .await
        .map_err(|e| format!("starting the API emulator: {e}"))?;
        emulator
            .write_kubeconfig(kubeconfig)
            .map_err(|e| format!("writing the kubeconfig: {e}"))?;
        Ok(ApiServer {
            emulator,
            applied: BTreeMap::new(),
        })
    }

    /// The GatewayClass the manifests' Gateways name, owned by the waypoint's controller.
    pub fn gateway_class() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": CONTROLLER_NAME},
        })
    }

    /// Makes the API server hold exactly `cluster`'s objects; true when anything changed.
    pub fn sync(&mut self, cluster: &Cluster) -> Result<bool, String> {
        let mut wanted: BTreeMap<Key, &Value> = BTreeMap::new();
        for o in &cluster.objects {
            wanted.insert(key(o), o);
        }
        let mut changed = false;
        let gone: Vec<Key> = self
            .applied
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.applied.remove(&k);
            let (api_version, kind, ns, name) = &k;
            self.emulator
                .delete(api_version, kind, ns, name)
                .map_err(|e| format!("deleting {kind} {ns}/{name}: {e}"))?;
            changed = true;
        }
        for (k, o) in wanted {
            let spec = spec_part(o);
            if self.applied.get(&k) != Some(&spec) {
                self.emulator
                    .apply(spec.clone())
                    .map_err(|e| format!("applying {} {}/{}: {e}", k.1, k.2, k.3))?;
                self.applied.insert(k.clone(), spec);
                changed = true;
            }
            let addresses = &o["status"]["addresses"];
            if k.1 == "Gateway" && addresses.is_array() {
                let (api_version, kind, ns, name) = &k;
                let stored = self.emulator.get(api_version, kind, ns, name);
                if stored.is_some_and(|s| s["status"]["addresses"] != *addresses) {
                    self.emulator
                        .patch_status(
                            api_version,
                            kind,
                            ns,
                            name,
                            &json!({"addresses": addresses}),
                        )
                        .map_err(|e| {
                            format!("writing the addresses of Gateway {ns}/{name}: {e}")
                        })?;
                    changed = true;
                }
            }
            // A Pod's IPs are the kubelet's to write, after the Pod is created.
            if k.1 == "Pod" && o["status"].is_object() {
                let (api_version, kind, ns, name) = &k;
                let stored = self.emulator.get(api_version, kind, ns, name);
                if stored.is_some_and(|s| s["status"] != o["status"]) {
                    self.emulator
                        .patch_status(api_version, kind, ns, name, &o["status"])
                        .map_err(|e| format!("writing the status of Pod {ns}/{name}: {e}"))?;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// The status the waypoint wrote, as [`status::check`](crate::status::check) reads it.
    pub fn status(&self) -> Value {
        status_view(&self.emulator.objects(), CONTROLLER_NAME)
    }
}
