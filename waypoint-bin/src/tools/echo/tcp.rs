//! The echo backend's TCP mode and its TLS side, as upstream's echo-basic runs them with
//! `TCP_ECHO_SERVER` set (its `tcpserver` package): the server speaks first, then answers one
//! line per command.
//!
//! On connect the backend sends [`WELCOME`]; then, per `\n`-terminated line (a trailing `\r`
//! is dropped, as Go's line scanner does): `PING` → `PONG`, `IS_TLS` → `true`/`false`, `TEST`
//! → one line of JSON ([`assertions`]) naming the pod, its namespace and, over TLS, the server
//! name the client sent and what was negotiated. Other lines get no answer. A line longer than
//! [`MAX_LINE`] ends the connection, as the scanner's token limit does upstream.
//!
//! TLS is terminated by the backend itself (its own certificate), which is what a passthrough
//! test must reach: the waypoint forwards the bytes and never holds the key.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::EchoIdentity;

/// What the backend sends first on every connection.
pub const WELCOME: &str = "Gateway API Test TCP Server\n";

/// The longest command line the backend reads (Go's `bufio.Scanner` default token size).
pub const MAX_LINE: usize = 64 * 1024;

/// The ports a TCP-mode backend reports (`TCP_PORT` and `TLS_PORT` upstream), whichever of
/// the two a connection arrived on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpEcho {
    /// The plain TCP port (upstream default 3000).
    pub tcp_port: u16,
    /// The TLS port (upstream default 8443).
    pub tls_port: u16,
}

impl Default for TcpEcho {
    fn default() -> Self {
        Self {
            tcp_port: 3000,
            tls_port: 8443,
        }
    }
}

/// What the backend saw of a TLS handshake it completed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSeen {
    /// The TLS version, as `0x0304`-style protocol version.
    pub version: Option<rustls::ProtocolVersion>,
    /// The server name (SNI) the client sent; empty when none.
    pub server_name: String,
    /// The ALPN protocol agreed; empty when none.
    pub negotiated_protocol: String,
    /// The cipher suite, named as Go's `tls.CipherSuiteName` names it.
    pub cipher_suite: String,
    /// The key exchange group, named as Go's `tls.CurveID.String` names it.
    pub curve: String,
}

impl TlsSeen {
    /// Reads the facts of an established server connection.
    pub fn of(conn: &rustls::ServerConnection) -> TlsSeen {
        TlsSeen {
            version: conn.protocol_version(),
            server_name: conn.server_name().unwrap_or_default().to_owned(),
            negotiated_protocol: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map(|s| go_cipher_suite_name(s.suite()))
                .unwrap_or_default(),
            curve: conn
                .negotiated_key_exchange_group()
                .map(|g| go_curve_name(g.name()))
                .unwrap_or_default(),
        }
    }

    /// Go's `tls.VersionName` (`TLS 1.3`), which the TCP server reports.
    pub fn version_name(&self) -> String {
        match self.version {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".into(),
            Some(other) => format!("0x{:04X}", u16::from(other)),
            None => String::new(),
        }
    }

    /// The HTTP echo server's spelling (`TLSv1.3`).
    pub fn http_version_name(&self) -> String {
        match self.version {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            _ => String::new(),
        }
    }
}

/// rustls names TLS 1.3 suites `TLS13_*`; Go names them `TLS_*` (TLS 1.2 names agree).
fn go_cipher_suite_name(suite: rustls::CipherSuite) -> String {
    let name = format!("{suite:?}");
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// rustls names the NIST curves by their SEC names; Go calls them `CurveP256` and so on.
fn go_curve_name(group: rustls::NamedGroup) -> String {
    match group {
        rustls::NamedGroup::secp256r1 => "CurveP256".into(),
        rustls::NamedGroup::secp384r1 => "CurveP384".into(),
        rustls::NamedGroup::secp521r1 => "CurveP521".into(),
        other => format!("{other:?}"),
    }
}

/// The `TEST` answer: upstream's `TCPAssertions` (pod context, `isTLS`, and `tls` over TLS).
pub fn assertions(identity: &EchoIdentity, ports: &TcpEcho, tls: Option<&TlsSeen>) -> Value {
    let mut out = json!({
        "namespace": identity.namespace,
        "ingress": "",
        "service": identity.service,
        "pod": identity.pod,
        "tcpport": ports.tcp_port.to_string(),
        "tlsport": ports.tls_port.to_string(),
        "isTLS": tls.is_some(),
    });
    if let Some(seen) = tls {
        let mut fields = json!({
            "version": seen.version_name(),
            "serverName": seen.server_name,
            "cipherSuite": seen.cipher_suite,
        });
        // Upstream omits these two when empty.
        if !seen.negotiated_protocol.is_empty() {
            fields["negotiatedProtocol"] = json!(seen.negotiated_protocol);
        }
        if !seen.curve.is_empty() {
            fields["curves"] = json!(seen.curve);
        }
        out["tls"] = fields;
    }
    out
}

/// The answer to one command line, if it has one.
pub fn answer(line: &str, test_payload: &str, is_tls: bool) -> Option<String> {
    match line {
        "TEST" => Some(format!("{test_payload}\n")),
        "IS_TLS" => Some(format!("{is_tls}\n")),
        "PING" => Some("PONG\n".into()),
        _ => None,
    }
}

/// Serves one connection (plain, or already through its TLS handshake) until the client
/// closes it, sends a line longer than [`MAX_LINE`], or a write fails.
pub(super) async fn serve<I>(io: I, identity: &EchoIdentity, ports: &TcpEcho, tls: Option<TlsSeen>)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let payload = assertions(identity, ports, tls.as_ref()).to_string();
    let is_tls = tls.is_some();
    let mut io = BufReader::new(io);
    if io.get_mut().write_all(WELCOME.as_bytes()).await.is_err() {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut io)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > MAX_LINE {
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end_matches('\n').trim_end_matches('\r');
        if let Some(reply) = answer(command, &payload, is_tls)
            && io.get_mut().write_all(reply.as_bytes()).await.is_err()
        {
            return;
        }
        if !complete {
            // The client half-closed after a last line without a newline.
            return;
        }
    }
}

#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;
