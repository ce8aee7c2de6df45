//! What a decision is made of, for people and for the filters after this one: the request
//! attributes [`super::explain`] reads, the [`Explanation`] it returns (deciding policy and
//! rule, pending CUSTOM checks, AUDIT matches, the dry-run shadow decision) and the markers
//! the filter leaves in the request's or connection's extensions.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use waypoint_core::config::ResourceRef;
use waypoint_core::filter::{AuthzDecision, RequestPrincipal};
use waypoint_core::identity::SpiffeId;

/// What enforcing the `istio.io/dry-run` policies too would have decided; present in
/// `RequestContext::extensions` when a dry-run policy applies to the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzDryRun(pub AuthzDecision);

/// One rule of one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// The policy.
    pub policy: ResourceRef,
    /// The index of the rule in `spec.rules`.
    pub rule: usize,
}

/// The AUDIT policies that matched a request, in `RequestContext::extensions` when any did:
/// the request should be audit-logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzAudit(pub Vec<PolicyRule>);

/// A CUSTOM policy whose rules matched: the request also needs its provider's approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomCheck {
    /// The policy and its matching rule.
    pub rule: PolicyRule,
    /// `spec.provider.name`.
    pub provider: String,
}

/// A request, as [`super::explain`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttributes<'a> {
    /// The peer's proven identity; `None` is unauthenticated.
    pub identity: Option<&'a SpiffeId>,
    /// The source (peer) IP: the PROXY header's or `forwarded` source.
    pub source: Option<IpAddr>,
    /// The original destination the client dialled.
    pub destination: Option<SocketAddr>,
    /// The HTTP method.
    pub method: &'a str,
    /// `Host` / `:authority`, port included if sent.
    pub host: &'a str,
    /// The request target as received (`/path?query`); normalized before matching.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The validated JWT's principal, if any.
    pub request_principal: Option<&'a RequestPrincipal>,
}

/// Why a request would be allowed or denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The enforced decision. A match of a CUSTOM policy with an unknown provider denies here;
    /// other CUSTOM policies are in `custom` (they need I/O).
    pub decision: AuthzDecision,
    /// CUSTOM policies that matched, in order: their providers must also allow the request.
    pub custom: Vec<CustomCheck>,
    /// AUDIT policies that matched.
    pub audit: Vec<PolicyRule>,
    /// What enforcing dry-run policies too would decide, when any applied.
    pub dry_run: Option<AuthzDecision>,
    /// The normalized request target, when normalization changed it.
    pub normalized_path: Option<String>,
    /// For a connection: the CUSTOM policies that matched it, which its HTTP ext_authz
    /// providers cannot check (`custom` is then empty: nothing is left to ask).
    pub unchecked_custom: Vec<UncheckedCustom>,
}

/// A CUSTOM policy that matched a TCP connection its ext_authz provider cannot check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UncheckedCustom {
    /// The policy, its matching rule and provider.
    pub check: CustomCheck,
    /// The provider is fail-open, so the connection went on; otherwise it was denied here.
    pub let_through: bool,
}

impl Explanation {
    /// A sentence for people: the decision, the deciding policy and rule, pending CUSTOM checks.
    pub fn reason(&self) -> String {
        let d = &self.decision;
        let by = |what: &str| match (&d.policy, d.rule) {
            (Some(p), Some(r)) => format!("{what} by {} policy {p} rule {r}", d.action),
            _ => what.to_owned(),
        };
        let mut out = match (d.allowed, d.action.as_str(), d.policy.is_some()) {
            (true, "NONE", _) => "allowed: no ALLOW policy applies".to_owned(),
            (false, "ALLOW", false) => "denied: ALLOW policies apply but none matches".to_owned(),
            (false, "CUSTOM", _) if self.unchecked_custom.iter().any(|u| !u.let_through) => {
                format!(
                    "{} (its ext_authz provider checks HTTP requests and cannot check a TCP \
                 connection; it is not fail-open)",
                    by("denied")
                )
            }
            (false, "CUSTOM", _) => format!("{} (its ext_authz provider is unknown)", by("denied")),
            (true, ..) => by("allowed"),
            (false, ..) => by("denied"),
        };
        for c in &self.custom {
            out.push_str(&format!(
                "; needs ext_authz provider {:?} to allow (CUSTOM policy {} rule {})",
                c.provider, c.rule.policy, c.rule.rule
            ));
        }
        for u in self.unchecked_custom.iter().filter(|u| u.let_through) {
            out.push_str(&format!(
                "; CUSTOM policy {} rule {} not checked: ext_authz provider {:?} cannot check a \
                 TCP connection and is fail-open",
                u.check.rule.policy, u.check.rule.rule, u.check.provider
            ));
        }
        for a in &self.audit {
            out.push_str(&format!("; audited by {} rule {}", a.policy, a.rule));
        }
        if let Some(shadow) = &self.dry_run
            && shadow.allowed != d.allowed
        {
            let verb = if shadow.allowed { "allow" } else { "deny" };
            out.push_str(&format!("; dry-run policies would {verb} it"));
        }
        out
    }
}
