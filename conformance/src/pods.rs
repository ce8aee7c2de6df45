//! The cluster's pods: one in-process echo server per pod and port, answering like upstream's
//! echo servers (HTTP, h2c, WebSocket, and gRPC where the Deployment asks for it; upstream's
//! TCP line protocol for `TCP_ECHO_SERVER` pods; TLS with the mounted Secret's certificate on
//! the TLS port of pods that set one), all recording into one request log for mirror checks.
//! Also the gRPC and WebSocket clients' side of an attempt.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint_bin::tools::echo::tcp::TcpEcho;
use waypoint_bin::tools::echo::{self, EchoIdentity, EchoOptions, EchoServer, RequestLog, grpc};

use crate::case::{GrpcCall, RequestCase};
use crate::client::{Route, open};
use crate::cluster::Pod;
use crate::tls::{Certificates, server_config};
use crate::workload::DEFAULT_TLS_PORT;

/// How long one gRPC call or WebSocket exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// The running echo servers, by address, and the log they share.
#[derive(Default)]
pub struct Pods {
    running: HashMap<SocketAddr, (Pod, EchoServer)>,
    log: RequestLog,
    started: Option<Instant>,
}

impl Pods {
    /// Starts an echo server for every pod port not yet served; TLS ports present the
    /// certificate of the Secret the pod mounts, from `certs`.
    pub async fn ensure(&mut self, pods: &[Pod], certs: &Certificates) -> Result<(), String> {
        self.started.get_or_insert_with(Instant::now);
        for pod in pods {
            let setup = pod.echo.as_ref().map_err(Clone::clone)?;
            for (port, grpc) in &pod.ports {
                let addr = SocketAddr::new(pod.ip, *port);
                if self.running.contains_key(&addr) {
                    continue;
                }
                let identity = EchoIdentity {
                    pod: pod.name.clone(),
                    namespace: pod.namespace.clone(),
                    service: pod.deployment.clone(),
                };
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("echo server for pod {} on {addr}: {e}", pod.name))?;
                let mut options = EchoOptions::default()
                    .with_grpc(*grpc)
                    .with_h2c_only(setup.h2c_port == Some(*port))
                    .with_log(self.log.clone());
                if let Some(tcp_port) = setup.tcp_port {
                    options = options.with_tcp(TcpEcho {
                        tcp_port,
                        tls_port: setup.tls.as_ref().map_or(DEFAULT_TLS_PORT, |t| t.port),
                    });
                }
                if let Some(tls) = setup.tls.as_ref().filter(|t| t.port == *port) {
                    let file = |key: &str| {
                        certs.secret_data(&tls.secret, key).ok_or_else(|| {
                            format!(
                                "pod {}: Secret {} has no {key} the harness made",
                                pod.name, tls.secret
                            )
                        })
                    };
                    // Go's HTTPS server offers h2 and http/1.1; its TCP listener no ALPN.
                    let alpn: &[&[u8]] = if setup.tcp_port.is_some() {
                        &[]
                    } else {
                        &[b"h2", b"http/1.1"]
                    };
                    let config = server_config(file(&tls.cert_key)?, file(&tls.key_key)?, alpn)
                        .map_err(|e| format!("pod {}: Secret {}: {e}", pod.name, tls.secret))?;
                    options = options.with_tls(config);
                }
                let server = echo::spawn_with(listener, identity, options)
                    .map_err(|e| format!("echo server for pod {} on {addr}: {e}", pod.name))?;
                self.running.insert(addr, (pod.clone(), server));
            }
        }
        Ok(())
    }

    /// The mirrored copies the pods of `namespace/deployment` served, judged against `sent`:
    /// each request the harness sent carries a unique marker in `header`, and `sent` maps
    /// that marker to the path its copy must arrive with (the path the primary backend must
    /// see, after filters such as URLRewrite). A copy counts only when both its marker and
    /// its path match, as upstream finds in the mirror backend's log the line naming the
    /// request's own unique path; a copy of another request, or one sent to `/`, does not.
    pub fn mirrored_copies(
        &self,
        namespace: &str,
        deployment: &str,
        header: &str,
        sent: &HashMap<String, String>,
    ) -> MirrorCopies {
        let since = self.started.unwrap_or_else(Instant::now);
        let mut copies = MirrorCopies::default();
        let mut found = std::collections::HashSet::new();
        for r in self.log.matching(since, |r| {
            r.backend.namespace == namespace && r.backend.service == deployment
        }) {
            let Some(expected) = r.header(header).and_then(|marker| sent.get(marker)) else {
                continue;
            };
            if path_matches(&r.path, expected) {
                // A copy delivered twice is still one mirrored request.
                if found.insert(r.header(header).unwrap_or_default().to_owned()) {
                    copies.matched += 1;
                }
            } else if copies.wrong_path.len() < 3 {
                copies
                    .wrong_path
                    .push(format!("{} (expected {expected})", r.path));
            }
        }
        copies
    }
}

/// What a mirror backend's log held of the marked requests.
#[derive(Debug, Default, PartialEq)]
pub struct MirrorCopies {
    /// How many distinct marked requests arrived with the expected path.
    pub matched: usize,
    /// A few paths of marked copies that arrived with another path, for the failure message.
    pub wrong_path: Vec<String>,
}

/// Whether a logged request target is `expected`: exactly, or, when `expected` has no
/// query, its path without the query (the harness's expected paths name no query unless
/// the request sent one).
fn path_matches(target: &str, expected: &str) -> bool {
    target == expected
        || (!expected.contains('?') && target.split_once('?').is_some_and(|(p, _)| p == expected))
}

/// One gRPC call through the waypoint, judged as upstream's gRPC tests judge: the status code,
/// and on OK the full method the backend served, the serving pod and its namespace. Returns
/// the pod.
pub async fn grpc_attempt(
    route: &Route,
    req: &RequestCase,
    call: &GrpcCall,
) -> Result<Option<String>, String> {
    let io = open(route).await?;
    let authority = req
        .request
        .host
        .clone()
        .unwrap_or_else(|| route.default_host.clone());
    let service = call.service.as_deref().unwrap_or(grpc::SERVICE);
    let method = format!("/{service}/{}", call.method);
    let reply = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        grpc::call(io, &authority, &method, req.request.headers.iter()),
    )
    .await
    .map_err(|_| format!("no gRPC answer within {} s", EXCHANGE_TIMEOUT.as_secs()))?
    .map_err(|e| format!("gRPC call {method}: {e}"))?;
    let code = reply.code();
    if code != call.code {
        return Err(format!(
            "{method}: gRPC status {code} ({}), expected {}",
            reply.grpc_message.as_deref().unwrap_or_default(),
            call.code
        ));
    }
    if code != grpc::code::OK {
        return Ok(None);
    }
    let assertions = reply
        .assertions()
        .ok_or_else(|| format!("{method}: the answer carries no echo assertions"))?;
    // The backend reports the method it served: a waypoint that routed the call by one
    // method but delivered another (rewrote the path) answers OK from the wrong handler.
    if assertions.fully_qualified_method != method {
        return Err(format!(
            "{method}: the backend served method {:?}",
            assertions.fully_qualified_method
        ));
    }
    let context = assertions
        .context
        .clone()
        .ok_or_else(|| format!("{method}: the answer carries no echo context"))?;
    if let Some(backend) = &req.backend
        && !context.pod.starts_with(backend.as_str())
    {
        return Err(format!(
            "{method}: served by pod {:?}, expected {backend}-*",
            context.pod
        ));
    }
    if let Some(ns) = &req.namespace
        && &context.namespace != ns
    {
        return Err(format!(
            "{method}: served from namespace {:?}, expected {ns:?}",
            context.namespace
        ));
    }
    Ok(Some(context.pod))
}

/// Masks and frames one client WebSocket message (RFC 6455 §5.2).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = fastrand::u32(..).to_be_bytes();
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one unmasked server frame: (opcode, payload).
async fn read_frame<S: AsyncReadExt + Unpin>(io: &mut S) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            io.read_exact(&mut n).await?;
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            io.read_exact(&mut n).await?;
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    };
    if len > 1 << 20 {
        return Err(std::io::Error::other("frame larger than 1 MiB"));
    }
    let mut payload = vec![0u8; len as usize];
    io.read_exact(&mut payload).await?;
    Ok((head[0] & 0x0f, payload))
}

/// Upgrades to a WebSocket through the waypoint, as upstream's test does: a text message and
/// a binary message must both come back unchanged.
pub async fn websocket_attempt(route: &Route, req: &RequestCase) -> Result<Option<String>, String> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, websocket(route, req))
        .await
        .map_err(|_| {
            format!(
                "WebSocket exchange not done within {} s",
                EXCHANGE_TIMEOUT.as_secs()
            )
        })?
}

async fn websocket(route: &Route, req: &RequestCase) -> Result<Option<String>, String> {
    let mut io = open(route).await?;
    let host = req
        .request
        .host
        .clone()
        .unwrap_or_else(|| route.default_host.clone());
    let handshake = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        req.request.path
    );
    let io_err = |e: std::io::Error| format!("WebSocket: {e}");
    io.write_all(handshake.as_bytes()).await.map_err(io_err)?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await.map_err(io_err)?;
        head.push(byte[0]);
        if head.len() > 16 * 1024 {
            return Err("WebSocket: response head larger than 16 KiB".into());
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "101" {
        return Err(format!(
            "WebSocket upgrade answered {:?}",
            head.lines().next().unwrap_or_default()
        ));
    }
    // The accept key for the fixed client key of RFC 6455 §1.3.
    if !head
        .to_ascii_lowercase()
        .contains("s3pplmbitxaq9kygzzhzrbk+xoo=")
    {
        return Err("WebSocket upgrade without the right Sec-WebSocket-Accept".into());
    }
    for (opcode, payload) in [
        (0x1u8, b"Websocket Support!".to_vec()),
        (0x2, vec![1, 2, 3, 4, 5, 6, 7]),
    ] {
        io.write_all(&client_frame(opcode, &payload))
            .await
            .map_err(io_err)?;
        let (got_op, got) = read_frame(&mut io).await.map_err(io_err)?;
        if got_op != opcode || got != payload {
            return Err(format!(
                "WebSocket echo: sent opcode {opcode} {payload:?}, got opcode {got_op} {got:?}"
            ));
        }
    }
    let _ = io.write_all(&client_frame(0x8, &[0x03, 0xe8])).await;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use waypoint_bin::tools::echo::LoggedRequest;

    use super::*;

    const MARKER: &str = "x-conformance-probe";

    fn pods_with(copies: &[(&str, &str, &str)]) -> Pods {
        let pods = Pods {
            started: Some(Instant::now()),
            ..Pods::default()
        };
        for (service, path, marker) in copies {
            pods.log.record(LoggedRequest {
                at: Instant::now(),
                backend: Arc::new(EchoIdentity {
                    pod: format!("{service}-0"),
                    namespace: "infra".into(),
                    service: (*service).into(),
                }),
                method: "GET".into(),
                path: (*path).into(),
                host: "h".into(),
                proto: "HTTP/1.1".into(),
                headers: vec![(MARKER.into(), (*marker).into())],
            });
        }
        pods
    }

    fn sent(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect()
    }

    #[test]
    fn a_mirrored_copy_with_the_wrong_path_is_not_accepted() {
        let pods = pods_with(&[("v2", "/", "run-0")]);
        let copies = pods.mirrored_copies("infra", "v2", MARKER, &sent(&[("run-0", "/mirror")]));
        assert_eq!(copies.matched, 0);
        assert_eq!(copies.wrong_path, ["/ (expected /mirror)"]);
    }

    #[test]
    fn a_copy_of_another_request_is_not_accepted() {
        let pods = pods_with(&[("v2", "/mirror", "other-run-0")]);
        let copies = pods.mirrored_copies("infra", "v2", MARKER, &sent(&[("run-0", "/mirror")]));
        assert_eq!(copies, MirrorCopies::default());
    }

    #[test]
    fn copies_count_once_per_request_and_only_at_the_named_backend() {
        let pods = pods_with(&[
            ("v2", "/mirror", "run-0"),
            ("v2", "/mirror?request-id=1", "run-0"),
            ("v2", "/mirror", "run-1"),
            ("v3", "/mirror", "run-2"),
        ]);
        let sent = sent(&[
            ("run-0", "/mirror"),
            ("run-1", "/mirror"),
            ("run-2", "/mirror"),
        ]);
        assert_eq!(
            pods.mirrored_copies("infra", "v2", MARKER, &sent).matched,
            2
        );
        assert_eq!(
            pods.mirrored_copies("infra", "v3", MARKER, &sent).matched,
            1
        );
        assert_eq!(
            pods.mirrored_copies("other", "v2", MARKER, &sent).matched,
            0
        );
    }

    #[test]
    fn a_path_matches_exactly_or_without_its_query() {
        assert!(path_matches("/mirror", "/mirror"));
        assert!(path_matches("/mirror?a=1", "/mirror"));
        assert!(path_matches("/mirror?a=1", "/mirror?a=1"));
        assert!(!path_matches("/mirror?a=2", "/mirror?a=1"));
        assert!(!path_matches("/mirror/x", "/mirror"));
        assert!(!path_matches("/", "/mirror"));
    }
}
