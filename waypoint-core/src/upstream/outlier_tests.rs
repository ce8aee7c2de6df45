#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use super::*;
use crate::config::{AppProtocol, ProtocolSelection};

fn backend(n: u8) -> ServiceBackend {
    ServiceBackend {
        service: ResourceRef::new("Service", "ns", "svc"),
        port: 80,
        cluster_ips: vec![],
        protocol: ProtocolSelection::http(AppProtocol::Http1),
        policy: Default::default(),
        endpoints: (1..=n)
            .map(|i| Endpoint {
                address: ([10, 0, 0, i], 8080).into(),
                stats: Default::default(),
                transport: Default::default(),
            })
            .collect(),
    }
}

fn addr(i: u8) -> SocketAddr {
    ([10, 0, 0, i], 8080).into()
}

/// Settings that let one endpoint of two be ejected, with short, round times.
fn settings() -> OutlierSettings {
    OutlierSettings {
        consecutive_5xx: 3,
        max_ejection_percent: 50,
        interval: Duration::from_secs(1),
        base_ejection_time: Duration::from_secs(10),
        ..OutlierSettings::default()
    }
}

fn eligible(o: &Outliers, b: &ServiceBackend, s: &OutlierSettings, now: Instant) -> Vec<u8> {
    o.eligible(b, Some(s), now)
        .iter()
        .map(|e| match e.address.ip() {
            std::net::IpAddr::V4(ip) => ip.octets()[3],
            std::net::IpAddr::V6(_) => 0,
        })
        .collect()
}

/// Reports `outcome` `n` times at `address`; the last report's ejection.
fn report_n(
    o: &Outliers,
    b: &ServiceBackend,
    s: &OutlierSettings,
    address: SocketAddr,
    outcome: TryOutcome,
    n: usize,
    now: Instant,
) -> Option<EjectionReason> {
    let mut last = None;
    for _ in 0..n {
        last = o.report(b, Some(s), address, outcome, now);
    }
    last
}

#[test]
fn the_third_consecutive_5xx_ejects_and_a_success_in_between_starts_over() {
    let (o, b, s, t0) = (Outliers::default(), backend(2), settings(), Instant::now());
    let fail = TryOutcome::Status(500);
    assert_eq!(report_n(&o, &b, &s, addr(1), fail, 2, t0), None);
    o.report(&b, Some(&s), addr(1), TryOutcome::Status(200), t0);
    assert_eq!(report_n(&o, &b, &s, addr(1), fail, 2, t0), None);
    assert_eq!(eligible(&o, &b, &s, t0), [1, 2]);
    assert_eq!(
        o.report(&b, Some(&s), addr(1), fail, t0),
        Some(EjectionReason::Consecutive5xx)
    );
    assert_eq!(eligible(&o, &b, &s, t0), [2]);
}

#[test]
fn without_settings_nothing_is_counted_or_filtered() {
    let (o, b) = (Outliers::default(), backend(2));
    let t0 = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            o.report(&b, None, addr(1), TryOutcome::Status(503), t0),
            None
        );
    }
    assert!(matches!(o.eligible(&b, None, t0), Cow::Borrowed(e) if e.len() == 2));
    assert!(o.views(t0).is_empty());
}

#[test]
fn an_ejected_endpoint_returns_after_the_base_time_and_the_next_ejection_lasts_twice_as_long() {
    let (o, b, s, t0) = (Outliers::default(), backend(2), settings(), Instant::now());
    let fail = TryOutcome::Status(503);
    report_n(&o, &b, &s, addr(1), fail, 3, t0);
    let secs = Duration::from_secs;
    assert_eq!(eligible(&o, &b, &s, t0 + secs(9)), [2]);
    assert_eq!(eligible(&o, &b, &s, t0 + secs(10)), [1, 2]);

    // Failing again right away: ejected for 2 × 10 s.
    let t1 = t0 + secs(11);
    assert!(report_n(&o, &b, &s, addr(1), fail, 3, t1).is_some());
    let view = &o.views(t1)[0];
    assert_eq!(view.ejected[0].ejections, 2);
    assert_eq!(view.ejected[0].remaining, secs(20));
    assert_eq!(eligible(&o, &b, &s, t1 + secs(19)), [2]);
    assert_eq!(eligible(&o, &b, &s, t1 + secs(20)), [1, 2]);
}

#[test]
fn the_ejection_time_shrinks_again_after_time_in_service_and_is_capped() {
    let (o, b, t0) = (Outliers::default(), backend(2), Instant::now());
    let s = OutlierSettings {
        base_ejection_time: Duration::from_secs(100),
        ..settings()
    };
    let fail = TryOutcome::Status(500);
    let mut now = t0;
    let mut times = Vec::new();
    // Fail again as soon as it returns: 100, 200, 300, then capped at 300 s.
    for _ in 0..5 {
        report_n(&o, &b, &s, addr(1), fail, 3, now);
        let remaining = o.views(now)[0].ejected[0].remaining;
        times.push(remaining.as_secs());
        now += remaining;
    }
    assert_eq!(times, [100, 200, 300, 300, 300]);

    // In service for a base time and then 2 intervals (1 s each): the multiplier (4, one
    // past the cap) drops by 3 steps to 1, so the next ejection lasts 2 × 100 s.
    now += Duration::from_secs(102);
    report_n(&o, &b, &s, addr(1), fail, 3, now);
    assert_eq!(o.views(now)[0].ejected[0].remaining.as_secs(), 200);
}

#[test]
fn max_ejection_percent_counts_the_endpoint_to_eject() {
    let t0 = Instant::now();
    let fail = TryOutcome::Status(500);
    // The default 10%: one endpoint of two would be 50%, so nothing is ejected.
    let (o, b) = (Outliers::default(), backend(2));
    let s = OutlierSettings {
        max_ejection_percent: 10,
        ..settings()
    };
    assert_eq!(report_n(&o, &b, &s, addr(1), fail, 3, t0), None);
    assert_eq!(eligible(&o, &b, &s, t0), [1, 2]);

    // 50% of four: the second ejection is allowed, the third is not.
    let (o, b, s) = (Outliers::default(), backend(4), settings());
    for i in 1..=3 {
        report_n(&o, &b, &s, addr(i), fail, 3, t0);
    }
    assert_eq!(eligible(&o, &b, &s, t0), [3, 4]);
    let view = &o.views(t0)[0];
    assert_eq!(view.ejected.len(), 2);
    assert_eq!(view.ejections_total[0], (EjectionReason::Consecutive5xx, 2));

    // 100%: every endpoint may go, and then there is none to pick.
    let (o, b) = (Outliers::default(), backend(2));
    let s = OutlierSettings {
        max_ejection_percent: 100,
        ..settings()
    };
    report_n(&o, &b, &s, addr(1), fail, 3, t0);
    report_n(&o, &b, &s, addr(2), fail, 3, t0);
    assert!(eligible(&o, &b, &s, t0).is_empty());
}

#[test]
fn below_min_health_percent_every_endpoint_is_used() {
    let (o, b, t0) = (Outliers::default(), backend(4), Instant::now());
    let s = OutlierSettings {
        max_ejection_percent: 100,
        min_health_percent: 50,
        ..settings()
    };
    let fail = TryOutcome::Status(500);
    report_n(&o, &b, &s, addr(1), fail, 3, t0);
    report_n(&o, &b, &s, addr(2), fail, 3, t0);
    // Two of four in service: 50% is not below 50%.
    assert_eq!(eligible(&o, &b, &s, t0), [3, 4]);
    report_n(&o, &b, &s, addr(3), fail, 3, t0);
    // One of four: panic, all four used.
    assert_eq!(eligible(&o, &b, &s, t0), [1, 2, 3, 4]);
}

#[test]
fn gateway_errors_eject_on_their_own_threshold_and_other_5xx_break_their_run() {
    let (o, b, t0) = (Outliers::default(), backend(2), Instant::now());
    let s = OutlierSettings {
        consecutive_5xx: 0,
        consecutive_gateway: 2,
        ..settings()
    };
    o.report(&b, Some(&s), addr(1), TryOutcome::Status(502), t0);
    // A 500 is a 5xx but not a gateway error: the gateway run starts over.
    o.report(&b, Some(&s), addr(1), TryOutcome::Status(500), t0);
    o.report(&b, Some(&s), addr(1), TryOutcome::Status(504), t0);
    assert_eq!(eligible(&o, &b, &s, t0), [1, 2]);
    assert_eq!(
        o.report(&b, Some(&s), addr(1), TryOutcome::Status(503), t0),
        Some(EjectionReason::ConsecutiveGateway)
    );
    // With consecutive5xxErrors 0, 500s never eject.
    assert_eq!(
        report_n(&o, &b, &s, addr(2), TryOutcome::Status(500), 50, t0),
        None
    );
}

#[test]
fn local_origin_failures_count_as_5xx_unless_split() {
    let (o, b, s, t0) = (Outliers::default(), backend(2), settings(), Instant::now());
    o.report(&b, Some(&s), addr(1), TryOutcome::ConnectionFailed, t0);
    o.report(&b, Some(&s), addr(1), TryOutcome::TimedOut, t0);
    assert_eq!(
        o.report(&b, Some(&s), addr(1), TryOutcome::Status(500), t0),
        Some(EjectionReason::Consecutive5xx)
    );

    let (o, t0) = (Outliers::default(), Instant::now());
    let split = OutlierSettings {
        split_local_origin: true,
        consecutive_local_origin: 2,
        ..settings()
    };
    // Split: connection failures no longer count as 5xx, and a response (even a 500)
    // breaks a run of them.
    o.report(&b, Some(&split), addr(1), TryOutcome::ConnectionFailed, t0);
    o.report(&b, Some(&split), addr(1), TryOutcome::Status(500), t0);
    o.report(&b, Some(&split), addr(1), TryOutcome::TimedOut, t0);
    assert_eq!(eligible(&o, &b, &split, t0), [1, 2]);
    assert_eq!(
        o.report(&b, Some(&split), addr(1), TryOutcome::ConnectionFailed, t0),
        Some(EjectionReason::ConsecutiveLocalOrigin)
    );
    // The 5xx counter only saw the one 500 and runs on its own.
    assert_eq!(
        report_n(&o, &b, &split, addr(2), TryOutcome::Status(500), 3, t0),
        None,
        "max 50% of two: the second endpoint cannot be ejected too"
    );
}

#[test]
fn a_connected_stream_breaks_a_run_of_failures() {
    let (o, b, t0) = (Outliers::default(), backend(2), Instant::now());
    for s in [
        settings(),
        OutlierSettings {
            split_local_origin: true,
            consecutive_local_origin: 3,
            ..settings()
        },
    ] {
        let failed = TryOutcome::ConnectionFailed;
        report_n(&o, &b, &s, addr(1), failed, 2, t0);
        o.report(&b, Some(&s), addr(1), TryOutcome::Connected, t0);
        assert_eq!(report_n(&o, &b, &s, addr(1), failed, 2, t0), None);
        assert!(report_n(&o, &b, &s, addr(1), failed, 1, t0).is_some());
    }
}

#[test]
fn error_codes_replace_the_5xx_as_what_counts() {
    let (o, b, t0) = (Outliers::default(), backend(2), Instant::now());
    let s = OutlierSettings {
        error_codes: ErrorCodes::new([429, 503]),
        ..settings()
    };
    assert_eq!(
        report_n(&o, &b, &s, addr(1), TryOutcome::Status(500), 10, t0),
        None
    );
    assert_eq!(
        report_n(&o, &b, &s, addr(1), TryOutcome::Status(429), 3, t0),
        Some(EjectionReason::Consecutive5xx)
    );
    assert!(!ErrorCodes::new([99, 600]).contains(99));
    assert!(ErrorCodes::new([100, 599]).contains(599));
    assert!(!ErrorCodes::new([100]).contains(u16::MAX));
}

#[test]
fn state_survives_a_new_backend_value_but_not_new_settings() {
    let (o, t0) = (Outliers::default(), Instant::now());
    let s = settings();
    report_n(&o, &backend(2), &s, addr(1), TryOutcome::Status(500), 3, t0);
    // A reload builds a new ServiceBackend (one endpoint more): the ejection stays.
    let reloaded = backend(3);
    assert_eq!(eligible(&o, &reloaded, &s, t0), [2, 3]);
    let changed = OutlierSettings {
        base_ejection_time: Duration::from_secs(1),
        ..s
    };
    assert_eq!(eligible(&o, &reloaded, &changed, t0), [1, 2, 3]);
    // The ejection counter keeps counting.
    assert_eq!(o.views(t0)[0].ejections_total[0].1, 1);
}

#[test]
fn every_field_reaches_the_detector_with_istios_defaults_for_the_rest() {
    let read = |yaml: &str| {
        let od: OutlierDetection = serde_saphyr::from_str(yaml).unwrap();
        OutlierSettings::from(&od)
    };
    assert_eq!(read("{}"), OutlierSettings::default());
    let secs = Duration::from_secs;
    assert_eq!(
        read(
            "splitExternalLocalOriginErrors: true\n\
             consecutiveLocalOriginFailures: 2\n\
             consecutiveGatewayErrors: 3\n\
             consecutive5xxErrors: 4\n\
             interval: 1s\n\
             baseEjectionTime: 2s\n\
             maxEjectionPercent: 50\n\
             minHealthPercent: 20\n\
             outlierDetectionHttpErrorCodes: [429]\n"
        ),
        OutlierSettings {
            consecutive_5xx: 4,
            consecutive_gateway: 3,
            split_local_origin: true,
            consecutive_local_origin: 2,
            interval: secs(1),
            base_ejection_time: secs(2),
            max_ejection_percent: 50,
            min_health_percent: 20,
            error_codes: ErrorCodes::new([429]),
        }
    );
    // Istio passes these two only when above 0, so 0 keeps Envoy's default.
    let zeros = read("maxEjectionPercent: 0\nconsecutiveLocalOriginFailures: 0");
    assert_eq!(zeros.max_ejection_percent, 10);
    assert_eq!(zeros.consecutive_local_origin, 5);
    // 0 turns the 5xx detector off.
    assert_eq!(read("consecutive5xxErrors: 0").consecutive_5xx, 0);
}

#[test]
fn reports_for_an_ejected_endpoint_are_ignored() {
    let (o, b, s, t0) = (Outliers::default(), backend(2), settings(), Instant::now());
    report_n(&o, &b, &s, addr(1), TryOutcome::Status(500), 3, t0);
    // Tries that were in flight when it was ejected do not eject it again.
    assert_eq!(
        report_n(&o, &b, &s, addr(1), TryOutcome::Status(500), 3, t0),
        None
    );
    assert_eq!(o.views(t0)[0].ejected[0].ejections, 1);
}
