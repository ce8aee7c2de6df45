//! A Gateway → the objects that make it a running waypoint. Pure: no I/O, so every object is
//! checked against golden files (`kube/tests/golden/`).
//!
//! All objects are named after the Gateway (as Istio names its own waypoints, so
//! `kubectl get deploy <gateway>` finds it) and live in its namespace, except the
//! ClusterRoleBinding: the waypoint watches cluster-wide, so it binds the ServiceAccount to the
//! fixed ClusterRole [`PROXY_CLUSTER_ROLE`] that the install ships. A namespaced Gateway cannot
//! own a cluster-scoped object (the garbage collector refuses), so the binding carries labels
//! naming its Gateway and the controller deletes it itself.
//!
//! Namespaced objects get an ownerReference to the Gateway (`controller: true`): deleting the
//! Gateway deletes them, even when the controller is down.

use serde_json::{Map, Value, json};

use super::mode::{HBONE_PORT, Mode, Refusal, check_listeners, mode_of};
use super::options::{
    CPU_LIMIT_ANNOTATION, CPU_REQUEST_ANNOTATION, MEMORY_LIMIT_ANNOTATION,
    MEMORY_REQUEST_ANNOTATION, REPLICAS_ANNOTATION, RenderOptions, sizing,
};
use super::{CONTROLLER_LABEL, GATEWAY_NAMESPACE_LABEL, MANAGED_BY, MANAGED_BY_LABEL};

/// The Gateway API's label naming a waypoint pod's Gateway (istiod finds the pods by it).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The Gateway API's label naming a pod's GatewayClass.
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
/// The ClusterRole every provisioned waypoint is bound to (shipped by the install).
pub const PROXY_CLUSTER_ROLE: &str = "waypoint-proxy";
/// The admin port: `/healthz/ready` for the kubelet, as Istio's 15021.
pub const STATUS_PORT: u16 = 15021;
/// The projected token istiod's CA accepts.
const TOKEN_AUDIENCE: &str = "istio-ca";

/// What one Gateway needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Provision {
    /// How ztunnel reaches it.
    pub mode: Mode,
    /// ServiceAccount, Service, Deployment (in that order: apply order).
    pub namespaced: Vec<Value>,
    /// The ClusterRoleBinding.
    pub cluster: Vec<Value>,
}

/// The name of everything provisioned for `gateway` (and of its Service, whose hostname we
/// publish).
pub fn object_name(gateway: &str) -> &str {
    gateway
}

/// The ClusterRoleBinding of Gateway `namespace/name`: namespaces have no dots, so the first
/// dot after the prefix splits the two unambiguously.
pub fn cluster_binding_name(namespace: &str, name: &str) -> String {
    format!("{PROXY_CLUSTER_ROLE}.{namespace}.{name}")
}

/// Our controller name as a label value (`/` is not allowed there).
pub fn controller_label_value(options: &RenderOptions) -> String {
    let mut value: String = options.controller.as_str().replace('/', ".");
    value.truncate(63);
    value
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// The objects for `gateway` of `class`, or why it cannot be provisioned.
pub fn render(
    gateway: &Value,
    class: Option<&Value>,
    options: &RenderOptions,
) -> Result<Provision, Refusal> {
    let meta = |field: &str| {
        gateway
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
    };
    let (Some(namespace), Some(name), Some(uid)) = (meta("namespace"), meta("name"), meta("uid"))
    else {
        return Err(invalid(
            "the Gateway has no metadata.namespace, name or uid",
        ));
    };
    if name.len() > 63 {
        return Err(invalid(&format!(
            "metadata.name {name:?} is longer than 63 characters: a Service cannot be named after it"
        )));
    }
    let class_name = gateway
        .pointer("/spec/gatewayClassName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mode = mode_of(gateway, class)?;
    check_listeners(gateway, mode)?;
    let empty = Map::new();
    let infrastructure = |field: &str| {
        gateway
            .pointer(&format!("/spec/infrastructure/{field}"))
            .and_then(Value::as_object)
            .unwrap_or(&empty)
    };
    if gateway
        .pointer("/spec/infrastructure/parametersRef")
        .is_some()
    {
        // Not read yet: saying so beats provisioning with settings the operator did not ask for.
        return Err(Refusal {
            reason: "InvalidParameters",
            message: format!(
                "spec.infrastructure.parametersRef is not supported by this controller; set replicas and resources with spec.infrastructure.annotations ({REPLICAS_ANNOTATION}, {CPU_REQUEST_ANNOTATION}, {MEMORY_REQUEST_ANNOTATION}, {CPU_LIMIT_ANNOTATION}, {MEMORY_LIMIT_ANNOTATION})"
            ),
        });
    }
    let (replicas, resources) = sizing(infrastructure("annotations"), options)?;

    let object = object_name(name);
    let mut labels = infrastructure("labels").clone();
    labels.insert(GATEWAY_NAME_LABEL.into(), json!(name));
    labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
    labels.insert(
        CONTROLLER_LABEL.into(),
        json!(controller_label_value(options)),
    );
    let annotations = infrastructure("annotations").clone();
    let metadata = json!({
        "name": object,
        "namespace": namespace,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [{
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "name": name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }],
    });
    let service_account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata,
    });
    let mut service_labels = labels.clone();
    // The waypoint's own Service must never be bound to a waypoint (a namespace-wide
    // `istio.io/use-waypoint` would otherwise send the waypoint's traffic to itself).
    service_labels.insert("istio.io/use-waypoint".into(), json!("none"));
    let mut service_meta = metadata.clone();
    service_meta["labels"] = Value::Object(service_labels);
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_meta,
        "spec": {
            "type": "ClusterIP",
            "selector": {GATEWAY_NAME_LABEL: name},
            "ports": service_ports(gateway, mode),
        },
    });
    let mut pod_labels = labels.clone();
    pod_labels.insert(GATEWAY_CLASS_LABEL.into(), json!(class_name));
    let dataplane = match mode {
        Mode::Native => "none",
        Mode::Sandwich { .. } => "ambient",
    };
    pod_labels.insert("istio.io/dataplane-mode".into(), json!(dataplane));
    let pod = Pod {
        namespace,
        name,
        class_name,
        mode,
        options,
    };
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {GATEWAY_NAME_LABEL: name}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": pod.spec(object, resources.to_json()),
            },
        },
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": cluster_binding_name(namespace, name),
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                CONTROLLER_LABEL: controller_label_value(options),
                GATEWAY_NAMESPACE_LABEL: namespace,
                GATEWAY_NAME_LABEL: name,
            },
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": PROXY_CLUSTER_ROLE,
        },
        "subjects": [{"kind": "ServiceAccount", "name": object, "namespace": namespace}],
    });
    Ok(Provision {
        mode,
        namespaced: vec![service_account, service, deployment],
        cluster: vec![binding],
    })
}

fn invalid(message: &str) -> Refusal {
    Refusal {
        reason: "Invalid",
        message: message.to_owned(),
    }
}

/// Native: `mesh` 15008. Sandwich: every listener port (named after its first listener when
/// that name is a valid port name). Both: `status` 15021.
fn service_ports(gateway: &Value, mode: Mode) -> Vec<Value> {
    let mut ports = Vec::new();
    let mut add = |name: String, port: u64| {
        if !ports.iter().any(|p: &Value| p["port"] == port) {
            ports.push(json!({"name": name, "port": port, "protocol": "TCP", "targetPort": port}));
        }
    };
    match mode {
        Mode::Native => add("mesh".into(), u64::from(HBONE_PORT)),
        Mode::Sandwich { .. } => {
            let listeners = gateway.pointer("/spec/listeners").and_then(Value::as_array);
            for listener in listeners.into_iter().flatten() {
                let Some(port) = listener.get("port").and_then(Value::as_u64) else {
                    continue;
                };
                let name = listener
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| is_port_name(n) && *n != "status")
                    .map_or_else(|| format!("port-{port}"), str::to_owned);
                add(name, port);
            }
        }
    }
    add("status".into(), u64::from(STATUS_PORT));
    ports
}

/// A Service port name: a DNS label.
fn is_port_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// The waypoint pod of one Gateway.
struct Pod<'a> {
    namespace: &'a str,
    name: &'a str,
    class_name: &'a str,
    mode: Mode,
    options: &'a RenderOptions,
}

impl Pod<'_> {
    fn spec(&self, service_account: &str, resources: Value) -> Value {
        let o = self.options;
        let mut args: Vec<String> = [
            "run",
            "--kube",
            "--gateway",
            &format!("{}/{}", self.namespace, self.name),
            "--gateway-class",
            self.class_name,
            "--controller-name",
            o.controller.as_str(),
            "--trust-domain",
            &o.trust_domain,
            "--cluster-domain",
            &o.cluster_domain,
            // Bound on every address: the kubelet probes the pod IP.
            "--admin-addr",
            &format!("0.0.0.0:{STATUS_PORT}"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let field = |path: &str| json!({"valueFrom": {"fieldRef": {"fieldPath": path}}});
        let mut env = vec![
            json!({"name": "POD_NAME"}),
            json!({"name": "POD_NAMESPACE"}),
            json!({"name": "SERVICE_ACCOUNT"}),
            json!({"name": "POD_IP"}),
        ];
        for (var, path) in env.iter_mut().zip([
            "metadata.name",
            "metadata.namespace",
            "spec.serviceAccountName",
            "status.podIP",
        ]) {
            if let (Some(var), Some(from)) = (var.as_object_mut(), field(path).as_object()) {
                var.extend(from.clone());
            }
        }
        let mut ports =
            vec![json!({"name": "status", "containerPort": STATUS_PORT, "protocol": "TCP"})];
        let mut spec = json!({});
        match self.mode {
            Mode::Native => {
                args.extend(
                    [
                        "--no-sandwich",
                        "--hbone-listen",
                        &format!("0.0.0.0:{HBONE_PORT}"),
                        "--upstream",
                        "auto",
                    ]
                    .map(str::to_owned),
                );
                // `waypoint run --ca-address` reads it (Istio's name for it).
                env.push(json!({"name": "CA_ADDRESS", "value": o.ca_address}));
                ports.insert(
                    0,
                    json!({"name": "mesh", "containerPort": HBONE_PORT, "protocol": "TCP"}),
                );
                spec["volumes"] = json!([
                    {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                        "audience": TOKEN_AUDIENCE, "expirationSeconds": 43200, "path": "istio-token",
                    }}]}},
                    {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
                ]);
            }
            Mode::Sandwich { port } => {
                // Every address: ztunnel >= 1.26 connects to 127.0.0.1, older ones to the pod IP.
                args.extend(["--sandwich-listen".to_owned(), format!("0.0.0.0:{port}")]);
                ports.insert(
                    0,
                    json!({"name": "proxy", "containerPort": port, "protocol": "TCP"}),
                );
            }
        }
        let mut container = json!({
            "name": "waypoint",
            "image": o.image,
            "args": args,
            "env": env,
            "ports": ports,
            "readinessProbe": {
                "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT},
                "periodSeconds": 2,
                "failureThreshold": 3,
            },
            "resources": resources,
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "capabilities": {"drop": ["ALL"]},
            },
        });
        if self.mode == Mode::Native {
            container["volumeMounts"] = json!([
                {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
                {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio", "readOnly": true},
            ]);
        }
        spec["serviceAccountName"] = json!(service_account);
        // Long enough for the drain (`run`'s --drain-timeout, 10 s by default) and the exit.
        spec["terminationGracePeriodSeconds"] = json!(30);
        spec["securityContext"] =
            json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532});
        spec["containers"] = json!([container]);
        spec
    }
}
