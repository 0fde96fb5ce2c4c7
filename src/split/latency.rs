//! Latency histograms: log-linear buckets (exact below 8 µs, then 8 per
//! power of two of microseconds), recorded with one relaxed atomic add, so
//! a quantile read from them is an upper bound at most 12.5% high.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per histogram (up to about 2^26 µs, a minute; longer in the last).
pub const LAT_BUCKETS: usize = 208;

/// A lock-free latency histogram.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            buckets: (0..LAT_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        if let Some(b) = self.buckets.get(latency_bucket(latency)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Empties the histogram.
    pub fn zero(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// Empty counts to sum histograms into.
    pub fn snapshot_zero() -> [u64; LAT_BUCKETS] {
        [0; LAT_BUCKETS]
    }

    /// Adds this histogram's counts to `into`.
    pub fn add_to(&self, into: &mut [u64; LAT_BUCKETS]) {
        for (h, b) in into.iter_mut().zip(self.buckets.iter()) {
            *h += b.load(Ordering::Relaxed);
        }
    }

    /// The `q` quantile (0–1) of this histogram, in milliseconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut counts = Self::snapshot_zero();
        self.add_to(&mut counts);
        Self::quantile_ms(&counts, q)
    }

    /// The `q` quantile (0–1) of summed counts, in milliseconds (the
    /// bucket's upper bound); `None` without observations.
    pub fn quantile_ms(counts: &[u64; LAT_BUCKETS], q: f64) -> Option<f64> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let idx = counts
            .iter()
            .position(|&n| {
                seen += n;
                seen >= rank
            })
            .unwrap_or(LAT_BUCKETS - 1);
        Some(bucket_upper_micros(idx) as f64 / 1000.0)
    }
}

/// Log-linear bucket of a latency: exact below 8 µs, then 8 per octave.
fn latency_bucket(latency: Duration) -> usize {
    let v = latency.as_micros().min(u128::from(u64::MAX)) as u64;
    if v < 8 {
        return v as usize;
    }
    let e = 63 - u64::from(v.leading_zeros());
    let sub = (v >> (e - 3)) & 7;
    (((e - 2) * 8 + sub) as usize).min(LAT_BUCKETS - 1)
}

/// Exclusive upper bound, in µs, of a latency bucket.
fn bucket_upper_micros(i: usize) -> u64 {
    if i < 8 {
        return i as u64 + 1;
    }
    let e = (i / 8 + 2) as u64;
    let sub = (i % 8) as u64;
    (9 + sub) << (e - 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        for v in [0u64, 7, 8, 15, 16, 17, 1000, 123_456, 10_000_000] {
            let i = latency_bucket(Duration::from_micros(v));
            assert!(bucket_upper_micros(i) > v, "{v}");
            if i > 0 {
                assert!(bucket_upper_micros(i - 1) <= v, "{v}");
            }
            assert!(bucket_upper_micros(i) as f64 <= (v as f64 * 1.125).max(v as f64 + 1.0));
        }
    }

    #[test]
    fn quantiles_are_tight_upper_bounds() {
        let h = Histogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((50.0..=56.5).contains(&p50), "{p50}");
        assert!((99.0..=112.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::new().quantile(0.5), None);
    }
}
