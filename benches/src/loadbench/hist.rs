//! A log-linear latency histogram: exact below 128 ns, then 128 linear sub-buckets per power of
//! two, so any recorded value is known to within 1/128 (< 0.8 %) of itself. That is enough for
//! p50/p99/p99.9 of request latencies, costs one array increment per sample, and merges by
//! addition, so each load task keeps its own and nothing is shared on the hot path.

use std::time::Duration;

/// Linear sub-buckets per power of two (2^SUB_BITS).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every u64: the exact range, then one row of `SUB` per exponent 7..=63.
const BUCKETS: usize = (SUB as usize) * (64 - SUB_BITS as usize + 1);

/// Counts of latencies in nanoseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let top = v >> (exp - SUB_BITS); // in [SUB, 2*SUB)
    ((exp - SUB_BITS + 1) as usize) * SUB as usize + (top - SUB) as usize
}

/// The lowest and highest value that land in bucket `i`.
fn bounds_of(i: usize) -> (u64, u64) {
    let row = (i as u64) / SUB;
    let col = (i as u64) % SUB;
    if row == 0 {
        return (col, col);
    }
    let shift = row - 1;
    let low = (SUB + col) << shift;
    let high = low + ((1u64 << shift) - 1);
    (low, high)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_nanos(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one value in nanoseconds.
    pub fn record_nanos(&mut self, v: u64) {
        self.counts[index_of(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every count of `other` into this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Mean, or zero when empty.
    pub fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(u64::try_from(self.sum / u128::from(self.total)).unwrap_or(u64::MAX))
    }

    /// Largest value recorded, exact.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(if self.total == 0 { 0 } else { self.max })
    }

    /// The value at quantile `q` (0..=1): the smallest recorded value v such that at least
    /// `ceil(q * count)` values are <= v, reported as the middle of its bucket and clamped to the
    /// exact min/max. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = bounds_of(i);
                let mid = low + (high - low) / 2;
                return Some(Duration::from_nanos(mid.clamp(self.min, self.max)));
            }
        }
        Some(Duration::from_nanos(self.max))
    }

    /// The cumulative distribution as (latency, fraction of requests at or below it), one point
    /// per non-empty bucket, for plotting.
    pub fn cdf(&self) -> Vec<(Duration, f64)> {
        let mut out = Vec::new();
        if self.total == 0 {
            return out;
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            seen += c;
            let (_, high) = bounds_of(i);
            out.push((
                Duration::from_nanos(high.clamp(self.min, self.max)),
                seen as f64 / self.total as f64,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact quantile by the same rank rule, from sorted samples.
    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn buckets_cover_every_value_and_are_ordered() {
        let mut last = 0;
        for i in 0..BUCKETS {
            let (low, high) = bounds_of(i);
            assert!(low <= high);
            if i > 0 {
                assert_eq!(low, last + 1, "bucket {i} leaves a gap");
            }
            assert_eq!(index_of(low), i);
            assert_eq!(index_of(high), i);
            last = high;
        }
        assert_eq!(last, u64::MAX);
    }

    #[test]
    fn quantiles_are_within_one_percent_of_exact() {
        // A latency-like mix: a body around 200 µs, a tail to 50 ms, a few outliers.
        let mut rng = fastrand_like(7);
        let mut samples = Vec::new();
        for i in 0..200_000u64 {
            let base = 150_000 + rng() % 100_000;
            let v = match i % 1000 {
                0 => 20_000_000 + rng() % 30_000_000,
                1..=9 => 1_000_000 + rng() % 4_000_000,
                _ => base,
            };
            samples.push(v);
        }
        let mut h = Histogram::new();
        for &v in &samples {
            h.record_nanos(v);
        }
        samples.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            let want = exact(&samples, q) as f64;
            let got = h.quantile(q).unwrap().as_nanos() as f64;
            assert!(
                (got - want).abs() / want < 0.01,
                "q={q}: histogram {got} vs exact {want}"
            );
        }
        assert_eq!(h.count(), 200_000);
        assert_eq!(h.max().as_nanos() as u64, *samples.last().unwrap());
    }

    #[test]
    fn small_values_are_exact_and_tail_is_not_averaged_away() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record_nanos(100);
        }
        h.record_nanos(1_000_000_000);
        assert_eq!(h.quantile(0.5), Some(Duration::from_nanos(100)));
        assert_eq!(h.quantile(0.999), Some(Duration::from_nanos(100)));
        // The 1000th value is the outlier: p99.99 must show it.
        let p = h.quantile(0.9999).unwrap().as_nanos() as f64;
        assert!((p - 1e9).abs() / 1e9 < 0.01, "{p}");
        assert_eq!(Histogram::new().quantile(0.5), None);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut all = Histogram::new();
        for v in 1..5000u64 {
            let v = v * 997;
            if v % 3 == 0 { &mut a } else { &mut b }.record_nanos(v);
            all.record_nanos(v);
        }
        a.merge(&b);
        for q in [0.1, 0.5, 0.99] {
            assert_eq!(a.quantile(q), all.quantile(q));
        }
        assert_eq!(a.mean(), all.mean());
        let cdf = a.cdf();
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(cdf.last().map(|p| p.1), Some(1.0));
    }

    /// A tiny deterministic generator (xorshift) so the test needs no extra crate.
    fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }
}
