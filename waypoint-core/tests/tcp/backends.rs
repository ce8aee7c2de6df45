//! The loopback backends behind the test waypoint: client-first (Redis-like), server-first
//! (MySQL-like greeting), bulk, HTTP, one that counts any byte reaching it, and TLS.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::harness::BULK;

/// Backends on loopback, each counting the bytes it received.
pub(crate) struct Backends {
    pub(crate) redis: u16,
    pub(crate) greeter: u16,
    pub(crate) bulk: u16,
    pub(crate) http: u16,
    pub(crate) denied: u16,
    pub(crate) secure: u16,
    /// The TLS backend's own certificate (for `secure.example`), for clients to trust.
    pub(crate) secure_cert: CertificateDer<'static>,
    pub(crate) denied_bytes: Arc<AtomicU64>,
    pub(crate) bulk_received: Arc<AtomicU64>,
}

pub(crate) async fn listen() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Runs `serve` for every connection `listener` accepts.
pub(crate) fn accept_each<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
}

pub(crate) async fn start_backends() -> Backends {
    // Client-first, Redis-like: `PING\r\n` → `+PONG\r\n`, until the client closes.
    let (l, redis) = listen().await;
    accept_each(l, |mut s| async move {
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if buf[..n].starts_with(b"PING") {
                let _ = s.write_all(b"+PONG\r\n").await;
            }
        }
    });
    // Server-first, MySQL-like: a greeting before the client says anything, then echo.
    let (l, greeter) = listen().await;
    accept_each(l, |mut s| async move {
        let _ = s.write_all(b"GREETING v8.0\n").await;
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    // Bulk: sends BULK bytes and shuts down its write side while reading everything the
    // client sends until the client's end of stream.
    let (l, bulk) = listen().await;
    let bulk_received = Arc::new(AtomicU64::new(0));
    let received = bulk_received.clone();
    accept_each(l, move |s| {
        let received = received.clone();
        async move {
            let (mut r, mut w) = s.into_split();
            let send = async {
                let chunk = vec![0x5a_u8; 1 << 20];
                for _ in 0..BULK / chunk.len() {
                    w.write_all(&chunk).await.unwrap();
                }
                w.shutdown().await.unwrap();
            };
            let recv = async {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = r.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    received.fetch_add(n as u64, Ordering::SeqCst);
                }
            };
            tokio::join!(send, recv);
        }
    });
    // HTTP: answers one request `ok`.
    let (l, http) = listen().await;
    accept_each(l, |mut s| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    });
    // The backend of the denied Service: counts any byte that reaches it.
    let (l, denied) = listen().await;
    let denied_bytes = Arc::new(AtomicU64::new(0));
    let counted = denied_bytes.clone();
    accept_each(l, move |mut s| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1_000_000, Ordering::SeqCst);
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                counted.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    });
    let (secure, secure_cert) = tls_backend().await;
    Backends {
        secure,
        secure_cert,
        redis,
        greeter,
        bulk,
        http,
        denied,
        denied_bytes,
        bulk_received,
    }
}

/// A TLS server for `secure.example` with a self-signed certificate: answers each line with
/// `secure:<line>`. Returns its port and certificate.
async fn tls_backend() -> (u16, CertificateDer<'static>) {
    let issued = rcgen::generate_simple_self_signed(vec!["secure.example".to_owned()]).unwrap();
    let cert = issued.cert.der().clone();
    let key = PrivateKeyDer::try_from(issued.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (l, port) = listen().await;
    accept_each(l, move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(s).await else {
                return;
            };
            let (r, mut w) = tokio::io::split(tls);
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = w.write_all(format!("secure:{line}\n").as_bytes()).await;
            }
        }
    });
    (port, cert)
}
