//! A rule's instructions for the upstream beyond the backend itself: its RequestMirror filters
//! (each mirror backend resolved like a backendRef) and its retry policy.

use std::sync::Arc;

use http::StatusCode;
use waypoint_core::config::resources::{
    HttpBackendRef, HttpRoute, HttpRouteFilter, HttpRouteFilterType, HttpRouteRetry, Object,
};
use waypoint_core::filter::{BuildContext, BuildReport, MirrorTarget, RetryPolicy};

use super::compile::resolve_backend;

/// The mirrors of the RequestMirror filters among `filters` (at `field`). A mirror whose
/// backend cannot be resolved is reported (`ResolvedRefs`, with the upstream reason) and left
/// out: the rule still serves, without that copy.
pub(super) fn compile_mirrors(
    cx: &mut BuildContext<'_>,
    route: &HttpRoute,
    filters: &[HttpRouteFilter],
    field: &str,
) -> Vec<MirrorTarget> {
    let mut mirrors = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        let Some(m) = filter
            .request_mirror
            .as_ref()
            .filter(|_| filter.kind == HttpRouteFilterType::RequestMirror)
        else {
            continue;
        };
        let r = &m.backend_ref;
        let as_backend_ref = HttpBackendRef {
            group: r.group.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            port: r.port,
            weight: 1,
            filters: Vec::new(),
        };
        let at = format!("{field}[{i}].requestMirror.backendRef");
        match resolve_backend(cx.config(), route, &as_backend_ref, &at) {
            Ok(backend) => {
                let mirror = MirrorTarget::new(backend);
                mirrors.push(match (m.percent, m.fraction) {
                    (Some(p), _) => mirror.percent(p),
                    (None, Some(f)) => mirror.fraction(f.numerator, f.denominator),
                    (None, None) => mirror,
                });
            }
            Err((reason, message)) => cx.report(BuildReport {
                resource: route.resource_ref(),
                condition: "ResolvedRefs".into(),
                reason: reason.into(),
                message: format!("{message}; requests are not mirrored there"),
            }),
        }
    }
    mirrors
}

/// The rule's `retry`, with the waypoint's defaults for what it leaves unset.
pub(super) fn compile_retry(retry: Option<&HttpRouteRetry>) -> Option<Arc<RetryPolicy>> {
    let retry = retry?;
    Some(Arc::new(RetryPolicy {
        // Validation kept the codes to 400-599.
        codes: retry
            .codes
            .iter()
            .filter_map(|&c| StatusCode::from_u16(c).ok())
            .collect(),
        attempts: retry.attempts.unwrap_or(RetryPolicy::DEFAULT_ATTEMPTS),
        backoff: retry.backoff.map_or(RetryPolicy::DEFAULT_BACKOFF, |d| d.0),
    }))
}
