//! The time a request may take, over all its tries: the request timeout from the start of
//! forwarding until response headers, the backend timeout for each try, and what is left of
//! either for a backoff or a mirrored copy.

use std::time::Duration;

use tokio::time::Instant;

use super::UpstreamConfig;
use crate::filter::UpstreamTarget;

/// The time a request may take: the request timeout (the route's, else the waypoint default)
/// from the moment forwarding starts, and the backend timeout for each try. A zero timeout
/// means none, as in the Gateway API.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    pub(super) request: Option<Duration>,
    per_try: Option<Duration>,
    deadline: Option<Instant>,
}

impl Budget {
    pub(super) fn new(target: &UpstreamTarget, cfg: &UpstreamConfig) -> Self {
        // A zero default means none, as a zero route timeout does.
        let default = Some(cfg.request_timeout).filter(|d| !d.is_zero());
        let request = target.request_timeout.limit(default);
        Budget {
            request,
            per_try: target.backend_timeout.limit(None),
            deadline: request.and_then(|d| Instant::now().checked_add(d)),
        }
    }

    /// The limit of the next try, and the timeout to name when it expires: the backend timeout
    /// or what is left of the request timeout, whichever ends first.
    pub(super) fn next_try(&self) -> Option<(Duration, Expiry)> {
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        match (left, self.per_try) {
            (Some(left), Some(per_try)) if per_try < left => Some((per_try, Expiry::Try(per_try))),
            (Some(left), _) => Some((left, Expiry::Request(self.request.unwrap_or(left)))),
            (None, Some(per_try)) => Some((per_try, Expiry::Try(per_try))),
            (None, None) => None,
        }
    }

    /// Runs `fut` within what is left of the request timeout.
    pub(super) async fn bound<F: Future>(&self, fut: F) -> Result<F::Output, Duration> {
        match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, fut)
                .await
                .map_err(|_| self.request.unwrap_or_default()),
            None => Ok(fut.await),
        }
    }

    /// Waits `backoff`; false when the request timeout ends first (having waited until then).
    pub(super) async fn back_off(&self, backoff: Duration) -> bool {
        self.bound(tokio::time::sleep(backoff)).await.is_ok()
    }

    /// How long a mirrored copy may take: the request's own limits, else `fallback`.
    pub(super) fn mirror_limit(&self, fallback: Duration) -> Duration {
        [self.request, self.per_try]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(fallback)
    }
}

/// Which timeout ended a try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// The backend (per-try) timeout: another try may follow.
    Try(Duration),
    /// The request timeout: nothing may follow.
    Request(Duration),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AppProtocol, ProtocolSelection, ResourceRef, ServiceBackend};
    use crate::filter::Timeout;

    fn target(request: Option<u64>, backend: Option<u64>) -> UpstreamTarget {
        let mut t = UpstreamTarget::new(Arc::new(ServiceBackend {
            policy: Default::default(),
            service: ResourceRef::new("Service", "ns", "svc"),
            port: 80,
            cluster_ips: vec![],
            protocol: ProtocolSelection::http(AppProtocol::Http1),
            endpoints: vec![],
        }));
        let ms = |d: Option<u64>| {
            d.map_or(Timeout::Default, |ms| {
                Timeout::from_gateway(Duration::from_millis(ms))
            })
        };
        t.request_timeout = ms(request);
        t.backend_timeout = ms(backend);
        t
    }

    /// The first try's limit, rounded to 10 ms (time passes between building and asking).
    fn first(request: Option<u64>, backend: Option<u64>) -> Option<(u64, Expiry)> {
        let budget = Budget::new(&target(request, backend), &UpstreamConfig::default());
        budget
            .next_try()
            .map(|(d, e)| ((d.as_millis() as u64).div_ceil(10) * 10, e))
    }

    #[test]
    fn a_try_gets_the_tighter_of_request_and_backend_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(
            first(None, None),
            Some((15_000, Expiry::Request(ms(15_000))))
        );
        assert_eq!(
            first(Some(300), None),
            Some((300, Expiry::Request(ms(300))))
        );
        assert_eq!(
            first(Some(300), Some(100)),
            Some((100, Expiry::Try(ms(100))))
        );
        assert_eq!(
            first(None, Some(20_000)),
            Some((15_000, Expiry::Request(ms(15_000))))
        );
        assert_eq!(first(Some(0), Some(200)), Some((200, Expiry::Try(ms(200)))));
        assert_eq!(first(Some(0), None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn later_tries_get_what_is_left_and_backoff_stops_at_the_deadline() {
        let budget = Budget::new(&target(Some(300), Some(200)), &UpstreamConfig::default());
        assert!(budget.back_off(Duration::from_millis(150)).await);
        let (limit, expiry) = budget.next_try().unwrap();
        assert_eq!(limit, Duration::from_millis(150));
        assert_eq!(expiry, Expiry::Request(Duration::from_millis(300)));
        let start = Instant::now();
        assert!(!budget.back_off(Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(150));
        assert_eq!(
            budget.mirror_limit(Duration::from_secs(9)),
            Duration::from_millis(200)
        );
        let none = Budget::new(&target(Some(0), None), &UpstreamConfig::default());
        assert_eq!(
            none.mirror_limit(Duration::from_secs(9)),
            Duration::from_secs(9)
        );
    }
}
