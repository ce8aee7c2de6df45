//! Compiled request matches of an HTTPRoute rule, and their precedence. Regular expressions
//! are compiled (anchored) when the snapshot is built; a request only runs them.

use std::cmp::Ordering;

use http::{HeaderName, Method};
use regex::Regex;

/// The most memory one compiled user regex may take: enough for any sane match, small enough
/// that a hostile manifest cannot make the snapshot huge.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern` so that it must match the whole value (Gateway API regex matches are
/// full matches, not searches). The error says why, for the caller to name the field.
///
/// The pattern is first checked on its own: wrapping it in `^(?:…)$` would otherwise turn an
/// invalid pattern such as `a)|(.*` into a valid one, `^(?:a)|(.*)$`, whose second branch is a
/// search that matches every value (found by the `route_match` fuzz target). A pattern that is
/// valid alone stays one group inside the anchors.
pub fn full_match_regex(pattern: &str) -> Result<Regex, String> {
    let invalid = |e: regex::Error| format!("invalid regular expression `{pattern}`: {e}");
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(invalid)?;
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(invalid)
}

/// How a rule matches the request path.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// The whole path equals the value.
    Exact(String),
    /// The path starts with the value at a segment boundary (`/abc` matches `/abc`, `/abc/`,
    /// `/abc/def`, never `/abcd`). Stored without a trailing `/`; `/` is stored as empty.
    Prefix(String),
    /// The whole path matches the (anchored) regular expression.
    Regex(Regex),
}

impl PartialEq for PathMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
            (PathMatch::Prefix(a), PathMatch::Prefix(b)) => a == b,
            (PathMatch::Regex(a), PathMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for PathMatch {}

/// How a header or query parameter value is matched.
#[derive(Clone, Debug)]
pub enum ValuePattern {
    /// The value equals this, byte for byte.
    Exact(String),
    /// The whole value matches the (anchored) regular expression; a value that is not UTF-8
    /// never matches.
    Regex(Regex),
}

impl ValuePattern {
    /// True when `value` matches.
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValuePattern::Exact(v) => v.as_bytes() == value,
            ValuePattern::Regex(re) => std::str::from_utf8(value).is_ok_and(|s| re.is_match(s)),
        }
    }
}

impl PathMatch {
    /// A `PathPrefix` match; a trailing `/` in the value is ignored, as Gateway API says.
    pub fn prefix(value: &str) -> Self {
        PathMatch::Prefix(value.trim_end_matches('/').to_owned())
    }

    /// True when `path` (without the query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(value) => path == value,
            PathMatch::Prefix(value) => {
                path.starts_with(value.as_str())
                    && matches!(path.as_bytes().get(value.len()), None | Some(b'/'))
            }
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

/// One entry of `matches`: every condition must hold.
#[derive(Clone, Debug)]
pub struct RequestMatch {
    /// Path condition.
    pub path: PathMatch,
    /// Method condition.
    pub method: Option<Method>,
    /// Headers that must be present with a value matching (names are case-insensitive).
    pub headers: Vec<(HeaderName, ValuePattern)>,
    /// Query parameters whose first value must match (names case-sensitive).
    pub query: Vec<(String, ValuePattern)>,
}

impl RequestMatch {
    /// True when the request matches every condition.
    pub fn matches<B>(&self, req: &http::Request<B>) -> bool {
        let path = req.uri().path();
        if !self.path.matches(path) {
            return false;
        }
        if let Some(method) = &self.method
            && req.method() != method
        {
            return false;
        }
        if !self.headers.iter().all(|(name, value)| {
            req.headers()
                .get_all(name)
                .iter()
                .any(|v| value.matches(v.as_bytes()))
        }) {
            return false;
        }
        if !self.query.is_empty() {
            let query = req.uri().query().unwrap_or_default();
            return self.query.iter().all(|(name, value)| {
                first_query_value(query, name).is_some_and(|v| value.matches(v.as_bytes()))
            });
        }
        true
    }

    /// Gateway API precedence between two matches of different rules: `Less` means `self`
    /// wins. Exact path beats prefix, longer prefix beats shorter, a regular expression comes
    /// after every prefix (the spec leaves its rank to implementations; this is Envoy's and
    /// Istio's choice), then a method match, then more header matches, then more query
    /// matches. Ties are broken by the caller (route age, name, rule order).
    pub fn precedence(&self, other: &Self) -> Ordering {
        let path_rank = |m: &PathMatch| match m {
            PathMatch::Exact(v) => (0, usize::MAX - v.len()),
            PathMatch::Prefix(v) => (1, usize::MAX - v.len()),
            PathMatch::Regex(_) => (2, 0),
        };
        path_rank(&self.path)
            .cmp(&path_rank(&other.path))
            .then_with(|| other.method.is_some().cmp(&self.method.is_some()))
            .then_with(|| other.headers.len().cmp(&self.headers.len()))
            .then_with(|| other.query.len().cmp(&self.query.len()))
    }
}

/// The first value of query parameter `name`, compared without decoding (as the conformance
/// tests send them).
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> http::Request<()> {
        http::Request::get(uri)
            .header("x-env", "canary")
            .body(())
            .unwrap()
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let m = PathMatch::prefix("/abc/");
        assert!(m.matches("/abc"));
        assert!(m.matches("/abc/"));
        assert!(m.matches("/abc/def"));
        assert!(!m.matches("/abcd"));
        assert!(!m.matches("/ab"));
        let root = PathMatch::prefix("/");
        assert!(root.matches("/"));
        assert!(root.matches("/anything"));
    }

    #[test]
    fn exact_is_exact() {
        let m = PathMatch::Exact("/a".into());
        assert!(m.matches("/a"));
        assert!(!m.matches("/a/"));
        assert!(!m.matches("/ab"));
    }

    #[test]
    fn all_conditions_must_hold() {
        let m = RequestMatch {
            path: PathMatch::prefix("/"),
            method: Some(Method::GET),
            headers: vec![(
                HeaderName::from_static("x-env"),
                ValuePattern::Exact("canary".into()),
            )],
            query: vec![("v".into(), ValuePattern::Exact("2".into()))],
        };
        assert!(m.matches(&parts("/x?a=1&v=2")));
        assert!(!m.matches(&parts("/x?v=3")));
        assert!(!m.matches(&parts("/x")));
        let mut post = parts("/x?v=2");
        *post.method_mut() = Method::POST;
        assert!(!m.matches(&post));
    }

    #[test]
    fn precedence_order() {
        let m = |path: PathMatch, method: bool, headers: usize| RequestMatch {
            path,
            method: method.then_some(Method::GET),
            headers: vec![
                (
                    HeaderName::from_static("x"),
                    ValuePattern::Exact("y".into())
                );
                headers
            ],
            query: vec![],
        };
        let exact = m(PathMatch::Exact("/a".into()), false, 0);
        let long = m(PathMatch::prefix("/a/b"), false, 0);
        let short = m(PathMatch::prefix("/a"), false, 0);
        let short_method = m(PathMatch::prefix("/a"), true, 0);
        let short_headers = m(PathMatch::prefix("/a"), false, 2);
        assert_eq!(exact.precedence(&long), Ordering::Less);
        assert_eq!(long.precedence(&short), Ordering::Less);
        assert_eq!(short_method.precedence(&short_headers), Ordering::Less);
        assert_eq!(short_headers.precedence(&short), Ordering::Less);
        assert_eq!(short.precedence(&short), Ordering::Equal);
    }

    #[test]
    fn regex_must_cover_the_whole_value() {
        let m = PathMatch::Regex(full_match_regex("/v[0-9]+/.*").unwrap());
        assert!(m.matches("/v12/items"));
        assert!(
            !m.matches("/api/v12/items"),
            "a search would match; a full match must not"
        );
        let re = full_match_regex("a|b").unwrap();
        // The alternation is grouped before anchoring: `^a|b$` would match "ax".
        assert!(!re.is_match("ax"));
        assert!(!re.is_match("xb"));
        assert!(re.is_match("b"));
        let v = ValuePattern::Regex(full_match_regex("can.*").unwrap());
        assert!(v.matches(b"canary"));
        assert!(!v.matches(b"uncanary"));
        assert!(
            !v.matches(&[0x63, 0x61, 0x6e, 0xff]),
            "not UTF-8 never matches"
        );
        assert!(
            full_match_regex("(unclosed")
                .unwrap_err()
                .contains("(unclosed")
        );
    }

    #[test]
    fn a_regex_that_closes_the_anchoring_group_is_refused() {
        // Wrapped as `^(?:a)|(.*)$` this would be valid and match anything (fuzz finding).
        for pattern in ["a)|(.*", "/admin)|(/.*", ")(", "x)|(?:y"] {
            let error = full_match_regex(pattern).unwrap_err();
            assert!(error.contains(pattern), "{error}");
        }
        assert!(full_match_regex("(a)|(b)").unwrap().is_match("b"));
        assert!(!full_match_regex("(a)|(b)").unwrap().is_match("ab"));
    }

    #[test]
    fn regex_path_ranks_after_every_prefix() {
        let m = |path: PathMatch| RequestMatch {
            path,
            method: None,
            headers: vec![],
            query: vec![],
        };
        let regex = m(PathMatch::Regex(full_match_regex("/.*").unwrap()));
        assert_eq!(m(PathMatch::prefix("/")).precedence(&regex), Ordering::Less);
        assert_eq!(
            m(PathMatch::Exact("/a".into())).precedence(&regex),
            Ordering::Less
        );
    }
}
