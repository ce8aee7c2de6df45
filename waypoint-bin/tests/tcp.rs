//! TCP proxying through the real binary: the flags that shape it (`--tcp-idle-timeout`,
//! `--protocol-detection-timeout`), its access log line, AuthorizationPolicy on connections,
//! and `waypoint check`'s protocol per Service port.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::run::{Running, admin_get_when_up, check};
use waypoint_core::wire::proxy_protocol::{TLV_PEER_IDENTITY, encode_v2};

const SOURCE: &str = "10.244.0.7:40000";
const IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/sleep";

/// A backend on loopback: `PING` lines answered `+PONG`, and, when `greet`, a greeting sent
/// first (server-first, as MySQL). Returns its port.
fn backend(greet: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                if greet {
                    let _ = s.write_all(b"GREETING\n");
                }
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if buf[..n].starts_with(b"PING") {
                        let _ = s.write_all(b"+PONG\r\n");
                    }
                }
            });
        }
    });
    port
}

/// Services `redis` (10.96.2.1:6379, appProtocol redis) and `mysqlish` (10.96.2.2:3307, no
/// name), with their endpoints on loopback.
fn manifests(redis: u16, greeter: u16) -> String {
    // The slice's port carries the Service port's name, as Kubernetes writes it.
    let service = |name: &str, vip: &str, port: &str, slice_port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {vip}\n  ports: [{port}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{slice_port}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\n"
        )
    };
    let redis_port = format!("{{name: main, port: {redis}}}");
    let greeter_port = format!("{{port: {greeter}}}");
    service(
        "redis",
        "10.96.2.1",
        "{name: main, port: 6379, appProtocol: redis}",
        &redis_port,
    ) + &service("mysqlish", "10.96.2.2", "{port: 3307}", &greeter_port)
}

/// How ztunnel opens connections to the waypoint's sandwich listener.
trait AsZtunnel {
    /// A connection to original destination `destination` from `sleep`.
    fn connect(&self, destination: &str) -> TcpStream;
    /// A connection to `destination` from a client proven to be `identity`.
    fn connect_as(&self, destination: &str, identity: &str) -> TcpStream;
}

impl AsZtunnel for Running {
    fn connect(&self, destination: &str) -> TcpStream {
        self.connect_as(destination, IDENTITY)
    }

    fn connect_as(&self, destination: &str, identity: &str) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", self.sandwich)).unwrap();
        let header = encode_v2(
            SOURCE.parse().unwrap(),
            destination.parse().unwrap(),
            &[(TLV_PEER_IDENTITY, identity.as_bytes())],
        );
        s.write_all(&header).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

#[test]
fn the_tcp_idle_timeout_flag_closes_a_quiet_connection_and_the_access_log_says_what_it_carried() {
    let redis = backend(false);
    let config = manifests(redis, backend(true));
    let (wp, _dir) = Running::start(
        &config,
        &["--tcp-idle-timeout", "300ms", "--access-log", "json"],
        &[],
    );
    let mut s = wp.connect("10.96.2.1:6379");
    s.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    // Quiet from here: the waypoint closes both sides after 300 ms.
    let quiet = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let waited = quiet.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    let line = wp.stdout.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    let fields = entry.as_object_mut().unwrap();
    let start = fields.remove("start_time").unwrap();
    assert!(start.as_str().unwrap().ends_with('Z'), "{line}");
    let duration = fields.remove("duration_ms").unwrap().as_u64().unwrap();
    assert!((250..3000).contains(&duration), "{line}");
    let upstream = format!("127.0.0.1:{redis}");
    assert_eq!(
        entry,
        serde_json::json!({
            "source_principal": IDENTITY,
            "source_address": SOURCE,
            "destination_address": "10.96.2.1:6379",
            "destination_service": "redis.default.svc.cluster.local",
            "method": "-",
            "authority": null,
            "path": "-",
            "protocol": "TCP",
            "response_code": 0,
            "response_flags": "-",
            "upstream_host": upstream,
            "bytes_received": 6,
            "bytes_sent": 7,
            "trace_id": "-",
            "route": null,
            // The built-in authorization ran: no policy applies, so allowed.
            "authz": "allow",
        })
    );
}

#[test]
fn the_protocol_detection_timeout_flag_sets_how_long_a_server_first_client_waits_and_zero_means_http()
 {
    let config = manifests(backend(false), backend(true));
    let (wp, _dir) = Running::start(
        &config,
        &[],
        &[("WAYPOINT_PROTOCOL_DETECTION_TIMEOUT", "1s")],
    );
    let mut s = wp.connect("10.96.2.2:3307");
    let started = Instant::now();
    let mut greeting = [0u8; 9];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"GREETING\n");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950), "{waited:?}");

    // Detection off: the unnamed port is HTTP; the greeting never comes, and bytes that are
    // not HTTP are answered by the waypoint's HTTP server.
    let (wp, _dir) = Running::start(&config, &["--protocol-detection-timeout", "0s"], &[]);
    let mut s = wp.connect("10.96.2.2:3307");
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 9];
    let err = s.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    s.write_all(b"PING\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[test]
fn waypoint_check_prints_each_service_ports_protocol_and_why() {
    let (ok, out) = check(&manifests(1, 2), &[]);
    assert!(ok, "{out}");
    let ports: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "service ports:")
        .take(3)
        .collect();
    assert_eq!(
        ports,
        [
            "service ports:",
            "    Service default/mysqlish port 3307: detect (no appProtocol or known port name)",
            "    Service default/redis port 6379: tcp (appProtocol \"redis\")",
        ],
        "{out}"
    );
}

#[test]
fn with_a_gateway_bytes_to_an_unbound_destination_are_closed_flagged_nr_and_counted() {
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: default}\nspec:\n  gatewayClassName: waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n";
    let config = manifests(backend(false), backend(true)) + gateway;
    let (wp, _dir) = Running::start(&config, &["--gateway", "default/wp"], &[]);
    // Neither Service names the waypoint: both are unbound. Bytes that are not HTTP close.
    let mut s = wp.connect("10.96.2.1:6379");
    s.write_all(b"PING\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    let metrics = admin_get_when_up(wp.admin, "/metrics");
    assert!(
        metrics.contains("waypoint_unbound_destination_total{reason=\"service_not_bound\"} 1"),
        "{metrics}"
    );
    let opened = metrics
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(opened.contains("response_flags=\"NR\""), "{opened}");
    assert!(
        opened.contains("destination_service_name=\"redis\""),
        "{opened}"
    );
}

/// Policies on the redis Service: `sleep` allowed; `web` only by a rule that needs HTTP
/// attributes (which a TCP connection cannot have); `intruder` denied by a rule whose
/// HTTP-only condition is ignored on TCP, so it denies more, not less.
const POLICIES: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sleep, namespace: default}
spec:
  targetRefs: [{kind: Service, group: '', name: redis}]
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/sleep, cluster.local/ns/default/sa/intruder]}}]
  - from: [{source: {principals: [cluster.local/ns/default/sa/web]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-intruder-posts, namespace: default}
spec:
  targetRefs: [{kind: Service, group: '', name: redis}]
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/intruder]}}]
    to: [{operation: {methods: [POST]}}]
";

#[test]
fn authorization_policies_decide_each_connection_once_with_istios_rule_for_http_only_fields() {
    let config = manifests(backend(false), backend(true)) + "---\n" + POLICIES;
    let (wp, _dir) = Running::start(&config, &["--access-log", "json"], &[]);
    let principal = |sa: &str| format!("spiffe://cluster.local/ns/default/sa/{sa}");

    let mut allowed = wp.connect_as("10.96.2.1:6379", &principal("sleep"));
    allowed.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    allowed.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    drop(allowed);
    for sa in ["web", "intruder"] {
        let mut s = wp.connect_as("10.96.2.1:6379", &principal(sa));
        // Sent before the decision; never answered, because never forwarded.
        let _ = s.write_all(b"PING\r\n");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{sa}: {rest:?}");
    }

    let mut lines: Vec<serde_json::Value> = (0..3)
        .map(|_| {
            let line = wp.stdout.recv_timeout(Duration::from_secs(5)).unwrap();
            serde_json::from_str(&line).unwrap()
        })
        .collect();
    lines.sort_by_key(|l| l["source_principal"].as_str().unwrap().to_owned());
    let seen: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["source_principal"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                l["response_flags"].clone(),
                (l["authz"].clone(), l["authz_policy"].clone()),
                l["bytes_received"].clone(),
                l["upstream_host"].is_string(),
            )
        })
        .collect();
    let json = serde_json::Value::from;
    assert_eq!(
        seen,
        [
            (
                "intruder".to_owned(),
                json("RBAC"),
                (
                    json("deny"),
                    json("AuthorizationPolicy default/deny-intruder-posts#0")
                ),
                serde_json::json!(0),
                false
            ),
            (
                "sleep".to_owned(),
                json("-"),
                (
                    json("allow"),
                    json("AuthorizationPolicy default/allow-sleep#0")
                ),
                serde_json::json!(6),
                true
            ),
            (
                "web".to_owned(),
                json("RBAC"),
                (json("deny"), serde_json::Value::Null),
                serde_json::json!(0),
                false
            ),
        ],
        "{lines:#?}"
    );

    let metrics = admin_get_when_up(wp.admin, "/metrics");
    let mut decisions: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("waypoint_authz_decisions_total{"))
        .collect();
    decisions.sort();
    assert_eq!(
        decisions,
        [
            "waypoint_authz_decisions_total{decision=\"allow\",action=\"ALLOW\",policy=\"default/allow-sleep\"} 1",
            "waypoint_authz_decisions_total{decision=\"deny\",action=\"ALLOW\",policy=\"-\"} 1",
            "waypoint_authz_decisions_total{decision=\"deny\",action=\"DENY\",policy=\"default/deny-intruder-posts\"} 1",
        ],
        "{metrics}"
    );
    let denied = metrics
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .filter(|l| l.contains("response_flags=\"RBAC\""))
        .count();
    assert_eq!(denied, 2, "{metrics}");
}

#[test]
fn the_tcp_idle_timeout_is_also_read_from_its_environment_variable() {
    let config = manifests(backend(false), backend(true));
    let (wp, _dir) = Running::start(&config, &[], &[("WAYPOINT_TCP_IDLE_TIMEOUT", "300ms")]);
    let mut s = wp.connect("10.96.2.1:6379");
    s.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).unwrap();
    let quiet = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}
