//! A linked snapshot: a compiled [`Config`] joined to the live state it
//! serves with (upstream runtimes, canary state, experiment tallies, metric
//! handles). Requests load one (an `ArcSwap` load) and keep it until they
//! finish; a reload swaps in a new one whole.

use super::ExperimentState;
use super::handles::{RouteMetrics, SnapshotMetrics};
use crate::compile::Config;
use crate::split::canary::CanaryDef;
use crate::split::{Canary, Tally};
use crate::upstream::Upstream;
use crate::upstream::def::UpstreamId;
use std::sync::Arc;

/// A compiled config with the live state it serves with.
#[derive(Debug)]
pub struct Snapshot {
    /// What was compiled.
    pub config: Config,
    pub(super) upstreams: Box<[Arc<Upstream>]>,
    pub(super) canaries: Box<[Canary]>,
    pub(super) experiments: Box<[Arc<ExperimentState>]>,
    pub(super) metrics: SnapshotMetrics,
}

/// Where a split reads a canary's current weight: the live state when
/// serving, the definition's starting weight for `explain` on a config
/// that is not running.
pub trait CanaryWeights {
    /// The current percent on the canary of `def`.
    fn canary_weight(&self, def: &CanaryDef) -> f64;
}

/// Canaries as they start: every weight is the definition's first.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartingWeights;

impl CanaryWeights for StartingWeights {
    fn canary_weight(&self, def: &CanaryDef) -> f64 {
        def.initial_weight()
    }
}

impl CanaryWeights for Snapshot {
    fn canary_weight(&self, def: &CanaryDef) -> f64 {
        self.canary(def.index)
            .map_or_else(|| def.initial_weight(), Canary::weight)
    }
}

impl Snapshot {
    /// The runtime of upstream `id`.
    pub fn upstream(&self, id: UpstreamId) -> Option<&Arc<Upstream>> {
        self.upstreams.get(id)
    }

    /// Every upstream runtime, by [`UpstreamId`].
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The live canary at `index` (a [`CanaryDef::index`]).
    pub fn canary(&self, index: usize) -> Option<&Canary> {
        self.canaries.get(index)
    }

    /// Every live canary, in route order.
    pub fn canaries(&self) -> &[Canary] {
        &self.canaries
    }

    /// The canary of route `name`.
    pub fn canary_named(&self, name: &str) -> Option<&Canary> {
        self.canaries.iter().find(|c| &*c.def().route == name)
    }

    /// The tally of experiment `index` (an `Experiment::index`).
    pub fn tally(&self, index: usize) -> Option<&Tally> {
        self.experiments.get(index).map(|e| &e.tally)
    }

    /// The metric handles of route `i`.
    pub fn route_metrics(&self, i: usize) -> Option<&RouteMetrics> {
        self.metrics.routes.get(i)
    }

    /// Every metric handle of this snapshot.
    pub fn metrics(&self) -> &SnapshotMetrics {
        &self.metrics
    }
}
