//! The dashboard's short history of a split (SPEC 8.1): per arm (canary
//! `stable` / `canary`, experiment variants) requests, 5xx answers and p99
//! latency in [`BUCKETS`] points of [`BUCKET`] each, the last 15 minutes.
//!
//! The request path does not touch it. A sampler (one task, off the request
//! path) reads the cumulative counters an arm already keeps ([`Totals`]
//! for canaries, the experiment's [`super::Tally`]) every [`BUCKET`], and
//! stores the difference to its previous reading as one point. Memory is
//! fixed when the timeline is made: a ring of [`BUCKETS`] points per arm
//! plus the previous reading, all atomics (no lock, no allocation after
//! construction). The oldest point is overwritten by the newest.
//!
//! A timeline belongs to the live state of one definition, so it survives
//! reloads that keep the definition and starts empty when it changes.

use super::latency::{Histogram, LAT_BUCKETS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The width of one point.
pub const BUCKET: Duration = Duration::from_secs(10);
/// Points kept per arm: 15 minutes of [`BUCKET`]s.
pub const BUCKETS: usize = 90;

/// `p99_us` of a point without requests.
const NO_P99: u64 = u64::MAX;

/// Cumulative counters of one arm: requests, 5xx answers and latency.
/// Recording is three relaxed atomic adds at most.
#[derive(Debug, Default)]
pub struct Totals {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

impl Totals {
    /// Counts one answered request.
    pub fn record(&self, error: bool, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(latency);
    }

    /// The counts so far: requests, errors, and the latency histogram.
    pub fn read(&self) -> (u64, u64, [u64; LAT_BUCKETS]) {
        let mut hist = Histogram::snapshot_zero();
        self.latency.add_to(&mut hist);
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            hist,
        )
    }
}

/// One point of one arm, as read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Requests answered during the bucket.
    pub requests: u64,
    /// Of those, 5xx answers (upstream failures included).
    pub errors: u64,
    /// The bucket's 99th percentile latency, ms (bucket upper bound);
    /// `None` without requests.
    pub p99_ms: Option<f64>,
}

/// The points of a timeline, oldest first, as [`Timeline::read`] returns
/// them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// When each point was taken (end of its bucket), Unix milliseconds.
    pub at: Vec<u64>,
    /// Per arm, one [`Point`] per entry of `at`.
    pub arms: Vec<Vec<Point>>,
}

#[derive(Debug)]
struct Slot {
    requests: AtomicU64,
    errors: AtomicU64,
    p99_us: AtomicU64,
}

/// The previous cumulative reading of one arm (what a sample subtracts).
#[derive(Debug)]
struct Seen {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: Box<[AtomicU64]>,
}

/// Fixed-size rings of points, one per arm, filled by [`Timeline::sample`].
#[derive(Debug)]
pub struct Timeline {
    arms: usize,
    /// Samples taken so far; the next one goes to `taken % BUCKETS`.
    taken: AtomicU64,
    /// Per ring position: when it was taken (Unix ms; 0 while empty or
    /// being rewritten).
    at: Box<[AtomicU64]>,
    /// `BUCKETS * arms` slots: position-major.
    slots: Box<[Slot]>,
    seen: Box<[Seen]>,
}

impl Timeline {
    /// An empty timeline of `arms` arms; its whole memory is taken here.
    pub fn new(arms: usize) -> Self {
        let zero = || AtomicU64::new(0);
        Timeline {
            arms,
            taken: zero(),
            at: (0..BUCKETS).map(|_| zero()).collect(),
            slots: (0..BUCKETS * arms)
                .map(|_| Slot {
                    requests: zero(),
                    errors: zero(),
                    p99_us: AtomicU64::new(NO_P99),
                })
                .collect(),
            seen: (0..arms)
                .map(|_| Seen {
                    requests: zero(),
                    errors: zero(),
                    latency: (0..LAT_BUCKETS).map(|_| zero()).collect(),
                })
                .collect(),
        }
    }

    /// The number of arms.
    pub fn arms(&self) -> usize {
        self.arms
    }

    /// Takes one point at `at_ms` (Unix ms, not 0): for each arm, `read(i)`
    /// gives its cumulative requests, errors and latency histogram, and
    /// the point holds what was added since the previous sample. Meant for
    /// one sampler; concurrent samples split the counts between them
    /// rather than count them twice.
    pub fn sample(&self, at_ms: u64, read: impl Fn(usize) -> (u64, u64, [u64; LAT_BUCKETS])) {
        let pos = (self.taken.fetch_add(1, Ordering::AcqRel) % BUCKETS as u64) as usize;
        let Some(stamp) = self.at.get(pos) else {
            return;
        };
        // Readers skip the position while it is rewritten.
        stamp.store(0, Ordering::Release);
        for (arm, seen) in self.seen.iter().enumerate() {
            let (requests, errors, hist) = read(arm);
            let mut delta = Histogram::snapshot_zero();
            for ((d, &now), before) in delta.iter_mut().zip(&hist).zip(seen.latency.iter()) {
                *d = now.saturating_sub(before.swap(now, Ordering::AcqRel));
            }
            let requests = requests.saturating_sub(seen.requests.swap(requests, Ordering::AcqRel));
            let errors = errors.saturating_sub(seen.errors.swap(errors, Ordering::AcqRel));
            let p99_us = Histogram::quantile_ms(&delta, 0.99)
                .map_or(NO_P99, |ms| (ms * 1000.0).round() as u64);
            if let Some(slot) = self.slots.get(pos * self.arms + arm) {
                slot.requests.store(requests, Ordering::Relaxed);
                slot.errors.store(errors, Ordering::Relaxed);
                slot.p99_us.store(p99_us, Ordering::Relaxed);
            }
        }
        stamp.store(at_ms.max(1), Ordering::Release);
    }

    /// The points taken after `since_ms` (Unix ms), oldest first. A point
    /// being rewritten while it is read is left out.
    pub fn read(&self, since_ms: u64) -> Series {
        let mut order: Vec<(u64, usize)> = Vec::with_capacity(BUCKETS);
        for (pos, stamp) in self.at.iter().enumerate() {
            let at = stamp.load(Ordering::Acquire);
            if at > since_ms {
                order.push((at, pos));
            }
        }
        order.sort_unstable();
        let mut series = Series {
            at: Vec::with_capacity(order.len()),
            arms: vec![Vec::with_capacity(order.len()); self.arms],
        };
        for (at, pos) in order {
            let points: Vec<Point> = (0..self.arms)
                .filter_map(|arm| self.slots.get(pos * self.arms + arm))
                .map(|s| {
                    let requests = s.requests.load(Ordering::Relaxed);
                    let p99 = s.p99_us.load(Ordering::Relaxed);
                    Point {
                        requests,
                        errors: s.errors.load(Ordering::Relaxed),
                        p99_ms: (p99 != NO_P99 && requests > 0).then(|| p99 as f64 / 1000.0),
                    }
                })
                .collect();
            // Rewritten meanwhile: its values may be half old, half new.
            if self.at.get(pos).map(|s| s.load(Ordering::Acquire)) != Some(at) {
                continue;
            }
            series.at.push(at);
            for (arm, p) in series.arms.iter_mut().zip(points) {
                arm.push(p);
            }
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cumulative counters for two arms, fed by the test.
    struct Feed([Totals; 2]);

    impl Feed {
        fn new() -> Self {
            Feed([Totals::default(), Totals::default()])
        }

        fn sample_into(&self, t: &Timeline, at: u64) {
            t.sample(at, |i| self.0[i].read());
        }
    }

    #[test]
    fn a_point_holds_what_came_since_the_previous_sample() {
        let t = Timeline::new(2);
        let feed = Feed::new();
        assert_eq!(t.read(0), Series::default_for(2));
        for i in 0..100 {
            feed.0[1].record(i < 3, Duration::from_millis(1 + i));
        }
        feed.0[0].record(false, Duration::from_millis(2));
        feed.sample_into(&t, 10_000);
        feed.0[1].record(true, Duration::from_millis(500));
        feed.sample_into(&t, 20_000);
        feed.sample_into(&t, 30_000);
        let s = t.read(0);
        assert_eq!(s.at, vec![10_000, 20_000, 30_000]);
        let canary = &s.arms[1];
        assert_eq!((canary[0].requests, canary[0].errors), (100, 3));
        let p99 = canary[0].p99_ms.unwrap();
        assert!((99.0..=113.0).contains(&p99), "{p99}");
        assert_eq!((canary[1].requests, canary[1].errors), (1, 1));
        assert!(canary[1].p99_ms.unwrap() >= 500.0);
        assert_eq!(
            canary[2],
            Point {
                requests: 0,
                errors: 0,
                p99_ms: None
            }
        );
        assert_eq!(s.arms[0][0].requests, 1);
        assert_eq!(s.arms[0][1].requests, 0);
        // Only points after `since`.
        assert_eq!(t.read(20_000).at, vec![30_000]);
    }

    #[test]
    fn the_ring_keeps_the_newest_points_and_never_grows() {
        let t = Timeline::new(2);
        let feed = Feed::new();
        let slots = t.slots.len();
        for n in 1..=(BUCKETS as u64 * 2 + 7) {
            for _ in 0..n {
                feed.0[0].record(false, Duration::from_micros(100));
            }
            feed.sample_into(&t, n * 10_000);
        }
        assert_eq!(t.slots.len(), slots);
        let s = t.read(0);
        assert_eq!(s.at.len(), BUCKETS);
        assert_eq!(s.arms.len(), 2);
        assert!(s.arms.iter().all(|a| a.len() == BUCKETS));
        // Oldest first, consecutive, ending with the last sample.
        let last = BUCKETS as u64 * 2 + 7;
        let first = last - BUCKETS as u64 + 1;
        let expected: Vec<u64> = (first..=last).map(|n| n * 10_000).collect();
        assert_eq!(s.at, expected);
        let requests: Vec<u64> = s.arms[0].iter().map(|p| p.requests).collect();
        assert_eq!(requests, (first..=last).collect::<Vec<_>>());
        assert!(s.arms[1].iter().all(|p| p.requests == 0));
    }

    #[test]
    fn counters_that_go_backwards_give_zero_not_garbage() {
        let t = Timeline::new(1);
        t.sample(1, |_| (10, 5, Histogram::snapshot_zero()));
        t.sample(2, |_| (4, 1, Histogram::snapshot_zero()));
        let s = t.read(0);
        assert_eq!(s.arms[0][1].requests, 0);
        assert_eq!(s.arms[0][1].errors, 0);
    }

    impl Series {
        fn default_for(arms: usize) -> Series {
            Series {
                at: Vec::new(),
                arms: vec![Vec::new(); arms],
            }
        }
    }
}
