//! Reading a request URL the way the API server lays out its paths:
//! `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/status]]` for the core group and
//! `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/status]]` for the others.
//!
//! `/api/v1/namespaces/{name}` is the Namespace object itself, and
//! `/api/v1/namespaces/{name}/status` its status; a plural under a namespace is a collection.

/// A resource URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    /// API group (`""` for core).
    pub(crate) group: String,
    /// API version.
    pub(crate) version: String,
    /// The namespace segment, when the URL has one.
    pub(crate) namespace: Option<String>,
    /// URL plural.
    pub(crate) plural: String,
    /// The object name, for single-object URLs.
    pub(crate) name: Option<String>,
    /// Whether the URL is the `status` subresource.
    pub(crate) status: bool,
}

impl ResourcePath {
    /// Splits `path`; `None` when it is not a resource URL.
    pub(crate) fn parse(path: &str) -> Option<ResourcePath> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, tail @ ..] if *plural != "status" => {
                (Some((*ns).to_owned()), [&[*plural][..], tail].concat())
            }
            _ => (None, rest.to_vec()),
        };
        let (plural, name, status) = match rest.as_slice() {
            [plural] => (*plural, None, false),
            [plural, name] => (*plural, Some(*name), false),
            [plural, name, "status"] => (*plural, Some(*name), true),
            _ => return None,
        };
        if [version, plural].iter().any(|s| s.is_empty())
            || name.is_some_and(str::is_empty)
            || namespace.as_deref().is_some_and(str::is_empty)
        {
            return None;
        }
        Some(ResourcePath {
            group: group.to_owned(),
            version: version.to_owned(),
            namespace,
            plural: plural.to_owned(),
            name: name.map(str::to_owned),
            status,
        })
    }
}

/// The query parameters the emulator reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Query {
    /// `watch=true` or `watch=1`.
    pub(crate) watch: bool,
    /// `resourceVersion`.
    pub(crate) resource_version: Option<String>,
    /// `allowWatchBookmarks=true`.
    pub(crate) bookmarks: bool,
    /// `timeoutSeconds`.
    pub(crate) timeout_seconds: Option<u64>,
    /// `limit`.
    pub(crate) limit: Option<usize>,
    /// `continue`.
    pub(crate) continue_token: Option<String>,
    /// `fieldManager` (server-side apply).
    pub(crate) field_manager: Option<String>,
}

impl Query {
    /// Reads a query string; unknown and malformed parameters are ignored (selectors are not
    /// implemented). Nothing is percent-decoded: every value read is digits, a boolean, or a
    /// continue token the emulator made of letters and digits.
    pub(crate) fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.to_owned();
            let yes = value == "true" || value == "1";
            match key {
                "watch" => q.watch = yes,
                "resourceVersion" => q.resource_version = Some(value),
                "allowWatchBookmarks" => q.bookmarks = yes,
                "timeoutSeconds" => q.timeout_seconds = value.parse().ok(),
                "limit" => q.limit = value.parse().ok(),
                "continue" => q.continue_token = Some(value).filter(|v| !v.is_empty()),
                "fieldManager" => q.field_manager = Some(value).filter(|v| !v.is_empty()),
                _ => {}
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(
        group: &str,
        namespace: Option<&str>,
        plural: &str,
        name: Option<&str>,
        status: bool,
    ) -> Option<ResourcePath> {
        Some(ResourcePath {
            group: group.to_owned(),
            version: "v1".to_owned(),
            namespace: namespace.map(str::to_owned),
            plural: plural.to_owned(),
            name: name.map(str::to_owned),
            status,
        })
    }

    #[test]
    fn core_and_group_paths_split_into_their_parts() {
        let parse = ResourcePath::parse;
        assert_eq!(
            parse("/api/v1/namespaces/default/services/web/status"),
            path("", Some("default"), "services", Some("web"), true)
        );
        assert_eq!(
            parse("/apis/gateway.networking.k8s.io/v1/httproutes"),
            path("gateway.networking.k8s.io", None, "httproutes", None, false)
        );
        assert_eq!(
            parse("/api/v1/namespaces/default"),
            path("", None, "namespaces", Some("default"), false)
        );
        assert_eq!(
            parse("/api/v1/namespaces/default/status"),
            path("", None, "namespaces", Some("default"), true)
        );
        assert_eq!(parse("/api/v1/namespaces/a/pods/b/log"), None);
        assert_eq!(parse("/healthz"), None);
        assert_eq!(parse("/apis/g"), None);
    }

    #[test]
    fn query_parameters_are_read_and_others_ignored() {
        let q = Query::parse(
            "watch=1&resourceVersion=12&allowWatchBookmarks=true&timeoutSeconds=5&limit=2&continue=aB3&labelSelector=x",
        );
        assert!(q.watch && q.bookmarks);
        assert_eq!(q.resource_version.as_deref(), Some("12"));
        assert_eq!((q.timeout_seconds, q.limit), (Some(5), Some(2)));
        assert_eq!(q.continue_token.as_deref(), Some("aB3"));
        assert_eq!(Query::parse("watch=false&limit=x"), Query::default());
    }
}
