//! A vendor filter named by a Gateway API `ExtensionRef`, with typed config.
//!
//! The vendor owns a kind, `RateTag` in `filters.example.com`: its `spec` says which header to
//! set and to what. An HTTPRoute rule names an object of that kind; the waypoint deserializes the
//! object's `spec` into the vendor's own `RateTagSpec` before the factory runs, so the factory
//! never touches JSON. A `spec` that does not fit is refused with the path of the field at
//! fault, on the route and on the `RateTag` object; the factory reports its own conditions on
//! the object too (here: a deprecated field).
//!
//! Run it with `cargo run -p waypoint-examples --example extension_ref`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use waypoint_core::filter::testing::{TestChain, service};
use waypoint_core::filter::{Decision, Extension, Filter, FilterSet, request_fn};
use waypoint_filters::Builtins;

/// The vendor's config type: the `spec` of a `RateTag` object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RateTagSpec {
    header: String,
    value: String,
    /// Deprecated: accepted, with a condition on the object saying so.
    #[serde(default)]
    legacy_mode: bool,
}

/// The typed factory: builds the filter a `RateTag` object describes.
fn rate_tag(mut ext: Extension<'_, RateTagSpec>) -> Result<Arc<dyn Filter>, String> {
    let name =
        HeaderName::try_from(ext.spec.header.as_str()).map_err(|e| format!("spec.header: {e}"))?;
    let value =
        HeaderValue::try_from(ext.spec.value.as_str()).map_err(|e| format!("spec.value: {e}"))?;
    if ext.spec.legacy_mode {
        ext.report(
            "Deprecated",
            "LegacyMode",
            "spec.legacyMode is deprecated and ignored",
        );
    }
    Ok(Arc::new(request_fn("rate-tag", move |req, _ctx| {
        req.headers_mut().insert(name.clone(), value.clone());
        Decision::Continue
    })))
}

/// The vendor's bundle: what it adds to a waypoint.
fn vendor(filters: &mut FilterSet) {
    filters.extension("filters.example.com", "RateTag", rate_tag);
}

/// The route naming the vendor object, and the object (its `spec` filled in per test).
const MANIFESTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: tagged, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - filters:
    - type: ExtensionRef
      extensionRef: {group: filters.example.com, kind: RateTag, name: gold}
    backendRefs: [{name: echo, port: 80}]
---
apiVersion: filters.example.com/v1
kind: RateTag
metadata: {name: gold, namespace: default}
spec: SPEC
"#;

fn chain(spec: &str) -> TestChain {
    let mut filters = FilterSet::new();
    filters.install(Builtins::default()).install(vendor);
    let manifests = format!(
        "{}---\n{}",
        service("echo", "10.96.0.10", 80),
        MANIFESTS.replace("SPEC", spec)
    );
    TestChain::new(&manifests, filters).expect("manifests parse")
}

#[tokio::main]
async fn main() {
    for spec in [
        "{header: x-rate-tier, value: gold}",
        "{header: x-rate-tier, value: gold, legacyMode: true}",
        "{header: x-rate-tier, value: [gold]}",
    ] {
        let chain = chain(spec);
        let exchange = chain.get("10.96.0.10:80", "/").await;
        println!("spec {spec}:");
        println!(
            "  x-rate-tier: {:?}",
            exchange.request.headers().get("x-rate-tier")
        );
        for r in chain.reports() {
            println!(
                "  {} {}={} {}",
                r.resource, r.condition, r.reason, r.message
            );
        }
    }
}

#[tokio::test]
async fn the_typed_spec_configures_the_vendor_filter() {
    let chain = chain("{header: x-rate-tier, value: gold}");
    assert!(chain.reports().is_empty(), "{:?}", chain.reports());
    let exchange = chain.get("10.96.0.10:80", "/").await;
    assert!(exchange.forwarded());
    assert_eq!(exchange.request.headers()["x-rate-tier"], "gold");
}

#[tokio::test]
async fn the_factory_reports_a_condition_on_its_own_object() {
    let chain = chain("{header: x-rate-tier, value: gold, legacyMode: true}");
    let report = chain
        .reports()
        .iter()
        .find(|r| r.resource.kind == "RateTag")
        .expect("a report on the RateTag object");
    assert_eq!(
        (report.condition.as_str(), report.reason.as_str()),
        ("Deprecated", "LegacyMode")
    );
    // A condition is not a refusal: the filter still runs.
    let exchange = chain.get("10.96.0.10:80", "/").await;
    assert_eq!(exchange.request.headers()["x-rate-tier"], "gold");
}

#[tokio::test]
async fn a_spec_that_does_not_fit_is_refused_with_its_field_path_on_route_and_object() {
    let chain = chain("{header: x-rate-tier, value: [gold]}");
    let on = |kind: &str| {
        chain
            .reports()
            .iter()
            .find(|r| r.resource.kind == kind)
            .map(|r| r.message.clone())
            .unwrap_or_else(|| panic!("no report on {kind}: {:?}", chain.reports()))
    };
    assert!(on("RateTag").contains("spec.value"), "{}", on("RateTag"));
    assert!(
        on("HTTPRoute").contains("spec.value"),
        "{}",
        on("HTTPRoute")
    );
    // The refused rule fails closed, as any invalid route filter does.
    let exchange = chain.get("10.96.0.10:80", "/").await;
    assert_eq!(
        exchange.status(),
        Some(http::StatusCode::INTERNAL_SERVER_ERROR)
    );
}
