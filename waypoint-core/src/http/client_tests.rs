#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use super::*;
use http_body_util::Empty;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-connection server on loopback that reads the request head and writes `response`
/// (raw HTTP/1.1 bytes) after `delay`. Returns the address to dial.
async fn serve_once(response: Vec<u8>, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        tokio::time::sleep(delay).await;
        let _ = stream.write_all(&response).await;
        // Held open until the client is done, so only the client decides when it ends.
        let _ = stream.read(&mut buf).await;
    });
    addr
}

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path)
        .header(http::header::HOST, "side.test")
        .body(Empty::new())
        .unwrap()
}

fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-from: side\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn a_non_success_status_is_passed_through_with_its_headers_and_body() {
    let addr = serve_once(answer("403 Forbidden", "go away"), Duration::ZERO).await;
    let client = SideClient::new(Duration::from_secs(5), 1024);
    let response = client.send(&addr, get("/check")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["x-from"], "side");
    let response = response.into_response().await.unwrap();
    assert_eq!(response.body().as_ref(), b"go away");
}

#[tokio::test]
async fn success_body_turns_a_non_success_status_into_a_status_error() {
    let addr = serve_once(answer("503 Service Unavailable", ""), Duration::ZERO).await;
    let client = SideClient::new(Duration::from_secs(5), 1024);
    let err = client
        .send(&addr, get("/"))
        .await
        .unwrap()
        .success_body()
        .await
        .unwrap_err();
    assert!(
        matches!(err, SideCallError::Status(StatusCode::SERVICE_UNAVAILABLE)),
        "{err}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let addr = serve_once(answer("200 OK", &"x".repeat(100)), Duration::ZERO).await;
    let client = SideClient::new(Duration::from_secs(5), 99);
    let response = client.send(&addr, get("/")).await.unwrap();
    let err = response.body().await.unwrap_err();
    assert!(matches!(err, SideCallError::BodyTooLarge(99)), "{err}");

    let addr = serve_once(answer("200 OK", &"x".repeat(99)), Duration::ZERO).await;
    let body = client.send(&addr, get("/")).await.unwrap().body().await;
    assert_eq!(body.unwrap().len(), 99);
}

#[tokio::test]
async fn a_slow_service_times_out_within_the_deadline() {
    let addr = serve_once(answer("200 OK", ""), Duration::from_secs(30)).await;
    let client = SideClient::new(Duration::from_millis(100), 1024);
    let started = std::time::Instant::now();
    let err = client.send(&addr, get("/")).await.unwrap_err();
    assert!(matches!(err, SideCallError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_body_that_never_ends_times_out_within_the_same_deadline() {
    // The head promises ten bytes; only two come.
    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab".to_vec();
    let addr = serve_once(head, Duration::ZERO).await;
    let client = SideClient::new(Duration::from_millis(200), 1024);
    let response = client.send(&addr, get("/")).await.unwrap();
    let err = response.body().await.unwrap_err();
    assert!(matches!(err, SideCallError::Timeout(_)), "{err}");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error_naming_the_address() {
    // Bound, then closed: nothing listens on the port any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let client = SideClient::new(Duration::from_secs(5), 1024);
    let err = client.send(&addr, get("/")).await.unwrap_err();
    assert!(matches!(err, SideCallError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[test]
fn urls_are_split_and_anything_but_plain_http_is_refused() {
    let url = HttpUrl::parse("http://collector.istio-system:4318/otlp?x=1").unwrap();
    assert_eq!(url.host, "collector.istio-system");
    assert_eq!(url.port, 4318);
    assert_eq!(url.path(), "/otlp");
    assert_eq!(url.query(), Some("x=1"));
    assert_eq!(url.connect_addr(), "collector.istio-system:4318");

    let url = HttpUrl::parse("http://[::1]").unwrap();
    assert_eq!((url.host.as_str(), url.port), ("::1", 80));
    assert_eq!(url.authority, "[::1]");
    assert_eq!(url.path_and_query, "/");
    assert_eq!(url.connect_addr(), "[::1]:80");

    for (bad, why) in [
        ("ftp://keys.example/jwks", UrlError::NotHttp),
        ("keys.example/jwks", UrlError::NotAUrl),
        ("/jwks", UrlError::NotHttp),
        ("http://user@keys.example/jwks", UrlError::Credentials),
        ("http:// bad", UrlError::NotAUrl),
    ] {
        assert_eq!(HttpUrl::parse(bad), Err(why), "{bad}");
    }
}

#[test]
fn https_urls_default_to_port_443_and_ask_for_tls() {
    let url = HttpUrl::parse("https://keys.example/jwks").unwrap();
    assert_eq!((url.port, url.tls), (443, true));
    assert_eq!(url.connect_addr(), "keys.example:443");
    let url = HttpUrl::parse("HTTPS://keys.example:8443").unwrap();
    assert_eq!((url.port, url.tls), (8443, true));
    assert!(!HttpUrl::parse("http://keys.example").unwrap().tls);
}

/// A one-connection TLS server on loopback presenting a certificate for `localhost` from a
/// fresh CA, answering `response` to the first request. Returns its address and the CA.
async fn serve_tls_once(response: Vec<u8>) -> (String, CertificateDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "side call test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut stream) = acceptor.accept(tcp).await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let _ = stream.write_all(&response).await;
        let _ = stream.read(&mut buf).await;
    });
    (addr, ca_cert.der().clone())
}

#[tokio::test]
async fn https_calls_verify_the_server_and_speak_http_inside_tls() {
    let client = SideClient::new(Duration::from_secs(5), 1024);

    // The Web-PKI does not know a private CA: refused, naming the host.
    let (addr, _) = serve_tls_once(answer("200 OK", "keys")).await;
    let url = HttpUrl::parse(&format!("https://{addr}/jwks")).unwrap();
    let err = client.send_url(&url, get("/jwks")).await.unwrap_err();
    match &err {
        SideCallError::Tls { host, reason } => {
            assert_eq!(host, "127.0.0.1");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // Trusting that CA, the call goes through over TLS for the right name...
    let trusting = |ca: CertificateDer<'static>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    };
    let (addr, ca) = serve_tls_once(answer("200 OK", "keys")).await;
    let tls = SideTls::with_config("localhost", trusting(ca)).unwrap();
    let body = client
        .send_over(&addr, Some(tls), get("/jwks"))
        .await
        .unwrap()
        .success_body()
        .await
        .unwrap();
    assert_eq!(body, "keys");

    // ... and is refused for a name the certificate does not carry.
    let (addr, ca) = serve_tls_once(answer("200 OK", "keys")).await;
    let tls = SideTls::with_config("other.example", trusting(ca)).unwrap();
    let err = client
        .send_over(&addr, Some(tls), get("/jwks"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("TLS handshake with other.example"),
        "{err}"
    );
}
