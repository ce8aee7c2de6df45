//! What the API server's own controllers do to stored objects, approximated: the ClusterIP
//! allocator of Services, and the garbage collector of owned objects. Both run synchronously,
//! inside the write that triggers them; a real cluster runs them asynchronously.

use serde_json::{Value, json};

use super::{Resource, Store};

impl Store {
    /// The garbage collector, approximated: every object whose `ownerReferences` name `uid` is
    /// deleted at once (and so on down), each with its DELETED event. A real cluster does
    /// this later and in the background, honours `blockOwnerDeletion` and propagation
    /// policies, and never lets a namespaced owner own a cluster-scoped object; none of that
    /// is emulated.
    pub(super) fn collect_dependents(&mut self, uid: &str) {
        let owned_by = |object: &Value| {
            object["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|o| o["uid"] == uid))
        };
        let mut dependents = Vec::new();
        for ((group, plural), objects) in &self.objects {
            for ((ns, name), object) in objects {
                if owned_by(object) {
                    let resource = Resource {
                        group: group.clone(),
                        plural: plural.clone(),
                        kind: object["kind"].as_str().map(str::to_owned),
                        namespaced: !ns.is_empty(),
                    };
                    dependents.push((resource, ns.clone(), name.clone()));
                }
            }
        }
        for (resource, ns, name) in dependents {
            // Already gone (collected through another owner) is fine.
            let _ = self.delete(&resource, Some(&ns), &name);
        }
    }

    /// A Service's ClusterIP, as the API server allocates it on create: `10.96.x.y` in
    /// creation order, unless the Service names one, is headless (`None`) or an ExternalName.
    pub(super) fn allocate_cluster_ip(&mut self, service: &mut Value) {
        let spec = &service["spec"];
        let named = spec["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty());
        if named || spec["type"] == "ExternalName" || !spec.is_object() {
            return;
        }
        self.services_allocated += 1;
        let n = self.services_allocated;
        let ip = format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 1);
        service["spec"]["clusterIP"] = json!(ip);
        service["spec"]["clusterIPs"] = json!([ip]);
    }
}

pub(super) fn is_service(r: &Resource) -> bool {
    r.group.is_empty() && r.plural == "services"
}

/// A Service's ClusterIP is immutable: a replace that leaves it out keeps the allocated one.
pub(super) fn keep_cluster_ips(stored: &Value, object: &mut Value) {
    if !object["spec"].is_object() {
        return;
    }
    for field in ["clusterIP", "clusterIPs"] {
        let given = object["spec"]
            .get(field)
            .is_some_and(|v| !v.is_null() && v != "");
        if let Some(kept) = stored["spec"].get(field).filter(|_| !given) {
            object["spec"][field] = kept.clone();
        }
    }
}
