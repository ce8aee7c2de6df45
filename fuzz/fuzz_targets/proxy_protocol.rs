//! PROXY protocol v1/v2 decoding, TLVs, and the `ConnInfo` built from them.
//!
//! Properties, beyond "never panics":
//! - a complete header reports a length within the buffer and the format's bounds, and decodes
//!   the same from exactly those bytes (it never looked past them);
//! - one byte short of that length is `Incomplete`, never a different answer;
//! - re-encoding a decoded v2 PROXY header with our writer decodes to the same addresses and
//!   TLVs;
//! - `read_header` over a stream that hands out the bytes in small chunks agrees with `decode`,
//!   never consumes a byte past a v2 header, and returns every byte it read past a v1 line;
//! - `conn_info` either refuses or names the peer identity TLV 0xD0 it was given.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use waypoint_core::conn::Binding;
use waypoint_core::identity::SpiffeId;
use waypoint_core::transport::{ProxyConfig, conn_info, read_header};
use waypoint_core::wire::proxy_protocol::{
    Decoded, MIN_HEADER_BYTES, TLV_PEER_IDENTITY, decode, encode_v2,
};

/// The v1 line limit of the spec, CRLF included.
const V1_MAX_LEN: usize = 107;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the header limit and the chunk size of the simulated socket.
    let Some((&knobs, wire)) = data.split_first() else {
        return;
    };
    let max = [MIN_HEADER_BYTES, 300, 4096, 65_551][usize::from(knobs & 3)];
    let chunk = usize::from(knobs >> 2) + 1;

    let decoded = decode(wire, max);
    if let Ok(Decoded::Complete { header, consumed }) = &decoded {
        let consumed = *consumed;
        assert!(consumed <= wire.len(), "consumed past the buffer");
        match header.version {
            1 => assert!(
                consumed <= V1_MAX_LEN,
                "v1 line longer than the spec allows"
            ),
            2 => assert!(
                consumed <= max.max(MIN_HEADER_BYTES),
                "v2 header over the limit"
            ),
            v => panic!("version {v}"),
        }
        // Exactly the reported bytes decode to the same header.
        assert_eq!(
            decode(&wire[..consumed], max).ok(),
            Some(Decoded::Complete {
                header: header.clone(),
                consumed
            })
        );
        // One byte short is incomplete.
        assert!(
            matches!(
                decode(&wire[..consumed - 1], max),
                Ok(Decoded::Incomplete { .. })
            ),
            "a header one byte short was not incomplete"
        );
        if header.version == 2 && !header.local {
            if let (Some(src), Some(dst)) = (header.source, header.destination) {
                let tlvs: Vec<(u8, &[u8])> =
                    header.tlvs.iter().map(|t| (t.kind, &t.value[..])).collect();
                let again = encode_v2(src, dst, &tlvs);
                match decode(&again, 65_551) {
                    Ok(Decoded::Complete {
                        header: back,
                        consumed,
                    }) => {
                        assert_eq!(consumed, again.len());
                        assert_eq!(back.source, header.source);
                        assert_eq!(back.destination, header.destination);
                        assert_eq!(back.tlvs, header.tlvs);
                    }
                    other => panic!("re-encoded header does not decode: {other:?}"),
                }
            }
        }
        let binding = Binding::Sandwich {
            listener: "fuzz".into(),
        };
        if let Ok(info) = conn_info(header, binding, &ProxyConfig::default()) {
            let has_identity = header.tlvs.iter().any(|t| t.kind == TLV_PEER_IDENTITY);
            assert_eq!(info.peer_identity.is_some(), has_identity);
            assert_eq!(info.tlvs, header.tlvs);
            if let Some(id) = &info.peer_identity {
                // The identity is the TLV verbatim, and its parts re-parse to the same.
                let raw = header.tlvs.iter().find(|t| t.kind == TLV_PEER_IDENTITY);
                assert_eq!(raw.map(|t| &t.value[..]), Some(id.as_str().as_bytes()));
                let again: SpiffeId = id.as_str().parse().expect("a parsed identity re-parses");
                assert_eq!(&again, id);
                assert_eq!(
                    id.as_str(),
                    format!(
                        "spiffe://{}/ns/{}/sa/{}",
                        id.trust_domain(),
                        id.namespace(),
                        id.service_account()
                    )
                );
            }
        }
    }
    check_read_header(wire, max, chunk, &decoded);
});

/// Reads the header from a stream serving `wire` `chunk` bytes at a time, and compares with
/// what `decode` said of the whole buffer.
fn check_read_header(
    wire: &[u8],
    max: usize,
    chunk: usize,
    decoded: &Result<Decoded, waypoint_core::wire::proxy_protocol::ProxyError>,
) {
    let cfg = ProxyConfig {
        required: false,
        max_header_bytes: max,
        ..ProxyConfig::default()
    };
    let mut stream = Chunked {
        data: wire,
        pos: 0,
        chunk,
    };
    let read = runtime().block_on(read_header(&mut stream, &cfg));
    match (read, decoded) {
        (
            Ok((Some(header), rest)),
            Ok(Decoded::Complete {
                header: want,
                consumed,
            }),
        ) => {
            assert_eq!(&header, want);
            // Bytes read past the header plus bytes never read are exactly the payload.
            let mut payload = rest.to_vec();
            payload.extend_from_slice(&wire[stream.pos..]);
            assert_eq!(payload, &wire[*consumed..]);
            if header.version == 2 {
                assert!(rest.is_empty(), "read past a v2 header");
            }
        }
        (Ok((Some(header), _)), other) => {
            panic!("read_header found {header:?}, decode said {other:?}")
        }
        (Ok((None, rest)), _) => {
            // Not a PROXY stream: what was read is handed back for replay.
            assert_eq!(&rest[..], &wire[..stream.pos]);
        }
        (Err(e), Ok(Decoded::Complete { header, .. })) => {
            panic!("read_header refused ({e}) a header decode accepts: {header:?}")
        }
        (Err(_), _) => {}
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// A socket that has received `data` and hands it out at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = (self.data.len() - self.pos)
            .min(self.chunk)
            .min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}
