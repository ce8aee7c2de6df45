//! The compiled policies of one config snapshot ([`PolicySet`]) and their evaluation in Istio's
//! order: CUSTOM deny, then DENY, then ALLOW (none applies: allowed; none matches: denied);
//! AUDIT marks; dry-run policies decide only the shadow decision.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use waypoint_core::config::{Config, ResourceRef};
use waypoint_core::filter::AuthzDecision;
use waypoint_core::identity::SpiffeId;

use super::matcher::{Attrs, RuleMatch};
use super::normalize::{NormalizeError, PathNormalization, check_method, normalize_path};
use super::{CustomCheck, Explanation, PolicyRule, RequestAttributes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Allow,
    Deny,
    Audit,
    /// `known`: the provider is configured; a match of an unknown one denies. `fail_open`:
    /// the provider lets requests through when it cannot be asked (a TCP connection, which an
    /// HTTP ext_authz provider cannot check, is one such case).
    Custom {
        provider: String,
        known: bool,
        fail_open: bool,
    },
}

#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub(super) resource: ResourceRef,
    pub(super) action: Action,
    pub(super) dry_run: bool,
    /// Empty: the policy never matches.
    pub(super) rules: Vec<RuleMatch>,
}

impl CompiledPolicy {
    /// The first rule matching `a`. On a connection, an ALLOW rule that sets an HTTP-only
    /// field is skipped (Istio drops it from TCP filter chains); other actions match with those
    /// fields ignored.
    fn first_match(&self, a: &Attrs<'_>) -> Option<usize> {
        let skip_http = a.l4 && self.action == Action::Allow;
        self.rules
            .iter()
            .position(|r| !(skip_http && r.needs_http()) && r.matches(a))
    }
}

/// Every policy this waypoint enforces, compiled, indexed by where it applies. Immutable; one
/// per config snapshot.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Attached to this waypoint's Gateway or GatewayClass: they see every request.
    pub(super) everywhere: Vec<Arc<CompiledPolicy>>,
    /// Attached to a Service or ServiceEntry (as backends name it): its policies.
    pub(super) by_service: HashMap<ResourceRef, Vec<Arc<CompiledPolicy>>>,
    pub(super) normalization: PathNormalization,
    pub(super) xff_trusted_hops: Option<usize>,
}

impl PolicySet {
    fn applicable<'s>(
        &'s self,
        service: Option<&ResourceRef>,
    ) -> impl Iterator<Item = &'s CompiledPolicy> + 's {
        let own = service
            .and_then(|s| self.by_service.get(s))
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.everywhere.iter().chain(own).map(|p| &**p)
    }

    /// The policies that apply to requests for Service `namespace`/`name` (or, with `None`, to
    /// requests whose destination is no known Service), in evaluation order.
    pub fn policies_for(&self, service: Option<(&str, &str)>) -> Vec<&ResourceRef> {
        let service = service.map(|(ns, name)| ResourceRef::new("Service", ns, name));
        self.applicable(service.as_ref())
            .map(|p| &p.resource)
            .collect()
    }

    /// Every compiled policy, once per target.
    pub(super) fn all(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.everywhere
            .iter()
            .chain(self.by_service.values().flatten())
    }

    /// The number of compiled policies (each counted once, however many targets it has).
    pub fn len(&self) -> usize {
        let mut seen: Vec<*const CompiledPolicy> = self.all().map(Arc::as_ptr).collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }

    /// True when no policy is enforced.
    pub fn is_empty(&self) -> bool {
        self.everywhere.is_empty() && self.by_service.is_empty()
    }

    /// The original client address: the `X-Forwarded-For` entry chosen by `xff_trusted_hops`,
    /// else the source address.
    fn remote_ip(&self, req: &RequestAttributes<'_>) -> Option<IpAddr> {
        let hops = self.xff_trusted_hops;
        if hops == Some(0) {
            return req.source;
        }
        let xff: Vec<&str> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let chosen = match hops {
            None => xff.first(),
            Some(n) => xff.len().checked_sub(n).and_then(|i| xff.get(i)),
        };
        chosen.and_then(|s| parse_forwarded_ip(s)).or(req.source)
    }

    /// Decides `request` against the policies of its destination: the function the filter
    /// runs, minus the ext_authz calls of CUSTOM policies (reported in
    /// [`Explanation::custom`]). Fails when the request must be refused with 400 before any
    /// policy (`%00` in the path, lowercase method).
    pub fn explain(
        &self,
        config: &Config,
        request: &RequestAttributes<'_>,
    ) -> Result<Explanation, NormalizeError> {
        check_method(request.method, self.normalization)?;
        let normalized = normalize_path(request.path, self.normalization)?;
        let path = normalized.split(['?', '#']).next().unwrap_or_default();
        let identity = request.identity;
        let attrs = Attrs {
            principal: identity.map(SpiffeId::principal),
            namespace: identity.map(SpiffeId::namespace),
            service_account: identity.map(SpiffeId::service_account),
            source_ip: request.source,
            remote_ip: self.remote_ip(request),
            destination: request.destination,
            method: request.method,
            host: request.host,
            path,
            headers: request.headers,
            jwt: request.request_principal,
            sni: None,
            l4: false,
        };
        let mut explained = self.evaluate(config, &attrs);
        explained.normalized_path = match normalized {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        };
        Ok(explained)
    }

    /// One pass over the policies of `attrs`' destination Service (and this waypoint's), in
    /// Istio's order. For a connection (`attrs.l4`), ALLOW rules that need HTTP never match.
    pub(super) fn evaluate(&self, config: &Config, attrs: &Attrs<'_>) -> Explanation {
        let service = attrs
            .destination
            .and_then(|d| config.service_at(d))
            .map(|b| &b.service);

        let mut enforced = Tally::default();
        let mut shadow = Tally::default();
        let mut any_dry_run = false;
        let mut custom = Vec::new();
        let mut unknown_custom = None;
        let mut audit = Vec::new();
        for policy in self.applicable(service) {
            let matched = policy.first_match(attrs);
            match &policy.action {
                Action::Custom {
                    provider, known, ..
                } => {
                    if let Some(rule) = matched {
                        if *known {
                            custom.push(CustomCheck {
                                rule: rule_ref(policy, rule),
                                provider: provider.clone(),
                            });
                        } else if unknown_custom.is_none() {
                            unknown_custom = Some((policy, rule));
                        }
                    }
                }
                Action::Audit => {
                    if let Some(rule) = matched {
                        audit.push(rule_ref(policy, rule));
                    }
                }
                Action::Allow | Action::Deny => {
                    any_dry_run |= policy.dry_run;
                    shadow.add(policy, matched);
                    if !policy.dry_run {
                        enforced.add(policy, matched);
                    }
                }
            }
        }
        let decision = match unknown_custom {
            Some((policy, rule)) => decided(false, policy, rule, false),
            None => enforced.decide(false),
        };
        Explanation {
            decision,
            custom,
            audit,
            dry_run: any_dry_run.then(|| shadow.decide(true)),
            normalized_path: None,
            unchecked_custom: Vec::new(),
        }
    }
}

pub(super) fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[v6]:port` or `v4:port`.
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

fn rule_ref(policy: &CompiledPolicy, rule: usize) -> PolicyRule {
    PolicyRule {
        policy: policy.resource.clone(),
        rule,
    }
}

fn decided(allowed: bool, policy: &CompiledPolicy, rule: usize, dry_run: bool) -> AuthzDecision {
    let action = match &policy.action {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
        Action::Custom { .. } => "CUSTOM",
    };
    AuthzDecision {
        allowed,
        action: action.into(),
        policy: Some(policy.resource.clone()),
        rule: Some(rule),
        dry_run,
    }
}

/// The ALLOW/DENY evidence of one pass over the policies.
#[derive(Default)]
struct Tally<'p> {
    deny: Option<(&'p CompiledPolicy, usize)>,
    allow: Option<(&'p CompiledPolicy, usize)>,
    allow_applies: bool,
}

impl<'p> Tally<'p> {
    fn add(&mut self, policy: &'p CompiledPolicy, matched: Option<usize>) {
        match policy.action {
            Action::Deny => {
                if let (None, Some(rule)) = (self.deny, matched) {
                    self.deny = Some((policy, rule));
                }
            }
            Action::Allow => {
                self.allow_applies = true;
                if let (None, Some(rule)) = (self.allow, matched) {
                    self.allow = Some((policy, rule));
                }
            }
            _ => {}
        }
    }

    fn decide(&self, dry_run: bool) -> AuthzDecision {
        if let Some((p, r)) = self.deny {
            return decided(false, p, r, dry_run);
        }
        if let Some((p, r)) = self.allow {
            return decided(true, p, r, dry_run);
        }
        AuthzDecision {
            allowed: !self.allow_applies,
            action: if self.allow_applies { "ALLOW" } else { "NONE" }.into(),
            policy: None,
            rule: None,
            dry_run,
        }
    }
}

/// Decides `request` with `policies`: see [`PolicySet::explain`].
pub fn explain(
    policies: &PolicySet,
    config: &Config,
    request: &RequestAttributes<'_>,
) -> Result<Explanation, NormalizeError> {
    policies.explain(config, request)
}
