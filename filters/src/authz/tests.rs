//! Unit tests of the authz building blocks (normalization, CIDRs, templates, string forms) and
//! of the filter itself, ext_authz included, against a local HTTP server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use waypoint_core::flags::ResponseFlag;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use waypoint_core::body;
use waypoint_core::config::Config;
use waypoint_core::conn::Binding;
use waypoint_core::filter::testing::{self, TestChain, conn_as};
use waypoint_core::filter::{FilterSet, RequestContext};

use super::evaluate::parse_forwarded_ip;
use super::matcher::{PathPattern, StringMatch, parse_cidr};
use super::*;

#[test]
fn normalization_table() {
    use PathNormalization::*;
    let cases: &[(&str, PathNormalization, &str)] = &[
        ("/a/b", Base, "/a/b"),
        ("/some%2fdata/%61%62%63", Base, "/some%2Fdata/abc"),
        (
            "/some%2fdata/%61%62%63",
            DecodeAndMergeSlashes,
            "/some/data/abc",
        ),
        ("/%2d%2E%5f%7e%30%5A", Base, "/-._~0Z"),
        ("/a%5cb", Base, "/a%5Cb"),
        ("/a%5cb", DecodeAndMergeSlashes, "/a/b"),
        ("/a%25%32%65", Base, "/a%252e"),
        ("/a%21b", Base, "/a%21b"),
        ("/some\\data", Base, "/some/data"),
        ("/some//data///abc", Base, "/some//data///abc"),
        ("/some//data///abc", MergeSlashes, "/some/data/abc"),
        ("/public/./data/abc/../xyz", Base, "/public/data/xyz"),
        ("/a/%2e%2e/b", Base, "/b"),
        ("/a/..%2f..%2fetc", DecodeAndMergeSlashes, "/etc"),
        ("/..", Base, "/"),
        ("/a/.", Base, "/a/"),
        ("/a/b/", Base, "/a/b/"),
        ("/a/../b?x=/../%61", Base, "/b?x=/../%61"),
        ("/a//b/%2e%2e", None, "/a//b/%2e%2e"),
        ("*", Base, "*"),
        ("/é/../ü", Base, "/ü"),
        ("/a%", Base, "/a%"),
        ("/a%zz", Base, "/a%zz"),
    ];
    assert_normalizes(cases);
    for mode in [None, Base, MergeSlashes, DecodeAndMergeSlashes] {
        assert_eq!(
            normalize_path("/a%00b", mode),
            Err(NormalizeError::EncodedNul)
        );
    }
    // Only the path is checked for %00: a query is not the path.
    assert!(normalize_path("/a?x=%00", Base).is_ok());
    assert!(check_method("get", Base).is_err());
    assert!(check_method("get", None).is_ok());
    assert!(check_method("PURGE", Base).is_ok());
}

#[test]
fn a_decoded_hex_digit_never_completes_an_escape_with_a_stray_percent() {
    use PathNormalization::*;
    // Fuzz findings: decoding `%65` after a stray `%2` used to create `%2e`, a dot a backend
    // decodes after the policy matched `/public`; and `%63` after `%b` created `%bc`.
    let cases: &[(&str, PathNormalization, &str)] = &[
        ("/public/%2%65%2%65/admin", Base, "/public/%2%65%2%65/admin"),
        ("/a/%2%46etc", DecodeAndMergeSlashes, "/a/%2%46etc"),
        (
            "/\u{3}/lic/%%%b%63*2e",
            MergeSlashes,
            "/\u{3}/lic/%%%b%63*2e",
        ),
        ("/%%61", Base, "/%%61"),
        ("/%%7e%61", Base, "/%~a"),
    ];
    assert_normalizes(cases);
}

/// Each input normalizes to the expected path, and a second pass changes nothing.
fn assert_normalizes(cases: &[(&str, PathNormalization, &str)]) {
    for (input, mode, want) in cases {
        let got = normalize_path(input, *mode).unwrap();
        assert_eq!(got, *want, "{input} under {mode:?}");
        assert_eq!(normalize_path(&got, *mode).unwrap(), got, "{input} twice");
    }
}

#[test]
fn cidrs_and_addresses() {
    let net = parse_cidr("10.0.0.0/8").unwrap();
    assert!(net.contains(&"10.255.1.1".parse::<std::net::IpAddr>().unwrap()));
    let one = parse_cidr("203.0.113.4").unwrap();
    assert!(one.contains(&"203.0.113.4".parse::<std::net::IpAddr>().unwrap()));
    assert!(!one.contains(&"203.0.113.5".parse::<std::net::IpAddr>().unwrap()));
    assert!(parse_cidr("fd00::/8").is_ok());
    for bad in ["10.0.0.0/33", "10.0.0", "", "x", "10.0.0.0/8/1"] {
        assert!(parse_cidr(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_forwarded_ip(" \"[::1]:80\" ".trim()),
        Some("::1".parse().unwrap())
    );
    assert_eq!(
        parse_forwarded_ip("1.2.3.4:5"),
        Some("1.2.3.4".parse().unwrap())
    );
    assert_eq!(parse_forwarded_ip("unknown"), Option::None);
}

#[test]
fn string_forms() {
    assert_eq!(StringMatch::parse("*"), StringMatch::Presence);
    assert_eq!(
        StringMatch::parse("abc*"),
        StringMatch::Prefix("abc".into())
    );
    assert_eq!(
        StringMatch::parse("*abc"),
        StringMatch::Suffix("abc".into())
    );
    // Istio reads a leading `*` first.
    assert_eq!(
        StringMatch::parse("*abc*"),
        StringMatch::Suffix("abc*".into())
    );
    assert!(StringMatch::parse("abc*").matches("abc"));
    assert!(StringMatch::parse("*abc").matches("xabc"));
    assert!(!StringMatch::Presence.matches(""));
}

#[test]
fn path_templates() {
    let t = |p: &str| PathPattern::parse(p).unwrap();
    assert!(t("/foo/{*}").matches("/foo/bar"));
    assert!(!t("/foo/{*}").matches("/foo/bar/baz"));
    assert!(!t("/foo/{*}").matches("/foo"));
    assert!(t("/foo/{**}").matches("/foo/"));
    assert!(t("/foo/{**}").matches("/foo/a/b/c"));
    assert!(!t("/foo/{**}").matches("/foobar"));
    assert!(t("/foo/{**}/").matches("/foo//"));
    assert!(t("/foo/{**}/").matches("/foo/bar/"));
    assert!(!t("/foo/{**}/").matches("/foo/bar"));
    assert!(t("/foo/{*}/bar/{**}").matches("/foo/buzz/bar/baz"));
    assert!(!t("/foo/{*}/bar/{**}").matches("/foo/buzz/qux/baz"));
    assert!(t("/{*}/{*}").matches("/a/b"));
    assert!(t("/{**}/tail").matches("/a/b/tail"));
    for bad in [
        "/*/baz/{*}",
        "/**/baz/{*}",
        "/{**}/foo/{*}",
        "/foo/{*}.txt",
        "/foo/{x}",
    ] {
        assert!(PathPattern::parse(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// The filter, in memory and against a local ext_authz server.

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 8000}]
"#;

fn policy(name: &str, body: &str) -> String {
    let body: String = body.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  targetRefs: [{{kind: Service, name: httpbin}}]\n{body}"
    )
}

struct Harness {
    filter: Arc<dyn Filter>,
    config: Arc<Config>,
    chain: TestChain,
}

fn harness(factory: AuthzFactory, policies: &[String]) -> Harness {
    let text = format!("{SERVICES}\n---\n{}", policies.join("\n---\n"));
    let chain = TestChain::new(&text, |filters: &mut FilterSet| {
        filters.factory(factory);
    })
    .unwrap();
    Harness {
        filter: chain.chain().filters()[0].clone(),
        config: chain.config().clone(),
        chain,
    }
}

impl Harness {
    async fn run(&self, req: Request) -> (Decision, Request, RequestContext) {
        let mut conn = conn_as(
            "10.96.0.10:8000",
            "spiffe://cluster.local/ns/default/sa/sleep",
        );
        conn.binding = Binding::Hbone;
        conn.source = Some("10.0.0.5:4000".parse().unwrap());
        let exchange = self.chain.send(conn, req).await;
        let decision = match exchange.response {
            Some(resp) => Decision::Respond(resp),
            None => Decision::Continue,
        };
        (decision, exchange.request, exchange.ctx)
    }
}

fn get(path: &str) -> Request {
    http::Request::builder()
        .uri(path)
        .header("host", "httpbin.foo:8000")
        .header("x-user", "forged")
        .body(body::empty())
        .unwrap()
}

async fn body_of(resp: Response) -> (StatusCode, http::HeaderMap, Bytes) {
    let (parts, b) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        b.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn denied_requests_get_istios_exact_reply_and_a_record() {
    let h = harness(
        AuthzFactory::default(),
        &[policy(
            "d",
            "action: DENY\nrules: [{to: [{operation: {paths: [\"/admin*\"]}}]}]",
        )],
    );
    let (d, _, ctx) = h.run(get("/x/../admin/panel")).await;
    let Decision::Respond(resp) = d else {
        panic!("expected a denial")
    };
    let (status, headers, body) = body_of(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(&body[..], b"RBAC: access denied");
    assert_eq!(headers["content-type"], "text/plain");
    let rec = ctx.extensions.get::<AuthzDecision>().unwrap();
    assert!(!rec.allowed);
    assert_eq!(rec.action, "DENY");
    assert_eq!(rec.policy.as_ref().unwrap().name, "d");
    assert_eq!(rec.rule, Some(0));

    // Allowed: the backend receives the normalized path, query untouched.
    let (d, req, ctx) = h.run(get("/a/./b/%63?q=%2e%2e")).await;
    assert!(matches!(d, Decision::Continue));
    assert_eq!(
        req.uri().path_and_query().unwrap().as_str(),
        "/a/b/c?q=%2e%2e"
    );
    assert!(ctx.extensions.get::<AuthzDecision>().unwrap().allowed);

    // %00 is refused before any policy.
    let (d, _, _) = h.run(get("/a%00")).await;
    let Decision::Respond(resp) = d else {
        panic!("expected 400")
    };
    let (status, _, body) = body_of(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("%00"));
}

#[tokio::test]
async fn a_deny_on_a_host_matches_the_host_the_router_reads() {
    let h = harness(
        AuthzFactory::default(),
        &[policy(
            "d",
            "action: DENY\nrules: [{to: [{operation: {hosts: [\"httpbin.foo\"]}}]}]",
        )],
    );
    let with = |uri: &str, host: &str| {
        http::Request::builder()
            .uri(uri)
            .header("host", host)
            .body(body::empty())
            .unwrap()
    };
    let denied =
        |d: &Decision| matches!(d, Decision::Respond(r) if r.status() == StatusCode::FORBIDDEN);
    let cases = [
        // Userinfo in an absolute-form target names no host: the router goes to httpbin.foo.
        (with("http://u@httpbin.foo:8000/", "other.example"), true),
        // An empty port is still a port.
        (with("/", "httpbin.foo:"), true),
        // The target authority wins over Host, as it does for routing.
        (with("http://httpbin.foo/", "other.example"), true),
        (with("http://other.example/", "httpbin.foo"), false),
        (with("/", "[fd00::1]:8000"), false),
    ];
    for (req, want_denied) in cases {
        let seen = format!("{} host {:?}", req.uri(), req.headers()["host"]);
        let (d, _, _) = h.run(req).await;
        assert_eq!(denied(&d), want_denied, "{seen}");
    }
}

#[tokio::test]
async fn request_principal_from_authn_is_used() {
    let h = harness(
        AuthzFactory::default(),
        &[policy(
            "jwt",
            "rules: [{from: [{source: {requestPrincipals: [\"iss/alice\"]}}]}]",
        )],
    );
    let mut conn = testing::conn("10.96.0.10:8000");
    conn.binding = Binding::Hbone;
    let mut ctx = RequestContext::new(Arc::new(conn), h.config.clone());
    let mut req = get("/");
    assert!(matches!(
        h.filter.on_request(&mut req, &mut ctx).await,
        Decision::Respond(_)
    ));
    ctx.extensions.insert(RequestPrincipal {
        principal: "iss/alice".into(),
        ..Default::default()
    });
    assert!(matches!(
        h.filter.on_request(&mut req, &mut ctx).await,
        Decision::Continue
    ));
}

/// A provider that allows `/allow*` (adding `x-user: alice`), denies everything else with 401,
/// a header and a body, and echoes what it saw of the check request in `x-seen`.
async fn provider_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let seen = format!(
                        "{} {} principal={} host={}",
                        req.method(),
                        req.uri(),
                        req.headers()
                            .get(SOURCE_PRINCIPAL_HEADER)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default(),
                        req.headers()["host"].to_str().unwrap()
                    );
                    let allow = req.uri().path().starts_with("/check/allow");
                    let resp = if allow {
                        http::Response::builder()
                            .status(200)
                            .header("x-user", "alice")
                            .header("x-seen", seen)
                            .body(Full::new(Bytes::new()))
                    } else {
                        http::Response::builder()
                            .status(401)
                            .header("www-authenticate", "Bearer")
                            .body(Full::new(Bytes::from("denied by provider")))
                    };
                    Ok::<_, Infallible>(resp.unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn custom_factory(address: String, fail_open: bool) -> AuthzFactory {
    let mut provider = ExtAuthzProvider::new("ext", address);
    provider.path_prefix = "/check".into();
    provider.headers_to_upstream = vec!["x-user".into(), "x-seen".into()];
    provider.fail_open = fail_open;
    provider.timeout = Duration::from_secs(2);
    let mut f = AuthzFactory::default();
    f.providers.insert("ext".into(), provider);
    f
}

const CUSTOM: &str = "action: CUSTOM\nprovider: {name: ext}\nrules: [{to: [{operation: {notPaths: [\"/public*\"]}}]}]";

#[tokio::test]
async fn ext_authz_allows_denies_and_fails_closed() {
    let addr = provider_server().await;
    let h = harness(
        custom_factory(addr.to_string(), false),
        &[policy("c", CUSTOM)],
    );

    // Allowed: the provider's header replaces the client's on the upstream request.
    let (d, req, _) = h.run(get("/allow/x?y=1")).await;
    assert!(matches!(d, Decision::Continue), "{d:?}");
    assert_eq!(req.headers().get_all("x-user").iter().count(), 1);
    assert_eq!(req.headers()["x-user"], "alice");
    assert_eq!(
        req.headers()["x-seen"],
        "GET /check/allow/x?y=1 principal=cluster.local/ns/default/sa/sleep host=httpbin.foo:8000"
    );

    // Denied: the client gets the provider's status, headers and body.
    let (d, _, ctx) = h.run(get("/private")).await;
    let Decision::Respond(resp) = d else {
        panic!("expected the provider's denial")
    };
    let (status, headers, body) = body_of(resp).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(&body[..], b"denied by provider");
    assert_eq!(
        ctx.response_flags,
        [ResponseFlag::UnauthorizedExternalService]
    );
    let rec = ctx.extensions.get::<AuthzDecision>().unwrap();
    assert_eq!((rec.allowed, rec.action.as_str()), (false, "CUSTOM"));

    // Requests the CUSTOM rules do not match never reach the provider.
    let (d, _, _) = h.run(get("/public/x")).await;
    assert!(matches!(d, Decision::Continue));
}

#[tokio::test]
async fn ext_authz_down_is_403_unless_fail_open() {
    // A port nothing listens on: bind, learn the port, close.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let closed = harness(
        custom_factory(addr.to_string(), false),
        &[policy("c", CUSTOM)],
    );
    let (d, _, ctx) = closed.run(get("/allow")).await;
    let Decision::Respond(resp) = d else {
        panic!("expected 403")
    };
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        ctx.response_flags,
        [ResponseFlag::UnauthorizedExternalService]
    );

    let open = harness(
        custom_factory(addr.to_string(), true),
        &[policy("c", CUSTOM)],
    );
    let (d, req, _) = open.run(get("/allow")).await;
    assert!(matches!(d, Decision::Continue));
    assert_eq!(req.headers()["x-user"], "forged");

    // fail-open does not bypass ALLOW/DENY policies.
    let both = harness(
        custom_factory(addr.to_string(), true),
        &[
            policy("c", CUSTOM),
            policy("d", "action: DENY\nrules: [{}]"),
        ],
    );
    let (d, _, _) = both.run(get("/allow")).await;
    assert!(matches!(d, Decision::Respond(r) if r.status() == StatusCode::FORBIDDEN));
}

#[tokio::test]
async fn ext_authz_timeout_fails_closed() {
    // Accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut factory = custom_factory(addr.to_string(), false);
    if let Some(p) = factory.providers.get_mut("ext") {
        p.timeout = Duration::from_millis(100);
    }
    let h = harness(factory, &[policy("c", CUSTOM)]);
    let (d, _, _) = h.run(get("/allow")).await;
    assert!(matches!(d, Decision::Respond(r) if r.status() == StatusCode::FORBIDDEN));
}
