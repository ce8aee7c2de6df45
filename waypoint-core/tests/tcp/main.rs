//! TCP proxying through a real waypoint on loopback: connections to Service ports that carry
//! bytes (named, or detected) arrive on the sandwich listener behind a PROXY header (or over
//! HBONE), are spliced to the Service's endpoint, and are counted in Istio's TCP metrics;
//! refusals close the connection without a byte reaching any backend.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod backends;
mod harness;
mod passthrough;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use harness::{BULK, Running, read_all, start, tcp_labels};

#[tokio::test]
async fn a_redis_port_is_spliced_to_its_backend_and_counted_with_istios_tcp_labels() {
    let w = start().await;
    let mut s = w.connect("10.96.1.1:6379").await;
    s.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    s.write_all(b"PING\r\n").await.unwrap();
    s.read_exact(&mut pong).await.unwrap();
    // The client half-closes; the backend then closes its side too, which reaches the client.
    s.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s).await, b"");
    drop(s);

    let labels = tcp_labels("redis", "-");
    let want = [
        format!("istio_tcp_connections_closed_total{{{labels}}} 1"),
        format!("istio_tcp_connections_opened_total{{{labels}}} 1"),
        format!("istio_tcp_received_bytes_total{{{labels}}} 12"),
        format!("istio_tcp_sent_bytes_total{{{labels}}} 14"),
    ];
    w.assert_metric_lines("istio_tcp_", "redis", &want).await;
    // Not an HTTP request: no istio_requests_total for it.
    assert_eq!(
        w.metric_lines("istio_requests_total", "redis").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_server_first_backend_on_an_unnamed_port_greets_after_the_detection_timeout() {
    let w = start().await;
    let mut s = w.connect("10.96.1.2:3307").await;
    let started = std::time::Instant::now();
    let mut greeting = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"GREETING v8.0\n");
    // Nothing was sent: the default 100 ms of detection passed first.
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    s.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
}

#[tokio::test]
async fn sixty_four_mib_each_way_arrive_whole_with_each_side_half_closing_on_its_own() {
    let w = start().await;
    let s = w.connect("10.96.1.3:9000").await;
    let (mut r, mut wr) = s.into_split();
    let send = async {
        let chunk = vec![0xa5_u8; 1 << 20];
        for _ in 0..BULK / chunk.len() {
            wr.write_all(&chunk).await.unwrap();
        }
        // Our end of stream: the backend still sends (it may have finished already).
        wr.shutdown().await.unwrap();
        wr
    };
    let recv = async {
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break total;
            }
            assert!(buf[..n].iter().all(|b| *b == 0x5a));
            total += n;
        }
    };
    let (_wr, received) =
        tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(send, recv) })
            .await
            .unwrap();
    assert_eq!(received, BULK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.backends.bulk_received.load(Ordering::SeqCst) < BULK as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend got less"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.backends.bulk_received.load(Ordering::SeqCst), BULK as u64);
}

#[tokio::test]
async fn a_connection_a_filter_closes_reaches_no_backend_and_is_flagged() {
    let w = start().await;
    let mut s = w.connect("10.96.1.4:9001").await;
    // Sent before the decision: it must not be forwarded.
    let _ = s.write_all(b"SECRET").await;
    assert_eq!(read_all(&mut s).await, b"");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.backends.denied_bytes.load(Ordering::SeqCst), 0);
    let labels = tcp_labels("denied", "RBAC");
    let opened = w
        .metric_lines("istio_tcp_connections_opened_total", "denied")
        .await;
    assert_eq!(
        opened,
        [format!("istio_tcp_connections_opened_total{{{labels}}} 1")]
    );
    // The decision the filter left is counted as HTTP ones are.
    let decisions = w.metrics("waypoint_authz_decisions_total", "").await;
    assert_eq!(
        decisions,
        [
            "waypoint_authz_decisions_total{decision=\"deny\",action=\"DENY\",policy=\"default/deny-tcp\"} 1"
        ]
    );
}

#[tokio::test]
async fn no_endpoint_is_flagged_uh_and_a_refused_connect_uf_and_both_close_the_client() {
    let w = start().await;
    let mut s = w.connect("10.96.1.7:9002").await;
    assert_eq!(read_all(&mut s).await, b"");
    let mut s = w.connect("10.96.1.8:9003").await;
    s.write_all(b"x").await.unwrap();
    assert_eq!(read_all(&mut s).await, b"");
    let uh = tcp_labels("empty", "UH");
    let uf = tcp_labels("gone", "UF");
    assert_eq!(
        w.metric_lines("istio_tcp_connections_opened_total", "empty")
            .await,
        [format!("istio_tcp_connections_opened_total{{{uh}}} 1")]
    );
    assert_eq!(
        w.metric_lines("istio_tcp_connections_opened_total", "gone")
            .await,
        [format!("istio_tcp_connections_opened_total{{{uf}}} 1")]
    );
}

#[tokio::test]
async fn a_port_named_http_stays_http_and_an_unnamed_one_detects_an_http_client() {
    let w = start().await;
    // `web` is named http (its endpoint speaks Redis): the waypoint's HTTP server answers.
    let mut s = w.connect("10.96.1.5:80").await;
    s.write_all(b"PING\r\n").await.unwrap();
    let answer = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // `sniffed` names no protocol: a request line is HTTP, routed to the Service.
    let mut s = w.connect("10.96.1.6:8080").await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: sniffed\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    let requests = w.metric_lines("istio_requests_total", "sniffed").await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains("request_protocol=\"http\""),
        "{requests:?}"
    );
    // Counted once as a connection, as HTTP connections always were.
    let opened = w
        .metric_lines("istio_tcp_connections_opened_total", "sniffed")
        .await;
    assert_eq!(
        opened,
        [format!(
            "istio_tcp_connections_opened_total{{{}}} 1",
            tcp_labels("sniffed", "-")
        )]
    );
}

#[tokio::test]
async fn over_hbone_a_client_first_and_a_server_first_backend_are_both_reached() {
    let w = start().await;
    let mut t = w.tunnel("10.96.1.1:6379").await;
    t.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    t.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");

    let mut t = w.tunnel("10.96.1.2:3307").await;
    let mut greeting = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(5), t.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"GREETING v8.0\n");
    // The tunnel's client identity is the connection's: it is in the TCP labels.
    let opened = w
        .metric_lines("istio_tcp_connections_opened_total", "redis")
        .await;
    assert_eq!(
        opened,
        [format!(
            "istio_tcp_connections_opened_total{{{}}} 1",
            tcp_labels("redis", "-")
        )]
    );
}

#[tokio::test]
async fn a_drain_waits_for_an_open_tcp_connection_until_its_deadline() {
    let w = start().await;
    let mut s = w.connect("10.96.1.1:6379").await;
    s.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).await.unwrap();
    let Running { waypoint, .. } = w;
    let started = std::time::Instant::now();
    let drained = waypoint.shutdown(Duration::from_millis(500)).await;
    // The connection was still open at the deadline: not drained, and waited for in full.
    assert!(!drained);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    // Meanwhile it kept being served.
    s.write_all(b"PING\r\n").await.unwrap();
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
}
