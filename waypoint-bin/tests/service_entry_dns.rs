//! ServiceEntries with `resolution: DNS` through the real binary, against a DNS server the test
//! runs (`--dns-server`): the answer becomes the backend's endpoints, a failing server leaves the
//! last answer in use, and a changed answer is picked up once its TTL (1 s) runs out, from files
//! and under `--kube` (where no watch event comes to prompt a rebuild).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kube::{emulator, eventually, run_kube_args, send};
use common::run::{Echo, Running};
use common::{Guard, waypoint};

const SOURCE: &str = "10.244.0.7:40000";
const VIP: &str = "240.240.0.1:80";

/// What the test DNS server answers for A queries of `api.example.com`.
#[derive(Clone, Copy)]
enum Answer {
    /// One A record, TTL 1 s.
    A(Ipv4Addr),
    /// SERVFAIL.
    Fail,
}

/// A UDP DNS responder on loopback: one question per query, A records only (other types get an
/// empty NOERROR answer), everything read from the shared [`Answer`].
struct DnsServer {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    queries: Arc<AtomicUsize>,
}

impl DnsServer {
    fn start(answer: Answer) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new(answer));
        let queries = Arc::new(AtomicUsize::new(0));
        let (shared, count) = (answer.clone(), queries.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let Some(reply) = respond(&buf[..n], *shared.lock().unwrap()) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&reply, from);
            }
        });
        DnsServer {
            port,
            answer,
            queries,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// The reply to one query (RFC 1035 §4.1), or `None` when it is not one we can read.
fn respond(query: &[u8], answer: Answer) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    // The question: labels up to the root, then QTYPE and QCLASS.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let ours = labels.join(".") == "api.example.com" && qtype == 1;
    let (rcode, record) = match answer {
        Answer::Fail => (2, None),
        Answer::A(ip) if ours => (0, Some(ip)),
        Answer::A(_) => (0, None),
    };
    let mut reply = Vec::new();
    reply.extend_from_slice(&header[..2]); // the query's id
    reply.extend_from_slice(&[0x81, 0x80 | rcode]); // response, RD, RA, rcode
    reply.extend_from_slice(&[0, 1, 0, u8::from(record.is_some()), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if let Some(ip) = record {
        reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

fn entry() -> String {
    r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  addresses: [240.240.0.1]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: PORT}]
  resolution: DNS
"#
    .to_owned()
}

/// Sends requests until one's answer satisfies `ok`, for at most 20 s.
fn until(wp: &Running, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = wp.send_to(VIP, SOURCE, "/", &[]);
        if ok(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "never {what}: last answer {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn from_pod(pod: &'static str) -> impl Fn(&str) -> bool {
    move |out: &str| out.contains("200 OK") && out.contains(&format!("\"pod\":\"{pod}\""))
}

#[test]
fn dns_answers_become_endpoints_survive_a_failing_server_and_follow_a_changed_answer() {
    let first = Echo::start();
    let second = second_backend(first.port);
    let dns = DnsServer::start(Answer::A(Ipv4Addr::LOCALHOST));
    let manifests = entry().replace("PORT", &first.port.to_string());
    let server = format!("127.0.0.1:{}", dns.port);
    let (wp, _dir) = Running::start(
        &manifests,
        &["--dns-server", &server, "--reload-interval", "100ms"],
        &[],
    );

    until(&wp, "served from the first answer", from_pod("echo-pod"));

    // The server fails: lookups go on failing (counted), the last address stays in use.
    dns.set(Answer::Fail);
    let failed_from = dns.queries.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while dns.queries.load(Ordering::SeqCst) < failed_from + 2 {
        assert!(Instant::now() < deadline, "the waypoint stopped asking");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = wp.send_to(VIP, SOURCE, "/", &[]);
    assert!(from_pod("echo-pod")(&out), "{out}");

    // A new answer replaces the old once the old one's TTL has run out.
    dns.set(Answer::A(Ipv4Addr::new(127, 0, 0, 2)));
    until(
        &wp,
        "served from the changed answer",
        from_pod("echo-second"),
    );
    drop(second);
}

/// The second answer's backend: `waypoint echo` on 127.0.0.2, on the first backend's port (the
/// entry has one target port).
fn second_backend(port: u16) -> Guard {
    Guard(
        waypoint()
            .args(["echo", "--listen", &format!("127.0.0.2:{port}")])
            .args(["--pod", "echo-second"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_kube_a_changed_dns_answer_is_applied_although_no_object_changed() {
    let first = Echo::start();
    let _second = second_backend(first.port);
    let dns = DnsServer::start(Answer::A(Ipv4Addr::LOCALHOST));
    let emulator = emulator().await;
    emulator
        .apply_yaml(&entry().replace("PORT", &first.port.to_string()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = format!("127.0.0.1:{}", dns.port);
    let kube = run_kube_args(&emulator, dir.path(), &["--dns-server", &server], &[]);
    let served_by = |pod: &'static str| {
        eventually(&format!("{VIP} served by {pod}"), || {
            let out = String::from_utf8_lossy(&send(&kube.sock, VIP).stdout).into_owned();
            (!from_pod(pod)(&out)).then_some(out)
        })
    };
    served_by("echo-pod");
    // Only the DNS answer changes; the API server sends nothing but bookmarks.
    dns.set(Answer::A(Ipv4Addr::new(127, 0, 0, 2)));
    served_by("echo-second");
}

#[test]
fn the_dns_server_can_be_named_by_its_environment_variable() {
    let echo = Echo::start();
    let dns = DnsServer::start(Answer::A(Ipv4Addr::LOCALHOST));
    let manifests = entry().replace("PORT", &echo.port.to_string());
    let server = format!("127.0.0.1:{}", dns.port);
    let (wp, _dir) = Running::start(
        &manifests,
        &["--reload-interval", "100ms"],
        &[("WAYPOINT_DNS_SERVER", &server)],
    );
    until(
        &wp,
        "served from the answer of the named server",
        from_pod("echo-pod"),
    );
    assert!(dns.queries.load(Ordering::SeqCst) > 0);
}
