//! What replicas write to the store, as JSON: a canary's shared control and
//! an experiment's kill-switch state (each with a revision, changed only by
//! compare-and-set), and each replica's guard windows and experiment counts
//! (one hash field per replica, stamped with when it was written).

use crate::split::SharedControl;
use crate::split::experiment::{Experiment, Mode};
use crate::split::latency::LAT_BUCKETS;
use crate::split::tally::{TallyCounts, VariantCounts};
use crate::split::window::ArmCounts;
use serde::{Deserialize, Serialize};

/// A canary's control in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CanaryRecord {
    /// Bumped by every transition.
    pub(crate) rev: u64,
    /// State, step, when it was entered, weight.
    pub(crate) control: SharedControl,
}

/// An experiment's kill-switch state in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExperimentRecord {
    /// Bumped by every action.
    pub(crate) rev: u64,
    /// `running`, `stopped` or `released`.
    pub(crate) state: String,
    /// The released variant's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

impl ExperimentRecord {
    /// The record of `mode` for experiment `e`.
    pub(crate) fn of(rev: u64, e: &Experiment, mode: Mode) -> Self {
        let variant = match mode {
            Mode::Released(i) => e.variants.get(i).map(|v| v.name.to_string()),
            _ => None,
        };
        ExperimentRecord {
            rev,
            state: mode.as_str().to_owned(),
            variant,
        }
    }

    /// The mode it says for experiment `e` (an unknown variant: running).
    pub(crate) fn mode(&self, e: &Experiment) -> Mode {
        match (self.state.as_str(), self.variant.as_deref()) {
            ("stopped", _) => Mode::Stopped,
            ("released", Some(v)) => e.variant_index(v).map_or(Mode::Running, Mode::Released),
            _ => Mode::Running,
        }
    }
}

/// One replica's guard window, for the fleet's sums.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WindowEntry {
    /// The canary record revision the window belongs to.
    pub(crate) rev: u64,
    /// When it was written, Unix milliseconds.
    pub(crate) at_ms: u64,
    /// The stable arm.
    pub(crate) stable: Counts,
    /// The canary arm.
    pub(crate) canary: Counts,
}

/// One replica's experiment counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TallyEntry {
    /// When it was written, Unix milliseconds.
    pub(crate) at_ms: u64,
    /// Requests the kill switch released.
    pub(crate) released: u64,
    /// Whether the replica's distinct-id set is past its size.
    pub(crate) saturated: bool,
    /// Per variant, in configuration order.
    pub(crate) variants: Vec<Counts>,
}

/// Requests, errors, users and a sparse latency histogram.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Counts {
    #[serde(default)]
    pub(crate) requests: u64,
    #[serde(default)]
    pub(crate) errors: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) users: u64,
    /// `[bucket, count]` for each non-empty latency bucket.
    #[serde(default)]
    pub(crate) latency: Vec<(usize, u64)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn sparse(buckets: &[u64]) -> Vec<(usize, u64)> {
    buckets
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (i, *n))
        .collect()
}

impl From<&ArmCounts> for Counts {
    fn from(a: &ArmCounts) -> Self {
        Counts {
            requests: a.requests,
            errors: a.errors,
            users: 0,
            latency: sparse(&a.latency),
        }
    }
}

impl Counts {
    /// Adds these counts to an arm's.
    pub(crate) fn add_to_arm(&self, a: &mut ArmCounts) {
        a.requests += self.requests;
        a.errors += self.errors;
        for &(i, n) in &self.latency {
            if let Some(b) = a.latency.get_mut(i) {
                *b += n;
            }
        }
    }

    fn variant(&self) -> VariantCounts {
        let mut latency = vec![0; LAT_BUCKETS];
        for &(i, n) in &self.latency {
            if let Some(b) = latency.get_mut(i) {
                *b += n;
            }
        }
        VariantCounts {
            users: self.users,
            requests: self.requests,
            errors: self.errors,
            latency,
        }
    }
}

impl TallyEntry {
    /// The entry of `counts`, written at `at_ms`.
    pub(crate) fn of(counts: &TallyCounts, at_ms: u64) -> Self {
        TallyEntry {
            at_ms,
            released: counts.released,
            saturated: counts.saturated,
            variants: counts
                .variants
                .iter()
                .map(|v| Counts {
                    requests: v.requests,
                    errors: v.errors,
                    users: v.users,
                    latency: sparse(&v.latency),
                })
                .collect(),
        }
    }

    /// The counts it holds.
    pub(crate) fn counts(&self) -> TallyCounts {
        TallyCounts {
            variants: self.variants.iter().map(Counts::variant).collect(),
            released: self.released,
            saturated: self.saturated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_survive_the_wire() {
        let mut latency = vec![0; LAT_BUCKETS];
        latency[3] = 7;
        latency[200] = 1;
        let counts = TallyCounts {
            variants: vec![
                VariantCounts {
                    users: 5,
                    requests: 8,
                    errors: 1,
                    latency,
                },
                VariantCounts {
                    users: 0,
                    requests: 0,
                    errors: 0,
                    latency: vec![0; LAT_BUCKETS],
                },
            ],
            released: 2,
            saturated: false,
        };
        let text = serde_json::to_string(&TallyEntry::of(&counts, 9)).unwrap();
        let back: TallyEntry = serde_json::from_str(&text).unwrap();
        assert_eq!(back.counts(), counts);
        assert_eq!(back.at_ms, 9);
        // Sparse: two latency buckets, not LAT_BUCKETS.
        assert!(text.len() < 200, "{text}");
    }

    #[test]
    fn window_counts_add_up_from_the_wire() {
        let mut a = ArmCounts {
            requests: 4,
            errors: 1,
            ..Default::default()
        };
        a.latency[10] = 4;
        let c = Counts::from(&a);
        let mut sum = ArmCounts::default();
        c.add_to_arm(&mut sum);
        c.add_to_arm(&mut sum);
        assert_eq!(sum.requests, 8);
        assert_eq!(sum.errors, 2);
        assert_eq!(sum.latency[10], 8);
    }
}
