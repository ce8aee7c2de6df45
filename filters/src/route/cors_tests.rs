//! CORS in memory, after upstream conformance/tests/httproute-cors.go: preflights answered by
//! the waypoint, actual requests forwarded and their responses given the CORS headers.

use http::StatusCode;
use waypoint_core::body;
use waypoint_core::filter::ExtensionRegistry;

use super::tests::{ECHO, Outcome, Routed, route, routed};

const ROUTES: &str = r#"  - matches: [{path: {value: /cors-1}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {value: /cors-2}}]
    filters: [{type: CORS, cors: {allowOrigins: ["https://www.foo.com"], allowMethods: ["*"]}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {value: /cors-wildcard-origin}}]
    filters: [{type: CORS, cors: {allowOrigins: ["*"], allowMethods: [PUT], allowCredentials: false}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {value: /cors-wildcard-methods-headers}}]
    filters: [{type: CORS, cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], allowCredentials: true}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {value: /cors-wildcard-methods-headers-unauth}}]
    filters: [{type: CORS, cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], allowCredentials: false}}]
    backendRefs: [{name: v1, port: 80}]
"#;

fn cors() -> Routed {
    let r = routed(&route("cors", ROUTES), &ExtensionRegistry::new());
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    assert!(r.config.statuses.iter().all(|s| s.is_ok()));
    r
}

/// The response headers of a request: the waypoint's own answer for a preflight, else a 200
/// from the backend after the response phase.
async fn response(r: &Routed, method: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut out = r.send(ECHO, None, req).await;
    if out.response.is_none() {
        assert_eq!(out.upstream.as_deref(), Some("default/v1"));
        let mut resp = http::Response::new(body::empty());
        r.chain.run_response(&mut resp, &mut out.ctx).await;
        out.response = Some(resp);
    }
    out
}

fn header<'o>(out: &'o Outcome, name: &str) -> Option<&'o str> {
    let resp = out.response.as_ref().unwrap();
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

const PREFLIGHT: &[(&str, &str)] = &[
    ("access-control-request-method", "GET"),
    ("access-control-request-headers", "x-header-1, x-header-2"),
];

#[tokio::test]
async fn preflight_from_allowed_origins_is_answered_with_the_policy() {
    let r = cors();
    for origin in [
        "https://www.foo.com",
        "https://www.bar.com",
        "https://xpto.www.bar.com",
    ] {
        let headers = [PREFLIGHT, &[("origin", origin)]].concat();
        let out = response(&r, "OPTIONS", "/cors-1", &headers).await;
        assert!(
            out.upstream.is_none(),
            "a preflight never reaches the backend"
        );
        assert_eq!(out.status, Some(StatusCode::OK));
        assert_eq!(header(&out, "access-control-allow-origin"), Some(origin));
        assert_eq!(
            header(&out, "access-control-allow-methods"),
            Some("GET, OPTIONS")
        );
        assert_eq!(
            header(&out, "access-control-allow-headers"),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(
            header(&out, "access-control-expose-headers"),
            Some("x-header-3, x-header-4")
        );
        assert_eq!(header(&out, "access-control-max-age"), Some("3600"));
        assert_eq!(
            header(&out, "access-control-allow-credentials"),
            Some("true")
        );
    }
    let out = response(
        &r,
        "OPTIONS",
        "/cors-1",
        &[
            ("origin", "https://foobar.com"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(out.status, Some(StatusCode::OK));
    assert_eq!(header(&out, "access-control-allow-origin"), None);
    assert_eq!(header(&out, "access-control-allow-methods"), None);
}

#[tokio::test]
async fn actual_requests_get_the_allow_origin_of_allowed_origins_only() {
    let r = cors();
    for origin in ["https://www.foo.com", "https://www.bar.com"] {
        let headers = [PREFLIGHT, &[("origin", origin)]].concat();
        let out = response(&r, "GET", "/cors-1", &headers).await;
        assert_eq!(header(&out, "access-control-allow-origin"), Some(origin));
        assert_eq!(
            header(&out, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            header(&out, "access-control-expose-headers"),
            Some("x-header-3, x-header-4")
        );
        assert_eq!(header(&out, "vary"), Some("origin"));
    }
    let out = response(&r, "GET", "/cors-1", &[("origin", "https://foobar.com")]).await;
    assert_eq!(header(&out, "access-control-allow-origin"), None);
    assert_eq!(header(&out, "access-control-allow-credentials"), None);
    // Not a CORS request at all: nothing added.
    let out = response(&r, "GET", "/cors-1", &[]).await;
    assert!(out.response.unwrap().headers().is_empty());
    // OPTIONS without Access-Control-Request-Method is an ordinary request, forwarded.
    let out = response(
        &r,
        "OPTIONS",
        "/cors-1",
        &[("origin", "https://www.foo.com")],
    )
    .await;
    assert_eq!(out.upstream.as_deref(), Some("default/v1"));
}

#[tokio::test]
async fn wildcards_echo_and_credentials_are_only_sent_when_allowed() {
    let r = cors();
    let preflight = |path: &'static str, origin: &'static str, method: &'static str| {
        let headers = vec![
            ("origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", "x-header-1, x-header-2"),
        ];
        let r = &r;
        async move { response(r, "OPTIONS", path, &headers).await }
    };
    let out = preflight("/cors-2", "https://www.foo.com", "POST").await;
    assert_eq!(header(&out, "access-control-allow-methods"), Some("POST"));
    assert_eq!(
        header(&out, "access-control-allow-origin"),
        Some("https://www.foo.com")
    );
    assert_eq!(header(&out, "access-control-allow-credentials"), None);

    for origin in ["https://foobar.com", "https://foobar.com:12345"] {
        let out = preflight("/cors-wildcard-origin", origin, "PUT").await;
        assert_eq!(header(&out, "access-control-allow-origin"), Some(origin));
        assert_eq!(header(&out, "access-control-allow-methods"), Some("PUT"));
        assert_eq!(header(&out, "access-control-allow-credentials"), None);
        let out = response(&r, "PUT", "/cors-wildcard-origin", &[("origin", origin)]).await;
        assert_eq!(header(&out, "access-control-allow-origin"), Some(origin));
        assert_eq!(header(&out, "access-control-allow-credentials"), None);
    }

    // With credentials `*` is never answered: origin, method and headers are echoed.
    let out = preflight(
        "/cors-wildcard-methods-headers",
        "https://other.foo.com",
        "PUT",
    )
    .await;
    assert_eq!(
        header(&out, "access-control-allow-origin"),
        Some("https://other.foo.com")
    );
    assert_eq!(header(&out, "access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        header(&out, "access-control-allow-headers"),
        Some("x-header-1, x-header-2")
    );
    assert_eq!(
        header(&out, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&out, "access-control-max-age"),
        Some("5"),
        "the default"
    );
    let out = preflight(
        "/cors-wildcard-methods-headers-unauth",
        "https://other.foo.com",
        "PUT",
    )
    .await;
    assert_eq!(
        header(&out, "access-control-allow-origin"),
        Some("https://other.foo.com")
    );
    assert_eq!(header(&out, "access-control-allow-credentials"), None);

    let get = |path: &'static str| {
        let r = &r;
        async move { response(r, "GET", path, &[("origin", "https://other.foo.com")]).await }
    };
    let out = get("/cors-wildcard-methods-headers").await;
    assert_eq!(
        header(&out, "access-control-allow-origin"),
        Some("https://other.foo.com")
    );
    assert_eq!(
        header(&out, "access-control-allow-credentials"),
        Some("true")
    );
    let out = get("/cors-wildcard-methods-headers-unauth").await;
    assert_eq!(
        header(&out, "access-control-allow-origin"),
        Some("https://other.foo.com")
    );
    assert_eq!(header(&out, "access-control-allow-credentials"), None);
}

#[tokio::test]
async fn invalid_origin_is_reported_with_its_field() {
    let r = routed(
        &route(
            "bad-cors",
            "  - filters: [{type: CORS, cors: {allowOrigins: [\"https://ok.example\", \"not an origin\"]}}]\n    backendRefs: [{name: v1, port: 80}]\n",
        ),
        &ExtensionRegistry::new(),
    );
    let report = &r.reports[0];
    assert!(
        report
            .message
            .contains("spec.rules[0].filters[0].cors.allowOrigins[1]"),
        "{}",
        report.message
    );
    assert_eq!(
        r.send(ECHO, None, http::Request::get("/")).await.status,
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    );
}
