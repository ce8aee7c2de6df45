//! Gateway parents at request time: the connection's destination names a Gateway address and
//! listener port, the Host header picks the listener, then the routes of the most specific
//! matching hostname. Hostname patterns and their intersection live here too.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use waypoint_core::http::authority;

use super::RouteSet;

/// A hostname as listeners and routes write it, lowercased.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum HostPattern {
    /// Any host (no hostname given).
    Any,
    /// `*.example.com`, stored as `.example.com`: hosts with at least one more label.
    Wildcard(String),
    /// One host.
    Exact(String),
}

impl HostPattern {
    /// The pattern of a listener or route hostname; `None` is [`HostPattern::Any`].
    pub(crate) fn parse(hostname: Option<&str>) -> Self {
        match hostname.map(str::to_ascii_lowercase) {
            None => HostPattern::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostPattern::Wildcard(suffix.to_owned()),
                None => HostPattern::Exact(h),
            },
        }
    }

    /// True when the (lowercased, port-less) `host` matches.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }

    /// The hosts both a route hostname (`self`) and a listener hostname accept, written as one
    /// pattern, or `None` when they accept no host in common.
    pub(crate) fn intersect(&self, listener: &Self) -> Option<Self> {
        use HostPattern::*;
        match (self, listener) {
            (x, Any) => Some(x.clone()),
            (Any, y) => Some(y.clone()),
            (Exact(a), Exact(b)) => (a == b).then(|| self.clone()),
            (Exact(a), w @ Wildcard(_)) => w.matches(a).then(|| self.clone()),
            (w @ Wildcard(_), Exact(b)) => w.matches(b).then(|| listener.clone()),
            (Wildcard(a), Wildcard(b)) if a.ends_with(b.as_str()) => Some(self.clone()),
            (Wildcard(a), Wildcard(b)) if b.ends_with(a.as_str()) => Some(listener.clone()),
            (Wildcard(_), Wildcard(_)) => None,
        }
    }

    /// Sort key putting the most specific pattern first: exact, then longer wildcards, then any.
    pub(super) fn specificity(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            HostPattern::Exact(h) => (0, std::cmp::Reverse(h.len())),
            HostPattern::Wildcard(s) => (1, std::cmp::Reverse(s.len())),
            HostPattern::Any => (2, std::cmp::Reverse(0)),
        }
    }
}

/// The listeners of every Gateway served at one address and port, most specific hostname first.
#[derive(Debug, Default)]
pub(super) struct GatewayPort {
    pub(super) listeners: Vec<Arc<ListenerRoutes>>,
}

impl GatewayPort {
    /// The listener that takes `host`: exact hostname, else the longest wildcard, else one
    /// without hostname.
    pub(super) fn listener(&self, host: &str) -> Option<&ListenerRoutes> {
        self.listeners
            .iter()
            .find(|l| l.hostname.matches(host))
            .map(|l| &**l)
    }
}

/// The routes attached to one listener, by effective hostname.
#[derive(Debug)]
pub(super) struct ListenerRoutes {
    /// `Gateway ns/name listener <name>`, for messages.
    pub(super) label: String,
    pub(super) hostname: HostPattern,
    pub(super) hosts: HostRoutes,
}

/// Route sets by effective hostname (generic only so that tests can tell the sets apart).
#[derive(Debug)]
pub(super) struct HostRoutes<T = RouteSet> {
    pub(super) exact: HashMap<String, T>,
    /// Wildcard suffix (`.example.com`) -> its routes.
    wildcards: HashMap<String, T>,
    /// The distinct lengths of the `wildcards` suffixes, longest first: a host is looked up by
    /// its suffix of each length, so the cost is bounded by the lengths, not by the number of
    /// wildcard hostnames.
    wildcard_lengths: Vec<usize>,
    pub(super) any: Option<T>,
}

impl<T> Default for HostRoutes<T> {
    fn default() -> Self {
        HostRoutes {
            exact: HashMap::new(),
            wildcards: HashMap::new(),
            wildcard_lengths: Vec::new(),
            any: None,
        }
    }
}

impl<T> HostRoutes<T> {
    /// The routes of the most specific hostname matching `host`: exact beats wildcard, a
    /// longer wildcard beats a shorter one, and routes without hostname come last. Two
    /// different wildcards of one length cannot both match a host, so the longest that matches
    /// is the only candidate of its length.
    pub(super) fn find(&self, host: &str) -> Option<&T> {
        if let Some(set) = self.exact.get(host) {
            return Some(set);
        }
        self.wildcard_lengths
            .iter()
            // A wildcard needs at least one more character than its suffix.
            .filter(|&&len| len < host.len())
            .find_map(|&len| {
                host.get(host.len() - len..)
                    .and_then(|suffix| self.wildcards.get(suffix))
            })
            .or(self.any.as_ref())
    }

    pub(super) fn insert(&mut self, host: HostPattern, set: T) {
        match host {
            HostPattern::Exact(h) => {
                self.exact.insert(h, set);
            }
            HostPattern::Wildcard(s) => {
                if !self.wildcard_lengths.contains(&s.len()) {
                    self.wildcard_lengths.push(s.len());
                    self.wildcard_lengths
                        .sort_by_key(|&len| std::cmp::Reverse(len));
                }
                self.wildcards.insert(s, set);
            }
            HostPattern::Any => self.any = Some(set),
        }
    }
}

/// The request's host (see [`authority`]) without the port, lowercased (allocating only when it
/// has capitals or a trailing dot).
pub(crate) fn request_host<B>(req: &http::Request<B>) -> Cow<'_, str> {
    normalize_host(authority::request_host(req).unwrap_or_default())
}

/// A host name (SNI) as listeners match it: lower case, without a trailing dot.
pub(super) fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::HostPattern::*;
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(Some(s))
    }

    #[test]
    fn wildcards_need_one_more_label() {
        assert!(p("*.example.com").matches("a.example.com"));
        assert!(p("*.example.com").matches("a.b.example.com"));
        assert!(!p("*.example.com").matches("example.com"));
        assert!(!p("*.example.com").matches("aexample.com"));
        assert!(p("Foo.COM").matches("foo.com"));
    }

    #[test]
    fn intersections() {
        assert_eq!(p("a.x.com").intersect(&p("*.x.com")), Some(p("a.x.com")));
        assert_eq!(p("*.x.com").intersect(&p("a.x.com")), Some(p("a.x.com")));
        assert_eq!(
            p("*.a.x.com").intersect(&p("*.x.com")),
            Some(p("*.a.x.com"))
        );
        assert_eq!(
            p("*.x.com").intersect(&p("*.a.x.com")),
            Some(p("*.a.x.com"))
        );
        assert_eq!(p("*.bx.com").intersect(&p("*.x.com")), None);
        assert_eq!(p("x.com").intersect(&p("*.x.com")), None);
        assert_eq!(Any.intersect(&p("x.com")), Some(p("x.com")));
        assert_eq!(p("x.com").intersect(&Any), Some(p("x.com")));
    }

    #[test]
    fn host_without_port_and_case() {
        let req = |h: &str| http::Request::get("/").header("host", h).body(()).unwrap();
        assert_eq!(
            request_host(&req("Very.Specific.com:1234")),
            "very.specific.com"
        );
        assert_eq!(request_host(&req("[::1]:80")), "[::1]");
        assert_eq!(request_host(&req("a.com.")), "a.com");
        let h2 = http::Request::get("http://B.com:8080/x").body(()).unwrap();
        assert_eq!(request_host(&h2), "b.com");
    }
}
