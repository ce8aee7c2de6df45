//! Where a request goes and how: the upstream target the routing filter chooses, with the
//! route's timeouts, retries and mirrors. Kept apart from the chain because it is the seam
//! between routing (which fills it) and the upstream (which obeys it).

use std::sync::Arc;
use std::time::Duration;

use crate::config::ServiceBackend;

/// Where the routing decided to send a request, and how: timeouts, retries, mirrors.
///
/// Build one with [`UpstreamTarget::new`] and set what the route asks for; the fields stay
/// public so a vendor filter can adjust any of them.
#[derive(Clone, Debug)]
pub struct UpstreamTarget {
    /// The backend Service port whose ready endpoints may serve the request.
    pub backend: Arc<ServiceBackend>,
    /// The whole-transaction timeout, retries included; [`Timeout::Default`] is the waypoint's
    /// default request timeout.
    pub request_timeout: Timeout,
    /// Per-attempt timeout to the backend; [`Timeout::Default`] and [`Timeout::Disabled`] leave
    /// each try bounded by the request timeout alone.
    pub backend_timeout: Timeout,
    /// When to try again on another endpoint; `None` sends once.
    pub retry: Option<Arc<RetryPolicy>>,
    /// Backends that get a copy of the request, fire and forget.
    pub mirrors: Vec<MirrorTarget>,
}

impl UpstreamTarget {
    /// A target of `backend` with the waypoint's default timeout, no retry and no mirror.
    pub fn new(backend: Arc<ServiceBackend>) -> Self {
        UpstreamTarget {
            backend,
            request_timeout: Timeout::Default,
            backend_timeout: Timeout::Default,
            retry: None,
            mirrors: Vec::new(),
        }
    }
}

/// A timeout as a route states it: not stated, stated as none, or a limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timeout {
    /// Not stated: the waypoint's default applies.
    #[default]
    Default,
    /// No limit at all (Gateway API `0s`).
    Disabled,
    /// At most this long.
    After(Duration),
}

impl Timeout {
    /// A Gateway API duration: `0s` disables the timeout.
    pub fn from_gateway(duration: Duration) -> Self {
        if duration.is_zero() {
            Timeout::Disabled
        } else {
            Timeout::After(duration)
        }
    }

    /// The limit, with `default` standing in for [`Timeout::Default`]; `None` is no limit.
    pub fn limit(self, default: Option<Duration>) -> Option<Duration> {
        match self {
            Timeout::Default => default,
            Timeout::Disabled => None,
            Timeout::After(d) => Some(d),
        }
    }
}

/// When and how often a request is tried again (Gateway API HTTPRoute `retry`).
///
/// A try is repeated, on another endpoint where there is one, when its response status is in
/// `codes`, when no connection could be made or it failed before response headers, or when the
/// per-try (backend) timeout expired. Only requests whose body is empty or small enough to be
/// kept are retried (see the `upstream` module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Response statuses that are retried.
    pub codes: Vec<http::StatusCode>,
    /// Retries after the first try, at most (`0`: none).
    pub attempts: u32,
    /// The least wait before each retry.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// Retries when routes leave `attempts` unset: Envoy's default, one.
    pub const DEFAULT_ATTEMPTS: u32 = 1;
    /// Backoff when routes leave it unset: Envoy's base interval, 25 ms.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

    /// True when a response with `status` is tried again.
    pub(crate) fn retries_status(&self, status: http::StatusCode) -> bool {
        self.codes.contains(&status)
    }
}

/// A backend that gets a copy of a share of the requests (Gateway API `RequestMirror`).
///
/// The share is `numerator / denominator`; the default is every request.
#[derive(Clone, Debug)]
pub struct MirrorTarget {
    /// The Service port one of whose endpoints gets the copy.
    pub backend: Arc<ServiceBackend>,
    /// Mirrored requests out of every `denominator`.
    pub numerator: u32,
    /// See `numerator`; `0` mirrors nothing.
    pub denominator: u32,
}

impl MirrorTarget {
    /// Mirrors every request to `backend`.
    pub fn new(backend: Arc<ServiceBackend>) -> Self {
        MirrorTarget {
            backend,
            numerator: 1,
            denominator: 1,
        }
    }

    /// Mirrors `percent` out of 100 requests (above 100 means all).
    pub fn percent(self, percent: u32) -> Self {
        self.fraction(percent, 100)
    }

    /// Mirrors `numerator` out of every `denominator` requests.
    pub fn fraction(mut self, numerator: u32, denominator: u32) -> Self {
        self.numerator = numerator;
        self.denominator = denominator;
        self
    }

    /// Draws whether this request is mirrored.
    pub fn sample(&self) -> bool {
        if self.numerator >= self.denominator {
            return self.denominator > 0;
        }
        fastrand::u32(..self.denominator) < self.numerator
    }
}
