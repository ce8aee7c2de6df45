//! Outlier detection: the endpoints of a backend that failed too often in a row are left out of
//! load balancing for a while (Envoy's consecutive-error detectors, configured as Istio maps a
//! DestinationRule's `outlierDetection` onto them).
//!
//! Every try's outcome is [reported](Outliers::report) against its endpoint. Per endpoint three
//! consecutive counters run; reaching a threshold *ejects* the endpoint:
//!
//! | counter | counts | reset by | threshold (default) |
//! |---|---|---|---|
//! | 5xx | any 5xx response; without the split, also local-origin failures | any non-5xx response | `consecutive5xxErrors` (5; 0 turns it off) |
//! | gateway | 502, 503, 504; without the split, also local-origin failures | any other response | `consecutiveGatewayErrors` (off unless set above 0, as Envoy enforces it 0% by default) |
//! | local origin | connect failures, resets before response headers, try timeouts, only with `splitExternalLocalOriginErrors` | any response at all | `consecutiveLocalOriginFailures` (5) |
//!
//! Without the split a local-origin failure counts as the status the waypoint answers for it
//! (503 for a failed connection, 504 for a timeout), which is Envoy's mapping. Byte streams
//! (TCP routes) report their connection: a failure as above, a success as a 200. With
//! `outlierDetectionHttpErrorCodes` only the listed statuses count as errors, everything else as
//! a success.
//!
//! **Ejection.** Envoy's rules: an endpoint is ejected only if, counting it, no more than
//! `maxEjectionPercent` of the backend's endpoints would be ejected (so with the default 10% a
//! backend of fewer than ten endpoints never ejects; Istio does not set Envoy's
//! `always_eject_one_host`). It stays out for `baseEjectionTime` × its backoff multiplier, which
//! grows by one per ejection (capped where the product reaches Envoy's default
//! `max_ejection_time`, 300 s, which Istio does not set) and shrinks by one per `interval` the
//! endpoint then spends in service after a first `baseEjectionTime`. The counter that fired is
//! reset, ejected or not.
//!
//! **Return.** Envoy returns endpoints at its next `interval` sweep after their time; we check
//! lazily, at the next pick after their time, so an endpoint never returns later than Envoy's
//! would. **Panic.** When fewer than `minHealthPercent` of the endpoints are in service, ejection
//! is ignored and every endpoint is used (Envoy's panic threshold, which Istio sets from it; 0,
//! the default, never panics, so a backend whose endpoints are all ejected answers 503 `UH`).
//!
//! State lives in the [`Upstream`](super::Upstream), keyed by backend (Service and port) and
//! endpoint address, so it survives config reloads; it is reset when the backend's settings
//! change. The time is a parameter of every method so tests drive it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::resources::OutlierDetection;
use crate::config::{Endpoint, ResourceRef, ServiceBackend};

/// Envoy's `max_ejection_time` default, which Istio leaves unset: the longest an ejection lasts
/// once the backoff has grown (never shorter than `baseEjectionTime`).
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// The outlier detection settings in force for `backend`, if its DestinationRule has any.
pub(crate) fn settings_of(backend: &ServiceBackend) -> Option<OutlierSettings> {
    let applied = backend.policy.outlier_detection.as_ref()?;
    Some(OutlierSettings::from(&applied.settings))
}

/// Outlier detection as it runs: Istio's `OutlierDetection` with Istio's and Envoy's defaults
/// filled in. Thresholds of 0 are off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutlierSettings {
    /// Consecutive 5xx before ejection.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 before ejection.
    pub consecutive_gateway: u32,
    /// Whether local-origin failures count apart from responses.
    pub split_local_origin: bool,
    /// Consecutive local-origin failures before ejection (only with the split).
    pub consecutive_local_origin: u32,
    /// The sweep interval: here, how fast the ejection backoff decays.
    pub interval: Duration,
    /// The ejection time per backoff step.
    pub base_ejection_time: Duration,
    /// At most this percentage of the endpoints are ejected at once.
    pub max_ejection_percent: u32,
    /// Below this percentage of endpoints in service, ejections are ignored.
    pub min_health_percent: u32,
    /// Which statuses count as errors; empty: the 5xx.
    pub error_codes: ErrorCodes,
}

impl Default for OutlierSettings {
    /// What an empty `outlierDetection: {}` block means.
    fn default() -> Self {
        OutlierSettings {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            split_local_origin: false,
            consecutive_local_origin: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
            error_codes: ErrorCodes::default(),
        }
    }
}

impl From<&OutlierDetection> for OutlierSettings {
    /// Istio's mapping: unset fields keep Envoy's defaults, except that Istio only passes
    /// `maxEjectionPercent` and `consecutiveLocalOriginFailures` when above 0 (so 0 means the
    /// default there), and always passes `minHealthPercent` (so unset means 0, no panic).
    /// Validation keeps the numbers in range; out of range they fall back to the defaults.
    fn from(od: &OutlierDetection) -> Self {
        let d = OutlierSettings::default();
        let count =
            |v: Option<i64>, default: u32| v.and_then(|n| u32::try_from(n).ok()).unwrap_or(default);
        let percent = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok()).map(|n| n.min(100));
        OutlierSettings {
            consecutive_5xx: count(od.consecutive_5xx_errors, d.consecutive_5xx),
            consecutive_gateway: count(od.consecutive_gateway_errors, d.consecutive_gateway),
            split_local_origin: od.split_external_local_origin_errors,
            consecutive_local_origin: match count(od.consecutive_local_origin_failures, 0) {
                0 => d.consecutive_local_origin,
                n => n,
            },
            interval: od.interval.map_or(d.interval, |g| g.0),
            base_ejection_time: od.base_ejection_time.map_or(d.base_ejection_time, |g| g.0),
            max_ejection_percent: percent(od.max_ejection_percent)
                .filter(|p| *p > 0)
                .unwrap_or(d.max_ejection_percent),
            min_health_percent: percent(od.min_health_percent).unwrap_or(d.min_health_percent),
            error_codes: ErrorCodes::new(
                od.outlier_detection_http_error_codes
                    .iter()
                    .filter_map(|c| u32::try_from(*c).ok()),
            ),
        }
    }
}

/// `outlierDetectionHttpErrorCodes` as a bit set over 100..=599, so the settings stay `Copy`
/// and cheap to compare on every request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorCodes([u64; 8]);

impl ErrorCodes {
    /// The set of `codes`; those outside 100..=599 (refused by validation) are left out.
    pub(crate) fn new(codes: impl IntoIterator<Item = u32>) -> Self {
        let mut set = ErrorCodes::default();
        for code in codes.into_iter().filter(|c| (100..=599).contains(c)) {
            let i = (code - 100) as usize;
            set.0[i / 64] |= 1 << (i % 64);
        }
        set
    }

    fn is_empty(&self) -> bool {
        self.0 == [0; 8]
    }

    fn contains(&self, code: u16) -> bool {
        let Some(i) = code.checked_sub(100).map(usize::from).filter(|i| *i < 500) else {
            return false;
        };
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// What became of one try at an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TryOutcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No response: the connection failed or was reset before response headers.
    ConnectionFailed,
    /// No response within the try's time.
    TimedOut,
    /// A byte stream (TCP) connected: for such a connection, the only success there is.
    Connected,
}

impl TryOutcome {
    /// The outcome of a try as the request path holds it: `None` when its time ran out, an
    /// error when no response headers came.
    pub(crate) fn from_result<B, C, E>(result: &Option<Result<(http::Response<B>, C), E>>) -> Self {
        match result {
            Some(Ok((resp, _))) => TryOutcome::Status(resp.status().as_u16()),
            Some(Err(_)) => TryOutcome::ConnectionFailed,
            None => TryOutcome::TimedOut,
        }
    }
}

/// Which detector ejected an endpoint (the `reason` label of the ejection counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EjectionReason {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
}

impl EjectionReason {
    const ALL: [EjectionReason; 3] = [
        EjectionReason::Consecutive5xx,
        EjectionReason::ConsecutiveGateway,
        EjectionReason::ConsecutiveLocalOrigin,
    ];

    /// The name in metrics, after Envoy's `ejections_enforced_*` statistics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EjectionReason::Consecutive5xx => "consecutive_5xx",
            EjectionReason::ConsecutiveGateway => "consecutive_gateway_failure",
            EjectionReason::ConsecutiveLocalOrigin => "consecutive_local_origin_failure",
        }
    }
}

/// A backend: the Service and its port.
pub(crate) type BackendKey = (ResourceRef, u16);

/// One endpoint's record.
#[derive(Debug, Default)]
struct Host {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local_origin: u32,
    /// Ejected until then; `None` in service.
    ejected_until: Option<Instant>,
    /// The ejection time multiplier.
    backoff: u32,
    /// When it last came back into service (for the backoff's decay).
    returned_at: Option<Instant>,
    /// Ejections since the settings last changed.
    ejections: u64,
}

impl Host {
    /// Returns the endpoint to service if its time is up.
    fn refresh(&mut self, now: Instant) {
        if let Some(until) = self.ejected_until.filter(|until| *until <= now) {
            self.ejected_until = None;
            self.returned_at = Some(until);
        }
    }

    fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// The multiplier after the decay Envoy's sweeps would have applied by `now`: one step per
    /// interval in service, starting once a base ejection time has passed since the return.
    fn decayed_backoff(&self, settings: &OutlierSettings, now: Instant) -> u32 {
        let Some(returned) = self.returned_at else {
            return self.backoff;
        };
        let in_service = now.saturating_duration_since(returned);
        let Some(after_base) = in_service.checked_sub(settings.base_ejection_time) else {
            return self.backoff;
        };
        let interval = settings.interval.max(Duration::from_millis(1));
        let steps = 1 + after_base.as_nanos() / interval.as_nanos();
        self.backoff
            .saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX))
    }
}

/// One backend's records.
#[derive(Debug)]
struct BackendState {
    settings: OutlierSettings,
    hosts: HashMap<SocketAddr, Host>,
    /// Ejections by reason ([`EjectionReason::ALL`] order), kept across settings changes so the
    /// counter never goes down.
    ejections_total: [u64; 3],
}

impl BackendState {
    fn new(settings: OutlierSettings) -> Self {
        BackendState {
            settings,
            hosts: HashMap::new(),
            ejections_total: [0; 3],
        }
    }

    /// How many of `endpoints` are ejected now (returning those whose time is up).
    fn ejected_among(&mut self, endpoints: &[Endpoint], now: Instant) -> usize {
        endpoints
            .iter()
            .filter(|e| {
                self.hosts.get_mut(&e.address).is_some_and(|h| {
                    h.refresh(now);
                    h.is_ejected()
                })
            })
            .count()
    }

    /// Ejects `address` if the maximum ejection percentage allows; true if it did.
    fn try_eject(
        &mut self,
        address: SocketAddr,
        endpoints: &[Endpoint],
        reason: EjectionReason,
        now: Instant,
    ) -> bool {
        let settings = self.settings;
        let total = endpoints.len().max(1);
        let active = self.ejected_among(endpoints, now);
        // Envoy's test: the share ejected, this one included, within the maximum.
        if (active + 1) * 100 > settings.max_ejection_percent as usize * total {
            return false;
        }
        let Some(host) = self.hosts.get_mut(&address) else {
            return false;
        };
        let base = settings.base_ejection_time;
        let cap = MAX_EJECTION_TIME.max(base);
        let mut backoff = host.decayed_backoff(&settings, now);
        // Grow the multiplier only while the product stays under the cap (Envoy's rule).
        if base.saturating_mul(backoff) < cap.saturating_add(base) {
            backoff += 1;
        }
        host.backoff = backoff;
        host.returned_at = None;
        host.ejected_until = Some(now + base.saturating_mul(backoff).min(cap));
        host.ejections += 1;
        let i = EjectionReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.ejections_total[i] += 1;
        true
    }
}

/// The outlier state of every backend with outlier detection.
#[derive(Debug, Default)]
pub(crate) struct Outliers {
    backends: Mutex<HashMap<BackendKey, BackendState>>,
}

impl Outliers {
    /// Runs `f` on the state of `backend` under `settings`, created (or reset, if the settings
    /// changed) as needed.
    fn with_state<T>(
        &self,
        backend: &ServiceBackend,
        settings: &OutlierSettings,
        f: impl FnOnce(&mut BackendState) -> T,
    ) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; counters stay usable.
        let mut backends = self
            .backends
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let key = (backend.service.clone(), backend.port);
        let state = backends
            .entry(key)
            .or_insert_with(|| BackendState::new(*settings));
        if state.settings != *settings {
            // New settings, new detection: thresholds and times no longer mean what they did.
            state.settings = *settings;
            state.hosts.clear();
        }
        f(state)
    }

    /// The endpoints of `backend` a try may go to: all of them without outlier detection, when
    /// none is ejected, or in panic (fewer than `minHealthPercent` in service); otherwise those
    /// in service, possibly none.
    pub(crate) fn eligible<'a>(
        &self,
        backend: &'a ServiceBackend,
        settings: Option<&OutlierSettings>,
        now: Instant,
    ) -> Cow<'a, [Endpoint]> {
        let endpoints = &backend.endpoints;
        let Some(settings) = settings else {
            return Cow::Borrowed(endpoints);
        };
        self.with_state(backend, settings, |state| {
            // Forget endpoints that left the backend, so the records stay bounded.
            if state.hosts.len() > endpoints.len() {
                let current: HashSet<SocketAddr> = endpoints.iter().map(|e| e.address).collect();
                state.hosts.retain(|a, _| current.contains(a));
            }
            let ejected = state.ejected_among(endpoints, now);
            let in_service = endpoints.len() - ejected;
            let panic = in_service * 100 < settings.min_health_percent as usize * endpoints.len();
            if ejected == 0 || panic {
                return Cow::Borrowed(endpoints.as_slice());
            }
            let is_ejected =
                |e: &Endpoint| state.hosts.get(&e.address).is_some_and(Host::is_ejected);
            Cow::Owned(
                endpoints
                    .iter()
                    .filter(|e| !is_ejected(e))
                    .cloned()
                    .collect(),
            )
        })
    }

    /// Counts the outcome of one try at `address`, an endpoint of `backend`, and ejects it if a
    /// threshold is reached. Returns the reason if it was ejected.
    pub(crate) fn report(
        &self,
        backend: &ServiceBackend,
        settings: Option<&OutlierSettings>,
        address: SocketAddr,
        outcome: TryOutcome,
        now: Instant,
    ) -> Option<EjectionReason> {
        let settings = settings?;
        self.with_state(backend, settings, |state| {
            let host = state.hosts.entry(address).or_default();
            host.refresh(now);
            if host.is_ejected() {
                // A try that started before the ejection: the endpoint is out already.
                return None;
            }
            let fired = count(host, settings, outcome)?;
            match fired {
                EjectionReason::Consecutive5xx => host.consecutive_5xx = 0,
                EjectionReason::ConsecutiveGateway => host.consecutive_gateway = 0,
                EjectionReason::ConsecutiveLocalOrigin => host.consecutive_local_origin = 0,
            }
            state
                .try_eject(address, &backend.endpoints, fired, now)
                .then_some(fired)
        })
    }

    /// [`Outliers::report`] now, logging an ejection: the request path's entry point.
    pub(crate) fn record(
        &self,
        backend: &ServiceBackend,
        settings: Option<&OutlierSettings>,
        address: SocketAddr,
        outcome: TryOutcome,
    ) {
        if let Some(reason) = self.report(backend, settings, address, outcome, Instant::now()) {
            tracing::warn!(
                endpoint = %address,
                service = %super::failure::service_name(backend),
                reason = reason.as_str(),
                "outlier detection ejected an endpoint"
            );
        }
    }

    /// What `/config_dump` and the metrics show of every backend.
    pub(crate) fn views(&self, now: Instant) -> Vec<BackendView> {
        let mut backends = self
            .backends
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut views: Vec<BackendView> = backends
            .iter_mut()
            .map(|(key, state)| {
                let mut ejected: Vec<EjectedEndpoint> = state
                    .hosts
                    .iter_mut()
                    .filter_map(|(address, host)| {
                        host.refresh(now);
                        Some(EjectedEndpoint {
                            address: *address,
                            ejections: host.ejections,
                            remaining: host.ejected_until?.saturating_duration_since(now),
                        })
                    })
                    .collect();
                ejected.sort_by_key(|e| e.address);
                BackendView {
                    service: key.0.clone(),
                    port: key.1,
                    ejected,
                    ejections_total: EjectionReason::ALL
                        .into_iter()
                        .zip(state.ejections_total)
                        .collect(),
                }
            })
            .collect();
        views.sort_by(|a, b| (&a.service, a.port).cmp(&(&b.service, b.port)));
        views
    }
}

/// Updates `host`'s counters with `outcome`; the detector whose threshold it reached, if any.
/// When both response counters reach theirs at once the gateway one is named: Envoy charges it
/// first, and the second finds the endpoint ejected already.
fn count(host: &mut Host, s: &OutlierSettings, outcome: TryOutcome) -> Option<EjectionReason> {
    let status = match (outcome, s.split_local_origin) {
        (TryOutcome::Status(code), split) => {
            if split {
                host.consecutive_local_origin = 0;
            }
            code
        }
        (TryOutcome::Connected, true) => {
            host.consecutive_local_origin = 0;
            return None;
        }
        (TryOutcome::ConnectionFailed | TryOutcome::TimedOut, true) => {
            host.consecutive_local_origin += 1;
            let limit = s.consecutive_local_origin;
            return (limit > 0 && host.consecutive_local_origin >= limit)
                .then_some(EjectionReason::ConsecutiveLocalOrigin);
        }
        // Envoy's mapping of local-origin failures when they are not split off.
        (TryOutcome::ConnectionFailed, false) => 503,
        (TryOutcome::TimedOut, false) => 504,
        // Envoy reports a TCP proxy's connection as a final success, a 200.
        (TryOutcome::Connected, false) => 200,
    };
    let error = match s.error_codes.is_empty() {
        true => (500..600).contains(&status),
        false => s.error_codes.contains(status),
    };
    if !error {
        host.consecutive_5xx = 0;
        host.consecutive_gateway = 0;
        return None;
    }
    if matches!(status, 502..=504) {
        host.consecutive_gateway += 1;
    } else {
        host.consecutive_gateway = 0;
    }
    host.consecutive_5xx += 1;
    let reached = |n: u32, limit: u32| limit > 0 && n >= limit;
    if reached(host.consecutive_gateway, s.consecutive_gateway) {
        Some(EjectionReason::ConsecutiveGateway)
    } else if reached(host.consecutive_5xx, s.consecutive_5xx) {
        Some(EjectionReason::Consecutive5xx)
    } else {
        None
    }
}

/// One backend's outlier state as shown.
#[derive(Debug)]
pub(crate) struct BackendView {
    pub service: ResourceRef,
    pub port: u16,
    /// The endpoints out of service now, by address.
    pub ejected: Vec<EjectedEndpoint>,
    /// Ejections so far, by reason.
    pub ejections_total: Vec<(EjectionReason, u64)>,
}

/// An endpoint out of service.
#[derive(Debug)]
pub(crate) struct EjectedEndpoint {
    pub address: SocketAddr,
    /// Times ejected since the backend's settings last changed, this one included.
    pub ejections: u64,
    /// How long until it returns.
    pub remaining: Duration,
}

#[cfg(test)]
#[path = "outlier_tests.rs"]
mod tests;
