//! What an experiment has counted: exposures per variant. Kept by the
//! runtime for one experiment definition (by identity), so the counts
//! survive reloads that leave the definition unchanged (SPEC 7).

use super::experiment::Experiment;
use super::stats::{SRM_THRESHOLD, srm_p_value};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Exposure counts of one experiment definition.
#[derive(Debug)]
pub struct Tally {
    assignments: Box<[AtomicU64]>,
}

/// `/experiments` data for one experiment.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentStats {
    /// The experiment's name.
    pub name: String,
    /// Per variant, in configuration order.
    pub variants: Vec<VariantStats>,
    /// Exposures counted over every variant.
    pub total: u64,
    /// Chi-square goodness-of-fit p-value of the counts against the shares
    /// (`None` before two arms with a share have counts).
    pub p_value: Option<f64>,
    /// `p_value < 0.001`.
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
}

impl Tally {
    /// Zero counts for an experiment with `variants` variants.
    pub fn new(variants: usize) -> Self {
        Tally {
            assignments: (0..variants).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether this tally fits an experiment with `variants` variants.
    pub fn fits(&self, variants: usize) -> bool {
        self.assignments.len() == variants
    }

    /// Counts one enrolled request of variant `i` (forced requests are
    /// not counted).
    pub fn record(&self, i: usize) {
        if let Some(c) = self.assignments.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Exposures counted per variant, in variant order.
    pub fn assignments(&self) -> Vec<u64> {
        self.assignments
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Variants, shares, counts and the SRM test, for `/experiments`.
    pub fn stats(&self, exp: &Experiment) -> ExperimentStats {
        let counts = self.assignments();
        let p_value = srm_p_value(&counts, &exp.shares());
        ExperimentStats {
            name: exp.name.to_string(),
            variants: exp
                .variants
                .iter()
                .zip(&counts)
                .map(|(v, c)| VariantStats {
                    name: v.name.to_string(),
                    share: v.weight,
                    assignments: *c,
                })
                .collect(),
            total: counts.iter().sum(),
            p_value,
            srm: p_value.is_some_and(|p| p < SRM_THRESHOLD),
        }
    }
}
