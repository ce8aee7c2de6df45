//! W3C Trace Context propagation: the waypoint is one span of the trace a request belongs to.
//!
//! The trace is taken, in order, from the request's `traceparent`, from the `traceparent` the
//! HBONE tunnel was opened with, from B3 headers (Zipkin), or started anew. The waypoint then
//! makes up its own span id and rewrites `traceparent` so the upstream sees the waypoint's span
//! as its parent. `tracestate` passes through untouched when the request's `traceparent` was
//! valid, and is removed otherwise (W3C: a `tracestate` without a valid parent is meaningless).
//!
//! The same ids tie access logs, exported spans (see [`super::otlp`]) and upstream traces together.

use http::{HeaderMap, HeaderValue};

/// `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// `tracestate`.
pub(crate) const TRACESTATE: &str = "tracestate";

/// A parsed `traceparent`: trace id, parent span id and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The 128-bit trace id (never zero).
    pub trace_id: u128,
    /// The 64-bit id of the span that sent the request (never zero).
    pub span_id: u64,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a W3C `traceparent` value. Version `00` must be exactly
    /// `00-<32 hex>-<16 hex>-<2 hex>`; later versions may append `-...` (which is ignored);
    /// version `ff`, upper-case hex and all-zero ids are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let b = value.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex_u8(&value[0..2])?;
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let trace_id = u128::from_str_radix(lower_hex(&value[3..35])?, 16).ok()?;
        let span_id = u64::from_str_radix(lower_hex(&value[36..52])?, 16).ok()?;
        let flags = hex_u8(&value[53..55])?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The header value, version `00`: `00-<32 hex>-<16 hex>-<2 hex>`, formatted on the stack
    /// so the value's own copy is the only allocation (this runs on every request).
    pub(crate) fn header_value(self) -> Option<HeaderValue> {
        use std::io::Write;
        let mut buf = [0u8; 55];
        let mut out = &mut buf[..];
        write!(
            out,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
        .ok()?;
        // The 55 bytes are filled exactly; a shorter write would leave zeros, which no header
        // value may contain, so `from_bytes` would refuse it.
        HeaderValue::from_bytes(&buf).ok()
    }
}

fn lower_hex(s: &str) -> Option<&str> {
    s.bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        .then_some(s)
}

fn hex_u8(s: &str) -> Option<u8> {
    u8::from_str_radix(lower_hex(s)?, 16).ok()
}

/// Where the trace of a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceSource {
    /// The request's own valid `traceparent`.
    Request,
    /// The `traceparent` of the HBONE CONNECT that carried the connection.
    Tunnel,
    /// The request's B3 headers.
    B3,
    /// None of those: a new trace.
    New,
}

/// The waypoint's span of a request's trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id.
    pub trace_id: u128,
    /// The waypoint's own span id (the upstream's parent).
    pub span_id: u64,
    /// The span the waypoint continues, when there was one.
    pub parent_span_id: Option<u64>,
    /// The trace flags passed on.
    pub flags: u8,
    /// Where the trace came from.
    pub source: TraceSource,
}

impl TraceContext {
    /// The trace id as 32 lower-case hex digits, as access logs and tracing backends show it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` the upstream receives.
    pub fn traceparent(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.span_id,
            flags: self.flags,
        }
    }
}

/// Finds the request's trace, makes the waypoint's span, and rewrites `traceparent` (and
/// removes an orphan `tracestate`) in `headers` for the upstream. `tunnel` is the
/// `traceparent` of the HBONE CONNECT, if any. Ids come from `rng`.
pub fn propagate(
    headers: &mut HeaderMap,
    tunnel: Option<&str>,
    rng: &mut fastrand::Rng,
) -> TraceContext {
    let (parent, source) = match request_traceparent(headers) {
        Some(tp) => (Some(tp), TraceSource::Request),
        None => match tunnel.and_then(TraceParent::parse) {
            Some(tp) => (Some(tp), TraceSource::Tunnel),
            None => match from_b3(headers) {
                Some(tp) => (Some(tp), TraceSource::B3),
                None => (None, TraceSource::New),
            },
        },
    };
    if source != TraceSource::Request {
        headers.remove(TRACESTATE);
    }
    let span_id = new_span_id(rng, parent.map(|p| p.span_id));
    let ctx = match parent {
        Some(p) => TraceContext {
            trace_id: p.trace_id,
            span_id,
            parent_span_id: Some(p.span_id),
            flags: p.flags,
            source,
        },
        None => TraceContext {
            trace_id: loop {
                let id = rng.u128(..);
                if id != 0 {
                    break id;
                }
            },
            span_id,
            parent_span_id: None,
            flags: 0,
            source,
        },
    };
    if let Some(value) = ctx.traceparent().header_value() {
        headers.insert(TRACEPARENT, value);
    }
    ctx
}

fn new_span_id(rng: &mut fastrand::Rng, parent: Option<u64>) -> u64 {
    loop {
        let id = rng.u64(..);
        if id != 0 && Some(id) != parent {
            return id;
        }
    }
}

/// The request's `traceparent`, if exactly one valid header is present (W3C: several are
/// treated as none).
fn request_traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(first.to_str().ok()?.trim())
}

/// Derives a parent from Zipkin B3 headers: the multi-header form (`x-b3-traceid`,
/// `x-b3-spanid`, `x-b3-sampled`, `x-b3-flags`) or the single `b3` header
/// (`{trace}-{span}[-{sampled}[-{parent}]]`). 64-bit trace ids are left-padded to 128 bits.
pub(crate) fn from_b3(headers: &HeaderMap) -> Option<TraceParent> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let (Some(trace), Some(span)) = (get("x-b3-traceid"), get("x-b3-spanid")) {
        let sampled = get("x-b3-flags") == Some("1")
            || matches!(get("x-b3-sampled"), Some("1" | "true" | "d"));
        return b3_parent(trace, span, sampled);
    }
    let single = get("b3")?;
    let mut parts = single.split('-');
    let (trace, span) = (parts.next()?, parts.next()?);
    let sampled = matches!(parts.next(), Some("1" | "d"));
    b3_parent(trace, span, sampled)
}

fn b3_parent(trace: &str, span: &str, sampled: bool) -> Option<TraceParent> {
    let trace = trace.trim().to_ascii_lowercase();
    let span = span.trim().to_ascii_lowercase();
    if !(trace.len() == 16 || trace.len() == 32) || span.len() != 16 {
        return None;
    }
    let trace_id = u128::from_str_radix(lower_hex(&trace)?, 16).ok()?;
    let span_id = u64::from_str_radix(lower_hex(&span)?, 16).ok()?;
    (trace_id != 0 && span_id != 0).then_some(TraceParent {
        trace_id,
        span_id,
        flags: u8::from(sampled),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_value_is_the_w3c_form_with_leading_zeros_and_parses_back() {
        let tp = TraceParent {
            trace_id: 0xab,
            span_id: 0x1f,
            flags: 1,
        };
        let value = tp.header_value().unwrap();
        assert_eq!(
            value.to_str().unwrap(),
            "00-000000000000000000000000000000ab-000000000000001f-01"
        );
        assert_eq!(TraceParent::parse(value.to_str().unwrap()), Some(tp));
        let max = TraceParent {
            trace_id: u128::MAX,
            span_id: u64::MAX,
            flags: 0xff,
        };
        let value = max.header_value().unwrap();
        assert_eq!(value.len(), 55);
        assert_eq!(TraceParent::parse(value.to_str().unwrap()), Some(max));
    }
}
