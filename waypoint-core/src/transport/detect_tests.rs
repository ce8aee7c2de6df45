//! The detection table: what each first-bytes pattern is taken for.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::*;

#[test]
fn request_lines_and_the_h2_preface_are_http_and_everything_else_is_tcp() {
    let http = Some(Detected::Http);
    let tcp = Some(Detected::Tcp);
    let more = None;
    let table: &[(&[u8], Option<Detected>)] = &[
        (b"GET / HTTP/1.1\r\n", http),
        (b"POST /api?x=1 HTTP/1.0\r\n", http),
        (b"OPTIONS * HTTP/1.1\r\n", http),
        (b"CONNECT example.com:443 HTTP/1.1\r\n", http),
        (b"PROPFIND /dav HTTP/1.1\r\n", http),
        (b"GET http://example.com/ HTTP/1.1", http),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", http),
        // Prefixes: more is needed.
        (b"G", more),
        (b"GET", more),
        (b"GET ", more),
        (b"GET /index.html", more),
        (b"GET / ", more),
        (b"GET / HTTP/1", more),
        (b"GET / HTTP/1.", more),
        (b"PRI * HTTP/2.0\r\n", more),
        (b"P", more),
        // Byte protocols.
        (b"PING\r\n", tcp),
        (b"*1\r\n$4\r\nPING\r\n", tcp),
        (b"SET key value\r\n", tcp),
        (b"get / HTTP/1.1\r\n", tcp),
        (b"GET  / HTTP/1.1\r\n", tcp),
        (b"GET / HTTP/2.0\r\n", tcp),
        (b"GET / HTTP/1.x", tcp),
        (b"GET /\r\n", tcp),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", tcp),
        (b"\x00\x00\x00\x01", tcp),
        (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1", tcp),
    ];
    for (bytes, want) in table {
        assert_eq!(
            classify(bytes),
            *want,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[tokio::test]
async fn a_request_split_over_writes_is_read_until_it_is_decided_and_handed_back_whole() {
    let (mut client, mut server) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        for part in [&b"GE"[..], b"T /x HT", b"TP/1.1\r\nhost: a\r\n\r\n"] {
            client.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client
    });
    let (verdict, read) = detect(&mut server, Duration::from_secs(5)).await;
    assert_eq!(verdict, Detected::Http);
    assert!(read.starts_with(b"GET /x HTTP/1.1"), "{read:?}");
    drop(writer.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn silence_until_the_timeout_is_tcp_with_nothing_read() {
    let (_client, mut server) = tokio::io::duplex(64);
    let started = tokio::time::Instant::now();
    let (verdict, read) = detect(&mut server, Duration::from_millis(100)).await;
    assert_eq!((verdict, read.len()), (Detected::Tcp, 0));
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_prefix_that_stops_before_the_timeout_is_tcp_with_the_bytes_kept() {
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(b"GET /").await.unwrap();
    let (verdict, read) = detect(&mut server, Duration::from_millis(100)).await;
    assert_eq!(verdict, Detected::Tcp);
    assert_eq!(&read[..], b"GET /");
}

#[tokio::test]
async fn a_request_line_longer_than_the_limit_is_left_to_the_http_server() {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let mut line = b"GET /".to_vec();
    line.resize(MAX_DETECTION_BYTES + 100, b'a');
    client.write_all(&line).await.unwrap();
    let (verdict, read) = detect(&mut server, Duration::from_secs(5)).await;
    assert_eq!((verdict, read.len()), (Detected::Http, MAX_DETECTION_BYTES));
}

#[tokio::test]
async fn a_client_that_closes_at_once_is_tcp() {
    let (client, mut server) = tokio::io::duplex(64);
    drop(client);
    let (verdict, read) = detect(&mut server, Duration::from_secs(5)).await;
    assert_eq!((verdict, read.len()), (Detected::Tcp, 0));
}
