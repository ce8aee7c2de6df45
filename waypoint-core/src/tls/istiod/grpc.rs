//! The two messages of `istio.v1.auth.IstioCertificateService/CreateCertificate`, encoded by
//! hand, and gRPC's length-prefixed framing.
//!
//! Why by hand: the call has one request and one response message with three scalar fields
//! between them, so a protobuf code generator (and its build-time `protoc`) would cost more than
//! the forty lines below. The field numbers are those of `security/v1alpha1/ca.proto` in
//! `istio/api`:
//!
//! ```text
//! message IstioCertificateRequest  { string csr = 1; int64 validity_duration = 3;
//!                                    google.protobuf.Struct metadata = 4; }   // not sent
//! message IstioCertificateResponse { repeated string cert_chain = 1; }        // leaf first
//! ```
//!
//! Wire format (protobuf encoding guide): a field is a varint key `number << 3 | wire type`,
//! then a varint (type 0) or a varint length and that many bytes (type 2). Unknown fields of
//! the response are skipped, as protobuf requires. A gRPC message on HTTP/2 is one byte
//! "compressed" flag (we never ask for compression, so it must be 0), a 4-byte big-endian
//! length, and the message.

use bytes::{BufMut, Bytes, BytesMut};

/// The HTTP/2 `:path` of the call.
pub(crate) const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";

const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

const REQUEST_CSR: u64 = 1;
const REQUEST_VALIDITY_DURATION: u64 = 3;
const RESPONSE_CERT_CHAIN: u64 = 1;

/// `IstioCertificateRequest { csr, validity_duration }`, framed for gRPC.
pub(crate) fn create_certificate_request(csr_pem: &str, validity_secs: i64) -> Bytes {
    let mut message = BytesMut::new();
    put_varint(&mut message, REQUEST_CSR << 3 | WIRE_LEN);
    put_varint(&mut message, csr_pem.len() as u64);
    message.put_slice(csr_pem.as_bytes());
    // proto3 leaves a zero scalar out.
    if validity_secs != 0 {
        put_varint(&mut message, REQUEST_VALIDITY_DURATION << 3 | WIRE_VARINT);
        // int64 is encoded as its two's complement bits.
        put_varint(&mut message, validity_secs as u64);
    }
    frame(&message)
}

/// The `cert_chain` of a framed `IstioCertificateResponse`.
pub(crate) fn create_certificate_response(body: &[u8]) -> Result<Vec<String>, String> {
    let message = unframe(body)?;
    let mut chain = Vec::new();
    for field in Fields(message) {
        let (number, value) = field?;
        if let (RESPONSE_CERT_CHAIN, Value::Bytes(bytes)) = (number, value) {
            let pem = std::str::from_utf8(bytes)
                .map_err(|_| "cert_chain entry is not UTF-8".to_owned())?;
            chain.push(pem.to_owned());
        }
    }
    Ok(chain)
}

fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    // Our messages are a CSR and a few certificates, far below 4 GiB.
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// The one message of a unary call's body.
fn unframe(body: &[u8]) -> Result<&[u8], String> {
    let [flag, a, b, c, d, rest @ ..] = body else {
        return Err(format!(
            "response body of {} bytes holds no gRPC message",
            body.len()
        ));
    };
    if *flag != 0 {
        return Err("response message is compressed, which was not asked for".to_owned());
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    if rest.len() != len {
        return Err(format!(
            "gRPC frame announces {len} bytes, {} follow",
            rest.len()
        ));
    }
    Ok(rest)
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = input.split_first() else {
            return Err("truncated varint".to_owned());
        };
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".to_owned())
}

enum Value<'a> {
    // Only the fake CA's request decoder reads a number's value.
    Varint(#[cfg_attr(not(any(test, feature = "test-helpers")), allow(dead_code))] u64),
    Fixed,
    Bytes(&'a [u8]),
}

/// The fields of a message, in order: (number, value).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            // A malformed message ends the iteration after its error.
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = take_varint(&mut self.0)?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            WIRE_VARINT => Value::Varint(take_varint(&mut self.0)?),
            WIRE_I64 | WIRE_I32 => {
                let width = if wire_type == WIRE_I64 { 8 } else { 4 };
                self.take(width)?;
                Value::Fixed
            }
            WIRE_LEN => {
                let len = usize::try_from(take_varint(&mut self.0)?)
                    .map_err(|_| "field length overflows".to_owned())?;
                Value::Bytes(self.take(len)?)
            }
            other => return Err(format!("field {number} has unknown wire type {other}")),
        };
        Ok((number, value))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        if self.0.len() < len {
            return Err("field runs past the end of the message".to_owned());
        }
        let (value, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(value)
    }
}

/// The server's half, for the fake CA of `tls::testing`: the request's `(csr, validity_duration)`.
#[cfg(any(test, feature = "test-helpers"))]
pub(crate) fn decode_request(body: &[u8]) -> Result<(String, i64), String> {
    let (mut csr, mut validity) = (String::new(), 0i64);
    for field in Fields(unframe(body)?) {
        match field? {
            (REQUEST_CSR, Value::Bytes(bytes)) => {
                csr = String::from_utf8(bytes.to_vec()).map_err(|_| "csr is not UTF-8")?;
            }
            (REQUEST_VALIDITY_DURATION, Value::Varint(v)) => validity = v as i64,
            _ => {}
        }
    }
    Ok((csr, validity))
}

/// The server's half: a framed `IstioCertificateResponse` holding `chain`.
#[cfg(any(test, feature = "test-helpers"))]
pub(crate) fn encode_response(chain: &[String]) -> Bytes {
    let mut message = BytesMut::new();
    for pem in chain {
        put_varint(&mut message, RESPONSE_CERT_CHAIN << 3 | WIRE_LEN);
        put_varint(&mut message, pem.len() as u64);
        message.put_slice(pem.as_bytes());
    }
    frame(&message)
}

/// gRPC status codes by number, for error messages (the gRPC `statuscodes.md` table).
pub(crate) fn status_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_request_carries_the_csr_in_field_1_and_the_validity_in_field_3() {
        let framed = create_certificate_request("CSR", 86400);
        // Frame: uncompressed, 9 bytes; then key 0x0a (1, LEN), 3, "CSR", key 0x18 (3,
        // VARINT), 86400 as varint.
        assert_eq!(
            framed.as_ref(),
            &[
                0, 0, 0, 0, 9, 0x0a, 3, b'C', b'S', b'R', 0x18, 0x80, 0xa3, 0x05
            ]
        );
        assert_eq!(decode_request(&framed).unwrap(), ("CSR".into(), 86400));
    }

    #[test]
    fn a_zero_validity_is_left_out_as_proto3_does() {
        let framed = create_certificate_request("x", 0);
        assert_eq!(framed.as_ref(), &[0, 0, 0, 0, 3, 0x0a, 1, b'x']);
    }

    #[test]
    fn the_response_chain_is_read_in_order_and_unknown_fields_are_skipped() {
        let chain = vec!["leaf".to_owned(), "root".to_owned()];
        let framed = encode_response(&chain);
        assert_eq!(create_certificate_response(&framed).unwrap(), chain);
        // Unknown fields of every wire type before, between and after the chain entries.
        let mut message = BytesMut::new();
        message.put_slice(&[0x10, 0x96, 0x01]); // field 2 varint 150
        message.put_slice(&[0x0a, 1, b'a']);
        message.put_slice(&[0x19, 1, 2, 3, 4, 5, 6, 7, 8]); // field 3 fixed64
        message.put_slice(&[0x25, 1, 2, 3, 4]); // field 4 fixed32
        message.put_slice(&[0x2a, 2, b'z', b'z']); // field 5 bytes
        message.put_slice(&[0x0a, 1, b'b']);
        assert_eq!(
            create_certificate_response(&frame(&message)).unwrap(),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        let cases: [&[u8]; 6] = [
            &[],
            &[0, 0, 0, 0],
            &[1, 0, 0, 0, 0],
            &[0, 0, 0, 0, 5, 0x0a],
            &[0, 0, 0, 0, 3, 0x0a, 5, b'a'],
            &[0, 0, 0, 0, 2, 0x0b, 0],
        ];
        for body in cases {
            assert!(create_certificate_response(body).is_err(), "{body:?}");
        }
        let varint_too_long = [
            0, 0, 0, 0, 11, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(create_certificate_response(&varint_too_long[..]).is_err());
    }

    #[test]
    fn status_codes_are_named() {
        assert_eq!(status_name(16), "UNAUTHENTICATED");
        assert_eq!(status_name(99), "UNKNOWN");
    }
}
