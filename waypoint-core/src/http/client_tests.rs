#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use super::*;
use http_body_util::Empty;
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
        ("https://keys.example/jwks", UrlError::Https),
        ("ftp://keys.example/jwks", UrlError::NotHttp),
        ("keys.example/jwks", UrlError::NotAUrl),
        ("/jwks", UrlError::NotHttp),
        ("http://user@keys.example/jwks", UrlError::Credentials),
        ("http:// bad", UrlError::NotAUrl),
    ] {
        assert_eq!(HttpUrl::parse(bad), Err(why), "{bad}");
    }
}
