//! AuthorizationPolicy on connections the waypoint proxies as bytes (TCP, and TLS it passes
//! through): decided once, before the first byte goes upstream.
//!
//! Same policies, same order as for requests: the policies of the destination Service plus the
//! ones attached to this waypoint's Gateway or GatewayClass; CUSTOM, then DENY, then ALLOW
//! (none applies → allowed; none matches → denied); AUDIT only marks; `istio.io/dry-run`
//! policies are evaluated and logged, never enforced. A denied connection is closed with
//! `RBAC: access denied by ...` and the `RBAC` flag; the [`AuthzDecision`] is left in
//! `ConnectionContext::extensions` exactly as a request's, so the decision is counted in
//! `waypoint_authz_decisions_total`.
//!
//! # HTTP-only fields on a TCP connection
//!
//! A connection has a peer identity, a source address, a destination address and, for TLS, a
//! server name; it has no method, path, host, header or JWT. Which fields need those, and what
//! becomes of a rule that uses them, is what Istio's RBAC builder does for TCP filter chains
//! (`pilot/pkg/security/authz/model`: `generator.go`, `model.go`; `builder/builder.go`):
//!
//! - HTTP-only: `from.source.requestPrincipals`, `to.operation.hosts`, `.methods`, `.paths`,
//!   each with its `not*` twin, and the conditions `request.headers[..]`,
//!   `request.auth.principal`, `request.auth.audiences`, `request.auth.presenter`,
//!   `request.auth.claims[..]` (their generators fail "must not be used in TCP"). Everything
//!   else works on TCP: `principals`, `namespaces`, `serviceAccounts`, `ipBlocks`,
//!   `remoteIpBlocks` (no `X-Forwarded-For` here: the source address), `ports`, and the
//!   `source.*`, `remote.ip`, `destination.*` and `connection.sni` conditions.
//! - ALLOW: a rule that sets any HTTP-only field, positive or `not*`, anywhere in `from`, `to`
//!   or `when`, is dropped whole from the TCP chain: it never matches a connection (a smaller
//!   allow).
//! - DENY and AUDIT: the HTTP-only fields are dropped and the rest of the rule applies; a
//!   `from`/`to` entry left empty matches anything. So `to: [{operation: {methods: [GET]}}]`
//!   with `from: [{source: {namespaces: [x]}}]` denies every connection from namespace `x`
//!   (a wider deny).
//! - CUSTOM rules are generated with the DENY treatment (wider match).
//! - A policy with no rules matches nothing, on TCP as on HTTP.
//!
//! # CUSTOM on a connection
//!
//! Istio checks a TCP connection against a CUSTOM policy only with a gRPC ext_authz provider;
//! its builder skips CUSTOM policies whose provider is HTTP on TCP chains (so they let every
//! connection through), and denies every connection when the provider is unknown. The
//! providers this waypoint knows are HTTP (`envoyExtAuthzHttp`), which cannot judge a byte
//! stream. Rather than let a policy meant to restrict access silently allow, a matching CUSTOM
//! rule fails closed: the connection is denied (`CUSTOM`, flag `UAEX`) unless the provider is
//! configured fail-open, the same switch that lets requests through when it cannot be asked.
//! A matching CUSTOM rule with an unknown provider denies, as for requests.
//!
//! `connection.sni` matches the ClientHello's server name of a TLS connection passed through,
//! and is absent (only its `notValues` hold) for plain TCP.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use waypoint_core::config::Config;
use waypoint_core::filter::{AuthzDecision, ConnectionContext, ConnectionDecision};
use waypoint_core::flags::ResponseFlag;
use waypoint_core::identity::SpiffeId;

use super::matcher::Attrs;
use super::{AuthzFilter, Explanation, PolicySet, UncheckedCustom};

/// A connection, as [`PolicySet::explain_connection`] sees it: the TCP counterpart of
/// [`super::RequestAttributes`], with no method, path, host, headers or JWT.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionAttributes<'a> {
    /// The peer's proven identity; `None` is unauthenticated.
    pub identity: Option<&'a SpiffeId>,
    /// The source (peer) IP: the PROXY header's or the socket's.
    pub source: Option<IpAddr>,
    /// The original destination the client dialled.
    pub destination: Option<SocketAddr>,
    /// The ClientHello's server name, for TLS passed through.
    pub sni: Option<&'a str>,
}

impl PolicySet {
    /// Decides a TCP (or TLS passthrough) connection against the policies of its destination,
    /// with Istio's treatment of HTTP-only fields (see the module documentation). Needs no
    /// I/O: CUSTOM policies are settled here, so [`Explanation::custom`] is always empty.
    pub fn explain_connection(
        &self,
        config: &Config,
        conn: &ConnectionAttributes<'_>,
    ) -> Explanation {
        let empty = HeaderMap::new();
        let identity = conn.identity;
        let attrs = Attrs {
            principal: identity.map(SpiffeId::principal),
            namespace: identity.map(SpiffeId::namespace),
            service_account: identity.map(SpiffeId::service_account),
            source_ip: conn.source,
            remote_ip: conn.source,
            destination: conn.destination,
            method: "",
            host: "",
            path: "",
            headers: &empty,
            jwt: None,
            sni: conn.sni,
            l4: true,
        };
        let mut explained = self.evaluate(config, &attrs);
        // An unknown provider's denial (already decided) comes first, as for requests; then
        // each known provider, which cannot check a byte stream, decides by its fail-open flag.
        if explained.decision.allowed || explained.decision.action != "CUSTOM" {
            for check in std::mem::take(&mut explained.custom) {
                let let_through = self.custom_fail_open(&check);
                let denies = !let_through;
                if denies {
                    explained.decision = AuthzDecision {
                        allowed: false,
                        action: "CUSTOM".into(),
                        policy: Some(check.rule.policy.clone()),
                        rule: Some(check.rule.rule),
                        dry_run: false,
                    };
                }
                explained
                    .unchecked_custom
                    .push(UncheckedCustom { check, let_through });
                if denies {
                    break;
                }
            }
        }
        explained.custom.clear();
        explained
    }
}

impl PolicySet {
    /// Whether the provider of the CUSTOM policy of `check` is fail-open.
    fn custom_fail_open(&self, check: &super::CustomCheck) -> bool {
        self.all()
            .find(|p| p.resource == check.rule.policy)
            .is_some_and(|p| {
                matches!(
                    p.action,
                    super::Action::Custom {
                        fail_open: true,
                        ..
                    }
                )
            })
    }
}

impl AuthzFilter {
    /// The connection phase of the filter: see the module documentation.
    pub(super) fn decide_connection(&self, ctx: &mut ConnectionContext) -> ConnectionDecision {
        let explained = {
            let attrs = ConnectionAttributes {
                identity: ctx.conn.peer_identity.as_ref(),
                source: ctx.conn.source.map(|s| s.ip()),
                destination: ctx.conn.destination,
                sni: ctx.sni.as_deref(),
            };
            self.policies.explain_connection(&ctx.config, &attrs)
        };
        super::note_audit_and_dry_run(&explained, &mut ctx.extensions, "connection");
        for u in explained.unchecked_custom.iter().filter(|u| u.let_through) {
            tracing::warn!(
                policy = %u.check.rule.policy,
                provider = %u.check.provider,
                "authz: ext_authz cannot check a TCP connection; fail-open lets it through"
            );
        }
        let decision = explained.decision.clone();
        super::log_decision(&decision, || explained.reason());
        ctx.extensions.insert(decision.clone());
        if decision.allowed {
            return ConnectionDecision::Continue;
        }
        ctx.response_flags.push(if decision.action == "CUSTOM" {
            ResponseFlag::UnauthorizedExternalService
        } else {
            ResponseFlag::RbacAccessDenied
        });
        ConnectionDecision::Close(explained.reason().replacen("denied", super::DENIED_BODY, 1))
    }
}
