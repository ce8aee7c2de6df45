//! A plain hyper client for the emulator's tests: one connection per request (so a watch
//! holds its own), JSON in and out, and a reader of newline-delimited watch events.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use waypoint_kube_emulator::Emulator;

/// How long a test waits for anything before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);

/// A request to send.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub body: Option<Value>,
    pub content_type: &'a str,
    pub token: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(method: Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            body: None,
            content_type: "application/json",
            token: None,
        }
    }

    pub(crate) fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn content_type(mut self, content_type: &'a str) -> Self {
        self.content_type = content_type;
        self
    }

    pub(crate) fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    fn build(&self, authority: &str) -> Request<Full<Bytes>> {
        let body = self
            .body
            .as_ref()
            .map(|b| Bytes::from(serde_json::to_vec(b).unwrap()))
            .unwrap_or_default();
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, self.content_type);
        if let Some(token) = self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Full::new(body)).unwrap()
    }
}

/// Sends `call` over `io` (HTTP/1.1).
pub(crate) async fn send_over<I>(io: I, authority: &str, call: &Call<'_>) -> Response<Incoming>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender.send_request(call.build(authority)).await.unwrap()
}

/// Sends `call` to a plain-HTTP emulator.
pub(crate) async fn send(emulator: &Emulator, call: Call<'_>) -> Response<Incoming> {
    let stream = TcpStream::connect(emulator.addr()).await.unwrap();
    send_over(stream, &emulator.addr().to_string(), &call).await
}

/// The status and JSON body of `call`.
pub(crate) async fn json(emulator: &Emulator, call: Call<'_>) -> (u16, Value) {
    read_json(send(emulator, call).await).await
}

/// The status and JSON body of a response.
pub(crate) async fn read_json(response: Response<Incoming>) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// GET `path`: status and body.
pub(crate) async fn get(emulator: &Emulator, path: &str) -> (u16, Value) {
    json(emulator, Call::new(Method::GET, path)).await
}

/// A client TLS config trusting exactly `ca_pem`, offering `alpn`.
pub(crate) fn tls_client(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends `call` over TLS to `127.0.0.1` trusting `ca_pem`; `Err` when the handshake fails.
pub(crate) async fn send_tls(
    emulator: &Emulator,
    ca_pem: &str,
    call: Call<'_>,
) -> Result<Response<Incoming>, std::io::Error> {
    let stream = TcpStream::connect(emulator.addr()).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tls_client(ca_pem, &[]).connect(name, stream).await?;
    Ok(send_over(tls, &emulator.addr().to_string(), &call).await)
}

/// An HTTP/2 connection over TLS (ALPN `h2`) to `127.0.0.1` trusting `ca_pem`.
pub(crate) async fn connect_h2(
    emulator: &Emulator,
    ca_pem: &str,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(emulator.addr()).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tls_client(ca_pem, &[b"h2"])
        .connect(name, stream)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

/// Sends `call` (whose path must be an absolute URL) on an HTTP/2 connection.
pub(crate) async fn send_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    call: &Call<'_>,
) -> Response<Incoming> {
    let mut request = call.build("");
    request.headers_mut().remove(header::HOST);
    sender.send_request(request).await.unwrap()
}

/// How a watch stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The body ended cleanly.
    Clean,
    /// The connection broke mid-body.
    Broken,
}

/// An open watch: events one by one.
pub(crate) struct Watch {
    pub status: u16,
    body: Incoming,
    buffer: BytesMut,
    ended: Option<End>,
}

impl Watch {
    /// Opens a watch at `path` (query included).
    pub(crate) async fn open(emulator: &Emulator, path: &str) -> Watch {
        Watch::of(send(emulator, Call::new(Method::GET, path)).await)
    }

    /// The watch a response streams.
    pub(crate) fn of(response: Response<Incoming>) -> Watch {
        Watch {
            status: response.status().as_u16(),
            body: response.into_body(),
            buffer: BytesMut::new(),
            ended: None,
        }
    }

    /// The next event, or how the stream ended; panics after [`PATIENCE`].
    pub(crate) async fn next(&mut self) -> Result<Value, End> {
        tokio::time::timeout(PATIENCE, self.next_inner())
            .await
            .expect("a watch event or the end of the stream in time")
    }

    /// The next event that is not a BOOKMARK.
    pub(crate) async fn next_change(&mut self) -> Result<Value, End> {
        loop {
            let event = self.next().await?;
            if event["type"] != "BOOKMARK" {
                return Ok(event);
            }
        }
    }

    async fn next_inner(&mut self) -> Result<Value, End> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(at + 1);
                return Ok(serde_json::from_slice(&line[..at]).unwrap());
            }
            if let Some(end) = self.ended {
                return Err(end);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk().to_vec();
                            data.advance(chunk.len());
                            self.buffer.extend_from_slice(&chunk);
                        }
                    }
                }
                Some(Err(_)) => self.ended = Some(End::Broken),
                None => self.ended = Some(End::Clean),
            }
        }
    }
}

/// Polls `check` until it holds; panics after [`PATIENCE`].
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
