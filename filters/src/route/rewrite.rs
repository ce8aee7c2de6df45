//! `URLRewrite` (new Host and/or path before forwarding) and the path replacement it shares
//! with `RequestRedirect`. Values are checked when the config is built; a request only splices
//! strings.

use std::borrow::Cow;

use async_trait::async_trait;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, StatusCode, Uri, header};
use waypoint_core::body::local_reply;
use waypoint_core::config::resources::{PathModifier, PathModifierType, UrlRewrite};
use waypoint_core::filter::{Decision, Filter, Request, RequestContext};

use super::MatchedPrefix;

/// A compiled `path` of a rewrite or redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathRewrite {
    /// `ReplaceFullPath`: the whole path becomes this.
    Full(String),
    /// `ReplacePrefixMatch`: the matched prefix becomes this, stored without a trailing `/`
    /// (so `/` is stored empty).
    Prefix(String),
}

impl PathRewrite {
    /// Compiles `modifier`; `at` names it in errors (`spec.rules[0].filters[1].urlRewrite.path`).
    pub(crate) fn compile(modifier: &PathModifier, at: &str) -> Result<Self, String> {
        let (field, value) = match modifier.kind {
            PathModifierType::ReplaceFullPath => ("replaceFullPath", &modifier.replace_full_path),
            PathModifierType::ReplacePrefixMatch => {
                ("replacePrefixMatch", &modifier.replace_prefix_match)
            }
        };
        let at = format!("{at}.{field}");
        let Some(value) = value else {
            return Err(format!("{at}: required by the path type"));
        };
        let is_path = value.starts_with('/')
            && !value.contains(['?', '#'])
            && PathAndQuery::try_from(value.as_str()).is_ok();
        let prefix = modifier.kind == PathModifierType::ReplacePrefixMatch;
        if !(is_path || prefix && value.is_empty()) {
            return Err(format!("{at}: `{value}` is not an absolute path"));
        }
        Ok(if prefix {
            PathRewrite::Prefix(value.trim_end_matches('/').to_owned())
        } else {
            PathRewrite::Full(value.clone())
        })
    }

    /// True for `ReplacePrefixMatch`, which needs the rule's matches to be PathPrefix ones.
    pub(crate) fn needs_prefix_match(&self) -> bool {
        matches!(self, PathRewrite::Prefix(_))
    }

    /// The new path for `path`, given the PathPrefix that matched it (stored without trailing
    /// `/`). A prefix replacement without a matching prefix leaves the path as it is: the
    /// config checks make that unreachable for rules the route filter serves.
    pub(crate) fn apply<'p>(&self, path: &'p str, matched: Option<&str>) -> Cow<'p, str> {
        match self {
            PathRewrite::Full(full) => Cow::Owned(full.clone()),
            PathRewrite::Prefix(replacement) => match matched {
                Some(prefix) if segment_prefix(path, prefix) => {
                    Cow::Owned(replace_prefix(path, prefix, replacement))
                }
                _ => Cow::Borrowed(path),
            },
        }
    }
}

fn segment_prefix(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// Replaces `prefix` (a whole-segment prefix of `path`, without trailing `/`) by
/// `replacement` (also without trailing `/`). The rest of the path keeps its own leading `/`,
/// so `/foo/bar` with `/foo` -> `/xyz` is `/xyz/bar`, and with `/foo` -> `` is `/bar`, never
/// `//bar`; an emptied path is `/`.
pub(crate) fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = &path[prefix.len()..];
    match (replacement.is_empty(), rest) {
        (true, "") => "/".to_owned(),
        (true, rest) => rest.to_owned(),
        // Prefix `/` (stored empty) on path `/`: the whole path was the prefix.
        (false, "/") if prefix.is_empty() => replacement.to_owned(),
        (false, rest) => format!("{replacement}{rest}"),
    }
}

/// A URI with `path` in place of its path, the query kept; `None` if that is not a valid URI.
pub(crate) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")),
        None => PathAndQuery::try_from(path),
    }
    .ok()?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

/// `URLRewrite`: the Host sent upstream and/or the path.
#[derive(Debug)]
pub struct Rewrite {
    hostname: Option<(HeaderValue, Authority)>,
    path: Option<PathRewrite>,
}

impl Rewrite {
    /// Compiles `rewrite`; `at` is its field path, for errors.
    pub fn compile(rewrite: &UrlRewrite, at: &str) -> Result<Self, String> {
        let hostname = match &rewrite.hostname {
            Some(host) => {
                let invalid = || format!("{at}.hostname: `{host}` is not a valid host");
                let value = HeaderValue::try_from(host.as_str()).map_err(|_| invalid())?;
                let authority = Authority::try_from(host.as_str()).map_err(|_| invalid())?;
                Some((value, authority))
            }
            None => None,
        };
        let path = match &rewrite.path {
            Some(p) => Some(PathRewrite::compile(p, &format!("{at}.path"))?),
            None => None,
        };
        Ok(Rewrite { hostname, path })
    }

    /// The path replacement, if any (for the checks that need the rule's matches).
    pub(crate) fn path(&self) -> Option<&PathRewrite> {
        self.path.as_ref()
    }
}

#[async_trait]
impl Filter for Rewrite {
    fn name(&self) -> &str {
        "URLRewrite"
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        if let Some((value, authority)) = &self.hostname {
            req.headers_mut().insert(header::HOST, value.clone());
            // An HTTP/2 request carries its host in the URI too: keep the two in agreement.
            if req.uri().authority().is_some() {
                let mut parts = req.uri().clone().into_parts();
                parts.authority = Some(authority.clone());
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
        if let Some(rewrite) = &self.path {
            let matched = ctx.extensions.get::<MatchedPrefix>();
            let path = req.uri().path();
            let new = rewrite.apply(path, matched.and_then(|m| m.0.as_deref()));
            if new != path {
                let Some(uri) = with_path(req.uri(), &new) else {
                    return Decision::Respond(local_reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("waypoint: URLRewrite made an invalid path {new:?}"),
                    ));
                };
                *req.uri_mut() = uri;
            }
        }
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of `HTTPPathModifier.replacePrefixMatch` in the Gateway API spec, plus the
    /// root prefix.
    #[test]
    fn replace_prefix_match_table() {
        let cases = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/", "/", "/xyz", "/xyz"),
            ("/bar", "/", "/xyz", "/xyz/bar"),
            ("/bar", "/", "/", "/bar"),
        ];
        for (path, prefix, replacement, want) in cases {
            let rewrite = PathRewrite::compile(
                &PathModifier {
                    kind: PathModifierType::ReplacePrefixMatch,
                    replace_full_path: None,
                    replace_prefix_match: Some(replacement.into()),
                },
                "p",
            )
            .unwrap();
            let prefix = prefix.trim_end_matches('/');
            assert_eq!(
                rewrite.apply(path, Some(prefix)),
                want,
                "{path} with {prefix:?} -> {replacement:?}"
            );
        }
    }

    #[test]
    fn prefix_replacement_needs_a_segment_prefix() {
        let rewrite = PathRewrite::Prefix("/xyz".into());
        assert_eq!(rewrite.apply("/foobar", Some("/foo")), "/foobar");
        assert_eq!(rewrite.apply("/foo/bar", None), "/foo/bar");
    }

    #[test]
    fn full_path_and_query() {
        let uri: Uri = "/full/one/two?a=1&b".parse().unwrap();
        let path = PathRewrite::Full("/one".into()).apply(uri.path(), None);
        assert_eq!(with_path(&uri, &path).unwrap(), "/one?a=1&b");
        let uri: Uri = "http://svc:80/a".parse().unwrap();
        assert_eq!(with_path(&uri, "/b").unwrap(), "http://svc:80/b");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let modifier = |full: &str| PathModifier {
            kind: PathModifierType::ReplaceFullPath,
            replace_full_path: Some(full.into()),
            replace_prefix_match: None,
        };
        let err = PathRewrite::compile(&modifier("no-slash"), "x.path").unwrap_err();
        assert!(err.starts_with("x.path.replaceFullPath: "), "{err}");
        assert!(PathRewrite::compile(&modifier("/a?b"), "x").is_err());
        assert!(PathRewrite::compile(&modifier(""), "x").is_err());
        let err = Rewrite::compile(
            &UrlRewrite {
                hostname: Some("bad host".into()),
                path: None,
            },
            "f.urlRewrite",
        )
        .unwrap_err();
        assert!(err.starts_with("f.urlRewrite.hostname: "), "{err}");
    }
}
