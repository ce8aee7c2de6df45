//! Judging one exchange as upstream's `CompareRoundTrip` does: the status must be one of the
//! expected; on 200/204 what the backend received (path, method, host, headers, namespace, pod)
//! and the response headers are checked; on a redirect, the Location's scheme, host, port and
//! path.

use serde_json::Value;

use crate::case::{Redirect, RequestCase};
use crate::client::Captured;

/// Upstream treats these as "timed out" interchangeably.
fn is_timeout(status: u16) -> bool {
    status == 504 || status == 408
}

/// The expected statuses: the case's, or `[200]`.
pub fn expected_statuses(case: &RequestCase) -> Vec<u16> {
    if case.response.status_codes.is_empty() {
        vec![200]
    } else {
        case.response.status_codes.clone()
    }
}

/// `Ok` when `got` meets `case`; otherwise why not.
pub fn judge(case: &RequestCase, sent_host: &str, got: &Captured) -> Result<(), String> {
    let status = got.status.as_u16();
    let statuses = expected_statuses(case);
    if is_timeout(status) && statuses.iter().any(|s| is_timeout(*s)) {
        return Ok(());
    }
    if !statuses.contains(&status) {
        return Err(format!(
            "expected status {statuses:?}, got {status} ({})",
            got.body.trim()
        ));
    }
    match status {
        200 | 204 => judge_backend(case, got),
        300..=399 => match &case.redirect {
            Some(redirect) => judge_redirect(case, redirect, sent_host, got),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn header_values(headers: &Value, name: &str) -> Option<String> {
    let map = headers.as_object()?;
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| {
            v.as_array()
                .map(|vals| {
                    vals.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        })
}

fn judge_backend(case: &RequestCase, got: &Captured) -> Result<(), String> {
    let response_values = |name: &str| {
        let all: Vec<_> = got
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (!all.is_empty()).then(|| all.join(","))
    };
    let squash = |v: &str| {
        if case.response.ignore_whitespace {
            v.replace(' ', "")
        } else {
            v.to_owned()
        }
    };
    for (name, want) in &case.response.headers {
        match response_values(name) {
            Some(have) if squash(&have) == squash(want) => {}
            Some(have) => {
                return Err(format!(
                    "response header {name}: expected {want:?}, got {have:?}"
                ));
            }
            None => {
                return Err(format!(
                    "response header {name} missing (expected {want:?})"
                ));
            }
        }
    }
    for (name, valid) in &case.response.valid_header_values {
        match response_values(name) {
            Some(have) if valid.iter().any(|v| squash(v) == squash(&have)) => {}
            Some(have) => {
                return Err(format!(
                    "response header {name}: {have:?} is none of {valid:?}"
                ));
            }
            None => {
                return Err(format!(
                    "response header {name} missing (expected one of {valid:?})"
                ));
            }
        }
    }
    for name in &case.response.absent_headers {
        if let Some(have) = response_values(name) {
            return Err(format!(
                "response header {name} must be absent, got {have:?}"
            ));
        }
    }
    let expected = case.expected_request.clone().unwrap_or_default();
    // A 200/204 the waypoint answered itself (a CORS preflight) has no echo.
    let answered_locally = expected.path.as_deref() == Some("");
    let echo = match (&got.echo, answered_locally) {
        (None, true) => return Ok(()),
        (Some(_), true) => {
            return Err("the request reached a backend; the waypoint must answer it".into());
        }
        (None, false) => {
            return Err(format!(
                "expected an echo backend's answer, got {:?}",
                got.body
            ));
        }
        (Some(echo), false) => echo,
    };
    let field = |name: &str| echo[name].as_str().unwrap_or_default().to_owned();
    let want_path = expected
        .path
        .clone()
        .unwrap_or_else(|| case.request.path.clone());
    if field("path") != want_path {
        return Err(format!(
            "backend saw path {:?}, expected {want_path:?}",
            field("path")
        ));
    }
    let want_method = expected
        .method
        .clone()
        .or_else(|| case.request.method.clone())
        .unwrap_or_else(|| "GET".into());
    if field("method") != want_method {
        return Err(format!(
            "backend saw method {}, expected {want_method}",
            field("method")
        ));
    }
    // The backend must see the Host that was sent: an explicit Host header, else `host`.
    let sent_host_header = case
        .request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    let want_host = expected.host.clone().or_else(|| {
        case.expected_request
            .is_none()
            .then(|| sent_host_header.or_else(|| case.request.host.clone()))
            .flatten()
    });
    if let Some(host) = want_host
        && field("host") != host
    {
        return Err(format!(
            "backend saw host {:?}, expected {host:?}",
            field("host")
        ));
    }
    if let Some(ns) = &case.namespace
        && &field("namespace") != ns
    {
        return Err(format!(
            "served from namespace {:?}, expected {ns:?}",
            field("namespace")
        ));
    }
    let want_headers = if case.expected_request.is_some() {
        &expected.headers
    } else {
        &case.request.headers
    };
    // The echo server reports Host as `host`, not among the headers.
    let want_headers = want_headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"));
    for (name, want) in want_headers {
        match header_values(&echo["headers"], name) {
            Some(have) if &have == want => {}
            Some(have) => return Err(format!("backend saw {name}: {have:?}, expected {want:?}")),
            None => {
                return Err(format!(
                    "backend did not see header {name} (expected {want:?})"
                ));
            }
        }
    }
    for name in &expected.absent_headers {
        if let Some(have) = header_values(&echo["headers"], name) {
            return Err(format!(
                "backend saw {name}: {have:?}, which must be absent"
            ));
        }
    }
    if let Some(name) = &expected.backend_header {
        let values: Vec<&str> = echo["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str())
            })
            .collect();
        match values.as_slice() {
            [one] if field("pod").starts_with(one) => {}
            [one] => {
                return Err(format!(
                    "backend saw {name}: {one:?} but pod {:?} served it",
                    field("pod")
                ));
            }
            other => {
                return Err(format!(
                    "backend saw {} {name} headers, expected 1",
                    other.len()
                ));
            }
        }
    }
    if let Some(backend) = &case.backend
        && !field("pod").starts_with(backend.as_str())
    {
        return Err(format!(
            "served by pod {:?}, expected {backend}-*",
            field("pod")
        ));
    }
    Ok(())
}

/// Splits a Location into (scheme, host, port, path-with-query); a relative Location keeps
/// the request's scheme and host.
fn parse_location(location: &str, sent_host: &str) -> (String, String, String, String) {
    let (scheme, rest) = match location.split_once("://") {
        Some((s, r)) => (s.to_owned(), r),
        None => ("http".to_owned(), ""),
    };
    if rest.is_empty() {
        let (host, port) = split_host_port(sent_host);
        return (scheme, host, port, location.to_owned());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = split_host_port(authority);
    (scheme, host, port, path.to_owned())
}

fn split_host_port(authority: &str) -> (String, String) {
    if let Some(end) = authority.strip_prefix('[').and_then(|a| a.find(']')) {
        let host = &authority[1..=end];
        let port = authority[end + 2..].trim_start_matches(':');
        return (host.to_owned(), port.to_owned());
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h.to_owned(), p.to_owned()),
        _ => (authority.to_owned(), String::new()),
    }
}

fn judge_redirect(
    case: &RequestCase,
    redirect: &Redirect,
    sent_host: &str,
    got: &Captured,
) -> Result<(), String> {
    let location = got
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("redirect without a Location header")?;
    let (scheme, host, port, path) = parse_location(location, sent_host);
    let want_scheme = redirect.scheme.clone().unwrap_or_else(|| "http".into());
    let want_host = redirect
        .host
        .clone()
        .unwrap_or_else(|| split_host_port(sent_host).0);
    let want_path = redirect
        .path
        .clone()
        .unwrap_or_else(|| case.request.path.clone());
    let path_only = path.split('?').next().unwrap_or_default().to_owned();
    let bad = |what: &str, want: &str, have: &str| {
        Err(format!(
            "Location {location:?}: {what} {have:?}, expected {want:?}"
        ))
    };
    if host != want_host {
        return bad("host", &want_host, &host);
    }
    match redirect.port.as_deref().unwrap_or_default() {
        "" => {
            let default = if scheme.eq_ignore_ascii_case("https") {
                "443"
            } else {
                "80"
            };
            if !port.is_empty() && port != default {
                return bad("port", default, &port);
            }
        }
        want if want != port => return bad("port", want, &port),
        _ => {}
    }
    if !scheme.eq_ignore_ascii_case(&want_scheme) {
        return bad("scheme", &want_scheme, &scheme);
    }
    if path != want_path && path_only != want_path {
        return bad("path", &want_path, &path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("https://example.org:8443/p?q=1", "x"),
            (
                "https".into(),
                "example.org".into(),
                "8443".into(),
                "/p?q=1".into()
            )
        );
        assert_eq!(
            parse_location("/other", "gw.example:80"),
            (
                "http".into(),
                "gw.example".into(),
                "80".into(),
                "/other".into()
            )
        );
        assert_eq!(split_host_port("[::1]:80"), ("::1".into(), "80".into()));
    }
}
