//! What a request hashes on under DestinationRule `consistentHash`: one header, one cookie,
//! one query parameter, or the downstream client's IP, as Envoy's route hash policies read
//! them. A request without its key has no hash and gets the default choice instead (least
//! request), except a cookie key with a `ttl`: then, as in Envoy, a value is generated, hashed
//! on, and set on the response (`Set-Cookie`), so the client's next requests carry it.
//!
//! Envoy derives the generated value from the downstream address; at a waypoint that address
//! is often the client's ztunnel, shared by every workload on its node, which would send all
//! their new sessions to one endpoint. We draw it at random instead: new sessions spread, and
//! each sticks from its second request on (the first is hashed on the same value).

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use http::header::{COOKIE, HeaderMap, HeaderName, HeaderValue};

use super::hash::hash64;

/// The source of a request's hash key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HashKey {
    /// `httpHeaderName`: the header's values (all of them, in order).
    Header(HeaderName),
    /// `httpCookie`.
    Cookie(CookieKey),
    /// `useSourceIp`: the downstream client's IP (the PROXY source in sandwich mode, the HBONE
    /// client's `forwarded` address otherwise: `ConnInfo::source`).
    SourceIp,
    /// `httpQueryParameterName`: the first value of the parameter, as sent (not decoded).
    QueryParameter(String),
}

/// `httpCookie`: the cookie to hash on, and the one to generate when it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CookieKey {
    /// The cookie's name.
    pub name: String,
    /// `Path` of a generated cookie (none when empty).
    pub path: String,
    /// Generate the cookie when missing; `Some(ZERO)` makes it a session cookie (no `Max-Age`).
    pub ttl: Option<Duration>,
    /// Extra attributes of a generated cookie (`SameSite=Lax`, `Secure`: name, value).
    pub attributes: Vec<(String, String)>,
}

/// What a request is read through: its head where it has one (a byte stream has none), and
/// the client's address.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestKeys<'a> {
    /// The request headers.
    pub headers: Option<&'a HeaderMap>,
    /// The request target.
    pub uri: Option<&'a Uri>,
    /// The downstream client's address.
    pub source: Option<SocketAddr>,
}

/// A request's hash, and the `Set-Cookie` value its response must carry when the hash came
/// from a generated cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestHash {
    /// The 64-bit hash the table maps to an endpoint.
    pub hash: u64,
    /// `Set-Cookie` for the response, when the cookie was generated.
    pub set_cookie: Option<HeaderValue>,
}

impl HashKey {
    /// The hash of the request's key, `None` when the request lacks it (and no cookie is to be
    /// generated).
    pub(crate) fn evaluate(&self, req: RequestKeys<'_>) -> Option<RequestHash> {
        let plain = |bytes: &[u8]| {
            Some(RequestHash {
                hash: hash64(bytes, 0),
                set_cookie: None,
            })
        };
        match self {
            HashKey::Header(name) => {
                let headers = req.headers?;
                let mut values = headers.get_all(name).iter().peekable();
                values.peek()?;
                // Several lines of one header hash as one value, joined as HTTP would fold them.
                let joined: Vec<&[u8]> = values.map(HeaderValue::as_bytes).collect();
                plain(&joined.join(&b","[..]))
            }
            HashKey::SourceIp => plain(req.source?.ip().to_string().as_bytes()),
            HashKey::QueryParameter(name) => {
                let query = req.uri?.query()?;
                let value = query
                    .split('&')
                    .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                    .find(|(k, _)| k == name)?
                    .1;
                plain(value.as_bytes())
            }
            HashKey::Cookie(cookie) => {
                if let Some(value) = req.headers.and_then(|h| cookie_value(h, &cookie.name)) {
                    return plain(value.as_bytes());
                }
                let ttl = cookie.ttl?;
                let value = format!("{:016x}", fastrand::u64(..));
                Some(RequestHash {
                    hash: hash64(value.as_bytes(), 0),
                    set_cookie: set_cookie(cookie, &value, ttl),
                })
            }
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (surrounding quotes removed,
/// as Envoy does), the first if sent twice.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// `name=value; Max-Age=N; Path=p; HttpOnly` plus the configured attributes, as Envoy writes
/// it (no `Max-Age` for a zero ttl: a session cookie). `None` only if a configured piece is
/// not a valid header value, which validation prevents.
fn set_cookie(cookie: &CookieKey, value: &str, ttl: Duration) -> Option<HeaderValue> {
    let mut text = format!("{}={value}", cookie.name);
    if !ttl.is_zero() {
        // Max-Age counts whole seconds; a sub-second ttl still lives one second.
        text.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
    }
    if !cookie.path.is_empty() {
        text.push_str(&format!("; Path={}", cookie.path));
    }
    text.push_str("; HttpOnly");
    for (name, value) in &cookie.attributes {
        match value.is_empty() {
            true => text.push_str(&format!("; {name}")),
            false => text.push_str(&format!("; {name}={value}")),
        }
    }
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn hash_of(key: &HashKey, h: &HeaderMap, uri: &str, source: Option<&str>) -> Option<u64> {
        let uri: Uri = uri.parse().unwrap();
        let req = RequestKeys {
            headers: Some(h),
            uri: Some(&uri),
            source: source.map(|s| s.parse().unwrap()),
        };
        key.evaluate(req).map(|r| {
            assert!(r.set_cookie.is_none());
            r.hash
        })
    }

    #[test]
    fn a_header_key_hashes_its_value_and_is_absent_without_the_header() {
        let key = HashKey::Header(HeaderName::from_static("x-user"));
        let a = hash_of(&key, &headers(&[("x-user", "alice")]), "/", None);
        let a2 = hash_of(
            &key,
            &headers(&[("X-User", "alice"), ("x-o", "1")]),
            "/x",
            None,
        );
        let b = hash_of(&key, &headers(&[("x-user", "bob")]), "/", None);
        assert!(a.is_some());
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(
            hash_of(&key, &headers(&[("x-other", "a")]), "/", None),
            None
        );
        // Two lines of the header are one key, different from either alone.
        let both = hash_of(
            &key,
            &headers(&[("x-user", "a"), ("x-user", "b")]),
            "/",
            None,
        );
        assert!(both.is_some() && both != hash_of(&key, &headers(&[("x-user", "a")]), "/", None));
    }

    #[test]
    fn a_query_parameter_key_hashes_the_first_value_of_that_parameter() {
        let key = HashKey::QueryParameter("user".into());
        let h = HeaderMap::new();
        let a = hash_of(&key, &h, "/p?x=1&user=alice&user=bob", None);
        assert!(a.is_some());
        assert_eq!(a, hash_of(&key, &h, "/other?user=alice", None));
        assert_ne!(a, hash_of(&key, &h, "/p?user=bob", None));
        assert_eq!(hash_of(&key, &h, "/p?username=alice", None), None);
        assert_eq!(hash_of(&key, &h, "/p", None), None);
        // Present without a value is still a key (the empty one).
        assert!(hash_of(&key, &h, "/p?user", None).is_some());
    }

    #[test]
    fn a_source_ip_key_hashes_the_client_ip_but_not_its_port() {
        let key = HashKey::SourceIp;
        let h = HeaderMap::new();
        let a = hash_of(&key, &h, "/", Some("10.0.0.7:40000"));
        assert!(a.is_some());
        assert_eq!(a, hash_of(&key, &h, "/", Some("10.0.0.7:40001")));
        assert_ne!(a, hash_of(&key, &h, "/", Some("10.0.0.8:40000")));
        assert_eq!(hash_of(&key, &h, "/", None), None);
    }

    fn cookie_key(ttl: Option<Duration>) -> HashKey {
        HashKey::Cookie(CookieKey {
            name: "session".into(),
            path: "/app".into(),
            ttl,
            attributes: vec![
                ("SameSite".into(), "Lax".into()),
                ("Secure".into(), String::new()),
            ],
        })
    }

    #[test]
    fn a_cookie_key_hashes_the_cookie_sent_quoted_or_not() {
        let key = cookie_key(Some(Duration::from_secs(60)));
        let a = hash_of(&key, &headers(&[("cookie", "x=1; session=abc")]), "/", None);
        assert!(a.is_some());
        assert_eq!(
            a,
            hash_of(&key, &headers(&[("cookie", "session=\"abc\"")]), "/", None)
        );
        assert_ne!(
            a,
            hash_of(&key, &headers(&[("cookie", "session=abd")]), "/", None)
        );
    }

    #[test]
    fn a_missing_cookie_without_ttl_gives_no_hash() {
        let key = cookie_key(None);
        let h = headers(&[("cookie", "other=1")]);
        assert_eq!(hash_of(&key, &h, "/", None), None);
    }

    #[test]
    fn a_missing_cookie_with_ttl_is_generated_hashed_on_and_set_with_path_and_max_age() {
        let key = cookie_key(Some(Duration::from_secs(3600)));
        let h = HeaderMap::new();
        let r = key
            .evaluate(RequestKeys {
                headers: Some(&h),
                ..Default::default()
            })
            .unwrap();
        let set = r.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        let value = set
            .strip_prefix("session=")
            .and_then(|s| s.split(';').next())
            .unwrap();
        assert_eq!(
            set,
            format!("session={value}; Max-Age=3600; Path=/app; HttpOnly; SameSite=Lax; Secure")
        );
        // Sending it back hashes the same: the next request sticks with the first.
        let back = headers(&[("cookie", &format!("session={value}"))]);
        assert_eq!(hash_of(&key, &back, "/", None), Some(r.hash));
    }

    #[test]
    fn a_zero_ttl_generates_a_session_cookie() {
        let key = HashKey::Cookie(CookieKey {
            name: "s".into(),
            path: String::new(),
            ttl: Some(Duration::ZERO),
            attributes: vec![],
        });
        let r = key.evaluate(RequestKeys::default()).unwrap();
        let set = r.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        assert!(
            set.starts_with("s=") && set.ends_with("; HttpOnly"),
            "{set}"
        );
        assert!(!set.contains("Max-Age") && !set.contains("Path"), "{set}");
    }
}
