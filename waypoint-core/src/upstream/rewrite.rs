//! The request as the endpoint gets it: host, URI form and version for the backend's
//! protocol, hop-by-hop headers removed.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};

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
}
