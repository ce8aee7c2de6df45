//! Limits on connections and requests to the backend (`connectionPool`), field for field as
//! Istio's `networking.v1.ConnectionPoolSettings`. What each does at the waypoint is in
//! `upstream::limits`; this file only reads and validates.
//!
//! Counts are `int32` in Istio's API and read as such here, so a negative value is reported by
//! [`ConnectionPoolSettings::check`] with its field named rather than failing to parse. Zero
//! means unset (unlimited), as Istio reads it. Durations must be at least 1 ms and whole
//! milliseconds, Istio's rule.
//!
//! Three fields are refused rather than silently ignored, because honouring them would change
//! how the waypoint speaks to a backend, which its Service port decides here:
//! `http.h2UpgradePolicy: UPGRADE`, `http.useClientProtocol: true` and a non-zero
//! `http.maxConcurrentStreams` (one h2c connection per endpoint; bound concurrent requests with
//! `http2MaxRequests` instead).

use serde::{Deserialize, Serialize};

use super::GoDuration;

/// Limits on connections and requests to the backend (`connectionPool`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// Settings common to TCP and HTTP connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// HTTP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// `connectionPool.tcp`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// The most connections open to the backend (all its endpoints together).
    #[serde(default)]
    pub max_connections: i32,
    /// How long a connection may take to open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<GoDuration>,
    /// Turns on TCP keepalive for connections to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// A connection takes no new request once this old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<GoDuration>,
    /// The idle timeout of the backend's connections when `http.idleTimeout` is unset (`0s`:
    /// Istio's "disabled", which keeps the waypoint's own idle timeout here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<GoDuration>,
}

/// `connectionPool.tcp.tcpKeepalive`; unset parts keep the system's defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<GoDuration>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
}

/// `connectionPool.http`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// The most requests waiting for an HTTP/1.1 connection.
    #[serde(default)]
    pub http1_max_pending_requests: i32,
    /// The most requests in flight to the backend.
    #[serde(default)]
    pub http2_max_requests: i32,
    /// Requests a connection serves before it closes (1 disables keep-alive).
    #[serde(default)]
    pub max_requests_per_connection: i32,
    /// The most retries in flight to the backend.
    #[serde(default)]
    pub max_retries: i32,
    /// How long an unused connection stays open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<GoDuration>,
    /// Whether HTTP/1.1 connections are upgraded to HTTP/2.
    #[serde(default)]
    pub h2_upgrade_policy: H2UpgradePolicy,
    /// Speak to the backend the protocol the client spoke.
    #[serde(default)]
    pub use_client_protocol: bool,
    /// The most concurrent streams on one HTTP/2 connection.
    #[serde(default)]
    pub max_concurrent_streams: i32,
    /// HTTP/2 PINGs toward the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// `connectionPool.http.h2UpgradePolicy`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// The mesh default (never upgrade, at the waypoint).
    #[default]
    Default,
    /// Never upgrade.
    DoNotUpgrade,
    /// Upgrade HTTP/1.1 connections to HTTP/2 (refused here).
    Upgrade,
}

/// `connectionPool.http.http2KeepAlive`: both parts are required.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2KeepAlive {
    /// Time between PINGs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    /// How long to wait for a PING's answer before closing the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

impl ConnectionPoolSettings {
    /// Why the block is invalid, naming the field inside it; the caller adds the path to it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.tcp.is_none() && self.http.is_none() {
            return Err("tcp: one of tcp or http must be set".to_owned());
        }
        if let Some(tcp) = &self.tcp {
            tcp.check().map_err(|e| format!("tcp.{e}"))?;
        }
        if let Some(http) = &self.http {
            http.check().map_err(|e| format!("http.{e}"))?;
        }
        Ok(())
    }
}

impl TcpSettings {
    fn check(&self) -> Result<(), String> {
        not_negative("maxConnections", self.max_connections)?;
        duration("connectTimeout", self.connect_timeout)?;
        duration("maxConnectionDuration", self.max_connection_duration)?;
        // Zero is allowed: Istio reads it as "no idle timeout".
        if self.idle_timeout.is_some_and(|d| !d.0.is_zero()) {
            duration("idleTimeout", self.idle_timeout)?;
        }
        if let Some(ka) = &self.tcp_keepalive {
            duration("tcpKeepalive.time", ka.time)?;
            duration("tcpKeepalive.interval", ka.interval)?;
            // The kernel takes at most 127 probes (TCP_KEEPCNT); more would fail at every dial.
            if ka.probes.is_some_and(|p| p == 0 || p > 127) {
                return Err("tcpKeepalive.probes: must be between 1 and 127".to_owned());
            }
        }
        Ok(())
    }
}

impl HttpSettings {
    fn check(&self) -> Result<(), String> {
        not_negative("http1MaxPendingRequests", self.http1_max_pending_requests)?;
        not_negative("http2MaxRequests", self.http2_max_requests)?;
        not_negative("maxRequestsPerConnection", self.max_requests_per_connection)?;
        not_negative("maxRetries", self.max_retries)?;
        not_negative("maxConcurrentStreams", self.max_concurrent_streams)?;
        duration("idleTimeout", self.idle_timeout)?;
        if let Some(ka) = &self.http2_keep_alive {
            for (name, d) in [("interval", ka.interval), ("timeout", ka.timeout)] {
                if d.is_none() {
                    return Err(format!("http2KeepAlive.{name}: required"));
                }
                duration(&format!("http2KeepAlive.{name}"), d)?;
            }
        }
        if self.h2_upgrade_policy == H2UpgradePolicy::Upgrade && self.use_client_protocol {
            return Err(
                "useClientProtocol: must not be true when h2UpgradePolicy is UPGRADE".to_owned(),
            );
        }
        if self.h2_upgrade_policy == H2UpgradePolicy::Upgrade {
            return Err("h2UpgradePolicy: UPGRADE is not supported by waypoint: it speaks to a backend \
                 the protocol its Service port declares (appProtocol h2c or kubernetes.io/h2c for HTTP/2)"
                .to_owned());
        }
        if self.use_client_protocol {
            return Err(
                "useClientProtocol: true is not supported by waypoint: it speaks to a backend \
                 the protocol its Service port declares, whatever the client spoke"
                    .to_owned(),
            );
        }
        if self.max_concurrent_streams > 0 {
            return Err(
                "maxConcurrentStreams: not supported by waypoint (one h2c connection per \
                 endpoint); bound concurrent requests with http2MaxRequests"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

fn not_negative(field: &str, value: i32) -> Result<(), String> {
    if value < 0 {
        return Err(format!("{field}: must not be negative (got {value})"));
    }
    Ok(())
}

/// Istio's rule for durations in this block: at least 1 ms, in whole milliseconds.
fn duration(field: &str, value: Option<GoDuration>) -> Result<(), String> {
    let Some(GoDuration(d)) = value else {
        return Ok(());
    };
    if d.as_millis() < 1 {
        return Err(format!("{field}: must be at least 1ms"));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{field}: only whole milliseconds are supported"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use std::time::Duration;

    use super::*;

    fn read(yaml: &str) -> Result<ConnectionPoolSettings, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn every_field_of_istios_connection_pool_reads() {
        let p = read(
            r#"
tcp:
  maxConnections: 10
  connectTimeout: 250ms
  tcpKeepalive: {probes: 3, time: 10s, interval: 5s}
  maxConnectionDuration: 1h
  idleTimeout: 30s
http:
  http1MaxPendingRequests: 5
  http2MaxRequests: 100
  maxRequestsPerConnection: 2
  maxRetries: 3
  idleTimeout: 15s
  h2UpgradePolicy: DO_NOT_UPGRADE
  useClientProtocol: false
  maxConcurrentStreams: 0
  http2KeepAlive: {interval: 10s, timeout: 3s}
"#,
        )
        .unwrap();
        let tcp = p.tcp.as_ref().unwrap();
        assert_eq!(tcp.max_connections, 10);
        assert_eq!(tcp.connect_timeout.unwrap().0, Duration::from_millis(250));
        assert_eq!(tcp.tcp_keepalive.as_ref().unwrap().probes, Some(3));
        let http = p.http.as_ref().unwrap();
        assert_eq!(http.http1_max_pending_requests, 5);
        assert_eq!(http.h2_upgrade_policy, H2UpgradePolicy::DoNotUpgrade);
        assert_eq!(
            http.http2_keep_alive.as_ref().unwrap().timeout.unwrap().0,
            Duration::from_secs(3)
        );
        assert_eq!(p.check(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = read("tcp: {maxConnection: 1}").unwrap_err();
        assert!(err.contains("maxConnection"), "{err}");
        let err = read("http: {maxRetry: 1}").unwrap_err();
        assert!(err.contains("maxRetry"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused_with_the_field_named() {
        for (yaml, expected) in [
            ("{}", "tcp: one of tcp or http must be set"),
            (
                "tcp: {maxConnections: -1}",
                "tcp.maxConnections: must not be negative (got -1)",
            ),
            (
                "tcp: {connectTimeout: 0s}",
                "tcp.connectTimeout: must be at least 1ms",
            ),
            (
                "tcp: {connectTimeout: 1500us}",
                "tcp.connectTimeout: only whole milliseconds are supported",
            ),
            (
                "tcp: {maxConnectionDuration: 0s}",
                "tcp.maxConnectionDuration: must be at least 1ms",
            ),
            (
                "tcp: {tcpKeepalive: {interval: 0s}}",
                "tcp.tcpKeepalive.interval: must be at least 1ms",
            ),
            (
                "tcp: {tcpKeepalive: {probes: 0}}",
                "tcp.tcpKeepalive.probes: must be between 1 and 127",
            ),
            (
                "http: {http1MaxPendingRequests: -5}",
                "http.http1MaxPendingRequests: must not be negative (got -5)",
            ),
            (
                "http: {http2MaxRequests: -1}",
                "http.http2MaxRequests: must not be negative (got -1)",
            ),
            (
                "http: {maxRequestsPerConnection: -1}",
                "http.maxRequestsPerConnection: must not be negative (got -1)",
            ),
            (
                "http: {maxRetries: -1}",
                "http.maxRetries: must not be negative (got -1)",
            ),
            (
                "http: {idleTimeout: 0s}",
                "http.idleTimeout: must be at least 1ms",
            ),
            (
                "http: {http2KeepAlive: {interval: 1s}}",
                "http.http2KeepAlive.timeout: required",
            ),
            (
                "http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}",
                "http.useClientProtocol: must not be true when h2UpgradePolicy is UPGRADE",
            ),
        ] {
            let p = read(yaml).unwrap();
            assert_eq!(p.check(), Err(expected.to_owned()), "{yaml}");
        }
    }

    #[test]
    fn settings_that_would_change_the_backend_protocol_are_refused_with_a_reason() {
        for (yaml, field) in [
            (
                "http: {h2UpgradePolicy: UPGRADE}",
                "http.h2UpgradePolicy: UPGRADE is not supported",
            ),
            (
                "http: {useClientProtocol: true}",
                "http.useClientProtocol: true is not supported",
            ),
            (
                "http: {maxConcurrentStreams: 10}",
                "http.maxConcurrentStreams: not supported",
            ),
        ] {
            let err = read(yaml).unwrap().check().unwrap_err();
            assert!(err.starts_with(field), "{yaml}: {err}");
        }
        // What the waypoint does anyway is accepted.
        let ok = read("http: {h2UpgradePolicy: DEFAULT, maxConcurrentStreams: 0}").unwrap();
        assert_eq!(ok.check(), Ok(()));
    }

    #[test]
    fn a_zero_tcp_idle_timeout_is_istios_disabled_and_valid() {
        assert_eq!(read("tcp: {idleTimeout: 0s}").unwrap().check(), Ok(()));
    }
}
