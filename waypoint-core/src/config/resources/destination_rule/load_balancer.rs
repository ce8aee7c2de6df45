//! How an endpoint of the backend is chosen (`loadBalancer`), field for field as Istio's
//! `networking.v1.LoadBalancerSettings`, and the checks istiod's webhook (and Envoy's own
//! config validation, where istiod leaves it to Envoy) would make.
//!
//! What the waypoint does with each field is `upstream::balance`'s business; in short:
//!
//! | field | at the waypoint |
//! |---|---|
//! | `simple` `LEAST_REQUEST`, `UNSPECIFIED`, `LEAST_CONN` | least request (power of two choices), the default |
//! | `simple` `ROUND_ROBIN`, `RANDOM` | as named |
//! | `simple` `PASSTHROUGH` | **rejected**: the address the caller dialled is the Service's VIP, which leads back to this waypoint |
//! | `consistentHash` (every key, `ringHash`, `maglev`, `minimumRingSize`) | supported |
//! | `consistentHash.httpCookie.attributes` | added to a generated cookie |
//! | `localityLbSetting`, `zoneAwareLbSetting` | checked, **not applied**: the waypoint knows no endpoint locality |
//! | `warmup`, `warmupDurationSecs` | slow start of endpoints that join later, with round robin and least request (as Istio); not applied with `RANDOM` or `consistentHash` |
//!
//! Fields not applied are accepted (a DestinationRule written for sidecars must not be refused
//! at the waypoint for them) and logged by [`LoadBalancerSettings::check`], which validation
//! runs once per config build ([`LoadBalancerSettings::unapplied`] lists them).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::GoDuration;

/// Envoy's bound on a ring's minimum size (`RingHashLbConfig.minimum_ring_size`), which the
/// balancer also keeps the whole ring within.
pub(crate) const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Istio's bound on a Maglev table: `tableSize` must be smaller.
const MAGLEV_SIZE_BOUND: u64 = 5_000_011;

/// How an endpoint of the backend is chosen (`loadBalancer`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// A policy that needs no tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Session affinity by a hash of a request property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-weighted balancing and failover (not applied: no endpoint locality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Zone-aware balancing (not applied: no endpoint locality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
    /// Deprecated form of `warmup.duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<GoDuration>,
    /// Slow start of new endpoints (round robin and least request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
}

/// `simple`: Istio's `SimpleLB` names.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Istio picks: least request.
    Unspecified,
    /// Deprecated: least request.
    LeastConn,
    /// Uniformly at random.
    Random,
    /// The address the caller dialled, unbalanced (rejected at the waypoint).
    Passthrough,
    /// Each endpoint in turn.
    RoundRobin,
    /// Least outstanding requests, of two random choices.
    LeastRequest,
}

/// `consistentHash`: the hash key (at most one of the four) and the table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash on this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie (generated when missing and `ttl` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the downstream client's IP. Present means set, as in Istio's oneof: even
    /// `false` selects the source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// A ketama-style ring (the default table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// A Maglev table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
    /// Deprecated form of `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// `consistentHash.ringHash`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Points on the ring per endpoint at least; 0 or unset means 1024.
    #[serde(default)]
    pub minimum_ring_size: u64,
}

/// `consistentHash.maglev`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    /// Slots in the table, a prime below 5000011; 0 or unset means 65537.
    #[serde(default)]
    pub table_size: u64,
}

/// `consistentHash.httpCookie`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// The cookie's name (required).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `Path` of a generated cookie.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Lifetime of a generated cookie; unset: never generated; zero: a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<GoDuration>,
    /// More attributes of a generated cookie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

/// `httpCookie.attributes[]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// Attribute name (`SameSite`, `Secure`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Attribute value; empty for a flag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// `localityLbSetting`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Traffic shares from one locality to others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Region failover order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<RegionFailover>,
    /// Labels ordering failover priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Whether locality balancing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `localityLbSetting.distribute[]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// The originating locality (`region/zone/subzone`, `*` allowed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// Destination localities and their weights (summing to 100).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// `failover[]` of locality and zone-aware settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionFailover {
    /// The originating region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// The region to fail over to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
}

/// `zoneAwareLbSetting`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLbSetting {
    /// Whether zone-aware balancing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Region failover order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<RegionFailover>,
    /// Labels ordering failover priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Below this many endpoints, zone awareness is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u64>,
}

/// `warmup`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Warmup {
    /// How long a new endpoint ramps up (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<GoDuration>,
    /// Its starting share of a full weight, percent (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// How fast it ramps (1 is linear; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

impl LoadBalancerSettings {
    /// Why the block is invalid, naming the field inside it; the caller adds the path to it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.simple.is_some() && self.consistent_hash.is_some() {
            return Err("consistentHash: may not be set together with simple".into());
        }
        if self.simple == Some(SimpleLb::Passthrough) {
            return Err(
                "simple: PASSTHROUGH is not supported at a waypoint: the address the caller \
                dialled is the Service's VIP, which leads back to the waypoint itself; the \
                waypoint always balances over the Service's endpoints"
                    .into(),
            );
        }
        if let Some(hash) = &self.consistent_hash {
            hash.check().map_err(|e| format!("consistentHash.{e}"))?;
        }
        if self.locality_lb_setting.is_some() && self.zone_aware_lb_setting.is_some() {
            return Err(
                "zoneAwareLbSetting: may not be set together with localityLbSetting".into(),
            );
        }
        if let Some(l) = &self.locality_lb_setting {
            l.check().map_err(|e| format!("localityLbSetting.{e}"))?;
        }
        if let Some(z) = &self.zone_aware_lb_setting {
            z.check().map_err(|e| format!("zoneAwareLbSetting.{e}"))?;
        }
        if self.warmup.is_some() && self.warmup_duration_secs.is_some() {
            return Err("warmup: may not be set together with warmupDurationSecs".into());
        }
        if let Some(w) = &self.warmup {
            w.check().map_err(|e| format!("warmup.{e}"))?;
        }
        // Validation runs once per config build: this says so once per build and rule.
        for field in self.unapplied() {
            tracing::warn!(
                field = %format!("loadBalancer.{field}"),
                "DestinationRule setting accepted but not applied: the waypoint knows no endpoint \
                 locality, and slow start applies to ROUND_ROBIN and LEAST_REQUEST only"
            );
        }
        Ok(())
    }

    /// The fields set here that the waypoint accepts but does not apply, by name, for the
    /// config build to log.
    pub(crate) fn unapplied(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.locality_lb_setting.is_some() {
            out.push("localityLbSetting");
        }
        if self.zone_aware_lb_setting.is_some() {
            out.push("zoneAwareLbSetting");
        }
        // Istio applies slow start to round robin and least request only.
        let ramps = self.consistent_hash.is_none() && self.simple != Some(SimpleLb::Random);
        if self.warmup_duration_secs.is_some() && !ramps {
            out.push("warmupDurationSecs");
        }
        if self.warmup.is_some() && !ramps {
            out.push("warmup");
        }
        out
    }
}

impl ConsistentHashLb {
    fn check(&self) -> Result<(), String> {
        let keys = [
            self.http_header_name.as_ref().map(|_| "httpHeaderName"),
            self.http_cookie.as_ref().map(|_| "httpCookie"),
            self.use_source_ip.as_ref().map(|_| "useSourceIp"),
            self.http_query_parameter_name
                .as_ref()
                .map(|_| "httpQueryParameterName"),
        ];
        let set: Vec<&str> = keys.into_iter().flatten().collect();
        if set.len() > 1 {
            return Err(format!(
                "{}: may not be set together with {}",
                set[1], set[0]
            ));
        }
        if let Some(name) = &self.http_header_name
            && http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(format!(
                "httpHeaderName: `{name}` is not a valid header name"
            ));
        }
        if let Some(name) = &self.http_query_parameter_name
            && name.is_empty()
        {
            return Err("httpQueryParameterName: must not be empty".into());
        }
        if let Some(cookie) = &self.http_cookie {
            cookie.check().map_err(|e| format!("httpCookie.{e}"))?;
        }
        if self.ring_hash.is_some() && self.maglev.is_some() {
            return Err("maglev: may not be set together with ringHash".into());
        }
        if self.minimum_ring_size.is_some() && (self.ring_hash.is_some() || self.maglev.is_some()) {
            return Err(
                "minimumRingSize: (deprecated) may not be set together with ringHash or maglev"
                    .into(),
            );
        }
        let ring_bound = |field: &str, size: u64| match size > MAX_RING_SIZE {
            true => Err(format!("{field}: must be at most {MAX_RING_SIZE}")),
            false => Ok(()),
        };
        if let Some(size) = self.minimum_ring_size {
            ring_bound("minimumRingSize", size)?;
        }
        if let Some(ring) = &self.ring_hash {
            ring_bound("ringHash.minimumRingSize", ring.minimum_ring_size)?;
        }
        if let Some(maglev) = &self.maglev {
            // Unset (0) takes the documented default, 65537, where istiod's webhook refuses it.
            let size = maglev.table_size;
            if size != 0 && size >= MAGLEV_SIZE_BOUND {
                return Err(format!(
                    "maglev.tableSize: must be less than {MAGLEV_SIZE_BOUND}"
                ));
            }
            if size != 0 && !is_prime(size) {
                return Err(format!("maglev.tableSize: {size} is not a prime number"));
            }
        }
        Ok(())
    }
}

impl HttpCookie {
    fn check(&self) -> Result<(), String> {
        // The name, path and attributes go into a Set-Cookie header: RFC 6265 tokens and
        // values, never a `;` that would start another attribute.
        if self.name.is_empty() {
            return Err("name: required".into());
        }
        if !is_token(&self.name) {
            return Err(format!("name: `{}` is not a valid cookie name", self.name));
        }
        if !is_attribute_value(&self.path) {
            return Err(format!("path: `{}` is not a valid cookie path", self.path));
        }
        let mut seen = HashSet::new();
        for (i, a) in self.attributes.iter().enumerate() {
            if a.name.is_empty() {
                return Err(format!("attributes[{i}].name: required"));
            }
            if !is_token(&a.name) {
                return Err(format!(
                    "attributes[{i}].name: `{}` is not a valid attribute name",
                    a.name
                ));
            }
            if !is_attribute_value(&a.value) {
                return Err(format!(
                    "attributes[{i}].value: `{}` is not a valid attribute value",
                    a.value
                ));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(format!(
                    "attributes[{i}].name: duplicate attribute `{}`",
                    a.name
                ));
            }
        }
        Ok(())
    }
}

impl LocalityLbSetting {
    fn check(&self) -> Result<(), String> {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            return Err("failover: may not be set together with distribute".into());
        }
        if !self.failover.is_empty()
            && let Some(l) = self
                .failover_priority
                .iter()
                .find(|l| TOPOLOGY_LABELS.contains(&l.as_str()))
        {
            return Err(format!(
                "failoverPriority: `{l}` may not be used together with failover"
            ));
        }
        for (i, d) in self.distribute.iter().enumerate() {
            if d.to.values().any(|w| !(1..=100).contains(w)) {
                return Err(format!(
                    "distribute[{i}].to: every weight must be in 1..100"
                ));
            }
            let total: u32 = d.to.values().sum();
            if total != 100 {
                return Err(format!(
                    "distribute[{i}].to: weights sum to {total}, not 100"
                ));
            }
        }
        check_failover(&self.failover)
    }
}

impl ZoneAwareLbSetting {
    fn check(&self) -> Result<(), String> {
        if let Some(l) = self
            .failover_priority
            .iter()
            .find(|l| TOPOLOGY_LABELS.contains(&l.as_str()))
        {
            return Err(format!(
                "failoverPriority: `{l}` may not be used: region and zone routing are automatic"
            ));
        }
        check_failover(&self.failover)
    }
}

fn check_failover(failover: &[RegionFailover]) -> Result<(), String> {
    for (i, f) in failover.iter().enumerate() {
        if f.from == f.to {
            return Err(format!(
                "failover[{i}]: from and to must be different regions"
            ));
        }
        if [&f.from, &f.to]
            .iter()
            .any(|r| r.contains('/') || r.contains('*'))
        {
            return Err(format!(
                "failover[{i}]: from and to name regions only (no `/`, no `*`)"
            ));
        }
    }
    Ok(())
}

impl Warmup {
    fn check(&self) -> Result<(), String> {
        if self.duration.is_none() {
            return Err("duration: required".into());
        }
        if let Some(p) = self.minimum_percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err(format!("minimumPercent: {p} is not in 0..100"));
        }
        if let Some(a) = self.aggression
            && !(a > 0.0 && a.is_finite())
        {
            return Err(format!("aggression: {a} must be greater than 0"));
        }
        Ok(())
    }
}

/// Trial division, as Envoy and istiod test a Maglev table size.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut f = 3;
    while f * f <= n {
        if n.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

/// An RFC 9110 token (cookie and attribute names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible ASCII and spaces without `;` (a cookie attribute value).
fn is_attribute_value(s: &str) -> bool {
    s.bytes()
        .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b';')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(yaml: &str) -> Result<LoadBalancerSettings, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    fn check(yaml: &str) -> Result<(), String> {
        parse(yaml).unwrap().check()
    }

    #[test]
    fn every_istio_field_reads() {
        let lb = parse(
            r#"
consistentHash:
  httpCookie:
    name: session
    path: /app
    ttl: 1h
    attributes: [{name: SameSite, value: Lax}, {name: Secure}]
  maglev: {tableSize: 65537}
localityLbSetting:
  distribute: [{from: "us/a/*", to: {"us/a/*": 80, "us/b/*": 20}}]
  enabled: true
warmupDurationSecs: 10s
"#,
        )
        .unwrap();
        let hash = lb.consistent_hash.as_ref().unwrap();
        let cookie = hash.http_cookie.as_ref().unwrap();
        assert_eq!(cookie.ttl, Some(GoDuration(Duration::from_secs(3600))));
        assert_eq!(cookie.attributes[1].name, "Secure");
        assert_eq!(hash.maglev.as_ref().unwrap().table_size, 65537);
        assert_eq!(lb.unapplied(), ["localityLbSetting", "warmupDurationSecs"]);
        assert!(lb.check().is_ok());

        let lb = parse(
            "simple: LEAST_CONN\nzoneAwareLbSetting: {enabled: true, minClusterSize: 3, failover: [{from: us, to: eu}]}\nwarmup: {duration: 30s, minimumPercent: 20, aggression: 1.5}\n",
        )
        .unwrap();
        assert_eq!(lb.simple, Some(SimpleLb::LeastConn));
        // Written back (for /config_dump) as Istio names the fields, unset ones left out, and
        // read again to the same settings.
        let written = serde_json::to_value(&lb).unwrap();
        assert_eq!(written["simple"], "LEAST_CONN");
        assert_eq!(written["warmup"]["duration"], "30s");
        assert!(written.get("consistentHash").is_none());
        assert_eq!(parse(&written.to_string()).unwrap(), lb);
        assert_eq!(lb.unapplied(), ["zoneAwareLbSetting"]);
        assert!(lb.check().is_ok());
        for s in [
            "simple: ROUND_ROBIN",
            "simple: RANDOM",
            "simple: LEAST_REQUEST",
            "simple: UNSPECIFIED",
        ] {
            assert!(check(s).is_ok(), "{s}");
        }
        let random = parse("simple: RANDOM\nwarmup: {duration: 1s}").unwrap();
        assert_eq!(random.unapplied(), ["warmup"]);
        let lb = parse("consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 2048}}")
            .unwrap();
        assert_eq!(
            lb.consistent_hash
                .unwrap()
                .ring_hash
                .unwrap()
                .minimum_ring_size,
            2048
        );
    }

    #[test]
    fn unknown_fields_and_values_are_refused_when_read() {
        assert!(parse("simpel: RANDOM").is_err());
        assert!(parse("simple: FASTEST").is_err());
        assert!(parse("consistentHash: {httpHeader: x}").is_err());
        assert!(parse("consistentHash: {httpCookie: {name: a, tll: 1s}}").is_err());
        assert!(parse("consistentHash: {maglev: {tableSize: -1}}").is_err());
    }

    #[test]
    fn invalid_settings_are_refused_naming_the_field() {
        let cases = [
            (
                "simple: PASSTHROUGH",
                "simple: PASSTHROUGH is not supported at a waypoint",
            ),
            (
                "simple: RANDOM\nconsistentHash: {useSourceIp: true}",
                "consistentHash: may not be set together with simple",
            ),
            (
                "consistentHash: {httpHeaderName: x, useSourceIp: true}",
                "consistentHash.useSourceIp: may not be set together with httpHeaderName",
            ),
            (
                "consistentHash: {httpHeaderName: 'bad name'}",
                "consistentHash.httpHeaderName: `bad name` is not a valid header name",
            ),
            (
                "consistentHash: {httpQueryParameterName: ''}",
                "consistentHash.httpQueryParameterName: must not be empty",
            ),
            (
                "consistentHash: {httpCookie: {ttl: 1s}}",
                "consistentHash.httpCookie.name: required",
            ),
            (
                "consistentHash: {httpCookie: {name: 'a;b'}}",
                "consistentHash.httpCookie.name: `a;b` is not a valid cookie name",
            ),
            (
                "consistentHash: {httpCookie: {name: a, path: '/x; Domain=evil'}}",
                "consistentHash.httpCookie.path:",
            ),
            (
                "consistentHash: {httpCookie: {name: a, attributes: [{name: Secure}, {name: Secure}]}}",
                "consistentHash.httpCookie.attributes[1].name: duplicate attribute `Secure`",
            ),
            (
                "consistentHash: {httpCookie: {name: a, attributes: [{value: x}]}}",
                "consistentHash.httpCookie.attributes[0].name: required",
            ),
            (
                "consistentHash: {ringHash: {}, maglev: {}}",
                "consistentHash.maglev: may not be set together with ringHash",
            ),
            (
                "consistentHash: {minimumRingSize: 10, maglev: {}}",
                "consistentHash.minimumRingSize: (deprecated) may not be set together",
            ),
            (
                "consistentHash: {ringHash: {minimumRingSize: 8388609}}",
                "consistentHash.ringHash.minimumRingSize: must be at most 8388608",
            ),
            (
                "consistentHash: {minimumRingSize: 9000000}",
                "consistentHash.minimumRingSize: must be at most 8388608",
            ),
            (
                "consistentHash: {maglev: {tableSize: 65536}}",
                "consistentHash.maglev.tableSize: 65536 is not a prime number",
            ),
            (
                "consistentHash: {maglev: {tableSize: 5000011}}",
                "consistentHash.maglev.tableSize: must be less than 5000011",
            ),
            (
                "localityLbSetting: {}\nzoneAwareLbSetting: {}",
                "zoneAwareLbSetting: may not be set together with localityLbSetting",
            ),
            (
                "localityLbSetting: {distribute: [{from: a, to: {b: 60}}]}",
                "localityLbSetting.distribute[0].to: weights sum to 60, not 100",
            ),
            (
                "localityLbSetting: {distribute: [{from: a, to: {b: 0, c: 100}}]}",
                "localityLbSetting.distribute[0].to: every weight must be in 1..100",
            ),
            (
                "localityLbSetting: {distribute: [{from: a, to: {b: 100}}], failover: [{from: us, to: eu}]}",
                "localityLbSetting.failover: may not be set together with distribute",
            ),
            (
                "localityLbSetting: {failover: [{from: us, to: us}]}",
                "localityLbSetting.failover[0]: from and to must be different",
            ),
            (
                "localityLbSetting: {failover: [{from: us/a, to: eu}]}",
                "localityLbSetting.failover[0]: from and to name regions only",
            ),
            (
                "zoneAwareLbSetting: {failoverPriority: [topology.kubernetes.io/zone]}",
                "zoneAwareLbSetting.failoverPriority: `topology.kubernetes.io/zone` may not be used",
            ),
            ("warmup: {minimumPercent: 5}", "warmup.duration: required"),
            (
                "warmup: {duration: 1s, minimumPercent: 101}",
                "warmup.minimumPercent: 101 is not in 0..100",
            ),
            (
                "warmup: {duration: 1s, aggression: 0}",
                "warmup.aggression: 0 must be greater than 0",
            ),
            (
                "warmup: {duration: 1s}\nwarmupDurationSecs: 1s",
                "warmup: may not be set together with warmupDurationSecs",
            ),
        ];
        for (yaml, want) in cases {
            let err = check(yaml).unwrap_err();
            assert!(err.starts_with(want), "{yaml}: {err}");
        }
    }

    #[test]
    fn maglev_without_a_size_or_with_a_prime_size_is_accepted() {
        assert!(check("consistentHash: {maglev: {}}").is_ok());
        assert!(check("consistentHash: {maglev: {tableSize: 65537}}").is_ok());
        assert!(check("consistentHash: {maglev: {tableSize: 251}}").is_ok());
        assert!([2, 3, 5, 251, 65537].into_iter().all(is_prime));
        assert!(![0, 1, 4, 9, 65535, 65541].into_iter().any(is_prime));
    }
}
