//! W3C baggage as ztunnel uses it on HBONE: the source workload's metadata
//! (`k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=cart,...`), decoded from
//! what a client ztunnel sends (the HBONE `baggage` header, the sandwich metadata TLV) and
//! encoded again when the waypoint opens a tunnel on the client's behalf.
//!
//! Both directions live here so they cannot drift: a value the encoder writes is a value the
//! decoder reads back unchanged (see the round-trip test). Values are percent-encoded as the
//! spec requires; members the waypoint does not know are left out.

use http::HeaderMap;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::percent_decode;
use crate::conn::WorkloadMetadata;

/// Longest baggage string we parse; longer input is ignored rather than trusted in part.
const MAX_BAGGAGE: usize = 8 * 1024;

/// What a W3C baggage value may not hold as is: everything but `baggage-octet`s (controls,
/// space, `"`, `,`, `;`, backslash, DEL; non-ASCII bytes are always encoded), and `%` itself,
/// since values are percent-decoded on the way in.
const BAGGAGE_VALUE_ESCAPED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(b',')
    .add(b';')
    .add(b'\\');

/// Parses a W3C baggage string. Unknown keys and malformed members are skipped; input over
/// 8 KiB yields empty metadata. Values are percent-decoded as W3C baggage requires.
///
/// ```
/// use waypoint_core::wire::baggage;
/// let m = baggage::decode(
///     "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=cart,service.name=cart,service.version=v2",
/// );
/// assert_eq!(m.namespace.as_deref(), Some("shop"));
/// assert_eq!(m.workload_kind.as_deref(), Some("deployment"));
/// assert_eq!(m.workload_name.as_deref(), Some("cart"));
/// assert_eq!(m.service_version.as_deref(), Some("v2"));
/// ```
pub fn decode(baggage: &str) -> WorkloadMetadata {
    let mut m = WorkloadMetadata::default();
    if baggage.len() > MAX_BAGGAGE {
        return m;
    }
    for member in baggage.split(',') {
        // A member may carry `;properties` after the value: they are not ours.
        let kv = member.split(';').next().unwrap_or_default();
        let Some((key, value)) = kv.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), percent_decode(value.trim()));
        if value.is_empty() {
            continue;
        }
        match key {
            "k8s.cluster.name" => m.cluster = Some(value),
            "k8s.namespace.name" => m.namespace = Some(value),
            "service.name" => m.service_name = Some(value),
            "service.version" => m.service_version = Some(value),
            "cloud.region" => m.region = Some(value),
            "cloud.availability_zone" => m.zone = Some(value),
            _ => {
                if let Some(kind) = key
                    .strip_prefix("k8s.")
                    .and_then(|k| k.strip_suffix(".name"))
                    && !kind.is_empty()
                    && !kind.contains('.')
                {
                    m.workload_kind = Some(kind.to_owned());
                    m.workload_name = Some(value);
                }
            }
        }
    }
    m
}

/// Source workload metadata from every `baggage` header of a request (W3C allows several, to
/// be read as one comma-joined list).
pub fn from_headers(headers: &HeaderMap) -> WorkloadMetadata {
    let values: Vec<&str> = headers
        .get_all("baggage")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    match values.as_slice() {
        [] => WorkloadMetadata::default(),
        [one] => decode(one),
        many => decode(&many.join(",")),
    }
}

/// Serialises workload metadata as the W3C baggage ztunnel sends on HBONE:
/// `k8s.cluster.name=..,k8s.namespace.name=..,k8s.<kind>.name=..,service.name=..,
/// service.version=..,cloud.region=..,cloud.availability_zone=..`, unknown members left out.
/// `None` when nothing is known.
///
/// ```
/// use waypoint_core::wire::baggage;
/// let m = baggage::decode("k8s.namespace.name=shop,k8s.deployment.name=cart,service.version=v2");
/// assert_eq!(
///     baggage::encode(&m).as_deref(),
///     Some("k8s.namespace.name=shop,k8s.deployment.name=cart,service.version=v2"),
/// );
/// assert_eq!(baggage::encode(&Default::default()), None);
/// ```
pub fn encode(m: &WorkloadMetadata) -> Option<String> {
    // A kind we could not write back as a key is dropped with its name rather than sent mangled.
    let kind_ok = |k: &str| {
        k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let workload_key = match (&m.workload_kind, &m.workload_name) {
        (Some(kind), Some(_)) if kind_ok(kind) => Some(format!("k8s.{kind}.name")),
        _ => None,
    };
    let members = [
        (Some("k8s.cluster.name"), &m.cluster),
        (Some("k8s.namespace.name"), &m.namespace),
        (workload_key.as_deref(), &m.workload_name),
        (Some("service.name"), &m.service_name),
        (Some("service.version"), &m.service_version),
        (Some("cloud.region"), &m.region),
        (Some("cloud.availability_zone"), &m.zone),
    ];
    let mut out = String::new();
    for (key, value) in members {
        let (Some(key), Some(value)) = (key, value) else {
            continue;
        };
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(key);
        out.push('=');
        percent_encode_into(value, &mut out);
    }
    (!out.is_empty()).then_some(out)
}

fn percent_encode_into(value: &str, out: &mut String) {
    out.extend(utf8_percent_encode(value, BAGGAGE_VALUE_ESCAPED));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    #[test]
    fn what_the_encoder_writes_the_decoder_reads_back_unchanged() {
        let m = WorkloadMetadata {
            cluster: Some("c1".into()),
            namespace: Some("shop".into()),
            workload_kind: Some("deployment".into()),
            workload_name: Some("cart".into()),
            service_name: Some("cart svc,x;y%".into()),
            service_version: None,
            region: Some("eu-west-1".into()),
            zone: Some("z\u{e9}=\"1\"\\".into()),
        };
        let b = encode(&m).unwrap();
        assert_eq!(
            b,
            "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=cart,\
             service.name=cart%20svc%2Cx%3By%25,cloud.region=eu-west-1,\
             cloud.availability_zone=z%C3%A9=%221%22%5C"
        );
        assert_eq!(decode(&b), m);
        // Every field on its own survives the trip too.
        let one = |f: fn(&mut WorkloadMetadata)| {
            let mut m = WorkloadMetadata::default();
            f(&mut m);
            m
        };
        for m in [
            one(|m| m.cluster = Some("a,b".into())),
            one(|m| m.service_version = Some("v 2".into())),
            one(|m| m.zone = Some("%41".into())),
            one(|m| {
                m.workload_kind = Some("pod".into());
                m.workload_name = Some("p;1".into());
            }),
        ] {
            assert_eq!(decode(&encode(&m).unwrap()), m);
        }
    }

    #[test]
    fn a_kind_that_cannot_be_a_key_is_dropped_with_its_name() {
        let odd = WorkloadMetadata {
            workload_kind: Some("a b".into()),
            workload_name: Some("n".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        assert_eq!(encode(&odd).unwrap(), "k8s.namespace.name=ns");
    }

    #[test]
    fn a_baggage_value_keeps_exactly_the_baggage_octets_and_escapes_every_other_byte() {
        // W3C baggage-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E, minus `%` (ours).
        let octet = |b: u8| matches!(b, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        for b in 0u8..0x80 {
            let mut out = String::new();
            percent_encode_into(char::from(b).encode_utf8(&mut [0; 4]), &mut out);
            let want = if octet(b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(out, want, "byte {b:#04x}");
        }
        let mut out = String::new();
        percent_encode_into("\u{e9}", &mut out);
        assert_eq!(out, "%C3%A9");
    }

    #[test]
    fn the_decoder_skips_garbage_and_percent_decodes() {
        let m = decode("junk,=x,k8s.pod.name=p%2D1;prop=1, cloud.region = eu ,k8s..name=x");
        assert_eq!(m.workload_kind.as_deref(), Some("pod"));
        assert_eq!(m.workload_name.as_deref(), Some("p-1"));
        assert_eq!(m.region.as_deref(), Some("eu"));
        assert!(decode(&"a=b,".repeat(5000)).is_empty());
    }

    #[test]
    fn several_baggage_headers_read_as_one_list() {
        let mut headers = HeaderMap::new();
        assert!(from_headers(&headers).is_empty());
        headers.append("baggage", "k8s.namespace.name=shop".parse().unwrap());
        headers.append("baggage", "k8s.pod.name=cart-1".parse().unwrap());
        let m = from_headers(&headers);
        assert_eq!(m.namespace.as_deref(), Some("shop"));
        assert_eq!(m.workload_name.as_deref(), Some("cart-1"));
    }
}
