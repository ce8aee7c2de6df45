//! The protobuf messages of the conformance `GrpcEcho` service (grpcecho.proto), encoded and
//! decoded by hand: the schema is five small messages, not worth a code generator. Decoding
//! skips unknown fields and returns an error (never panics) on malformed input.

use std::fmt;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid protobuf: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn err(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// A protobuf message this module knows how to write and read.
pub trait Message: Default {
    /// Appends the wire encoding of `self` to `out`.
    fn encode_to(&self, out: &mut Vec<u8>);
    /// Merges the fields found in `buf` into `self` (protobuf semantics: the last scalar wins,
    /// embedded messages merge, repeated fields append).
    fn merge(&mut self, buf: &[u8]) -> Result<(), DecodeError>;

    /// The wire encoding of `self`.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }

    /// Decodes a message from `buf`.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut msg = Self::default();
        msg.merge(buf)?;
        Ok(msg)
    }
}

/// `Header`: one request metadata entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Field 1.
    pub key: String,
    /// Field 2.
    pub value: String,
}

/// `Context`: who the echo server is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Field 1.
    pub namespace: String,
    /// Field 2.
    pub ingress: String,
    /// Field 3 (`service_name`).
    pub service_name: String,
    /// Field 4 (`pod`).
    pub pod: String,
}

/// `TLSAssertions`: the TLS connection as the server saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsAssertions {
    /// Field 1.
    pub version: String,
    /// Field 2.
    pub negotiated_protocol: String,
    /// Field 3.
    pub server_name: String,
    /// Field 4.
    pub cipher_suite: String,
    /// Field 5 (repeated).
    pub peer_certificates: Vec<String>,
}

/// `Assertions`: what the server saw of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assertions {
    /// Field 1, e.g. `/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo`.
    pub fully_qualified_method: String,
    /// Field 2: the request metadata, in the order received.
    pub headers: Vec<Header>,
    /// Field 3: the request's `:authority`.
    pub authority: String,
    /// Field 4.
    pub context: Option<Context>,
    /// Field 5.
    pub tls_assertions: Option<TlsAssertions>,
}

/// `EchoRequest`: empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoRequest {}

/// `EchoResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoResponse {
    /// Field 1.
    pub assertions: Option<Assertions>,
    /// Field 2.
    pub request: Option<EchoRequest>,
}

// ---- wire format -------------------------------------------------------------------------

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | u64::from(LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// proto3: an empty string is the default and is not written.
fn put_string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

fn put_message(out: &mut Vec<u8>, field: u32, msg: &impl Message) {
    put_bytes(out, field, &msg.encode());
}

/// One field read from the wire.
enum Value<'a> {
    Varint,
    Fixed,
    Len(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| err("truncated varint"))?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err(err("varint longer than 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(err(format!(
                "field of {n} bytes with {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next (field number, value), or `None` at the end of the buffer.
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(err(format!("field number {number} out of range")));
        }
        let number = number as u32;
        let value = match (key & 7) as u8 {
            VARINT => {
                self.varint()?;
                Value::Varint
            }
            FIXED64 => {
                self.take(8)?;
                Value::Fixed
            }
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| err("length too large"))?;
                Value::Len(self.take(len)?)
            }
            FIXED32 => {
                self.take(4)?;
                Value::Fixed
            }
            other => {
                // 3/4 are the deprecated groups, which no proto3 message here can contain.
                return Err(err(format!(
                    "field {number}: unsupported wire type {other}"
                )));
            }
        };
        Ok(Some((number, value)))
    }
}

/// Calls `on_field` for every field in `buf`; `on_field` ignores the fields it does not know,
/// which is how unknown fields are skipped.
fn each_field(
    buf: &[u8],
    mut on_field: impl FnMut(u32, &Value<'_>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut reader = Reader { buf };
    while let Some((number, value)) = reader.field()? {
        on_field(number, &value)?;
    }
    Ok(())
}

fn bytes_of<'a>(number: u32, value: &Value<'a>) -> Result<&'a [u8], DecodeError> {
    match value {
        Value::Len(b) => Ok(b),
        _ => Err(err(format!(
            "field {number}: expected a length-delimited value"
        ))),
    }
}

fn string_of(number: u32, value: &Value<'_>) -> Result<String, DecodeError> {
    let bytes = bytes_of(number, value)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| err(format!("field {number}: string is not UTF-8")))
}

fn merge_into<M: Message>(
    slot: &mut Option<M>,
    number: u32,
    value: &Value<'_>,
) -> Result<(), DecodeError> {
    let bytes = bytes_of(number, value)?;
    slot.get_or_insert_with(M::default).merge(bytes)
}

// ---- messages ------------------------------------------------------------------------------

impl Message for Header {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_string(out, 1, &self.key);
        put_string(out, 2, &self.value);
    }

    fn merge(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        each_field(buf, |n, v| {
            match n {
                1 => self.key = string_of(n, v)?,
                2 => self.value = string_of(n, v)?,
                _ => {}
            }
            Ok(())
        })
    }
}

impl Message for Context {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_string(out, 1, &self.namespace);
        put_string(out, 2, &self.ingress);
        put_string(out, 3, &self.service_name);
        put_string(out, 4, &self.pod);
    }

    fn merge(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        each_field(buf, |n, v| {
            match n {
                1 => self.namespace = string_of(n, v)?,
                2 => self.ingress = string_of(n, v)?,
                3 => self.service_name = string_of(n, v)?,
                4 => self.pod = string_of(n, v)?,
                _ => {}
            }
            Ok(())
        })
    }
}

impl Message for TlsAssertions {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_string(out, 1, &self.version);
        put_string(out, 2, &self.negotiated_protocol);
        put_string(out, 3, &self.server_name);
        put_string(out, 4, &self.cipher_suite);
        for cert in &self.peer_certificates {
            // Repeated strings are written even when empty: each element counts.
            put_bytes(out, 5, cert.as_bytes());
        }
    }

    fn merge(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        each_field(buf, |n, v| {
            match n {
                1 => self.version = string_of(n, v)?,
                2 => self.negotiated_protocol = string_of(n, v)?,
                3 => self.server_name = string_of(n, v)?,
                4 => self.cipher_suite = string_of(n, v)?,
                5 => self.peer_certificates.push(string_of(n, v)?),
                _ => {}
            }
            Ok(())
        })
    }
}

impl Message for Assertions {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_string(out, 1, &self.fully_qualified_method);
        for header in &self.headers {
            put_message(out, 2, header);
        }
        put_string(out, 3, &self.authority);
        if let Some(context) = &self.context {
            put_message(out, 4, context);
        }
        if let Some(tls) = &self.tls_assertions {
            put_message(out, 5, tls);
        }
    }

    fn merge(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        each_field(buf, |n, v| {
            match n {
                1 => self.fully_qualified_method = string_of(n, v)?,
                2 => self.headers.push(Header::decode(bytes_of(n, v)?)?),
                3 => self.authority = string_of(n, v)?,
                4 => merge_into(&mut self.context, n, v)?,
                5 => merge_into(&mut self.tls_assertions, n, v)?,
                _ => {}
            }
            Ok(())
        })
    }
}

impl Message for EchoRequest {
    fn encode_to(&self, _out: &mut Vec<u8>) {}

    fn merge(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        // No fields of its own, but the input must still be well-formed.
        each_field(buf, |_, _| Ok(()))
    }
}

impl Message for EchoResponse {
    fn encode_to(&self, out: &mut Vec<u8>) {
        if let Some(assertions) = &self.assertions {
            put_message(out, 1, assertions);
        }
        if let Some(request) = &self.request {
            put_message(out, 2, request);
        }
    }

    fn merge(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        each_field(buf, |n, v| {
            match n {
                1 => merge_into(&mut self.assertions, n, v)?,
                2 => merge_into(&mut self.request, n, v)?,
                _ => {}
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EchoResponse {
        EchoResponse {
            assertions: Some(Assertions {
                fully_qualified_method:
                    "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo".into(),
                headers: vec![
                    Header {
                        key: ":authority".into(),
                        value: "example.com".into(),
                    },
                    Header {
                        key: "x-empty".into(),
                        value: String::new(),
                    },
                ],
                authority: "example.com".into(),
                context: Some(Context {
                    namespace: "gateway-conformance-infra".into(),
                    ingress: String::new(),
                    service_name: "grpc-infra-backend-v1".into(),
                    pod: "grpc-infra-backend-v1-abc".into(),
                }),
                tls_assertions: Some(TlsAssertions {
                    version: "TLSv1.3".into(),
                    peer_certificates: vec!["a".into(), String::new()],
                    ..Default::default()
                }),
            }),
            request: Some(EchoRequest {}),
        }
    }

    #[test]
    fn round_trip() {
        let msg = sample();
        let bytes = msg.encode();
        assert_eq!(EchoResponse::decode(&bytes).unwrap(), msg);
        assert_eq!(EchoResponse::decode(&[]).unwrap(), EchoResponse::default());
    }

    #[test]
    fn known_encoding() {
        // Hand-computed: field 1 (key 0x0a), length 3, "abc"; field 2 (0x12), length 1, "v".
        let h = Header {
            key: "abc".into(),
            value: "v".into(),
        };
        assert_eq!(h.encode(), b"\x0a\x03abc\x12\x01v");
        // A 300-byte value needs a two-byte varint length (0xac 0x02).
        let long = Header {
            key: "k".repeat(300),
            value: String::new(),
        };
        let bytes = long.encode();
        assert_eq!(&bytes[..3], b"\x0a\xac\x02");
        assert_eq!(Header::decode(&bytes).unwrap(), long);
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = Vec::new();
        put_varint(&mut bytes, (7 << 3) | u64::from(VARINT));
        put_varint(&mut bytes, 123_456_789);
        bytes.extend_from_slice(&[(8 << 3) | FIXED64, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&[(9 << 3) | FIXED32, 1, 2, 3, 4]);
        put_bytes(&mut bytes, 10, b"ignored");
        bytes.extend_from_slice(b"\x0a\x01k");
        let h = Header::decode(&bytes).unwrap();
        assert_eq!(h.key, "k");
        // An EchoRequest with fields it does not know is still accepted.
        assert_eq!(EchoRequest::decode(&bytes).unwrap(), EchoRequest {});
    }

    #[test]
    fn merging_repeated_messages() {
        // Two occurrences of field 4 merge: the second sets pod, the first's namespace stays.
        let mut bytes = Vec::new();
        put_bytes(
            &mut bytes,
            4,
            &Context {
                namespace: "ns".into(),
                ..Default::default()
            }
            .encode(),
        );
        put_bytes(
            &mut bytes,
            4,
            &Context {
                pod: "p".into(),
                ..Default::default()
            }
            .encode(),
        );
        let a = Assertions::decode(&bytes).unwrap();
        let ctx = a.context.unwrap();
        assert_eq!((ctx.namespace.as_str(), ctx.pod.as_str()), ("ns", "p"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: &[&[u8]] = &[
            b"\x0a",                                             // key without length
            b"\x0a\x05ab",                                       // length past the end
            b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",     // huge length
            b"\x08",                                             // truncated varint value
            b"\x00\x01",                                         // field number 0
            b"\x0b",                                             // group start (wire type 3)
            b"\x0f",                                             // wire type 7
            b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", // 11-byte varint
            b"\x0a\x02\xc3\x28",                                 // invalid UTF-8 in a string
            b"\x08\x01",     // field 1 of Header as a varint: wrong wire type
            b"\x0d\x01\x02", // truncated fixed32
        ];
        for case in cases {
            assert!(Header::decode(case).is_err(), "{case:?}");
        }
        // Every prefix of a valid message and every single-byte corruption: no panics.
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            let _ = EchoResponse::decode(&bytes[..n]);
            let mut corrupt = bytes.clone();
            corrupt[n] ^= 0xff;
            let _ = EchoResponse::decode(&corrupt);
        }
        // A nested message that is itself garbage fails the whole decode.
        let mut bytes = Vec::new();
        put_bytes(&mut bytes, 1, b"\x0a\x09");
        assert!(EchoResponse::decode(&bytes).is_err());
    }
}
