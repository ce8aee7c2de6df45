//! Istio `DestinationRule` (`networking.istio.io` v1, v1beta1, v1alpha3): what happens to
//! traffic for a host *after* routing chose it — how an endpoint is picked, how many
//! connections and requests the backend may get, when a failing endpoint is set aside, and
//! whether the connection to it is TLS. The waypoint applies the rule of each Service (or
//! ServiceEntry) port it forwards to; `config::traffic_policy` decides which rule that is.
//!
//! Each `trafficPolicy` block has its own file, holding its serde type and the checks of its
//! fields: `load_balancer`, `connection_pool`, `outlier`, `tls`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ObjectMeta;

mod connection_pool;
mod load_balancer;
mod outlier;
mod tls;

pub use connection_pool::*;
pub use load_balancer::*;
pub use outlier::*;
pub use tls::*;

/// An Istio DestinationRule. Unknown fields inside `spec` are refused (a misspelt setting
/// would otherwise be silently ignored); `apiVersion`, `kind` and `status` are not read.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DestinationRule {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: DestinationRuleSpec,
}
object!(DestinationRule, "DestinationRule");

/// What a DestinationRule says about one host.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// The host the rule is for: a short name (`reviews`, read in the rule's namespace), a
    /// fully qualified name (`reviews.shop.svc.cluster.local`, a ServiceEntry host), or a
    /// wildcard (`*.shop.svc.cluster.local`, `*.example.com`).
    pub host: String,
    /// Settings for every port of the host, unless a subset or port overrides them.
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of endpoints by label, each with its own policy.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces that see the rule: `*` (all, the default), `.` (the rule's own), or names.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Workloads whose *outbound* traffic the rule applies to (sidecars); a rule with one
    /// never applies at a waypoint.
    #[serde(default)]
    pub workload_selector: Option<DrWorkloadSelector>,
}

/// `workloadSelector` of a DestinationRule.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrWorkloadSelector {
    /// Labels the workload must carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// The settings of a host (or subset), with per-port overrides.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// How an endpoint is chosen.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Limits on connections and requests to the backend.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// When a failing endpoint is set aside.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS to the endpoints.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    /// Overrides for single ports: a block given here replaces the host-wide one whole.
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// PROXY protocol to the upstream (not supported: rejected by validation).
    #[serde(default)]
    pub proxy_protocol: Option<serde_json::Value>,
    /// Tunnelling through an HTTP proxy (not supported: rejected by validation).
    #[serde(default)]
    pub tunnel: Option<serde_json::Value>,
}

/// The settings of one port of the host.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The Service port these settings are for.
    #[serde(default)]
    pub port: Option<PortSelector>,
    /// How an endpoint is chosen.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Limits on connections and requests.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// When a failing endpoint is set aside.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS to the endpoints.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}

/// A port by number.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    /// The port number.
    #[serde(default)]
    pub number: u32,
}

/// A named group of the host's endpoints.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// The name routes would use to pick the subset.
    pub name: String,
    /// Labels an endpoint's pod must carry to be in the subset.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Settings for the subset, over the host-wide ones.
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// A duration as Istio's resources write one: Go's `time.ParseDuration` syntax (`10s`,
/// `1.5s`, `30ms`, `1h2m`, units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), never negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// Parses `text`, or says why it is not a duration.
    pub fn parse(text: &str) -> Result<GoDuration, String> {
        let bad = || format!("`{text}` is not a duration (examples: 10s, 1.5s, 250ms, 1h30m)");
        if text == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let mut rest = text;
        let mut total = 0f64;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let seconds = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += number * seconds;
        }
        // A year is far beyond any timeout or interval a proxy could mean; it also keeps the
        // float conversion below exact enough and finite.
        if !total.is_finite() || total > 366.0 * 24.0 * 3600.0 {
            return Err(bad());
        }
        Ok(GoDuration(Duration::from_secs_f64(total)))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        GoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Written back in seconds (`1.5s`), which Istio reads the same: `/config_dump` shows it so.
impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}s", self.0.as_secs_f64()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_as_istio_writes_them() {
        let d = |s: &str| GoDuration::parse(s).map(|d| d.0);
        assert_eq!(d("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("30ms"), Ok(Duration::from_millis(30)));
        assert_eq!(d("1h2m"), Ok(Duration::from_secs(3720)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        let written = serde_json::to_value(GoDuration::parse("1m30.5s").unwrap()).unwrap();
        assert_eq!(written, "90.5s");
        for bad in ["", "10", "s", "-1s", "1x", "1.2.3s", "99999999h"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_destination_rule_reads_with_port_overrides_and_subsets() {
        let yaml = r#"
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  exportTo: ["."]
  trafficPolicy:
    portLevelSettings:
    - port: {number: 9080}
  subsets:
  - name: v1
    labels: {version: v1}
"#;
        let dr: DestinationRule = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(dr.spec.host, "reviews");
        assert_eq!(dr.spec.export_to, ["."]);
        let policy = dr.spec.traffic_policy.unwrap();
        assert_eq!(
            policy.port_level_settings[0].port.as_ref().unwrap().number,
            9080
        );
        assert_eq!(dr.spec.subsets[0].labels["version"], "v1");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let yaml = "metadata: {name: r}\nspec: {host: reviews, trafficPolicies: {}}\n";
        assert!(serde_saphyr::from_str::<DestinationRule>(yaml).is_err());
    }
}
