use super::*;
use waypoint_core::config::{PortProtocol, parse_manifests};

fn job(policies: usize) -> Job {
    Job {
        listen_port: 15088,
        admin_port: 15000,
        upstream: "127.0.0.1:18081".parse().unwrap(),
        proxy_protocol: true,
        routes: 1,
        policies,
        tls: None,
        mesh_endpoints: false,
    }
}

#[test]
fn the_waypoint_manifests_make_the_echo_port_tcp_with_the_ten_policies() {
    let config = parse_manifests(&waypoint_manifests(&job(10)), "tcp.yaml").unwrap();
    for s in &config.statuses {
        assert!(s.is_ok(), "manifest rejected: {s:?}");
    }
    let backend = config
        .service_at("10.96.0.10:80".parse().unwrap())
        .expect("the PROXY header's destination is the echo Service");
    assert_eq!(backend.protocol.kind, PortProtocol::Tcp);
    assert_eq!(config.resources.authorization_policies.len(), 10);
    assert!(
        waypoint_manifests(&job(10)).contains("principals: [\"cluster.local/ns/ns-9/sa/sa-9\"]")
    );
}

#[test]
fn envoy_proxies_tcp_after_network_rbac_on_the_proxy_protocol_identity() {
    let yaml = envoy_yaml(&job(10)).unwrap();
    let v: Value = serde_saphyr::from_str(&yaml).unwrap();
    let listener = &v["static_resources"]["listeners"][0];
    let lf = &listener["listener_filters"][0];
    assert_eq!(lf["name"], "envoy.filters.listener.proxy_protocol");
    assert_eq!(lf["typed_config"]["rules"][0]["tlv_type"], 0xD0);
    let filters = listener["filter_chains"][0]["filters"].as_array().unwrap();
    let names: Vec<&str> = filters
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "proxy_protocol_authority",
            "envoy.filters.network.rbac",
            "envoy.filters.network.tcp_proxy"
        ]
    );
    let rbac = &filters[1]["typed_config"];
    assert_eq!(
        rbac["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
    );
    assert_eq!(rbac["rules"]["action"], "ALLOW");
    let policies = rbac["rules"]["policies"].as_object().unwrap();
    assert_eq!(policies.len(), 10);
    let last = &policies["ns[default]-policy[allow-9]-rule[0]"]["principals"][0]["filter_state"];
    assert_eq!(last["key"], "io.istio.peer_principal");
    assert_eq!(
        last["string_match"]["exact"],
        crate::loadbench::configs::client_identity(10)
    );
    assert_eq!(filters[2]["typed_config"]["cluster"], "echo");
    let endpoint = &v["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        [0]["endpoint"]["address"]["socket_address"];
    assert_eq!(endpoint["port_value"], 18081);
}

#[test]
fn without_policies_envoy_has_no_rbac_filter() {
    let v = envoy_bootstrap(&job(0));
    let filters = v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        .as_array()
        .unwrap();
    assert_eq!(filters.len(), 2);
    assert!(!waypoint_manifests(&job(0)).contains("AuthorizationPolicy"));
}
