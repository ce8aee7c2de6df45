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
//! What must outlive a config snapshot (the round-robin position, the built hash tables) lives
//! in [`Balancers`], owned by the `Upstream` and keyed by the backend (Service and port); a
//! reload with the same endpoints and settings finds it as it was (see `state`).

mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::hash::{HashTable, TableKind};
use super::hash_key::HashKey;
use crate::config::{Endpoint, EndpointStats};
pub(crate) use state::Balancers;

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

/// One request's endpoint choice, made ready before its first try: every try asks it for an
/// endpoint, each time avoiding the endpoint of the try before.
#[derive(Debug, Default)]
pub(crate) struct Choice {
    how: How,
    /// `Set-Cookie` for the response, when the hash key was a cookie generated for it.
    pub(crate) set_cookie: Option<http::HeaderValue>,
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
