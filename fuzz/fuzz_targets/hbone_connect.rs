//! HBONE CONNECT request vetting: method, `:authority`, `forwarded`, `baggage`, `traceparent`.
//!
//! The input is a request head as text: `METHOD authority`, then one `name: value` header a
//! line (any bytes in the value). Properties:
//! - only a CONNECT to a literal `ip:port` (port not zero) is accepted, and its destination is
//!   that address;
//! - the source is the first `forwarded` header whose first element has a usable `for=`, else
//!   the TCP peer; an address read from `for=` reads back the same once written quoted;
//! - a kept `traceparent` is the header verbatim and passes an independent W3C check, and
//!   every value that passes that check is kept;
//! - baggage never panics, whatever its size or encoding.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use waypoint_core::identity::SpiffeId;
use waypoint_core::transport::hbone::HboneRejection;
use waypoint_core::wire::baggage;
use waypoint_core::wire::hbone::{forwarded_for, is_valid_traceparent};

fuzz_target!(|data: &[u8]| {
    let peer: SocketAddr = ([192, 0, 2, 1], 40000).into();
    let identity: SpiffeId = "spiffe://cluster.local/ns/default/sa/client"
        .parse()
        .expect("a valid identity");

    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, authority) = match first.iter().position(|&b| b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (&b"CONNECT"[..], first),
    };
    let mut builder = http::Request::builder().method(method).uri(authority);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        builder = builder.header(&line[..colon], value);
        if let Ok(text) = std::str::from_utf8(value) {
            let _ = baggage::decode(text);
            if let Some(addr) = forwarded_for(text) {
                assert_eq!(
                    forwarded_for(&format!("for=\"{addr}\"")),
                    Some(addr),
                    "{text:?} read as {addr}, which does not read back"
                );
            }
            assert_eq!(
                is_valid_traceparent(text),
                reference_traceparent(text),
                "{text:?}"
            );
        }
    }
    if let Ok(req) = builder.body(()) {
        check(&req, peer, &identity);
    }
});

fn check(req: &http::Request<()>, peer: SocketAddr, identity: &SpiffeId) {
    let vetted = waypoint_core::fuzzing::hbone_connect(req, peer, identity);
    let authority = req.uri().authority().map(|a| a.as_str());
    let literal = authority
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .filter(|a| a.port() != 0);
    let info = match (req.method() == http::Method::CONNECT, literal) {
        (false, _) => {
            assert_eq!(vetted.err(), Some(HboneRejection::NotConnect));
            return;
        }
        (true, None) => {
            assert_eq!(vetted.err(), Some(HboneRejection::BadAuthority));
            return;
        }
        (true, Some(destination)) => {
            let info = vetted.expect("a CONNECT to ip:port is accepted");
            assert_eq!(info.destination, Some(destination));
            info
        }
    };
    assert_eq!(info.peer_identity.as_ref(), Some(identity));

    let forwarded = req
        .headers()
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(forwarded_for);
    assert_eq!(info.source, Some(forwarded.unwrap_or(peer)));

    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    match (&info.traceparent, traceparent) {
        (Some(kept), Some(sent)) => {
            assert_eq!(kept, sent);
            assert!(reference_traceparent(sent), "{sent:?} kept");
        }
        (None, Some(sent)) => assert!(!reference_traceparent(sent), "{sent:?} dropped"),
        (None, None) => {}
        (Some(kept), None) => panic!("traceparent {kept:?} out of nowhere"),
    }
}

/// W3C trace-context version 00, written independently of the code under test: 55 bytes,
/// `00-` + 32 lowercase hex (not all zero) + `-` + 16 lowercase hex (not all zero) + `-` + 2
/// lowercase hex.
fn reference_traceparent(v: &str) -> bool {
    let b = v.as_bytes();
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    b.len() == 55
        && &b[..3] == b"00-"
        && b[35] == b'-'
        && b[52] == b'-'
        && lower_hex(&b[3..35])
        && lower_hex(&b[36..52])
        && lower_hex(&b[53..55])
        && b[3..35].iter().any(|&c| c != b'0')
        && b[36..52].iter().any(|&c| c != b'0')
}
