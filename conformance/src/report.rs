//! The upstream-format `ConformanceReport` (conformance/apis/v1) and a readable summary.
//!
//! A test counts in a profile only when all its features belong to that profile; it counts
//! at the extended level when any feature is outside the core. A level's result is `failure`
//! if any test failed, else `partial` if any was skipped, else `success`. As upstream's
//! report: a test needing a feature waypoint does not declare counts nowhere, while a test
//! that could run but did not (a case skipped, or an upstream test with no case file) counts
//! as skipped, so a level with an unrun test never reads `success`.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Serialize;
use waypoint_core::telemetry::access_log::rfc3339_millis;

use crate::features::{self, Level, PROFILES};
use crate::runner::{CaseResult, Outcome};

/// The `ConformanceReport` document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConformanceReport {
    api_version: &'static str,
    kind: &'static str,
    date: String,
    gateway_api_version: &'static str,
    gateway_api_channel: &'static str,
    mode: &'static str,
    implementation: Implementation,
    profiles: Vec<ProfileReport>,
    succeeded_provisional_tests: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Implementation {
    organization: &'static str,
    project: &'static str,
    url: &'static str,
    version: &'static str,
    contact: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
struct ProfileReport {
    name: &'static str,
    summary: String,
    core: LevelReport,
    extended: LevelReport,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct LevelReport {
    result: &'static str,
    statistics: Statistics,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped_tests: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_tests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supported_features: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsupported_features: Option<Vec<&'static str>>,
}

#[derive(Debug, Default, Serialize)]
struct Statistics {
    #[serde(rename = "Passed")]
    passed: usize,
    #[serde(rename = "Skipped")]
    skipped: usize,
    #[serde(rename = "Failed")]
    failed: usize,
}

impl LevelReport {
    fn add(&mut self, result: &CaseResult) {
        match &result.outcome {
            Outcome::Passed => self.statistics.passed += 1,
            Outcome::Failed(_) => {
                self.statistics.failed += 1;
                self.failed_tests.push(result.name.clone());
            }
            Outcome::Skipped(_) => {
                self.statistics.skipped += 1;
                self.skipped_tests.push(result.name.clone());
            }
            // As upstream: a test of an undeclared feature counts in no level.
            Outcome::NotSupported(_) => {}
        }
    }

    fn finish(&mut self) {
        self.result = if self.statistics.failed > 0 {
            "failure"
        } else if self.statistics.skipped > 0 {
            "partial"
        } else {
            "success"
        };
    }
}

/// Today's date, UTC, as `YYYY-MM-DD`: the date part of the access log's timestamp format, so
/// the calendar arithmetic lives in one place.
fn today() -> String {
    let mut stamp = rfc3339_millis(std::time::SystemTime::now());
    stamp.truncate("YYYY-MM-DD".len());
    stamp
}

/// Builds the report from the results.
pub fn build(results: &[CaseResult]) -> ConformanceReport {
    let profiles = PROFILES
        .iter()
        .map(|profile| {
            let mut core = LevelReport::default();
            let mut extended = LevelReport::default();
            for r in results {
                match profile.level(&r.features) {
                    Some(Level::Core) => core.add(r),
                    Some(Level::Extended) => extended.add(r),
                    None => {}
                }
            }
            core.finish();
            extended.finish();
            let all: BTreeSet<&'static str> = profile.extended_features().collect();
            let (supported, unsupported): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|f| features::supported(f));
            extended.supported_features = Some(supported);
            extended.unsupported_features = Some(unsupported);
            let s = |l: &LevelReport| {
                format!(
                    "{} ({} passed, {} skipped, {} failed)",
                    l.result, l.statistics.passed, l.statistics.skipped, l.statistics.failed
                )
            };
            ProfileReport {
                name: profile.name,
                summary: format!("Core tests {}, extended tests {}.", s(&core), s(&extended)),
                core,
                extended,
            }
        })
        .collect();
    ConformanceReport {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "ConformanceReport",
        date: today(),
        gateway_api_version: "v1.6.1",
        gateway_api_channel: "experimental",
        mode: "default",
        implementation: Implementation {
            organization: "waypoint-proxy",
            project: "waypoint",
            url: "https://github.com/waypoint-proxy/waypoint",
            version: env!("CARGO_PKG_VERSION"),
            contact: vec!["@waypoint-proxy/maintainers"],
        },
        profiles,
        succeeded_provisional_tests: results
            .iter()
            .filter(|r| r.provisional && r.outcome == Outcome::Passed)
            .map(|r| r.name.clone())
            .collect(),
    }
}

impl ConformanceReport {
    /// The report as YAML.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self)
            .unwrap_or_else(|e| format!("# cannot encode the report: {e}\n"))
    }
}

/// A table of profiles and levels, then every test that did not pass, with why.
pub fn summary(results: &[CaseResult]) -> String {
    let report = build(results);
    let mut out = String::from(
        "| profile | level | result | passed | skipped | failed |\n|---|---|---|---|---|---|\n",
    );
    for p in &report.profiles {
        for (level, l) in [("core", &p.core), ("extended", &p.extended)] {
            let _ = writeln!(
                out,
                "| {} | {level} | {} | {} | {} | {} |",
                p.name, l.result, l.statistics.passed, l.statistics.skipped, l.statistics.failed
            );
        }
    }
    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    let _ = writeln!(out, "\n{} cases: {passed} passed", results.len());
    if !report.succeeded_provisional_tests.is_empty() {
        let _ = writeln!(
            out,
            "provisional tests passed: {}",
            report.succeeded_provisional_tests.join(", ")
        );
    }
    for r in results {
        // Upstream marks some tests provisional; say so where they did not pass.
        let name = if r.provisional {
            format!("{} (provisional)", r.name)
        } else {
            r.name.clone()
        };
        match &r.outcome {
            Outcome::Passed => {}
            Outcome::Skipped(why) => {
                let _ = writeln!(out, "SKIP {name}: {why}");
            }
            Outcome::NotSupported(why) => {
                let _ = writeln!(out, "NOT SUPPORTED {name}: {why}");
            }
            Outcome::Failed(why) => {
                let _ = writeln!(out, "FAIL {name}:");
                for line in why {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(name: &str, provisional: bool, outcome: Outcome) -> CaseResult {
        CaseResult {
            name: name.into(),
            features: vec!["Gateway".into(), "TCPRoute".into()],
            provisional,
            outcome,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn provisional_tests_are_marked_as_upstream_marks_them() {
        let results = [
            result("TCPRouteWeightedRouting", true, Outcome::Passed),
            result(
                "TCPRouteReferenceGrant",
                true,
                Outcome::Failed(vec!["x".into()]),
            ),
            result(
                "TCPRouteMultipleRoutesAttachment",
                false,
                Outcome::Failed(vec!["y".into()]),
            ),
        ];
        let report = build(&results);
        assert_eq!(
            report.succeeded_provisional_tests,
            ["TCPRouteWeightedRouting"]
        );
        let text = summary(&results);
        assert!(
            text.contains("provisional tests passed: TCPRouteWeightedRouting"),
            "{text}"
        );
        assert!(
            text.contains("FAIL TCPRouteReferenceGrant (provisional):"),
            "{text}"
        );
        assert!(
            text.contains("FAIL TCPRouteMultipleRoutesAttachment:"),
            "{text}"
        );
        let tcp = report
            .profiles
            .iter()
            .find(|p| p.name == "GATEWAY-TCP")
            .unwrap();
        assert_eq!(tcp.core.statistics.failed, 2);
    }

    #[test]
    fn an_unrun_core_test_keeps_its_level_from_success_and_an_unsupported_one_counts_nowhere() {
        let passed = result("TCPRouteMultipleRoutesAttachment", false, Outcome::Passed);
        let tcp_core = |results: &[CaseResult]| {
            let report = build(results);
            let tcp = report
                .profiles
                .into_iter()
                .find(|p| p.name == "GATEWAY-TCP");
            let core = tcp.expect("GATEWAY-TCP").core;
            (core.result, core.statistics.skipped)
        };
        assert_eq!(tcp_core(std::slice::from_ref(&passed)), ("success", 0));
        let unsupported = result(
            "TCPRouteSomething",
            false,
            Outcome::NotSupported("x".into()),
        );
        assert_eq!(tcp_core(&[passed.clone(), unsupported]), ("success", 0));
        let unrun = result("TCPRouteOther", false, Outcome::Skipped("no case".into()));
        assert_eq!(tcp_core(&[passed, unrun]), ("partial", 1));
    }
}
