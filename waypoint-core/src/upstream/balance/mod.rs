//! Endpoint choice: the backend's load-balancing policy (DestinationRule `loadBalancer`), and
//! the in-flight accounting least request reads.
//!
//! | policy | choice | retry (`avoid`) |
//! |---|---|---|
//! | least request (default; also `UNSPECIFIED`, `LEAST_CONN`) | of two random endpoints, the less busy | any other |
//! | `ROUND_ROBIN` | the next endpoint, per backend, in endpoint order | the one after |
//! | `RANDOM` | uniform | any other |
//! | `consistentHash` | the request key's endpoint on the ring / Maglev table | next on the table |
//! | `consistentHash`, request without its key | least request | any other |
//!
//! With `warmup` (or `warmupDurationSecs`), round robin and least request pass over an endpoint
//! that joined the backend recently with a chance that shrinks over the window (see `warmup`).
//!
//! What must outlive a config snapshot (the round-robin position, the built hash tables) lives
//! in [`Balancers`], owned by the `Upstream` and keyed by the backend (Service and port); a
//! reload with the same endpoints and settings finds it as it was (see `state`).

mod state;
mod warmup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::hash::{HashTable, TableKind};
use super::hash_key::{CookieKey, HashKey, RequestKeys};
use crate::config::resources::{ConsistentHashLb, LoadBalancerSettings, SimpleLb};
use crate::config::{Endpoint, EndpointStats, ServiceBackend};
use crate::conn::ConnInfo;
pub(crate) use state::Balancers;
use warmup::Ramp;

/// A backend's load-balancing policy, as its DestinationRule settings compile to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Least request over two random choices (Envoy's and Istio's default).
    #[default]
    LeastRequest,
    /// Each endpoint in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The endpoint of the request's key on a consistent-hash table.
    ConsistentHash {
        /// What the request hashes on.
        key: HashKey,
        /// Ring or Maglev, and its size.
        table: TableKind,
    },
}

impl Policy {
    /// What validated settings compile to. `PASSTHROUGH` never passes validation; should it
    /// get here, it is balanced as the default.
    pub(crate) fn from_settings(settings: &LoadBalancerSettings) -> Policy {
        if let Some(hash) = &settings.consistent_hash {
            return match hash_key(hash) {
                Some(key) => Policy::ConsistentHash {
                    key,
                    table: table_kind(hash),
                },
                // A table without a key hashes nothing: every request gets the default.
                None => Policy::LeastRequest,
            };
        }
        match settings.simple {
            Some(SimpleLb::RoundRobin) => Policy::RoundRobin,
            Some(SimpleLb::Random) => Policy::Random,
            Some(
                SimpleLb::LeastRequest
                | SimpleLb::LeastConn
                | SimpleLb::Unspecified
                | SimpleLb::Passthrough,
            )
            | None => Policy::LeastRequest,
        }
    }
}

fn hash_key(hash: &ConsistentHashLb) -> Option<HashKey> {
    if let Some(name) = &hash.http_header_name {
        // Validation checked the name; one that does not parse hashes nothing.
        return http::HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(HashKey::Header);
    }
    if let Some(cookie) = &hash.http_cookie {
        return Some(HashKey::Cookie(CookieKey {
            name: cookie.name.clone(),
            path: cookie.path.clone(),
            ttl: cookie.ttl.map(|t| t.0),
            attributes: cookie
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
        }));
    }
    if hash.use_source_ip.is_some() {
        return Some(HashKey::SourceIp);
    }
    hash.http_query_parameter_name
        .clone()
        .map(HashKey::QueryParameter)
}

fn table_kind(hash: &ConsistentHashLb) -> TableKind {
    match (&hash.maglev, &hash.ring_hash) {
        (Some(maglev), _) => TableKind::Maglev {
            size: maglev.table_size,
        },
        (None, Some(ring)) => TableKind::Ring {
            minimum_size: ring.minimum_ring_size,
        },
        (None, None) => TableKind::Ring {
            minimum_size: hash.minimum_ring_size.unwrap_or(0),
        },
    }
}

impl Balancers {
    /// The endpoint choice of an HTTP request to `backend`, under its port's policy.
    pub(crate) fn for_request<B>(
        &self,
        backend: &Arc<ServiceBackend>,
        req: &http::Request<B>,
        conn: &ConnInfo,
    ) -> Choice {
        let keys = RequestKeys {
            headers: Some(req.headers()),
            uri: Some(req.uri()),
            source: conn.source,
        };
        self.choose_by_settings(backend, keys)
    }

    /// The endpoint choice of a byte stream to `backend`: a stream has no headers, so of the
    /// hash keys only the source IP applies.
    pub(crate) fn for_stream(&self, backend: &Arc<ServiceBackend>, conn: &ConnInfo) -> Choice {
        let keys = RequestKeys {
            source: conn.source,
            ..RequestKeys::default()
        };
        self.choose_by_settings(backend, keys)
    }

    fn choose_by_settings(&self, backend: &Arc<ServiceBackend>, keys: RequestKeys<'_>) -> Choice {
        match &backend.policy.load_balancer {
            Some(applied) => {
                let settings = &applied.settings;
                let policy = Policy::from_settings(settings);
                self.choose(backend, &policy, Ramp::of(settings).as_ref(), keys)
            }
            None => self.choose(backend, &Policy::LeastRequest, None, keys),
        }
    }
}

/// One request's endpoint choice, made ready before its first try: every try asks it for an
/// endpoint, each time avoiding the endpoint of the try before.
#[derive(Debug, Default)]
pub(crate) struct Choice {
    how: How,
    /// `Set-Cookie` for the response, when the hash key was a cookie generated for it.
    pub(crate) set_cookie: Option<http::HeaderValue>,
    /// Endpoints still warming up, with the share of their turns they keep.
    warming: Vec<(SocketAddr, f64)>,
}

#[derive(Debug, Default)]
enum How {
    #[default]
    LeastRequest,
    RoundRobin(Arc<state::BackendState>),
    Random,
    Hash(Arc<HashTable>, u64),
}

impl Choice {
    /// The endpoint for the next try, never `avoid` when there is another. `None` only when
    /// `endpoints` is empty.
    pub(crate) fn pick<'a>(
        &self,
        endpoints: &'a [Endpoint],
        avoid: Option<SocketAddr>,
    ) -> Option<&'a Endpoint> {
        let chosen = self.pick_once(endpoints, avoid)?;
        match self.warming.iter().find(|(a, _)| *a == chosen.address) {
            // Passed over this time: the choice once more, elsewhere.
            Some((_, share)) if fastrand::f64() >= *share => self
                .pick_once(endpoints, Some(chosen.address))
                .filter(|e| Some(e.address) != avoid)
                .or(Some(chosen)),
            _ => Some(chosen),
        }
    }

    fn pick_once<'a>(
        &self,
        endpoints: &'a [Endpoint],
        avoid: Option<SocketAddr>,
    ) -> Option<&'a Endpoint> {
        match &self.how {
            How::LeastRequest => pick_avoiding(endpoints, avoid),
            How::Random => {
                let chosen = endpoints.get(fastrand::usize(..endpoints.len().max(1)))?;
                Some(elsewhere(endpoints, chosen, avoid))
            }
            How::RoundRobin(state) => {
                let n = endpoints.len();
                if n == 0 {
                    return None;
                }
                let at = state.next_turn() % n;
                let chosen = &endpoints[at];
                if n > 1 && Some(chosen.address) == avoid {
                    return endpoints.get((at + 1) % n);
                }
                Some(chosen)
            }
            How::Hash(table, hash) => {
                let address = table.pick_avoiding(*hash, avoid);
                // The table was built over exactly these endpoints (see `state`); the fallback
                // only guards against a caller passing another set.
                endpoints
                    .iter()
                    .find(|e| e.address == address)
                    .or_else(|| pick_avoiding(endpoints, avoid))
            }
        }
    }

    /// Adds the generated cookie, if any, to the response the client gets.
    pub(crate) fn mark<B>(&self, resp: &mut http::Response<B>) {
        if let Some(cookie) = &self.set_cookie {
            resp.headers_mut()
                .append(http::header::SET_COOKIE, cookie.clone());
        }
    }
}

/// `chosen`, or when it is `avoid`, any of the others uniformly.
fn elsewhere<'a>(
    endpoints: &'a [Endpoint],
    chosen: &'a Endpoint,
    avoid: Option<SocketAddr>,
) -> &'a Endpoint {
    let n = endpoints.len();
    if n < 2 || Some(chosen.address) != avoid {
        return chosen;
    }
    let at = endpoints
        .iter()
        .position(|e| e.address == chosen.address)
        .unwrap_or(0);
    &endpoints[(at + 1 + fastrand::usize(..n - 1)) % n]
}

/// Picks the endpoint for one request: of two distinct endpoints drawn at random, the one with
/// fewer requests in flight (Envoy's default least-request policy). Two random draws avoid the
/// herd that "global least loaded" causes when many requests read the same stale counts.
///
/// `None` only when `endpoints` is empty.
pub(crate) fn pick(endpoints: &[Endpoint]) -> Option<&Endpoint> {
    match endpoints.len() {
        0 => None,
        1 => endpoints.first(),
        n => {
            let a = fastrand::usize(..n);
            // Draw from the n-1 others so the two choices are always distinct.
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let load = |i: usize| endpoints[i].stats.in_flight.load(Ordering::Relaxed);
            Some(&endpoints[if load(b) < load(a) { b } else { a }])
        }
    }
}

/// Like [`pick`], but never `avoid` (the endpoint a failed try went to) when there is another:
/// a retry goes elsewhere where it can.
pub(crate) fn pick_avoiding(
    endpoints: &[Endpoint],
    avoid: Option<SocketAddr>,
) -> Option<&Endpoint> {
    let chosen = pick(endpoints)?;
    Some(elsewhere(endpoints, chosen, avoid))
}

/// Counts one request in flight to an endpoint for as long as it lives.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<EndpointStats>);

impl InFlight {
    /// Counts a new request to the endpoint whose stats these are.
    pub(crate) fn start(stats: &Arc<EndpointStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(stats))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A Service `ns/<name>` port 80 whose endpoints are `10.0.0.<i>:8080`, for the tests of the
/// balancers' state.
#[cfg(test)]
fn test_backend(name: &str, ips: &[u8]) -> Arc<ServiceBackend> {
    use crate::config::{AppProtocol, ProtocolSelection, ResourceRef};
    Arc::new(ServiceBackend {
        service: ResourceRef::new("Service", "ns", name),
        port: 80,
        cluster_ips: vec![],
        protocol: ProtocolSelection::http(AppProtocol::Http1),
        endpoints: ips
            .iter()
            .map(|&i| Endpoint {
                address: ([10, 0, 0, i], 8080).into(),
                stats: Default::default(),
                transport: Default::default(),
            })
            .collect(),
        policy: Default::default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.
mod tests {
    use super::*;

    fn endpoints(loads: &[usize]) -> Vec<Endpoint> {
        loads
            .iter()
            .enumerate()
            .map(|(i, &load)| {
                let stats = Arc::new(EndpointStats::default());
                stats.in_flight.store(load, Ordering::Relaxed);
                Endpoint {
                    address: ([10, 0, 0, i as u8 + 1], 8080).into(),
                    stats,
                    transport: Default::default(),
                }
            })
            .collect()
    }

    #[test]
    fn empty_and_single() {
        assert!(pick(&[]).is_none());
        let one = endpoints(&[7]);
        assert_eq!(pick(&one).unwrap().address, one[0].address);
    }

    #[test]
    fn two_endpoints_always_prefer_the_less_loaded() {
        let eps = endpoints(&[5, 1]);
        for _ in 0..100 {
            assert_eq!(pick(&eps).unwrap().address, eps[1].address);
        }
    }

    #[test]
    fn many_endpoints_never_pick_the_most_loaded_and_favour_the_least() {
        // With four endpoints the most loaded can only win against itself, which two distinct
        // draws exclude; the least loaded wins every draw it is part of (half of them).
        let eps = endpoints(&[9, 0, 3, 3]);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let chosen = pick(&eps).unwrap().address;
            counts[eps.iter().position(|e| e.address == chosen).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 1700, "{counts:?}");
        assert!(counts[2] > 300 && counts[3] > 300, "{counts:?}");
    }

    #[test]
    fn a_retry_avoids_the_endpoint_that_failed() {
        let eps = endpoints(&[0, 5, 5]);
        for _ in 0..200 {
            let chosen = pick_avoiding(&eps, Some(eps[0].address)).unwrap().address;
            assert_ne!(chosen, eps[0].address);
        }
        // Alone, it is picked again.
        let one = endpoints(&[0]);
        assert_eq!(
            pick_avoiding(&one, Some(one[0].address)).unwrap().address,
            one[0].address
        );
        assert!(pick_avoiding(&[], None).is_none());
    }

    #[test]
    fn ties_spread() {
        let eps = endpoints(&[0, 0]);
        let hits = (0..1000)
            .filter(|_| pick(&eps).unwrap().address == eps[0].address)
            .count();
        assert!((350..650).contains(&hits), "{hits}");
    }
}
