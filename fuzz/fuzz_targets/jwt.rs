//! JWT and JWKS parsing, and the checks a token goes through (claims, audience, signature).
//!
//! Input: `token` `\n` `jwks`. Properties, beyond "never panics":
//! - a token that parses has exactly three non-empty dot-separated sections, is within the
//!   size limit, its payload section is the middle one, and its claims are a JSON object;
//! - an HMAC (`HS*`) token never parses (a public JWKS cannot hold the secret);
//! - a JWKS that parses holds at least one key;
//! - the claim checks and the signature check never panic, at any clock value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypoint_filters::authn::KeySet;
use waypoint_filters::authn::validate::{JwtFailure, MAX_TOKEN_BYTES};
use waypoint_filters::fuzzing::{check_jwt, parse_jwt};

fuzz_target!(|data: &[u8]| {
    let (token, jwks) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let keys = jwks.and_then(|j| KeySet::parse(j).ok());
    if let Some(keys) = &keys {
        assert!(!keys.is_empty() && keys.len() >= 1);
    }
    let Ok(token) = std::str::from_utf8(token) else {
        return;
    };
    match parse_jwt(token) {
        Ok(jwt) => {
            assert!(token.len() <= MAX_TOKEN_BYTES);
            let sections: Vec<&str> = token.split('.').collect();
            assert_eq!(sections.len(), 3, "{token:?}");
            assert!(sections.iter().all(|s| !s.is_empty()), "{token:?}");
            assert_eq!(jwt.payload_b64, sections[1]);
            assert!(jwt.claims.is_object());
            let header = sections[0];
            assert!(
                !header_alg_is_hmac(header),
                "an HMAC token parsed: {token:?}"
            );
        }
        Err(JwtFailure::BadFormat) => {
            let sections: Vec<&str> = token.split('.').collect();
            assert!(
                token.len() > MAX_TOKEN_BYTES
                    || sections.len() != 3
                    || sections.iter().any(|s| s.is_empty()),
                "well-shaped token called BadFormat: {token:?}"
            );
        }
        Err(_) => {}
    }
    let audiences = ["https://a.example.com/".to_owned(), "b".to_owned()];
    for now in [0, 1_700_000_000, u64::MAX] {
        let _ = check_jwt(token, &[], now, None);
        let _ = check_jwt(token, &audiences, now, keys.as_ref());
    }
});

/// Whether the base64url header names an `HS*` algorithm, decoded independently of the parser.
fn header_alg_is_hmac(header_b64: &str) -> bool {
    base64url_decode(header_b64)
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|h| h.get("alg")?.as_str().map(|a| a.starts_with("HS")))
        .unwrap_or(false)
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}
