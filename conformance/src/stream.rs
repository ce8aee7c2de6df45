//! TCP connections through the waypoint, judged as upstream's `conformance/utils/tcp` and
//! `conformance/utils/tls` judge them.
//!
//! - **Echo** (`MakeTCPRequestAndExpectEventuallyValidResponse`): dial (TLS from the client
//!   when the case says so), read the welcome, `PING`, `IS_TLS`, `TEST`. An attempt that fails
//!   on I/O (refused, reset, EOF, a handshake error, a `TEST` line that is not JSON) is retried
//!   every second until the patience runs out; an attempt that completes but answers wrong
//!   fails the case at once, as upstream's assertions inside its retry loop mark the test
//!   failed even when a later attempt would pass. One complete, right attempt passes.
//! - **Samples** (`EchoSendOnce` in a loop): every one of N single `TEST` exchanges must reach
//!   the expected backend; any error fails.
//! - **Weights** (`TestWeightedDistribution` over `EchoSendOnce`): 500 exchanges, 10 at a time,
//!   each backend's share within 5 % of its weight and a weight-0 backend none; up to ten
//!   rounds, one within tolerance passes.
//! - **Rejected** (`MakeTLSConnectionAndExpectEventuallyConnectionRejection`): a TLS handshake
//!   (with the server name, trusting no certificate) must end in EOF or a reset, retried every
//!   second until it does or the patience runs out. A handshake that reaches a certificate is
//!   not a rejection: the listener let the connection through.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use waypoint_bin::tools::echo::tcp::{MAX_LINE, WELCOME};

use crate::case::{ClientTls, ConnectionCase, ConnectionExpect};
use crate::client::{Route, open};
use crate::tls::{Certificates, ca_client_config, client_config, refusing_client_config};

/// Upstream's tick between attempts of an eventually-consistent check.
const TICK: Duration = Duration::from_secs(1);
/// How long one attempt may take before it counts as failed (upstream's reads have no
/// deadline; its check as a whole is bounded by the patience).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream's `EchoSendOnce` timeout in the multiple-routes test (the weighted test uses the
/// suite's request timeout, 10 s).
const SEND_ONCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Exchanges per traffic-split round, in flight at once, tolerance and rounds (upstream's
/// `weight` package).
const SPLIT_REQUESTS: usize = 500;
const SPLIT_CONCURRENCY: usize = 10;
const SPLIT_TOLERANCE: f64 = 0.05;
const SPLIT_TRIES: usize = 10;

/// Why an attempt did not pass: retried, or final.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Upstream would try again (I/O, handshake, undecodable answer).
    Retry(String),
    /// Upstream's assertion failed: the case fails.
    Wrong(String),
}

/// Runs one connection check to `route`.
pub async fn run_connection(
    conn: &ConnectionCase,
    route: &Route,
    certs: &Certificates,
    patience: Duration,
) -> Result<(), String> {
    match conn.expect {
        ConnectionExpect::Rejected => {
            let tls = conn.tls.as_ref().ok_or("a rejection probe needs tls")?;
            eventually_rejected(route, &tls.server_name, patience).await
        }
        ConnectionExpect::Echo => {
            if conn.backend.is_some() {
                let tls = conn
                    .tls
                    .as_ref()
                    .map(|t| Ok::<_, String>((client_tls_config(t, certs)?, t.server_name.clone())))
                    .transpose()?;
                eventually_echo(conn, route, tls.as_ref(), patience).await?;
            }
            if let (Some(n), Some(backend)) = (conn.samples, &conn.backend) {
                for i in 0..n {
                    let pod = send_once(route)
                        .await
                        .map_err(|e| format!("sample {}/{n}: {e}", i + 1))?;
                    if !pod.starts_with(&format!("{backend}-")) {
                        return Err(format!(
                            "sample {}/{n} reached pod {pod:?}, expected {backend}-*",
                            i + 1
                        ));
                    }
                }
            }
            if let Some(weights) = &conn.weights {
                await_listening(route, patience).await?;
                let mut last = String::new();
                for _ in 0..SPLIT_TRIES {
                    match split_round(route, weights).await {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e,
                    }
                }
                return Err(format!(
                    "TCP traffic split not within tolerance in {SPLIT_TRIES} rounds; last: {last}"
                ));
            }
            Ok(())
        }
    }
}

fn client_tls_config(
    tls: &ClientTls,
    certs: &Certificates,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    if let Some(cm) = &tls.ca_config_map {
        let ca = certs
            .ca_certificate(cm)
            .ok_or_else(|| format!("the harness made no CA ConfigMap {cm}"))?;
        return ca_client_config(ca);
    }
    let secret = tls.certificate.as_deref().unwrap_or_default();
    let cert = certs
        .certificate(secret)
        .ok_or_else(|| format!("the harness made no certificate Secret {secret}"))?;
    // Upstream's TCP dialer offers no ALPN.
    client_config(cert, &[])
}

/// A connection to the waypoint, TLS from the client when `tls` is given.
async fn dial(
    route: &Route,
    tls: Option<&(std::sync::Arc<rustls::ClientConfig>, String)>,
) -> Result<Box<dyn Io>, Failure> {
    let io = open(route).await.map_err(Failure::Retry)?;
    let Some((config, server_name)) = tls else {
        return Ok(Box::new(io));
    };
    let name = rustls::pki_types::ServerName::try_from(server_name.clone())
        .map_err(|e| Failure::Wrong(format!("server name {server_name:?}: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, io)
        .await
        .map_err(|e| Failure::Retry(format!("TLS handshake (SNI {server_name}): {e}")))?;
    Ok(Box::new(stream))
}

/// A byte stream either way.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn read_line<R: AsyncBufReadExt + Unpin>(io: &mut R, what: &str) -> Result<String, Failure> {
    let mut line = Vec::new();
    let n = io
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| Failure::Retry(format!("reading the {what}: {e}")))?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(Failure::Retry(format!(
            "reading the {what}: connection closed after {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    cmd: &str,
) -> Result<String, Failure> {
    io.get_mut()
        .write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(|e| Failure::Retry(format!("sending {cmd}: {e}")))?;
    read_line(io, &format!("answer to {cmd}")).await
}

/// One full exchange, judged.
async fn echo_attempt(
    conn: &ConnectionCase,
    route: &Route,
    tls: Option<&(std::sync::Arc<rustls::ClientConfig>, String)>,
) -> Result<(), Failure> {
    let mut io = BufReader::new(dial(route, tls).await?);
    let welcome = read_line(&mut io, "welcome message").await?;
    if welcome != WELCOME {
        return Err(Failure::Wrong(format!(
            "welcome message {welcome:?}, expected {WELCOME:?}"
        )));
    }
    let pong = command(&mut io, "PING").await?;
    if pong != "PONG\n" {
        return Err(Failure::Wrong(format!("PING answered {pong:?}")));
    }
    let is_tls = command(&mut io, "IS_TLS").await?;
    if is_tls.trim_end_matches('\n') != conn.backend_is_tls.to_string() {
        return Err(Failure::Wrong(format!(
            "IS_TLS answered {is_tls:?}, expected {}",
            conn.backend_is_tls
        )));
    }
    let test = command(&mut io, "TEST").await?;
    let payload: Value = serde_json::from_str(&test)
        .map_err(|e| Failure::Retry(format!("TEST answer {test:?}: {e}")))?;
    judge_test(conn, &payload).map_err(Failure::Wrong)
}

/// Upstream's `assertTestMessage`.
fn judge_test(conn: &ConnectionCase, payload: &Value) -> Result<(), String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut wrong = Vec::new();
    let namespace = text(&payload["namespace"]);
    if namespace != conn.namespace.clone().unwrap_or_default() {
        wrong.push(format!(
            "namespace {namespace:?}, expected {:?}",
            conn.namespace.as_deref().unwrap_or_default()
        ));
    }
    let pod = text(&payload["pod"]);
    let backend = conn.backend.as_deref().unwrap_or_default();
    if !pod.starts_with(&format!("{backend}-")) {
        wrong.push(format!("pod {pod:?}, expected {backend}-*"));
    }
    if let Some(name) = &conn.server_name {
        let seen = text(&payload["tls"]["serverName"]);
        if &seen != name {
            wrong.push(format!(
                "the backend saw server name {seen:?}, expected {name:?}"
            ));
        }
    }
    if let Some(protocol) = &conn.negotiated_protocol {
        let seen = text(&payload["tls"]["negotiatedProtocol"]);
        if &seen != protocol {
            wrong.push(format!(
                "negotiated protocol {seen:?}, expected {protocol:?}"
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("TEST answer {payload}: {}", wrong.join("; ")))
    }
}

async fn eventually_echo(
    conn: &ConnectionCase,
    route: &Route,
    tls: Option<&(std::sync::Arc<rustls::ClientConfig>, String)>,
    patience: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt =
            tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), echo_attempt(conn, route, tls))
                .await
                .unwrap_or_else(|_| Err(Failure::Retry("no answer in time".into())));
        match attempt {
            Ok(()) => return Ok(()),
            Err(Failure::Wrong(e)) => return Err(e),
            Err(Failure::Retry(e)) if Instant::now() + TICK > deadline => {
                return Err(format!(
                    "no valid TCP exchange within {} s; last: {e}",
                    patience.as_secs()
                ));
            }
            Err(Failure::Retry(_)) => tokio::time::sleep(TICK).await,
        }
    }
}

/// Upstream's `EchoSendOnce`: welcome, `TEST`, the pod that answered.
async fn send_once(route: &Route) -> Result<String, String> {
    let exchange = async {
        let mut io = BufReader::new(dial(route, None).await.map_err(failure_text)?);
        let welcome = read_line(&mut io, "welcome message")
            .await
            .map_err(failure_text)?;
        if welcome != WELCOME {
            return Err(format!("unexpected TCP welcome message: {welcome:?}"));
        }
        let line = command(&mut io, "TEST").await.map_err(failure_text)?;
        let payload: Value =
            serde_json::from_str(&line).map_err(|e| format!("TEST answer {line:?}: {e}"))?;
        match payload["pod"].as_str() {
            Some(pod) if !pod.is_empty() => Ok(pod.to_owned()),
            _ => Err(format!("TCP echo response missing pod name: {line:?}")),
        }
    };
    tokio::time::timeout(SEND_ONCE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", SEND_ONCE_TIMEOUT.as_secs()))?
}

fn failure_text(f: Failure) -> String {
    match f {
        Failure::Retry(e) | Failure::Wrong(e) => e,
    }
}

/// Upstream's `ExpectAddressBeAvailable`: the listener accepts connections.
async fn await_listening(route: &Route, patience: Duration) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    loop {
        match open(route).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("the listener accepted no connection: {e}"));
            }
            Err(_) => tokio::time::sleep(TICK).await,
        }
    }
}

/// The backend a pod belongs to: the weight key it is named after (`<key>-<n>`).
fn backend_of<'w>(pod: &str, weights: &'w BTreeMap<String, f64>) -> Option<&'w str> {
    weights
        .keys()
        .find(|b| pod.starts_with(&format!("{b}-")))
        .map(String::as_str)
}

async fn split_round(route: &Route, weights: &BTreeMap<String, f64>) -> Result<(), String> {
    let mut pods = Vec::with_capacity(SPLIT_REQUESTS);
    for _ in 0..SPLIT_REQUESTS / SPLIT_CONCURRENCY {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..SPLIT_CONCURRENCY {
            let route = route.clone();
            calls.spawn(async move { send_once(&route).await });
        }
        while let Some(joined) = calls.join_next().await {
            pods.push(joined.map_err(|e| e.to_string())??);
        }
    }
    judge_split(&pods, weights)
}

/// Upstream's distribution check over the pods that answered.
fn judge_split(pods: &[String], weights: &BTreeMap<String, f64>) -> Result<(), String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for pod in pods {
        match backend_of(pod, weights) {
            Some(b) => *seen.entry(b).or_default() += 1,
            None => errors.push(format!("pod {pod} belongs to no weighted backend")),
        }
    }
    let active = weights.values().filter(|w| **w != 0.0).count();
    if seen.len() != active {
        errors.push(format!(
            "expected {active} backends to receive traffic, but got {}",
            seen.len()
        ));
    }
    for (backend, want) in weights {
        let got = seen.get(backend.as_str()).copied().unwrap_or(0) as f64 / pods.len() as f64;
        if *want == 0.0 && got > 0.0 || (got - want).abs() > SPLIT_TOLERANCE {
            errors.push(format!(
                "{backend}: {:.1}% of connections, expected {:.1}%",
                got * 100.0,
                want * 100.0
            ));
        }
    }
    errors.dedup();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Upstream's `isConnectionRejected`: EOF or a reset, nothing else.
fn is_rejection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    )
}

async fn eventually_rejected(
    route: &Route,
    server_name: &str,
    patience: Duration,
) -> Result<(), String> {
    let config = refusing_client_config()?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("server name {server_name:?}: {e}"))?;
    let deadline = Instant::now() + patience;
    loop {
        let probe = async {
            let io = match open(route).await {
                Ok(io) => io,
                Err(e) => return Probe::NoConnection(e),
            };
            match tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), io)
                .await
            {
                Ok(_) => Probe::Through("the handshake completed".into()),
                Err(e) if is_rejection(&e) => Probe::Rejected,
                Err(e) => Probe::Through(format!("the handshake failed otherwise: {e}")),
            }
        };
        let why = match tokio::time::timeout(ATTEMPT_TIMEOUT, probe).await {
            Ok(Probe::Rejected) => return Ok(()),
            Ok(Probe::Through(why)) => why,
            Ok(Probe::NoConnection(e)) => format!("could not connect: {e}"),
            Err(_) => "no answer in time".into(),
        };
        if Instant::now() + TICK > deadline {
            return Err(format!(
                "the connection (SNI {server_name}) was not rejected within {} s: {why}",
                patience.as_secs()
            ));
        }
        tokio::time::sleep(TICK).await;
    }
}

/// How a rejection probe ended.
enum Probe {
    /// EOF or reset during the handshake.
    Rejected,
    /// The connection got further than that (or failed some other way).
    Through(String),
    /// The waypoint could not be reached.
    NoConnection(String),
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
