//! A vendor's token filter feeds AuthorizationPolicy through core's `RequestPrincipal`, with no
//! dependency on the built-in RequestAuthentication.

use http::StatusCode;
use waypoint_core::body;
use waypoint_core::filter::testing::{TestChain, conn_as};
use waypoint_core::filter::{Decision, FilterSet, RequestPrincipal, request_fn};
use waypoint_filters::Builtins;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 8000}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tokens-only, namespace: foo}
spec:
  targetRefs: [{kind: Service, group: "", name: httpbin}]
  rules: [{from: [{source: {requestPrincipals: ["vendor.example/alice"]}}]}]
"#;

const SLEEP: &str = "spiffe://cluster.local/ns/foo/sa/sleep";

/// A vendor token filter: trusts `x-vendor-user` (its own scheme) and records the principal.
fn vendor_tokens(filters: &mut FilterSet) {
    filters.filter(request_fn("vendor-tokens", |req, ctx| {
        if let Some(user) = req
            .headers()
            .get("x-vendor-user")
            .and_then(|v| v.to_str().ok())
        {
            ctx.extensions.insert(RequestPrincipal {
                principal: format!("vendor.example/{user}"),
                ..Default::default()
            });
        }
        Decision::Continue
    }));
}

async fn status_as(user: Option<&str>) -> Option<StatusCode> {
    let mut filters = FilterSet::new();
    // Installed before the built-ins, so its principal is there when authorization runs.
    filters.install(vendor_tokens).install(Builtins::default());
    let chain = TestChain::new(MANIFESTS, filters).expect("manifests parse");
    assert!(chain.reports().is_empty(), "{:?}", chain.reports());
    let mut req = http::Request::get("/");
    if let Some(user) = user {
        req = req.header("x-vendor-user", user);
    }
    let req = req.body(body::empty()).expect("valid request");
    chain
        .send(conn_as("10.96.0.10:8000", SLEEP), req)
        .await
        .status()
}

#[tokio::test]
async fn a_principal_from_a_vendor_filter_matches_request_principals() {
    assert_eq!(
        status_as(Some("alice")).await,
        None,
        "allowed and forwarded"
    );
}

#[tokio::test]
async fn without_the_vendor_principal_the_policy_denies() {
    assert_eq!(status_as(None).await, Some(StatusCode::FORBIDDEN));
    assert_eq!(
        status_as(Some("mallory")).await,
        Some(StatusCode::FORBIDDEN)
    );
}
