//! The host a request names, read one way everywhere.
//!
//! Routing, authorization, redirects, telemetry and vendor filters must all agree on which host a
//! request is for: if the router picked a route by one host and a policy matched another, a
//! client could reach a route while stepping around a `DENY` on its host. So there is one
//! reading, the one HTTP defines:
//!
//! - HTTP/2: the `:authority` pseudo-header, over `Host` (RFC 9113 §8.3.1);
//! - HTTP/1.1: the authority of an absolute-form (or authority-form) target, over `Host`; an
//!   origin-form target (`/path`) has none, so `Host` it is (RFC 9112 §3.2.2).
//!
//! hyper puts `:authority` and an absolute-form target's authority in the same place, the
//! request URI, so both rules are one: the URI authority, else the `Host` header. A URI
//! authority's userinfo (`user@`) names no host and is dropped (RFC 9110 §4.2.4 forbids it in
//! requests).
//!
//! The port is removed with IPv6 literals in mind: `[::1]:80` is `[::1]` (brackets kept, so the
//! result is still a valid authority), and an unbracketed IPv6 address is taken to have no port.

/// The authority the request is for, `host[:port]`: the URI authority (HTTP/2 `:authority`,
/// HTTP/1.1 absolute form) without userinfo, else the `Host` header. `None` when there is
/// neither, or `Host` is not visible ASCII.
pub fn request_authority<B>(req: &http::Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => {
            let full = authority.as_str();
            Some(full.rsplit_once('@').map_or(full, |(_, hostport)| hostport))
        }
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// The host the request is for: [`request_authority`] without its port, as received (case and
/// any trailing dot kept).
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    request_authority(req).map(strip_port)
}

/// `authority` without its port: `a:80` → `a`, `a:` → `a`, `[::1]:80` → `[::1]`. A value with
/// no port, with a port that is not digits (`a:b`), or an unbracketed IPv6 address (`::1`) is
/// returned whole.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: http::Version, uri: &str, host: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::get(uri).version(version);
        if let Some(host) = host {
            b = b.header(http::header::HOST, host);
        }
        b.body(()).unwrap()
    }

    const H1: http::Version = http::Version::HTTP_11;
    const H2: http::Version = http::Version::HTTP_2;

    #[test]
    fn an_origin_form_h1_request_is_for_its_host_header() {
        let r = req(H1, "/p?q", Some("shop.example:8080"));
        assert_eq!(request_authority(&r), Some("shop.example:8080"));
        assert_eq!(request_host(&r), Some("shop.example"));
    }

    #[test]
    fn an_absolute_form_h1_target_wins_over_the_host_header() {
        let r = req(H1, "http://target.example:81/p", Some("header.example"));
        assert_eq!(request_authority(&r), Some("target.example:81"));
        assert_eq!(request_host(&r), Some("target.example"));
    }

    #[test]
    fn an_h2_authority_wins_over_a_host_header() {
        let r = req(H2, "http://authority.example/p", Some("header.example"));
        assert_eq!(request_host(&r), Some("authority.example"));
        let only_host = req(H2, "/p", Some("header.example"));
        assert_eq!(request_host(&only_host), Some("header.example"));
    }

    #[test]
    fn userinfo_in_the_target_is_not_part_of_the_host() {
        let r = req(H1, "http://user:pw@shop.example:80/", None);
        assert_eq!(request_authority(&r), Some("shop.example:80"));
        assert_eq!(request_host(&r), Some("shop.example"));
        // The host the router reads through the `http` crate agrees.
        assert_eq!(r.uri().host(), request_host(&r));
    }

    #[test]
    fn ipv6_literals_keep_their_brackets_with_or_without_a_port() {
        let r = req(H2, "http://[fd00::1]:8080/", None);
        assert_eq!(request_host(&r), Some("[fd00::1]"));
        assert_eq!(request_host(&req(H1, "/", Some("[::1]"))), Some("[::1]"));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        // Unbracketed, the last group is not a port.
        assert_eq!(strip_port("fd00::1"), "fd00::1");
        assert_eq!(strip_port("::1"), "::1");
    }

    #[test]
    fn a_port_is_digits_or_empty_and_anything_else_stays() {
        assert_eq!(strip_port("a:80"), "a");
        assert_eq!(strip_port("a:"), "a");
        assert_eq!(strip_port("a"), "a");
        assert_eq!(strip_port("a:b"), "a:b");
        assert_eq!(strip_port(""), "");
        assert_eq!(strip_port("[::1"), "[::1");
    }

    #[test]
    fn no_authority_and_no_usable_host_header_is_none() {
        assert_eq!(request_host(&req(H1, "/", None)), None);
        let mut r = req(H1, "/", None);
        r.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        assert_eq!(request_authority(&r), None);
        assert_eq!(request_host(&req(H1, "/", Some(""))), Some(""));
    }
}
