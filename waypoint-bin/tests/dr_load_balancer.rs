//! DestinationRule `loadBalancer` through the real binary: three echo backends on distinct
//! loopback IPs behind one Service, a DestinationRule per case, and the pod named in each echo
//! answer telling which endpoint served. Consistent hashing keeps a key on one endpoint (over
//! 1,000 requests, and across config reloads), a cookie with a ttl is set when absent and sticks
//! when sent back, round robin visits every endpoint in turn, least request and random spread,
//! and `waypoint check` refuses invalid settings naming the field.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use waypoint_bin::tools::echo::{self, EchoIdentity};
use waypoint_bin::tools::send::{self, ProxyClaims};
use waypoint_core::transport::listener::ListenAddr;

use common::run::{Running, check};

const VIP: &str = "10.96.0.50:80";
/// A second Service on the same endpoints: once it answers, a rewritten config is in force.
const MARKER_VIP: &str = "10.96.0.51:80";

/// Three echo backends, `echo-2` on 127.0.0.2, `echo-3` on 127.0.0.3, `echo-4` on 127.0.0.4.
struct Backends(Vec<(String, u16)>);

impl Backends {
    async fn start() -> Backends {
        let mut out = Vec::new();
        for i in 2..=4u8 {
            let pod = format!("echo-{i}");
            let identity = EchoIdentity {
                pod: pod.clone(),
                ..Default::default()
            };
            let addr = echo::spawn(([127, 0, 0, i], 0).into(), identity)
                .await
                .unwrap();
            out.push((pod, addr.port()));
        }
        Backends(out)
    }

    /// The Service `echo` at [`VIP`] (and, with `marker`, `marker` at [`MARKER_VIP`]) with one
    /// EndpointSlice per backend, in the order of `order` (indexes into the backends), and
    /// `rule` appended.
    fn manifests(&self, order: &[usize], marker: bool, rule: &str) -> String {
        let mut docs = vec![service("echo", VIP)];
        let mut names = vec!["echo"];
        if marker {
            docs.push(service("marker", MARKER_VIP));
            names.push("marker");
        }
        for name in names {
            for &i in order {
                let (pod, port) = &self.0[i];
                docs.push(format!(
                    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{pod}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [\"127.0.0.{}\"]}}]\n",
                    i + 2
                ));
            }
        }
        if !rule.is_empty() {
            docs.push(rule.to_owned());
        }
        docs.join("---\n")
    }
}

fn service(name: &str, vip: &str) -> String {
    let ip = vip.split(':').next().unwrap();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80}}]\n"
    )
}

/// A DestinationRule for the echo Service with `load_balancer` (YAML flow mapping).
fn rule(load_balancer: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo-lb, namespace: default}}\nspec:\n  host: echo.default.svc.cluster.local\n  trafficPolicy:\n    loadBalancer: {load_balancer}\n"
    )
}

/// A kept-alive client connection, from `source` as the PROXY header says.
struct Client(SendRequest<Full<Bytes>>);

/// What came back: status, headers, and the pod that answered (empty when none did).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    pod: String,
}

impl Client {
    async fn connect(wp: &Running, source: &str, destination: &str) -> Client {
        let claims = ProxyClaims {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            identity: Some("spiffe://cluster.local/ns/default/sa/sleep".into()),
            baggage: None,
        };
        let to = ListenAddr::Tcp(([127, 0, 0, 1], wp.sandwich).into());
        let io = send::connect(&to, &claims).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client(sender)
    }

    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::get(path).header("host", "echo");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        // The previous exchange may still be finishing: wait until the connection can send.
        self.0.ready().await.unwrap();
        let resp = self
            .0
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let pod = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["pod"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Answer {
            status: parts.status,
            headers: parts.headers,
            pod,
        }
    }

    /// The pod that serves `path` with `headers`, asserting the request was served.
    async fn pod(&mut self, path: &str, headers: &[(&str, &str)]) -> String {
        let a = self.get(path, headers).await;
        assert_eq!(a.status, StatusCode::OK, "{path} {headers:?}");
        assert!(a.pod.starts_with("echo-"), "{}", a.pod);
        a.pod
    }
}

/// Waits until a request to the marker Service is served: the rewritten config is in force.
async fn wait_for_reload(wp: &Running) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Client::connect(wp, "10.0.0.7:40000", MARKER_VIP).await;
        if c.get("/", &[]).await.status == StatusCode::OK {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the rewritten config never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pod each of 30 users' header lands on.
async fn pods_by_user(c: &mut Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for u in 0..30 {
        let user = format!("user-{u}");
        let pod = c.pod("/", &[("x-user", &user)]).await;
        out.insert(user, pod);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_a_header_keeps_each_key_on_one_endpoint_for_1000_requests_and_across_reloads()
 {
    let backends = Backends::start().await;
    let lb = rule("{consistentHash: {httpHeaderName: x-user}}");
    let (wp, dir) = Running::start(
        &backends.manifests(&[0, 1, 2], false, &lb),
        &["--reload-interval", "100ms"],
        &[],
    );
    let mut c = Client::connect(&wp, "10.0.0.7:40000", VIP).await;
    let alice = c.pod("/", &[("x-user", "alice")]).await;
    for _ in 0..1000 {
        assert_eq!(c.pod("/", &[("x-user", "alice")]).await, alice);
    }
    let before = pods_by_user(&mut c).await;
    let used: HashSet<&String> = before.values().collect();
    assert!(used.len() > 1, "30 keys all on one endpoint: {before:?}");

    // The same endpoints listed in another order, and one more Service to see the reload by.
    std::fs::write(
        dir.path().join("config.yaml"),
        backends.manifests(&[2, 0, 1], true, &lb),
    )
    .unwrap();
    wait_for_reload(&wp).await;
    let mut c = Client::connect(&wp, "10.0.0.7:40000", VIP).await;
    assert_eq!(c.pod("/", &[("x-user", "alice")]).await, alice);
    assert_eq!(pods_by_user(&mut c).await, before);

    // One endpoint leaves: its keys move, every other key stays where it was.
    let gone = before.values().next().unwrap().clone();
    let index = backends.0.iter().position(|(pod, _)| *pod == gone).unwrap();
    let rest: Vec<usize> = (0..3).filter(|i| *i != index).collect();
    std::fs::write(
        dir.path().join("config.yaml"),
        backends.manifests(&rest, false, &lb),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        // The marker Service is gone in this config: wait until it is no longer served.
        let mut m = Client::connect(&wp, "10.0.0.7:40000", MARKER_VIP).await;
        if m.get("/", &[]).await.status != StatusCode::OK {
            let mut c = Client::connect(&wp, "10.0.0.7:40000", VIP).await;
            break pods_by_user(&mut c).await;
        }
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (user, pod) in &before {
        if *pod == gone {
            assert_ne!(after[user], gone);
        } else {
            assert_eq!(after[user], *pod, "{user} moved though its endpoint stayed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_keeps_a_header_key_on_one_endpoint_and_spreads_keys() {
    let backends = Backends::start().await;
    let lb = rule("{consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 251}}}");
    let (wp, _dir) = Running::start(&backends.manifests(&[0, 1, 2], false, &lb), &[], &[]);
    let mut c = Client::connect(&wp, "10.0.0.7:40000", VIP).await;
    let first = pods_by_user(&mut c).await;
    for _ in 0..3 {
        assert_eq!(pods_by_user(&mut c).await, first);
    }
    assert!(
        first.values().collect::<HashSet<_>>().len() > 1,
        "{first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_cookie_with_a_ttl_is_set_when_absent_and_sticks_when_sent_back() {
    let backends = Backends::start().await;
    let lb = rule(
        "{consistentHash: {httpCookie: {name: lb-session, path: /shop, ttl: 3600s, attributes: [{name: SameSite, value: Lax}, {name: Secure}]}}}",
    );
    let (wp, _dir) = Running::start(&backends.manifests(&[0, 1, 2], false, &lb), &[], &[]);
    let mut c = Client::connect(&wp, "10.0.0.7:40000", VIP).await;
    let mut pods = HashSet::new();
    for _ in 0..20 {
        let first = c.get("/shop", &[]).await;
        assert_eq!(first.status, StatusCode::OK);
        let set = first.headers["set-cookie"].to_str().unwrap().to_owned();
        let pair = set.split(';').next().unwrap().to_owned();
        assert!(pair.starts_with("lb-session="), "{set}");
        assert!(
            set.contains("; Max-Age=3600") && set.contains("; Path=/shop"),
            "{set}"
        );
        assert!(set.ends_with("; HttpOnly; SameSite=Lax; Secure"), "{set}");
        pods.insert(first.pod.clone());
        // Sent back, the cookie keeps the client on the endpoint of its first request, and no
        // new cookie is set.
        for _ in 0..20 {
            let again = c
                .get("/shop", &[("cookie", &format!("other=1; {pair}"))])
                .await;
            assert_eq!(again.pod, first.pod, "{pair}");
            assert!(again.headers.get("set-cookie").is_none());
        }
    }
    // New sessions spread: 20 generated cookies did not all land on one endpoint.
    assert!(pods.len() > 1, "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_cookie_without_a_ttl_is_never_set_and_hashes_when_sent() {
    let backends = Backends::start().await;
    let lb = rule("{consistentHash: {httpCookie: {name: lb-session}}}");
    let (wp, _dir) = Running::start(&backends.manifests(&[0, 1, 2], false, &lb), &[], &[]);
    let mut c = Client::connect(&wp, "10.0.0.7:40000", VIP).await;
    let mut pods = HashSet::new();
    for _ in 0..60 {
        let a = c.get("/", &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.headers.get("set-cookie").is_none());
        pods.insert(a.pod);
    }
    // Without a key every request got the default choice, which spreads.
    assert!(pods.len() > 1, "{pods:?}");
    let sent = c.pod("/", &[("cookie", "lb-session=abc")]).await;
    for _ in 0..50 {
        assert_eq!(c.pod("/", &[("cookie", "lb-session=abc")]).await, sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_parameter_key_keeps_each_value_on_one_endpoint() {
    let backends = Backends::start().await;
    let lb = rule("{consistentHash: {httpQueryParameterName: user}}");
    let (wp, _dir) = Running::start(&backends.manifests(&[0, 1, 2], false, &lb), &[], &[]);
    let mut c = Client::connect(&wp, "10.0.0.7:40000", VIP).await;
    let mut pods = HashSet::new();
    for u in 0..30 {
        let path = format!("/items?page=1&user=u{u}");
        let pod = c.pod(&path, &[]).await;
        for _ in 0..10 {
            assert_eq!(c.pod(&path, &[]).await, pod, "{path}");
        }
        pods.insert(pod);
    }
    assert!(pods.len() > 1, "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_ip_key_keeps_each_client_on_one_endpoint() {
    let backends = Backends::start().await;
    let lb = rule("{consistentHash: {useSourceIp: true}}");
    let (wp, _dir) = Running::start(&backends.manifests(&[0, 1, 2], false, &lb), &[], &[]);
    let mut pods = HashSet::new();
    for client in 1..=30 {
        // Each client twice, on two connections from different ports: the IP is the key.
        let mut a = Client::connect(&wp, &format!("10.1.0.{client}:40000"), VIP).await;
        let mut b = Client::connect(&wp, &format!("10.1.0.{client}:40001"), VIP).await;
        let pod = a.pod("/", &[]).await;
        for _ in 0..5 {
            assert_eq!(a.pod("/", &[]).await, pod);
            assert_eq!(b.pod("/", &[]).await, pod);
        }
        pods.insert(pod);
    }
    assert!(pods.len() > 1, "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_ip_key_keeps_each_client_on_one_endpoint_for_tcp_connections_too() {
    let backends = Backends::start().await;
    let lb = rule("{consistentHash: {useSourceIp: true}}");
    // A `tcp` port: each connection is proxied as bytes to the endpoint chosen when it opens.
    let config = backends
        .manifests(&[0, 1, 2], false, &lb)
        .replace("name: http", "name: tcp");
    let (wp, _dir) = Running::start(&config, &[], &[]);
    let mut pods = HashSet::new();
    for client in 1..=20 {
        let mut served = HashSet::new();
        for port in 0..4 {
            let source = format!("10.2.0.{client}:{}", 41000 + port);
            served.insert(Client::connect(&wp, &source, VIP).await.pod("/", &[]).await);
        }
        assert_eq!(served.len(), 1, "client {client}: {served:?}");
        pods.extend(served);
    }
    assert!(pods.len() > 1, "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_visits_every_endpoint_in_turn() {
    let backends = Backends::start().await;
    let lb = rule("{simple: ROUND_ROBIN}");
    let (wp, _dir) = Running::start(&backends.manifests(&[0, 1, 2], false, &lb), &[], &[]);
    let mut c = Client::connect(&wp, "10.0.0.7:40000", VIP).await;
    let mut order = Vec::new();
    for _ in 0..30 {
        order.push(c.pod("/", &[]).await);
    }
    for window in order.windows(3) {
        assert_eq!(window.iter().collect::<HashSet<_>>().len(), 3, "{order:?}");
    }
    for (i, pod) in order.iter().enumerate().skip(3) {
        assert_eq!(*pod, order[i - 3], "{order:?}");
    }
}

/// Sequential requests: how many each pod served.
async fn counts(wp: &Running, n: usize) -> BTreeMap<String, usize> {
    let mut c = Client::connect(wp, "10.0.0.7:40000", VIP).await;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(c.pod("/", &[]).await).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_and_random_spread_over_every_endpoint() {
    let backends = Backends::start().await;
    for lb in [
        "{simple: LEAST_REQUEST}",
        "{simple: LEAST_CONN}",
        "{simple: RANDOM}",
    ] {
        let (wp, _dir) =
            Running::start(&backends.manifests(&[0, 1, 2], false, &rule(lb)), &[], &[]);
        let counts = counts(&wp, 300).await;
        // A third each on average; every endpoint gets a fair part of it.
        assert_eq!(counts.len(), 3, "{lb}: {counts:?}");
        assert!(counts.values().all(|&n| n >= 40), "{lb}: {counts:?}");
    }
}

#[test]
fn invalid_load_balancer_settings_are_rejected_with_the_field_named() {
    let backends = Backends(vec![
        ("echo-2".into(), 8080),
        ("echo-3".into(), 8081),
        ("echo-4".into(), 8082),
    ]);
    let cases = [
        (
            "{simple: PASSTHROUGH}",
            "loadBalancer.simple: PASSTHROUGH is not supported at a waypoint",
        ),
        (
            "{consistentHash: {maglev: {tableSize: 1000}}}",
            "loadBalancer.consistentHash.maglev.tableSize: 1000 is not a prime number",
        ),
        (
            "{consistentHash: {httpCookie: {ttl: 10s}}}",
            "loadBalancer.consistentHash.httpCookie.name: required",
        ),
        (
            "{consistentHash: {httpHeaderName: x-user, useSourceIp: true}}",
            "loadBalancer.consistentHash.useSourceIp: may not be set together with httpHeaderName",
        ),
        (
            "{consistentHash: {ringHash: {minimumRingSize: 10000000}}}",
            "loadBalancer.consistentHash.ringHash.minimumRingSize: must be at most 8388608",
        ),
    ];
    for (lb, want) in cases {
        let (_, out) = check(&backends.manifests(&[0, 1, 2], false, &rule(lb)), &[]);
        assert!(out.contains(want), "{lb}: want {want:?} in\n{out}");
        assert!(
            !out.contains("ok      DestinationRule default/echo-lb"),
            "{out}"
        );
    }
    // Accepted (and not applied) rather than refused: locality and warmup.
    let lb = "{simple: ROUND_ROBIN, localityLbSetting: {enabled: true}, warmup: {duration: 30s}}";
    let (_, out) = check(&backends.manifests(&[0, 1, 2], false, &rule(lb)), &[]);
    assert!(
        out.contains("ok      DestinationRule default/echo-lb"),
        "{out}"
    );
    assert!(
        out.contains("\"simple\":\"ROUND_ROBIN\"")
            && out.contains("from DestinationRule default/echo-lb"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_joins_warms_up_before_it_gets_its_full_turn() {
    let backends = Backends::start().await;
    let lb = rule("{simple: ROUND_ROBIN, warmup: {duration: 1h, minimumPercent: 5}}");
    let (wp, dir) = Running::start(
        &backends.manifests(&[0, 1], false, &lb),
        &["--reload-interval", "100ms"],
        &[],
    );
    // The first endpoints the waypoint sees are not new.
    let before = counts(&wp, 60).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.values().all(|&n| n == 30), "{before:?}");

    std::fs::write(
        dir.path().join("config.yaml"),
        backends.manifests(&[0, 1, 2], true, &lb),
    )
    .unwrap();
    wait_for_reload(&wp).await;
    let after = counts(&wp, 600).await;
    // Its full turn would be 200 of 600; at 5% of it, about 10.
    let newcomer = after.get("echo-4").copied().unwrap_or(0);
    assert!(newcomer < 100, "{after:?}");
    assert_eq!(after.values().sum::<usize>(), 600);
}
