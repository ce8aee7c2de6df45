//! Slow start (DestinationRule `loadBalancer.warmup`, and the deprecated `warmupDurationSecs`):
//! an endpoint that joins a backend gets a growing share of its requests over the window, as
//! Envoy's slow start does for round robin and least request.
//!
//! Envoy scales the new endpoint's weight by `max(minimumPercent, (age / window)^(1/aggression))`.
//! Our balancers have no weights, so the same factor becomes a chance: when the choice lands on
//! a warming endpoint, it is kept with probability `factor`, and otherwise the choice is made
//! once more among the other endpoints. The warming endpoint thus gets about `factor` of its
//! fair share, rising to all of it at the end of the window.
//!
//! "Joins" is measured by the waypoint: an endpoint is new when it appears in a backend the
//! waypoint has already served; the endpoints of the first set it sees are not warming (it
//! cannot know their age, and ramping a whole backend would only slow everything down). An
//! endpoint that leaves and comes back warms again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::config::ServiceBackend;
use crate::config::resources::LoadBalancerSettings;

/// Envoy's default minimum share of a warming endpoint, percent.
const DEFAULT_MINIMUM_PERCENT: f64 = 10.0;

/// The ramp of new endpoints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Ramp {
    /// How long a new endpoint warms up.
    pub window: Duration,
    /// Its share at the start, as a fraction (0..=1).
    pub minimum: f64,
    /// 1 is linear; more ramps faster at first.
    pub aggression: f64,
}

impl Ramp {
    /// The ramp of validated settings, if they ask for one.
    pub(crate) fn of(settings: &LoadBalancerSettings) -> Option<Ramp> {
        let (window, minimum, aggression) = match (&settings.warmup, settings.warmup_duration_secs)
        {
            (Some(w), _) => (w.duration?.0, w.minimum_percent, w.aggression),
            (None, Some(d)) => (d.0, None, None),
            (None, None) => return None,
        };
        if window.is_zero() {
            return None;
        }
        Some(Ramp {
            window,
            minimum: (minimum.unwrap_or(DEFAULT_MINIMUM_PERCENT) / 100.0).clamp(0.0, 1.0),
            aggression: aggression.filter(|a| *a > 0.0).unwrap_or(1.0),
        })
    }

    /// The share of an endpoint `age` old: 1 once warm.
    pub(crate) fn factor(&self, age: Duration) -> f64 {
        if age >= self.window {
            return 1.0;
        }
        let time = age.as_secs_f64() / self.window.as_secs_f64();
        time.powf(1.0 / self.aggression).max(self.minimum).min(1.0)
    }
}

/// When each endpoint of one backend joined (`None`: in the first set seen, never warming).
#[derive(Debug, Default)]
pub(crate) struct Joined {
    inner: Mutex<JoinedInner>,
}

#[derive(Debug, Default)]
struct JoinedInner {
    since: HashMap<SocketAddr, Option<Instant>>,
    /// The snapshot's backend last compared against: the same one again needs no comparison.
    checked: Weak<ServiceBackend>,
    /// Whether a first endpoint set was seen.
    seen: bool,
}

impl Joined {
    /// The age of every endpoint of `backend` that is still warming under `ramp`, at `now`.
    pub(crate) fn warming(
        &self,
        backend: &Arc<ServiceBackend>,
        ramp: &Ramp,
        now: Instant,
    ) -> Vec<(SocketAddr, Duration)> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !Weak::ptr_eq(&inner.checked, &Arc::downgrade(backend)) {
            let first = !inner.seen;
            let current: HashMap<SocketAddr, Option<Instant>> = backend
                .endpoints
                .iter()
                .map(|e| {
                    let since = match inner.since.get(&e.address) {
                        Some(known) => *known,
                        None if first => None,
                        None => Some(now),
                    };
                    (e.address, since)
                })
                .collect();
            inner.since = current;
            inner.checked = Arc::downgrade(backend);
            inner.seen = true;
        }
        inner
            .since
            .iter()
            .filter_map(|(addr, since)| {
                let age = now.saturating_duration_since((*since)?);
                (age < ramp.window).then_some((*addr, age))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn backend(ips: &[u8]) -> Arc<ServiceBackend> {
        super::super::test_backend("svc", ips)
    }

    fn ramp() -> Ramp {
        Ramp {
            window: Duration::from_secs(100),
            minimum: 0.1,
            aggression: 1.0,
        }
    }

    #[test]
    fn the_share_grows_from_the_minimum_to_all_over_the_window() {
        let r = ramp();
        assert_eq!(r.factor(Duration::ZERO), 0.1);
        assert_eq!(r.factor(Duration::from_secs(5)), 0.1);
        assert!((r.factor(Duration::from_secs(50)) - 0.5).abs() < 1e-9);
        assert_eq!(r.factor(Duration::from_secs(100)), 1.0);
        let fast = Ramp {
            aggression: 2.0,
            ..r
        };
        assert!((fast.factor(Duration::from_secs(25)) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn only_endpoints_that_join_later_warm_and_one_that_returns_warms_again() {
        let joined = Joined::default();
        let t0 = Instant::now();
        assert!(joined.warming(&backend(&[1, 2]), &ramp(), t0).is_empty());
        let t1 = t0 + Duration::from_secs(10);
        let grown = backend(&[1, 2, 3]);
        let warming = joined.warming(&grown, &ramp(), t1);
        assert_eq!(warming, [(([10, 0, 0, 3], 8080).into(), Duration::ZERO)]);
        // Later, and across a reload with the same endpoints, its age counts from when it joined.
        let t2 = t1 + Duration::from_secs(30);
        let warming = joined.warming(&backend(&[3, 2, 1]), &ramp(), t2);
        assert_eq!(
            warming,
            [(([10, 0, 0, 3], 8080).into(), Duration::from_secs(30))]
        );
        // Warm after the window.
        assert!(
            joined
                .warming(&grown, &ramp(), t1 + Duration::from_secs(100))
                .is_empty()
        );
        // Gone and back: warming again.
        joined.warming(&backend(&[1, 2]), &ramp(), t2);
        let back = joined.warming(&backend(&[1, 2, 3]), &ramp(), t2 + Duration::from_secs(1));
        assert_eq!(back.len(), 1);
    }

    #[test]
    fn settings_without_a_duration_ramp_nothing() {
        let lb: LoadBalancerSettings =
            serde_saphyr::from_str("warmup: {duration: 60s, minimumPercent: 20, aggression: 2}")
                .unwrap();
        assert_eq!(
            Ramp::of(&lb),
            Some(Ramp {
                window: Duration::from_secs(60),
                minimum: 0.2,
                aggression: 2.0
            })
        );
        let lb: LoadBalancerSettings = serde_saphyr::from_str("warmupDurationSecs: 30s").unwrap();
        assert_eq!(Ramp::of(&lb).unwrap().minimum, 0.1);
        assert_eq!(Ramp::of(&LoadBalancerSettings::default()), None);
    }
}
