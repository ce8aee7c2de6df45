//! Compiled request matches of an HTTPRoute rule, and their precedence.

use std::cmp::Ordering;

use http::{HeaderName, HeaderValue, Method};

/// How a rule matches the request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path equals the value.
    Exact(String),
    /// The path starts with the value at a segment boundary (`/abc` matches `/abc`, `/abc/`,
    /// `/abc/def`, never `/abcd`). Stored without a trailing `/`; `/` is stored as empty.
    Prefix(String),
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
    /// Headers that must be present with exactly these values (names are case-insensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Query parameters that must be present with exactly these values (names case-sensitive).
    pub query: Vec<(String, String)>,
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
        if !self
            .headers
            .iter()
            .all(|(name, value)| req.headers().get_all(name).iter().any(|v| v == value))
        {
            return false;
        }
        if !self.query.is_empty() {
            let query = req.uri().query().unwrap_or_default();
            return self
                .query
                .iter()
                .all(|(name, value)| first_query_value(query, name) == Some(value.as_str()));
        }
        true
    }

    /// Gateway API precedence between two matches of different rules: `Less` means `self`
    /// wins. Exact path beats prefix, longer prefix beats shorter, then a method match, then
    /// more header matches, then more query matches. Ties are broken by the caller (route age,
    /// name, rule order).
    pub fn precedence(&self, other: &Self) -> Ordering {
        let path_rank = |m: &PathMatch| match m {
            PathMatch::Exact(v) => (0, usize::MAX - v.len()),
            PathMatch::Prefix(v) => (1, usize::MAX - v.len()),
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
                HeaderValue::from_static("canary"),
            )],
            query: vec![("v".into(), "2".into())],
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
            headers: vec![(HeaderName::from_static("x"), HeaderValue::from_static("y")); headers],
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
}
