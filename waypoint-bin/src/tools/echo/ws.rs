//! The echo backend's WebSocket endpoint (`/ws`, as upstream): the RFC 6455 opening handshake
//! and a minimal frame echo. Client frames must be masked; server frames are not; data frames
//! come back with the same opcode and FIN bit (so fragmented messages stay fragmented), pings
//! get pongs, a close is answered with a close.

use std::io;

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The GUID RFC 6455 appends to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest frame payload accepted; larger frames are refused with close code 1009.
pub(super) const MAX_PAYLOAD: usize = 16 << 20;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// Whether `headers` ask for a WebSocket upgrade (`Upgrade: websocket`, `Connection: upgrade`).
pub(super) fn wants_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, http::header::UPGRADE, "websocket")
        && has_token(headers, http::header::CONNECTION, "upgrade")
}

fn has_token(headers: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub(super) fn accept_key(key: &str) -> String {
    let mut input = Vec::with_capacity(key.len() + GUID.len());
    input.extend_from_slice(key.trim().as_bytes());
    input.extend_from_slice(GUID.as_bytes());
    base64(&sha1(&input))
}

/// Echoes frames on `io` until the peer closes, errs, or breaks the protocol.
pub(super) async fn echo_frames<S>(mut io: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let mut head = [0u8; 2];
        match io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let fin = head[0] & 0x80 != 0;
        let reserved = head[0] & 0x70;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(io.read_u16().await?),
            127 => io.read_u64().await?,
            n => u64::from(n),
        };
        // Extensions are never negotiated, so reserved bits are an error; clients must mask.
        if reserved != 0 || !masked || len >> 63 != 0 {
            return close(&mut io, 1002).await;
        }
        let len = match usize::try_from(len) {
            Ok(len) if len <= MAX_PAYLOAD => len,
            _ => return close(&mut io, 1009).await,
        };
        let is_control = opcode & 0x8 != 0;
        if is_control && (len > 125 || !fin) {
            return close(&mut io, 1002).await;
        }
        let mut key = [0u8; 4];
        io.read_exact(&mut key).await?;
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        match opcode {
            CONTINUATION | TEXT | BINARY => write_frame(&mut io, fin, opcode, &payload).await?,
            PING => write_frame(&mut io, true, PONG, &payload).await?,
            PONG => {}
            CLOSE => {
                // Echo the status code (not the reason); a 1-byte close body is malformed.
                let body = match payload.len() {
                    0 => &[][..],
                    1 => return close(&mut io, 1002).await,
                    _ => &payload[..2],
                };
                write_frame(&mut io, true, CLOSE, body).await?;
                return io.shutdown().await;
            }
            _ => return close(&mut io, 1002).await,
        }
    }
}

async fn close<S: AsyncWrite + Unpin>(io: &mut S, code: u16) -> io::Result<()> {
    write_frame(io, true, CLOSE, &code.to_be_bytes()).await?;
    io.shutdown().await
}

async fn write_frame<S: AsyncWrite + Unpin>(
    io: &mut S,
    fin: bool,
    opcode: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n @ 0..=125 => frame.push(n as u8),
        n @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    io.write_all(&frame).await?;
    io.flush().await
}

/// SHA-1 (FIPS 180-4), needed only for the handshake's accept key.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// Reads one unmasked server frame: (fin, opcode, payload).
    async fn server_frame<S: AsyncRead + Unpin>(io: &mut S) -> (bool, u8, Vec<u8>) {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => io.read_u16().await.unwrap() as usize,
            127 => io.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0; len];
        io.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x80 != 0, head[0] & 0x0f, payload)
    }

    #[test]
    fn digests_and_keys() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        // 56 bytes: the padding spills into a second block.
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn echoes_data_answers_pings_and_closes() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(echo_frames(server));
        client
            .write_all(&client_frame(true, TEXT, b"Websocket Support!"))
            .await
            .unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (true, TEXT, b"Websocket Support!".to_vec())
        );
        let big = vec![7u8; 70_000];
        client
            .write_all(&client_frame(true, BINARY, &big))
            .await
            .unwrap();
        assert_eq!(server_frame(&mut client).await, (true, BINARY, big));
        client
            .write_all(&client_frame(false, TEXT, b"ab"))
            .await
            .unwrap();
        client
            .write_all(&client_frame(true, CONTINUATION, b"cd"))
            .await
            .unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (false, TEXT, b"ab".to_vec())
        );
        assert_eq!(
            server_frame(&mut client).await,
            (true, CONTINUATION, b"cd".to_vec())
        );
        client
            .write_all(&client_frame(true, PING, b"hi"))
            .await
            .unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (true, PONG, b"hi".to_vec())
        );
        client
            .write_all(&client_frame(true, CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']))
            .await
            .unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (true, CLOSE, vec![0x03, 0xe8])
        );
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn protocol_errors_close_with_1002() {
        for bad in [
            vec![0x81, 0x02, b'h', b'i'],          // unmasked client frame
            client_frame(true, 0x3, b"x"),         // reserved opcode
            client_frame(false, PING, b"x"),       // fragmented control frame
            client_frame(true, PING, &[0u8; 126]), // control frame too long
            client_frame(true, CLOSE, &[3]),       // one-byte close body
            [0xc1]
                .into_iter()
                .chain(client_frame(true, TEXT, b"x")[1..].iter().copied())
                .collect(), // RSV1
        ] {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let task = tokio::spawn(echo_frames(server));
            client.write_all(&bad).await.unwrap();
            assert_eq!(
                server_frame(&mut client).await,
                (true, CLOSE, 1002u16.to_be_bytes().to_vec()),
                "{bad:?}"
            );
            task.await.unwrap().unwrap();
        }
        // A frame announcing more than the limit is refused with 1009, before its payload.
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(echo_frames(server));
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(MAX_PAYLOAD as u64 + 1).to_be_bytes());
        client.write_all(&head).await.unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (true, CLOSE, 1009u16.to_be_bytes().to_vec())
        );
        task.await.unwrap().unwrap();
        // A client that hangs up without a close frame ends the echo quietly.
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        echo_frames(server).await.unwrap();
    }
}
