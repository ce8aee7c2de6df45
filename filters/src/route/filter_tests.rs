//! HTTPRoute RequestRedirect and URLRewrite in memory (CORS is in cors_tests), after the
//! upstream conformance cases (conformance/tests/{,mesh/}httproute-{redirect,rewrite}-*.go).

use http::StatusCode;
use waypoint_core::filter::ExtensionRegistry;

use super::tests::{ECHO, Outcome, Routed, route, routed};

/// A Service with two ports, for the listener-port rules (`web:80` and `web:8080`).
const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}, {name: alt, port: 8080}]
"#;

fn route_on(name: &str, service: &str, port: u16, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: {service}, port: {port}}}]\n  rules:\n{rules}"
    )
}

/// A rule matching `prefix` whose only filter is a redirect with `settings` (flow YAML).
fn redirect_rule(prefix: &str, settings: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {settings}}}]\n"
    )
}

fn valid(routes: &str) -> Routed {
    let r = routed(routes, &ExtensionRegistry::new());
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    let rejected: Vec<_> = r.config.statuses.iter().filter(|s| !s.is_ok()).collect();
    assert!(rejected.is_empty(), "{rejected:?}");
    r
}

/// Sends `path` with `Host: host` to `destination`; returns (status, Location).
async fn redirect_of(r: &Routed, destination: &str, host: &str, path: &str) -> (u16, String) {
    let out = r
        .send(
            destination,
            None,
            http::Request::get(path).header("host", host),
        )
        .await;
    assert!(out.upstream.is_none(), "a redirect contacts no backend");
    let resp = out.response.expect("the waypoint answers itself");
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status().as_u16(), location)
}

async fn check_redirects(r: &Routed, destination: &str, cases: &[(&str, &str, u16, &str)]) {
    for &(host, path, status, location) in cases {
        assert_eq!(
            redirect_of(r, destination, host, path).await,
            (status, location.to_owned()),
            "{host}{path}"
        );
    }
}

#[tokio::test]
async fn redirect_path_host_and_status() {
    let rules = [
        redirect_rule(
            "/original-prefix",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
        ),
        redirect_rule(
            "/full",
            "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}",
        ),
        redirect_rule(
            "/path-and-host",
            "{hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
        ),
        redirect_rule(
            "/path-and-status",
            "{statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
        ),
        redirect_rule(
            "/full-path-and-host",
            "{hostname: example.org, path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}}",
        ),
        redirect_rule(
            "/full-path-and-status",
            "{statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}}",
        ),
        redirect_rule("/hostname-redirect", "{hostname: example.org}"),
        redirect_rule(
            "/host-and-status",
            "{hostname: example.org, statusCode: 301}",
        ),
        redirect_rule("/redirect", "{statusCode: 303}"),
        redirect_rule("/temporary", "{statusCode: 307}"),
        redirect_rule("/permanent", "{statusCode: 308}"),
        redirect_rule(
            "/strip",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}",
        ),
    ];
    let r = valid(&route("redirect-path", &rules.concat()));
    check_redirects(
        &r,
        ECHO,
        &[
            (
                "echo",
                "/original-prefix/lemon",
                302,
                "http://echo/replacement-prefix/lemon",
            ),
            (
                "echo",
                "/full/path/original",
                302,
                "http://echo/full-path-replacement",
            ),
            (
                "echo",
                "/path-and-host",
                302,
                "http://example.org/replacement-prefix",
            ),
            (
                "echo",
                "/path-and-status",
                301,
                "http://echo/replacement-prefix",
            ),
            (
                "echo",
                "/full-path-and-host",
                302,
                "http://example.org/replacement-full",
            ),
            (
                "echo",
                "/full-path-and-status",
                301,
                "http://echo/replacement-full",
            ),
            (
                "echo",
                "/hostname-redirect",
                302,
                "http://example.org/hostname-redirect",
            ),
            (
                "echo",
                "/host-and-status",
                301,
                "http://example.org/host-and-status",
            ),
            ("echo", "/redirect", 303, "http://echo/redirect"),
            ("echo", "/temporary", 307, "http://echo/temporary"),
            ("echo", "/permanent", 308, "http://echo/permanent"),
            // The request's port is not the host's: it is dropped, and :80 is the default.
            ("echo:80", "/redirect", 303, "http://echo/redirect"),
            // The query survives a path replacement.
            (
                "echo",
                "/full/x?a=1&b=2",
                302,
                "http://echo/full-path-replacement?a=1&b=2",
            ),
            ("echo", "/strip/a/b", 302, "http://echo/a/b"),
            ("echo", "/strip", 302, "http://echo/"),
        ],
    )
    .await;
}

#[tokio::test]
async fn redirect_port_and_scheme() {
    let rules = [
        redirect_rule("/port", "{port: 8083}"),
        redirect_rule("/port-and-host", "{hostname: example.org, port: 8083}"),
        redirect_rule("/port-and-status", "{port: 8083, statusCode: 301}"),
        redirect_rule("/scheme", "{scheme: https}"),
        redirect_rule("/scheme-and-host", "{scheme: https, hostname: example.org}"),
        redirect_rule("/scheme-and-status", "{scheme: https, statusCode: 301}"),
    ];
    let r = valid(&route("redirect-port", &rules.concat()));
    check_redirects(
        &r,
        ECHO,
        &[
            ("echo", "/port", 302, "http://echo:8083/port"),
            (
                "echo",
                "/port-and-host",
                302,
                "http://example.org:8083/port-and-host",
            ),
            (
                "echo",
                "/port-and-status",
                301,
                "http://echo:8083/port-and-status",
            ),
            ("echo", "/scheme", 302, "https://echo/scheme"),
            (
                "echo",
                "/scheme-and-host",
                302,
                "https://example.org/scheme-and-host",
            ),
            (
                "echo",
                "/scheme-and-status",
                301,
                "https://echo/scheme-and-status",
            ),
        ],
    )
    .await;
}

/// httproute-redirect-port-and-scheme: the port the request arrived on is the default.
#[tokio::test]
async fn redirect_port_follows_the_listener_port() {
    let host = |settings: &str| format!("{{hostname: example.org, {settings}}}");
    let rules = [
        redirect_rule("/scheme-nil-and-port-nil", "{hostname: example.org}"),
        redirect_rule("/scheme-nil-and-port-80", &host("port: 80")),
        redirect_rule("/scheme-nil-and-port-8080", &host("port: 8080")),
        redirect_rule("/scheme-https-and-port-nil", &host("scheme: https")),
        redirect_rule(
            "/scheme-https-and-port-443",
            &host("scheme: https, port: 443"),
        ),
        redirect_rule(
            "/scheme-https-and-port-8443",
            &host("scheme: https, port: 8443"),
        ),
    ]
    .concat();
    let routes = format!(
        "{WEB}\n---\n{}\n---\n{}",
        route_on("on-80", "web", 80, &rules),
        route_on("on-8080", "web", 8080, &rules)
    );
    let r = valid(&routes);
    check_redirects(
        &r,
        "10.96.0.20:80",
        &[
            (
                "web",
                "/scheme-nil-and-port-nil",
                302,
                "http://example.org/scheme-nil-and-port-nil",
            ),
            (
                "web",
                "/scheme-nil-and-port-80",
                302,
                "http://example.org/scheme-nil-and-port-80",
            ),
            (
                "web",
                "/scheme-nil-and-port-8080",
                302,
                "http://example.org:8080/scheme-nil-and-port-8080",
            ),
            (
                "web",
                "/scheme-https-and-port-nil",
                302,
                "https://example.org/scheme-https-and-port-nil",
            ),
            (
                "web",
                "/scheme-https-and-port-443",
                302,
                "https://example.org/scheme-https-and-port-443",
            ),
            (
                "web",
                "/scheme-https-and-port-8443",
                302,
                "https://example.org:8443/scheme-https-and-port-8443",
            ),
        ],
    )
    .await;
    check_redirects(
        &r,
        "10.96.0.20:8080",
        &[
            (
                "web:8080",
                "/scheme-nil-and-port-nil",
                302,
                "http://example.org:8080/scheme-nil-and-port-nil",
            ),
            (
                "web:8080",
                "/scheme-nil-and-port-80",
                302,
                "http://example.org/scheme-nil-and-port-80",
            ),
            (
                "web:8080",
                "/scheme-https-and-port-nil",
                302,
                "https://example.org/scheme-https-and-port-nil",
            ),
        ],
    )
    .await;
    // Without a hostname the request's host is kept, its port replaced by the listener's.
    let r = valid(&format!(
        "{WEB}\n---\n{}",
        route_on(
            "keep-host",
            "web",
            8080,
            &redirect_rule("/", "{statusCode: 301}")
        )
    ));
    check_redirects(
        &r,
        "10.96.0.20:8080",
        &[("web:8080", "/a?b", 301, "http://web:8080/a?b")],
    )
    .await;
}

#[tokio::test]
async fn redirect_filters_before_it_still_edit_the_response() {
    let r = valid(&route(
        "redirect-headers",
        r#"  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-by, value: waypoint}]}
    - type: RequestRedirect
      requestRedirect: {hostname: example.org}
"#,
    ));
    let out = r
        .send(ECHO, None, http::Request::get("/x").header("host", "echo"))
        .await;
    let resp = out.response.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], "http://example.org/x");
    assert_eq!(resp.headers()["x-by"], "waypoint");
}

/// The request as the backend would see it: (upstream, path with query, Host).
fn forwarded(out: &Outcome) -> (String, String, String) {
    assert_eq!(out.status, None, "forwarded, not answered");
    let host = out
        .request
        .headers()
        .get("host")
        .map(|h| h.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        out.upstream.clone().unwrap_or_default(),
        out.request.uri().path_and_query().unwrap().to_string(),
        host,
    )
}

fn rewrite_rule(prefix: &str, settings: &str, extra: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - {{type: URLRewrite, urlRewrite: {settings}}}\n{extra}    backendRefs: [{{name: v1, port: 80}}]\n"
    )
}

const MODIFY_HEADERS: &str = "    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set: [{name: X-Header-Set, value: set-overwrites-values}]\n        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]\n        remove: [X-Header-Remove]\n";

#[tokio::test]
async fn rewrite_path() {
    let prefix =
        |to: &str| format!("{{path: {{type: ReplacePrefixMatch, replacePrefixMatch: {to}}}}}");
    let full = |to: &str| format!("{{path: {{type: ReplaceFullPath, replaceFullPath: {to}}}}}");
    let rules = [
        rewrite_rule("/prefix/one", &prefix("/one"), ""),
        rewrite_rule("/strip-prefix", &prefix("/"), ""),
        rewrite_rule("/full/one", &full("/one"), ""),
        rewrite_rule(
            "/full/rewrite-path-and-modify-headers",
            &full("/test"),
            MODIFY_HEADERS,
        ),
        rewrite_rule(
            "/prefix/rewrite-path-and-modify-headers",
            &prefix("/prefix"),
            MODIFY_HEADERS,
        ),
    ];
    let r = valid(&route("rewrite-path", &rules.concat()));
    for (path, want) in [
        ("/prefix/one/two", "/one/two"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/full/one/two", "/one"),
        ("/prefix/one/two?x=1", "/one/two?x=1"),
        ("/prefix/onetwo", "404"),
    ] {
        let out = r
            .send(ECHO, None, http::Request::get(path).header("host", "echo"))
            .await;
        if want == "404" {
            assert_eq!(out.status, Some(StatusCode::NOT_FOUND), "{path}");
            continue;
        }
        let (upstream, got, host) = forwarded(&out);
        assert_eq!(
            (upstream.as_str(), got.as_str(), host.as_str()),
            ("default/v1", want, "echo"),
            "{path}"
        );
    }
    for (path, want) in [
        ("/full/rewrite-path-and-modify-headers/test", "/test"),
        ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ] {
        let req = http::Request::get(path)
            .header("X-Header-Remove", "remove-val")
            .header("X-Header-Add-Append", "append-val-1")
            .header("X-Header-Set", "set-val");
        let out = r.send(ECHO, None, req).await;
        assert_eq!(forwarded(&out).1, want);
        let h = out.request.headers();
        assert_eq!(h["x-header-add"], "header-val-1");
        let appended: Vec<_> = h.get_all("x-header-add-append").iter().collect();
        assert_eq!(appended, ["append-val-1", "header-val-2"]);
        assert_eq!(h["x-header-set"], "set-overwrites-values");
        assert!(!h.contains_key("x-header-remove"));
    }
}

#[tokio::test]
async fn rewrite_host() {
    let rules = format!(
        "{}{}  - filters:\n    - {{type: URLRewrite, urlRewrite: {{hostname: example.org}}}}\n    backendRefs: [{{name: v2, port: 80}}]\n",
        rewrite_rule("/one", "{hostname: one.example.org}", ""),
        rewrite_rule(
            "/rewrite-host-and-modify-headers",
            "{hostname: test.example.org}",
            MODIFY_HEADERS
        ),
    );
    let r = valid(&route("rewrite-host", &rules));
    let send = |path: &'static str| {
        r.send(
            ECHO,
            None,
            http::Request::get(path)
                .header("host", "rewrite.example")
                .header("X-Header-Remove", "remove-val"),
        )
    };
    let at = |u: &str, p: &str, h: &str| (u.to_owned(), p.to_owned(), h.to_owned());
    assert_eq!(
        forwarded(&send("/one").await),
        at("default/v1", "/one", "one.example.org")
    );
    assert_eq!(
        forwarded(&send("/two").await),
        at("default/v2", "/two", "example.org")
    );
    let out = send("/rewrite-host-and-modify-headers").await;
    assert_eq!(
        forwarded(&out),
        at(
            "default/v1",
            "/rewrite-host-and-modify-headers",
            "test.example.org"
        )
    );
    assert!(!out.request.headers().contains_key("x-header-remove"));

    // An HTTP/2 request names its host in the URI: that is rewritten too.
    let out = r
        .send(ECHO, None, http::Request::get("http://echo:80/one?q"))
        .await;
    assert_eq!(out.request.uri(), "http://one.example.org/one?q");
    assert_eq!(out.request.headers()["host"], "one.example.org");
}

/// A backend's own ReplacePrefixMatch replaces the prefix of whichever match selected the rule.
#[tokio::test]
async fn backend_rewrite_uses_the_match_that_matched() {
    let r = valid(&route(
        "backend-rewrite",
        r#"  - matches: [{path: {value: /a}}, {path: {value: /b/c}}]
    backendRefs:
    - name: v1
      port: 80
      filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}]
"#,
    ));
    for (path, want) in [("/a/1", "/x/1"), ("/b/c/2", "/x/2"), ("/b/c", "/x")] {
        let out = r.send(ECHO, None, http::Request::get(path)).await;
        assert_eq!(forwarded(&out).1, want, "{path}");
    }
}

/// Rules the API server would refuse are refused with the field at fault; rules only the
/// waypoint can judge are reported and answer 500.
#[tokio::test]
async fn invalid_filter_combinations_name_the_field() {
    let rejected = |rules: &str| {
        let r = routed(&route("bad", rules), &ExtensionRegistry::new());
        let status = r.config.statuses.iter().find(|s| !s.is_ok()).cloned();
        let message = status
            .map(|s| {
                s.conditions
                    .iter()
                    .map(|c| c.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        (r, message)
    };
    let (_, why) = rejected(
        "  - matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n    backendRefs: [{name: v1, port: 80}]\n",
    );
    assert!(
        why.contains("spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch"),
        "{why}"
    );
    let (_, why) = rejected(
        "  - filters: [{type: URLRewrite, urlRewrite: {hostname: a.example}}, {type: RequestRedirect, requestRedirect: {port: 8080}}]\n",
    );
    assert!(
        why.contains("RequestRedirect and URLRewrite cannot be used together"),
        "{why}"
    );
    let (_, why) = rejected(
        "  - filters: [{type: RequestRedirect, requestRedirect: {port: 1}}, {type: RequestRedirect, requestRedirect: {port: 2}}]\n",
    );
    assert!(
        why.contains("spec.rules[0].filters[1].type: RequestRedirect may appear only once"),
        "{why}"
    );
    let (_, why) = rejected(
        "  - filters: [{type: RequestRedirect, requestRedirect: {port: 1}}]\n    backendRefs: [{name: v1, port: 80}]\n",
    );
    assert!(
        why.contains("cannot be used together with backendRefs"),
        "{why}"
    );

    // A backend-level ReplacePrefixMatch under an Exact match: the config checks cannot see
    // it, the route filter can.
    let (r, _) = rejected(
        "  - matches: [{path: {type: Exact, value: /a}}]\n    backendRefs:\n    - name: v1\n      port: 80\n      filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n",
    );
    let report = &r.reports[0];
    assert_eq!(report.reason, "UnsupportedValue");
    assert!(
        report
            .message
            .contains("spec.rules[0].backendRefs[0].filters[0].urlRewrite.path.replacePrefixMatch"),
        "{}",
        report.message
    );
    assert_eq!(
        r.send(ECHO, None, http::Request::get("/a")).await.status,
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    );
}
