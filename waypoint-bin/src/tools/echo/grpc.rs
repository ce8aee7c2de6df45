//! The conformance `GrpcEcho` service over h2c (server side, served on the echo backend's HTTP
//! port when enabled), and a one-call gRPC client for tests that already hold a byte stream
//! (e.g. one that starts with a PROXY v2 header).

use std::convert::Infallible;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tokio::io::{AsyncRead, AsyncWrite};

use super::EchoBody;
use super::EchoIdentity;
use super::proto::{Assertions, Context, EchoRequest, EchoResponse, Header, Message};

/// The fully qualified name of the conformance echo service.
pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// gRPC status codes the echo service and [`GrpcReply::code`] use.
pub mod code {
    /// Success.
    pub const OK: u32 = 0;
    /// Unknown error (also: a non-gRPC answer with an unmapped HTTP status).
    pub const UNKNOWN: u32 = 2;
    /// Permission denied (HTTP 403).
    pub const PERMISSION_DENIED: u32 = 7;
    /// Method or service not implemented (also HTTP 404).
    pub const UNIMPLEMENTED: u32 = 12;
    /// Internal error: malformed messages, missing status (also HTTP 400).
    pub const INTERNAL: u32 = 13;
    /// Unavailable (HTTP 429, 502, 503, 504).
    pub const UNAVAILABLE: u32 = 14;
    /// Unauthenticated (HTTP 401).
    pub const UNAUTHENTICATED: u32 = 16;
}

/// The largest message either side accepts (gRPC's customary default).
const MAX_MESSAGE: usize = 4 << 20;

/// Whether a request is a gRPC call (by its content type, as gRPC servers route).
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

/// Headers grpc-go keeps out of the metadata a handler sees (transport-level ones).
fn is_transport_header(name: &str) -> bool {
    matches!(
        name,
        "te" | "host"
            | "grpc-timeout"
            | "grpc-encoding"
            | "grpc-message-type"
            | "grpc-status"
            | "grpc-message"
            | "grpc-status-details-bin"
    )
}

/// Answers one unary gRPC call to the echo service.
pub(super) async fn answer(req: Request<Incoming>, identity: &EchoIdentity) -> Response<EchoBody> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or((path, ""));
    if service != SERVICE {
        return status_only(code::UNIMPLEMENTED, &format!("unknown service {service}"));
    }
    match method {
        "Echo" | "EchoTwo" => {}
        "EchoThree" => {
            return status_only(code::UNIMPLEMENTED, "method EchoThree not implemented");
        }
        other => {
            return status_only(
                code::UNIMPLEMENTED,
                &format!("unknown method {other} for service {SERVICE}"),
            );
        }
    }
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        return status_only(code::INTERNAL, "request body could not be read");
    };
    if let Err(message) = unary_message(body).and_then(|m| {
        EchoRequest::decode(&m).map_err(|e| format!("grpc: error unmarshalling request: {e}"))
    }) {
        return status_only(code::INTERNAL, &message);
    }

    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let mut headers = vec![Header {
        key: ":authority".into(),
        value: authority.clone(),
    }];
    headers.extend(
        parts
            .headers
            .iter()
            .filter(|(name, _)| !is_transport_header(name.as_str()))
            .map(|(name, value)| Header {
                key: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            }),
    );
    let response = EchoResponse {
        assertions: Some(Assertions {
            // The path the call arrived on, as grpc-go's `grpc.Method` reports it, so a
            // client can tell which method the backend actually served.
            fully_qualified_method: path.to_owned(),
            headers,
            authority,
            context: Some(Context {
                namespace: identity.namespace.clone(),
                ingress: String::new(),
                service_name: identity.service.clone(),
                pod: identity.pod.clone(),
            }),
            tls_assertions: None,
        }),
        request: None,
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(frame(&response.encode()))
        .with_trailers(std::future::ready(Some(Ok::<_, Infallible>(trailers))))
        .boxed();
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// A "trailers-only" answer: the status travels in the response headers, with no body.
fn status_only(status: u32, message: &str) -> Response<EchoBody> {
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(status));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    resp
}

/// Wraps a message in the gRPC length prefix (uncompressed).
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The single message of a unary call's body.
fn unary_message(mut body: Bytes) -> Result<Bytes, String> {
    if body.len() < 5 {
        return Err(format!(
            "grpc: expected one length-prefixed message, got {} bytes",
            body.len()
        ));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err("grpc: compressed message without a negotiated encoding".into());
    }
    if len > MAX_MESSAGE {
        return Err(format!(
            "grpc: message of {len} bytes is larger than {MAX_MESSAGE}"
        ));
    }
    if body.len() != len {
        return Err(format!(
            "grpc: message announced {len} bytes, body holds {}",
            body.len()
        ));
    }
    Ok(body)
}

/// What grpc-message escapes: everything outside printable ASCII (non-ASCII bytes always are),
/// and `%` itself.
const GRPC_MESSAGE_ESCAPED: &AsciiSet = &CONTROLS.add(b'%');

fn percent_encode(message: &str) -> String {
    utf8_percent_encode(message, GRPC_MESSAGE_ESCAPED).to_string()
}

fn percent_decode(value: &[u8]) -> String {
    percent_encoding::percent_decode(value)
        .decode_utf8_lossy()
        .into_owned()
}

// ---- client --------------------------------------------------------------------------------

/// What a gRPC call returned.
#[derive(Debug, Clone)]
pub struct GrpcReply {
    /// The HTTP status of the response.
    pub http_status: StatusCode,
    /// `grpc-status` from the trailers, or from the headers of a trailers-only answer.
    pub grpc_status: Option<u32>,
    /// `grpc-message`, percent-decoded.
    pub grpc_message: Option<String>,
    /// Response headers (initial metadata).
    pub headers: HeaderMap,
    /// Response trailers (empty for a trailers-only answer).
    pub trailers: HeaderMap,
    /// The decoded answer when the call succeeded with a message.
    pub response: Option<EchoResponse>,
}

impl GrpcReply {
    /// The status code a gRPC client would report: `grpc-status` when present; otherwise the
    /// gRPC mapping of the HTTP status (400→13, 401→16, 403→7, 404→12, 429/502/503/504→14,
    /// other→2), or 13 for a 200 without a status.
    pub fn code(&self) -> u32 {
        if let Some(status) = self.grpc_status {
            return status;
        }
        match self.http_status.as_u16() {
            200 => code::INTERNAL,
            400 => code::INTERNAL,
            401 => code::UNAUTHENTICATED,
            403 => code::PERMISSION_DENIED,
            404 => code::UNIMPLEMENTED,
            429 | 502 | 503 | 504 => code::UNAVAILABLE,
            _ => code::UNKNOWN,
        }
    }

    /// The assertions of a successful echo, if any.
    pub fn assertions(&self) -> Option<&Assertions> {
        self.response.as_ref()?.assertions.as_ref()
    }
}

/// Why a gRPC call could not be made or understood.
#[derive(Debug, thiserror::Error)]
pub enum GrpcCallError {
    /// The HTTP/2 connection could not be set up.
    #[error("h2c handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// The call could not be built from the arguments.
    #[error("invalid gRPC call: {0}")]
    Invalid(String),
    /// The connection failed while the call was in flight.
    #[error("gRPC call failed: {0}")]
    Transport(#[source] hyper::Error),
    /// The server answered success with a body that is not an `EchoResponse`.
    #[error("malformed gRPC response: {0}")]
    Malformed(String),
}

/// Aborts the connection driver when the call ends (or is cancelled by a timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Makes one unary call to the echo service over h2c (prior knowledge) on `stream`, which the
/// caller has already connected (and may have prefixed, e.g. with a PROXY v2 header).
///
/// `method` is `Echo`, `EchoTwo`, `EchoThree`, or a full path starting with `/`. `authority`
/// becomes `:authority`; `metadata` pairs become request headers (names are lowercased). The
/// connection is closed when the call returns. Wrap the call in `tokio::time::timeout` to bound
/// it. A gRPC error status is not an `Err`: it is in the reply ([`GrpcReply::code`]).
pub async fn call<S, I, K, V>(
    stream: S,
    authority: &str,
    method: &str,
    metadata: I,
) -> Result<GrpcReply, GrpcCallError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let path = if method.starts_with('/') {
        method.to_owned()
    } else {
        format!("/{SERVICE}/{method}")
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path.as_str())
        .build()
        .map_err(|e| {
            GrpcCallError::Invalid(format!("authority {authority:?}, path {path:?}: {e}"))
        })?;
    let mut req = Request::new(Full::new(frame(&EchoRequest {}.encode())));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    let headers = req.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    for (name, value) in metadata {
        let (name, value) = (name.as_ref(), value.as_ref());
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| GrpcCallError::Invalid(format!("metadata name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| GrpcCallError::Invalid(format!("metadata {name:?} value: {e}")))?;
        headers.append(header, value);
    }

    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(GrpcCallError::Handshake)?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let resp = sender
        .send_request(req)
        .await
        .map_err(GrpcCallError::Transport)?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.map_err(GrpcCallError::Transport)?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();

    let status_header = |name: &str| trailers.get(name).or_else(|| parts.headers.get(name));
    let grpc_status = status_header("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    let grpc_message = status_header("grpc-message").map(|v| percent_decode(v.as_bytes()));
    let response = if grpc_status == Some(code::OK) && !data.is_empty() {
        let message = unary_message(data).map_err(GrpcCallError::Malformed)?;
        Some(EchoResponse::decode(&message).map_err(|e| GrpcCallError::Malformed(e.to_string()))?)
    } else {
        None
    };
    Ok(GrpcReply {
        http_status: parts.status,
        grpc_status,
        grpc_message,
        headers: parts.headers,
        trailers,
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), grpc, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn framing() {
        let framed = frame(b"abc");
        assert_eq!(&framed[..], b"\x00\x00\x00\x00\x03abc");
        assert_eq!(&unary_message(framed).unwrap()[..], b"abc");
        assert!(unary_message(Bytes::from_static(b"\x00\x00\x00")).is_err());
        assert!(unary_message(Bytes::from_static(b"\x01\x00\x00\x00\x00")).is_err());
        assert!(unary_message(Bytes::from_static(b"\x00\x00\x00\x00\x05ab")).is_err());
        assert!(unary_message(Bytes::from_static(b"\x00\xff\xff\xff\xffab")).is_err());
        // Two messages in a unary call.
        assert!(
            unary_message(Bytes::from_static(
                b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
            ))
            .is_err()
        );
    }

    #[test]
    fn messages_are_percent_encoded() {
        let encoded = percent_encode("100% sure\n\u{e9}");
        assert_eq!(encoded, "100%25 sure%0A%C3%A9");
        assert_eq!(percent_decode(encoded.as_bytes()), "100% sure\n\u{e9}");
        assert_eq!(percent_decode(b"bad %zz %4"), "bad %zz %4");
        // Printable ASCII but `%` goes as is; every other byte is escaped.
        for b in 0u8..0x80 {
            let plain = (0x20..0x7f).contains(&b) && b != b'%';
            let want = if plain {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(
                percent_encode(&char::from(b).to_string()),
                want,
                "byte {b:#04x}"
            );
        }
    }
}
