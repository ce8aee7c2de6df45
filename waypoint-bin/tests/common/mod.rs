//! Helpers shared by the end-to-end tests.
#![allow(clippy::unwrap_used, dead_code)] // test code; not every test file uses every helper

pub(crate) mod ca;
pub(crate) mod controller;
pub(crate) mod deploy;
pub(crate) mod kube;
pub(crate) mod rbac;
pub(crate) mod run;

use std::net::SocketAddr;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET (e.g. to the admin server); returns the whole response as text.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

/// A loopback port free at the time of asking, outside the range outgoing connections take
/// theirs from (see `waypoint_benches::loadbench::runner::free_port`).
pub(crate) fn free_port() -> u16 {
    waypoint_benches::loadbench::runner::free_port().unwrap()
}

/// A Service `name` in `default` at `vip`:80 with one ready endpoint, `127.0.0.1:port`.
pub(crate) fn service(name: &str, vip: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {vip}
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#
    )
}

/// A plain HTTP/1.1 GET to the admin server on `127.0.0.1:port`, from a synchronous test;
/// returns the whole response.
pub(crate) fn admin_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// An AuthorizationPolicy on Service `default/echo` allowing only `ns/shop/sa/cart`, to append
/// to a manifest.
pub(crate) const ONLY_CART: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-cart, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/cart"]}}]
"#;

/// Kills the child when dropped, so a failed assertion leaves no process behind.
pub(crate) struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `waypoint echo` on `127.0.0.1:port`, answering as pod `pod`; killed when dropped.
pub(crate) fn echo(port: u16, pod: &str) -> Guard {
    Guard(
        waypoint()
            .args([
                "echo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--pod",
                pod,
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// An echo backend in this process on a free loopback port, answering as pod `pod`.
pub(crate) async fn echo_in_process(pod: &str) -> SocketAddr {
    waypoint_bin::tools::echo::spawn(
        ([127, 0, 0, 1], 0).into(),
        waypoint_bin::tools::echo::EchoIdentity {
            pod: pod.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// The `waypoint` binary this test run built.
pub(crate) fn waypoint() -> Command {
    Command::new(env!("CARGO_BIN_EXE_waypoint"))
}
