//! `RequestHeaderModifier` and `ResponseHeaderModifier`: set replaces every value, add appends,
//! remove drops (names are case-insensitive). Names and values are validated when the config is
//! built, so the request path only inserts ready-made headers.

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};
use waypoint_core::config::resources::HeaderModifier;
use waypoint_core::filter::{Decision, Filter, Request, RequestContext, Response};

/// A compiled header modification.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Compiles `modifier`; an invalid header name or value is an error naming it.
    pub fn compile(modifier: &HeaderModifier) -> Result<Self, String> {
        let pair = |h: &waypoint_core::config::resources::HttpHeader| {
            let name = HeaderName::try_from(h.name.as_str())
                .map_err(|_| format!("invalid header name {:?}", h.name))?;
            let value = HeaderValue::try_from(h.value.as_str())
                .map_err(|_| format!("invalid value for header {:?}", h.name))?;
            Ok::<_, String>((name, value))
        };
        Ok(HeaderEdits {
            set: modifier.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: modifier.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: modifier
                .remove
                .iter()
                .map(|n| {
                    HeaderName::try_from(n.as_str())
                        .map_err(|_| format!("invalid header name {n:?}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies the edits: set, then add, then remove, as the Gateway API orders them.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// Edits request headers on the way in.
#[derive(Debug)]
pub struct RequestHeaders(pub HeaderEdits);

#[async_trait]
impl Filter for RequestHeaders {
    fn name(&self) -> &str {
        "RequestHeaderModifier"
    }
    async fn on_request(&self, req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        self.0.apply(req.headers_mut());
        Decision::Continue
    }
}

/// Edits response headers on the way out.
#[derive(Debug)]
pub struct ResponseHeaders(pub HeaderEdits);

#[async_trait]
impl Filter for ResponseHeaders {
    fn name(&self) -> &str {
        "ResponseHeaderModifier"
    }
    async fn on_request(&self, _req: &mut Request, _ctx: &mut RequestContext) -> Decision {
        Decision::Continue
    }
    async fn on_response(&self, resp: &mut Response, _ctx: &mut RequestContext) {
        self.0.apply(resp.headers_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waypoint_core::config::resources::HttpHeader;

    fn header(name: &str, value: &str) -> HttpHeader {
        HttpHeader {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn set_add_remove() {
        let edits = HeaderEdits::compile(&HeaderModifier {
            set: vec![header("X-Set", "one")],
            add: vec![header("x-add", "two")],
            remove: vec!["X-Gone".into()],
        })
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-set", HeaderValue::from_static("a"));
        headers.append("x-set", HeaderValue::from_static("b"));
        headers.append("x-add", HeaderValue::from_static("one"));
        headers.append("x-gone", HeaderValue::from_static("z"));
        edits.apply(&mut headers);
        assert_eq!(headers.get_all("x-set").iter().collect::<Vec<_>>(), ["one"]);
        assert_eq!(
            headers.get_all("x-add").iter().collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(!headers.contains_key("x-gone"));
    }

    #[test]
    fn invalid_names_are_named() {
        let err = HeaderEdits::compile(&HeaderModifier {
            set: vec![header("bad name", "x")],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("bad name"), "{err}");
    }
}
