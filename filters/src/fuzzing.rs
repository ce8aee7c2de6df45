//! Entry points for the coverage-guided fuzz targets in `fuzz/`, behind the `fuzzing` feature.
//!
//! JWT parsing and Gateway hostname matching are internal to their filters: a vendor has no
//! business calling them, so they stay out of the public API. The fuzzers still need the real
//! code, not a re-implementation that could drift from it, so this hidden module forwards to
//! it and adds nothing. It is compiled only when the fuzz crate enables `fuzzing`.

use serde_json::Value;

use crate::authn::{JwtFailure, KeySet};
use crate::route::gateway::{HostPattern, request_host};

/// What the authn filter reads from a token it parsed, before trusting it.
#[derive(Debug)]
pub struct ParsedJwt {
    /// The `iss` claim.
    pub issuer: Option<String>,
    /// The `sub` claim.
    pub subject: Option<String>,
    /// The `aud` claim as a list.
    pub audiences: Vec<String>,
    /// The `azp` claim.
    pub presenter: Option<String>,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The decoded claims (always an object).
    pub claims: Value,
    /// The payload section as sent.
    pub payload_b64: String,
}

/// Parses `token` as the authn filter does (`Jwt::parse`).
pub fn parse_jwt(token: &str) -> Result<ParsedJwt, JwtFailure> {
    let jwt = crate::authn::validate::Jwt::parse(token)?;
    Ok(ParsedJwt {
        issuer: jwt.issuer().map(str::to_owned),
        subject: jwt.subject().map(str::to_owned),
        audiences: jwt.audiences(),
        presenter: jwt.presenter(),
        kid: jwt.header.kid.clone(),
        claims: jwt.claims.clone(),
        payload_b64: jwt.payload_b64.to_owned(),
    })
}

/// Parses `token`, then runs the time and audience checks at `now` and, when `keys` is given,
/// the signature check against it: every step a request's token goes through.
pub fn check_jwt(
    token: &str,
    audiences: &[String],
    now: u64,
    keys: Option<&KeySet>,
) -> Result<(), JwtFailure> {
    let jwt = crate::authn::validate::Jwt::parse(token)?;
    jwt.check_claims(audiences, now)?;
    match keys {
        Some(keys) => jwt.verified_by(keys),
        None => Ok(()),
    }
}

/// True when a listener or route `hostname` (`None` = any) accepts the request's host, as the
/// router decides it: the host comes from the URI authority or `Host` header, without port,
/// lowercased, trailing dot removed.
pub fn hostname_accepts<B>(hostname: Option<&str>, req: &http::Request<B>) -> bool {
    HostPattern::parse(hostname).matches(&request_host(req))
}

/// The host the router reads from a request (authority or `Host`, port and trailing dot
/// removed, lowercased).
pub fn request_host_of<B>(req: &http::Request<B>) -> String {
    request_host(req).into_owned()
}

/// The intersection of a route hostname and a listener hostname (`None` = any) as the router
/// computes it: `None` when they share no host, else `Some(pattern)`, and whether that
/// pattern accepts `host` (already normalized).
pub fn hostname_intersection_accepts(
    route: Option<&str>,
    listener: Option<&str>,
    host: &str,
) -> Option<bool> {
    HostPattern::parse(route)
        .intersect(&HostPattern::parse(listener))
        .map(|p| p.matches(host))
}
