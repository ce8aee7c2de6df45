//! HBONE, the ambient mesh tunnel, as both directions speak it: mutual TLS 1.3 with SPIFFE
//! identities, then one HTTP/2 `CONNECT` stream per tunnelled TCP connection (`docs/wire.md`).
//!
//! The facts the HBONE server ([`crate::transport::hbone`]) and client
//! ([`crate::upstream::HbonePool`]) must agree on live here once: the port, the HTTP/2 bounds
//! their settings are clamped to, the CONNECT headers (`forwarded`, `traceparent`; `baggage` is
//! [`super::baggage`]) and [`H2Stream`], one HTTP/2 stream seen as a byte stream.

use std::net::{IpAddr, SocketAddr};

mod stream;

pub use stream::H2Stream;

/// The port ztunnel accepts HBONE on.
pub const HBONE_PORT: u16 = 15008;

/// HTTP/2 bounds (RFC 9113 §6.5.2): h2 panics outside them, so options are clamped first.
pub(crate) const MIN_FRAME_SIZE: u32 = 16 * 1024;
/// The largest HTTP/2 frame size a peer may announce.
pub(crate) const MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest HTTP/2 flow-control window.
pub(crate) const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;

/// The client address of the first `forwarded` element's `for=` parameter (RFC 7239), as
/// ztunnel sends it: `for="10.1.2.3:4567"`, `for="[fd00::1]:4567"`, or bare `for=10.1.2.3`
/// (port 0 then). Obfuscated (`_hidden`), `unknown` or malformed values give `None`.
///
/// ```
/// use waypoint_core::wire::hbone::forwarded_for;
/// assert_eq!(forwarded_for(r#"for="10.1.2.3:4567";host=cart.shop.svc"#), Some("10.1.2.3:4567".parse().unwrap()));
/// assert_eq!(forwarded_for(r#"For="[fd00::1]:80""#), Some("[fd00::1]:80".parse().unwrap()));
/// assert_eq!(forwarded_for("for=unknown"), None);
/// ```
pub fn forwarded_for(value: &str) -> Option<SocketAddr> {
    // The first element is the hop nearest the original client.
    let element = split_unquoted(value, ',').into_iter().next()?;
    let for_value = split_unquoted(element, ';').into_iter().find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })?;
    let node = match for_value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => for_value,
    };
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr);
    }
    // No port: IPv6 must still be bracketed, or `fd00::1:80` would pass for an address.
    let ip = match node.strip_prefix('[') {
        Some(v6) => IpAddr::V6(v6.strip_suffix(']')?.parse().ok()?),
        None => IpAddr::V4(node.parse().ok()?),
    };
    Some(SocketAddr::new(ip, 0))
}

/// Splits on `sep` outside double quotes, so a quoted value may hold `,` or `;`.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// True for a W3C `traceparent` of version 00: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, with
/// neither id all zeros (the spec calls those invalid). Anything else is dropped rather than
/// propagated into our own traces.
///
/// ```
/// use waypoint_core::wire::hbone::is_valid_traceparent;
/// assert!(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// assert!(!is_valid_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
/// ```
pub fn is_valid_traceparent(value: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let mut parts = value.split('-');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("00"), Some(trace), Some(parent), Some(flags), None) => {
            hex(trace, 32) && nonzero(trace) && hex(parent, 16) && nonzero(parent) && hex(flags, 2)
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_forms() {
        let cases = [
            (r#"for="10.1.2.3:4567""#, addr("10.1.2.3:4567")),
            (
                r#"for="10.1.2.3:4567";host=cart.shop.svc.cluster.local"#,
                addr("10.1.2.3:4567"),
            ),
            (r#"host=x;FOR="10.1.2.3:1""#, addr("10.1.2.3:1")),
            (r#"for = "10.1.2.3:2" ; proto=http"#, addr("10.1.2.3:2")),
            ("for=10.1.2.3:4567", addr("10.1.2.3:4567")),
            ("for=10.1.2.3", addr("10.1.2.3:0")),
            (r#"for="[fd00::1]:80""#, addr("[fd00::1]:80")),
            ("for=[fd00::1]:80", addr("[fd00::1]:80")),
            (r#"for="[fd00::1]""#, addr("[fd00::1]:0")),
            // The first element wins; later hops are proxies nearer to us.
            (r#"for="10.0.0.1:1", for="10.0.0.2:2""#, addr("10.0.0.1:1")),
            // A quoted host holding separators does not split the element.
            (r#"host="a;b,c";for="10.0.0.3:3""#, addr("10.0.0.3:3")),
        ];
        for (input, want) in cases {
            assert_eq!(forwarded_for(input), want, "{input}");
        }
    }

    #[test]
    fn forwarded_for_rejects_garbage() {
        for input in [
            "",
            "for=",
            r#"for="""#,
            "for=unknown",
            "for=_hidden",
            r#"for="10.1.2.3:4567"#,
            "for=10.1.2.3:99999",
            "for=cart.shop:80",
            "by=10.0.0.1:80",
            "for=fd00::1:80",
            "for",
            r#"for="[fd00::1]:80"x"#,
            // Only the first element counts, even when a later one is valid.
            r#"for=unknown, for="10.0.0.2:2""#,
        ] {
            assert_eq!(forwarded_for(input), None, "{input}");
        }
    }

    #[test]
    fn traceparent_check() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        for bad in [
            "",
            "00",
            // Uppercase hex, wrong version, wrong lengths, extra field, zero ids.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad}");
        }
    }
}
