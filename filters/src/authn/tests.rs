//! Unit tests of the pieces the request path trusts: token parsing, claim checks, key-set
//! parsing, token extraction and claim-to-header conversion.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use waypoint_core::body;

use super::compile::parse_duration;
use super::jwks::{JwksCache, JwksError, KeySet};
use super::validate::{CLOCK_SKEW, Jwt, JwtFailure};
use super::{Location, RuleSet, claim_header_value, strip_prefix_ignore_case};

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn unsigned(header: Value, claims: Value) -> String {
    format!("{}.{}.c2ln", b64(&header), b64(&claims))
}

fn parse(token: &str) -> Result<Jwt<'_>, JwtFailure> {
    Jwt::parse(token)
}

#[test]
fn parse_splits_and_decodes_a_token() {
    let token = unsigned(
        json!({"alg": "ES256", "kid": "k"}),
        json!({"iss": "i", "sub": "s", "aud": "a", "azp": "p"}),
    );
    let jwt = parse(&token).unwrap();
    assert_eq!(jwt.header.kid.as_deref(), Some("k"));
    assert_eq!(jwt.issuer(), Some("i"));
    assert_eq!(jwt.subject(), Some("s"));
    assert_eq!(jwt.audiences(), vec!["a"]);
    assert_eq!(jwt.presenter().as_deref(), Some("p"));
    assert_eq!(jwt.payload_b64, token.split('.').nth(1).unwrap());
}

#[test]
fn parse_refuses_malformed_tokens() {
    let es = json!({"alg": "ES256"});
    let cases = [
        ("a.b".to_owned(), JwtFailure::BadFormat),
        ("a.b.c.d".to_owned(), JwtFailure::BadFormat),
        (".b.c".to_owned(), JwtFailure::BadFormat),
        ("!!.b.c".to_owned(), JwtFailure::BadHeader),
        (format!("{}.!!.c", b64(&es)), JwtFailure::BadPayload),
        (
            format!("{}.{}.c", b64(&es), b64(&json!([1]))),
            JwtFailure::BadPayload,
        ),
        (
            unsigned(json!({"alg": "none"}), json!({})),
            JwtFailure::UnsupportedAlg,
        ),
        (
            unsigned(json!({"alg": "HS256"}), json!({})),
            JwtFailure::UnsupportedAlg,
        ),
        (
            unsigned(json!({"kid": "x"}), json!({})),
            JwtFailure::BadHeader,
        ),
        (
            "a".repeat(super::validate::MAX_TOKEN_BYTES + 1),
            JwtFailure::BadFormat,
        ),
    ];
    for (token, want) in cases {
        assert_eq!(parse(&token).err(), Some(want), "{:.40}", token);
    }
}

#[test]
fn padded_sections_are_accepted() {
    let header = base64::engine::general_purpose::URL_SAFE.encode(r#"{"alg":"RS256"}"#);
    let payload = base64::engine::general_purpose::URL_SAFE.encode(r#"{"iss":"i"}"#);
    assert!(header.ends_with('=') || payload.ends_with('='));
    assert!(parse(&format!("{header}.{payload}.c2ln")).is_ok());
}

#[test]
fn time_claims_allow_the_clock_skew_and_reject_bad_types() {
    let now = 1_000_000;
    let skew = CLOCK_SKEW.as_secs();
    let check = |claims: Value| {
        let token = unsigned(json!({"alg": "ES256"}), claims);
        parse(&token).unwrap().check_claims(&[], now)
    };
    assert_eq!(check(json!({})), Ok(()));
    assert_eq!(check(json!({"exp": now - skew})), Ok(()));
    assert_eq!(
        check(json!({"exp": now - skew - 1})),
        Err(JwtFailure::Expired)
    );
    assert_eq!(check(json!({"nbf": now + skew})), Ok(()));
    assert_eq!(
        check(json!({"nbf": now + skew + 1})),
        Err(JwtFailure::NotYetValid)
    );
    assert_eq!(
        check(json!({"exp": "tomorrow"})),
        Err(JwtFailure::BadPayload)
    );
    assert_eq!(check(json!({"exp": -5})), Err(JwtFailure::BadPayload));
    assert_eq!(check(json!({"exp": u64::MAX})), Ok(()));
    assert_eq!(check(json!({"exp": (now + 10) as f64 + 0.5})), Ok(()));
}

#[test]
fn audiences_intersect_after_normalisation() {
    let want = vec!["https://api.example/".to_owned(), "shop".to_owned()];
    let check = |aud: Value| {
        let token = unsigned(json!({"alg": "ES256"}), json!({"aud": aud}));
        parse(&token).unwrap().check_claims(&want, 0)
    };
    assert_eq!(check(json!("api.example")), Ok(()));
    assert_eq!(check(json!(["x", "http://shop"])), Ok(()));
    assert_eq!(
        check(json!(["x", "y"])),
        Err(JwtFailure::AudienceNotAllowed)
    );
    assert_eq!(check(json!(42)), Err(JwtFailure::AudienceNotAllowed));
}

#[test]
fn key_set_keeps_only_usable_public_keys() {
    let ec = json!({"kty": "EC", "crv": "P-256", "kid": "ec",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let doc = json!({"keys": [
        ec,
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "EC", "crv": "P-256", "kid": "mislabelled", "alg": "RS256",
         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "RSA", "kid": "broken"},
        "not a key",
    ]});
    let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.has_kid("ec"));
    use jsonwebtoken::Algorithm::{ES256, RS256};
    assert_eq!(set.candidates(Some("ec"), ES256).count(), 1);
    assert_eq!(set.candidates(None, ES256).count(), 1);
    assert_eq!(set.candidates(Some("other"), ES256).count(), 0);
    assert_eq!(set.candidates(Some("ec"), RS256).count(), 0);
}

#[test]
fn key_set_without_usable_keys_is_an_error() {
    for doc in ["", "[]", "{}", r#"{"keys": "x"}"#, r#"{"keys": []}"#] {
        assert!(
            matches!(KeySet::parse(doc.as_bytes()), Err(JwksError::Invalid(_))),
            "{doc}"
        );
    }
}

#[test]
fn http_and_https_jwks_uris_are_accepted() {
    let cache = JwksCache::default();
    assert!(cache.remote("http://keys.example:8080/jwks.json").is_ok());
    assert!(cache.discovered("http://issuer.example/").is_ok());
    assert!(cache.remote("https://keys.example/jwks").is_ok());
    assert!(cache.discovered("https://accounts.example").is_ok());
    for bad in [
        "ftp://keys.example/jwks",
        "keys.example/jwks",
        "http://user@keys.example/jwks",
        "http:// bad",
    ] {
        assert!(
            matches!(cache.remote(bad), Err(JwksError::BadUri { .. })),
            "{bad}"
        );
    }
}

#[test]
fn the_cache_shares_one_source_per_uri_while_in_use() {
    let cache = JwksCache::default();
    let a = cache.remote("http://keys.example/jwks").unwrap();
    let b = cache.remote("http://keys.example/jwks").unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let c = cache.remote("http://keys.example/other").unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &c));
}

#[test]
fn header_prefix_is_matched_without_case() {
    assert_eq!(
        strip_prefix_ignore_case("Bearer abc", "Bearer "),
        Some("abc")
    );
    assert_eq!(
        strip_prefix_ignore_case("bearer abc", "Bearer "),
        Some("abc")
    );
    assert_eq!(strip_prefix_ignore_case("Basic abc", "Bearer "), None);
    assert_eq!(strip_prefix_ignore_case("Béarer abc", "Bearer "), None);
    assert_eq!(strip_prefix_ignore_case("Be", "Bearer "), None);
    assert_eq!(strip_prefix_ignore_case("abc", ""), Some("abc"));
}

#[test]
fn extraction_finds_each_token_once_with_all_its_locations() {
    let set = RuleSet {
        rules: Vec::new(),
        locations: vec![
            (
                Location::Header {
                    name: http::header::AUTHORIZATION,
                    prefix: "Bearer ".into(),
                },
                vec![0],
            ),
            (Location::Param("access_token".into()), vec![0]),
            (Location::Cookie("s".into()), vec![1]),
        ],
    };
    let req = http::Request::get("/p?a=1&access_token=T1&access_token=")
        .header("authorization", "Bearer T1")
        .header("cookie", "x=1; s=\"T2\"")
        .body(body::empty())
        .unwrap();
    let found = set.extract(&req);
    assert_eq!(
        found,
        vec![("T1".to_owned(), vec![0, 1]), ("T2".to_owned(), vec![2])]
    );
}

#[test]
fn claims_become_header_values() {
    let claims = json!({
        "sub": "alice", "n": 7, "ok": true, "groups": ["a", 1, false],
        "org": {"team": "blue"}, "a.b": "dotted", "nested": [{"x": 1}], "bad": "line\nbreak",
    });
    let get = |c: &str| claim_header_value(&claims, c).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(get("sub").as_deref(), Some("alice"));
    assert_eq!(get("n").as_deref(), Some("7"));
    assert_eq!(get("ok").as_deref(), Some("true"));
    assert_eq!(get("groups").as_deref(), Some("a,1,false"));
    assert_eq!(get("org.team").as_deref(), Some("blue"));
    assert_eq!(get("a.b").as_deref(), Some("dotted"));
    assert_eq!(get("org"), None);
    assert_eq!(get("nested"), None);
    assert_eq!(get("bad"), None);
    assert_eq!(get("missing"), None);
}

#[test]
fn fetch_timeouts_parse_as_protobuf_durations() {
    assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
    assert_eq!(parse_duration("0.25s"), Some(Duration::from_millis(250)));
    for bad in ["5", "5ms", "-1s", "0s", "NaNs", "1e9s", ""] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
