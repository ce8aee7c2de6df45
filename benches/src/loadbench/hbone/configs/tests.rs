#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::loadbench::configs::client_identity;

fn job(certs: Option<PathBuf>) -> Job {
    Job {
        listen_port: 15088,
        admin_port: 15000,
        upstream: "127.77.1.2:18080".parse().unwrap(),
        proxy_protocol: false,
        routes: 1,
        policies: 10,
        tls: certs,
        mesh_endpoints: true,
    }
}

/// The bootstrap as Envoy reads it: through the YAML text.
fn parsed(job: &Job) -> Value {
    serde_saphyr::from_str(&envoy_yaml(job).unwrap()).unwrap()
}

fn named<'a>(v: &'a Value, kind: &str, name: &str) -> &'a Value {
    v["static_resources"][kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn hcm(listener: &Value) -> &Value {
    let filter = &listener["filter_chains"][0]["filters"][0];
    assert_eq!(
        filter["name"],
        "envoy.filters.network.http_connection_manager"
    );
    &filter["typed_config"]
}

#[test]
fn the_bootstrap_loads_the_internal_listener_extension() {
    let v = parsed(&job(Some("/certs/waypoint".into())));
    let ext = &v["bootstrap_extensions"][0];
    assert_eq!(ext["name"], "envoy.bootstrap.internal_listener");
    assert_eq!(
        ext["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
    );
    let listeners: Vec<&str> = v["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        listeners,
        [CONNECT_TERMINATE, MAIN_INTERNAL, CONNECT_ORIGINATE]
    );
    // Only the terminating listener has a socket; the other two are internal.
    assert_eq!(
        named(&v, "listeners", CONNECT_TERMINATE)["address"]["socket_address"]["port_value"],
        15088
    );
    for internal in [MAIN_INTERNAL, CONNECT_ORIGINATE] {
        let l = named(&v, "listeners", internal);
        assert!(l["internal_listener"].is_object(), "{internal}");
        assert!(l["address"].is_null(), "{internal}");
        assert_eq!(
            l["listener_filters"][0]["name"], "envoy.filters.listener.original_dst",
            "{internal} takes its local address from the tunnel's metadata"
        );
    }
}

#[test]
fn connect_terminate_requires_a_spiffe_client_certificate_and_terminates_connect() {
    let v = parsed(&job(Some("/certs/waypoint".into())));
    let l = named(&v, "listeners", CONNECT_TERMINATE);
    let tls = &l["filter_chains"][0]["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], true);
    let ctx = &tls["common_tls_context"];
    assert_eq!(ctx["alpn_protocols"][0], "h2");
    assert_eq!(ctx["tls_params"]["tls_minimum_protocol_version"], "TLSv1_3");
    assert_eq!(
        ctx["validation_context"]["trusted_ca"]["filename"],
        "/certs/waypoint/root-cert.pem"
    );
    let san = &ctx["validation_context"]["match_typed_subject_alt_names"][0];
    assert_eq!(san["san_type"], "URI");
    assert_eq!(san["matcher"]["prefix"], "spiffe://cluster.local/");
    assert_eq!(
        ctx["tls_certificates"][0]["certificate_chain"]["filename"],
        "/certs/waypoint/cert-chain.pem"
    );

    let h = hcm(l);
    assert_eq!(h["http2_protocol_options"]["allow_connect"], true);
    assert_eq!(h["upgrade_configs"][0]["upgrade_type"], "CONNECT");
    let route = &h["route_config"]["virtual_hosts"][0]["routes"][0];
    assert!(route["match"]["connect_matcher"].is_object());
    assert_eq!(route["route"]["cluster"], MAIN_INTERNAL);
    let upgrade = &route["route"]["upgrade_configs"][0];
    assert_eq!(upgrade["upgrade_type"], "CONNECT");
    assert!(
        upgrade["connect_config"].is_object(),
        "connect_config terminates the CONNECT"
    );

    // The tunnel's original destination and client identity cross into the internal listener
    // as filter state shared with the upstream connection.
    let filters = h["http_filters"].as_array().unwrap();
    assert_eq!(filters.last().unwrap()["name"], "envoy.filters.http.router");
    let states = filters[0]["typed_config"]["on_request_headers"]
        .as_array()
        .unwrap();
    let state = |key: &str| {
        states
            .iter()
            .find(|s| s["object_key"] == key)
            .unwrap_or_else(|| panic!("no filter state {key}"))
    };
    let dst = state("envoy.filters.listener.original_dst.local_ip");
    assert_eq!(
        dst["format_string"]["text_format_source"]["inline_string"],
        "%REQ(:AUTHORITY)%"
    );
    assert_eq!(dst["shared_with_upstream"], "ONCE");
    let principal = state("io.istio.peer_principal");
    assert_eq!(
        principal["format_string"]["text_format_source"]["inline_string"],
        "%DOWNSTREAM_PEER_URI_SAN%"
    );
    assert_eq!(principal["shared_with_upstream"], "ONCE");
}

#[test]
fn main_internal_routes_and_authorizes_the_service_chain() {
    let mut j = job(Some("/certs/waypoint".into()));
    j.routes = 100;
    let v = parsed(&j);
    let l = named(&v, "listeners", MAIN_INTERNAL);
    let chain = inbound_vip_name();
    assert_eq!(chain, "inbound-vip|80|http|echo.default.svc.cluster.local");
    // Destination IP (the VIP) then port select the chain.
    let tree = &l["filter_chain_matcher"]["matcher_tree"];
    let ranges = &tree["custom_match"]["typed_config"]["range_matchers"][0];
    assert_eq!(ranges["ranges"][0]["address_prefix"], "10.96.0.10");
    assert_eq!(ranges["ranges"][0]["prefix_len"], 32);
    let by_port = &ranges["on_match"]["matcher"]["matcher_tree"]["exact_match_map"]["map"]["80"];
    assert_eq!(by_port["action"]["typed_config"]["value"], chain.as_str());
    assert_eq!(l["filter_chains"][0]["name"], chain.as_str());

    let h = hcm(l);
    let routes = h["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    assert_eq!(routes.len(), 100);
    assert_eq!(routes[99]["match"]["path_separated_prefix"], "/r00099");
    assert_eq!(routes[99]["route"]["cluster"], chain.as_str());
    let rbac = &h["http_filters"][0];
    assert_eq!(rbac["name"], "envoy.filters.http.rbac");
    let policies = rbac["typed_config"]["rules"]["policies"]
        .as_object()
        .unwrap();
    assert_eq!(policies.len(), 10);
    assert!(policies.values().any(|p| {
        p["principals"][0]["filter_state"]["key"] == "io.istio.peer_principal"
            && p["principals"][0]["filter_state"]["string_match"]["exact"]
                == client_identity(10).as_str()
    }));
}

#[test]
fn the_service_endpoint_is_reached_through_connect_originate_with_its_address_in_metadata() {
    let v = parsed(&job(Some("/certs/waypoint".into())));
    let c = named(&v, "clusters", &inbound_vip_name());
    let ep = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
    let internal = &ep["endpoint"]["address"]["envoy_internal_address"];
    assert_eq!(internal["server_listener_name"], CONNECT_ORIGINATE);
    assert_eq!(internal["endpoint_id"], "127.77.1.2:18080");
    assert_eq!(
        ep["metadata"]["filter_metadata"]["envoy.filters.listener.original_dst"]["local"],
        "127.77.1.2:18080"
    );
    let socket = &c["transport_socket"]["typed_config"];
    assert_eq!(
        socket["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport"
    );
    assert_eq!(
        socket["passthrough_metadata"][0]["name"],
        "envoy.filters.listener.original_dst"
    );
    assert!(socket["passthrough_metadata"][0]["kind"]["host"].is_object());
}

#[test]
fn connect_originate_tunnels_over_mutual_tls_http2_to_port_15008() {
    let v = parsed(&job(Some("/certs/waypoint".into())));
    let l = named(&v, "listeners", CONNECT_ORIGINATE);
    let tcp = &l["filter_chains"][0]["filters"][0];
    assert_eq!(tcp["name"], "envoy.filters.network.tcp_proxy");
    assert_eq!(tcp["typed_config"]["cluster"], CONNECT_ORIGINATE);
    assert_eq!(
        tcp["typed_config"]["tunneling_config"]["hostname"],
        "%DOWNSTREAM_LOCAL_ADDRESS%"
    );

    let c = named(&v, "clusters", CONNECT_ORIGINATE);
    assert_eq!(c["type"], "ORIGINAL_DST");
    assert_eq!(c["lb_policy"], "CLUSTER_PROVIDED");
    assert_eq!(c["original_dst_lb_config"]["upstream_port_override"], 15008);
    let options = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["explicit_http_config"]["http2_protocol_options"]["allow_connect"],
        true
    );
    let tls = &c["transport_socket"]["typed_config"];
    assert_eq!(
        tls["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    let ctx = &tls["common_tls_context"];
    assert_eq!(
        ctx["tls_certificates"][0]["private_key"]["filename"],
        "/certs/waypoint/key.pem"
    );
    assert_eq!(ctx["alpn_protocols"][0], "h2");
    let sans: Vec<&str> = ctx["validation_context"]["match_typed_subject_alt_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["matcher"]["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(
        sans,
        [
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns/default/sa/"
        ]
    );
}

#[test]
fn every_cluster_and_internal_listener_named_exists() {
    let v = parsed(&job(Some("/certs/waypoint".into())));
    let names = |kind: &str| -> Vec<String> {
        v["static_resources"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (listeners, clusters) = (names("listeners"), names("clusters"));
    // Walk the whole document for references.
    fn walk(v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, x) in map {
                    match (k.as_str(), x) {
                        ("cluster", Value::String(s)) => out.push(("cluster".into(), s.clone())),
                        ("server_listener_name", Value::String(s)) => {
                            out.push(("listener".into(), s.clone()))
                        }
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(&v, &mut refs);
    assert!(refs.len() >= 4, "{refs:?}");
    for (kind, name) in refs {
        let known = if kind == "cluster" {
            &clusters
        } else {
            &listeners
        };
        assert!(
            known.contains(&name),
            "{kind} {name} is named but not defined"
        );
    }
}

#[test]
fn a_job_without_certificates_is_refused() {
    let err = envoy_yaml(&job(None)).unwrap_err();
    assert!(err.contains("certificates"), "{err}");
}

/// Writes a CA and the waypoint's certificate (Istio file layout) under `dir`.
fn write_certs(dir: &Path) -> PathBuf {
    let ca = waypoint_core::tls::DevCa::generate(TRUST_DOMAIN).unwrap();
    let id = "spiffe://cluster.local/ns/default/sa/waypoint"
        .parse()
        .unwrap();
    let out = dir.join("waypoint");
    ca.write_workload_dir(&out, &id, Duration::from_secs(3600))
        .unwrap();
    out
}

/// `envoy --mode validate` accepts the generated bootstrap (certificate files included).
/// Without an Envoy binary (`$ENVOY_BIN`, `benches/.peers`, `PATH`) this test says so and
/// passes: it is the one test here that needs a program from outside the workspace.
#[test]
fn envoy_validates_the_generated_bootstrap() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let Some(envoy) = crate::loadbench::procs::Peers::discover(&root).envoy else {
        eprintln!(
            "SKIPPED envoy_validates_the_generated_bootstrap: no Envoy binary (set ENVOY_BIN or run benches/scripts/install-peers.sh)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(dir.path());
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, envoy_yaml(&job(Some(certs))).unwrap()).unwrap();
    let out = std::process::Command::new(&envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} refused the bootstrap:\n{text}",
        envoy.display()
    );
    assert!(
        text.contains("configuration") && text.contains("OK"),
        "{text}"
    );
}
