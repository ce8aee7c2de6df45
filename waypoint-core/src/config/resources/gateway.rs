//! Gateway and ReferenceGrant (`gateway.networking.k8s.io`), and Gateway API durations.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::{LocalObjectReference, ObjectMeta};

/// The Gateway API group (`Gateway`, `GatewayClass`, `HTTPRoute`, ...): written once here for
/// the loader, the builder, the policy filters and the status writer.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The default of group fields that name Gateway API kinds.
pub(super) fn gateway_group() -> String {
    GATEWAY_API_GROUP.into()
}

/// A Gateway (`gateway.networking.k8s.io/v1`); the waypoint itself is one.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Gateway {
    /// Metadata (Istio reads `ambient.istio.io/waypoint-inbound-binding` here).
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: GatewaySpec,
    /// Status as a controller wrote it; only `addresses` is read (where the Gateway is served).
    #[serde(default)]
    pub status: Option<GatewayObservedStatus>,
}
object!(Gateway, "Gateway");

/// The part of a Gateway's `status` waypoint reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct GatewayObservedStatus {
    /// The addresses the Gateway was given.
    pub addresses: Vec<GatewayAddress>,
}

impl Gateway {
    /// The IP addresses the Gateway is reachable at: the `IPAddress` entries of
    /// `spec.addresses` and `status.addresses`, each once, in that order. Entries of other
    /// types, or that do not parse, are skipped.
    pub fn ip_addresses(&self) -> Vec<std::net::IpAddr> {
        let status = self.status.iter().flat_map(|s| &s.addresses);
        let mut out = Vec::new();
        for a in self.spec.addresses.iter().chain(status) {
            if a.kind != "IPAddress" {
                continue;
            }
            if let Ok(ip) = a.value.parse()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
        out
    }
}

/// The spec of a Gateway.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The GatewayClass (`istio-waypoint`, or a vendor's).
    pub gateway_class_name: String,
    /// Listeners.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Requested addresses.
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
    /// Infrastructure labels/annotations/parameters.
    #[serde(default)]
    pub infrastructure: Option<GatewayInfrastructure>,
}

/// One listener of a Gateway.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Name (the `sectionName` routes use).
    pub name: String,
    /// Hostname filter (`*.example.com` allowed).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Port.
    pub port: u16,
    /// Protocol: `HTTP`, `HTTPS`, `HBONE`, `istio.io/PROXY`, ... (an open set).
    pub protocol: String,
    /// TLS settings (HTTPS and TLS listeners).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Which routes may attach.
    #[serde(default)]
    pub allowed_routes: AllowedRoutes,
}

impl Listener {
    /// The TLS mode of a `TLS` or `HTTPS` listener (`Terminate` when `tls` is unset, as the
    /// API defaults it).
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.as_ref().map_or(TlsMode::Terminate, |t| t.mode)
    }

    /// The route kinds this listener's protocol can carry: HTTPRoute and GRPCRoute on `HTTP`
    /// and `HTTPS`, TCPRoute on `TCP`, TLSRoute on `TLS` in Passthrough mode. None on the
    /// others: `HBONE` and `istio.io/PROXY` carry mesh traffic (routes reach it through Service
    /// parents), and a `TLS` listener that terminates is not supported.
    pub fn servable_route_kinds(&self) -> &'static [&'static str] {
        match self.protocol.as_str() {
            "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
            "TCP" => &["TCPRoute"],
            "TLS" if self.tls_mode() == TlsMode::Passthrough => &["TLSRoute"],
            _ => &[],
        }
    }

    /// The listener's `supportedKinds`: the kinds it can carry, narrowed to those
    /// `allowedRoutes.kinds` names when it names any.
    pub fn supported_route_kinds(&self) -> Vec<&'static str> {
        let allowed = &self.allowed_routes.kinds;
        self.servable_route_kinds()
            .iter()
            .copied()
            .filter(|kind| {
                allowed.is_empty()
                    || allowed
                        .iter()
                        .any(|k| k.group == GATEWAY_API_GROUP && k.kind == *kind)
            })
            .collect()
    }

    /// The entries of `allowedRoutes.kinds` this listener cannot carry (the listener's
    /// `ResolvedRefs=False`, reason `InvalidRouteKinds`).
    pub fn invalid_route_kinds(&self) -> Vec<&RouteGroupKind> {
        let servable = self.servable_route_kinds();
        self.allowed_routes
            .kinds
            .iter()
            .filter(|k| k.group != GATEWAY_API_GROUP || !servable.contains(&k.kind.as_str()))
            .collect()
    }
}

/// A listener's `tls`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ListenerTls {
    /// `Terminate` (the default) or `Passthrough`.
    pub mode: TlsMode,
    /// The certificates to serve (the first usable one is used).
    pub certificate_refs: Vec<SecretObjectReference>,
    /// Implementation-specific options, verbatim.
    pub options: BTreeMap<String, String>,
}

/// How a listener handles TLS.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TlsMode {
    /// The Gateway terminates TLS with the listener's certificate.
    #[default]
    Terminate,
    /// TLS passes through to the backend (TLSRoute); not supported on HTTPS listeners.
    Passthrough,
}

/// A reference to a Secret (Gateway API `SecretObjectReference`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SecretObjectReference {
    /// Group, default `""` (core).
    #[serde(default)]
    pub group: String,
    /// Kind, default `Secret`.
    #[serde(default = "secret_kind")]
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace; `None` means the Gateway's (another one needs a ReferenceGrant).
    #[serde(default)]
    pub namespace: Option<String>,
}

fn secret_kind() -> String {
    "Secret".into()
}

/// Which routes may attach to a listener.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct AllowedRoutes {
    /// Namespaces, default `Same`.
    pub namespaces: RouteNamespaces,
    /// Route kinds; empty means those matching the protocol.
    pub kinds: Vec<RouteGroupKind>,
}

/// Namespaces routes may attach from.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteNamespaces {
    /// All, Selector or Same (default).
    pub from: FromNamespaces,
    /// Namespace label selector, for `Selector`.
    pub selector: Option<LabelSelector>,
}

/// Which namespaces.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum FromNamespaces {
    /// Every namespace.
    All,
    /// Namespaces whose labels match the selector.
    Selector,
    /// The Gateway's namespace only.
    #[default]
    Same,
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    /// Labels that must be equal.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether namespace `ns`, labelled `labels` (from its `Namespace` object, when known), is
    /// selected. The `kubernetes.io/metadata.name` label Kubernetes sets on every namespace is
    /// always there, so namespace selectors work without `Namespace` objects too.
    pub fn selects_namespace(&self, ns: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.matches(|key| {
            if key == "kubernetes.io/metadata.name" {
                return Some(ns);
            }
            labels.and_then(|l| l.get(key)).map(String::as_str)
        })
    }

    /// Whether an object with these labels is selected. `labels` answers a key's value. An
    /// unknown operator selects nothing (fail closed).
    pub fn matches<'v>(&self, labels: impl Fn(&str) -> Option<&'v str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|e| {
                let value = labels(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.iter().any(|x| x == v)),
                    "NotIn" => value.is_none_or(|v| !e.values.iter().any(|x| x == v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// `key operator values`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for In/NotIn.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A route kind.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RouteGroupKind {
    /// Group, default `gateway.networking.k8s.io`.
    #[serde(default = "gateway_group")]
    pub group: String,
    /// Kind.
    pub kind: String,
}

/// A requested Gateway address.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct GatewayAddress {
    /// `IPAddress` (default), `Hostname`, or a domain-prefixed type.
    #[serde(rename = "type", default = "ip_address")]
    pub kind: String,
    /// The address.
    #[serde(default)]
    pub value: String,
}

fn ip_address() -> String {
    "IPAddress".into()
}

/// Labels, annotations and parameters for the Gateway's infrastructure.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayInfrastructure {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Implementation-specific parameters.
    pub parameters_ref: Option<LocalObjectReference>,
}

/// A ReferenceGrant: lets objects in other namespaces refer to objects in this one.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReferenceGrant {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: ReferenceGrantSpec,
}
object!(ReferenceGrant, "ReferenceGrant");

/// Who may refer to what.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReferenceGrantSpec {
    /// Referring objects.
    pub from: Vec<ReferenceGrantFrom>,
    /// Referable objects (in this namespace).
    pub to: Vec<ReferenceGrantTo>,
}

/// A referring group/kind/namespace.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReferenceGrantFrom {
    /// Group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
}

/// A referable group/kind, optionally one name.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReferenceGrantTo {
    /// Group (`""` for Services).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// One name only; `None` means all.
    #[serde(default)]
    pub name: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Durations

/// A Gateway API duration (`1h30m`, `500ms`), parsed when read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayDuration(pub Duration);

impl<'de> Deserialize<'de> for GatewayDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_gateway_duration(&s)
            .map(GatewayDuration)
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for GatewayDuration {
    /// The GEP-2257 standard form: descending units, largest first, `0s` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        for (v, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if v > 0 {
                write!(f, "{v}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Parses a GEP-2257 duration: one to four components, each 1-5 decimal digits followed by
/// `h`, `m`, `s` or `ms`; the total is the sum (units may repeat). `0s` is zero; `0`, `""`,
/// `1.5s`, `-1s`, `1d` are rejected.
pub fn parse_gateway_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration `{s}`: {why} (expected e.g. `1h30m`, `500ms`)");
    let bytes = s.as_bytes();
    let mut total = Duration::ZERO;
    let mut i = 0;
    let mut components = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return Err(bad("expected a number"));
        }
        if digits.len() > 5 {
            return Err(bad("at most 5 digits per component"));
        }
        let value: u64 = digits.parse().map_err(|_| bad("expected a number"))?;
        let unit_ms = if s[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let unit = bytes.get(i).copied();
            i += 1;
            match unit {
                Some(b'h') => 3_600_000,
                Some(b'm') => 60_000,
                Some(b's') => 1000,
                Some(_) => return Err(bad("the unit must be h, m, s or ms")),
                None => return Err(bad("missing unit")),
            }
        };
        components += 1;
        if components > 4 {
            return Err(bad("at most 4 components"));
        }
        total += Duration::from_millis(value * unit_ms);
    }
    if components == 0 {
        return Err(bad("empty"));
    }
    Ok(total)
}
