//! The same job, written for each proxy: Kubernetes manifests for the waypoint and a bootstrap
//! for Envoy, both generated from one [`Job`].
//!
//! What "the same job" means here:
//! - one Service (`echo`, VIP 10.96.0.10:80) whose only endpoint is the upstream;
//! - `routes` HTTPRoutes with one `PathPrefix /rNNNNN` rule each, all of the same length and
//!   named so the request (`/r<last>/items`) matches the route of lowest precedence: the waypoint
//!   and Envoy (first match wins, routes in precedence order) both look at every route;
//! - `policies` ALLOW AuthorizationPolicies, one principal each; the client's identity
//!   (TLV 0xD0) matches the last one, so both evaluate every rule.
//!
//! Envoy learns the principal the way kgateway's sandwich waypoint does: the `proxy_protocol`
//! listener filter stores TLV 0xD0 in dynamic metadata (`peer_principal`), a `set_filter_state`
//! network filter copies it into the connection's filter state as `io.istio.peer_principal`
//! (the key Istio's RBAC reads), and each RBAC policy matches that filter-state key.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

/// The Service VIP:port the PROXY header names as original destination.
pub const SERVICE_VIP: &str = "10.96.0.10:80";
/// Host header of the requests.
pub const AUTHORITY: &str = "echo.default.svc.cluster.local";
/// PROXY TLV type of the source identity.
pub const TLV_PEER_IDENTITY: u8 = 0xD0;
/// Dynamic-metadata key (namespace `envoy.filters.listener.proxy_protocol`) of TLV 0xD0.
pub const ENVOY_TLV_KEY: &str = "peer_principal";
/// Filter-state key Istio's RBAC reads the peer principal from.
pub const ENVOY_PRINCIPAL_STATE: &str = "io.istio.peer_principal";

/// The principal (Istio form, without `spiffe://`) of policy `i`.
pub fn principal(i: usize) -> String {
    format!("cluster.local/ns/ns-{i}/sa/sa-{i}")
}

/// The client's identity for a job with `policies` rules: the last rule's principal (any
/// identity when there are no rules).
pub fn client_identity(policies: usize) -> String {
    format!("spiffe://{}", principal(policies.max(1) - 1))
}

/// A job both proxies are configured for.
#[derive(Clone, Debug)]
pub struct Job {
    /// Listener port on 127.0.0.1.
    pub listen_port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
    /// The upstream (the Service's endpoint).
    pub upstream: SocketAddr,
    /// Require a PROXY v2 header and read the identity from it.
    pub proxy_protocol: bool,
    /// HTTPRoutes (at least one).
    pub routes: usize,
    /// ALLOW AuthorizationPolicies by principal (0: none).
    pub policies: usize,
    /// Envoy only, HBONE job: the waypoint's workload certificate (Istio's file layout), which
    /// Envoy presents and checks peers against on both HBONE hops.
    pub tls: Option<PathBuf>,
    /// Waypoint only: the endpoints are in the mesh (namespace labelled ambient), so `--upstream
    /// auto` reaches them over HBONE.
    pub mesh_endpoints: bool,
}

impl Job {
    /// The request path: it matches the last (lowest-precedence) route.
    pub fn path(&self) -> String {
        format!("/r{:05}/items", self.routes.max(1) - 1)
    }
}

/// The waypoint's manifests for `job`.
pub fn waypoint_manifests(job: &Job) -> String {
    let mut out = String::new();
    if job.mesh_endpoints {
        out.push_str("apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}\n---\n");
    }
    // A PROXY header or an HBONE CONNECT names the Service VIP; a plain connection has only the
    // socket's own address as its destination, so for it the Service is given that address.
    let plain = !job.proxy_protocol && !job.mesh_endpoints;
    let (vip, port) = if plain {
        ("127.0.0.1", job.listen_port)
    } else {
        ("10.96.0.10", 80)
    };
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\nspec:\n  clusterIP: {vip}\n  ports: [{{name: http, port: {port}}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        job.upstream.port(),
        job.upstream.ip()
    );
    for i in 0..job.routes.max(1) {
        let _ = write!(
            out,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: route-{i:05}, namespace: default}}\n\
             spec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo, port: {port}}}]\n  rules:\n  \
             - matches: [{{path: {{type: PathPrefix, value: /r{i:05}}}}}]\n    backendRefs: [{{name: echo, port: {port}}}]\n"
        );
    }
    write_allow_policies(&mut out, job.policies);
    out
}

/// `policies` ALLOW AuthorizationPolicies on Service `echo`, each allowing one principal
/// ([`principal`]): the client is the last one, so every policy is looked at.
pub(crate) fn write_allow_policies(out: &mut String, policies: usize) {
    for i in 0..policies {
        let _ = write!(
            out,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{i}, namespace: default}}\n\
             spec:\n  targetRefs: [{{group: \"\", kind: Service, name: echo}}]\n  action: ALLOW\n  \
             rules: [{{from: [{{source: {{principals: [\"{}\"]}}}}]}}]\n",
            principal(i)
        );
    }
}

/// `config` with its `@type` set to `type.googleapis.com/<type_url>`.
pub(crate) fn typed(type_url: &str, mut config: Value) -> Value {
    if let Value::Object(map) = &mut config {
        map.insert(
            "@type".into(),
            Value::String(format!("type.googleapis.com/{type_url}")),
        );
    }
    config
}

/// The route table of every Envoy bootstrap here: one `path_separated_prefix` route per
/// HTTPRoute of `job` (same names, same order), each to `cluster`.
pub(crate) fn envoy_routes(job: &Job, cluster: &str) -> Vec<Value> {
    (0..job.routes.max(1))
        .map(|i| {
            json!({
                "name": format!("route-{i:05}"),
                "match": {"path_separated_prefix": format!("/r{i:05}")},
                "route": {"cluster": cluster},
            })
        })
        .collect()
}

/// The HTTP filters of every Envoy bootstrap here: RBAC with one ALLOW policy per
/// AuthorizationPolicy (none without policies), then the router.
pub(crate) fn envoy_http_filters(policies: usize) -> Vec<Value> {
    let mut http_filters = Vec::new();
    if policies > 0 {
        let policies = envoy_rbac_policies(policies);
        http_filters.push(json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": typed(
                "envoy.extensions.filters.http.rbac.v3.RBAC",
                json!({"rules": {"action": "ALLOW", "policies": policies}}),
            ),
        }));
    }
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": typed("envoy.extensions.filters.http.router.v3.Router", json!({})),
    }));
    http_filters
}

/// Envoy's bootstrap for `job`, as a `serde_json::Value` (see [`envoy_yaml`]).
pub fn envoy_bootstrap(job: &Job) -> Value {
    let routes = envoy_routes(job, "echo");
    let http_filters = envoy_http_filters(job.policies);
    let hcm = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": typed(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            json!({
                "stat_prefix": "waypoint",
                "codec_type": "AUTO",
                "route_config": {
                    "name": "echo",
                    "virtual_hosts": [{"name": "echo", "domains": ["*"], "routes": routes}],
                },
                "http_filters": http_filters,
            }),
        ),
    });
    let mut network_filters = Vec::new();
    let mut listener_filters = Vec::new();
    if job.proxy_protocol {
        listener_filters.push(json!({
            "name": "envoy.filters.listener.proxy_protocol",
            "typed_config": typed(
                "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
                json!({
                    "rules": [{"tlv_type": TLV_PEER_IDENTITY, "on_tlv_present": {"key": ENVOY_TLV_KEY}}],
                    "allow_requests_without_proxy_protocol": false,
                }),
            ),
        }));
        network_filters.push(json!({
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
        }));
    }
    network_filters.push(hcm);
    let chain = json!({"filters": network_filters});
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": job.admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "waypoint",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": job.listen_port}},
                "listener_filters": listener_filters,
                "filter_chains": [chain],
            }],
            "clusters": [echo_cluster(job.upstream)],
        },
    })
}

/// Envoy's RBAC policies for `policies` ALLOW rules, one principal each, named as Istio names
/// them and matched on the PROXY header's identity in filter state: the same job as
/// [`write_allow_policies`].
pub(crate) fn envoy_rbac_policies(policies: usize) -> serde_json::Map<String, Value> {
    (0..policies)
        .map(|i| {
            let policy = json!({
                "permissions": [{"any": true}],
                "principals": [{"filter_state": {
                    "key": ENVOY_PRINCIPAL_STATE,
                    "string_match": {"exact": format!("spiffe://{}", principal(i))},
                }}],
            });
            (format!("ns[default]-policy[allow-{i}]-rule[0]"), policy)
        })
        .collect()
}

/// Envoy's cluster `echo`: the one upstream at `upstream`.
pub(crate) fn echo_cluster(upstream: std::net::SocketAddr) -> Value {
    json!({
        "name": "echo",
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": "echo",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": upstream.ip().to_string(),
                "port_value": upstream.port(),
            }}}}]}],
        },
    })
}

/// Envoy's bootstrap for `job` as YAML.
pub fn envoy_yaml(job: &Job) -> Result<String, String> {
    serde_saphyr::to_string(&envoy_bootstrap(job)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(routes: usize, policies: usize) -> Job {
        Job {
            listen_port: 15088,
            admin_port: 15000,
            upstream: "127.0.0.1:18080".parse().unwrap(),
            proxy_protocol: true,
            routes,
            policies,
            tls: None,
            mesh_endpoints: false,
        }
    }

    fn parsed(job: &Job) -> Value {
        let yaml = envoy_yaml(job).unwrap();
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[test]
    fn envoy_reads_the_identity_tlv_like_kgateway() {
        let v = parsed(&job(1, 10));
        let listener = &v["static_resources"]["listeners"][0];
        let lf = &listener["listener_filters"][0];
        assert_eq!(lf["name"], "envoy.filters.listener.proxy_protocol");
        assert_eq!(lf["typed_config"]["rules"][0]["tlv_type"], 0xD0);
        assert_eq!(
            lf["typed_config"]["rules"][0]["on_tlv_present"]["key"],
            "peer_principal"
        );
        let filters = listener["filter_chains"][0]["filters"].as_array().unwrap();
        let sfs = &filters[0]["typed_config"]["on_new_connection"][0];
        assert_eq!(sfs["object_key"], "io.istio.peer_principal");
        assert_eq!(
            sfs["format_string"]["text_format_source"]["inline_string"],
            "%DYNAMIC_METADATA(envoy.filters.listener.proxy_protocol:peer_principal)%"
        );
        assert_eq!(
            filters[1]["name"],
            "envoy.filters.network.http_connection_manager"
        );
    }

    #[test]
    fn envoy_rbac_has_one_principal_rule_per_policy_and_the_client_matches_the_last() {
        let j = job(1, 10);
        let v = parsed(&j);
        let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][1]["typed_config"];
        let rbac = &hcm["http_filters"][0];
        assert_eq!(rbac["name"], "envoy.filters.http.rbac");
        assert_eq!(rbac["typed_config"]["rules"]["action"], "ALLOW");
        let policies = rbac["typed_config"]["rules"]["policies"]
            .as_object()
            .unwrap();
        assert_eq!(policies.len(), 10);
        let exacts: Vec<&str> = policies
            .values()
            .map(|p| {
                assert_eq!(
                    p["principals"][0]["filter_state"]["key"],
                    "io.istio.peer_principal"
                );
                p["principals"][0]["filter_state"]["string_match"]["exact"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert!(exacts.contains(&client_identity(10).as_str()));
        assert_eq!(hcm["http_filters"][1]["name"], "envoy.filters.http.router");
        // The waypoint gets the same ten policies, in Istio's principal form.
        let manifests = waypoint_manifests(&j);
        assert_eq!(manifests.matches("kind: AuthorizationPolicy").count(), 10);
        assert!(manifests.contains("principals: [\"cluster.local/ns/ns-9/sa/sa-9\"]"));
    }

    #[test]
    fn routes_match_the_last_route_in_both_configs() {
        let j = job(10_000, 0);
        assert_eq!(j.path(), "/r09999/items");
        let v = parsed(&j);
        let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][1]["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        assert_eq!(routes.len(), 10_000);
        assert_eq!(routes[9_999]["match"]["path_separated_prefix"], "/r09999");
        // Without policies there is no RBAC filter, only the router.
        assert_eq!(hcm["http_filters"].as_array().unwrap().len(), 1);
        let manifests = waypoint_manifests(&j);
        assert_eq!(manifests.matches("kind: HTTPRoute").count(), 10_000);
        assert!(manifests.contains("value: /r09999}"));
    }

    #[test]
    fn a_plain_job_has_no_listener_filter() {
        let mut j = job(1, 0);
        j.proxy_protocol = false;
        let v = parsed(&j);
        let listener = &v["static_resources"]["listeners"][0];
        assert!(listener["listener_filters"].as_array().unwrap().is_empty());
        assert!(listener["filter_chains"][0]["transport_socket"].is_null());
    }
}
