//! DestinationRule `outlierDetection` through the real binary: a Service with two endpoints, a
//! `waypoint echo` and a backend that answers every request 503. After its third 503 in a row
//! the failing endpoint is ejected: requests reach only the healthy one, `/config_dump` and
//! `/metrics` show the ejection, and once the ejection time is over it is tried again. Invalid
//! settings are refused by `waypoint check` with the field named.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::run::{Echo, Running, check, served};

const VIP: &str = "10.96.0.10";

/// A backend on 127.0.0.1 that answers every request `503` and counts them.
struct Failing {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Failing {
    fn start() -> Failing {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let counted = counted.clone();
                std::thread::spawn(move || {
                    // One request per connection: read its head, answer, close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\
                          connection: close\r\n\r\ndown",
                    );
                });
            }
        });
        Failing { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Service `default/echo` at `VIP`:80 with endpoints 127.0.0.1:`a` and 127.0.0.1:`b` (one
/// EndpointSlice each, as the ports differ), and a DestinationRule for it with
/// `outlierDetection` = `outlier` (YAML flow mapping).
fn manifests(a: u16, b: u16, outlier: &str) -> String {
    let slice = |n: u16, port: u16| {
        format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: echo-{n}, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\n\
         spec:\n  clusterIP: {VIP}\n  ports: [{{name: http, port: 80}}]\n{}{}---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: echo, namespace: default}}\n\
         spec:\n  host: echo.default.svc.cluster.local\n  trafficPolicy:\n    \
         outlierDetection: {outlier}\n",
        slice(1, a),
        slice(2, b)
    )
}

/// One GET `/` through the waypoint to the Service.
fn get(waypoint: &Running) -> String {
    waypoint.send_to(&format!("{VIP}:80"), "10.244.0.7:43210", "/", &[])
}

#[test]
fn a_backend_failing_three_times_in_a_row_is_ejected_shown_and_tried_again_after_its_time() {
    let (echo, failing) = (Echo::start(), Failing::start());
    let outlier = "{consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 3s, \
                   maxEjectionPercent: 50}";
    let (waypoint, _dir) = Running::start(&manifests(echo.port, failing.port, outlier), &[], &[]);

    // Until the third 503 the failing endpoint takes its share; no retries are configured, so
    // each of its answers reaches the client.
    let deadline = Instant::now() + Duration::from_secs(30);
    while failing.hits() < 3 {
        assert!(
            Instant::now() < deadline,
            "the failing backend was never picked"
        );
        let answer = get(&waypoint);
        assert!(served(&answer) || answer.contains("503"), "{answer}");
    }
    assert_eq!(failing.hits(), 3);

    // Ejected: what the admin server shows.
    let dump = waypoint.admin("/config_dump");
    let failing_address = format!("\"address\": \"127.0.0.1:{}\"", failing.port);
    let at = dump
        .find("\"outlierDetection\"")
        .unwrap_or_else(|| panic!("{dump}"));
    let shown = &dump[at..];
    assert!(shown.contains(&failing_address), "{shown}");
    assert!(shown.contains("\"ejections\": 1"), "{shown}");
    assert!(shown.contains("\"ejectedUntil\""), "{shown}");
    assert!(shown.contains("\"consecutive_5xx\": 1"), "{shown}");
    let metrics = waypoint.admin("/metrics");
    let labels = "namespace=\"default\",service=\"echo\",port=\"80\"";
    for line in [
        format!(
            "waypoint_upstream_outlier_ejections_total{{{labels},reason=\"consecutive_5xx\"}} 1"
        ),
        format!("waypoint_upstream_outlier_ejected{{{labels}}} 1"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing in\n{metrics}"
        );
    }

    // While it is out, every request reaches the echo backend. Ten requests in a row, each
    // of which would otherwise go to the failing endpoint half the time; the ejection lasts
    // 3 s, so should the machine stall that long the failing backend may see one again, which
    // the count then shows (and the test reports rather than hides).
    let started = Instant::now();
    for _ in 0..10 {
        let answer = get(&waypoint);
        if started.elapsed() < Duration::from_secs(3) {
            assert!(served(&answer), "{answer}");
        }
    }
    if started.elapsed() < Duration::from_secs(3) {
        assert_eq!(failing.hits(), 3, "an ejected endpoint was picked");
    }

    // After the ejection time it is tried again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while failing.hits() == 3 {
        assert!(
            Instant::now() < deadline,
            "the ejected endpoint never came back"
        );
        get(&waypoint);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_outlier_detection_a_failing_endpoint_keeps_its_share() {
    // The same two endpoints with settings that never eject (consecutive5xxErrors: 0): the
    // failing one keeps getting requests past any threshold.
    let (echo, failing) = (Echo::start(), Failing::start());
    let outlier = "{consecutive5xxErrors: 0, maxEjectionPercent: 100}";
    let (waypoint, _dir) = Running::start(&manifests(echo.port, failing.port, outlier), &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while failing.hits() < 8 {
        assert!(
            Instant::now() < deadline,
            "the failing backend stopped being picked"
        );
        get(&waypoint);
    }
    let metrics = waypoint.admin("/metrics");
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("waypoint_upstream_outlier_ejections_total{") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
}

#[test]
fn invalid_outlier_settings_are_refused_by_check_with_the_field_named() {
    for (outlier, field) in [
        (
            "{maxEjectionPercent: 150}",
            "outlierDetection.maxEjectionPercent",
        ),
        (
            "{minHealthPercent: -1}",
            "outlierDetection.minHealthPercent",
        ),
        (
            "{baseEjectionTime: 0s}",
            "outlierDetection.baseEjectionTime",
        ),
        ("{interval: 100us}", "outlierDetection.interval"),
        (
            "{consecutive5xxErrors: -3}",
            "outlierDetection.consecutive5xxErrors",
        ),
        (
            "{consecutiveLocalOriginFailures: 2}",
            "outlierDetection.consecutiveLocalOriginFailures",
        ),
        ("{consecutive5xx: 3}", "consecutive5xx"),
    ] {
        let (ok, out) = check(&manifests(8080, 8081, outlier), &[]);
        assert!(!ok, "{outlier} accepted:\n{out}");
        assert!(
            out.contains(field),
            "{outlier}: {field} not named in\n{out}"
        );
    }
    let (ok, out) = check(
        &manifests(
            8080,
            8081,
            "{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2, \
             consecutiveGatewayErrors: 2, outlierDetectionHttpErrorCodes: [429]}",
        ),
        &[],
    );
    assert!(ok, "{out}");
}
