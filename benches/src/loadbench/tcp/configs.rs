//! The `tcp` scenario's job, written for each proxy.
//!
//! - waypoint: Service `echo` (VIP 10.96.0.10:80) whose port is named `tcp-echo`, which Istio's
//!   protocol selection makes TCP; its one endpoint is the echo backend; `policies` ALLOW
//!   AuthorizationPolicies with one principal each (the client matches the last), enforced on
//!   the connection before a byte is forwarded. No route: a TCP Service goes to itself.
//! - Envoy: the sandwich listener of the HTTP scenarios (the `proxy_protocol` listener filter
//!   stores TLV 0xD0, `set_filter_state` copies it to `io.istio.peer_principal`), then the
//!   network `rbac` filter with one ALLOW policy per principal on that filter-state key, as
//!   Istio generates it for TCP filter chains (stat prefix `tcp.`), then `tcp_proxy` to the
//!   backend.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::loadbench::configs::{
    ENVOY_PRINCIPAL_STATE, ENVOY_TLV_KEY, Job, TLV_PEER_IDENTITY, echo_cluster,
    envoy_rbac_policies, typed, write_allow_policies,
};

/// The Service port's name: the `tcp` prefix selects TCP.
pub const PORT_NAME: &str = "tcp-echo";

/// The waypoint's manifests for the TCP job (`job.routes` is not used: TCP has no routes here).
pub fn waypoint_manifests(job: &Job) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{{name: {PORT_NAME}, port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}\n\
         addressType: IPv4\nports: [{{name: {PORT_NAME}, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        job.upstream.port(),
        job.upstream.ip()
    );
    write_allow_policies(&mut out, job.policies);
    out
}

/// Envoy's bootstrap for the TCP job.
pub fn envoy_bootstrap(job: &Job) -> Value {
    let policies = envoy_rbac_policies(job.policies);
    let mut filters = vec![json!({
        "name": "proxy_protocol_authority",
        "typed_config": typed(
            "envoy.extensions.filters.network.set_filter_state.v3.Config",
            json!({"on_new_connection": [{
                "object_key": ENVOY_PRINCIPAL_STATE,
                "factory_key": "envoy.string",
                "format_string": {"text_format_source": {"inline_string":
                    format!("%DYNAMIC_METADATA(envoy.filters.listener.proxy_protocol:{ENVOY_TLV_KEY})%")}},
            }]}),
        ),
    })];
    if job.policies > 0 {
        filters.push(json!({
            "name": "envoy.filters.network.rbac",
            "typed_config": typed(
                "envoy.extensions.filters.network.rbac.v3.RBAC",
                json!({"stat_prefix": "tcp.", "rules": {"action": "ALLOW", "policies": policies}}),
            ),
        }));
    }
    filters.push(json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": typed(
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            json!({"stat_prefix": "echo", "cluster": "echo"}),
        ),
    }));
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": job.admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "waypoint",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": job.listen_port}},
                "listener_filters": [{
                    "name": "envoy.filters.listener.proxy_protocol",
                    "typed_config": typed(
                        "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
                        json!({
                            "rules": [{"tlv_type": TLV_PEER_IDENTITY, "on_tlv_present": {"key": ENVOY_TLV_KEY}}],
                            "allow_requests_without_proxy_protocol": false,
                        }),
                    ),
                }],
                "filter_chains": [{"filters": filters}],
            }],
            "clusters": [echo_cluster(job.upstream)],
        },
    })
}

/// Envoy's bootstrap for the TCP job as YAML.
pub fn envoy_yaml(job: &Job) -> Result<String, String> {
    serde_saphyr::to_string(&envoy_bootstrap(job)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
