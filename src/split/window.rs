//! Sliding-window request statistics for canary guards: lock-free atomics in
//! time slots, so recording an observation is a handful of relaxed atomic
//! adds.
//!
//! The window is split into [`SLOTS`] slots of `window / SLOTS`; a slot is
//! reclaimed (zeroed) by the first observation of a newer period. Reading
//! sums the slots of the last `window` (at slot granularity) that are not
//! older than the last [`Window::restart`]. Counts are approximate under
//! races (an observation racing a slot reclaim may be lost), which the guard
//! tolerates. Latencies go into log-linear buckets (8 per power of two of
//! microseconds), so the p99 is an upper bound at most 12.5% high.

use super::latency::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Slots per window.
pub const SLOTS: usize = 10;

/// Which upstream served a canary route's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The stable upstream.
    Stable,
    /// The canary upstream.
    Canary,
}

impl Arm {
    /// `stable` or `canary`, as in `x-pointsman-variant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Stable => "stable",
            Arm::Canary => "canary",
        }
    }
}

/// Window statistics of one arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowStats {
    /// Requests in the window.
    pub requests: u64,
    /// 5xx answers and upstream failures.
    pub errors: u64,
    /// `errors / requests`; `None` without requests.
    pub error_rate: Option<f64>,
    /// 99th percentile latency in milliseconds (bucket upper bound).
    pub p99_ms: Option<f64>,
}

/// One arm's window counts: requests, errors and the latency histogram
/// (summable across replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmCounts {
    /// Requests.
    pub requests: u64,
    /// 5xx answers and upstream failures.
    pub errors: u64,
    /// Latency histogram counts ([`Histogram`] buckets).
    pub latency: [u64; super::latency::LAT_BUCKETS],
}

impl Default for ArmCounts {
    fn default() -> Self {
        ArmCounts {
            requests: 0,
            errors: 0,
            latency: [0; super::latency::LAT_BUCKETS],
        }
    }
}

impl ArmCounts {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &ArmCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a += b;
        }
    }

    /// The statistics these counts give.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            requests: self.requests,
            errors: self.errors,
            error_rate: (self.requests > 0).then(|| self.errors as f64 / self.requests as f64),
            p99_ms: Histogram::quantile_ms(&self.latency, 0.99),
        }
    }
}

impl WindowStats {
    /// The p99 as a duration.
    pub fn p99(&self) -> Option<Duration> {
        self.p99_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }
}

#[derive(Debug)]
struct ArmCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

impl ArmCounters {
    fn new() -> Self {
        ArmCounters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Histogram::new(),
        }
    }

    fn zero(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        self.latency.zero();
    }
}

#[derive(Debug)]
struct Slot {
    /// Period index + 1 this slot holds (0: never used).
    epoch: AtomicU64,
    arms: [ArmCounters; 2],
}

/// The sliding window of one canary.
#[derive(Debug)]
pub struct Window {
    base: Instant,
    /// Length of a slot; changed by [`Window::resize`].
    slot_ms: AtomicU64,
    /// Periods before this one do not count (set by [`Window::restart`]).
    start: AtomicU64,
    slots: Box<[Slot]>,
}

impl Window {
    /// A window of length `window` (at least [`SLOTS`] ms) starting at `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        let slot_ms = (window.as_millis() as u64 / SLOTS as u64).max(1);
        Window {
            base: now,
            slot_ms: AtomicU64::new(slot_ms),
            start: AtomicU64::new(0),
            slots: (0..SLOTS)
                .map(|_| Slot {
                    epoch: AtomicU64::new(0),
                    arms: [ArmCounters::new(), ArmCounters::new()],
                })
                .collect(),
        }
    }

    fn period(&self, now: Instant) -> u64 {
        let slot_ms = self.slot_ms.load(Ordering::Relaxed).max(1);
        now.saturating_duration_since(self.base).as_millis() as u64 / slot_ms
    }

    /// Gives the window a new length (a guard edit) and starts it afresh
    /// at `now`; counts recorded meanwhile may be lost.
    pub fn resize(&self, window: Duration, now: Instant) {
        let slot_ms = (window.as_millis() as u64 / SLOTS as u64).max(1);
        if self.slot_ms.swap(slot_ms, Ordering::AcqRel) != slot_ms {
            for slot in self.slots.iter() {
                slot.epoch.store(0, Ordering::Release);
            }
        }
        self.restart(now);
    }

    fn slot(&self, period: u64) -> Option<&Slot> {
        self.slots.get((period % SLOTS as u64) as usize)
    }

    /// Records one request.
    pub fn record(&self, now: Instant, arm: Arm, error: bool, latency: Duration) {
        let period = self.period(now);
        let Some(slot) = self.slot(period) else {
            return;
        };
        let epoch = slot.epoch.load(Ordering::Acquire);
        if epoch < period + 1 {
            if slot
                .epoch
                .compare_exchange(epoch, period + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.arms.iter().for_each(ArmCounters::zero);
            }
        } else if epoch > period + 1 {
            // A newer period already owns the slot; this one is stale.
            return;
        }
        let c = &slot.arms[arm as usize];
        c.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.latency.record(latency);
    }

    /// Starts the window afresh at `now` (step change, operator action).
    pub fn restart(&self, now: Instant) {
        let period = self.period(now);
        self.start.store(period, Ordering::Release);
        if let Some(slot) = self.slot(period)
            && slot.epoch.load(Ordering::Acquire) == period + 1
        {
            slot.arms.iter().for_each(ArmCounters::zero);
        }
    }

    /// The counts of `arm` over the window ending at `now`, to add to other
    /// replicas' (fleet mode).
    pub fn counts(&self, now: Instant, arm: Arm) -> ArmCounts {
        let period = self.period(now);
        let first = period
            .saturating_sub(SLOTS as u64 - 1)
            .max(self.start.load(Ordering::Acquire));
        let mut out = ArmCounts::default();
        for slot in self.slots.iter() {
            let epoch = slot.epoch.load(Ordering::Acquire);
            if epoch == 0 || epoch - 1 < first || epoch - 1 > period {
                continue;
            }
            let c = &slot.arms[arm as usize];
            out.requests += c.requests.load(Ordering::Relaxed);
            out.errors += c.errors.load(Ordering::Relaxed);
            c.latency.add_to(&mut out.latency);
        }
        out
    }

    /// Statistics of `arm` over the window ending at `now`.
    pub fn stats(&self, now: Instant, arm: Arm) -> WindowStats {
        self.counts(now, arm).stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn window_slides_and_restarts() {
        let now = Instant::now();
        let w = Window::new(Duration::from_secs(10), now);
        for i in 0..100 {
            w.record(now, Arm::Canary, i < 5, Duration::from_millis(10 + i));
        }
        w.record(now, Arm::Stable, false, Duration::from_millis(1));
        let s = w.stats(now, Arm::Canary);
        assert_eq!((s.requests, s.errors), (100, 5));
        assert_eq!(s.error_rate, Some(0.05));
        let p99 = s.p99_ms.unwrap();
        assert!((109.0..=123.0).contains(&p99), "{p99}");
        assert_eq!(w.stats(now, Arm::Stable).requests, 1);
        // Still inside 10 s later minus one slot, gone after the window.
        assert_eq!(
            w.stats(now + Duration::from_secs(9), Arm::Canary).requests,
            100
        );
        assert_eq!(
            w.stats(now + Duration::from_secs(11), Arm::Canary).requests,
            0
        );
        let later = now + Duration::from_secs(3);
        w.record(later, Arm::Canary, true, Duration::ZERO);
        w.restart(later);
        assert_eq!(w.stats(later, Arm::Canary).requests, 0);
        w.record(later, Arm::Canary, true, Duration::ZERO);
        assert_eq!(w.stats(later, Arm::Canary).errors, 1);
    }
}
