//! The watch stream: newline-delimited JSON events, read as the body arrives.
//!
//! The API server writes one JSON object per line, but the transport cuts the body wherever it
//! likes: a chunk may end mid-line, mid-UTF-8 sequence, or hold several lines. [`LineSplitter`]
//! keeps the unfinished tail and hands out whole lines only; [`parse_event`] turns a line into
//! a [`WatchEvent`] or the error that ends the watch (`ERROR` with code 410 is `Gone`: the
//! caller lists again).

use serde_json::Value;

use super::status_error;
use crate::api::{ApiResource, KubeError, WatchEvent};

/// The longest line accepted: larger than any object etcd stores (1.5 MiB by default) with
/// room to spare, small enough that a server that never sends a newline cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Splits a byte stream into lines, across chunk boundaries.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds `chunk` and returns the lines it completed (without their `\n`, blank ones
    /// skipped). Fails when the unfinished line grows past [`MAX_LINE_BYTES`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, KubeError> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.pending);
            line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(line);
            }
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_LINE_BYTES {
            return Err(KubeError::Decode(format!(
                "a watch event is longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        Ok(lines)
    }

    /// What is left when the stream ends: a last line without its newline, if any.
    pub fn finish(self) -> Option<Vec<u8>> {
        Some(self.pending).filter(|p| !p.iter().all(u8::is_ascii_whitespace))
    }
}

/// One line of a watch of `resource`: its event, `Ok(None)` for an event type this client
/// does not know (skipped), or the error that ends the watch.
pub fn parse_event(line: &[u8], resource: &ApiResource) -> Result<Option<WatchEvent>, KubeError> {
    let mut event: Value = serde_json::from_slice(line)
        .map_err(|e| KubeError::Decode(format!("a watch event is not JSON: {e}")))?;
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let object = match event.get_mut("object").map(Value::take) {
        Some(object @ Value::Object(_)) => object,
        _ => {
            return Err(KubeError::Decode(format!(
                "a {kind} watch event has no object"
            )));
        }
    };
    let with_type = |mut object: Value| {
        fill_type(&mut object, resource);
        object
    };
    Ok(Some(match kind.as_str() {
        "ADDED" => WatchEvent::Added(with_type(object)),
        "MODIFIED" => WatchEvent::Modified(with_type(object)),
        "DELETED" => WatchEvent::Deleted(with_type(object)),
        "BOOKMARK" => {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    KubeError::Decode("a BOOKMARK event has no resourceVersion".into())
                })?;
            WatchEvent::Bookmark(rv.to_owned())
        }
        "ERROR" => {
            let code = object.get("code").and_then(Value::as_u64).unwrap_or(500);
            return Err(status_error(
                u16::try_from(code).unwrap_or(500),
                Some(&object),
                "",
            ));
        }
        other => {
            tracing::debug!(
                event = other,
                kind = resource.kind,
                "skipping an unknown watch event type"
            );
            return Ok(None);
        }
    }))
}

/// Sets `apiVersion` and `kind` where the server left them out (list items usually lack them).
pub fn fill_type(object: &mut Value, resource: &ApiResource) {
    if let Some(map) = object.as_object_mut() {
        if !map.get("apiVersion").is_some_and(Value::is_string) {
            map.insert("apiVersion".into(), Value::String(resource.api_version()));
        }
        if !map.get("kind").is_some_and(Value::is_string) {
            map.insert("kind".into(), Value::String(resource.kind.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinds::SERVICE;

    const STREAM: &str = concat!(
        r#"{"type":"ADDED","object":{"metadata":{"name":"é","resourceVersion":"5"}}}"#,
        "\n",
        r#"{"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"9"}}}"#,
        "\n\n",
        r#"{"type":"DELETED","object":{"kind":"Service","apiVersion":"v1","metadata":{"name":"b"}}}"#,
        "\n",
    );

    fn events_of(lines: Vec<Vec<u8>>) -> Vec<WatchEvent> {
        lines
            .iter()
            .filter_map(|l| parse_event(l, &SERVICE).unwrap())
            .collect()
    }

    #[test]
    fn a_stream_split_at_every_byte_boundary_yields_the_same_events() {
        let bytes = STREAM.as_bytes();
        let mut whole = LineSplitter::default();
        let expected = events_of(whole.push(bytes).unwrap());
        assert_eq!(expected.len(), 3);
        assert_eq!(expected[1], WatchEvent::Bookmark("9".into()));
        let WatchEvent::Added(added) = &expected[0] else {
            panic!("{expected:?}")
        };
        assert_eq!(added["kind"], "Service", "filled in");
        assert_eq!(added["apiVersion"], "v1");
        assert_eq!(
            added["metadata"]["name"], "é",
            "a split UTF-8 sequence survives"
        );
        for a in 0..bytes.len() {
            for b in a..bytes.len() {
                let mut splitter = LineSplitter::default();
                let mut lines = splitter.push(&bytes[..a]).unwrap();
                lines.extend(splitter.push(&bytes[a..b]).unwrap());
                lines.extend(splitter.push(&bytes[b..]).unwrap());
                assert!(splitter.finish().is_none());
                assert_eq!(events_of(lines), expected, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn a_last_line_without_newline_is_kept_for_finish() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(b"{\"type\":").unwrap().is_empty());
        assert_eq!(splitter.finish().unwrap(), b"{\"type\":");
    }

    #[test]
    fn an_error_event_with_410_is_gone_and_others_are_api_errors() {
        let gone = br#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 1 (5)"}}"#;
        let err = parse_event(gone, &SERVICE).unwrap_err();
        assert!(
            matches!(&err, KubeError::Gone(m) if m.contains("too old")),
            "{err}"
        );
        let forbidden = br#"{"type":"ERROR","object":{"kind":"Status","code":403,"reason":"Forbidden","message":"no"}}"#;
        let err = parse_event(forbidden, &SERVICE).unwrap_err();
        assert!(
            matches!(&err, KubeError::Api { code: 403, reason, .. } if reason == "Forbidden"),
            "{err}"
        );
    }

    #[test]
    fn malformed_events_are_decode_errors_and_unknown_types_are_skipped() {
        for bad in [
            &b"not json"[..],
            br#"{"type":"ADDED"}"#,
            br#"{"type":"BOOKMARK","object":{}}"#,
        ] {
            let err = parse_event(bad, &SERVICE).unwrap_err();
            assert!(matches!(err, KubeError::Decode(_)), "{err}");
        }
        let unknown = br#"{"type":"SOMETHING","object":{}}"#;
        assert_eq!(parse_event(unknown, &SERVICE).unwrap(), None);
    }

    #[test]
    fn a_line_that_never_ends_is_refused() {
        let mut splitter = LineSplitter::default();
        let chunk = vec![b'x'; MAX_LINE_BYTES / 2 + 1];
        splitter.push(&chunk).unwrap();
        assert!(matches!(splitter.push(&chunk), Err(KubeError::Decode(_))));
    }
}
