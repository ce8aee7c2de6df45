//! Reading the PROXY header off an inbound socket: the async reader with its timeout and size
//! limit, and the mapping of a decoded header to a [`ConnInfo`]. The format itself (decoder,
//! encoder, TLV types) is [`crate::wire::proxy_protocol`], shared with the upstream side.
//!
//! A header is either fully valid or the connection is closed: an identity TLV that does not
//! parse is an error, never a silent downgrade to "unauthenticated".

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::conn::{Binding, ConnInfo, Tlv, WorkloadMetadata};
use crate::identity::SpiffeId;
use crate::wire::baggage;
use crate::wire::proxy_protocol::{
    DEFAULT_METADATA_TLV, Decoded, ProxyError, ProxyHeader, TLV_PEER_IDENTITY, TLV_TARGET_SERVICE,
    V1_MAX_LEN, V1_SIGNATURE, V2_PREFIX_LEN, V2_SIGNATURE, decode,
};

/// How the sandwich listener treats the PROXY header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Refuse connections without a PROXY header, or with a LOCAL one (default true, as a
    /// sandwiched waypoint must never serve a connection whose origin it does not know).
    pub required: bool,
    /// How long the whole header may take to arrive (default 5 s).
    pub read_timeout: Duration,
    /// Largest header accepted, prefix included (default 4096; values below
    /// [`MIN_HEADER_BYTES`](crate::wire::proxy_protocol::MIN_HEADER_BYTES) are raised to it).
    pub max_header_bytes: usize,
    /// TLV type of the source workload metadata (default `DEFAULT_METADATA_TLV`).
    pub metadata_tlv: u8,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            required: true,
            read_timeout: Duration::from_secs(5),
            max_header_bytes: 4096,
            metadata_tlv: DEFAULT_METADATA_TLV,
        }
    }
}

/// Reads a PROXY header from the start of `io`.
///
/// A v2 header is read exactly (the 16-byte prefix, then the declared length), so nothing past
/// it is consumed; a v1 line is read in chunks of at most 107 bytes. Returns the header and the
/// bytes read past it, which the caller must replay before reading `io` again ([`Rewind`](super::Rewind)).
/// The whole header must arrive within `cfg.read_timeout`.
///
/// When `cfg.required` is false and the stream does not start with a PROXY signature, returns
/// `(None, bytes read so far)`. A LOCAL command is an error when required, else
/// `Some(header)` with `local == true`.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
    cfg: &ProxyConfig,
) -> Result<(Option<ProxyHeader>, Bytes), ProxyError> {
    match tokio::time::timeout(cfg.read_timeout, read_header_untimed(io, cfg)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout(cfg.read_timeout)),
    }
}

async fn read_header_untimed<S: AsyncRead + Unpin>(
    io: &mut S,
    cfg: &ProxyConfig,
) -> Result<(Option<ProxyHeader>, Bytes), ProxyError> {
    let mut buf = BytesMut::with_capacity(128);
    loop {
        let want = match decode(&buf, cfg.max_header_bytes)? {
            Decoded::Complete { header, consumed } => {
                if header.local && cfg.required {
                    return Err(ProxyError::LocalCommand);
                }
                // Nothing past the header (the usual case): an empty `Bytes` of its own, so
                // the connection does not keep the header's buffer alive for its whole life.
                let rest = if consumed == buf.len() {
                    Bytes::new()
                } else {
                    buf.split_off(consumed).freeze()
                };
                return Ok((Some(header), rest));
            }
            Decoded::NotProxy if cfg.required => return Err(ProxyError::NotProxy),
            Decoded::NotProxy => return Ok((None, buf.freeze())),
            Decoded::Incomplete { needed: Some(n) } => n,
            // Nothing yet: the v2 prefix is the most we may take without over-reading a v2
            // header. Past that it can only be a v1 line.
            Decoded::Incomplete { needed: None } if buf.is_empty() => V2_PREFIX_LEN,
            Decoded::Incomplete { needed: None } => V1_MAX_LEN.saturating_sub(buf.len()).max(1),
        };
        buf.reserve(want);
        if io.read_buf(&mut (&mut buf).limit(want)).await? == 0 {
            let confirmed = buf.starts_with(V2_SIGNATURE) || buf.starts_with(V1_SIGNATURE);
            return if !cfg.required && !confirmed {
                Ok((None, buf.freeze()))
            } else if buf.is_empty() {
                Err(ProxyError::Empty)
            } else {
                Err(ProxyError::Truncated { read: buf.len() })
            };
        }
    }
}

/// Builds the [`ConnInfo`] of a connection from its header.
///
/// TLV 0xD0 must be an Istio SPIFFE identity (else an error: the connection is closed rather
/// than served as unauthenticated), 0xD1 a hostname; the metadata TLV (`cfg.metadata_tlv`) is
/// parsed as baggage, and ignored when it is not UTF-8. All TLVs are kept in `tlvs`.
pub fn conn_info(
    header: &ProxyHeader,
    binding: Binding,
    cfg: &ProxyConfig,
) -> Result<ConnInfo, ProxyError> {
    let mut info = ConnInfo::new(binding);
    info.source = header.source;
    info.destination = header.destination;
    let mut seen_identity: Option<&Bytes> = None;
    let mut seen_service: Option<&Bytes> = None;
    for tlv in &header.tlvs {
        match tlv.kind {
            TLV_PEER_IDENTITY if check_unique(&mut seen_identity, tlv)? => {
                let raw = String::from_utf8_lossy(&tlv.value);
                info.peer_identity = Some(SpiffeId::from_str(&raw)?);
            }
            TLV_TARGET_SERVICE if check_unique(&mut seen_service, tlv)? => {
                info.target_service = Some(parse_hostname(&tlv.value)?);
            }
            // A repeat with the same value as the first.
            TLV_PEER_IDENTITY | TLV_TARGET_SERVICE => {}
            kind if kind == cfg.metadata_tlv => {
                info.source_workload = match std::str::from_utf8(&tlv.value) {
                    Ok(value) => baggage::decode(value),
                    Err(_) => WorkloadMetadata::default(),
                };
            }
            _ => {}
        }
    }
    info.tlvs = header.tlvs.clone();
    Ok(info)
}

/// True the first time a TLV kind is seen; a repeat with another value is an error, since we
/// cannot tell which of two identities to trust.
fn check_unique<'a>(seen: &mut Option<&'a Bytes>, tlv: &'a Tlv) -> Result<bool, ProxyError> {
    match seen {
        None => {
            *seen = Some(&tlv.value);
            Ok(true)
        }
        Some(first) if **first == tlv.value => Ok(false),
        Some(_) => Err(ProxyError::ConflictingTlv(tlv.kind)),
    }
}

fn parse_hostname(raw: &[u8]) -> Result<String, ProxyError> {
    let shown = || Shown(raw).to_string();
    let host = std::str::from_utf8(raw).map_err(|_| ProxyError::InvalidHostname(shown()))?;
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(host.to_owned())
    } else {
        Err(ProxyError::InvalidHostname(shown()))
    }
}

/// A peer-supplied value for an error message: escaped, and cut short so logs stay readable.
struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        let cut = &self.0[..self.0.len().min(MAX)];
        write!(f, "\"{}\"", cut.escape_ascii())?;
        if self.0.len() > MAX {
            write!(f, "... ({} bytes)", self.0.len())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proxy_protocol::{SAMPLE_TLVS, encode_v2};
    use std::net::SocketAddr;

    const ID: &str = "spiffe://cluster.local/ns/default/sa/default";

    fn header(source: &str, destination: &str, tlvs: &[(u8, &[u8])]) -> ProxyHeader {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let wire = encode_v2(addr(source), addr(destination), tlvs);
        match decode(&wire, 4096).unwrap() {
            Decoded::Complete { header, .. } => header,
            other => panic!("expected a complete header, got {other:?}"),
        }
    }

    #[test]
    fn a_ztunnel_header_with_an_identity_becomes_an_authenticated_conn_info() {
        let header = header(
            "127.0.0.1:46946",
            "127.0.0.1:8080",
            &[(0xD0, ID.as_bytes())],
        );
        let binding = Binding::Sandwich {
            listener: "tcp:127.0.0.1:15088".into(),
        };
        let info = conn_info(&header, binding.clone(), &ProxyConfig::default()).unwrap();
        assert_eq!(info.binding, binding);
        assert_eq!(info.peer_identity.unwrap().as_str(), ID);
        assert!(info.source_workload.is_empty());
        assert_eq!(info.target_service, None);
    }

    #[test]
    fn every_known_tlv_fills_conn_info_and_every_tlv_is_kept() {
        let tlvs = SAMPLE_TLVS;
        for (src, dst) in [
            ("10.0.0.1:1234", "10.0.0.2:80"),
            ("[fd00::1]:1234", "[fd00::2]:443"),
            ("10.0.0.1:1234", "[fd00::2]:443"),
        ] {
            let header = header(src, dst, tlvs);
            let info = conn_info(&header, Binding::Hbone, &ProxyConfig::default()).unwrap();
            assert_eq!(info.peer_identity.as_ref().unwrap().namespace(), "default");
            assert_eq!(
                info.target_service.as_deref(),
                Some("cart.shop.svc.cluster.local")
            );
            assert_eq!(info.source_workload.workload_name.as_deref(), Some("cart"));
            assert_eq!(info.tlv(0xEF).unwrap().as_ref(), b"\x00\xffvendor");
            assert_eq!(info.tlvs.len(), 5);
        }
    }
}
