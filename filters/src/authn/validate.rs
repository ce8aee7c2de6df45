//! One token against one jwtRule: parsing the compact JWS, the time and audience checks, and the
//! signature against the rule's keys. Every failure maps to the status Envoy's `jwt_authn`
//! reports, so clients see the messages they would see from Istio's own proxies.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, Header};
use serde_json::Value;

use super::jwks::{KeySet, RemoteJwks};

/// Longest token accepted; longer ones are rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Clock skew tolerated on `exp` and `nbf` (Envoy's default `clock_skew_seconds`).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// base64url, with or without padding (tokens should carry none; some issuers pad anyway).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused. The display strings are Envoy's `jwt_authn` status messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtFailure {
    /// Not three base64url sections, or over [`MAX_TOKEN_BYTES`].
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    /// The header is not base64url JSON with a supported asymmetric `alg`.
    #[error("Jwt header is an invalid JSON")]
    BadHeader,
    /// The `alg` is not one of RS/PS/ES/EdDSA.
    #[error("Jwt header [alg] is not supported")]
    UnsupportedAlg,
    /// The payload is not base64url JSON of an object with well-typed registered claims.
    #[error("Jwt payload is an invalid JSON")]
    BadPayload,
    /// No applicable rule names the token's issuer at the place the token was found.
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    /// `exp` (plus the clock skew) is in the past.
    #[error("Jwt is expired")]
    Expired,
    /// `nbf` (minus the clock skew) is in the future.
    #[error("Jwt not yet valid")]
    NotYetValid,
    /// The rule lists audiences and the token names none of them.
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    /// No key of the set matches the token's `kid` and `alg`.
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    /// The rule's key set could not be obtained.
    #[error("Jwks remote fetch is failed")]
    JwksFetchFailed,
    /// No candidate key verifies the signature.
    #[error("Jwt verification fails")]
    VerificationFailed,
}

/// A token split and decoded, not yet trusted.
pub(crate) struct Jwt<'a> {
    pub(crate) header: Header,
    /// `header.payload`, the signed bytes.
    signing_input: &'a str,
    signature: &'a str,
    /// The payload section as sent (base64url), for `outputPayloadToHeader`.
    pub(crate) payload_b64: &'a str,
    pub(crate) claims: Value,
}

impl<'a> Jwt<'a> {
    /// Splits and decodes `token` without checking anything but its shape.
    pub(crate) fn parse(token: &'a str) -> Result<Jwt<'a>, JwtFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtFailure::BadFormat);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtFailure::BadFormat);
        };
        if header_b64.is_empty() || payload_b64.is_empty() || signature.is_empty() {
            return Err(JwtFailure::BadFormat);
        }
        let header_json = B64URL
            .decode(header_b64)
            .map_err(|_| JwtFailure::BadHeader)?;
        let header: Header = serde_json::from_slice(&header_json).map_err(|e| {
            // serde reports an unknown `alg` variant as a data error naming it.
            if e.to_string().contains("unknown variant") {
                JwtFailure::UnsupportedAlg
            } else {
                JwtFailure::BadHeader
            }
        })?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            // A public JWKS cannot hold an HMAC secret; accepting HS* invites key confusion.
            return Err(JwtFailure::UnsupportedAlg);
        }
        let payload = B64URL
            .decode(payload_b64)
            .map_err(|_| JwtFailure::BadPayload)?;
        let claims: Value = serde_json::from_slice(&payload).map_err(|_| JwtFailure::BadPayload)?;
        if !claims.is_object() {
            return Err(JwtFailure::BadPayload);
        }
        Ok(Jwt {
            header,
            signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
            signature,
            payload_b64,
            claims,
        })
    }

    /// The `iss` claim, when it is a string.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The `sub` claim, when it is a string.
    pub(crate) fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// The `aud` claim as a list (a single string is a list of one).
    pub(crate) fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The `azp` claim (authorized presenter), when it is a string.
    pub(crate) fn presenter(&self) -> Option<String> {
        self.claims
            .get("azp")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// Checks `exp` and `nbf` (with [`CLOCK_SKEW`]) at `now` (seconds since the epoch), and
    /// the audience when `audiences` is not empty. Tokens without `exp` never expire, as in
    /// Envoy's default.
    pub(crate) fn check_claims(&self, audiences: &[String], now: u64) -> Result<(), JwtFailure> {
        let skew = CLOCK_SKEW.as_secs();
        if let Some(exp) = self.time_claim("exp")?
            && now > exp.saturating_add(skew)
        {
            return Err(JwtFailure::Expired);
        }
        if let Some(nbf) = self.time_claim("nbf")?
            && nbf > now.saturating_add(skew)
        {
            return Err(JwtFailure::NotYetValid);
        }
        if !audiences.is_empty() {
            let ok = self.audiences().iter().any(|have| {
                audiences
                    .iter()
                    .any(|want| normalize_audience(want) == normalize_audience(have))
            });
            if !ok {
                return Err(JwtFailure::AudienceNotAllowed);
            }
        }
        Ok(())
    }

    fn time_claim(&self, name: &str) -> Result<Option<u64>, JwtFailure> {
        match self.claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .map(Some)
                .ok_or(JwtFailure::BadPayload),
        }
    }

    /// True when some candidate key of `keys` verifies the signature.
    pub(crate) fn verified_by(&self, keys: &KeySet) -> Result<(), JwtFailure> {
        let mut tried = false;
        for key in keys.candidates(self.header.kid.as_deref(), self.header.alg) {
            tried = true;
            if let Ok(true) = jsonwebtoken::crypto::verify(
                self.signature,
                self.signing_input.as_bytes(),
                key,
                self.header.alg,
            ) {
                return Ok(());
            }
        }
        Err(if tried {
            JwtFailure::VerificationFailed
        } else {
            JwtFailure::NoMatchingKey
        })
    }
}

/// Envoy compares audiences without scheme and trailing slash: `https://a.com/` equals `a.com`.
fn normalize_audience(aud: &str) -> &str {
    let aud = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
        .unwrap_or(aud);
    aud.strip_suffix('/').unwrap_or(aud)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a rule's keys come from.
#[derive(Clone, Debug)]
pub(crate) enum Keys {
    /// `jwks`, parsed at build time.
    Inline(Arc<KeySet>),
    /// `jwksUri` or OpenID discovery.
    Remote(Arc<RemoteJwks>),
    /// The rule's keys could not be set up (reported at build time): its tokens fail, as
    /// Istio fails closed when istiod cannot resolve a key set.
    Unavailable,
}

impl Keys {
    /// Verifies the signature of `jwt`. A remote set that lacks the token's `kid` is fetched
    /// again (rate-limited by the cache) before giving up: issuers rotate keys.
    pub(crate) async fn verify(&self, jwt: &Jwt<'_>, timeout: Duration) -> Result<(), JwtFailure> {
        match self {
            Keys::Inline(keys) => jwt.verified_by(keys),
            Keys::Unavailable => Err(JwtFailure::JwksFetchFailed),
            Keys::Remote(remote) => {
                let keys = remote
                    .keys(timeout)
                    .await
                    .map_err(|_| JwtFailure::JwksFetchFailed)?;
                let unknown_kid = jwt
                    .header
                    .kid
                    .as_deref()
                    .is_some_and(|kid| !keys.has_kid(kid));
                match jwt.verified_by(&keys) {
                    Ok(()) => Ok(()),
                    Err(failure) if unknown_kid => match remote.refetch(timeout).await {
                        Ok(fresh) if !Arc::ptr_eq(&fresh, &keys) => jwt.verified_by(&fresh),
                        _ => Err(failure),
                    },
                    Err(failure) => Err(failure),
                }
            }
        }
    }
}
