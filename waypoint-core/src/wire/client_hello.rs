//! The TLS ClientHello, read without terminating TLS: the server name (SNI) a TLS passthrough
//! connection is routed by, and the ALPN protocols it offers.
//!
//! A pure decoder over the bytes a client sent first, to be called again as more arrive:
//! [`parse`] answers "need more", the hello, or why these bytes can never be one. The bytes are
//! only looked at; the caller replays them upstream unchanged.
//!
//! What is accepted (RFC 8446 §4.1.2, §5.1; RFC 5246 for the record layer; RFC 6066 §3 for
//! `server_name`; RFC 7301 for ALPN):
//! - handshake records (`0x16`) of version `0x03xx`, each at most 2^14 bytes plus the 256 that
//!   TLS 1.3 allows for padding, the ClientHello possibly fragmented over several of them (large
//!   post-quantum key shares make hellos of several kilobytes);
//! - a ClientHello of at most [`MAX_CLIENT_HELLO`] bytes in all;
//! - an SSL 3.0-style hello without extensions: no server name;
//! - `server_name` with one `host_name` entry, ASCII, lowercased, one trailing dot dropped.
//!   Anything else in it (an empty name, a second host name, bytes outside printable ASCII) is
//!   malformed, as TLS servers treat it.
//!
//! Everything else is an error that names what is wrong: the caller closes the connection.

use std::fmt;

/// The most bytes of records read for one ClientHello: a hello longer than this is refused.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// The record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// The largest record payload a peer may send: 2^14, plus 256 (TLS 1.3's allowance).
const MAX_RECORD: usize = (1 << 14) + 256;
const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const HOST_NAME: u8 = 0;

/// What a ClientHello says that routing and policy read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` extension's host name, lowercased, without a trailing dot.
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order (lossy UTF-8).
    pub alpn: Vec<String>,
}

/// Why bytes are not a ClientHello this waypoint reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloError {
    /// The first record is not a TLS handshake record.
    NotTls,
    /// The first handshake message is not a ClientHello (its type is given).
    NotClientHello(u8),
    /// The hello (or a record carrying it) is longer than allowed.
    TooLarge(usize),
    /// The bytes break the format; says where.
    Malformed(&'static str),
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::NotTls => f.write_str("not TLS: the first record is not a handshake"),
            HelloError::NotClientHello(t) => {
                write!(
                    f,
                    "the first handshake message is type {t}, not a ClientHello"
                )
            }
            HelloError::TooLarge(n) => write!(
                f,
                "ClientHello of {n} bytes exceeds the {MAX_CLIENT_HELLO}-byte limit"
            ),
            HelloError::Malformed(what) => write!(f, "malformed ClientHello: {what}"),
        }
    }
}

impl std::error::Error for HelloError {}

/// Reads the ClientHello at the start of `buf`: `Ok(None)` when `buf` is a valid beginning of
/// one and more bytes are needed, `Ok(Some(hello))` once it is complete (bytes after it are
/// ignored), else why it can never be one.
pub fn parse(buf: &[u8]) -> Result<Option<ClientHello>, HelloError> {
    let Some(message) = handshake_message(buf)? else {
        return Ok(None);
    };
    hello_body(message).map(Some)
}

/// The first handshake message's body, reassembled from as many records as it spans, or
/// `None` while incomplete.
fn handshake_message(mut buf: &[u8]) -> Result<Option<Vec<u8>>, HelloError> {
    let mut message = Vec::new();
    let mut consumed = 0;
    loop {
        if let Some(&kind) = buf.first()
            && kind != HANDSHAKE
        {
            // After the first record, another type means the hello was cut short.
            return Err(match consumed {
                0 => HelloError::NotTls,
                _ => HelloError::Malformed("record of another type inside the ClientHello"),
            });
        }
        if let Some(&major) = buf.get(1)
            && major != 3
        {
            return Err(HelloError::NotTls);
        }
        let Some(header) = buf.get(..RECORD_HEADER) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(HelloError::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD {
            return Err(HelloError::TooLarge(len));
        }
        consumed += RECORD_HEADER + len;
        if consumed > MAX_CLIENT_HELLO {
            return Err(HelloError::TooLarge(consumed));
        }
        // What arrived of this record counts at once: a hello announcing a length over the
        // limit is refused before the rest of it is waited for.
        let end = (RECORD_HEADER + len).min(buf.len());
        message.extend_from_slice(&buf[RECORD_HEADER..end]);
        let complete = end == RECORD_HEADER + len;
        buf = &buf[end..];
        if let Some(&kind) = message.first()
            && kind != CLIENT_HELLO
        {
            return Err(HelloError::NotClientHello(kind));
        }
        if message.len() >= 4 {
            let body_len = u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize;
            if body_len + 4 > MAX_CLIENT_HELLO {
                return Err(HelloError::TooLarge(body_len + 4));
            }
            if message.len() >= body_len + 4 {
                message.truncate(body_len + 4);
                message.drain(..4);
                return Ok(Some(message));
            }
        }
        if !complete {
            return Ok(None);
        }
    }
}

/// A cursor over a complete message that refuses to read past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn hello_body(body: Vec<u8>) -> Result<ClientHello, HelloError> {
    let mut r = Reader(&body);
    r.take(2, "legacy_version")?;
    r.take(32, "random")?;
    if r.vec8("legacy_session_id")?.len() > 32 {
        return Err(HelloError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher_suites"));
    }
    if r.vec8("legacy_compression_methods")?.is_empty() {
        return Err(HelloError::Malformed("legacy_compression_methods"));
    }
    let mut hello = ClientHello::default();
    if r.is_empty() {
        return Ok(hello);
    }
    let mut extensions = Reader(r.vec16("extensions")?);
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the extensions"));
    }
    let mut seen = Vec::new();
    while !extensions.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec16("extension data")?;
        if seen.contains(&kind) {
            return Err(HelloError::Malformed("an extension appears twice"));
        }
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.server_name = Some(server_name(data)?),
            EXT_ALPN => hello.alpn = alpn(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

fn server_name(data: &[u8]) -> Result<String, HelloError> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16("server_name list")?);
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the server_name list"));
    }
    let mut name = None;
    while !list.is_empty() {
        let kind = list.u8("server_name type")?;
        let value = list.vec16("server_name")?;
        if kind != HOST_NAME {
            continue;
        }
        if name.is_some() {
            return Err(HelloError::Malformed("two host names in server_name"));
        }
        name = Some(value);
    }
    let name = name.ok_or(HelloError::Malformed("server_name without a host name"))?;
    let name = name.strip_suffix(b".").unwrap_or(name);
    let printable = name.iter().all(|b| b.is_ascii_graphic());
    if name.is_empty() || name.ends_with(b".") || !printable {
        return Err(HelloError::Malformed(
            "server_name is not a printable ASCII host name",
        ));
    }
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

fn alpn(data: &[u8]) -> Result<Vec<String>, HelloError> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16("ALPN list")?);
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the ALPN list"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let p = list.vec8("ALPN protocol")?;
        if p.is_empty() {
            return Err(HelloError::Malformed("empty ALPN protocol"));
        }
        protocols.push(String::from_utf8_lossy(p).into_owned());
    }
    Ok(protocols)
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
mod tests;
