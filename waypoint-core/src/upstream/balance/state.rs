//! Balancer state that outlives config snapshots: per backend (Service and port), the
//! round-robin position and the consistent-hash table of its current endpoint set.
//!
//! A table is rebuilt only when the backend's endpoint set or table settings change. Each
//! snapshot has its own `Arc<ServiceBackend>`, so the cache remembers the last one it served
//! (weakly): the same `Arc` again costs a pointer comparison; a new one (a reload) costs one
//! comparison of the sorted address lists, and a rebuild only if they differ. A reload that
//! leaves a backend's endpoints alone therefore keeps every key on its endpoint.
//!
//! Entries are never removed one by one (a Service missing from one snapshot may come back in
//! the next, and its round-robin position with it); the map is cleared if it ever holds more
//! backends than [`MAX_BACKENDS`], which bounds the memory of Services long deleted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use super::warmup::{Joined, Ramp};
use super::{Choice, How, Policy};
use crate::config::{ResourceRef, ServiceBackend};
use crate::upstream::hash::{HashTable, TableKind};
use crate::upstream::hash_key::RequestKeys;

/// More backends than any waypoint serves at once; beyond it the state of all is dropped.
const MAX_BACKENDS: usize = 4096;

/// The state of every backend that needed some, owned by the `Upstream`.
#[derive(Debug, Default)]
pub(crate) struct Balancers {
    backends: RwLock<HashMap<(ResourceRef, u16), Arc<BackendState>>>,
}

/// One backend's state.
#[derive(Debug)]
pub(crate) struct BackendState {
    /// The next round-robin turn (taken modulo the endpoint count).
    turn: AtomicUsize,
    /// The consistent-hash table of the backend's endpoints, when its policy wants one.
    table: Mutex<Option<CachedTable>>,
    /// When each endpoint joined, when the policy warms new ones up.
    joined: Joined,
}

#[derive(Debug)]
struct CachedTable {
    kind: TableKind,
    table: Arc<HashTable>,
    /// The snapshot's backend the table was last checked against.
    checked: Weak<ServiceBackend>,
}

impl BackendState {
    fn new() -> Self {
        BackendState {
            // A random start, so that waypoint replicas do not all begin with the same endpoint.
            turn: AtomicUsize::new(fastrand::usize(..1024)),
            table: Mutex::new(None),
            joined: Joined::default(),
        }
    }

    /// Takes the next round-robin turn.
    pub(super) fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// The table of `kind` over `backend`'s endpoints: the cached one when it still fits.
    fn table(&self, backend: &Arc<ServiceBackend>, kind: TableKind) -> Option<Arc<HashTable>> {
        // A panic elsewhere while holding the lock leaves the cache valid: keep using it.
        let mut cached = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_mut()
            && c.kind == kind
        {
            if Weak::ptr_eq(&c.checked, &Arc::downgrade(backend)) {
                return Some(c.table.clone());
            }
            let mut current: Vec<SocketAddr> =
                backend.endpoints.iter().map(|e| e.address).collect();
            current.sort_unstable();
            current.dedup();
            if current == c.table.endpoints() {
                c.checked = Arc::downgrade(backend);
                return Some(c.table.clone());
            }
        }
        let addresses: Vec<SocketAddr> = backend.endpoints.iter().map(|e| e.address).collect();
        let table = Arc::new(HashTable::build(kind, &addresses)?);
        tracing::debug!(
            service = %backend.service,
            port = backend.port,
            endpoints = addresses.len(),
            ?kind,
            "consistent-hash table built"
        );
        *cached = Some(CachedTable {
            kind,
            table: table.clone(),
            checked: Arc::downgrade(backend),
        });
        Some(table)
    }
}

impl Balancers {
    /// Prepares the endpoint choice of one request to `backend` under `policy`, new endpoints
    /// ramping up as `ramp` says (round robin and least request only, as in Istio).
    pub(crate) fn choose(
        &self,
        backend: &Arc<ServiceBackend>,
        policy: &Policy,
        ramp: Option<&Ramp>,
        request: RequestKeys<'_>,
    ) -> Choice {
        let warming = match (ramp, policy) {
            (Some(ramp), Policy::LeastRequest | Policy::RoundRobin) => self
                .state(backend)
                .joined
                .warming(backend, ramp, std::time::Instant::now())
                .into_iter()
                .map(|(addr, age)| (addr, ramp.factor(age)))
                .collect(),
            _ => Vec::new(),
        };
        let how = match policy {
            Policy::LeastRequest => How::LeastRequest,
            Policy::Random => How::Random,
            Policy::RoundRobin => How::RoundRobin(self.state(backend)),
            Policy::ConsistentHash { key, table } => {
                let Some(hashed) = key.evaluate(request) else {
                    return Choice::default();
                };
                let how = match self.state(backend).table(backend, *table) {
                    Some(table) => How::Hash(table, hashed.hash),
                    None => How::LeastRequest,
                };
                return Choice {
                    how,
                    set_cookie: hashed.set_cookie,
                    warming,
                };
            }
        };
        Choice {
            how,
            set_cookie: None,
            warming,
        }
    }

    fn state(&self, backend: &ServiceBackend) -> Arc<BackendState> {
        let key = (backend.service.clone(), backend.port);
        if let Some(state) = self
            .backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return state.clone();
        }
        let mut backends = self.backends.write().unwrap_or_else(|e| e.into_inner());
        if backends.len() >= MAX_BACKENDS && !backends.contains_key(&key) {
            backends.clear();
        }
        backends
            .entry(key)
            .or_insert_with(|| Arc::new(BackendState::new()))
            .clone()
    }

    /// How many backends have state (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.backends.read().map(|b| b.len()).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;
    use crate::upstream::hash_key::HashKey;

    fn backend(name: &str, ips: &[u8]) -> Arc<ServiceBackend> {
        super::super::test_backend(name, ips)
    }

    fn by_header(table: TableKind) -> Policy {
        Policy::ConsistentHash {
            key: HashKey::Header(http::HeaderName::from_static("x-user")),
            table,
        }
    }

    fn pick_for(
        b: &Balancers,
        backend: &Arc<ServiceBackend>,
        policy: &Policy,
        user: &str,
    ) -> SocketAddr {
        let mut h = http::HeaderMap::new();
        h.insert("x-user", user.parse().unwrap());
        let keys = RequestKeys {
            headers: Some(&h),
            ..Default::default()
        };
        let choice = b.choose(backend, policy, None, keys);
        choice.pick(&backend.endpoints, None).unwrap().address
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn_and_keeps_its_place_across_snapshots() {
        let b = Balancers::default();
        let first = backend("svc", &[1, 2, 3]);
        let order: Vec<SocketAddr> = (0..6)
            .map(|_| {
                let c = b.choose(&first, &Policy::RoundRobin, None, RequestKeys::default());
                c.pick(&first.endpoints, None).unwrap().address
            })
            .collect();
        let at = first
            .endpoints
            .iter()
            .position(|e| e.address == order[0])
            .unwrap();
        for (i, got) in order.iter().enumerate() {
            assert_eq!(*got, first.endpoints[(at + i) % 3].address, "{order:?}");
        }
        // A reload builds a new backend; the turn goes on where it was.
        let reloaded = backend("svc", &[1, 2, 3]);
        let c = b.choose(&reloaded, &Policy::RoundRobin, None, RequestKeys::default());
        assert_eq!(
            c.pick(&reloaded.endpoints, None).unwrap().address,
            reloaded.endpoints[at].address
        );
        // A retry skips the endpoint that failed.
        let c = b.choose(&reloaded, &Policy::RoundRobin, None, RequestKeys::default());
        let next = reloaded.endpoints[(at + 1) % 3].address;
        assert_eq!(
            c.pick(&reloaded.endpoints, Some(next)).unwrap().address,
            reloaded.endpoints[(at + 2) % 3].address
        );
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn random_reaches_every_endpoint_and_a_retry_avoids_the_failed_one() {
        let b = Balancers::default();
        let backend = backend("svc", &[1, 2, 3]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            let c = b.choose(&backend, &Policy::Random, None, RequestKeys::default());
            seen.insert(c.pick(&backend.endpoints, None).unwrap().address);
            let avoid = backend.endpoints[0].address;
            assert_ne!(
                c.pick(&backend.endpoints, Some(avoid)).unwrap().address,
                avoid
            );
        }
        assert_eq!(seen.len(), 3);
        // Stateless: nothing kept.
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn a_hashed_key_stays_on_its_endpoint_across_a_reload_with_the_same_endpoints() {
        for kind in [
            TableKind::Ring { minimum_size: 0 },
            TableKind::Maglev { size: 0 },
        ] {
            let b = Balancers::default();
            let policy = by_header(kind);
            let before = backend("svc", &[1, 2, 3]);
            let reordered = backend("svc", &[3, 1, 2]);
            let users: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
            let first: Vec<_> = users
                .iter()
                .map(|u| pick_for(&b, &before, &policy, u))
                .collect();
            for _ in 0..3 {
                for (u, want) in users.iter().zip(&first) {
                    assert_eq!(pick_for(&b, &before, &policy, u), *want);
                }
            }
            let cached = b.state(&before).table(&before, kind).unwrap();
            for (u, want) in users.iter().zip(&first) {
                assert_eq!(pick_for(&b, &reordered, &policy, u), *want, "{kind:?}");
            }
            // Same set: the table was not rebuilt.
            assert!(Arc::ptr_eq(
                &cached,
                &b.state(&reordered).table(&reordered, kind).unwrap()
            ));
            // A new endpoint set is a new table.
            let smaller = backend("svc", &[1, 2]);
            assert!(!Arc::ptr_eq(
                &cached,
                &b.state(&smaller).table(&smaller, kind).unwrap()
            ));
        }
    }

    #[test]
    fn a_request_without_its_key_gets_the_default_choice() {
        let b = Balancers::default();
        let backend = backend("svc", &[1, 2]);
        let c = b.choose(
            &backend,
            &by_header(TableKind::Ring { minimum_size: 0 }),
            None,
            RequestKeys::default(),
        );
        assert!(matches!(c.how, How::LeastRequest));
        assert!(c.pick(&backend.endpoints, None).is_some());
        assert!(c.pick(&[], None).is_none());
    }

    #[test]
    fn an_endpoint_that_joins_gets_a_small_share_while_it_warms_up() {
        let ramp = Ramp {
            window: std::time::Duration::from_secs(3600),
            minimum: 0.1,
            aggression: 1.0,
        };
        for policy in [Policy::RoundRobin, Policy::LeastRequest] {
            let b = Balancers::default();
            // The first set seen is not warming.
            let c = b.choose(
                &backend("svc", &[1, 2]),
                &policy,
                Some(&ramp),
                RequestKeys::default(),
            );
            assert!(c.warming.is_empty());
            let grown = backend("svc", &[1, 2, 3]);
            let newcomer = grown.endpoints[2].address;
            let mut hits = 0;
            for _ in 0..3000 {
                let c = b.choose(&grown, &policy, Some(&ramp), RequestKeys::default());
                hits += usize::from(c.pick(&grown.endpoints, None).unwrap().address == newcomer);
            }
            // A fair share would be 1,000; at 10% it is about 100.
            assert!((20..300).contains(&hits), "{policy:?}: {hits}");
            // Without the ramp it gets its fair share.
            let mut fair = 0;
            for _ in 0..3000 {
                let c = b.choose(&grown, &policy, None, RequestKeys::default());
                fair += usize::from(c.pick(&grown.endpoints, None).unwrap().address == newcomer);
            }
            assert!(fair > 700, "{policy:?}: {fair}");
        }
    }

    #[test]
    fn a_hash_retry_goes_to_another_endpoint() {
        let b = Balancers::default();
        let backend = backend("svc", &[1, 2, 3]);
        let policy = by_header(TableKind::Maglev { size: 0 });
        let first = pick_for(&b, &backend, &policy, "alice");
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        let keys = RequestKeys {
            headers: Some(&h),
            ..Default::default()
        };
        let c = b.choose(&backend, &policy, None, keys);
        let retry = c.pick(&backend.endpoints, Some(first)).unwrap().address;
        assert_ne!(retry, first);
    }
}
