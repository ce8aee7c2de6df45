//! The wire side of forwarding: request rewriting, error descriptions, and the byte tunnel
//! behind a protocol upgrade.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::balance::InFlight;
use super::hop;
use crate::body::Body;
use crate::config::AppProtocol;

/// Turns a downstream request into the request for `endpoint`: `Host` kept (or made from the
/// downstream `:authority`, else the endpoint), version for the backend's protocol, hop-by-hop
/// headers removed (`Upgrade` kept when `upgrade` is carried through).
///
/// HTTP/1.1 gets the origin form (`/path?query`) on the wire. For h2c the URI authority becomes
/// the `:authority` pseudo-header, so it carries the request's host rather than the endpoint
/// address: RFC 9113 §8.3.1 forbids a `Host` that differs from `:authority`, and gRPC servers
/// read `:authority`. The pools key connections by endpoint separately, so nothing is lost.
pub(crate) fn prepare(
    req: &mut Request<Body>,
    endpoint: SocketAddr,
    protocol: AppProtocol,
    upgrade: bool,
) {
    hop::remove_hop_by_hop(req.headers_mut(), upgrade);

    let endpoint_authority = || Authority::try_from(endpoint.to_string()).ok();
    if !req.headers().contains_key(header::HOST) {
        let authority = req.uri().authority().cloned().or_else(endpoint_authority);
        if let Some(host) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }

    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    if protocol == AppProtocol::H2c {
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(endpoint_authority);
    }
    parts.path_and_query = Some(path);
    // Only fails for an authority we could not build; the socket address always formats as one.
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }

    *req.version_mut() = match protocol {
        AppProtocol::Http1 => Version::HTTP_11,
        AppProtocol::H2c => Version::HTTP_2,
    };
}

/// A reason why an exchange failed before response headers, in words for a local reply.
pub(crate) fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut innermost = err.to_string();
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(reason) = io_reason(io.kind())
        {
            return reason.to_owned();
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return "connection closed before response headers".to_owned();
            }
            if h.is_timeout() {
                return "timeout".to_owned();
            }
        }
        innermost = e.to_string();
        cur = e.source();
    }
    innermost
}

fn io_reason(kind: io::ErrorKind) -> Option<&'static str> {
    Some(match kind {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::TimedOut => "connect timeout",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::BrokenPipe => "connection closed (broken pipe)",
        io::ErrorKind::NotConnected => "not connected",
        io::ErrorKind::AddrNotAvailable => "address not available",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::UnexpectedEof => "connection closed before response headers",
        _ => return None,
    })
}

/// Joins the two halves of an upgraded exchange (say, a WebSocket) once hyper hands them over,
/// and copies bytes both ways until either side closes. The request counts as in flight for the
/// tunnel's lifetime.
pub(crate) fn tunnel(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    endpoint: SocketAddr,
    guard: InFlight,
) {
    tokio::spawn(async move {
        let _guard = guard;
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "protocol upgrade failed");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((sent, received)) => {
                tracing::debug!(%endpoint, sent, received, "upgraded connection closed")
            }
            Err(e) => tracing::debug!(%endpoint, error = %e, "upgraded connection failed"),
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::body::empty;

    fn request(uri: &str, headers: &[(&str, &str)], version: Version) -> Request<Body> {
        let mut b = Request::builder().uri(uri).version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(empty()).unwrap()
    }

    const EP: ([u8; 4], u16) = ([10, 1, 2, 3], 8080);

    #[test]
    fn http1_gets_endpoint_uri_and_keeps_host() {
        let mut req = request(
            "/a/b?x=1&y",
            &[("host", "echo.default.svc")],
            Version::HTTP_10,
        );
        prepare(&mut req, EP.into(), AppProtocol::Http1, false);
        assert_eq!(req.uri(), "/a/b?x=1&y");
        assert_eq!(req.headers()["host"], "echo.default.svc");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn http2_downstream_gets_host_from_authority() {
        let mut req = request("http://echo.default.svc:8000/p", &[], Version::HTTP_2);
        prepare(&mut req, EP.into(), AppProtocol::Http1, false);
        assert_eq!(req.uri(), "/p");
        assert_eq!(req.headers()["host"], "echo.default.svc:8000");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn h2c_authority_is_the_host_and_ipv6_endpoints_work() {
        let mut req = request(
            "/svc.Echo/Call",
            &[("host", "grpc.ns:9000"), ("te", "trailers")],
            Version::HTTP_11,
        );
        prepare(&mut req, EP.into(), AppProtocol::H2c, false);
        assert_eq!(req.uri(), "http://grpc.ns:9000/svc.Echo/Call");
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.headers()["te"], "trailers");

        // No host at all: the endpoint is the only authority there is.
        let mut req = request("/x", &[], Version::HTTP_11);
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        prepare(&mut req, v6, AppProtocol::H2c, false);
        assert_eq!(req.uri(), "http://[fd00::1]:80/x");
        assert_eq!(req.headers()["host"], "[fd00::1]:80");
        let mut req = request("/x", &[], Version::HTTP_11);
        prepare(&mut req, v6, AppProtocol::Http1, false);
        assert_eq!(req.uri(), "/x");
        assert_eq!(req.headers()["host"], "[fd00::1]:80");
    }

    #[test]
    fn describe_walks_the_source_chain() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(describe(&refused), "connection refused");
        // What HttpConnector reports when its connect timeout fires.
        let timed_out = Outer(io::Error::new(
            io::ErrorKind::TimedOut,
            "deadline has elapsed",
        ));
        assert_eq!(describe(&timed_out), "connect timeout");
        let other = Outer(io::Error::other("tls says no"));
        assert_eq!(describe(&other), "tls says no");
    }
}
