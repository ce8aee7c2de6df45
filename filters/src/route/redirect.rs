//! `RequestRedirect`: the waypoint answers with a redirect and no backend is contacted. The
//! `Location` is built from the request (scheme, host without port, the port it arrived on,
//! path and query) with the filter's fields in place of the parts they name.

use std::net::SocketAddr;

use async_trait::async_trait;
use http::{HeaderValue, StatusCode, header};
use waypoint_core::body::{self, local_reply};
use waypoint_core::config::resources::{RedirectScheme, RequestRedirect};
use waypoint_core::filter::{Decision, Filter, Request, RequestContext};
use waypoint_core::http::authority;

use super::MatchedPrefix;
use super::rewrite::PathRewrite;

/// A URI scheme a redirect can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `http`, port 80.
    Http,
    /// `https`, port 443.
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn well_known_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The scheme the client used: `https` when the waypoint terminated TLS on the connection (a
/// Gateway HTTPS listener), else `http` (plain HTTP, inside the mesh tunnel or not).
pub(crate) fn request_scheme(ctx: &RequestContext) -> Scheme {
    if ctx.conn.tls.is_some() {
        Scheme::Https
    } else {
        Scheme::Http
    }
}

/// The scheme and port of a `Location`, by the Gateway API rules: an explicit port wins; else
/// a redirect scheme brings its well-known port; else the port the request arrived on. The
/// port is `None` when it is the scheme's default and so is left out of the `Location`.
pub(crate) fn location_scheme_and_port(
    redirect_scheme: Option<Scheme>,
    redirect_port: Option<u16>,
    request_scheme: Scheme,
    listener_port: u16,
) -> (Scheme, Option<u16>) {
    let scheme = redirect_scheme.unwrap_or(request_scheme);
    let port = redirect_port
        .or(redirect_scheme.map(Scheme::well_known_port))
        .unwrap_or(listener_port);
    (scheme, (port != scheme.well_known_port()).then_some(port))
}

/// The request's host without its port (see [`authority`]: the one the router matched), else
/// the address the client dialled. IPv6 literals keep their brackets.
fn request_host(req: &Request, destination: Option<SocketAddr>) -> Option<String> {
    match authority::request_host(req) {
        Some(host) => Some(host.to_owned()),
        None => destination.map(|d| match d {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        }),
    }
}

/// A compiled `RequestRedirect`.
#[derive(Debug)]
pub struct Redirect {
    scheme: Option<Scheme>,
    hostname: Option<String>,
    port: Option<u16>,
    path: Option<PathRewrite>,
    status: StatusCode,
}

impl Redirect {
    /// Compiles `redirect`; `at` is its field path, for errors.
    pub fn compile(redirect: &RequestRedirect, at: &str) -> Result<Self, String> {
        let status = StatusCode::from_u16(redirect.status_code.code())
            .map_err(|_| format!("{at}.statusCode: not an HTTP status"))?;
        if let Some(host) = &redirect.hostname
            && http::uri::Authority::try_from(host.as_str()).is_err()
        {
            return Err(format!("{at}.hostname: `{host}` is not a valid host"));
        }
        let path = match &redirect.path {
            Some(p) => Some(PathRewrite::compile(p, &format!("{at}.path"))?),
            None => None,
        };
        Ok(Redirect {
            scheme: redirect.scheme.map(|s| match s {
                RedirectScheme::Http => Scheme::Http,
                RedirectScheme::Https => Scheme::Https,
            }),
            hostname: redirect.hostname.clone(),
            port: redirect.port,
            path,
            status,
        })
    }

    /// The path replacement, if any (for the checks that need the rule's matches).
    pub(crate) fn path(&self) -> Option<&PathRewrite> {
        self.path.as_ref()
    }

    /// The `Location` for `req`.
    fn location(&self, req: &Request, ctx: &RequestContext) -> String {
        let listener_port = ctx.conn.destination.map_or(80, |d| d.port());
        let (scheme, port) =
            location_scheme_and_port(self.scheme, self.port, request_scheme(ctx), listener_port);
        let host = match &self.hostname {
            Some(h) => h.clone(),
            None => request_host(req, ctx.conn.destination).unwrap_or_default(),
        };
        let path = req.uri().path();
        let path = match &self.path {
            Some(rewrite) => {
                let matched = ctx.extensions.get::<MatchedPrefix>();
                rewrite.apply(path, matched.and_then(|m| m.0.as_deref()))
            }
            None => path.into(),
        };
        let mut location = format!("{}://{host}", scheme.as_str());
        if let Some(port) = port {
            location.push(':');
            location.push_str(&port.to_string());
        }
        location.push_str(&path);
        if let Some(query) = req.uri().query() {
            location.push('?');
            location.push_str(query);
        }
        location
    }
}

#[async_trait]
impl Filter for Redirect {
    fn name(&self) -> &str {
        "RequestRedirect"
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let location = self.location(req, ctx);
        let Ok(value) = HeaderValue::try_from(location) else {
            return Decision::Respond(local_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "waypoint: RequestRedirect made an invalid Location",
            ));
        };
        let mut resp = http::Response::new(body::empty());
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(header::LOCATION, value);
        Decision::Respond(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_rules() {
        use Scheme::{Http, Https};
        let cases = [
            // (redirect scheme, redirect port, listener port) -> (scheme, port in Location)
            ((None, None, 80), (Http, None)),
            ((None, None, 8080), (Http, Some(8080))),
            ((None, Some(80), 8080), (Http, None)),
            ((None, Some(8083), 80), (Http, Some(8083))),
            ((Some(Https), None, 80), (Https, None)),
            ((Some(Https), None, 8080), (Https, None)),
            ((Some(Https), Some(443), 80), (Https, None)),
            ((Some(Https), Some(8443), 80), (Https, Some(8443))),
            ((Some(Http), None, 8080), (Http, None)),
            ((Some(Http), Some(8080), 80), (Http, Some(8080))),
            // An explicit 80 on https is not the default and must be kept.
            ((Some(Https), Some(80), 80), (Https, Some(80))),
        ];
        for ((scheme, port, listener), want) in cases {
            assert_eq!(
                location_scheme_and_port(scheme, port, Http, listener),
                want,
                "scheme {scheme:?} port {port:?} listener {listener}"
            );
        }
        // A request that came in over https keeps https and drops :443.
        assert_eq!(
            location_scheme_and_port(None, None, Https, 443),
            (Https, None)
        );
        assert_eq!(
            location_scheme_and_port(Some(Http), None, Https, 443),
            (Http, None)
        );
    }

    #[test]
    fn a_redirect_names_the_host_the_router_matched_not_a_conflicting_host_header() {
        let req = |uri: &str, host: &str| {
            http::Request::get(uri)
                .header(header::HOST, host)
                .body(waypoint_core::body::empty())
                .unwrap()
        };
        let absolute = req("http://routed.example:8080/p", "other.example");
        assert_eq!(
            request_host(&absolute, None).as_deref(),
            Some("routed.example")
        );
        let origin = req("/p", "[fd00::1]:8080");
        assert_eq!(request_host(&origin, None).as_deref(), Some("[fd00::1]"));
    }

    #[test]
    fn without_any_host_a_redirect_names_the_address_the_client_dialled() {
        let req = http::Request::get("/p")
            .body(waypoint_core::body::empty())
            .unwrap();
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(request_host(&req, Some(v6)).as_deref(), Some("[fd00::1]"));
        assert_eq!(request_host(&req, None), None);
    }
}
