//! Request normalization before authorization, as Istio's "Authorization Policy Normalization"
//! page describes it. The normalized path is both what policies match and what the backend
//! receives, so a policy on `/admin` cannot be bypassed with `/%61dmin` or `/x/../admin`.

use std::borrow::Cow;

/// How request paths are normalized before policies see them (Istio's mesh-wide
/// `pathNormalization`).
///
/// ```
/// use waypoint_filters::authz::{PathNormalization, normalize_path};
/// let p = normalize_path("/public/./%61b%63/../x//y?q=%2e", PathNormalization::Base).unwrap();
/// assert_eq!(p, "/public/x//y?q=%2e");
/// let p = normalize_path("/a%2Fb//c", PathNormalization::DecodeAndMergeSlashes).unwrap();
/// assert_eq!(p, "/a/b/c");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathNormalization {
    /// Paths are matched and forwarded as received (only `%00` is still rejected).
    None,
    /// RFC 3986: percent-encoded unreserved characters decoded once, `\` turned into `/`,
    /// `.` and `..` segments resolved. Encoded slashes (`%2F`, `%5C`) stay encoded.
    #[default]
    Base,
    /// [`PathNormalization::Base`], then runs of `/` merged into one.
    MergeSlashes,
    /// Like [`PathNormalization::MergeSlashes`], but `%2F` and `%5C` are decoded first (to `/`
    /// and `\`, so they then act as separators).
    DecodeAndMergeSlashes,
}

/// Why a request is refused before authorization: Istio answers these with 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The path holds `%00`, which Istio always rejects.
    #[error("the request path contains %00 (an encoded NUL byte)")]
    EncodedNul,
    /// The method has lowercase letters; Istio rejects these rather than guess.
    #[error("the request method {0:?} is not in upper case")]
    LowercaseMethod(String),
}

/// Rejects methods that are not upper case, as Istio does under any normalization but `None`.
pub fn check_method(method: &str, mode: PathNormalization) -> Result<(), NormalizeError> {
    if mode != PathNormalization::None && method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(NormalizeError::LowercaseMethod(
            method.chars().take(32).collect(),
        ));
    }
    Ok(())
}

/// Normalizes a request target (`/path?query`) by `mode`. The query is never changed; only the
/// path before `?` is. Targets that are not origin-form paths (`*`) are left as they are.
/// Normalizing twice gives the same result as once (`%25` is never decoded).
pub fn normalize_path(
    target: &str,
    mode: PathNormalization,
) -> Result<Cow<'_, str>, NormalizeError> {
    let (path, query) = match target.find('?') {
        Some(i) => (&target[..i], Some(&target[i..])),
        None => (target, None),
    };
    if path.as_bytes().windows(3).any(|w| w == b"%00") {
        return Err(NormalizeError::EncodedNul);
    }
    if mode == PathNormalization::None || !path.starts_with('/') {
        return Ok(Cow::Borrowed(target));
    }
    // Most paths need nothing: answer those without allocating.
    let clean = !path.bytes().any(|b| b == b'%' || b == b'\\')
        && !path.contains("/.")
        && (mode == PathNormalization::Base || !path.contains("//"));
    if clean {
        return Ok(Cow::Borrowed(target));
    }
    let decoded = decode(path, mode == PathNormalization::DecodeAndMergeSlashes);
    let resolved = remove_dot_segments(&decoded);
    let merged = if mode == PathNormalization::Base {
        resolved
    } else {
        merge_slashes(&resolved)
    };
    if merged == path {
        return Ok(Cow::Borrowed(target));
    }
    let mut out = merged;
    if let Some(q) = query {
        out.push_str(q);
    }
    Ok(Cow::Owned(out))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes percent-encoded unreserved characters once (and `%2F`/`%5C` when asked), turns `\`
/// into `/`, and upper-cases the hex digits of what stays encoded so equal paths compare equal.
///
/// A decoded hex digit is kept encoded when it would complete an escape with a stray `%`
/// before it: `/p/%2%65%2%65/x` would otherwise become `/p/%2e%2e/x`, which a policy on `/p`
/// accepts and a backend decodes to `/p/../x`, that is `/x` (found by the `path_normalize`
/// fuzz target). Keeping it encoded also keeps normalization idempotent.
fn decode(path: &str, slashes: bool) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            let c = h << 4 | l;
            if unreserved(c) && !(c.is_ascii_hexdigit() && ends_in_open_escape(&out)) {
                out.push(c as char);
            } else if slashes && (c == b'/' || c == b'\\') {
                out.push('/');
            } else {
                out.push('%');
                out.push(bytes[i + 1].to_ascii_uppercase() as char);
                out.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
            continue;
        }
        // Copy whole UTF-8 sequences: `path` is a str, so any non-ASCII byte starts one.
        let len = utf8_len(b);
        let chunk = &path[i..(i + len).min(path.len())];
        if chunk == "\\" {
            out.push('/');
        } else {
            out.push_str(chunk);
        }
        i += len;
    }
    out
}

/// True when `out` ends with a `%` that one or two more hex digits would turn into an escape.
fn ends_in_open_escape(out: &str) -> bool {
    match out.as_bytes() {
        [.., b'%'] => true,
        [.., b'%', d] => d.is_ascii_hexdigit(),
        _ => false,
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// RFC 3986 section 5.2.4, over `/`-separated segments of an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path[1..].split('/').peekable();
    let mut trailing_slash = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            _ => {
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut prev_slash = false;
    for c in path.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    out
}
