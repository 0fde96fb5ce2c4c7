//! A linked snapshot: a compiled [`Config`] joined to the live state it
//! serves with (upstream runtimes, canary state, experiment tallies, metric
//! handles). Requests load one (an `ArcSwap` load) and keep it until they
//! finish; a reload swaps in a new one whole.

use super::ExperimentState;
use super::exposure::ExposureLog;
use super::handles::{RouteMetrics, SnapshotMetrics};
use crate::compile::Config;
use crate::split::canary::CanaryDef;
use crate::split::experiment::Mode;
use crate::split::{Canary, Experiment, Tally};
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
    pub(super) exposures: std::sync::Arc<ExposureLog>,
}

/// What a split reads of the live state: a canary's current weight, an
/// experiment's kill switch. The live snapshot when serving; the starting
/// state for `explain` on a config that is not running.
pub trait SplitState {
    /// The current percent on the canary of `def`.
    fn canary_weight(&self, def: &CanaryDef) -> f64;
    /// What the kill switch says about `exp`.
    fn experiment_mode(&self, exp: &Experiment) -> Mode;
}

/// Canaries and experiments as they start: every weight the definition's
/// first, every experiment running.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartingState;

impl SplitState for StartingState {
    fn canary_weight(&self, def: &CanaryDef) -> f64 {
        def.initial_weight()
    }

    fn experiment_mode(&self, _: &Experiment) -> Mode {
        Mode::Running
    }
}

impl SplitState for Snapshot {
    fn canary_weight(&self, def: &CanaryDef) -> f64 {
        self.canary(def.index)
            .map_or_else(|| def.initial_weight(), Canary::weight)
    }

    fn experiment_mode(&self, exp: &Experiment) -> Mode {
        self.experiments
            .get(exp.index)
            .map_or(Mode::Running, |s| s.mode())
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

    /// The live state of experiment `index`.
    pub fn experiment_state(&self, index: usize) -> Option<&ExperimentState> {
        self.experiments.get(index).map(|e| &**e)
    }

    /// The exposure log.
    pub fn exposures(&self) -> &ExposureLog {
        &self.exposures
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
