//! `CORS`: the waypoint answers preflight requests itself and adds the CORS headers to the
//! responses of allowed origins. Origin patterns and header values are compiled when the
//! config is built; a request only compares strings and copies ready-made headers.

use async_trait::async_trait;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use waypoint_core::body;
use waypoint_core::config::resources::{Cors as CorsSpec, CorsMethod};
use waypoint_core::filter::{Decision, Filter, Request, RequestContext, Response};

/// An `allowOrigins` entry: scheme, host (exact, `*.suffix` or `*`) and port (the scheme's
/// default when absent).
#[derive(Debug, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.bar.com`: any host ending in `.bar.com`, with any number of labels before it.
    Suffix(String),
    /// `*`: any host.
    Any,
}

/// An origin split into scheme, host and port (lower-cased; the port defaulted by scheme).
fn split_origin(origin: &str) -> Option<(String, &str, Option<u16>)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        (&rest[..=end], rest[end + 1..].strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => default,
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
        return None;
    }
    Some((scheme, host, port))
}

impl OriginPattern {
    fn parse(value: &str) -> Option<Self> {
        let (scheme, host, port) = split_origin(value)?;
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix('*') {
            Some("") => HostPattern::Any,
            Some(suffix) if !suffix.contains('*') => HostPattern::Suffix(suffix.to_owned()),
            Some(_) => return None,
            None if host.contains('*') => return None,
            None => HostPattern::Exact(host),
        };
        Some(OriginPattern { scheme, host, port })
    }

    fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.scheme == scheme
            && self.port == port
            && match &self.host {
                HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
                HostPattern::Suffix(s) => {
                    host.len() > s.len()
                        && host.is_char_boundary(host.len() - s.len())
                        && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                }
                HostPattern::Any => true,
            }
    }
}

/// What `allowMethods` / `allowHeaders` / `exposeHeaders` answer.
#[derive(Debug, PartialEq, Eq)]
enum Listed {
    /// Nothing configured: the header is not sent.
    Nothing,
    /// `*`: echo what the request asked for (always valid, with or without credentials).
    Any,
    /// The configured names, joined with `, `.
    These(HeaderValue),
}

/// A compiled `CORS` filter.
#[derive(Debug)]
pub struct Cors {
    /// `None` means `*`.
    origins: Option<Vec<OriginPattern>>,
    credentials: bool,
    methods: Listed,
    headers: Listed,
    expose: Listed,
    max_age: HeaderValue,
}

/// The verdict on a request's `Origin`, kept for the response phase: the value to echo in
/// `Access-Control-Allow-Origin`, or `None` when the origin is not allowed.
#[derive(Clone, Debug)]
struct CorsVerdict(Option<HeaderValue>);

fn joined<'a>(at: &str, names: impl Iterator<Item = &'a str>) -> Result<HeaderValue, String> {
    let list: Vec<&str> = names.collect();
    HeaderValue::try_from(list.join(", ")).map_err(|_| format!("{at}: invalid value"))
}

/// `*` alone, a list of header names, or nothing.
fn header_list(at: &str, names: &[String]) -> Result<Listed, String> {
    if names.iter().any(|n| n == "*") {
        if names.len() > 1 {
            return Err(format!("{at}: `*` cannot be listed with other names"));
        }
        return Ok(Listed::Any);
    }
    if names.is_empty() {
        return Ok(Listed::Nothing);
    }
    for (i, name) in names.iter().enumerate() {
        HeaderName::try_from(name.as_str())
            .map_err(|_| format!("{at}[{i}]: `{name}` is not a valid header name"))?;
    }
    Ok(Listed::These(joined(at, names.iter().map(String::as_str))?))
}

impl Cors {
    /// Compiles `spec`; `at` is its field path (`spec.rules[0].filters[0].cors`), for errors.
    pub fn compile(spec: &CorsSpec, at: &str) -> Result<Self, String> {
        let origins = if spec.allow_origins.iter().any(|o| o == "*") {
            if spec.allow_origins.len() > 1 {
                return Err(format!(
                    "{at}.allowOrigins: `*` cannot be listed with other origins"
                ));
            }
            None
        } else {
            let parsed = spec.allow_origins.iter().enumerate().map(|(i, o)| {
                OriginPattern::parse(o).ok_or_else(|| {
                    format!(
                        "{at}.allowOrigins[{i}]: `{o}` is not an origin (`http(s)://host[:port]`, host may start with `*`)"
                    )
                })
            });
            Some(parsed.collect::<Result<_, _>>()?)
        };
        let methods = if spec.allow_methods.contains(&CorsMethod::Any) {
            if spec.allow_methods.len() > 1 {
                return Err(format!(
                    "{at}.allowMethods: `*` cannot be listed with other methods"
                ));
            }
            Listed::Any
        } else if spec.allow_methods.is_empty() {
            Listed::Nothing
        } else {
            let names = spec.allow_methods.iter().filter_map(|m| match m {
                CorsMethod::Method(m) => Some(m.as_str()),
                CorsMethod::Any => None,
            });
            Listed::These(joined(&format!("{at}.allowMethods"), names)?)
        };
        Ok(Cors {
            origins,
            credentials: spec.allow_credentials,
            methods,
            headers: header_list(&format!("{at}.allowHeaders"), &spec.allow_headers)?,
            expose: header_list(&format!("{at}.exposeHeaders"), &spec.expose_headers)?,
            max_age: HeaderValue::from(spec.max_age),
        })
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        let Some(patterns) = &self.origins else {
            return true;
        };
        let Some((scheme, host, port)) = origin.to_str().ok().and_then(split_origin) else {
            return false;
        };
        patterns.iter().any(|p| p.matches(&scheme, host, port))
    }

    /// The headers every allowed response gets: origin (echoed, so never `*`, which
    /// credentials forbid), credentials.
    fn allow_origin(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn preflight(&self, req: &Request, origin: &HeaderValue) -> Response {
        let mut resp = http::Response::new(body::empty());
        *resp.status_mut() = StatusCode::OK;
        let headers = resp.headers_mut();
        headers.append(VARY, HeaderValue::from_static("origin"));
        if !self.allows(origin) {
            // Answered without CORS headers: the browser refuses the actual request.
            return resp;
        }
        self.allow_origin(origin, headers);
        let asked = |name| req.headers().get(name).cloned();
        let answer = |listed: &Listed, asked: Option<HeaderValue>| match listed {
            Listed::Nothing => None,
            Listed::Any => asked,
            Listed::These(v) => Some(v.clone()),
        };
        if let Some(v) = answer(&self.methods, asked(ACCESS_CONTROL_REQUEST_METHOD)) {
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if let Some(v) = answer(&self.headers, asked(ACCESS_CONTROL_REQUEST_HEADERS)) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Listed::These(v) = &self.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        } else if self.expose == Listed::Any && !self.credentials {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*"));
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        resp
    }
}

#[async_trait]
impl Filter for Cors {
    fn name(&self) -> &str {
        "CORS"
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let Some(origin) = req.headers().get(ORIGIN) else {
            return Decision::Continue;
        };
        if req.method() == Method::OPTIONS
            && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Decision::Respond(self.preflight(req, origin));
        }
        let verdict = self.allows(origin).then(|| origin.clone());
        ctx.extensions.insert(CorsVerdict(verdict));
        Decision::Continue
    }

    async fn on_response(&self, resp: &mut Response, ctx: &mut RequestContext) {
        let Some(CorsVerdict(verdict)) = ctx.extensions.remove::<CorsVerdict>() else {
            return;
        };
        let headers = resp.headers_mut();
        headers.append(VARY, HeaderValue::from_static("origin"));
        let Some(origin) = verdict else {
            return;
        };
        self.allow_origin(&origin, headers);
        match &self.expose {
            Listed::These(v) => {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
            Listed::Any if !self.credentials => {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*"));
            }
            // With credentials `*` means the literal name: list this response's headers.
            Listed::Any => {
                let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
                if let Ok(v) = HeaderValue::try_from(names.join(", ")) {
                    headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
                }
            }
            Listed::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[&str], origin: &str) -> bool {
        let spec = CorsSpec {
            allow_origins: patterns.iter().map(|p| p.to_string()).collect(),
            allow_credentials: false,
            allow_methods: vec![],
            allow_headers: vec![],
            expose_headers: vec![],
            max_age: 5,
        };
        Cors::compile(&spec, "cors")
            .unwrap()
            .allows(&HeaderValue::from_str(origin).unwrap())
    }

    #[test]
    fn origin_patterns() {
        let list = ["https://www.foo.com", "https://*.bar.com"];
        assert!(allows(&list, "https://www.foo.com"));
        assert!(
            allows(&list, "https://www.foo.com:443"),
            "443 is https's default"
        );
        assert!(allows(&list, "HTTPS://WWW.FOO.COM"));
        assert!(!allows(&list, "http://www.foo.com"), "the scheme counts");
        assert!(
            !allows(&list, "https://www.foo.com:8443"),
            "the port counts"
        );
        assert!(allows(&list, "https://www.bar.com"));
        assert!(
            allows(&list, "https://xpto.www.bar.com"),
            "`*` spans labels"
        );
        assert!(!allows(&list, "https://bar.com"));
        assert!(!allows(&list, "https://foobar.com"));
        assert!(!allows(&list, "https://evilbar.com"));
        assert!(!allows(&list, "null"));
        assert!(allows(&["http://localhost:3000"], "http://localhost:3000"));
        assert!(!allows(&["http://localhost:3000"], "http://localhost"));
        assert!(allows(&["https://*"], "https://anything.example:443"));
        assert!(allows(&["*"], "https://foobar.com:12345"));
        assert!(allows(&["*"], "null"));
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let spec = |origins: &[&str], headers: &[&str]| CorsSpec {
            allow_origins: origins.iter().map(|p| p.to_string()).collect(),
            allow_credentials: false,
            allow_methods: vec![],
            allow_headers: headers.iter().map(|p| p.to_string()).collect(),
            expose_headers: vec![],
            max_age: 5,
        };
        let err = |s: CorsSpec| Cors::compile(&s, "f.cors").unwrap_err();
        let e = err(spec(&["https://a.example", "ftp://b"], &[]));
        assert!(e.starts_with("f.cors.allowOrigins[1]: "), "{e}");
        assert!(err(spec(&["https://a.*.example"], &[])).contains("allowOrigins[0]"));
        assert!(err(spec(&["https://a.example/path"], &[])).contains("allowOrigins[0]"));
        assert!(err(spec(&["*", "https://a.example"], &[])).starts_with("f.cors.allowOrigins:"));
        let e = err(spec(&["*"], &["x-ok", "bad name"]));
        assert!(e.starts_with("f.cors.allowHeaders[1]: "), "{e}");
        assert!(err(spec(&["*"], &["*", "x-a"])).starts_with("f.cors.allowHeaders:"));
    }
}
