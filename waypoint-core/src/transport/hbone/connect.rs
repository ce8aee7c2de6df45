//! The `CONNECT` request that opens one HBONE stream: what it must be (method, an `ip:port`
//! authority) and what it tells about the tunnelled connection (`forwarded`, `baggage`,
//! `traceparent`). Pure (no I/O, no logging), so the fuzzer drives the same checks a peer's
//! stream meets; the server logs and answers a rejection.

use std::net::SocketAddr;

use http::{HeaderMap, Method, Request};

use super::server::HboneRejection;
use crate::conn::{Binding, ConnInfo};
use crate::identity::SpiffeId;
use crate::wire::baggage;
use crate::wire::hbone::{forwarded_for, is_valid_traceparent};

/// Vets the request head of one HBONE stream and, when it is a CONNECT HBONE serves, says what
/// is known of the tunnelled connection. Pure (no I/O, no logging), so the fuzzer drives the
/// same checks a peer's stream meets: method, `:authority`, `forwarded`, `baggage` and
/// `traceparent`. The caller logs and answers the rejection (405 or 400).
pub(crate) fn vet_connect<B>(
    req: &Request<B>,
    peer_addr: SocketAddr,
    peer_identity: &SpiffeId,
) -> Result<ConnInfo, HboneRejection> {
    if req.method() != Method::CONNECT {
        return Err(HboneRejection::NotConnect);
    }
    let destination = req
        .uri()
        .authority()
        .and_then(|a| parse_authority(a.as_str()))
        .ok_or(HboneRejection::BadAuthority)?;
    let mut info = ConnInfo::new(Binding::Hbone);
    info.peer_identity = Some(peer_identity.clone());
    info.destination = Some(destination);
    info.source = Some(forwarded_source(req.headers()).unwrap_or(peer_addr));
    info.source_workload = baggage::from_headers(req.headers());
    info.traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_traceparent(v))
        .map(str::to_owned);
    Ok(info)
}

/// Parses a CONNECT `:authority`: `ip:port` or `[ipv6]:port`, port not zero. Host names are
/// refused: HBONE always names the destination by address.
fn parse_authority(authority: &str) -> Option<SocketAddr> {
    authority
        .parse::<SocketAddr>()
        .ok()
        .filter(|a| a.port() != 0)
}

/// The source address from the first valid `forwarded` header, if any.
fn forwarded_source(headers: &HeaderMap) -> Option<SocketAddr> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(forwarded_for)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_first_valid_forwarded_header_names_the_source() {
        let mut headers = HeaderMap::new();
        assert_eq!(forwarded_source(&headers), None);
        headers.append("forwarded", "for=unknown".parse().unwrap());
        headers.append("forwarded", r#"for="10.9.9.9:9""#.parse().unwrap());
        assert_eq!(forwarded_source(&headers), addr("10.9.9.9:9"));
    }

    #[test]
    fn authority_needs_ip_and_port() {
        assert_eq!(parse_authority("10.0.0.1:80"), addr("10.0.0.1:80"));
        assert_eq!(parse_authority("[fd00::1]:8080"), addr("[fd00::1]:8080"));
        for bad in [
            "10.0.0.1",
            "cart:80",
            "10.0.0.1:0",
            "fd00::1:80",
            "",
            "[fd00::1]",
        ] {
            assert_eq!(parse_authority(bad), None, "{bad}");
        }
    }
}
