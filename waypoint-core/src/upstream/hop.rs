//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a proxy drops them
//! instead of forwarding them to the next hop.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `HTTP2-Settings` (RFC 9113 §3.2.1, kept from RFC 7540): the settings of an h2c upgrade, which
/// describe the connection they arrive on and so never travel further.
pub(crate) const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that are hop-by-hop whatever `Connection` says. `Proxy-Connection` and `Keep-Alive`
/// are not standard any more but old clients still send them; `HTTP2-Settings` belongs to the
/// h2c upgrade, which the waypoint never carries.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HTTP2_SETTINGS,
];

/// The comma-separated tokens of every `name` header, trimmed and lowercased.
pub(crate) fn tokens<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// True when the message asks to switch protocols (`Connection: upgrade` plus an `Upgrade`
/// header), as a WebSocket handshake does.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && tokens(headers, &header::CONNECTION).any(|t| t == "upgrade")
}

/// Removes the hop-by-hop headers of a request or response: `Connection` and every header it
/// names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
/// `Proxy-Authenticate`, `Proxy-Authorization` and `HTTP2-Settings`.
///
/// `TE: trailers` survives (reduced to exactly that) because HTTP/2 allows it end to end and
/// gRPC requires it. With `keep_upgrade`, a protocol switch the proxy is going to carry through
/// keeps `Upgrade` and `Connection: upgrade` (nothing else `Connection` listed).
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let keep_upgrade = keep_upgrade && is_upgrade(headers);
    // Collected first: the names borrow from the map we are about to change.
    let named: Vec<HeaderName> = tokens(headers, &header::CONNECTION)
        .filter(|t| !(keep_upgrade && t == "upgrade"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        // `Connection: host` or `Connection: te, trailers` must not strip what HTTP needs.
        if name != header::HOST && name != header::TE {
            headers.remove(&name);
        }
    }

    let te_trailers = tokens(headers, &header::TE).any(|t| {
        // A TE member may carry a weight: `trailers;q=1` is still trailers.
        t.split(';').next().map(str::trim) == Some("trailers")
    });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }

    for name in &HOP_BY_HOP {
        if keep_upgrade && (*name == header::UPGRADE || *name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Conn-A"),
            ("connection", "x-conn-b"),
            ("x-conn-a", "1"),
            ("x-conn-b", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
            ("authorization", "Bearer t"),
            ("content-length", "3"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-length", "x-end-to-end"]);
    }

    #[test]
    fn te_trailers_is_kept_alone() {
        let mut h = map(&[("te", "trailers")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");

        let mut h = map(&[("te", "gzip, Trailers;q=1")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.get_all("te").iter().count(), 1);
        assert_eq!(h["te"], "trailers");

        // `Connection: te` names TE as hop-by-hop, but trailers still matter end to end.
        let mut h = map(&[
            ("connection", "te, host"),
            ("te", "trailers"),
            ("host", "a"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["host"], "a");
    }

    #[test]
    fn upgrade_kept_only_when_asked_and_requested() {
        let ws = [
            ("connection", "keep-alive, Upgrade, x-other"),
            ("upgrade", "websocket"),
            ("x-other", "1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let mut h = map(&ws);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.get("x-other").is_none());
        assert!(h.get("sec-websocket-key").is_some());

        let mut h = map(&ws);
        remove_hop_by_hop(&mut h, false);
        assert!(h.get("connection").is_none() && h.get("upgrade").is_none());

        // An Upgrade header that Connection does not name is not a protocol switch.
        let mut h = map(&[("upgrade", "websocket")]);
        assert!(!is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert!(h.is_empty());
    }

    #[test]
    fn garbage_in_connection_is_ignored() {
        let mut h = map(&[("connection", "bad name, ,,"), ("x-a", "1")]);
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"\xffweird").unwrap(),
        );
        remove_hop_by_hop(&mut h, false);
        assert!(h.get("connection").is_none());
        assert_eq!(h["x-a"], "1");
    }
}
