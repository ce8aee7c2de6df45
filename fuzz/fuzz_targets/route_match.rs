//! Gateway API matching: regular expressions (path, header, query values), `PathPrefix`, and
//! listener/route hostnames with their intersection.
//!
//! Properties, each against a simple reference written here:
//! - a user regex is accepted only if it is a valid expression on its own, and a literal
//!   (escaped) pattern matches exactly its own text: the match is a full match, never a search;
//! - `PathPrefix` matches at segment boundaries only;
//! - a Gateway API hostname (`*.example.com`, `example.com`, none) accepts a request's `Host`
//!   exactly when a label-by-label reference does, after the router took the port, case and
//!   trailing dot off (any other string must merely not panic);
//! - the intersection of a route and a listener hostname accepts exactly the hosts both accept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypoint_filters::fuzzing::{hostname_accepts, hostname_intersection_accepts, request_host_of};
use waypoint_filters::route::{PathMatch, ValuePattern, full_match_regex};

/// The input, one field a line: regex pattern, value (also the path), path prefix, route
/// hostname, listener hostname, `Host` header. An empty hostname line means "no hostname".
struct Input<'a> {
    pattern: &'a str,
    value: &'a str,
    prefix: &'a str,
    route_host: Option<&'a str>,
    listener_host: Option<&'a str>,
    host_header: &'a str,
}

impl<'a> Input<'a> {
    fn parse(text: &'a str) -> Self {
        let mut lines = text.split('\n');
        let mut next = || lines.next().unwrap_or_default();
        let some = |s: &'a str| (!s.is_empty()).then_some(s);
        Input {
            pattern: next(),
            value: next(),
            prefix: next(),
            route_host: some(next()),
            listener_host: some(next()),
            host_header: next(),
        }
    }
}

/// The labels of a Gateway API hostname (`*.a.b` or `a.b`, lowercase letters, digits and `-`),
/// with whether it is a wildcard; `None` for anything else.
fn pattern_labels(hostname: &str) -> Option<(bool, Vec<&str>)> {
    let (wildcard, rest) = match hostname.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, hostname),
    };
    let labels: Vec<&str> = rest.split('.').collect();
    let valid = labels.iter().all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    valid.then_some((wildcard, labels))
}

/// `Some(None)` for no hostname, `Some(Some(labels))` for a valid one, `None` for an invalid one.
fn gateway_hostname(hostname: Option<&str>) -> Option<Option<(bool, Vec<&str>)>> {
    match hostname {
        None => Some(None),
        Some(h) => pattern_labels(h).map(Some),
    }
}

/// The lowercased labels of a `Host` header `name[.][:port]`, for names of letters, digits,
/// `-` and `.`; `None` for anything else.
fn host_labels(header: &str) -> Option<Vec<String>> {
    let name = match header.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => header,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Some(Vec::new());
    }
    let labels: Vec<String> = name.split('.').map(str::to_ascii_lowercase).collect();
    let valid = labels.iter().all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    valid.then_some(labels)
}

/// Reference hostname match, label by label: a wildcard needs at least one more label in front
/// of its suffix; an exact name equals the host; no hostname accepts every host.
fn reference_accepts(pattern: Option<&(bool, Vec<&str>)>, host: &[String]) -> bool {
    let Some((wildcard, want)) = pattern else {
        return true;
    };
    if *wildcard {
        host.len() > want.len() && host[host.len() - want.len()..] == want[..]
    } else {
        host == &want[..]
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let input = Input::parse(text);
    check_regex(input.pattern, input.value);
    check_prefix(input.prefix, input.value);
    check_hosts(&input);
});

fn check_regex(pattern: &str, value: &str) {
    if let Ok(re) = full_match_regex(pattern) {
        assert!(
            regex::Regex::new(pattern).is_ok(),
            "{pattern:?} is not a valid expression on its own, yet was accepted"
        );
        let _ = ValuePattern::Regex(re.clone()).matches(value.as_bytes());
        let _ = PathMatch::Regex(re).matches(value);
    }
    let literal = regex::escape(value);
    if let Ok(re) = full_match_regex(&literal) {
        assert!(re.is_match(value), "{literal:?} does not match {value:?}");
        assert!(!re.is_match(&format!("{value}x")), "{literal:?} searched");
        assert!(!re.is_match(&format!("x{value}")), "{literal:?} searched");
    }
}

fn check_prefix(prefix: &str, path: &str) {
    let rule = PathMatch::prefix(prefix);
    let trimmed = prefix.trim_end_matches('/');
    let want = path == trimmed || path.starts_with(&format!("{trimmed}/"));
    assert_eq!(rule.matches(path), want, "prefix {prefix:?} on {path:?}");
}

fn check_hosts(input: &Input<'_>) {
    let Ok(req) = http::Request::get("/")
        .header("host", input.host_header)
        .body(())
    else {
        return;
    };
    let seen = request_host_of(&req);
    for hostname in [input.route_host, input.listener_host] {
        // Whatever the strings, matching never panics.
        let _ = hostname_accepts(hostname, &req);
    }
    let Some(labels) = host_labels(input.host_header) else {
        return;
    };
    assert_eq!(
        seen,
        labels.join("."),
        "router read {:?} as {seen:?}",
        input.host_header
    );
    // A hostname that is not a Gateway API hostname is refused by validation before matching.
    let (Some(route_p), Some(listener_p)) = (
        gateway_hostname(input.route_host),
        gateway_hostname(input.listener_host),
    ) else {
        return;
    };
    let (route_p, listener_p) = (route_p.as_ref(), listener_p.as_ref());
    let route_ok = reference_accepts(route_p, &labels);
    let listener_ok = reference_accepts(listener_p, &labels);
    assert_eq!(
        hostname_accepts(input.route_host, &req),
        route_ok,
        "{:?} on {seen:?}",
        input.route_host
    );
    assert_eq!(
        hostname_accepts(input.listener_host, &req),
        listener_ok,
        "{:?} on {seen:?}",
        input.listener_host
    );
    let both = route_ok && listener_ok;
    match hostname_intersection_accepts(input.route_host, input.listener_host, &seen) {
        Some(accepts) => assert_eq!(
            accepts, both,
            "intersection of {:?} and {:?} on {seen:?}",
            input.route_host, input.listener_host
        ),
        None => assert!(
            !both,
            "{:?} and {:?} said disjoint, yet both accept {seen:?}",
            input.route_host, input.listener_host
        ),
    }
}
