//! Envoy configured as Istio configures its waypoint for HBONE, from the same [`Job`] as the
//! waypoint's manifests (`configs::waypoint_manifests` with `mesh_endpoints`).
//!
//! The shape follows istiod's waypoint generator (`pilot/pkg/networking/core`:
//! `listener_waypoint.go`, `cluster_waypoint.go`, and the bootstrap's internal-listener
//! extension); what a vanilla Envoy cannot run (istio-proxy's own filters) or what this job does
//! not exercise is left out and named in `benches/README.md`. The path of one tunnel:
//!
//! 1. **`connect_terminate`**, on the HBONE port: mutual TLS 1.3 (ALPN `h2`, a client
//!    certificate required, signed by the mesh CA with a URI SAN under
//!    `spiffe://cluster.local/`), an HTTP connection manager with CONNECT allowed
//!    (`http2_protocol_options.allow_connect`, `upgrade_configs: CONNECT`) and one route: any
//!    CONNECT (`connect_matcher`) is terminated (`connect_config`) and its bytes go to cluster
//!    `main_internal`. Before routing, `set_filter_state` (Istio's `connect_authority` filter)
//!    stores the tunnel's facts for the next hop, shared with the upstream connection once:
//!    the `:authority` as `envoy.filters.listener.original_dst.local_ip` (the original
//!    destination), the client's SPIFFE URI as `io.istio.peer_principal`, and so on.
//! 2. **`main_internal`**, an internal listener (`envoy.bootstrap.internal_listener`; cluster
//!    `main_internal` reaches it through the `internal_upstream` transport socket): its
//!    `original_dst` listener filter takes the local address from that filter state, a filter
//!    chain matcher picks the Service's chain by destination IP and port (the VIP
//!    10.96.0.10:80), and that chain is the HTTP part: the routes, RBAC on
//!    `io.istio.peer_principal`, the router to cluster `inbound-vip|80|http|<host>`.
//! 3. **`inbound-vip|80|http|<host>`**: its endpoint is the internal listener
//!    `connect_originate`, with the pod's `ip:port` in the endpoint's metadata
//!    (`envoy.filters.listener.original_dst: {local: ip:port}`), which the `internal_upstream`
//!    transport socket passes through.
//! 4. **`connect_originate`**, an internal listener: `original_dst` makes that `ip:port` the
//!    local address and `tcp_proxy` tunnels the connection (`tunneling_config`, CONNECT to
//!    `%DOWNSTREAM_LOCAL_ADDRESS%`) through cluster `connect_originate`: original destination
//!    with the port overridden to 15008, HTTP/2 with CONNECT allowed, mutual TLS 1.3 with the
//!    waypoint's own certificate, the server's URI SAN checked against the trust domain and
//!    the waypoint's namespace (Istio's two prefix matchers).

use std::path::Path;

use serde_json::{Value, json};

use crate::loadbench::configs::{
    ENVOY_PRINCIPAL_STATE, Job, envoy_http_filters, envoy_routes, typed,
};

/// The CONNECT-terminating listener (Istio's name).
pub const CONNECT_TERMINATE: &str = "connect_terminate";
/// The internal listener and cluster the terminated tunnels go to (Istio's name).
pub const MAIN_INTERNAL: &str = "main_internal";
/// The internal listener and cluster that originate CONNECT upstream (Istio's name).
pub const CONNECT_ORIGINATE: &str = "connect_originate";
/// Filter-state key (and dynamic-metadata namespace) of the original destination, which
/// Envoy's `original_dst` listener filter reads on an internal listener.
pub const ORIGINAL_DST_KEY: &str = "envoy.filters.listener.original_dst";
/// The port HBONE is originated to (the destination ztunnel's).
pub const HBONE_PORT: u16 = 15008;
/// Trust domain of every certificate of the run.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The waypoint's namespace: Istio checks the destination's identity against it.
pub const WAYPOINT_NAMESPACE: &str = "default";
/// The Service's host name, as Istio names its waypoint clusters and chains after it.
const SERVICE_HOST: &str = "echo.default.svc.cluster.local";
/// The VIP and port of the Service (`configs::SERVICE_VIP`), apart.
const VIP: &str = "10.96.0.10";
const SERVICE_PORT: u16 = 80;

/// The per-Service cluster and filter-chain name: `inbound-vip|<port>|http|<host>`.
pub fn inbound_vip_name() -> String {
    format!("inbound-vip|{SERVICE_PORT}|http|{SERVICE_HOST}")
}

/// Istio's default circuit breaker on its internal clusters: no limit Envoy would apply first.
fn unlimited_circuit_breakers() -> Value {
    let max = u32::MAX;
    json!({"thresholds": [{
        "max_connections": max,
        "max_pending_requests": max,
        "max_requests": max,
        "max_retries": max,
        "track_remaining": true,
    }]})
}

/// A URI SAN matcher on a prefix.
fn uri_prefix(prefix: String) -> Value {
    json!({"san_type": "URI", "matcher": {"prefix": prefix}})
}

/// Istio's `buildCommonConnectTLSContext`: the workload certificate, the mesh CA, URI SANs in
/// the trust domain, ALPN `h2`, TLS 1.3 only; `extra` adds matchers (any one must match).
fn connect_tls_context(certs: &Path, extra: Vec<Value>) -> Value {
    let file = |name: &str| json!({"filename": certs.join(name).display().to_string()});
    let mut matchers = vec![uri_prefix(format!("spiffe://{TRUST_DOMAIN}/"))];
    matchers.extend(extra);
    json!({
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3",
        },
        "alpn_protocols": ["h2"],
        "tls_certificates": [{
            "certificate_chain": file("cert-chain.pem"),
            "private_key": file("key.pem"),
        }],
        "validation_context": {
            "trusted_ca": file("root-cert.pem"),
            "match_typed_subject_alt_names": matchers,
        },
    })
}

/// One `set_filter_state` value from a format string, shared with the upstream connection once.
fn shared_state(key: &str, factory: Option<&str>, format: &str) -> Value {
    let mut v = json!({
        "object_key": key,
        "format_string": {"text_format_source": {"inline_string": format}},
        "shared_with_upstream": "ONCE",
    });
    if let Some(factory) = factory {
        v["factory_key"] = json!(factory);
    }
    v
}

/// Istio's `connect_authority` HTTP filter: the tunnel's facts, for the internal listener.
/// (Istio registers `istio.hashable_string`; a vanilla Envoy has `envoy.string`.)
fn connect_authority_filter() -> Value {
    json!({
        "name": "connect_authority",
        "typed_config": typed(
            "envoy.extensions.filters.http.set_filter_state.v3.Config",
            json!({"on_request_headers": [
                shared_state(&format!("{ORIGINAL_DST_KEY}.local_ip"), None, "%REQ(:AUTHORITY)%"),
                shared_state("io.istio.connect_authority", Some("envoy.string"), "%REQ(:AUTHORITY)%"),
                shared_state(&format!("{ORIGINAL_DST_KEY}.remote_ip"), None, "%DOWNSTREAM_REMOTE_ADDRESS%"),
                shared_state(ENVOY_PRINCIPAL_STATE, Some("envoy.string"), "%DOWNSTREAM_PEER_URI_SAN%"),
                shared_state("io.istio.local_principal", Some("envoy.string"), "%DOWNSTREAM_LOCAL_URI_SAN%"),
            ]}),
        ),
    })
}

/// Listener 1: mutual TLS + HTTP/2 CONNECT termination on the HBONE port.
fn connect_terminate_listener(job: &Job, certs: &Path) -> Value {
    let route = json!({
        "match": {"connect_matcher": {}},
        "route": {
            "cluster": MAIN_INTERNAL,
            "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}],
        },
    });
    let hcm = json!({
        "stat_prefix": CONNECT_TERMINATE,
        "route_config": {
            "name": "default",
            "virtual_hosts": [{"name": "default", "domains": ["*"], "routes": [route]}],
        },
        "set_current_client_cert_details": {"subject": true, "uri": true, "dns": true},
        "use_remote_address": false,
        "stream_idle_timeout": "0s",
        "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        "http2_protocol_options": {
            "allow_connect": true,
            "max_concurrent_streams": 100,
            "connection_keepalive": {"interval": "10s", "timeout": "20s"},
        },
        "http_filters": [
            connect_authority_filter(),
            {
                "name": "envoy.filters.http.router",
                "typed_config": typed("envoy.extensions.filters.http.router.v3.Router", json!({})),
            },
        ],
    });
    json!({
        "name": CONNECT_TERMINATE,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": job.listen_port}},
        "filter_chains": [{
            "name": "default",
            "transport_socket": {
                "name": "tls",
                "typed_config": typed(
                    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    json!({
                        "require_client_certificate": true,
                        "common_tls_context": connect_tls_context(certs, Vec::new()),
                    }),
                ),
            },
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": typed(
                    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    hcm,
                ),
            }],
        }],
        "connection_balance_config": {"exact_balance": {}},
    })
}

fn original_dst_listener_filter() -> Value {
    json!({
        "name": "envoy.filters.listener.original_dst",
        "typed_config": typed(
            "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
            json!({}),
        ),
    })
}

/// A matcher input by its extension type.
fn input(name: &str, type_url: &str) -> Value {
    json!({"name": name, "typed_config": typed(type_url, json!({}))})
}

/// Listener 2: the Service's HTTP chain behind the terminated tunnel.
fn main_internal_listener(job: &Job) -> Value {
    let chain = inbound_vip_name();
    let hcm = json!({
        "stat_prefix": format!("inbound_{VIP}_{SERVICE_PORT}"),
        "codec_type": "AUTO",
        "route_config": {
            "name": chain,
            "virtual_hosts": [{"name": "echo", "domains": ["*"], "routes": envoy_routes(job, &chain)}],
        },
        "http_filters": envoy_http_filters(job.policies),
    });
    let to_chain = json!({"action": {
        "name": chain,
        "typed_config": typed("google.protobuf.StringValue", json!({"value": chain})),
    }});
    let by_port = json!({"matcher_tree": {
        "input": input("port", "envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput"),
        "exact_match_map": {"map": {SERVICE_PORT.to_string(): to_chain}},
    }});
    let by_ip = json!({"matcher_tree": {
        "input": input("ip", "envoy.extensions.matching.common_inputs.network.v3.DestinationIPInput"),
        "custom_match": {
            "name": "ip",
            "typed_config": typed("xds.type.matcher.v3.IPMatcher", json!({
                "range_matchers": [{
                    "ranges": [{"address_prefix": VIP, "prefix_len": 32}],
                    "on_match": {"matcher": by_port},
                }],
            })),
        },
    }});
    json!({
        "name": MAIN_INTERNAL,
        "internal_listener": {},
        "traffic_direction": "INBOUND",
        // The HTTP inspector Istio adds is disabled for ports known to be HTTP, as this one is.
        "listener_filters": [
            original_dst_listener_filter(),
            {
                "name": "envoy.filters.listener.http_inspector",
                "typed_config": typed(
                    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
                    json!({}),
                ),
                "filter_disabled": {"destination_port_range": {"start": SERVICE_PORT, "end": SERVICE_PORT + 1}},
            },
        ],
        "filter_chains": [{
            "name": chain,
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": typed(
                    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    hcm,
                ),
            }],
        }],
        "filter_chain_matcher": by_ip,
    })
}

/// Listener 4: CONNECT origination to the destination ztunnel.
fn connect_originate_listener() -> Value {
    json!({
        "name": CONNECT_ORIGINATE,
        "internal_listener": {},
        "use_original_dst": false,
        "listener_filters": [original_dst_listener_filter()],
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": typed(
                "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                json!({
                    "stat_prefix": CONNECT_ORIGINATE,
                    "cluster": CONNECT_ORIGINATE,
                    "tunneling_config": {"hostname": "%DOWNSTREAM_LOCAL_ADDRESS%"},
                }),
            ),
        }]}],
    })
}

fn raw_buffer() -> Value {
    json!({
        "name": "raw_buffer",
        "typed_config": typed("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer", json!({})),
    })
}

/// The `internal_upstream` transport socket, passing `passthrough` host metadata namespaces
/// on to the internal listener.
fn internal_upstream(passthrough: &[&str]) -> Value {
    let passthrough: Vec<Value> = passthrough
        .iter()
        .map(|name| json!({"kind": {"host": {}}, "name": name}))
        .collect();
    let mut config = json!({"transport_socket": raw_buffer()});
    if !passthrough.is_empty() {
        config["passthrough_metadata"] = json!(passthrough);
    }
    json!({
        "name": "internal_upstream",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport",
            config,
        ),
    })
}

/// An endpoint on internal listener `listener`.
fn internal_endpoint(listener: &str, endpoint_id: Option<&str>) -> Value {
    let mut address = json!({"server_listener_name": listener});
    if let Some(id) = endpoint_id {
        address["endpoint_id"] = json!(id);
    }
    json!({"address": {"envoy_internal_address": address}})
}

/// Cluster `main_internal`: the terminated tunnels' bytes into listener `main_internal`.
fn main_internal_cluster() -> Value {
    json!({
        "name": MAIN_INTERNAL,
        "type": "STATIC",
        "circuit_breakers": unlimited_circuit_breakers(),
        "load_assignment": {
            "cluster_name": MAIN_INTERNAL,
            "endpoints": [{"lb_endpoints": [{"endpoint": internal_endpoint(MAIN_INTERNAL, None)}]}],
        },
        "transport_socket": internal_upstream(&[]),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                json!({
                    "common_http_protocol_options": {"idle_timeout": "300s"},
                    "use_downstream_protocol_config": {
                        "http_protocol_options": {},
                        "http2_protocol_options": {},
                    },
                }),
            ),
        },
    })
}

/// Cluster `inbound-vip|80|http|<host>`: the Service's one endpoint (`job.upstream`, a pod in
/// the mesh), reached through listener `connect_originate` with its address in the metadata.
fn inbound_vip_cluster(job: &Job) -> Value {
    let name = inbound_vip_name();
    let pod = job.upstream.to_string();
    let mut endpoint = json!({"endpoint": internal_endpoint(CONNECT_ORIGINATE, Some(&pod))});
    endpoint["metadata"] = json!({"filter_metadata": {ORIGINAL_DST_KEY: {"local": pod}}});
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "circuit_breakers": unlimited_circuit_breakers(),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
        "transport_socket": internal_upstream(&[ORIGINAL_DST_KEY, "istio"]),
    })
}

/// Cluster `connect_originate`: HTTP/2 CONNECT over mutual TLS to `<pod ip>:15008`.
fn connect_originate_cluster(certs: &Path) -> Value {
    let namespace = format!("spiffe://{TRUST_DOMAIN}/ns/{WAYPOINT_NAMESPACE}/sa/");
    json!({
        "name": CONNECT_ORIGINATE,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "10s",
        "cleanup_interval": "60s",
        "circuit_breakers": unlimited_circuit_breakers(),
        "original_dst_lb_config": {
            "upstream_port_override": HBONE_PORT,
            "metadata_key": {"key": ORIGINAL_DST_KEY, "path": [{"key": "waypoint"}]},
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                json!({
                    "common_http_protocol_options": {"idle_timeout": "3600s"},
                    "explicit_http_config": {"http2_protocol_options": {"allow_connect": true}},
                }),
            ),
        },
        "transport_socket": {
            "name": "tls",
            "typed_config": typed(
                "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                json!({"common_tls_context": connect_tls_context(certs, vec![uri_prefix(namespace)])}),
            ),
        },
    })
}

/// Envoy's bootstrap for the HBONE job: `job.listen_port` is the HBONE port, `job.upstream`
/// the pod (its ztunnel at `<ip>:15008`), `job.tls` the waypoint's certificate directory
/// (Istio's file layout).
pub fn envoy_bootstrap(job: &Job) -> Result<Value, String> {
    let certs = job
        .tls
        .as_deref()
        .ok_or("the HBONE job needs the waypoint's certificates (job.tls)")?;
    Ok(json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": job.admin_port}}},
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": typed(
                "envoy.extensions.bootstrap.internal_listener.v3.InternalListener",
                json!({"buffer_size_kb": 64}),
            ),
        }],
        "static_resources": {
            "listeners": [
                connect_terminate_listener(job, certs),
                main_internal_listener(job),
                connect_originate_listener(),
            ],
            "clusters": [
                main_internal_cluster(),
                inbound_vip_cluster(job),
                connect_originate_cluster(certs),
            ],
        },
    }))
}

/// Envoy's bootstrap for the HBONE job as YAML.
pub fn envoy_yaml(job: &Job) -> Result<String, String> {
    serde_saphyr::to_string(&envoy_bootstrap(job)?).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
