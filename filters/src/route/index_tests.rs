//! The route index against the scan it replaces: for generated match lists, compiled route
//! tables and hostname sets (a fixed seed each, so a failure reproduces), the index must choose
//! the very entry the plain walk down the precedence list chooses.

use std::net::SocketAddr;
use std::sync::Arc;

use fastrand::Rng;
use http::{HeaderName, Method};
use waypoint_core::config::ResourceRef;
use waypoint_core::filter::{BuildContext, ExtensionRegistry, FilterChain, RouteMatch, Timeout};

use super::gateway::{HostPattern, HostRoutes};
use super::index::HttpRoutes;
use super::matcher::{PathMatch, RequestMatch, ValuePattern, full_match_regex};
use super::{MatchedPrefix, RouteEntry, RouteSet, Rule};

/// Path pieces chosen so that generated rules and requests overlap a lot: shared prefixes,
/// prefixes that are not segment prefixes (`a` of `ab`), empty segments, a percent-encoded one
/// (compared as written, never decoded).
const SEGMENTS: [&str; 6] = ["a", "b", "ab", "", "%C3%A9", "a.b"];

/// A path, or a path match value: `/` and 0 to 3 segments, sometimes a trailing `/`, rarely
/// without the leading `/`.
fn path(rng: &mut Rng) -> String {
    let mut out = String::new();
    if rng.u8(..20) != 0 {
        out.push('/');
    }
    let segments: Vec<&str> = (0..rng.usize(0..=3))
        .map(|_| SEGMENTS[rng.usize(..SEGMENTS.len())])
        .collect();
    out.push_str(&segments.join("/"));
    if rng.bool() {
        out.push('/');
    }
    out
}

/// A path as the HTTPRoute schema accepts it: absolute, no empty segment.
fn valid_path(rng: &mut Rng) -> String {
    let segments: Vec<&str> = (0..rng.usize(0..=3))
        .map(|_| SEGMENTS[rng.usize(..SEGMENTS.len())])
        .filter(|s| !s.is_empty())
        .collect();
    if segments.is_empty() {
        return "/".to_owned();
    }
    let trailing = if rng.bool() { "/" } else { "" };
    format!("/{}{trailing}", segments.join("/"))
}

fn regexes() -> Vec<regex::Regex> {
    ["/a/.*", "/(a|b)", "/.*", "/ab?/?", "/%C3.*", "[^/].*"]
        .iter()
        .map(|p| full_match_regex(p).unwrap())
        .collect()
}

fn value(rng: &mut Rng) -> ValuePattern {
    if rng.u8(..4) == 0 {
        ValuePattern::Regex(full_match_regex("[12]").unwrap())
    } else {
        ValuePattern::Exact(rng.u8(1..=2).to_string())
    }
}

fn method(rng: &mut Rng) -> Method {
    [Method::GET, Method::POST, Method::PUT][rng.usize(..3)].clone()
}

fn request_match(rng: &mut Rng, regexes: &[regex::Regex]) -> RequestMatch {
    let path = match rng.u8(..10) {
        0..=2 => PathMatch::Exact(path(rng)),
        3..=7 => PathMatch::prefix(&path(rng)),
        _ => PathMatch::Regex(regexes[rng.usize(..regexes.len())].clone()),
    };
    RequestMatch {
        path,
        method: (rng.u8(..3) == 0).then(|| method(rng)),
        headers: (0..rng.usize(0..=2))
            .map(|_| {
                let name = ["x-a", "x-b"][rng.usize(..2)];
                (HeaderName::from_static(name), value(rng))
            })
            .collect(),
        query: (0..rng.usize(0..=2))
            .map(|_| (["q", "r"][rng.usize(..2)].to_owned(), value(rng)))
            .collect(),
    }
}

/// A rule that only says which (route, rule) it is.
fn rule(index: usize) -> Arc<Rule> {
    Arc::new(Rule {
        route: RouteMatch {
            route: ResourceRef {
                kind: "HTTPRoute".into(),
                namespace: "default".into(),
                name: "generated".into(),
            },
            rule: index,
        },
        invalid: None,
        filters: Arc::new(FilterChain::default()),
        backend_filters: false,
        backends: Vec::new(),
        total_weight: 0,
        request_timeout: Timeout::Default,
        backend_timeout: Timeout::Default,
        retry: None,
    })
}

/// A request over the same vocabulary as the matches, including paths a client may send that
/// no sane rule names (`*`, runs of `/`).
fn request(rng: &mut Rng) -> http::Request<()> {
    let path = match rng.u8(..20) {
        0 => "*".to_owned(),
        1 => "/".repeat(rng.usize(1..40)),
        // A request path always starts with `/` (origin form; absolute form is normalized).
        _ => format!("/{}", path(rng).trim_start_matches('/')),
    };
    let query: Vec<String> = (0..rng.usize(0..=2))
        .map(|_| format!("{}={}", ["q", "r", "s"][rng.usize(..3)], rng.u8(1..=3)))
        .collect();
    let uri = if query.is_empty() || path == "*" {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let mut builder = http::Request::builder().method(method(rng)).uri(uri);
    for _ in 0..rng.usize(0..=2) {
        builder = builder.header(["x-a", "x-b"][rng.usize(..2)], rng.u8(1..=3).to_string());
    }
    builder.body(()).unwrap()
}

fn position(routes: &HttpRoutes, entry: Option<&RouteEntry>) -> Option<usize> {
    entry.map(|e| {
        routes
            .entries()
            .iter()
            .position(|x| std::ptr::eq(x, e))
            .unwrap()
    })
}

#[test]
fn the_index_chooses_the_entry_the_scan_chooses_for_generated_match_lists() {
    let regexes = regexes();
    let (mut matched, mut missed, mut not_first) = (0, 0, 0);
    for seed in 0..400u64 {
        let mut rng = Rng::with_seed(seed);
        let mut matches: Vec<RequestMatch> = (0..rng.usize(0..80))
            .map(|_| request_match(&mut rng, &regexes))
            .collect();
        // Lists as compiled are in precedence order; the index must not depend on it, so half
        // of them are left in generation order.
        if seed % 2 == 0 {
            matches.sort_by(|a, b| a.precedence(b));
        }
        let routes = HttpRoutes::new(
            matches
                .into_iter()
                .enumerate()
                .map(|(i, matcher)| RouteEntry {
                    matched: MatchedPrefix::of(&matcher),
                    matcher,
                    rule: rule(i),
                })
                .collect(),
        );
        for _ in 0..200 {
            let req = request(&mut rng);
            let want = position(&routes, routes.scan(&req));
            let got = position(&routes, routes.first_match(&req));
            assert_eq!(
                got,
                want,
                "seed {seed}: {} {} {:?}",
                req.method(),
                req.uri(),
                req.headers()
            );
            match want {
                None => missed += 1,
                Some(0) => matched += 1,
                Some(_) => {
                    matched += 1;
                    not_first += 1;
                }
            }
        }
    }
    // The generator must exercise both outcomes, and matches deep in the list.
    assert!(matched > 10_000 && missed > 10_000, "{matched} {missed}");
    assert!(not_first > 5_000, "{not_first}");
}

#[test]
fn prefixes_match_whole_segments_and_the_longest_wins() {
    let entry = |path: PathMatch| {
        let matcher = RequestMatch {
            path,
            method: None,
            headers: vec![],
            query: vec![],
        };
        RouteEntry {
            matched: MatchedPrefix::of(&matcher),
            matcher,
            rule: rule(0),
        }
    };
    let routes = HttpRoutes::new(vec![
        entry(PathMatch::Exact("/a/b".into())),
        entry(PathMatch::prefix("/a/b/")),
        entry(PathMatch::prefix("/ab")),
        entry(PathMatch::prefix("/a")),
        entry(PathMatch::prefix("/")),
    ]);
    let first = |uri: &str| {
        let req = http::Request::get(uri).body(()).unwrap();
        position(&routes, routes.first_match(&req))
    };
    assert_eq!(first("/a/b"), Some(0));
    assert_eq!(first("/a/b/"), Some(1));
    assert_eq!(first("/a/b/c?x=1"), Some(1));
    assert_eq!(
        first("/a/bc"),
        Some(3),
        "`/a/b` is not a segment prefix of `/a/bc`"
    );
    assert_eq!(first("/abc"), Some(4));
    assert_eq!(first("/ab/"), Some(2));
    assert_eq!(
        first("/ab"),
        Some(2),
        "a prefix matches the path equal to it"
    );
    assert_eq!(first("/a"), Some(3));
    assert_eq!(first("//a"), Some(4));
    assert_eq!(first(&format!("/a{}", "/".repeat(5000))), Some(3));
}

/// Manifests with `routes` HTTPRoutes on one Service and on a Gateway listener, each route with
/// random hostnames, creation time, name and matches, so that ties are broken by age, name and
/// rule order as compiled.
fn route_manifests(rng: &mut Rng, routes: usize) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: default}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: echo-1, namespace: default, labels: {kubernetes.io/service-name: echo}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [\"127.0.0.1\"]}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: waypoint\n  listeners: [{name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}]\nstatus:\n  addresses: [{type: IPAddress, value: \"10.0.0.1\"}]\n",
    );
    let hosts = [
        "a.example.com",
        "b.a.example.com",
        "*.a.example.com",
        "*.example.com",
        "*.b.example.com",
    ];
    let quoted = |s: &str| format!("{s:?}");
    for r in 0..routes {
        let hostnames: Vec<String> = (0..rng.usize(0..=2))
            .map(|_| quoted(hosts[rng.usize(..hosts.len())]))
            .collect();
        let created = format!("2026-01-0{}T00:00:00Z", rng.u8(1..=3));
        out.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {}{r}, namespace: default, creationTimestamp: \"{created}\"}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo, port: 80}}, {{name: gw}}]\n  hostnames: [{}]\n  rules:\n",
            ["b", "a", "c"][rng.usize(..3)],
            hostnames.join(", ")
        ));
        for _ in 0..rng.usize(1..=4) {
            out.push_str("  - backendRefs: [{name: echo, port: 80}]\n    matches:\n");
            for _ in 0..rng.usize(1..=3) {
                let (kind, value) = match rng.u8(..10) {
                    0..=2 => ("Exact", valid_path(rng)),
                    3..=8 => ("PathPrefix", valid_path(rng)),
                    _ => ("RegularExpression", "/(a|b).*".to_owned()),
                };
                out.push_str(&format!(
                    "    - path: {{type: {kind}, value: {}}}\n",
                    quoted(&value)
                ));
                if rng.u8(..3) == 0 {
                    out.push_str("      method: GET\n");
                }
                if rng.u8(..3) == 0 {
                    out.push_str("      headers: [{name: x-a, value: \"1\"}]\n");
                }
                if rng.u8(..4) == 0 {
                    out.push_str("      queryParams: [{name: q, value: \"2\"}]\n");
                }
            }
        }
    }
    out
}

#[test]
fn compiled_route_tables_choose_the_rule_the_scan_chooses() {
    let mut compared = 0;
    for seed in 0..40u64 {
        let mut rng = Rng::with_seed(seed);
        let routes = rng.usize(1..12);
        let text = route_manifests(&mut rng, routes);
        let config = waypoint_core::config::parse_manifests(&text, "generated.yaml").unwrap();
        let registry = ExtensionRegistry::new();
        let mut cx = BuildContext::new(&config, &registry);
        let table = super::compile::compile(&mut cx);
        let out = cx.finish();
        assert!(
            out.reports.is_empty(),
            "seed {seed}: {:?}\n{text}",
            out.reports
        );
        let refused: Vec<_> = (out.route_parents.iter())
            .filter(|p| !p.conditions.iter().all(|c| c.status))
            .collect();
        assert!(refused.is_empty(), "seed {seed}: {refused:?}\n{text}");

        assert_eq!(
            config.resources.http_routes.len(),
            routes,
            "{:?}",
            config.statuses
        );
        let service =
            &table.by_destination[&"10.96.0.10:80".parse::<SocketAddr>().unwrap()].producer;
        let listener = &table.gateways[&"10.0.0.1:80".parse::<SocketAddr>().unwrap()].listeners[0];
        let hosts = [
            "a.example.com",
            "b.a.example.com",
            "c.a.example.com",
            "x.example.com",
        ];
        let mut sets: Vec<&RouteSet> = vec![service];
        sets.extend(hosts.iter().filter_map(|h| listener.hosts.find(h)));
        for set in sets {
            for _ in 0..100 {
                let req = request(&mut rng);
                let scan = set.http.scan(&req).map(|e| e.rule.route.clone());
                let index = set.http.first_match(&req).map(|e| e.rule.route.clone());
                assert_eq!(index, scan, "seed {seed}: {}\n{text}", req.uri());
                compared += usize::from(scan.is_some());
            }
        }
    }
    assert!(compared > 2_000, "{compared}");
}

#[test]
fn hostnames_resolve_to_the_most_specific_pattern_like_the_scan() {
    let labels = ["a", "b", "ab", "c"];
    let name = |rng: &mut Rng, n: usize| -> String {
        (0..n)
            .map(|_| labels[rng.usize(..labels.len())])
            .collect::<Vec<_>>()
            .join(".")
    };
    for seed in 0..200u64 {
        let mut rng = Rng::with_seed(seed);
        let mut patterns = Vec::new();
        for _ in 0..rng.usize(0..30) {
            let count = rng.usize(1..=3);
            let host = name(&mut rng, count);
            // A wildcard without its `.` is invalid Gateway API but parses: keep it covered.
            let pattern = match rng.u8(..6) {
                0 => format!("*{host}"),
                1..=3 => format!("*.{host}"),
                _ => host,
            };
            patterns.push(HostPattern::parse(Some(&pattern)));
        }
        if rng.bool() {
            patterns.push(HostPattern::Any);
        }
        patterns.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        patterns.dedup();
        let mut routes: HostRoutes<HostPattern> = HostRoutes::default();
        for p in &patterns {
            routes.insert(p.clone(), p.clone());
        }
        for _ in 0..200 {
            let count = rng.usize(1..=4);
            let host = name(&mut rng, count);
            // The scan: exact, else the longest matching wildcard, else any.
            let want = patterns
                .iter()
                .filter(|p| p.matches(&host))
                .min_by_key(|p| p.specificity());
            assert_eq!(routes.find(&host), want, "seed {seed}: {host} {patterns:?}");
        }
    }
}
