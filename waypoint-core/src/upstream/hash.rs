//! Consistent-hash tables (DestinationRule `loadBalancer.consistentHash`): Envoy's ketama-style
//! ring with virtual nodes, and Maglev's lookup table. Both map a 64-bit request hash to one
//! endpoint of a set, and both are built once per endpoint set (the balancer caches them).
//!
//! Stability is the point of them, so every input is normalised: endpoints are named by their
//! `ip:port` text and sorted before building, so the same set in any order (another config
//! build, a reload, a shuffled EndpointSlice) gives the same table. The hash function is ours
//! ([`hash64`]: FNV-1a with a 64-bit finaliser), fixed in this file rather than `std`'s
//! `DefaultHasher`, whose output may change between Rust releases; it is not Envoy's xxHash,
//! so a key does not land on the endpoint an Envoy waypoint would pick, only on the same one
//! every time here.
//!
//! | | ring | Maglev |
//! |---|---|---|
//! | size | `minimumRingSize` points per endpoint (default 1024), at most 8 Mi in all | `tableSize` slots (prime, default 65537) |
//! | an endpoint leaves | exactly its keys move | its keys move, plus a few others (the paper's "minimal disruption") |
//! | lookup | binary search | one index |
//!
//! A retry must avoid the endpoint that failed: [`HashTable::pick_avoiding`] walks on from the
//! key's position to the next entry naming another endpoint, so a retried key also lands on a
//! stable second choice.

use std::net::SocketAddr;

use crate::config::resources::MAX_RING_SIZE;

/// Envoy's default ring size (`minimumRingSize` when unset or 0).
const DEFAULT_RING_SIZE: u64 = 1024;
/// Maglev's default table size (prime), Envoy's.
const DEFAULT_MAGLEV_SIZE: u64 = 65537;

/// A stable 64-bit hash of `bytes` (FNV-1a, then MurmurHash3's `fmix64` so that keys differing
/// in their last byte only still spread over the whole range). `seed` gives independent hashes
/// of the same bytes (Maglev needs two per endpoint).
pub(crate) fn hash64(bytes: &[u8], seed: u64) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    fmix64(h)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Which table to build, with its size (already validated: see `LoadBalancerSettings::check`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableKind {
    /// A ring with at least this many points (0 means the default, 1024).
    Ring { minimum_size: u64 },
    /// A Maglev table of this many slots (a prime; 0 means the default, 65537).
    Maglev { size: u64 },
}

/// A built table: endpoint addresses (sorted) and the structure that maps hashes to them.
#[derive(Debug)]
pub(crate) struct HashTable {
    endpoints: Vec<SocketAddr>,
    lookup: Lookup,
}

#[derive(Debug)]
enum Lookup {
    /// Ring points sorted by hash: (point hash, endpoint index).
    Ring(Vec<(u64, u32)>),
    /// Maglev slots: endpoint index per slot.
    Maglev(Vec<u32>),
}

impl HashTable {
    /// Builds the table of `kind` over `endpoints` (any order; duplicates count once).
    /// `None` for an empty set.
    pub(crate) fn build(kind: TableKind, endpoints: &[SocketAddr]) -> Option<HashTable> {
        let mut endpoints = endpoints.to_vec();
        endpoints.sort_unstable();
        endpoints.dedup();
        if endpoints.is_empty() {
            return None;
        }
        let names: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
        let lookup = match kind {
            TableKind::Ring { minimum_size } => Lookup::Ring(ring(&names, minimum_size)),
            TableKind::Maglev { size } => Lookup::Maglev(maglev(&names, size)),
        };
        Some(HashTable { endpoints, lookup })
    }

    /// The endpoint set the table was built over, sorted.
    pub(crate) fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// The endpoint of `hash`.
    #[cfg(test)]
    pub(crate) fn pick(&self, hash: u64) -> SocketAddr {
        self.pick_avoiding(hash, None)
    }

    /// The endpoint of `hash`, or, when that is `avoid` and the set has another, the next one
    /// after it in the table.
    pub(crate) fn pick_avoiding(&self, hash: u64, avoid: Option<SocketAddr>) -> SocketAddr {
        let avoided = |i: u32| Some(self.endpoints[i as usize]) == avoid;
        let index = match &self.lookup {
            Lookup::Ring(points) => {
                let start = points.partition_point(|&(h, _)| h < hash) % points.len();
                let mut i = start;
                // Walk on at most once around the ring; a set of one always ends where it began.
                loop {
                    let endpoint = points[i].1;
                    if !avoided(endpoint) {
                        break endpoint;
                    }
                    i = (i + 1) % points.len();
                    if i == start {
                        break endpoint;
                    }
                }
            }
            Lookup::Maglev(slots) => {
                let start = (hash % slots.len() as u64) as usize;
                let mut i = start;
                loop {
                    let endpoint = slots[i];
                    if !avoided(endpoint) {
                        break endpoint;
                    }
                    i = (i + 1) % slots.len();
                    if i == start {
                        break endpoint;
                    }
                }
            }
        };
        self.endpoints[index as usize]
    }
}

/// The ring: `minimum` points per endpoint, point `i` of endpoint `e` at `hash64("e_i")`
/// (Envoy names its points the same way), sorted by hash and then by endpoint so that even
/// colliding points order the same in every build.
///
/// *Deviation from Envoy*, which shares the minimum out (`ceil(minimum / n)` points each): its
/// per-endpoint count changes whenever the set does, so a removal there also moves some keys
/// between the endpoints that stay. A fixed count per endpoint makes the ring at least the
/// minimum, as the field asks, and a removal moves exactly the removed endpoint's keys; the
/// total stays within Envoy's bound of 8 Mi points.
fn ring(names: &[String], minimum: u64) -> Vec<(u64, u32)> {
    let minimum = match minimum {
        0 => DEFAULT_RING_SIZE,
        n => n.min(MAX_RING_SIZE),
    };
    let n = names.len() as u64;
    // Never more than the bound in all, but at least one point each.
    let per_endpoint = minimum.min(MAX_RING_SIZE / n).max(1);
    let mut points = Vec::with_capacity((per_endpoint * n) as usize);
    for (index, name) in names.iter().enumerate() {
        for i in 0..per_endpoint {
            let point = hash64(format!("{name}_{i}").as_bytes(), 0);
            points.push((point, index as u32));
        }
    }
    points.sort_unstable();
    points
}

/// Maglev's table (Eisenbud et al., NSDI 2016, §3.4): each endpoint prefers the slots of its
/// own permutation `(offset + j * skip) mod size`; endpoints take turns claiming their next
/// free preferred slot until every slot is claimed, so each ends up with `size / n` slots
/// (give or take one), and a set that loses one endpoint keeps most slots where they were.
fn maglev(names: &[String], size: u64) -> Vec<u32> {
    let size = match size {
        0 => DEFAULT_MAGLEV_SIZE,
        n => n,
    };
    let m = size as usize;
    let permutation: Vec<(u64, u64)> = names
        .iter()
        .map(|name| {
            let offset = hash64(name.as_bytes(), 1) % size;
            // 1..size-1, so that (size prime) the permutation visits every slot.
            let skip = hash64(name.as_bytes(), 2) % (size - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; names.len()];
    let mut slots = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for (index, &(offset, skip)) in permutation.iter().enumerate() {
            let mut slot = ((offset + next[index] % size * skip) % size) as usize;
            while slots[slot] != u32::MAX {
                next[index] += 1;
                slot = ((offset + next[index] % size * skip) % size) as usize;
            }
            slots[slot] = index as u32;
            next[index] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n).map(|i| ([10, 0, 0, i], 8080).into()).collect()
    }

    fn kinds() -> [TableKind; 2] {
        [
            TableKind::Ring { minimum_size: 0 },
            TableKind::Maglev { size: 0 },
        ]
    }

    fn keys() -> impl Iterator<Item = u64> {
        (0..20_000u32).map(|k| hash64(format!("user-{k}").as_bytes(), 0))
    }

    #[test]
    fn the_same_endpoint_set_in_any_order_gives_the_same_mapping() {
        let forward = addrs(5);
        let mut backward = forward.clone();
        backward.reverse();
        for kind in kinds() {
            let a = HashTable::build(kind, &forward).unwrap();
            let b = HashTable::build(kind, &backward).unwrap();
            for key in keys() {
                assert_eq!(a.pick(key), b.pick(key), "{kind:?}");
            }
        }
    }

    #[test]
    fn keys_spread_over_every_endpoint_within_a_fair_bound() {
        for kind in kinds() {
            let table = HashTable::build(kind, &addrs(3)).unwrap();
            let mut counts = [0usize; 3];
            for key in keys() {
                let at = table.pick(key);
                counts[table.endpoints().iter().position(|e| *e == at).unwrap()] += 1;
            }
            // A fair share is a third (6,667 keys); allow 20% to 47% each.
            for c in counts {
                assert!((4_000..9_400).contains(&c), "{kind:?}: {counts:?}");
            }
        }
    }

    #[test]
    fn removing_an_endpoint_from_a_ring_moves_only_the_keys_it_had() {
        let all = addrs(4);
        let gone = all[2];
        let rest: Vec<_> = all.iter().copied().filter(|a| *a != gone).collect();
        let before = HashTable::build(TableKind::Ring { minimum_size: 0 }, &all).unwrap();
        let after = HashTable::build(TableKind::Ring { minimum_size: 0 }, &rest).unwrap();
        let mut moved = 0;
        for key in keys() {
            let (b, a) = (before.pick(key), after.pick(key));
            if b == gone {
                moved += 1;
                assert_ne!(a, gone);
            } else {
                assert_eq!(a, b, "a key not on the removed endpoint moved");
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn removing_an_endpoint_from_maglev_moves_its_keys_and_almost_no_others() {
        let all = addrs(4);
        let gone = all[2];
        let rest: Vec<_> = all.iter().copied().filter(|a| *a != gone).collect();
        let before = HashTable::build(TableKind::Maglev { size: 0 }, &all).unwrap();
        let after = HashTable::build(TableKind::Maglev { size: 0 }, &rest).unwrap();
        let (mut others, mut total) = (0, 0);
        for key in keys() {
            let (b, a) = (before.pick(key), after.pick(key));
            assert_ne!(a, gone);
            if b != gone {
                total += 1;
                others += usize::from(a != b);
            }
        }
        // Maglev trades a little disruption for its even spread: under 3% of the other keys.
        assert!(others * 100 < total * 3, "{others} of {total} moved");
    }

    #[test]
    fn a_retry_goes_to_the_next_endpoint_on_the_table_and_stays_stable() {
        for kind in kinds() {
            let eps = addrs(3);
            let table = HashTable::build(kind, &eps).unwrap();
            for key in keys().take(500) {
                let first = table.pick(key);
                let second = table.pick_avoiding(key, Some(first));
                assert_ne!(first, second, "{kind:?}");
                assert_eq!(second, table.pick_avoiding(key, Some(first)));
            }
            // Alone, the only endpoint is picked even when it is to be avoided.
            let one = HashTable::build(kind, &eps[..1]).unwrap();
            assert_eq!(one.pick_avoiding(7, Some(eps[0])), eps[0]);
        }
    }

    #[test]
    fn the_ring_gives_each_endpoint_the_minimum_size_within_the_bound() {
        let names: Vec<String> = addrs(3).iter().map(ToString::to_string).collect();
        assert_eq!(ring(&names, 0).len(), 3 * 1024);
        assert_eq!(ring(&names, 10).len(), 3 * 10);
        assert_eq!(ring(&names, 1).len(), 3);
    }

    #[test]
    fn maglev_gives_every_endpoint_an_almost_equal_share_of_slots() {
        let names: Vec<String> = addrs(3).iter().map(ToString::to_string).collect();
        let slots = maglev(&names, 65537);
        for i in 0..3u32 {
            let n = slots.iter().filter(|&&s| s == i).count();
            assert!((21_845..=21_846).contains(&n), "{n}");
        }
        // A small prime table works too.
        assert_eq!(maglev(&names, 7).len(), 7);
        assert!(HashTable::build(TableKind::Maglev { size: 0 }, &[]).is_none());
    }

    #[test]
    fn the_hash_is_fixed_and_seeded() {
        assert_eq!(hash64(b"abc", 0), hash64(b"abc", 0));
        assert_ne!(hash64(b"abc", 0), hash64(b"abc", 1));
        assert_ne!(hash64(b"abc", 0), hash64(b"abd", 0));
    }
}
