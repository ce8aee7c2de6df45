//! Request path normalization before authorization (Istio's `pathNormalization` modes).
//!
//! Input: one mode byte, then the request target. Properties:
//! - `%00` in the path is always refused; the query is never changed;
//! - normalizing twice gives the same as once;
//! - under every mode but `None`, a normalized origin-form path starts with `/` and holds no
//!   `.` or `..` segment and no `\`; the merge modes leave no `//`; `DecodeAndMergeSlashes`
//!   leaves no encoded slash;
//! - nothing escapes a prefix: a backend decoding the normalized path once (unreserved
//!   characters, written independently here) finds no dot segment, and when the normalized
//!   path matches a `PathPrefix` rule, the path the backend resolves still matches that rule
//!   as the backend reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypoint_filters::authz::{NormalizeError, PathNormalization, normalize_path};
use waypoint_filters::route::PathMatch;

const MODES: [PathNormalization; 4] = [
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

fuzz_target!(|data: &[u8]| {
    let Some((&knob, rest)) = data.split_first() else {
        return;
    };
    let Ok(target) = std::str::from_utf8(rest) else {
        return;
    };
    let mode = MODES[usize::from(knob & 3)];
    let (path, query) = split(target);

    let out = match normalize_path(target, mode) {
        Ok(out) => out,
        Err(NormalizeError::EncodedNul) => {
            assert!(path.contains("%00"), "{target:?} refused without %00");
            return;
        }
        Err(e) => panic!("{target:?}: unexpected {e}"),
    };
    assert!(!path.contains("%00"), "{target:?} with %00 accepted");
    let (out_path, out_query) = split(&out);
    assert_eq!(out_query, query, "query changed");
    let twice = normalize_path(&out, mode).expect("a normalized path normalizes");
    assert_eq!(twice, out, "not idempotent for {target:?} ({mode:?})");

    if mode == PathNormalization::None || !path.starts_with('/') {
        assert_eq!(out, target);
        return;
    }
    assert!(out_path.starts_with('/'), "{out:?}");
    assert!(
        !out_path[1..].split('/').any(|s| s == "." || s == ".."),
        "dot segment left in {out:?} from {target:?}"
    );
    assert!(!out_path.contains('\\'), "backslash left in {out:?}");
    if mode != PathNormalization::Base {
        assert!(!out_path.contains("//"), "{out:?}");
    }
    if mode == PathNormalization::DecodeAndMergeSlashes {
        let upper = out_path.to_ascii_uppercase();
        assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{out:?}");
    }

    // A backend decoding the path once must find no dot segment to resolve: that is how a
    // path would leave the prefix a policy matched.
    let once = decode_unreserved(out_path);
    assert!(
        !once[1..].split('/').any(|s| s == "." || s == ".."),
        "{target:?} → {out:?}, which a backend decodes to {once:?}"
    );
    // Every segment-boundary prefix of the normalized path, and the raw first segment of the
    // input, as PathPrefix rules: what matched still matches as the backend reads it.
    let backend = backend_view(out_path);
    let mut prefixes: Vec<&str> = out_path
        .match_indices('/')
        .map(|(i, _)| &out_path[..i])
        .filter(|p| !p.is_empty())
        .collect();
    prefixes.push(out_path);
    let first_raw = path[1..].split('/').next().unwrap_or_default();
    let raw_prefix = format!("/{first_raw}");
    prefixes.push(&raw_prefix);
    for prefix in prefixes {
        if PathMatch::prefix(prefix).matches(out_path) {
            let seen = backend_view(prefix);
            assert!(
                PathMatch::prefix(&seen).matches(&backend),
                "{target:?} → {out:?} matches prefix {prefix:?} but a backend reads {backend:?}"
            );
        }
    }
});

fn split(target: &str) -> (&str, &str) {
    match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    }
}

/// Unreserved percent-escapes decoded once, as a backend does (left to right, one pass).
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(c) = hex.filter(|c| c.is_ascii_alphanumeric() || b"-._~".contains(c)) {
                decoded.push(c);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// What a backend makes of a path: [`decode_unreserved`], then RFC 3986 dot segments removed
/// with a stack.
fn backend_view(path: &str) -> String {
    let decoded = decode_unreserved(path);
    let mut stack: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let mut trailing = false;
    for (n, seg) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        match *seg {
            "." => trailing = last,
            ".." => {
                stack.pop();
                trailing = last;
            }
            s => {
                stack.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::new();
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}
