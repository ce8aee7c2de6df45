//! RequestAuthentication end to end: real keys minted at test time, real signed tokens, policies
//! from manifests, and a local HTTP server serving (and rotating) the JWKS.
#![allow(clippy::unwrap_used)] // helpers of a test crate: a failure is the test's failure

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use waypoint_core::body;
use waypoint_core::conn::Binding;
use waypoint_core::filter::testing::{TestChain, conn};
use waypoint_core::filter::{BuildReport, FilterSet, Request};
use waypoint_filters::authn::{AuthnFactory, JwksCache, JwksSettings};
use waypoint_filters::authz::RequestPrincipal;

const ISSUER: &str = "https://issuer.example";
const ECHO: &str = "10.96.0.10:80";
const OTHER: &str = "10.96.0.20:80";

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: default}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;

// ---------------------------------------------------------------------------------------------
// Keys and tokens

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    jwk: Value,
}

fn signer(key: EncodingKey, alg: Algorithm, kid: &str) -> Signer {
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    Signer {
        jwk: serde_json::to_value(&jwk).unwrap(),
        key,
        alg,
        kid: kid.to_owned(),
    }
}

fn es256(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    signer(key, Algorithm::ES256, kid)
}

fn eddsa(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
    Signer {
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid}),
        key,
        alg: Algorithm::EdDSA,
        kid: kid.to_owned(),
    }
}

fn rs256(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let key = EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(&pair.serialize_der()));
    signer(key, Algorithm::RS256, kid)
}

/// The RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (the signer wants PKCS#1): the OCTET STRING
/// that follows the version and the algorithm identifier.
fn pkcs8_to_pkcs1(der: &[u8]) -> Vec<u8> {
    fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, header) = match input[1] {
            n if n < 0x80 => (n as usize, 2),
            n => {
                let bytes = (n & 0x7f) as usize;
                let len = input[2..2 + bytes]
                    .iter()
                    .fold(0usize, |acc, b| acc << 8 | *b as usize);
                (len, 2 + bytes)
            }
        };
        (tag, &input[header..header + len], &input[header + len..])
    }
    let (_, info, _) = tlv(der);
    let (_, _version, rest) = tlv(info);
    let (_, _algorithm, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "PKCS#8 private key octet string");
    key.to_vec()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISSUER, "sub": "alice", "exp": now() + 3600, "iat": now()});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn token(s: &Signer, claims: &Value) -> String {
    let mut header = Header::new(s.alg);
    header.kid = Some(s.kid.clone());
    jsonwebtoken::encode(&header, claims, &s.key).unwrap()
}

fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

// ---------------------------------------------------------------------------------------------
// Policies and requests

/// A RequestAuthentication on Service `echo` with one jwtRule; `rule` adds YAML lines to it.
fn policy(target: &str, keys: &str, rule: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  targetRefs: [{target}]
  jwtRules:
  - issuer: {ISSUER}
    {keys}
{rule}
"#
    )
}

fn inline(signers: &[&Signer]) -> String {
    format!("jwks: {}", serde_json::to_string(&jwks(signers)).unwrap())
}

const ON_ECHO: &str = r#"{group: "", kind: Service, name: echo}"#;

struct Authn {
    chain: TestChain,
    reports: Vec<BuildReport>,
}

fn authn_with(cache: Arc<JwksCache>, policies: &str) -> Authn {
    let factory = AuthnFactory {
        jwks_fetcher: cache,
        ..Default::default()
    };
    let chain = TestChain::new(
        &format!("{BASE}\n---\n{policies}"),
        |filters: &mut FilterSet| {
            filters.factory(factory);
        },
    )
    .unwrap();
    Authn {
        reports: chain.reports().to_vec(),
        chain,
    }
}

fn authn(policies: &str) -> Authn {
    authn_with(Arc::new(JwksCache::default()), policies)
}

struct Outcome {
    status: Option<StatusCode>,
    body: String,
    principal: Option<RequestPrincipal>,
    request: Request,
}

impl Authn {
    async fn send_to(&self, destination: &str, req: http::request::Builder) -> Outcome {
        let mut conn = conn(destination);
        conn.binding = Binding::Hbone;
        let mut exchange = self
            .chain
            .send(conn, req.body(body::empty()).unwrap())
            .await;
        Outcome {
            status: exchange.status(),
            body: exchange.reply_text().await,
            principal: exchange.ctx.extensions.get::<RequestPrincipal>().cloned(),
            request: exchange.request,
        }
    }

    async fn bearer(&self, token: &str) -> Outcome {
        self.send_to(
            ECHO,
            http::Request::get("/").header("authorization", format!("Bearer {token}")),
        )
        .await
    }
}

fn assert_refused(out: &Outcome, body: &str) {
    assert_eq!(
        out.status,
        Some(StatusCode::UNAUTHORIZED),
        "body: {}",
        out.body
    );
    assert_eq!(out.body.trim_end(), body);
    assert!(out.principal.is_none());
}

// ---------------------------------------------------------------------------------------------
// Inline keys

#[tokio::test]
async fn valid_token_sets_the_request_principal_and_is_not_forwarded() {
    let key = es256("k1");
    let a = authn(&policy(ON_ECHO, &inline(&[&key]), ""));
    assert!(a.reports.is_empty(), "{:?}", a.reports);
    let claims = claims(json!({"aud": ["shop", "cart"], "azp": "web", "groups": ["a", "b"]}));
    let out = a.bearer(&token(&key, &claims)).await;

    assert_eq!(out.status, None, "{}", out.body);
    let p = out.principal.expect("principal");
    assert_eq!(p.principal, format!("{ISSUER}/alice"));
    assert_eq!(p.audiences, vec!["shop", "cart"]);
    assert_eq!(p.presenter.as_deref(), Some("web"));
    assert_eq!(p.claims["groups"], json!(["a", "b"]));
    assert!(out.request.headers().get("authorization").is_none());
}

#[tokio::test]
async fn rs256_and_eddsa_tokens_validate() {
    let (rsa, ed) = (rs256("rsa"), eddsa("ed"));
    let a = authn(&policy(ON_ECHO, &inline(&[&rsa, &ed]), ""));
    for s in [&rsa, &ed] {
        let out = a.bearer(&token(s, &claims(json!({})))).await;
        assert_eq!(out.status, None, "{:?}: {}", s.alg, out.body);
        assert_eq!(out.principal.unwrap().principal, format!("{ISSUER}/alice"));
    }
}

#[tokio::test]
async fn expired_token_is_refused_but_clock_skew_is_tolerated() {
    let key = es256("k1");
    let a = authn(&policy(ON_ECHO, &inline(&[&key]), ""));
    let expired = a
        .bearer(&token(&key, &claims(json!({"exp": now() - 120}))))
        .await;
    assert_refused(&expired, "Jwt is expired");
    let within_skew = a
        .bearer(&token(&key, &claims(json!({"exp": now() - 20}))))
        .await;
    assert_eq!(within_skew.status, None);
    let not_yet = a
        .bearer(&token(&key, &claims(json!({"nbf": now() + 600}))))
        .await;
    assert_refused(&not_yet, "Jwt not yet valid");
}

#[tokio::test]
async fn token_of_another_issuer_is_refused() {
    let key = es256("k1");
    let a = authn(&policy(ON_ECHO, &inline(&[&key]), ""));
    let out = a
        .bearer(&token(
            &key,
            &claims(json!({"iss": "https://evil.example"})),
        ))
        .await;
    assert_refused(&out, "Jwt issuer is not configured");
}

#[tokio::test]
async fn audience_must_intersect_when_configured() {
    let key = es256("k1");
    let a = authn(&policy(
        ON_ECHO,
        &inline(&[&key]),
        "    audiences: [shop, https://api.example/]",
    ));
    let wrong = a
        .bearer(&token(&key, &claims(json!({"aud": "blog"}))))
        .await;
    assert_refused(&wrong, "Audiences in Jwt are not allowed");
    let none = a.bearer(&token(&key, &claims(json!({})))).await;
    assert_refused(&none, "Audiences in Jwt are not allowed");
    let one_of = a
        .bearer(&token(&key, &claims(json!({"aud": ["blog", "shop"]}))))
        .await;
    assert_eq!(one_of.status, None);
    // Envoy ignores the scheme and a trailing slash when comparing audiences.
    let normalized = a
        .bearer(&token(&key, &claims(json!({"aud": "api.example"}))))
        .await;
    assert_eq!(normalized.status, None);
}

#[tokio::test]
async fn bad_signature_is_refused() {
    let (real, forger) = (es256("k1"), es256("k1"));
    let a = authn(&policy(ON_ECHO, &inline(&[&real]), ""));
    let out = a.bearer(&token(&forger, &claims(json!({})))).await;
    assert_refused(&out, "Jwt verification fails");

    // A payload edited after signing.
    let good = token(&real, &claims(json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(claims(json!({"sub": "admin"})).to_string());
    let edited = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_refused(&a.bearer(&edited).await, "Jwt verification fails");
}

#[tokio::test]
async fn malformed_and_unsupported_tokens_are_refused_without_panic() {
    let key = es256("k1");
    let a = authn(&policy(ON_ECHO, &inline(&[&key]), ""));
    for garbage in [
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "%%%.%%%.%%%",
        "eyJ9.eyJ9.sig",
    ] {
        let out = a.bearer(garbage).await;
        assert_eq!(out.status, Some(StatusCode::UNAUTHORIZED), "{garbage}");
    }
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "none"})),
        b64(claims(json!({})))
    );
    assert_refused(
        &a.bearer(&unsigned).await,
        "Jwt header [alg] is not supported",
    );
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert_refused(&a.bearer(&hmac).await, "Jwt header [alg] is not supported");
    let huge = "a".repeat(70 * 1024);
    let out = a.bearer(&format!("{huge}.{huge}.{huge}")).await;
    assert_eq!(out.status, Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn request_without_token_passes_unauthenticated() {
    let key = es256("k1");
    let a = authn(&policy(ON_ECHO, &inline(&[&key]), ""));
    let out = a.send_to(ECHO, http::Request::get("/")).await;
    assert_eq!(out.status, None);
    assert!(out.principal.is_none());
    // Another scheme in Authorization is not a bearer token.
    let basic = a
        .send_to(
            ECHO,
            http::Request::get("/").header("authorization", "Basic YWxpY2U6cHc="),
        )
        .await;
    assert_eq!(basic.status, None);
    assert!(basic.principal.is_none());
    assert!(basic.request.headers().contains_key("authorization"));
}

#[tokio::test]
async fn default_locations_include_the_access_token_parameter() {
    let key = es256("k1");
    let a = authn(&policy(ON_ECHO, &inline(&[&key]), ""));
    let tok = token(&key, &claims(json!({})));
    let out = a
        .send_to(
            ECHO,
            http::Request::get(format!("/p?x=1&access_token={tok}")),
        )
        .await;
    assert_eq!(out.status, None, "{}", out.body);
    assert!(out.principal.is_some());
}

#[tokio::test]
async fn custom_header_with_prefix_params_and_cookies() {
    let key = es256("k1");
    let a = authn(&policy(
        ON_ECHO,
        &inline(&[&key]),
        "    fromHeaders: [{name: X-Jwt, prefix: \"Token \"}]\n    fromParams: [tok]\n    fromCookies: [session]",
    ));
    let tok = token(&key, &claims(json!({})));

    let header = a
        .send_to(
            ECHO,
            http::Request::get("/").header("x-jwt", format!("Token {tok}")),
        )
        .await;
    assert_eq!(header.status, None, "{}", header.body);
    assert!(header.principal.is_some());
    assert!(header.request.headers().get("x-jwt").is_none());

    let no_prefix = a
        .send_to(ECHO, http::Request::get("/").header("x-jwt", tok.as_str()))
        .await;
    assert!(no_prefix.status.is_none() && no_prefix.principal.is_none());

    let param = a
        .send_to(ECHO, http::Request::get(format!("/?tok={tok}")))
        .await;
    assert!(param.principal.is_some(), "{}", param.body);

    let cookie = a
        .send_to(
            ECHO,
            http::Request::get("/").header("cookie", format!("theme=dark; session={tok}")),
        )
        .await;
    assert!(cookie.principal.is_some(), "{}", cookie.body);

    // Once locations are named, the defaults no longer apply.
    let default_place = a.bearer(&tok).await;
    assert!(default_place.status.is_none() && default_place.principal.is_none());
}

#[tokio::test]
async fn every_token_of_a_request_must_be_valid() {
    let (key, other) = (es256("k1"), es256("k1"));
    let a = authn(&policy(ON_ECHO, &inline(&[&key]), ""));
    let good = token(&key, &claims(json!({})));
    let bad = token(&other, &claims(json!({})));
    let out = a
        .send_to(
            ECHO,
            http::Request::get(format!("/?access_token={bad}"))
                .header("authorization", format!("Bearer {good}")),
        )
        .await;
    assert_refused(&out, "Jwt verification fails");
}

#[tokio::test]
async fn forward_original_token_and_output_headers() {
    let key = es256("k1");
    let a = authn(&policy(
        ON_ECHO,
        &inline(&[&key]),
        "    forwardOriginalToken: true\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - {header: x-sub, claim: sub}\n    - {header: x-team, claim: org.team}\n    - {header: x-groups, claim: groups}",
    ));
    let claims = claims(json!({"org": {"team": "blue"}, "groups": ["a", "b"]}));
    let tok = token(&key, &claims);
    let out = a.bearer(&tok).await;
    assert_eq!(out.status, None, "{}", out.body);
    let h = out.request.headers();
    assert_eq!(h["authorization"], format!("Bearer {tok}").as_str());
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h["x-jwt-payload"].as_bytes())
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), claims);
    assert_eq!(h["x-sub"], "alice");
    assert_eq!(h["x-team"], "blue");
    assert_eq!(h["x-groups"], "a,b");
}

// ---------------------------------------------------------------------------------------------
// Targets

#[tokio::test]
async fn service_policy_applies_only_to_that_service() {
    let (key, other) = (es256("k1"), es256("k1"));
    let a = authn(&policy(ON_ECHO, &inline(&[&key]), ""));
    let bad = token(&other, &claims(json!({})));
    let to_other = a
        .send_to(
            OTHER,
            http::Request::get("/").header("authorization", format!("Bearer {bad}")),
        )
        .await;
    assert_eq!(to_other.status, None);
    assert!(to_other.principal.is_none());
    assert_refused(&a.bearer(&bad).await, "Jwt verification fails");
}

#[tokio::test]
async fn gateway_and_gateway_class_policies_apply_to_every_destination() {
    let key = es256("k1");
    let gateway = policy(
        r#"{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}"#,
        &inline(&[&key]),
        "",
    );
    let class = policy(
        r#"{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}"#,
        &inline(&[&key]),
        "",
    )
    .replace("namespace: default", "namespace: istio-system");
    for policies in [gateway, class] {
        let a = authn(&policies);
        assert!(a.reports.is_empty(), "{:?}", a.reports);
        let tok = token(&key, &claims(json!({})));
        for dest in [ECHO, OTHER, "10.1.2.3:8080"] {
            let out = a
                .send_to(
                    dest,
                    http::Request::get("/").header("authorization", format!("Bearer {tok}")),
                )
                .await;
            assert!(out.principal.is_some(), "{dest}: {}", out.body);
        }
    }
}

#[tokio::test]
async fn gateway_rules_and_service_rules_combine() {
    let (gw_key, svc_key) = (es256("gw"), eddsa("svc"));
    let policies = format!(
        "{}\n---\n{}",
        policy(
            r#"{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}"#,
            &inline(&[&gw_key]),
            "",
        ),
        policy(ON_ECHO, &inline(&[&svc_key]), "")
            .replace("name: jwt,", "name: svc-jwt,")
            .replace(ISSUER, "https://svc.example"),
    );
    let a = authn(&policies);
    let gw_token = token(&gw_key, &claims(json!({})));
    let svc_token = token(&svc_key, &claims(json!({"iss": "https://svc.example"})));
    assert!(a.bearer(&gw_token).await.principal.is_some());
    let svc = a.bearer(&svc_token).await;
    assert_eq!(
        svc.principal.map(|p| p.principal),
        Some("https://svc.example/alice".to_owned())
    );
    let elsewhere = a
        .send_to(
            OTHER,
            http::Request::get("/").header("authorization", format!("Bearer {svc_token}")),
        )
        .await;
    assert_refused(&elsewhere, "Jwt issuer is not configured");
}

#[tokio::test]
async fn selector_policy_is_ignored_and_reported() {
    let key = es256("k1");
    let manifest = policy(ON_ECHO, &inline(&[&key]), "").replace(
        "  targetRefs: [",
        "  selector: {matchLabels: {app: echo}}\n  targetRefs: [",
    );
    let a = authn(&manifest);
    assert_eq!(a.reports.len(), 1, "{:?}", a.reports);
    assert_eq!(a.reports[0].reason, "Ignored");
    assert_eq!(a.reports[0].resource.name, "jwt");
    let out = a.bearer("not-even-a-jwt").await;
    assert_eq!(out.status, None);
}

#[tokio::test]
async fn unresolvable_targets_and_bad_fields_are_reported() {
    let key = es256("k1");
    let manifest = policy(
        r#"{group: "", kind: Service, name: nope}, {group: gateway.networking.k8s.io, kind: Gateway, name: nope}, {group: networking.istio.io, kind: ServiceEntry, name: se}"#,
        &inline(&[&key]),
        "    outputPayloadToHeader: \"bad header\"",
    );
    let a = authn(&manifest);
    let reasons: Vec<&str> = a.reports.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "Invalid",
            "TargetNotFound",
            "TargetNotFound",
            "TargetNotFound"
        ],
        "{:?}",
        a.reports
    );
    // A ServiceEntry target names a ServiceEntry, not the Service of that name.
    assert!(
        a.reports[3]
            .message
            .contains("spec.targetRefs[2]: no ServiceEntry default/se")
    );
    assert!(
        a.reports[0]
            .message
            .contains("spec.jwtRules[0].outputPayloadToHeader")
    );
}

#[tokio::test]
async fn an_https_jwks_uri_is_accepted_and_fails_closed_while_unreachable() {
    // https is fetched (verified against the Web-PKI roots: `waypoint_core::http::client`);
    // while the keys cannot be had, tokens are refused rather than let through.
    let key = es256("k1");
    let a = authn(&policy(ON_ECHO, "jwksUri: https://127.0.0.1:1/jwks", ""));
    assert!(a.reports.is_empty(), "{:?}", a.reports);
    let out = a.bearer(&token(&key, &claims(json!({})))).await;
    assert_refused(&out, "Jwks remote fetch is failed");
}

// ---------------------------------------------------------------------------------------------
// Remote keys

/// A JWKS server whose document can be swapped, that counts requests and can go away.
struct JwksServer {
    addr: SocketAddr,
    doc: Arc<Mutex<(StatusCode, String)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(doc: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new((StatusCode::OK, doc)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (d, h) = (d.clone(), h.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<_>| {
                        let (d, h) = (d.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = d.lock().unwrap().clone();
                            let body = if req.uri().path() == "/.well-known/openid-configuration" {
                                let host = req.headers()["host"].to_str().unwrap().to_owned();
                                json!({"jwks_uri": format!("http://{host}/jwks")}).to_string()
                            } else {
                                body
                            };
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            doc,
            hits,
            task,
        }
    }

    fn uri(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn serve(&self, status: StatusCode, doc: String) {
        *self.doc.lock().unwrap() = (status, doc);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn cache(refresh: Duration, min_refetch: Duration) -> Arc<JwksCache> {
    Arc::new(JwksCache::new(JwksSettings {
        refresh_interval: refresh,
        fetch_timeout: Duration::from_secs(2),
        min_refetch_interval: min_refetch,
    }))
}

fn remote_policy(uri: &str) -> String {
    policy(ON_ECHO, &format!("jwksUri: {uri}"), "")
}

#[tokio::test]
async fn jwks_uri_keys_are_fetched_and_cached() {
    let key = rs256("r1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let c = cache(Duration::from_secs(600), Duration::from_secs(30));
    let a = authn_with(c.clone(), &remote_policy(&server.uri()));
    assert!(a.reports.is_empty(), "{:?}", a.reports);
    for _ in 0..3 {
        let out = a.bearer(&token(&key, &claims(json!({})))).await;
        assert_eq!(out.status, None, "{}", out.body);
    }
    assert_eq!(server.hits(), 1);
    // A new snapshot (a reload) reuses the fetched set.
    let b = authn_with(c, &remote_policy(&server.uri()));
    assert_eq!(
        b.bearer(&token(&key, &claims(json!({})))).await.status,
        None
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn unknown_kid_refetches_rotated_keys() {
    let (old, new) = (es256("old"), es256("new"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let a = authn_with(
        cache(Duration::from_secs(600), Duration::ZERO),
        &remote_policy(&server.uri()),
    );
    assert_eq!(
        a.bearer(&token(&old, &claims(json!({})))).await.status,
        None
    );
    server.serve(StatusCode::OK, jwks(&[&new]));
    let out = a.bearer(&token(&new, &claims(json!({})))).await;
    assert_eq!(out.status, None, "{}", out.body);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let (known, stranger) = (es256("known"), es256("stranger"));
    let server = JwksServer::start(jwks(&[&known])).await;
    let c = cache(Duration::from_secs(600), Duration::from_secs(30));
    let a = authn_with(c.clone(), &remote_policy(&server.uri()));
    assert_eq!(
        a.bearer(&token(&known, &claims(json!({})))).await.status,
        None
    );
    for _ in 0..5 {
        let out = a.bearer(&token(&stranger, &claims(json!({})))).await;
        assert_refused(&out, "Jwks doesn't have key to match kid or alg from Jwt");
    }
    assert_eq!(
        server.hits(),
        1,
        "refetches must wait for the minimum interval"
    );
    assert_eq!(c.remote(&server.uri()).unwrap().fetch_count(), 1);
}

#[tokio::test]
async fn cached_keys_survive_the_jwks_server_going_away() {
    let key = es256("k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let a = authn_with(
        cache(Duration::from_millis(1), Duration::ZERO),
        &remote_policy(&server.uri()),
    );
    assert_eq!(
        a.bearer(&token(&key, &claims(json!({})))).await.status,
        None
    );
    server.task.abort();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..3 {
        // Each request sees a stale set, starts a refresh that fails, and still validates.
        let out = a.bearer(&token(&key, &claims(json!({})))).await;
        assert_eq!(out.status, None, "{}", out.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn failed_refresh_keeps_the_last_good_set() {
    let key = es256("k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let c = cache(Duration::from_millis(1), Duration::ZERO);
    let a = authn_with(c, &remote_policy(&server.uri()));
    assert_eq!(
        a.bearer(&token(&key, &claims(json!({})))).await.status,
        None
    );
    let hits = server.hits();
    for bad in [
        (StatusCode::INTERNAL_SERVER_ERROR, jwks(&[&key])),
        (StatusCode::OK, "{not json".to_owned()),
        (StatusCode::OK, "x".repeat(2 * 1024 * 1024)),
    ] {
        server.serve(bad.0, bad.1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let out = a.bearer(&token(&key, &claims(json!({})))).await;
        assert_eq!(out.status, None, "{}", out.body);
    }
    // Give the background refreshes time to run: they did reach the server.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.hits() > hits);
    assert_eq!(
        a.bearer(&token(&key, &claims(json!({})))).await.status,
        None
    );
}

#[tokio::test]
async fn unreachable_jwks_refuses_tokens() {
    let key = es256("k1");
    let server = JwksServer::start(String::new()).await;
    server.serve(StatusCode::NOT_FOUND, String::new());
    let a = authn_with(
        cache(Duration::from_secs(600), Duration::from_secs(30)),
        &remote_policy(&server.uri()),
    );
    let out = a.bearer(&token(&key, &claims(json!({})))).await;
    assert_refused(&out, "Jwks remote fetch is failed");
}

#[tokio::test]
async fn openid_discovery_finds_the_jwks() {
    let key = es256("k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let issuer = format!("http://{}", server.addr);
    let manifest = policy(ON_ECHO, "", "").replace(ISSUER, &issuer);
    let a = authn_with(cache(Duration::from_secs(600), Duration::ZERO), &manifest);
    assert!(a.reports.is_empty(), "{:?}", a.reports);
    let out = a
        .bearer(&token(&key, &claims(json!({"iss": issuer}))))
        .await;
    assert_eq!(out.status, None, "{}", out.body);
    assert_eq!(server.hits(), 2);
}

// ---------------------------------------------------------------------------------------------
// With authorization: the chain the waypoint runs

#[tokio::test]
async fn missing_token_is_denied_only_where_a_request_principal_is_required() {
    use waypoint_filters::authz::AuthzFactory;

    let key = es256("k1");
    let require_jwt = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: echo}]
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["*"]}}]
"#;
    let chain = TestChain::new(
        &format!(
            "{BASE}\n---\n{}{require_jwt}",
            policy(ON_ECHO, &inline(&[&key]), "")
        ),
        |filters: &mut FilterSet| {
            filters
                .factory(AuthnFactory::default())
                .factory(AuthzFactory::default());
        },
    )
    .unwrap();
    assert!(chain.reports().is_empty());
    let run = |destination: &str, token: Option<String>| {
        let mut req = http::Request::get("/");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(body::empty()).unwrap();
        let mut conn = conn(destination);
        conn.binding = Binding::Hbone;
        let chain = &chain;
        async move { chain.send(conn, req).await.status() }
    };
    // No token: allowed by authn, denied by the policy that wants a request principal.
    assert_eq!(run(ECHO, None).await, Some(StatusCode::FORBIDDEN));
    // A valid token satisfies it.
    assert_eq!(run(ECHO, Some(token(&key, &claims(json!({}))))).await, None);
    // Where no policy asks for a principal, no token is fine.
    assert_eq!(run(OTHER, None).await, None);
}
