//! Which protocol a connection gets, by what its original destination is.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::net::SocketAddr;

use crate::config::build::{EndpointStatsCache, MeshOptions};
use crate::config::load::parse_manifests_with;
use crate::config::{Config, PortProtocol, SelectedBy};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/use-waypoint: wp}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: mesh, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: waypoint
  addresses: [{type: IPAddress, value: 10.0.0.1}]
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
  - {name: web, port: 80, protocol: HTTP}
  - {name: bytes, port: 9000, protocol: TCP}
  - {name: pass, port: 443, protocol: TLS, tls: {mode: Passthrough}}
  - {name: term, port: 8443, protocol: TLS, tls: {mode: Terminate, certificateRefs: [{name: c}]}}
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: mesh}
spec:
  clusterIP: 10.96.0.9
  selector: {app: cache}
  ports: [{name: redis, port: 6379}, {name: other, port: 7000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cache-1, namespace: mesh, labels: {kubernetes.io/service-name: cache}}
addressType: IPv4
ports: [{name: redis, port: 6379}, {name: other, port: 7000}]
endpoints: [{addresses: [10.1.0.5]}]
---
apiVersion: v1
kind: Pod
metadata: {name: cache-0, namespace: mesh, labels: {app: cache}}
status: {podIP: 10.1.0.5}
"#;

fn build(gateway: bool) -> Config {
    let cache = EndpointStatsCache::with_mesh(MeshOptions {
        gateway: gateway.then(|| ("mesh".into(), "wp".into())),
        ..Default::default()
    });
    parse_manifests_with(MANIFESTS, "test.yaml", &cache).unwrap()
}

fn protocol_of(config: &Config, destination: &str) -> (PortProtocol, SelectedBy) {
    let d: SocketAddr = destination.parse().unwrap();
    let p = config.protocol(Some(d));
    (p.kind, p.selected_by)
}

#[test]
fn services_pods_and_gateway_listeners_each_give_their_protocol() {
    let config = build(true);
    let listener = |p: &str| SelectedBy::Listener(p.to_owned());
    let table = [
        (
            "10.96.0.9:6379",
            PortProtocol::Tcp,
            SelectedBy::PortName("redis".into()),
        ),
        (
            "10.96.0.9:7000",
            PortProtocol::Detect,
            SelectedBy::Unspecified,
        ),
        // The pod, on the port the Service names and on one it does not.
        (
            "10.1.0.5:6379",
            PortProtocol::Tcp,
            SelectedBy::PortName("redis".into()),
        ),
        (
            "10.1.0.5:5555",
            PortProtocol::Detect,
            SelectedBy::Unspecified,
        ),
        ("10.0.0.1:80", PortProtocol::Http, listener("HTTP")),
        ("10.0.0.1:9000", PortProtocol::Tcp, listener("TCP")),
        ("10.0.0.1:443", PortProtocol::Tls, listener("TLS")),
        // Terminating TLS for bytes: TCP, which the stream path refuses.
        ("10.0.0.1:8443", PortProtocol::Tcp, listener("TLS")),
        ("10.0.0.1:15008", PortProtocol::Http, listener("HBONE")),
        // Nothing served, binding enforced: detected (HTTP then gets its 404).
        (
            "10.96.0.99:80",
            PortProtocol::Detect,
            SelectedBy::Unspecified,
        ),
    ];
    for (destination, kind, by) in table {
        assert_eq!(
            protocol_of(&config, destination),
            (kind, by),
            "{destination}"
        );
    }
    assert_eq!(config.protocol(None).kind, PortProtocol::Detect);
}

#[test]
fn without_binding_an_unknown_destination_is_http_as_before_detection() {
    let config = build(false);
    assert_eq!(protocol_of(&config, "10.96.0.99:80").0, PortProtocol::Http);
    assert_eq!(config.protocol(None).kind, PortProtocol::Http);
    // Services are served either way, with their own protocol.
    assert_eq!(protocol_of(&config, "10.96.0.9:6379").0, PortProtocol::Tcp);
}

#[test]
fn only_a_tls_listener_that_terminates_is_refused_for_bytes() {
    let config = build(true);
    let at = |d: &str| config.gateway_listener_at(d.parse().unwrap()).unwrap();
    assert!(super::terminates_tls_for_bytes(at("10.0.0.1:8443")));
    assert!(!super::terminates_tls_for_bytes(at("10.0.0.1:443")));
    assert!(!super::terminates_tls_for_bytes(at("10.0.0.1:9000")));
    assert!(
        config
            .gateway_listener_at("10.0.0.2:443".parse().unwrap())
            .is_none()
    );
}
