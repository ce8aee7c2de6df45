//! `RequestLog`: a shared, bounded record of the requests echo backends served, so a test can
//! ask "did this backend see path P since T" (request mirroring) or count requests per backend.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::EchoIdentity;

/// How many requests a log created with [`RequestLog::new`] keeps before dropping the oldest.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One request an echo backend received (HTTP, WebSocket handshake or gRPC call alike).
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    /// When the request arrived (its headers were read).
    pub at: Instant,
    /// The backend that served it.
    pub backend: Arc<EchoIdentity>,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path with query, as received (e.g. `/mirror?x=1`).
    pub path: String,
    /// The `Host` header, or the `:authority` for HTTP/2.
    pub host: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub proto: String,
    /// Request headers in arrival order; names are lowercase.
    pub headers: Vec<(String, String)>,
}

impl LoggedRequest {
    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(&self.path, |(p, _)| p)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A cheap-to-clone handle on a request log shared by any number of echo backends; every clone
/// sees the same entries. Bounded: past its capacity the oldest entries are dropped (the total
/// count keeps counting).
#[derive(Clone, Debug)]
pub struct RequestLog {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    entries: VecDeque<LoggedRequest>,
    capacity: usize,
    total: u64,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestLog {
    /// A log keeping the last [`DEFAULT_CAPACITY`] requests.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A log keeping the last `capacity` requests (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                entries: VecDeque::new(),
                capacity: capacity.max(1),
                total: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the deque inconsistent: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a request (echo backends call this; tests may too).
    pub fn record(&self, request: LoggedRequest) {
        let mut inner = self.lock();
        if inner.entries.len() >= inner.capacity {
            inner.entries.pop_front();
        }
        inner.entries.push_back(request);
        inner.total += 1;
    }

    /// Every request recorded, oldest first (up to the capacity).
    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.lock().entries.iter().cloned().collect()
    }

    /// The requests that arrived at or after `since` and satisfy `pred`, oldest first.
    pub fn matching(
        &self,
        since: Instant,
        pred: impl Fn(&LoggedRequest) -> bool,
    ) -> Vec<LoggedRequest> {
        self.lock()
            .entries
            .iter()
            .filter(|r| r.at >= since && pred(r))
            .cloned()
            .collect()
    }

    /// How many requests arrived at or after `since` and satisfy `pred`.
    pub fn count_matching(&self, since: Instant, pred: impl Fn(&LoggedRequest) -> bool) -> usize {
        self.lock()
            .entries
            .iter()
            .filter(|r| r.at >= since && pred(r))
            .count()
    }

    /// Whether backend `pod` saw a request for `path` at or after `since`. `path` matches the
    /// request target exactly or, when `path` has no `?`, the target's path without its query.
    pub fn pod_saw_path_since(&self, pod: &str, path: &str, since: Instant) -> bool {
        self.count_matching(since, |r| r.backend.pod == pod && path_matches(r, path)) > 0
    }

    /// Whether any backend recording here saw `path` (matched as in
    /// [`pod_saw_path_since`](Self::pod_saw_path_since)) at or after `since`.
    pub fn saw_path_since(&self, path: &str, since: Instant) -> bool {
        self.count_matching(since, |r| path_matches(r, path)) > 0
    }

    /// How many of the kept requests backend `pod` served since `since`.
    pub fn count_for_pod(&self, pod: &str, since: Instant) -> usize {
        self.count_matching(since, |r| r.backend.pod == pod)
    }

    /// How many requests were ever recorded, including those dropped for capacity.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Forgets the kept requests (the total is kept).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }
}

fn path_matches(r: &LoggedRequest, path: &str) -> bool {
    r.path == path || (!path.contains('?') && r.path_only() == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req(pod: &str, path: &str, at: Instant) -> LoggedRequest {
        LoggedRequest {
            at,
            backend: Arc::new(EchoIdentity {
                pod: pod.into(),
                ..Default::default()
            }),
            method: "GET".into(),
            path: path.into(),
            host: "h".into(),
            proto: "HTTP/1.1".into(),
            headers: vec![("x-a".into(), "1".into())],
        }
    }

    #[test]
    fn queries_by_time_pod_and_path() {
        let log = RequestLog::new();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        log.record(req("a", "/old", t0));
        log.clone().record(req("b", "/mirror?x=1", t1));
        assert!(log.saw_path_since("/mirror", t1));
        assert!(log.saw_path_since("/mirror?x=1", t0));
        assert!(!log.saw_path_since("/mirror?x=2", t0));
        assert!(!log.saw_path_since("/old", t1));
        assert!(log.pod_saw_path_since("b", "/mirror", t0));
        assert!(!log.pod_saw_path_since("a", "/mirror", t0));
        assert_eq!(log.count_for_pod("a", t0), 1);
        assert_eq!(log.count_for_pod("a", t1), 0);
        assert_eq!(log.entries()[1].header("X-A"), Some("1"));
        log.clear();
        assert!(log.entries().is_empty());
        assert_eq!(log.total(), 2);
    }

    #[test]
    fn bounded() {
        let log = RequestLog::with_capacity(3);
        let t0 = Instant::now();
        for i in 0..5 {
            log.record(req("a", &format!("/{i}"), t0));
        }
        let paths: Vec<_> = log.entries().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/2", "/3", "/4"]);
        assert_eq!(log.total(), 5);
    }
}
