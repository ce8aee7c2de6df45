//! The PROXY protocol (v1 text and v2 binary) as bytes: a pure decoder and an encoder, and the
//! TLV types Istio gives meaning to. Used both ways: the sandwich listener decodes the header a
//! co-located ztunnel writes (`transport/proxy_header.rs` reads it off a socket and maps
//! it to a [`ConnInfo`](crate::conn::ConnInfo)); the upstream encodes one toward a ztunnel's
//! Unix socket. No I/O here, so benches and fuzz targets drive exactly what peers meet.
//!
//! ztunnel writes a v2 header (`\r\n\r\n\0\r\nQUIT\n`, command `0x21`, family `0x11` or `0x21`)
//! whose TLVs carry the source identity (`0xD0`) and, when known, the targeted service (`0xD1`).
//! We also accept v1 text headers, so a hand-written client or HAProxy can talk to the listener.
//! The byte layout is in `docs/wire.md`.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use ppp::v2::{Addresses, Protocol};

use crate::conn::Tlv;
use crate::identity::SpiffeIdError;

pub(crate) const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol and the 2-byte length.
pub(crate) const V2_PREFIX_LEN: usize = 16;
pub(crate) const V1_SIGNATURE: &[u8; 6] = b"PROXY ";
/// The longest v1 line the spec allows, CRLF included.
pub(crate) const V1_MAX_LEN: usize = 107;

/// The smallest header limit honoured: the prefix plus the largest v2 address block (two Unix
/// paths). A smaller `max_header_bytes` is raised to this, so no valid address block is refused.
pub const MIN_HEADER_BYTES: usize = V2_PREFIX_LEN + 216;
/// TLV carrying the source workload's SPIFFE identity (raw ASCII, no terminator).
pub const TLV_PEER_IDENTITY: u8 = 0xD0;
/// TLV Istio reserves for the targeted service's hostname.
pub(crate) const TLV_TARGET_SERVICE: u8 = 0xD1;
/// Default TLV type of the source workload metadata (a W3C baggage string): the first
/// application-specific type of the PROXY spec.
pub(crate) const DEFAULT_METADATA_TLV: u8 = 0xE0;

/// Why a connection's PROXY header was refused. The connection is closed in every case.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The header did not arrive within the read timeout.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The socket failed while the header was read.
    #[error("I/O error while reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection without sending a byte (a TCP health probe, typically).
    #[error("connection closed before any byte was sent")]
    Empty,
    /// The stream does not start with a PROXY signature, and a header is required.
    #[error("stream does not start with a PROXY protocol header")]
    NotProxy,
    /// The peer closed the connection in the middle of the header.
    #[error("connection closed after {read} bytes, in the middle of the PROXY header")]
    Truncated {
        /// Bytes received before the end of stream.
        read: usize,
    },
    /// The v2 header declares more bytes than allowed.
    #[error("PROXY header declares {declared} bytes, more than the {max} allowed")]
    Oversized {
        /// Total header length declared, prefix included.
        declared: usize,
        /// The limit in force.
        max: usize,
    },
    /// A v2 signature with a version other than 2.
    #[error("unsupported PROXY protocol version {0}")]
    UnsupportedVersion(u8),
    /// A v2 command other than LOCAL (0) or PROXY (1).
    #[error("unsupported PROXY v2 command {0:#x}")]
    UnsupportedCommand(u8),
    /// A v2 family/protocol byte other than TCP over IPv4/IPv6 or unspecified.
    #[error("unsupported PROXY v2 address family and protocol {0:#04x}")]
    UnsupportedFamily(u8),
    /// A LOCAL command (the sender's own connection, with no client behind it) where a
    /// proxied connection is required.
    #[error("PROXY LOCAL command where a proxied connection is required")]
    LocalCommand,
    /// TLV 0xD0 is not an Istio SPIFFE identity.
    #[error("invalid peer identity in TLV 0xD0: {0}")]
    InvalidIdentity(#[from] SpiffeIdError),
    /// TLV 0xD1 is not a hostname.
    #[error("TLV 0xD1 is not a valid hostname: {0}")]
    InvalidHostname(String),
    /// The same identity or service TLV appears twice with different values.
    #[error("TLV {0:#04x} appears more than once with different values")]
    ConflictingTlv(u8),
    /// A v1 text header that does not parse.
    #[error("malformed PROXY v1 header: {0}")]
    MalformedV1(String),
    /// A v2 header whose length cannot hold its address block.
    #[error("malformed PROXY v2 header: {0}")]
    MalformedV2(String),
    /// A v2 TLV list that overruns the header or leaves stray bytes.
    #[error("malformed PROXY v2 TLV list: {0}")]
    MalformedTlv(String),
}

impl ProxyError {
    /// A short stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Io(_) => "io",
            ProxyError::Empty => "empty",
            ProxyError::NotProxy => "not_proxy",
            ProxyError::Truncated { .. } => "truncated",
            ProxyError::Oversized { .. } => "oversized",
            ProxyError::UnsupportedVersion(_) => "unsupported_version",
            ProxyError::UnsupportedCommand(_) => "unsupported_command",
            ProxyError::UnsupportedFamily(_) => "unsupported_family",
            ProxyError::LocalCommand => "local_command",
            ProxyError::InvalidIdentity(_) => "invalid_identity",
            ProxyError::InvalidHostname(_) => "invalid_hostname",
            ProxyError::ConflictingTlv(_) => "conflicting_tlv",
            ProxyError::MalformedV1(_) => "malformed_v1",
            ProxyError::MalformedV2(_) => "malformed_v2",
            ProxyError::MalformedTlv(_) => "malformed_tlv",
        }
    }

    /// Every label [`ProxyError::reason`] can return, so metrics can start each at zero.
    pub(crate) const REASONS: &'static [&'static str] = &[
        "timeout",
        "io",
        "empty",
        "not_proxy",
        "truncated",
        "oversized",
        "unsupported_version",
        "unsupported_command",
        "unsupported_family",
        "local_command",
        "invalid_identity",
        "invalid_hostname",
        "conflicting_tlv",
        "malformed_v1",
        "malformed_v2",
        "malformed_tlv",
    ];
}

/// A decoded PROXY header (v1 or v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// A v2 LOCAL command: the sender's own connection; addresses are then ignored.
    pub local: bool,
    /// The original client address, when the header names one.
    pub source: Option<SocketAddr>,
    /// The address the client dialled, when the header names one.
    pub destination: Option<SocketAddr>,
    /// Every v2 TLV, in order, verbatim.
    pub tlvs: Vec<Tlv>,
}

/// What [`decode`] made of the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole header; the payload starts at `consumed`.
    Complete {
        /// The header.
        header: ProxyHeader,
        /// Header length in bytes.
        consumed: usize,
    },
    /// A possible header that needs more bytes.
    Incomplete {
        /// How many more bytes are needed at least, when known (v2 only).
        needed: Option<usize>,
    },
    /// The buffer does not start with a PROXY signature.
    NotProxy,
}

/// Decodes a PROXY v1 or v2 header at the start of `buf`. Pure (no I/O), so benches and fuzz
/// targets can call it; it never panics, whatever the input.
///
/// `max_header_bytes` bounds a v2 header's declared length (raised to [`MIN_HEADER_BYTES`]); it
/// is checked as soon as the 16-byte prefix is there, before waiting for the rest.
pub fn decode(buf: &[u8], max_header_bytes: usize) -> Result<Decoded, ProxyError> {
    match buf.first() {
        None => Ok(Decoded::Incomplete { needed: None }),
        Some(b'\r') => decode_v2(buf, max_header_bytes.max(MIN_HEADER_BYTES)),
        Some(b'P') => decode_v1(buf),
        Some(_) => Ok(Decoded::NotProxy),
    }
}

fn decode_v2(buf: &[u8], max: usize) -> Result<Decoded, ProxyError> {
    let sig_len = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig_len] != V2_SIGNATURE[..sig_len] {
        return Ok(Decoded::NotProxy);
    }
    if buf.len() < V2_PREFIX_LEN {
        return Ok(Decoded::Incomplete {
            needed: Some(V2_PREFIX_LEN - buf.len()),
        });
    }
    let version = buf[12] >> 4;
    if version != 2 {
        return Err(ProxyError::UnsupportedVersion(version));
    }
    let local = match buf[12] & 0x0f {
        0 => true,
        1 => false,
        other => return Err(ProxyError::UnsupportedCommand(other)),
    };
    let family = buf[13];
    let total = V2_PREFIX_LEN + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > max {
        return Err(ProxyError::Oversized {
            declared: total,
            max,
        });
    }
    if buf.len() < total {
        return Ok(Decoded::Incomplete {
            needed: Some(total - buf.len()),
        });
    }
    let parsed = ppp::v2::Header::try_from(&buf[..total]).map_err(|e| match e {
        ppp::v2::ParseError::AddressFamily(_) | ppp::v2::ParseError::Protocol(_) => {
            ProxyError::UnsupportedFamily(family)
        }
        other => ProxyError::MalformedV2(other.to_string()),
    })?;
    if parsed.len() != total {
        return Err(ProxyError::MalformedV2("header length mismatch".into()));
    }
    // ppp counts an unspecified family's whole payload as addresses; the spec gives it an empty
    // address block, with TLVs right after the prefix.
    let address_len = parsed.address_family().byte_length().unwrap_or(0);
    let (source, destination) = match (local, parsed.protocol, parsed.addresses) {
        // LOCAL: the spec says to ignore the addresses, whatever they are.
        (true, _, _) | (false, _, Addresses::Unspecified) => (None, None),
        (false, Protocol::Stream, Addresses::IPv4(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        (false, Protocol::Stream, Addresses::IPv6(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        (false, _, _) => return Err(ProxyError::UnsupportedFamily(family)),
    };
    let tlvs = parse_tlvs(&buf[V2_PREFIX_LEN + address_len..total])?;
    Ok(Decoded::Complete {
        header: ProxyHeader {
            version: 2,
            local,
            source,
            destination,
            tlvs,
        },
        consumed: total,
    })
}

fn parse_tlvs(bytes: &[u8]) -> Result<Vec<Tlv>, ProxyError> {
    ppp::v2::TypeLengthValues::from(bytes)
        .map(|tlv| match tlv {
            Ok(tlv) => Ok(Tlv {
                kind: tlv.kind,
                value: Bytes::copy_from_slice(&tlv.value),
            }),
            Err(e) => Err(ProxyError::MalformedTlv(e.to_string())),
        })
        .collect()
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let sig_len = buf.len().min(V1_SIGNATURE.len());
    if buf[..sig_len] != V1_SIGNATURE[..sig_len] {
        return Ok(Decoded::NotProxy);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ProxyError::MalformedV1(format!(
                "no CRLF within {V1_MAX_LEN} bytes"
            )));
        }
        return Ok(Decoded::Incomplete { needed: None });
    };
    let line = &buf[..=lf];
    if !line.ends_with(b"\r\n") {
        return Err(ProxyError::MalformedV1("line does not end in CRLF".into()));
    }
    let parsed =
        ppp::v1::Header::try_from(line).map_err(|e| ProxyError::MalformedV1(e.to_string()))?;
    // ppp stops at the first CR: one earlier than ours means a stray CR inside the line.
    if parsed.header.len() != line.len() {
        return Err(ProxyError::MalformedV1("stray carriage return".into()));
    }
    let (source, destination) = match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        ppp::v1::Addresses::Tcp6(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        ppp::v1::Addresses::Unknown => (None, None),
    };
    Ok(Decoded::Complete {
        header: ProxyHeader {
            version: 1,
            local: false,
            source,
            destination,
            tlvs: Vec::new(),
        },
        consumed: line.len(),
    })
}

/// Encodes a PROXY v2 header (PROXY command, TCP) naming `source` and `destination`, followed
/// by `tlvs` in order. For the quickstart client, tests and the load generator.
///
/// Both addresses are written as IPv4 when both are IPv4, else as IPv6 (an IPv4 address mapped
/// to `::ffff:a.b.c.d`). A TLV that would push the header past the 65,535-byte limit of the
/// format is left out.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let tlv_len: usize = tlvs.iter().map(|(_, v)| 3 + v.len()).sum();
    let mut out = Vec::with_capacity(V2_PREFIX_LEN + 36 + tlv_len);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 0]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        _ => {
            out.extend_from_slice(&[0x21, 0, 0]);
            out.extend_from_slice(&as_v6(source.ip()).octets());
            out.extend_from_slice(&as_v6(destination.ip()).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    for (kind, value) in tlvs {
        let Ok(len) = u16::try_from(value.len()) else {
            continue;
        };
        if out.len() - V2_PREFIX_LEN + 3 + value.len() > usize::from(u16::MAX) {
            continue;
        }
        out.push(*kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
    }
    // Bounded to u16::MAX by the loop above.
    let body = u16::try_from(out.len() - V2_PREFIX_LEN).unwrap_or(u16::MAX);
    out[14..16].copy_from_slice(&body.to_be_bytes());
    out
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// TLVs of every kind a header may carry (identity, service, baggage, a vendor's, an empty
/// one), for tests of the codec and of the reader that maps them.
#[cfg(test)]
pub(crate) const SAMPLE_TLVS: &[(u8, &[u8])] = &[
    (0xD0, b"spiffe://cluster.local/ns/default/sa/default"),
    (0xD1, b"cart.shop.svc.cluster.local"),
    (0xE0, b"k8s.namespace.name=shop,k8s.deployment.name=cart"),
    (0xEF, b"\x00\xffvendor"),
    (0x03, b""),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Tlv;

    const ID: &str = "spiffe://cluster.local/ns/default/sa/default";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
        match decode(buf, 4096).unwrap() {
            Decoded::Complete { header, consumed } => (header, consumed),
            other => panic!("expected a complete header, got {other:?}"),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn decodes_captured_ztunnel_header() {
        let mut wire =
            hex("0d0a0d0a000d0a515549540a 21 11 003b 7f000001 7f000001 b762 1f90 d0 002c");
        wire.extend_from_slice(ID.as_bytes());
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (header, consumed) = complete(&wire);
        assert_eq!(consumed, 16 + 0x3b);
        assert_eq!(&wire[consumed..], b"GET / HTTP/1.1\r\n");
        assert_eq!((header.version, header.local), (2, false));
        assert_eq!(header.source, Some(addr("127.0.0.1:46946")));
        assert_eq!(header.destination, Some(addr("127.0.0.1:8080")));
        assert_eq!(
            header.tlvs,
            vec![Tlv {
                kind: 0xD0,
                value: Bytes::from_static(ID.as_bytes())
            }]
        );
    }

    #[test]
    fn encode_round_trips_v4_v6_and_mixed() {
        let tlvs = SAMPLE_TLVS;
        let cases = [
            (
                "10.0.0.1:1234",
                "10.0.0.2:80",
                "10.0.0.1:1234",
                "10.0.0.2:80",
            ),
            (
                "[fd00::1]:1234",
                "[fd00::2]:443",
                "[fd00::1]:1234",
                "[fd00::2]:443",
            ),
            (
                "10.0.0.1:1234",
                "[fd00::2]:443",
                "[::ffff:10.0.0.1]:1234",
                "[fd00::2]:443",
            ),
        ];
        for (src, dst, want_src, want_dst) in cases {
            let wire = encode_v2(addr(src), addr(dst), tlvs);
            let (header, consumed) = complete(&wire);
            assert_eq!(consumed, wire.len());
            assert_eq!(header.source, Some(addr(want_src)));
            assert_eq!(header.destination, Some(addr(want_dst)));
            let kept: Vec<(u8, &[u8])> =
                header.tlvs.iter().map(|t| (t.kind, &t.value[..])).collect();
            assert_eq!(kept, tlvs);
        }
    }

    #[test]
    fn refuses_oversized_garbage_and_unsupported() {
        // Declared length 4081 + 16 > 4096: refused from the prefix alone.
        let mut wire = hex("0d0a0d0a000d0a515549540a 21 11 0ff1");
        assert!(matches!(
            decode(&wire, 4096),
            Err(ProxyError::Oversized {
                declared: 4097,
                max: 4096
            })
        ));
        // A limit below the minimum is raised to it.
        wire[14..16].copy_from_slice(&[0, 216]);
        assert_eq!(
            decode(&wire, 10).unwrap(),
            Decoded::Incomplete { needed: Some(216) }
        );

        for garbage in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"\r\n\r\nX",
            b"PROXX",
            b"PRI *",
        ] {
            assert_eq!(decode(garbage, 4096).unwrap(), Decoded::NotProxy);
        }

        let reason = |prefix: &str| {
            let mut wire = hex(prefix);
            wire.extend_from_slice(&[0; 36]);
            decode(&wire, 4096).map(|_| ()).unwrap_err().reason()
        };
        assert_eq!(
            reason("0d0a0d0a000d0a515549540a 11 11 000c"),
            "unsupported_version"
        );
        assert_eq!(
            reason("0d0a0d0a000d0a515549540a 22 11 000c"),
            "unsupported_command"
        );
        assert_eq!(
            reason("0d0a0d0a000d0a515549540a 21 12 000c"),
            "unsupported_family"
        );
        assert_eq!(
            reason("0d0a0d0a000d0a515549540a 21 41 000c"),
            "unsupported_family"
        );
        assert_eq!(
            reason("0d0a0d0a000d0a515549540a 21 21 000c"),
            "malformed_v2"
        );
        // TLV claims 5 bytes, 2 remain; then a 1-byte leftover.
        assert_eq!(
            reason("0d0a0d0a000d0a515549540a 21 00 0005 d00005"),
            "malformed_tlv"
        );
        assert_eq!(
            reason("0d0a0d0a000d0a515549540a 21 00 0001"),
            "malformed_tlv"
        );
    }

    #[test]
    fn local_command_ignores_addresses_and_keeps_tlvs() {
        let mut wire = hex("0d0a0d0a000d0a515549540a 20 00 0006 ee0003");
        wire.extend_from_slice(b"abc");
        let (header, consumed) = complete(&wire);
        assert!(header.local);
        assert_eq!(consumed, 22);
        assert_eq!(header.tlvs[0].kind, 0xEE);
        let wire = hex("0d0a0d0a000d0a515549540a 20 11 000c 01020304 05060708 0001 0002");
        let (header, _) = complete(&wire);
        assert_eq!((header.local, header.source), (true, None));
    }
}
