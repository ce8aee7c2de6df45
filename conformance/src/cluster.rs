//! What a Kubernetes cluster adds to applied manifests, done by hand: placeholders
//! substituted, ClusterIPs assigned to Services, Deployments turned into pods with loopback
//! addresses, EndpointSlices listing the ready pods, and Gateway addresses written to
//! `status.addresses` (the controller's job). The result is the config the waypoint reads and
//! the list of echo pods the harness must run.
//!
//! ClusterState are stable for a name across cases, as they would be in a cluster that keeps its
//! base manifests: a Service keeps its ClusterIP, a pod its IP.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value, json};

use waypoint_core::telemetry::access_log::rfc3339_millis;

use crate::workload::{EchoSetup, echo_setup};

/// The GatewayClass the manifests' `{GATEWAY_CLASS_NAME}` placeholder becomes.
pub const GATEWAY_CLASS: &str = "waypoint";

/// An echo pod the harness runs for a Deployment replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pod {
    /// `<deployment>-<index>`: upstream judges backends by this prefix.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The Deployment it belongs to (reported as the echo server's `service`).
    pub deployment: String,
    /// Its loopback address.
    pub ip: IpAddr,
    /// Its labels (Services select on them).
    pub labels: BTreeMap<String, String>,
    /// Ports it serves, and whether each speaks gRPC.
    pub ports: Vec<(u16, bool)>,
    /// TCP mode and TLS, as its container's environment asks (or why that cannot be done).
    pub echo: Result<EchoSetup, String>,
    /// Its ServiceAccount (the template's `serviceAccountName`, else `default`).
    pub service_account: String,
}

impl Pod {
    /// The Pod object the cluster would hold: what the waypoint reads of a pod (labels,
    /// ServiceAccount, IPs), so that it knows the pods whose traffic may be addressed to it.
    fn object(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
            },
            "spec": {"serviceAccountName": self.service_account},
            "status": {
                "phase": "Running",
                "podIP": self.ip.to_string(),
                "podIPs": [{"ip": self.ip.to_string()}],
            },
        })
    }
}

/// The mesh's waypoint `namespace/name`: the Gateway the mesh namespaces' pods name.
pub const MESH_WAYPOINT: (&str, &str) = ("gateway-conformance-mesh", "waypoint");

/// The namespaces of upstream's mesh manifests: their clients and servers are in the mesh.
const MESH_NAMESPACES: [&str; 2] = [
    "gateway-conformance-mesh",
    "gateway-conformance-mesh-consumer",
];

/// The waypoint of the mesh tests, declared as Istio's own mesh conformance runs declare theirs:
/// a Gateway of our class for `all` traffic (`istio.io/waypoint-for`), sandwiched behind
/// ztunnel on the PROXY listener 15088, admitting every namespace. Services and pods addressed
/// directly both reach it: ztunnel sends a pod-IP request here with the pod IP as destination.
/// The harness runs one waypoint without `--gateway` for the whole suite, which then stands in
/// for every Gateway of the config, this one included (see `waypoint_core::config::binding`).
pub fn mesh_waypoint() -> Value {
    let (namespace, name) = MESH_WAYPOINT;
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"istio.io/waypoint-for": "all"},
            "annotations": {"ambient.istio.io/waypoint-inbound-binding": "PROXY/15088"},
        },
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [{
                "name": "proxy",
                "port": 15088,
                "protocol": "istio.io/PROXY",
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }],
        },
    })
}

/// Labels a mesh namespace to use [`MESH_WAYPOINT`], as an ambient mesh enrols a namespace.
fn enrol_in_mesh(namespace: &mut Value) {
    if !MESH_NAMESPACES.contains(&meta(namespace, "name")) {
        return;
    }
    let (wp_ns, wp_name) = MESH_WAYPOINT;
    merge_patch(
        &mut namespace["metadata"]["labels"],
        &json!({"istio.io/use-waypoint": wp_name, "istio.io/use-waypoint-namespace": wp_ns}),
    );
}

/// What the cluster remembers across applies: addresses that stay the same for a name, and
/// each object's spec generation.
#[derive(Debug, Default)]
pub struct ClusterState {
    cluster_ips: HashMap<(String, String), Ipv4Addr>,
    gateway_ips: HashMap<(String, String), Ipv4Addr>,
    pod_ips: HashMap<(String, String), Ipv4Addr>,
    /// (kind, namespace, name) → (the spec last seen, its generation).
    generations: HashMap<(String, String, String), (Value, i64)>,
    /// (kind, namespace, name) → when it was first applied (`creationTimestamp`).
    created: HashMap<(String, String, String), String>,
}

impl ClusterState {
    /// Sets `metadata.generation` as the API server does: 1 for a new object, one more each
    /// time its spec changes.
    fn stamp_generation(&mut self, key: &(String, String, String), object: &mut Value) {
        let spec = object["spec"].clone();
        let generation = match self.generations.get(key) {
            Some((seen, generation)) if *seen == spec => *generation,
            Some((_, generation)) => generation + 1,
            None => 1,
        };
        self.generations.insert(key.clone(), (spec, generation));
        object["metadata"]["generation"] = json!(generation);
        // As the API server does, with its one-second resolution: route precedence falls
        // back to the oldest route, so a later object must look younger.
        if object["metadata"]["creationTimestamp"].is_null() {
            let created = self.created.entry(key.clone()).or_insert_with(|| {
                let millis = rfc3339_millis(std::time::SystemTime::now());
                // `2026-08-01T12:34:56.789Z` → `2026-08-01T12:34:56Z`.
                match millis.split_once('.') {
                    Some((seconds, _)) => format!("{seconds}Z"),
                    None => millis,
                }
            });
            object["metadata"]["creationTimestamp"] = json!(created);
        }
    }

    fn next(
        map: &mut HashMap<(String, String), Ipv4Addr>,
        key: (String, String),
        base: [u8; 2],
    ) -> Ipv4Addr {
        let n = map.len() as u32 + 1;
        *map.entry(key).or_insert_with(|| {
            Ipv4Addr::new(base[0], base[1], (n / 250) as u8, (n % 250) as u8 + 1)
        })
    }

    /// The ClusterIP of Service `namespace/name` (10.96.0.0/16: never dialled, only named in
    /// PROXY headers).
    pub fn cluster_ip(&mut self, namespace: &str, name: &str) -> Ipv4Addr {
        Self::next(
            &mut self.cluster_ips,
            (namespace.into(), name.into()),
            [10, 96],
        )
    }

    /// The address of Gateway `namespace/name` (10.97.0.0/16, likewise never dialled).
    pub fn gateway_ip(&mut self, namespace: &str, name: &str) -> Ipv4Addr {
        Self::next(
            &mut self.gateway_ips,
            (namespace.into(), name.into()),
            [10, 97],
        )
    }

    /// The address of pod `namespace/name`: loopback (127.10.0.0/16), where its echo server
    /// listens.
    pub fn pod_ip(&mut self, namespace: &str, name: &str) -> Ipv4Addr {
        Self::next(
            &mut self.pod_ips,
            (namespace.into(), name.into()),
            [127, 10],
        )
    }
}

/// The cluster state after an apply.
#[derive(Debug, Default)]
pub struct Cluster {
    /// Every object the waypoint reads, in apply order.
    pub objects: Vec<Value>,
    /// Echo pods to run.
    pub pods: Vec<Pod>,
    /// ClusterIPs by `(namespace, name)` of Service.
    pub services: BTreeMap<(String, String), IpAddr>,
    /// Gateway addresses by `(namespace, name)`.
    pub gateways: BTreeMap<(String, String), IpAddr>,
}

fn meta<'v>(o: &'v Value, field: &str) -> &'v str {
    o["metadata"][field].as_str().unwrap_or_default()
}

fn namespace(o: &Value) -> &str {
    match meta(o, "namespace") {
        "" => "default",
        ns => ns,
    }
}

/// Applies an RFC 7386 JSON merge patch: objects merge key by key, `null` removes a key,
/// anything else (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge_patch(&mut target[key.as_str()], value);
        }
    }
}

/// The `Kind namespace/name` of an object.
pub fn object_ref(o: &Value) -> String {
    format!(
        "{} {}/{}",
        o["kind"].as_str().unwrap_or_default(),
        namespace(o),
        meta(o, "name")
    )
}

/// `objects` without those named (`Kind namespace/name`), as after `kubectl delete`.
pub fn without(objects: &[Value], deleted: &[String]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| !deleted.contains(&object_ref(o)))
        .cloned()
        .collect()
}

/// Parses multi-document YAML into objects, substituting placeholders first (our class name,
/// and our controller name for manifests that create a GatewayClass of their own); empty
/// documents are dropped.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    let text = text.replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS).replace(
        "{GATEWAY_CONTROLLER_NAME}",
        crate::apiserver::CONTROLLER_NAME,
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

impl Cluster {
    /// Applies `objects` as Kubernetes would: later objects of the same kind and name replace
    /// earlier ones, then addresses, pods and EndpointSlices are derived.
    pub fn apply(objects: Vec<Value>, state: &mut ClusterState) -> Cluster {
        let mut by_key: Vec<((String, String, String), Value)> = Vec::new();
        for o in objects {
            let key = (
                o["kind"].as_str().unwrap_or_default().to_owned(),
                namespace(&o).to_owned(),
                meta(&o, "name").to_owned(),
            );
            match by_key.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => *existing = o,
                None => by_key.push((key, o)),
            }
        }
        let mut cluster = Cluster::default();
        for (_, o) in &by_key {
            if o["kind"] == "Deployment" {
                cluster.pods.extend(pods_of(o, state));
            }
        }
        // A pod serves every numeric target port of the Services that select it (the echo
        // server answers the same on each).
        for (_, o) in by_key.iter().filter(|(k, _)| k.0 == "Service") {
            add_target_ports(o, &mut cluster.pods);
        }
        for (key, mut o) in by_key {
            state.stamp_generation(&key, &mut o);
            match o["kind"].as_str().unwrap_or_default() {
                "Service" => {
                    let (ns, name) = (namespace(&o).to_owned(), meta(&o, "name").to_owned());
                    let headless = o["spec"]["clusterIP"] == "None";
                    let external = o["spec"]["type"] == "ExternalName";
                    if !headless && !external && o["spec"]["clusterIP"].is_null() {
                        let ip = state.cluster_ip(&ns, &name);
                        o["spec"]["clusterIP"] = json!(ip.to_string());
                    }
                    if let Some(ip) = o["spec"]["clusterIP"].as_str().and_then(|s| s.parse().ok()) {
                        cluster.services.insert((ns, name), ip);
                    }
                    if let Some(slice) = endpoint_slice(&o, &cluster.pods) {
                        cluster.objects.push(o);
                        cluster.objects.push(slice);
                        continue;
                    }
                }
                "Gateway" => {
                    let (ns, name) = (namespace(&o).to_owned(), meta(&o, "name").to_owned());
                    let ip = state.gateway_ip(&ns, &name);
                    o["status"] =
                        json!({"addresses": [{"type": "IPAddress", "value": ip.to_string()}]});
                    cluster.gateways.insert((ns, name), IpAddr::V4(ip));
                }
                "Namespace" => enrol_in_mesh(&mut o),
                // Workloads are run by the harness; the waypoint reads their pods (below), not
                // them. Secrets are read: HTTPS listeners take their certificates from them.
                "Deployment" | "ConfigMap" => continue,
                _ => {}
            }
            cluster.objects.push(o);
        }
        cluster.objects.extend(cluster.pods.iter().map(Pod::object));
        cluster
    }

    /// Fills hand-made EndpointSlices as a test does: slice `namespace/name` → the addresses
    /// of Deployment `namespace/name`'s pods (IPv4 slices only: the pods have no IPv6).
    pub fn fill_endpoints(&mut self, slices: &BTreeMap<String, String>) {
        for (slice, deployment) in slices {
            let ips: Vec<Value> = self
                .pods
                .iter()
                .filter(|p| format!("{}/{}", p.namespace, p.deployment) == *deployment)
                .map(|p| json!({"addresses": [p.ip.to_string()], "conditions": {"ready": true}}))
                .collect();
            for o in self.objects.iter_mut().filter(|o| {
                o["kind"] == "EndpointSlice"
                    && format!("{}/{}", namespace(o), meta(o, "name")) == *slice
            }) {
                if o["addressType"] == "IPv4" {
                    o["endpoints"] = json!(ips);
                }
            }
        }
    }

    /// The config file the waypoint reads: one JSON object per line.
    pub fn config_json(&self) -> String {
        let mut out = String::new();
        for o in &self.objects {
            out.push_str(&o.to_string());
            out.push('\n');
        }
        out
    }

    /// The ClusterIP a client reaches by the DNS name `host` from `client_ns` (`svc`,
    /// `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`).
    pub fn resolve(&self, host: &str, client_ns: &str) -> Option<IpAddr> {
        let host = host
            .trim_end_matches(".cluster.local")
            .trim_end_matches(".svc");
        let (name, ns) = host.split_once('.').unwrap_or((host, client_ns));
        self.services
            .get(&(ns.to_owned(), name.to_owned()))
            .copied()
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The pods of a Deployment, with the ports their echo servers listen on: the container
/// ports, `--port=`/`--grpc=` arguments of the mesh echo image, or 3000 (echo-basic's port).
fn pods_of(deployment: &Value, state: &mut ClusterState) -> Vec<Pod> {
    let ns = namespace(deployment);
    let name = meta(deployment, "name");
    let template = &deployment["spec"]["template"];
    let replicas = deployment["spec"]["replicas"]
        .as_u64()
        .unwrap_or(1)
        .clamp(1, 8);
    let service_account = template["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let mut ports: Vec<(u16, bool)> = Vec::new();
    let mut echo = None;
    for container in template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let setup = echo_setup(ns, container, &template["spec"])
            .map_err(|e| format!("Deployment {ns}/{name}: {e}"));
        let grpc_env = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "GRPC_ECHO_SERVER");
        for arg in container["args"].as_array().into_iter().flatten() {
            let arg = arg.as_str().unwrap_or_default();
            for (flag, grpc) in [("--port=", false), ("--grpc=", true)] {
                if let Some(port) = arg.strip_prefix(flag).and_then(|p| p.parse().ok()) {
                    ports.push((port, grpc));
                }
            }
        }
        for p in container["ports"].as_array().into_iter().flatten() {
            if let Some(port) = p["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
            {
                ports.push((port, grpc_env));
            }
        }
        if ports.is_empty() {
            ports.push((3000, grpc_env));
        }
        if let Ok(s) = &setup {
            // Upstream's server listens on these whether or not a Service names them.
            ports.extend(s.tcp_port.map(|p| (p, false)));
            ports.extend(s.tls.as_ref().map(|t| (t.port, false)));
        }
        echo.get_or_insert(setup);
    }
    ports.sort();
    ports.dedup_by_key(|p| p.0);
    (0..replicas)
        .map(|i| {
            let pod_name = format!("{name}-{i}");
            Pod {
                ip: IpAddr::V4(state.pod_ip(ns, &pod_name)),
                name: pod_name,
                namespace: ns.to_owned(),
                deployment: name.to_owned(),
                labels: labels(&template["metadata"]["labels"]),
                ports: ports.clone(),
                echo: echo.clone().unwrap_or(Ok(EchoSetup::default())),
                service_account: service_account.to_owned(),
            }
        })
        .collect()
}

/// Adds the Service's numeric target ports to the pods it selects.
fn add_target_ports(service: &Value, pods: &mut [Pod]) {
    let ns = namespace(service);
    let selector = labels(&service["spec"]["selector"]);
    if selector.is_empty() {
        return;
    }
    let targets: Vec<u16> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["targetPort"].as_u64().or_else(|| p["port"].as_u64()))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    for pod in pods
        .iter_mut()
        .filter(|p| p.namespace == ns && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
    {
        let grpc = !pod.ports.is_empty() && pod.ports.iter().all(|p| p.1);
        for port in &targets {
            if !pod.ports.iter().any(|p| p.0 == *port) {
                pod.ports.push((*port, grpc));
            }
        }
        pod.ports.sort();
    }
}

/// The EndpointSlice of a Service with a selector: every pod whose labels match, on the
/// Service's target ports.
fn endpoint_slice(service: &Value, pods: &[Pod]) -> Option<Value> {
    let ns = namespace(service);
    let name = meta(service, "name");
    let selector = labels(&service["spec"]["selector"]);
    if selector.is_empty() {
        return None;
    }
    let selected: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.namespace == ns && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .collect();
    let ports: Vec<Value> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let target = p["targetPort"].as_u64().or_else(|| p["port"].as_u64());
            let mut port =
                json!({"port": target, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
            if let Some(n) = p["name"].as_str() {
                port["name"] = json!(n);
            }
            if let Some(a) = p["appProtocol"].as_str() {
                port["appProtocol"] = json!(a);
            }
            port
        })
        .collect();
    let endpoints: Vec<Value> = selected
        .iter()
        .map(|p| {
            json!({
                "addresses": [p.ip.to_string()],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p.name},
            })
        })
        .collect();
    Some(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-slice"),
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: infra}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: infra}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: echo, env: [{name: GRPC_ECHO_SERVER, value: "1"}]}]
---
---
"#;

    #[test]
    fn derives_what_the_cluster_would() {
        let mut addresses = ClusterState::default();
        let cluster = Cluster::apply(parse_yaml(MANIFESTS).unwrap(), &mut addresses);
        assert_eq!(cluster.pods.len(), 2);
        assert_eq!(cluster.pods[0].name, "web-0");
        assert_eq!(cluster.pods[0].ports, vec![(3000, true)]);
        let gw = &cluster.objects[0];
        assert_eq!(gw["spec"]["gatewayClassName"], GATEWAY_CLASS);
        assert_eq!(gw["status"]["addresses"][0]["value"], "10.97.0.2");
        let slice = cluster
            .objects
            .iter()
            .find(|o| o["kind"] == "EndpointSlice")
            .unwrap();
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(slice["ports"][0]["port"], 3000);
        let ip = cluster.resolve("web.infra", "other").unwrap();
        assert_eq!(cluster.resolve("web", "infra"), Some(ip));
        assert_eq!(
            cluster.resolve("web.infra.svc.cluster.local", "x"),
            Some(ip)
        );
        assert_eq!(gw["metadata"]["generation"], 1);
        let created = gw["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            created.ends_with('Z') && !created.contains('.'),
            "{created}"
        );
        // Stable across applies; a changed spec bumps the generation.
        let mut changed = parse_yaml(MANIFESTS).unwrap();
        merge_patch(
            &mut changed[0],
            &json!({"spec": {"listeners": [{"name": "h", "port": 81, "protocol": "HTTP"}]}}),
        );
        assert_eq!(changed[0]["spec"]["gatewayClassName"], GATEWAY_CLASS);
        let again = Cluster::apply(changed, &mut addresses);
        assert_eq!(again.objects[0]["metadata"]["generation"], 2);
        assert_eq!(
            again.objects[0]["metadata"]["creationTimestamp"],
            created.as_str()
        );
        assert_eq!(again.resolve("web", "infra"), Some(ip));
        assert_eq!(again.pods[1].ip, cluster.pods[1].ip);
    }

    #[test]
    fn pods_are_in_the_config_and_mesh_namespaces_use_the_mesh_waypoint() {
        let mut manifests = parse_yaml(MANIFESTS).unwrap();
        manifests.extend(
            parse_yaml(
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: gateway-conformance-mesh-consumer}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: infra}\n",
            )
            .unwrap(),
        );
        manifests.push(mesh_waypoint());
        let cluster = Cluster::apply(manifests, &mut ClusterState::default());
        let find = |kind: &str, name: &str| {
            cluster
                .objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {kind} {name}"))
        };
        let pod = find("Pod", "web-1");
        assert_eq!(pod["metadata"]["namespace"], "infra");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        assert_eq!(pod["status"]["podIP"], cluster.pods[1].ip.to_string());
        let consumer = &find("Namespace", "gateway-conformance-mesh-consumer")["metadata"];
        assert_eq!(consumer["labels"]["istio.io/use-waypoint"], MESH_WAYPOINT.1);
        assert_eq!(
            consumer["labels"]["istio.io/use-waypoint-namespace"],
            MESH_WAYPOINT.0
        );
        assert!(find("Namespace", "infra")["metadata"]["labels"].is_null());
        let waypoint = find("Gateway", MESH_WAYPOINT.1);
        assert_eq!(
            waypoint["metadata"]["labels"]["istio.io/waypoint-for"],
            "all"
        );
        assert!(
            cluster
                .gateways
                .contains_key(&(MESH_WAYPOINT.0.to_owned(), MESH_WAYPOINT.1.to_owned()))
        );
    }
}
