//! Which DestinationRule settings apply to a Service (or ServiceEntry) port, as istiod decides
//! it for the waypoint's proxy, and the settings once resolved ([`PortPolicy`]).
//!
//! A rule names its host as a short name (`reviews`, meaning `reviews.<rule's
//! namespace>.svc.<cluster domain>`), a fully qualified name, or a wildcard (`*.example.com`,
//! `*`). For a host, the rule is looked for in this order, the first namespace with a match
//! winning:
//!
//! 1. the waypoint's own namespace (its Gateway's): rules there that its namespace sees;
//! 2. the namespace of the Service (or ServiceEntry): rules exported to the waypoint's namespace;
//! 3. the root namespace (`istio-system`): rules exported to the waypoint's namespace.
//!
//! A waypoint running in the root namespace itself starts with the root's private rules only
//! (`exportTo: ["."]`), as istiod does, so that mesh-wide defaults there do not hide the
//! Service namespace's rules.
//!
//! Within a namespace an exact host beats a wildcard, and a longer wildcard a shorter one.
//! Several rules for the same host in one namespace are merged as istiod merges them: the
//! oldest rule's `trafficPolicy` (or, if it has none, the next one's), subsets from all of them.
//! A rule with a `workloadSelector` is for sidecars, never a waypoint. Without `--gateway` the
//! waypoint's namespace is unknown: only rules exported to every namespace apply in steps 2-3.
//!
//! For a port, a block (`loadBalancer`, `connectionPool`, `outlierDetection`, `tls`) of the
//! rule's `portLevelSettings` entry for that port number replaces the host-wide block whole.
//! Subset policies are not applied: a Gateway API route cannot name a subset (Istio's answer at
//! waypoints is a Service per version), so no request is ever sent to one.

use std::fmt;

use super::ResourceRef;
use super::build::MeshOptions;
use super::resources::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings, Object,
    OutlierDetection, PortTrafficPolicy, Sourced, TrafficPolicy,
};

/// The DestinationRule settings in force for one Service or ServiceEntry port, each block with
/// the rule (and port override) it came from. The default applies no rule at all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortPolicy {
    /// How an endpoint is chosen.
    pub load_balancer: Option<Applied<LoadBalancerSettings>>,
    /// Limits on connections and requests.
    pub connection_pool: Option<Applied<ConnectionPoolSettings>>,
    /// When a failing endpoint is set aside.
    pub outlier_detection: Option<Applied<OutlierDetection>>,
    /// TLS to the endpoints.
    pub tls: Option<Applied<ClientTlsSettings>>,
    /// The rule that would govern this port and sets `tls` for it, but was refused (invalid,
    /// or its certificates unreadable). The port is then not served at all (503 `UF`): what
    /// the operator meant to encrypt is never sent in plain text.
    pub tls_refused_by: Option<ResourceRef>,
}

impl PortPolicy {
    /// True when no rule applies to the port.
    pub fn is_empty(&self) -> bool {
        *self == PortPolicy::default()
    }

    /// The blocks in force, each as (field name, where it came from, settings as JSON): what
    /// `/config_dump` and `waypoint check` show.
    pub fn blocks(&self) -> Vec<(&'static str, &PolicyOrigin, serde_json::Value)> {
        fn block<'a, T: serde::Serialize>(
            name: &'static str,
            applied: &'a Option<Applied<T>>,
        ) -> Option<(&'static str, &'a PolicyOrigin, serde_json::Value)> {
            let applied = applied.as_ref()?;
            // Plain data types: serializing cannot fail; `Null` would only hide the settings.
            let settings = serde_json::to_value(&applied.settings).unwrap_or_default();
            Some((name, &applied.from, settings))
        }
        [
            block("loadBalancer", &self.load_balancer),
            block("connectionPool", &self.connection_pool),
            block("outlierDetection", &self.outlier_detection),
            block("tls", &self.tls),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// A settings block and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied<T> {
    /// The settings.
    pub settings: T,
    /// The rule, and whether its `portLevelSettings` gave the block.
    pub from: PolicyOrigin,
}

/// Where a block of a [`PortPolicy`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyOrigin {
    /// The DestinationRule (the oldest, when several for the host were merged).
    pub rule: ResourceRef,
    /// `Some(port)` when the block is the rule's `portLevelSettings` entry for that port.
    pub port_level: Option<u16>,
}

impl fmt::Display for PolicyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port_level {
            None => write!(f, "{} spec.trafficPolicy", self.rule),
            Some(port) => write!(
                f,
                "{} spec.trafficPolicy.portLevelSettings[port {port}]",
                self.rule
            ),
        }
    }
}

/// The DestinationRules of one config, indexed for [`PolicyIndex::for_port`].
pub(crate) struct PolicyIndex<'a> {
    /// Rules that may apply at a waypoint (no `workloadSelector`), each with its host made
    /// fully qualified and whether it was refused, oldest first.
    rules: Vec<(&'a Sourced<DestinationRule>, String, bool)>,
    /// The waypoint's namespace (its Gateway's), when known.
    own_namespace: Option<&'a str>,
    root_namespace: &'a str,
}

impl<'a> PolicyIndex<'a> {
    /// Indexes `rules` (validated) and `refused` (those validation refused: they still claim
    /// their host, so that a refused `tls` block fails closed) for a waypoint with mesh
    /// settings `mesh`.
    pub(crate) fn new(
        rules: &'a [Sourced<DestinationRule>],
        refused: &'a [Sourced<DestinationRule>],
        mesh: &'a MeshOptions,
    ) -> Self {
        let accepted = rules.iter().map(|r| (r, false));
        let refused = refused.iter().map(|r| (r, true));
        let mut rules: Vec<_> = accepted
            .chain(refused)
            .filter(|(r, _)| r.spec.workload_selector.is_none())
            .map(|(r, refused)| {
                let host =
                    qualified_host(&r.spec.host, r.metadata.namespace(), &mesh.cluster_domain);
                (r, host, refused)
            })
            .collect();
        // Oldest first, as istiod orders configs: creation time, then namespace/name.
        rules.sort_by(|(a, ..), (b, ..)| {
            let key = |r: &Sourced<DestinationRule>| {
                (
                    r.metadata.creation_timestamp.clone(),
                    r.metadata.namespace().to_owned(),
                    r.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        PolicyIndex {
            rules,
            own_namespace: mesh.gateway.as_ref().map(|(ns, _)| ns.as_str()),
            root_namespace: &mesh.root_namespace,
        }
    }

    /// The settings for port `port` of the Service or ServiceEntry whose host is `host`
    /// (fully qualified) and namespace `namespace`.
    pub(crate) fn for_port(&self, host: &str, namespace: &str, port: u16) -> PortPolicy {
        match self.rules_for(host, namespace) {
            Some(rules) => merge(&rules, port),
            None => PortPolicy::default(),
        }
    }

    /// The rules that decide `host`: those of the first namespace (in the module's order) with
    /// a match, for the most specific matching host; oldest first.
    fn rules_for(
        &self,
        host: &str,
        namespace: &str,
    ) -> Option<Vec<(&'a Sourced<DestinationRule>, bool)>> {
        let own_is_root = self.own_namespace == Some(self.root_namespace);
        let mut steps: Vec<(&str, Look)> = Vec::with_capacity(3);
        match self.own_namespace {
            // istiod's first step for a proxy in the root namespace: only the root's private
            // rules, so the mesh-wide ones there do not hide the Service namespace's rules.
            Some(own) if own_is_root => steps.push((own, Look::RootPrivate)),
            Some(own) => steps.push((own, Look::Local)),
            None => {}
        }
        for ns in [namespace, self.root_namespace] {
            // The waypoint's own namespace was searched whole in the first step.
            if own_is_root || Some(ns) != self.own_namespace {
                steps.push((ns, Look::Exported));
            }
        }
        for (ns, look) in steps {
            let candidates: Vec<_> = self
                .rules
                .iter()
                .filter(|(r, ..)| r.metadata.namespace() == ns && self.sees(r, look))
                .collect();
            let Some(best) = candidates
                .iter()
                .filter(|(_, h, _)| host_matches(h, host))
                .map(|(_, h, _)| h.as_str())
                .max_by_key(|h| specificity(h))
            else {
                continue;
            };
            return Some(
                candidates
                    .iter()
                    .filter(|(_, h, _)| h == best)
                    .map(|(r, _, refused)| (*r, *refused))
                    .collect(),
            );
        }
        None
    }

    /// Rules whose `trafficPolicy` never applies because an older rule of the same namespace
    /// for the same host has one (istiod merges them and keeps the oldest's), each with the
    /// rule that wins: a conflict worth telling the operator, who sees no error otherwise.
    pub(crate) fn shadowed(&self) -> Vec<(ResourceRef, ResourceRef)> {
        let mut first: std::collections::HashMap<(&str, &str), ResourceRef> =
            std::collections::HashMap::new();
        let mut out = Vec::new();
        for (rule, host, _) in self
            .rules
            .iter()
            .filter(|(r, _, refused)| !refused && r.spec.traffic_policy.is_some())
        {
            let key = (rule.metadata.namespace(), host.as_str());
            match first.get(&key) {
                Some(winner) => out.push((rule.resource_ref(), winner.clone())),
                None => {
                    first.insert(key, rule.resource_ref());
                }
            }
        }
        out
    }

    /// Whether a step of kind `look` takes `rule`, by its `exportTo` (istiod's indexes: the
    /// rules a namespace sees of its own, the root's private ones, and the exported ones).
    fn sees(&self, rule: &Sourced<DestinationRule>, look: Look) -> bool {
        let export_to = &rule.spec.export_to;
        let ns = rule.metadata.namespace();
        let public = export_to.is_empty() || export_to.iter().any(|e| e == "*");
        let private_only = export_to.len() == 1 && (export_to[0] == "." || export_to[0] == ns);
        match look {
            Look::Local => public || export_to.iter().any(|e| e == "." || e == ns),
            Look::RootPrivate => private_only,
            Look::Exported => {
                !private_only
                    && (public
                        || self
                            .own_namespace
                            .is_some_and(|own| export_to.iter().any(|e| e == own)))
            }
        }
    }
}

/// Which rules of a namespace a lookup step sees.
#[derive(Clone, Copy)]
enum Look {
    /// The waypoint's own namespace: every rule visible to that namespace itself.
    Local,
    /// The root namespace when the waypoint runs there: its private rules only.
    RootPrivate,
    /// Another namespace: its rules exported to the waypoint's namespace.
    Exported,
}

/// The policy of `port` from the rules for one host (oldest first): the first rule with a
/// `trafficPolicy` gives it. A refused rule in that place that sets `tls` for the port fails
/// the port closed; one that does not is passed over, as if it did not exist.
fn merge(rules: &[(&Sourced<DestinationRule>, bool)], port: u16) -> PortPolicy {
    for (rule, refused) in rules {
        let Some(policy) = rule.spec.traffic_policy.as_ref() else {
            continue;
        };
        if !refused {
            return applied_policy(rule, policy, port);
        }
        let port_tls = port_level(policy, port).and_then(|p| p.tls.as_ref());
        if port_tls.or(policy.tls.as_ref()).is_some() {
            return PortPolicy {
                tls_refused_by: Some(rule.resource_ref()),
                ..PortPolicy::default()
            };
        }
    }
    PortPolicy::default()
}

/// The `portLevelSettings` entry of `policy` for `port`.
fn port_level(policy: &TrafficPolicy, port: u16) -> Option<&PortTrafficPolicy> {
    policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().is_some_and(|s| s.number == u32::from(port)))
}

/// `rule`'s `policy` for `port`: host-wide blocks, replaced by its port override's.
fn applied_policy(
    rule: &Sourced<DestinationRule>,
    policy: &TrafficPolicy,
    port: u16,
) -> PortPolicy {
    let host_wide = PolicyOrigin {
        rule: rule.resource_ref(),
        port_level: None,
    };
    let TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
        tls,
        ..
    } = policy;
    let mut out = PortPolicy {
        load_balancer: applied(load_balancer, &host_wide),
        connection_pool: applied(connection_pool, &host_wide),
        outlier_detection: applied(outlier_detection, &host_wide),
        tls: applied(tls, &host_wide),
        tls_refused_by: None,
    };
    if let Some(p) = port_level(policy, port) {
        let from = PolicyOrigin {
            port_level: Some(port),
            ..host_wide
        };
        out.load_balancer = applied(&p.load_balancer, &from).or(out.load_balancer);
        out.connection_pool = applied(&p.connection_pool, &from).or(out.connection_pool);
        out.outlier_detection = applied(&p.outlier_detection, &from).or(out.outlier_detection);
        out.tls = applied(&p.tls, &from).or(out.tls);
    }
    out
}

fn applied<T: Clone>(block: &Option<T>, from: &PolicyOrigin) -> Option<Applied<T>> {
    block.clone().map(|settings| Applied {
        settings,
        from: from.clone(),
    })
}

/// `host` as a fully qualified name: a name without a dot is a Service in `namespace`.
pub(crate) fn qualified_host(host: &str, namespace: &str, cluster_domain: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{cluster_domain}")
    }
}

/// Whether rule host `pattern` (exact, `*.suffix` or `*`) covers `host`.
fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        // `*.example.com` covers `a.example.com` and `a.b.example.com`, not `example.com`.
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// How specific a matching rule host is: exact beats any wildcard, a longer wildcard a shorter.
fn specificity(pattern: &str) -> (bool, usize) {
    (!pattern.starts_with('*'), pattern.len())
}

#[cfg(test)]
#[path = "traffic_policy_tests.rs"]
mod tests;
