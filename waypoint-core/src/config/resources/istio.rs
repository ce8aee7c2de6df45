//! Istio security resources (`security.istio.io` v1 / v1beta1): AuthorizationPolicy and
//! RequestAuthentication.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ObjectMeta;

/// An Istio AuthorizationPolicy.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct AuthorizationPolicy {
    /// Metadata (`istio.io/dry-run` annotation).
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}
object!(AuthorizationPolicy, "AuthorizationPolicy");

/// Istio `selector`: the workloads a policy applies to (ignored by waypoints).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    /// Labels that must be equal.
    pub match_labels: BTreeMap<String, String>,
}

/// Istio `targetRef(s)`: the Gateway, GatewayClass or Service a policy applies to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PolicyTargetRef {
    /// Group (`gateway.networking.k8s.io`, `""` for Service).
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace; `None` means the policy's.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// How a policy says where it applies: the one reading of `selector`, `targetRef` and
/// `targetRefs` that validation and both policy filters share, so they cannot disagree about
/// which of them wins or how a reference is named in a message.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyAttachment<'a> {
    /// `selector` alone: workloads chosen by label, which sidecars and ztunnel enforce, never
    /// a waypoint.
    Selector,
    /// `selector` together with `targetRef(s)`, which istiod's validation rejects.
    SelectorAndTargets,
    /// Neither: the workloads of the policy's namespace (ztunnel's), never a waypoint.
    Namespace,
    /// `targetRef` (the deprecated single form) then `targetRefs`, each with its field path
    /// (`spec.targetRef`, `spec.targetRefs[1]`) for messages. Never empty.
    Targets(Vec<(String, &'a PolicyTargetRef)>),
}

fn attachment<'a>(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&'a PolicyTargetRef>,
    target_refs: &'a [PolicyTargetRef],
) -> PolicyAttachment<'a> {
    let targets: Vec<(String, &PolicyTargetRef)> = target_ref
        .map(|r| ("spec.targetRef".to_owned(), r))
        .into_iter()
        .chain(
            target_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("spec.targetRefs[{i}]"), r)),
        )
        .collect();
    match (selector.is_some(), targets.is_empty()) {
        (true, true) => PolicyAttachment::Selector,
        (true, false) => PolicyAttachment::SelectorAndTargets,
        (false, true) => PolicyAttachment::Namespace,
        (false, false) => PolicyAttachment::Targets(targets),
    }
}

/// The spec of an AuthorizationPolicy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicySpec {
    /// Workload selector.
    pub selector: Option<WorkloadSelector>,
    /// Single target (deprecated form).
    pub target_ref: Option<PolicyTargetRef>,
    /// Targets.
    pub target_refs: Vec<PolicyTargetRef>,
    /// ALLOW (default), DENY, AUDIT or CUSTOM.
    pub action: AuthorizationAction,
    /// The ext_authz provider of a CUSTOM policy.
    pub provider: Option<AuthorizationProvider>,
    /// Rules; none means the policy never matches.
    pub rules: Vec<AuthorizationRule>,
}

impl AuthorizationPolicySpec {
    /// How the policy says where it applies.
    pub fn attachment(&self) -> PolicyAttachment<'_> {
        attachment(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        )
    }
}

/// What a matching policy does.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum AuthorizationAction {
    #[default]
    ALLOW,
    DENY,
    AUDIT,
    CUSTOM,
}

/// The ext_authz provider of a CUSTOM policy.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct AuthorizationProvider {
    /// Provider name, from the mesh config.
    pub name: String,
}

// The rule types below reject unknown fields: a misspelled condition (`notpaths`) would
// otherwise vanish and silently widen an ALLOW policy.

/// One rule: any `from`, any `to`, and every `when` must match.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorizationRule {
    /// Sources.
    pub from: Vec<RuleFrom>,
    /// Operations.
    pub to: Vec<RuleTo>,
    /// Conditions.
    pub when: Vec<RuleCondition>,
}

/// A `from` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuleFrom {
    /// The source.
    pub source: RuleSource,
}

/// A `to` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuleTo {
    /// The operation.
    pub operation: RuleOperation,
}

/// Who sends the request; fields ANDed, list items ORed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
#[allow(missing_docs)] // each field is the Istio field of the same name
pub struct RuleSource {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
}

/// What is requested; fields ANDed, list items ORed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
#[allow(missing_docs)] // each field is the Istio field of the same name
pub struct RuleOperation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

/// A `when` condition on an attribute (`request.headers[x-id]`, `source.ip`, ...).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleCondition {
    /// The attribute.
    pub key: String,
    /// Any of these matches.
    #[serde(default)]
    pub values: Vec<String>,
    /// None of these matches.
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// An Istio RequestAuthentication: which JWTs are validated, and how.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RequestAuthentication {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: RequestAuthenticationSpec,
}
object!(RequestAuthentication, "RequestAuthentication");

/// The spec of a RequestAuthentication.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestAuthenticationSpec {
    /// Workload selector.
    pub selector: Option<WorkloadSelector>,
    /// Single target (deprecated form).
    pub target_ref: Option<PolicyTargetRef>,
    /// Targets.
    pub target_refs: Vec<PolicyTargetRef>,
    /// JWT rules.
    pub jwt_rules: Vec<JwtRule>,
}

impl RequestAuthenticationSpec {
    /// How the policy says where it applies.
    pub fn attachment(&self) -> PolicyAttachment<'_> {
        attachment(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        )
    }
}

/// How tokens of one issuer are found and validated. Unknown fields are rejected: a misspelled
/// `audiences` would silently drop the audience check.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)] // each field is the Istio field of the same name
pub struct JwtRule {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Inline JWKS (JSON text).
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// JWKS fetch timeout (protobuf duration, `5s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A header a token is read from, with an optional prefix (`Bearer `).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Prefix stripped before the token.
    #[serde(default)]
    pub prefix: String,
}

/// Copy a claim of a validated token into a request header.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header name.
    pub header: String,
    /// Claim name.
    pub claim: String,
}
