//! Manifest loading and validation: multi-document YAML → `Config`, then the built-in filter
//! factories compiling it (routes, regexes, policies, JWT rules), as a reload does.
//!
//! Properties, beyond "never panics and never hangs" (libFuzzer's `-timeout` catches the
//! latter): a load either fails as a whole with a message, or every status names a resource
//! kind, and every false condition and every filter build report says why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypoint_core::config::parse_manifests;
use waypoint_core::filter::FilterSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match parse_manifests(text, "fuzz.yaml") {
        Ok(config) => config,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    for status in &config.statuses {
        assert!(!status.resource.kind.is_empty(), "{status:?}");
        for condition in status.conditions.iter().filter(|c| !c.status) {
            assert!(!condition.reason.is_empty(), "{status:?}");
            assert!(!condition.message.is_empty(), "{status:?}");
        }
    }
    let mut filters = FilterSet::new();
    filters.install(waypoint_filters::Builtins::default());
    let (_chain, output) = filters.build(&config);
    for report in &output.reports {
        assert!(!report.resource.kind.is_empty(), "{report:?}");
        assert!(!report.reason.is_empty(), "{report:?}");
        assert!(!report.message.is_empty(), "{report:?}");
    }
});
