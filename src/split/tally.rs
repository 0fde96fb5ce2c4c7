//! What an experiment counts (SPEC 3, 8): per variant the enrolled requests
//! (exposures), the distinct users, and the guardrails (5xx answers and
//! latency); requests the kill switch released to one variant are counted
//! apart. Kept by the runtime for one definition (by identity), so counts
//! survive reloads that leave the definition unchanged (SPEC 7).
//!
//! SRM is judged on users, never on requests: a fair split of users must
//! not raise it however unevenly they send requests.

use super::experiment::Experiment;
use super::latency::{Histogram, LAT_BUCKETS};
use super::stats::{SRM_THRESHOLD, chi_square_sf, srm_p_value};
use super::timeline::{Series, Timeline};
use super::users::DistinctIds;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The counts of one experiment definition.
#[derive(Debug)]
pub struct Tally {
    variants: Box<[VariantTally]>,
    users: DistinctIds,
    released: AtomicU64,
    /// The dashboard's last 15 minutes per variant, sampled from the
    /// counts above (never written by the request path).
    timeline: Timeline,
}

#[derive(Debug, Default)]
struct VariantTally {
    requests: AtomicU64,
    users: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

/// `/experiments` data for one experiment.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentStats {
    /// The experiment's name.
    pub name: String,
    /// Per variant, in configuration order.
    pub variants: Vec<VariantStats>,
    /// Enrolled requests (exposures) over every variant.
    pub total: u64,
    /// Distinct users over every variant.
    pub users: u64,
    /// More users than the distinct-id set is sized for: counts of new
    /// users are best effort.
    pub users_saturated: bool,
    /// Requests the kill switch released to one variant (not part of the
    /// experiment's counts).
    pub released_requests: u64,
    /// Chi-square goodness-of-fit p-value of the user counts against the
    /// shares (`None` before two arms with a share have users).
    pub p_value: Option<f64>,
    /// `p_value < 0.001`: the split of users is not what was configured.
    pub srm: bool,
}

/// `/experiments` data for one variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantStats {
    /// The variant's name.
    pub name: String,
    /// Configured share of enrolled users.
    pub share: f64,
    /// Enrolled requests counted.
    pub assignments: u64,
    /// Distinct users enrolled.
    pub users: u64,
    /// Share of the experiment's users observed in this variant.
    pub observed_share: Option<f64>,
    /// Enrolled requests answered (same as `assignments`).
    pub requests: u64,
    /// Of those, answered 5xx (upstream failures included).
    pub errors_5xx: u64,
    /// `errors_5xx / requests`.
    pub error_rate: Option<f64>,
    /// Median latency until response headers, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
    /// This variant's 5xx rate against the first variant's (not on the
    /// first variant).
    pub vs_first: Option<Guardrail>,
}

/// A variant's 5xx-rate difference to the first variant: a two-proportion
/// comparison with a 95% interval and a two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Guardrail {
    /// This variant's error rate minus the first's.
    pub difference: f64,
    /// 95% interval of the difference (normal approximation).
    pub interval: (f64, f64),
    /// Two-sided p-value of "no difference" (pooled z-test).
    pub p_value: f64,
}

impl Tally {
    /// Zero counts for an experiment with `variants` variants.
    pub fn new(variants: usize) -> Self {
        Tally {
            variants: (0..variants).map(|_| VariantTally::default()).collect(),
            users: DistinctIds::new(),
            released: AtomicU64::new(0),
            timeline: Timeline::new(variants),
        }
    }

    /// Takes one point of the timeline at `at_ms` (Unix ms): each
    /// variant's requests, 5xx answers and p99 since the previous one.
    pub fn sample(&self, at_ms: u64) {
        self.timeline.sample(at_ms, |i| {
            let mut hist = Histogram::snapshot_zero();
            let Some(v) = self.variants.get(i) else {
                return (0, 0, hist);
            };
            v.latency.add_to(&mut hist);
            (
                v.requests.load(Ordering::Relaxed),
                v.errors.load(Ordering::Relaxed),
                hist,
            )
        });
    }

    /// The timeline's points after `since_ms` (Unix ms), per variant in
    /// variant order.
    pub fn series(&self, since_ms: u64) -> Series {
        self.timeline.read(since_ms)
    }

    /// Whether this tally fits an experiment with `variants` variants.
    pub fn fits(&self, variants: usize) -> bool {
        self.variants.len() == variants
    }

    /// Records that the user `id` was enrolled in variant `i`: true the
    /// first time this user is seen (a first exposure, SPEC 3.1).
    pub fn enroll(&self, i: usize, id: &str) -> bool {
        let first = self.users.insert(0, id);
        if first && let Some(v) = self.variants.get(i) {
            v.users.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Counts one answered request enrolled in variant `i` (forced requests
    /// are not counted): whether it was a 5xx, and its latency.
    pub fn record(&self, i: usize, server_error: bool, latency: Duration) {
        if let Some(v) = self.variants.get(i) {
            v.requests.fetch_add(1, Ordering::Relaxed);
            if server_error {
                v.errors.fetch_add(1, Ordering::Relaxed);
            }
            v.latency.record(latency);
        }
    }

    /// Counts a request the kill switch released to one variant.
    pub fn record_released(&self) {
        self.released.fetch_add(1, Ordering::Relaxed);
    }

    /// Enrolled requests counted per variant, in variant order.
    pub fn assignments(&self) -> Vec<u64> {
        self.variants
            .iter()
            .map(|v| v.requests.load(Ordering::Relaxed))
            .collect()
    }

    /// Distinct users per variant, in variant order.
    pub fn users(&self) -> Vec<u64> {
        self.variants
            .iter()
            .map(|v| v.users.load(Ordering::Relaxed))
            .collect()
    }

    /// Variants, shares, counts, guardrails and the SRM test on users, for
    /// `/experiments`.
    pub fn stats(&self, exp: &Experiment) -> ExperimentStats {
        self.counts().stats(exp)
    }

    /// The counts as of now (summable across replicas, fleet mode).
    pub fn counts(&self) -> TallyCounts {
        TallyCounts {
            variants: self
                .variants
                .iter()
                .map(|v| {
                    let mut latency = [0; LAT_BUCKETS];
                    v.latency.add_to(&mut latency);
                    VariantCounts {
                        users: v.users.load(Ordering::Relaxed),
                        requests: v.requests.load(Ordering::Relaxed),
                        errors: v.errors.load(Ordering::Relaxed),
                        latency: latency.to_vec(),
                    }
                })
                .collect(),
            released: self.released.load(Ordering::Relaxed),
            saturated: self.users.saturated(),
        }
    }
}

/// An experiment's counts at one moment: what a replica publishes to its
/// fleet, and what the fleet's figures are computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TallyCounts {
    /// Per variant, in configuration order.
    pub variants: Vec<VariantCounts>,
    /// Requests the kill switch released.
    pub released: u64,
    /// Whether a replica's distinct-id set is past its size.
    pub saturated: bool,
}

/// One variant's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VariantCounts {
    /// Distinct users.
    pub users: u64,
    /// Enrolled requests answered.
    pub requests: u64,
    /// Of those, 5xx.
    pub errors: u64,
    /// Latency histogram counts.
    pub latency: Vec<u64>,
}

impl TallyCounts {
    /// Adds another replica's counts (of the same definition).
    pub fn add(&mut self, other: &TallyCounts) {
        if self.variants.len() < other.variants.len() {
            self.variants
                .resize(other.variants.len(), VariantCounts::default());
        }
        for (a, b) in self.variants.iter_mut().zip(&other.variants) {
            a.users += b.users;
            a.requests += b.requests;
            a.errors += b.errors;
            if a.latency.len() < b.latency.len() {
                a.latency.resize(b.latency.len(), 0);
            }
            for (x, y) in a.latency.iter_mut().zip(&b.latency) {
                *x += y;
            }
        }
        self.released += other.released;
        self.saturated |= other.saturated;
    }

    /// Variants, shares, counts, guardrails and the SRM test on users.
    pub fn stats(&self, exp: &Experiment) -> ExperimentStats {
        let users: Vec<u64> = self.variants.iter().map(|v| v.users).collect();
        let total_users: u64 = users.iter().sum();
        let p_value = srm_p_value(&users, &exp.shares());
        let first = self.variants.first().map(|v| (v.errors, v.requests));
        let variants = exp
            .variants
            .iter()
            .zip(&self.variants)
            .enumerate()
            .map(|(i, (v, t))| {
                let mut latency = [0; LAT_BUCKETS];
                for (a, b) in latency.iter_mut().zip(&t.latency) {
                    *a = *b;
                }
                VariantStats {
                    name: v.name.to_string(),
                    share: v.weight,
                    assignments: t.requests,
                    users: t.users,
                    observed_share: (total_users > 0).then(|| t.users as f64 / total_users as f64),
                    requests: t.requests,
                    errors_5xx: t.errors,
                    error_rate: (t.requests > 0).then(|| t.errors as f64 / t.requests as f64),
                    p50_ms: Histogram::quantile_ms(&latency, 0.5),
                    p99_ms: Histogram::quantile_ms(&latency, 0.99),
                    vs_first: first
                        .filter(|_| i > 0)
                        .and_then(|base| guardrail((t.errors, t.requests), base)),
                }
            })
            .collect();
        ExperimentStats {
            name: exp.name.to_string(),
            variants,
            total: self.variants.iter().map(|v| v.requests).sum(),
            users: total_users,
            users_saturated: self.saturated,
            released_requests: self.released,
            p_value,
            srm: p_value.is_some_and(|p| p < SRM_THRESHOLD),
        }
    }
}

/// Compares the 5xx rate of `(errors, requests)` with `base`'s; `None`
/// until both have requests.
pub fn guardrail(v: (u64, u64), base: (u64, u64)) -> Option<Guardrail> {
    let (e1, n1) = v;
    let (e0, n0) = base;
    if n1 == 0 || n0 == 0 {
        return None;
    }
    let (n1f, n0f) = (n1 as f64, n0 as f64);
    let (p1, p0) = (e1 as f64 / n1f, e0 as f64 / n0f);
    let difference = p1 - p0;
    let se = (p1 * (1.0 - p1) / n1f + p0 * (1.0 - p0) / n0f).sqrt();
    let interval = (difference - 1.96 * se, difference + 1.96 * se);
    let pooled = (e1 + e0) as f64 / (n1f + n0f);
    let se0 = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n0f)).sqrt();
    let p_value = if se0 > 0.0 {
        // z² follows a chi-square with one degree of freedom.
        let z = difference / se0;
        chi_square_sf(z * z, 1.0)
    } else {
        1.0
    };
    Some(Guardrail {
        difference,
        interval,
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guardrail_flags_a_failing_variant_and_not_noise() {
        // 30% of the second variant's requests fail, 1% of the first's.
        let g = guardrail((300, 1000), (10, 1000)).unwrap();
        assert!((g.difference - 0.29).abs() < 1e-9);
        assert!(g.interval.0 > 0.25 && g.interval.1 < 0.33, "{g:?}");
        assert!(g.p_value < 1e-10, "{g:?}");
        // The same rate: no signal.
        let same = guardrail((10, 1000), (10, 1000)).unwrap();
        assert_eq!(same.difference, 0.0);
        assert!(same.interval.0 < 0.0 && same.interval.1 > 0.0);
        assert!((same.p_value - 1.0).abs() < 1e-9);
        assert_eq!(guardrail((1, 0), (1, 10)), None);
        // No errors anywhere: nothing to compare, p = 1.
        assert_eq!(guardrail((0, 50), (0, 50)).map(|g| g.p_value), Some(1.0));
    }

    #[test]
    fn users_count_once_requests_every_time() {
        let t = Tally::new(2);
        assert!(t.enroll(1, "u1"));
        assert!(!t.enroll(1, "u1"));
        assert!(t.enroll(0, "u2"));
        for _ in 0..5 {
            t.record(1, false, Duration::from_millis(3));
        }
        t.record(0, true, Duration::from_millis(9));
        assert_eq!(t.users(), vec![1, 1]);
        assert_eq!(t.assignments(), vec![1, 5]);
    }
}
