//! Istio RequestAuthentication at the waypoint: JWTs are found where the jwtRules say, checked
//! against the issuer's keys, and a valid one becomes the request principal (`<iss>/<sub>`) that
//! AuthorizationPolicy reads. A request without a token passes unauthenticated; a request with a
//! token that no applicable rule accepts is answered 401, as Envoy's `jwt_authn` answers it.
//!
//! Policies are compiled per snapshot into one immutable rule set per target (the waypoint
//! itself, and each Service address), so a request looks up one set and never pays for the
//! policies of other Services. Remote key sets live in a [`JwksCache`] that outlives snapshots.

mod compile;
pub mod jwks;
pub mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use waypoint_core::body::local_reply;
use waypoint_core::filter::{
    BuildContext, Decision, Filter, FilterFactory, Request, RequestContext,
};

pub use jwks::{JwksCache, JwksError, JwksSettings, KeySet, RemoteJwks};
pub use validate::JwtFailure;

use validate::{Jwt, Keys};

use crate::scope::WaypointScope;

/// The principal a valid token yields, as AuthorizationPolicy reads it.
pub use waypoint_core::filter::RequestPrincipal;

/// Builds the [`AuthnFilter`] of each config snapshot. Keep one factory (and so one
/// [`JwksCache`]) for the life of the process, so reloads reuse fetched key sets.
#[derive(Debug, Default)]
pub struct AuthnFactory {
    /// Which policies are this waypoint's (root namespace, Gateway, GatewayClass); shared with
    /// AuthorizationPolicy through [`crate::Builtins`].
    pub scope: WaypointScope,
    /// Remote key sets, shared by every snapshot built by this factory.
    pub jwks_fetcher: Arc<JwksCache>,
}

impl FilterFactory for AuthnFactory {
    fn name(&self) -> &str {
        "authn"
    }

    fn build(&self, cx: &mut BuildContext<'_>) -> Arc<dyn Filter> {
        Arc::new(compile::compile(cx, &self.scope, &self.jwks_fetcher))
    }
}

/// Validates JWTs per the RequestAuthentications of one snapshot.
#[derive(Debug, Default)]
pub struct AuthnFilter {
    /// Rules that target the waypoint (Gateway, GatewayClass): every request.
    waypoint: Option<Arc<RuleSet>>,
    /// Waypoint rules plus the rules targeting the Service at that address.
    by_destination: HashMap<SocketAddr, Arc<RuleSet>>,
}

/// Where a token may be found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    /// A header; the prefix (`Bearer `) is stripped, case-insensitively, and required.
    Header { name: HeaderName, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// One compiled jwtRule.
#[derive(Debug)]
struct Rule {
    issuer: String,
    audiences: Vec<String>,
    keys: Keys,
    fetch_timeout: Duration,
    locations: Vec<Location>,
    output_payload: Option<HeaderName>,
    forward_original_token: bool,
    output_claims: Vec<(HeaderName, String)>,
}

/// The rules that apply to one target, with their token locations merged.
#[derive(Debug, Default)]
struct RuleSet {
    rules: Vec<Arc<Rule>>,
    /// Each distinct location, with the indexes of the rules reading it.
    locations: Vec<(Location, Vec<usize>)>,
}

impl RuleSet {
    fn new(rules: Vec<Arc<Rule>>) -> RuleSet {
        let mut locations: Vec<(Location, Vec<usize>)> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for loc in &rule.locations {
                match locations.iter_mut().find(|(l, _)| l == loc) {
                    Some((_, users)) => users.push(i),
                    None => locations.push((loc.clone(), vec![i])),
                }
            }
        }
        RuleSet { rules, locations }
    }

    /// Every distinct token in the request, with the locations it was found at.
    fn extract(&self, req: &Request) -> Vec<(String, Vec<usize>)> {
        let mut found: Vec<(String, Vec<usize>)> = Vec::new();
        let mut add = |token: &str, loc: usize| {
            let token = token.trim();
            if token.is_empty() {
                return;
            }
            match found.iter_mut().find(|(t, _)| t == token) {
                Some((_, locs)) => locs.push(loc),
                None => found.push((token.to_owned(), vec![loc])),
            }
        };
        for (i, (loc, _)) in self.locations.iter().enumerate() {
            match loc {
                Location::Header { name, prefix } => {
                    for value in req.headers().get_all(name) {
                        let Ok(value) = value.to_str() else { continue };
                        if let Some(token) = strip_prefix_ignore_case(value, prefix) {
                            add(token, i);
                        }
                    }
                }
                Location::Param(param) => {
                    for pair in req.uri().query().unwrap_or_default().split('&') {
                        if let Some((k, v)) = pair.split_once('=')
                            && k == param
                        {
                            add(v, i);
                        }
                    }
                }
                Location::Cookie(cookie) => {
                    for value in req.headers().get_all(http::header::COOKIE) {
                        let Ok(value) = value.to_str() else { continue };
                        for pair in value.split(';') {
                            if let Some((k, v)) = pair.trim().split_once('=')
                                && k == cookie
                            {
                                add(v.trim_matches('"'), i);
                            }
                        }
                    }
                }
            }
        }
        found
    }

    /// Validates one token against the rules that read it at one of `locs` and name its
    /// issuer. Returns the index of the accepting rule.
    async fn verify(&self, jwt: &Jwt<'_>, locs: &[usize]) -> Result<usize, JwtFailure> {
        let issuer = jwt.issuer().ok_or(JwtFailure::UnknownIssuer)?;
        let now = validate::now_secs();
        let mut failure = JwtFailure::UnknownIssuer;
        let mut candidates: Vec<usize> = locs
            .iter()
            .flat_map(|l| self.locations[*l].1.iter().copied())
            .filter(|r| self.rules[*r].issuer == issuer)
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        for r in candidates {
            let rule = &self.rules[r];
            let outcome = match jwt.check_claims(&rule.audiences, now) {
                Ok(()) => rule.keys.verify(jwt, rule.fetch_timeout).await,
                Err(f) => Err(f),
            };
            match outcome {
                Ok(()) => return Ok(r),
                Err(f) => failure = f,
            }
        }
        Err(failure)
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// A claim as a header value: strings as they are, numbers and booleans printed, arrays of
/// those joined with commas. Objects and nulls are not copied (Envoy skips them too).
fn claim_header_value(claims: &Value, claim: &str) -> Option<HeaderValue> {
    let value = claims.get(claim).or_else(|| {
        claim
            .split('.')
            .try_fold(claims, |v, segment| v.get(segment))
    })?;
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    HeaderValue::from_str(&text).ok()
}

fn unauthorized(failure: JwtFailure) -> Decision {
    let mut resp = local_reply(StatusCode::UNAUTHORIZED, failure.to_string());
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    Decision::Respond(resp)
}

impl AuthnFilter {
    fn rules_for(&self, ctx: &RequestContext) -> Option<&Arc<RuleSet>> {
        ctx.conn
            .destination
            .and_then(|d| self.by_destination.get(&d))
            .or(self.waypoint.as_ref())
    }

    /// True when no RequestAuthentication applies anywhere (the filter is a no-op).
    pub fn is_empty(&self) -> bool {
        self.waypoint.is_none() && self.by_destination.is_empty()
    }
}

#[async_trait]
impl Filter for AuthnFilter {
    fn name(&self) -> &str {
        "authn"
    }

    async fn on_request(&self, req: &mut Request, ctx: &mut RequestContext) -> Decision {
        let Some(set) = self.rules_for(ctx) else {
            return Decision::Continue;
        };
        let found = set.extract(req);
        if found.is_empty() {
            return Decision::Continue;
        }
        // Every token must be valid: a good token beside a bad one must not smuggle the bad
        // one to a backend that reads it (Envoy's rule too).
        let mut accepted = Vec::with_capacity(found.len());
        for (token, locs) in &found {
            let jwt = match Jwt::parse(token) {
                Ok(jwt) => jwt,
                Err(failure) => return unauthorized(failure),
            };
            match set.verify(&jwt, locs).await {
                Ok(rule) => accepted.push((jwt, locs, rule)),
                Err(failure) => {
                    tracing::debug!(%failure, "JWT refused");
                    return unauthorized(failure);
                }
            }
        }

        let headers = req.headers_mut();
        for (jwt, locs, rule) in &accepted {
            let rule = &set.rules[*rule];
            if !rule.forward_original_token {
                for loc in locs.iter() {
                    if let Location::Header { name, .. } = &set.locations[*loc].0 {
                        headers.remove(name);
                    }
                }
            }
            if let Some(name) = &rule.output_payload
                && let Ok(value) = HeaderValue::from_str(jwt.payload_b64)
            {
                headers.insert(name.clone(), value);
            }
            for (name, claim) in &rule.output_claims {
                if let Some(value) = claim_header_value(&jwt.claims, claim) {
                    headers.insert(name.clone(), value);
                }
            }
        }

        if let Some((jwt, _, _)) = accepted.into_iter().next() {
            let principal = format!(
                "{}/{}",
                jwt.issuer().unwrap_or_default(),
                jwt.subject().unwrap_or_default()
            );
            let (audiences, presenter) = (jwt.audiences(), jwt.presenter());
            ctx.extensions.insert(RequestPrincipal {
                principal,
                audiences,
                presenter,
                claims: jwt.claims,
            });
        }
        Decision::Continue
    }
}

#[cfg(test)]
mod tests;
