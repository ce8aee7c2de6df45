//! The TCP mode and the TLS side of the echo backend, over loopback.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::tools::echo::{EchoOptions, EchoServer, spawn_with};

fn identity() -> EchoIdentity {
    EchoIdentity {
        pod: "tcp-backend-0".into(),
        namespace: "infra".into(),
        service: "tcp-backend".into(),
    }
}

/// A CA and a server certificate for `abc.example.com` it signed: (server config, client
/// config trusting the CA and offering `alpn`).
fn tls_pair(alpn: &[u8]) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["abc.example.com".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_cert.der().to_vec()))
        .unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![alpn.to_vec()];
    (Arc::new(server), Arc::new(client))
}

async fn start(options: EchoOptions) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_with(listener, identity(), options).unwrap()
}

async fn line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> String {
    let mut s = String::new();
    r.read_line(&mut s).await.unwrap();
    s
}

#[tokio::test]
async fn a_tcp_echo_backend_speaks_first_then_answers_ping_is_tls_and_test() {
    let server = start(EchoOptions::default().with_tcp(TcpEcho::default())).await;
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let mut io = BufReader::new(stream);
    assert_eq!(line(&mut io).await, WELCOME);
    // A CRLF line is the same command; an unknown one gets no answer.
    io.get_mut()
        .write_all(b"HELLO\nPING\r\nIS_TLS\nTEST\n")
        .await
        .unwrap();
    assert_eq!(line(&mut io).await, "PONG\n");
    assert_eq!(line(&mut io).await, "false\n");
    let test: Value = serde_json::from_str(&line(&mut io).await).unwrap();
    assert_eq!(test["pod"], "tcp-backend-0");
    assert_eq!(test["namespace"], "infra");
    assert_eq!(test["isTLS"], false);
    assert_eq!(test["tcpport"], "3000");
    assert_eq!(test["tlsport"], "8443");
    assert!(test.get("tls").is_none());
}

#[tokio::test]
async fn a_tls_tcp_echo_backend_reports_the_server_name_and_protocol_the_client_sent() {
    let (server_tls, client_tls) = tls_pair(b"h2");
    let server = start(
        EchoOptions::default()
            .with_tcp(TcpEcho::default())
            .with_tls(server_tls),
    )
    .await;
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_tls)
        .connect(ServerName::try_from("abc.example.com").unwrap(), stream)
        .await
        .unwrap();
    let mut io = BufReader::new(tls);
    assert_eq!(line(&mut io).await, WELCOME);
    io.get_mut().write_all(b"IS_TLS\nTEST\n").await.unwrap();
    assert_eq!(line(&mut io).await, "true\n");
    let test: Value = serde_json::from_str(&line(&mut io).await).unwrap();
    assert_eq!(test["isTLS"], true);
    assert_eq!(test["tls"]["serverName"], "abc.example.com");
    assert_eq!(test["tls"]["negotiatedProtocol"], "h2");
    assert_eq!(test["tls"]["version"], "TLS 1.3");
    assert!(
        test["tls"]["cipherSuite"]
            .as_str()
            .unwrap()
            .starts_with("TLS_"),
        "{test}"
    );
}

#[tokio::test]
async fn a_tls_echo_backend_drops_a_client_that_is_not_speaking_tls() {
    let (server_tls, _) = tls_pair(b"h2");
    let server = start(
        EchoOptions::default()
            .with_tcp(TcpEcho::default())
            .with_tls(server_tls),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(b"PING\n").await.unwrap();
    let mut rest = Vec::new();
    // No welcome: the handshake fails and the connection ends (EOF or reset).
    let read = stream.read_to_end(&mut rest).await;
    assert!(
        read.is_err() || !rest.starts_with(WELCOME.as_bytes()),
        "{rest:?}"
    );
}

#[tokio::test]
async fn a_line_longer_than_the_scanner_limit_ends_the_connection() {
    let server = start(EchoOptions::default().with_tcp(TcpEcho::default())).await;
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let mut io = BufReader::new(stream);
    assert_eq!(line(&mut io).await, WELCOME);
    let long = vec![b'x'; MAX_LINE + 10];
    // The server may close while we still write: that is the point.
    let _ = io.get_mut().write_all(&long).await;
    let _ = io.get_mut().write_all(b"\nPING\n").await;
    let mut rest = String::new();
    let _ = io.read_to_string(&mut rest).await;
    assert!(!rest.contains("PONG"), "{rest:?}");
}

#[tokio::test]
async fn an_https_echo_backend_reports_the_tls_it_terminated_in_its_json() {
    let (server_tls, client_tls) = tls_pair(b"http/1.1");
    let server = start(EchoOptions::default().with_tls(server_tls)).await;
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_tls)
        .connect(ServerName::try_from("abc.example.com").unwrap(), stream)
        .await
        .unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response).await;
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let echo: Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["path"], "/x");
    assert_eq!(echo["pod"], "tcp-backend-0");
    assert_eq!(echo["tls"]["serverName"], "abc.example.com");
    assert_eq!(echo["tls"]["version"], "TLSv1.3");
    assert_eq!(echo["tls"]["negotiatedProtocol"], "http/1.1");
}

#[test]
fn commands_are_answered_as_upstream_answers_them() {
    assert_eq!(answer("PING", "{}", false).as_deref(), Some("PONG\n"));
    assert_eq!(answer("IS_TLS", "{}", true).as_deref(), Some("true\n"));
    assert_eq!(
        answer("TEST", "{\"a\":1}", true).as_deref(),
        Some("{\"a\":1}\n")
    );
    assert_eq!(answer("ping", "{}", false), None);
    assert_eq!(
        go_cipher_suite_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
        "TLS_AES_128_GCM_SHA256"
    );
    assert_eq!(go_curve_name(rustls::NamedGroup::secp256r1), "CurveP256");
    assert_eq!(go_curve_name(rustls::NamedGroup::X25519), "X25519");
}
