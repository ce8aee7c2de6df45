//! What the route filter tells the upstream besides the backend: mirrors and retries, read
//! from the manifests.

use std::time::Duration;

use http::StatusCode;
use waypoint_core::filter::{MirrorTarget, RetryPolicy, Timeout, UpstreamTarget};

use super::{ECHO, ExtensionRegistry, Routed, route, routed};

impl Routed {
    async fn target_of(&self, path: &str) -> UpstreamTarget {
        let out = self.send(ECHO, None, http::Request::get(path)).await;
        assert_eq!(out.status, None, "{path} is forwarded");
        out.ctx.upstream.expect("an upstream is chosen")
    }
}

/// `namespace/name numerator/denominator` of each mirror.
fn mirrors(target: &UpstreamTarget) -> Vec<String> {
    target
        .mirrors
        .iter()
        .map(|m: &MirrorTarget| {
            let s = &m.backend.service;
            format!(
                "{}/{} {}/{}",
                s.namespace, s.name, m.numerator, m.denominator
            )
        })
        .collect()
}

#[tokio::test]
async fn rule_and_backend_mirrors_and_the_retry_reach_the_upstream() {
    let r = routed(
        &route(
            "mirrored",
            r#"  - matches: [{path: {value: /m}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-a, value: "1"}]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: v2, port: 80}, percent: 20}
    - type: RequestMirror
      requestMirror: {backendRef: {name: echo, port: 80}, fraction: {numerator: 25, denominator: 50}}
    backendRefs:
    - name: v1
      port: 80
      filters:
      - type: RequestMirror
        requestMirror: {backendRef: {name: v2, port: 80}}
    retry: {codes: [500, 503], attempts: 3, backoff: 100ms}
    timeouts: {request: 2s}
  - backendRefs: [{name: v1, port: 80}]
"#,
        ),
        &ExtensionRegistry::new(),
    );
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    let out = r.send(ECHO, None, http::Request::get("/m")).await;
    // The other filters of the rule still ran.
    assert_eq!(out.request.headers()["x-a"], "1");
    let target = out.ctx.upstream.unwrap();
    assert_eq!(target.backend.service.name, "v1");
    assert_eq!(
        mirrors(&target),
        ["default/v2 20/100", "default/echo 25/50", "default/v2 1/1"]
    );
    assert_eq!(
        target.retry.as_deref(),
        Some(&RetryPolicy {
            codes: vec![
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::SERVICE_UNAVAILABLE
            ],
            attempts: 3,
            backoff: Duration::from_millis(100),
        })
    );
    assert_eq!(
        target.request_timeout,
        Timeout::After(Duration::from_secs(2))
    );

    // The other rule has neither.
    let plain = r.target_of("/other").await;
    assert!(plain.mirrors.is_empty() && plain.retry.is_none());
}

#[tokio::test]
async fn retry_defaults_fill_what_the_rule_leaves_out() {
    let r = routed(
        &route(
            "retry",
            "  - retry: {codes: [502]}\n    backendRefs: [{name: v1, port: 80}]\n",
        ),
        &ExtensionRegistry::new(),
    );
    assert!(r.reports.is_empty(), "{:?}", r.reports);
    let retry = r.target_of("/").await.retry.unwrap();
    assert_eq!(retry.codes, [StatusCode::BAD_GATEWAY]);
    assert_eq!(retry.attempts, RetryPolicy::DEFAULT_ATTEMPTS);
    assert_eq!(retry.backoff, RetryPolicy::DEFAULT_BACKOFF);
}

#[tokio::test]
async fn an_unresolvable_mirror_is_reported_and_skipped_while_the_rule_serves() {
    let rules = r#"  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: nope, port: 80}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: other, namespace: elsewhere, port: 80}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: v2, port: 80}}
    backendRefs: [{name: v1, port: 80}]
"#;
    let r = routed(&route("mirrors", rules), &ExtensionRegistry::new());
    let reasons: Vec<_> = r
        .reports
        .iter()
        .map(|r| (r.condition.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(reasons, [("ResolvedRefs", "BackendNotFound")]);
    assert!(
        r.reports[0].message.starts_with(
            "spec.rules[0].filters[0].requestMirror.backendRef: Service default/nope not found"
        ),
        "{}",
        r.reports[0].message
    );
    let target = r.target_of("/").await;
    assert_eq!(target.backend.service.name, "v1");
    // A mesh route's mirror may be in another namespace without a ReferenceGrant (GEP-1294).
    assert_eq!(mirrors(&target), ["elsewhere/other 1/1", "default/v2 1/1"]);
}
