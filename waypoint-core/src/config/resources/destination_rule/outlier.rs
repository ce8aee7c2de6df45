//! When a failing endpoint is set aside (`outlierDetection`): Istio's `OutlierDetection`, field
//! for field. What the fields do, and the defaults of those left unset, is the detector's
//! business (`upstream::outlier`); here they are read and checked as Istio's validation does.
//!
//! Numbers are read wide (`i64`) so that a negative or oversized value is refused by `check`
//! with the field named, rather than by the reader with a type error.

use serde::{Deserialize, Serialize};

use super::GoDuration;

/// When a failing endpoint is set aside (`outlierDetection`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Count connection failures, resets and timeouts apart from the responses
    /// (`consecutiveLocalOriginFailures`) instead of as 503/504.
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    /// Local-origin failures in a row that eject an endpoint (default 5); only with the split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<i64>,
    /// 502, 503 or 504 in a row that eject an endpoint (off unless above 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<i64>,
    /// 5xx in a row that eject an endpoint (default 5; 0 turns it off).
    #[serde(
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<i64>,
    /// Envoy's sweep interval (default 10s): here the pace at which the ejection time shrinks
    /// back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    /// The ejection time, multiplied by how often the endpoint was ejected (default 30s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<GoDuration>,
    /// At most this percentage of the endpoints ejected at once (0 or unset: 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i64>,
    /// Below this percentage of endpoints in service, all are used (default 0: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i64>,
    /// The statuses that count as errors instead of the 5xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<i64>,
    /// Deprecated and ignored by Istio (hidden from its documentation); refused here unless 0,
    /// so that a rule relying on it does not silently do nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i64>,
}

impl OutlierDetection {
    /// Why the block is invalid, naming the field inside it; the caller adds the path to it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.consecutive_errors.is_some_and(|n| n != 0) {
            return Err("consecutiveErrors: deprecated and ignored by Istio; use \
                        consecutive5xxErrors or consecutiveGatewayErrors"
                .to_owned());
        }
        for (field, value) in [
            (
                "consecutiveLocalOriginFailures",
                self.consecutive_local_origin_failures,
            ),
            ("consecutiveGatewayErrors", self.consecutive_gateway_errors),
            ("consecutive5xxErrors", self.consecutive_5xx_errors),
        ] {
            if let Some(n) = value.filter(|n| u32::try_from(*n).is_err()) {
                return Err(format!("{field}: {n} is not a count (0 to {})", u32::MAX));
            }
        }
        if !self.split_external_local_origin_errors
            && self
                .consecutive_local_origin_failures
                .is_some_and(|n| n > 0)
        {
            return Err("consecutiveLocalOriginFailures: takes effect only with \
                        splitExternalLocalOriginErrors: true"
                .to_owned());
        }
        for (field, value) in [
            ("interval", self.interval),
            ("baseEjectionTime", self.base_ejection_time),
        ] {
            let Some(GoDuration(d)) = value else { continue };
            if d.as_millis() < 1 {
                return Err(format!("{field}: must be at least 1ms"));
            }
            if d.subsec_nanos() % 1_000_000 != 0 {
                return Err(format!("{field}: must be whole milliseconds"));
            }
        }
        for (field, value) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            if let Some(n) = value.filter(|n| !(0..=100).contains(n)) {
                return Err(format!("{field}: {n} is not a percentage (0 to 100)"));
            }
        }
        if let Some(code) = self
            .outlier_detection_http_error_codes
            .iter()
            .find(|c| !(100..=599).contains(*c))
        {
            return Err(format!(
                "outlierDetectionHttpErrorCodes: {code} is not an HTTP status (100 to 599)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn read(yaml: &str) -> Result<OutlierDetection, String> {
        serde_saphyr::from_str::<OutlierDetection>(yaml).map_err(|e| e.to_string())
    }

    fn check(yaml: &str) -> Result<(), String> {
        read(yaml).unwrap().check()
    }

    #[test]
    fn every_istio_field_reads() {
        let od = read(
            "splitExternalLocalOriginErrors: true\n\
             consecutiveLocalOriginFailures: 2\n\
             consecutiveGatewayErrors: 3\n\
             consecutive5xxErrors: 4\n\
             interval: 1s\n\
             baseEjectionTime: 1.5s\n\
             maxEjectionPercent: 50\n\
             minHealthPercent: 20\n\
             outlierDetectionHttpErrorCodes: [429, 503]\n",
        )
        .unwrap();
        assert!(od.split_external_local_origin_errors);
        assert_eq!(od.consecutive_local_origin_failures, Some(2));
        assert_eq!(od.consecutive_gateway_errors, Some(3));
        assert_eq!(od.consecutive_5xx_errors, Some(4));
        assert_eq!(od.interval.unwrap().0.as_millis(), 1000);
        assert_eq!(od.base_ejection_time.unwrap().0.as_millis(), 1500);
        assert_eq!(od.max_ejection_percent, Some(50));
        assert_eq!(od.min_health_percent, Some(20));
        assert_eq!(od.outlier_detection_http_error_codes, [429, 503]);
        assert_eq!(od.check(), Ok(()));
        assert_eq!(read("{}").unwrap().check(), Ok(()));
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let err = read("consecutive5xx: 3").unwrap_err();
        assert!(err.contains("consecutive5xx"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused_with_the_field_named() {
        for (yaml, field) in [
            ("consecutive5xxErrors: -1", "consecutive5xxErrors: "),
            (
                "consecutiveGatewayErrors: 5000000000",
                "consecutiveGatewayErrors: ",
            ),
            (
                "consecutiveLocalOriginFailures: 3",
                "consecutiveLocalOriginFailures: takes effect only with",
            ),
            ("interval: 0s", "interval: must be at least 1ms"),
            (
                "baseEjectionTime: 500us",
                "baseEjectionTime: must be at least 1ms",
            ),
            (
                "baseEjectionTime: 1500us",
                "baseEjectionTime: must be whole milliseconds",
            ),
            (
                "maxEjectionPercent: 101",
                "maxEjectionPercent: 101 is not a percentage",
            ),
            (
                "minHealthPercent: -5",
                "minHealthPercent: -5 is not a percentage",
            ),
            (
                "outlierDetectionHttpErrorCodes: [200, 600]",
                "outlierDetectionHttpErrorCodes: 600",
            ),
            ("consecutiveErrors: 5", "consecutiveErrors: deprecated"),
        ] {
            let err = check(yaml).unwrap_err();
            assert!(err.starts_with(field), "{yaml}: {err}");
        }
        // The split makes the local-origin threshold meaningful; 0 is harmless without it.
        assert_eq!(
            check("splitExternalLocalOriginErrors: true\nconsecutiveLocalOriginFailures: 3"),
            Ok(())
        );
        assert_eq!(check("consecutiveLocalOriginFailures: 0"), Ok(()));
        assert_eq!(check("consecutiveErrors: 0"), Ok(()));
    }
}
