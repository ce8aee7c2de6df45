//! TLS passed through unterminated: the waypoint reads the ClientHello's server name and
//! replays it to the backend, which completes the handshake with its own certificate. Bytes
//! that are no usable ClientHello close that connection alone.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

use super::harness::{Running, read_all, start, tcp_labels};

const SECURE: &str = "10.96.1.9:443";

/// A client trusting only the backend's own certificate, offering `alpn`.
fn client(w: &Running, alpn: Vec<Vec<u8>>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(w.backends.secure_cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn;
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One line through TLS to `secure.example` over `io`, sent with server name `sni`; the
/// backend's answer.
async fn exchange<S>(w: &Running, io: S, sni: &str, alpn: Vec<Vec<u8>>) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = client(w, alpn)
        .connect(name, io)
        .await
        .map_err(|e| e.to_string())?;
    let (r, mut wr) = tokio::io::split(tls);
    wr.write_all(b"hello\n").await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(r)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    Ok(line)
}

/// Writes at most 16 bytes per write: a ClientHello arrives in many small pieces.
struct Trickle(TcpStream);

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(16);
        Pin::new(&mut self.0).poll_write(cx, &buf[..n])
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_real_tls_client_completes_its_handshake_with_the_backends_own_certificate() {
    let w = start().await;
    let answer = exchange(&w, w.connect(SECURE).await, "secure.example", vec![]).await;
    assert_eq!(answer.unwrap(), "secure:hello\n");
    // The server name was read: a filter closing `blocked.example` closes that one.
    let refused = exchange(&w, w.connect(SECURE).await, "blocked.example", vec![]).await;
    assert!(refused.is_err(), "{refused:?}");
    let mut opened = w
        .metric_lines("istio_tcp_connections_opened_total", "secure")
        .await;
    opened.sort();
    let labels = |flags| tcp_labels("secure", flags);
    assert_eq!(
        opened,
        [
            format!("istio_tcp_connections_opened_total{{{}}} 1", labels("-")),
            format!("istio_tcp_connections_opened_total{{{}}} 1", labels("RBAC")),
        ]
    );
}

#[tokio::test]
async fn a_client_hello_in_many_small_writes_or_over_sixteen_kib_is_read_whole() {
    let w = start().await;
    let trickling = w.connect(SECURE).await;
    trickling.set_nodelay(true).unwrap();
    let answer = exchange(&w, Trickle(trickling), "secure.example", vec![]).await;
    assert_eq!(answer.unwrap(), "secure:hello\n");
    // 90 ALPN names of 250 bytes: a hello of ~22 KiB, over two TLS records.
    let alpn = (0..90u8).map(|i| vec![b'a' + i % 26; 250]).collect();
    let answer = exchange(&w, w.connect(SECURE).await, "secure.example", alpn).await;
    assert_eq!(answer.unwrap(), "secure:hello\n");
}

#[tokio::test]
async fn garbage_an_oversized_hello_and_silence_are_closed_while_another_client_is_served() {
    let w = start().await;
    let silent = async {
        let mut s = w.connect(SECURE).await;
        let started = Instant::now();
        assert_eq!(read_all(&mut s).await, b"");
        started.elapsed()
    };
    let others = async {
        let started = Instant::now();
        // Not TLS at all.
        let mut s = w.connect(SECURE).await;
        s.write_all(b"GET / HTTP/1.1\r\nhost: secure\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_all(&mut s).await, b"");
        // A handshake record announcing a 128 KiB ClientHello.
        let mut s = w.connect(SECURE).await;
        let mut hello = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x02, 0x00, 0x00];
        hello.resize(16 * 1024 + 5, 0);
        let _ = s.write_all(&hello).await;
        assert_eq!(read_all(&mut s).await, b"");
        // Both refused on what they sent, not left to the handshake timeout.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Meanwhile a good client is served.
        let answer = exchange(&w, w.connect(SECURE).await, "secure.example", vec![]).await;
        assert_eq!(answer.unwrap(), "secure:hello\n");
    };
    let (silent_for, ()) = tokio::join!(silent, others);
    // Closed at the handshake timeout (10 s), not before.
    assert!(silent_for >= Duration::from_millis(9_500), "{silent_for:?}");
    // Each is one connection, opened and closed.
    let closed = format!(
        "istio_tcp_connections_closed_total{{{}}} 4",
        tcp_labels("secure", "-")
    );
    w.assert_metric_lines("istio_tcp_connections_closed_total", "secure", &[closed])
        .await;
}
