//! TCPRoute and TLSRoute checks: the CRD's limits, and what every route gets (parents,
//! hostnames, unique rule names, backendRef weights and ports).
//!
//! The limits are the loosest of the versions the API server serves, since a manifest may be
//! written in any of them: `v1` allows exactly one rule, `v1alpha2` up to 16 (only the first
//! routes; see [`TcpRouteSpec::rules`](crate::config::resources::TcpRouteSpec)).

use super::routes::{check_backend_refs, check_route};
use super::{Check, ensure};
use crate::config::resources::{L4RouteRule, NoFilter, ParentReference, TcpRoute, TlsRoute};

const MAX_PARENT_REFS: usize = 32;
const MAX_RULES: usize = 16;
const MAX_BACKEND_REFS: usize = 16;
const MAX_HOSTNAMES: usize = 1024;

fn check_l4_route(
    parents: &[ParentReference],
    hostnames: &[String],
    rules: &[L4RouteRule],
) -> Check {
    ensure(parents.len() <= MAX_PARENT_REFS, || {
        format!("spec.parentRefs: at most {MAX_PARENT_REFS} entries")
    })?;
    ensure(hostnames.len() <= MAX_HOSTNAMES, || {
        format!("spec.hostnames: at most {MAX_HOSTNAMES} entries")
    })?;
    ensure((1..=MAX_RULES).contains(&rules.len()), || {
        format!(
            "spec.rules: needs 1 to {MAX_RULES} rules, has {}",
            rules.len()
        )
    })?;
    check_route(
        parents,
        hostnames,
        rules,
        |rule| rule.name.as_ref(),
        |at, rule| {
            let n = rule.backend_refs.len();
            ensure((1..=MAX_BACKEND_REFS).contains(&n), || {
                format!("{at}.backendRefs: needs 1 to {MAX_BACKEND_REFS} entries, has {n}")
            })?;
            // NoFilter is uninhabited: a `filters` entry already failed to parse.
            check_backend_refs(at, &rule.backend_refs, |_, _: &[NoFilter]| Ok(()))
        },
    )
}

pub(in crate::config) fn check_tcp_route(route: &TcpRoute) -> Check {
    check_l4_route(&route.spec.parent_refs, &[], &route.spec.rules)
}

pub(in crate::config) fn check_tls_route(route: &TlsRoute) -> Check {
    let spec = &route.spec;
    check_l4_route(&spec.parent_refs, &spec.hostnames, &spec.rules)
}
