//! What outlives snapshots: upstream runtimes (pools, balancer, in-flight
//! counts), canary state, experiment tallies and the metrics registry, each
//! keyed by the definition it belongs to. [`Runtime::link`] joins a compiled
//! [`Config`] to that state and yields the [`Snapshot`] that serves; a
//! reload is compile (off the request path) + link + one swap, and
//! unchanged upstreams, canaries and experiments keep their state across it.

pub mod handles;
pub mod live;
mod registry;
pub mod scrape;
pub mod snapshot;

pub use live::Live;
pub use snapshot::{CanaryWeights, Snapshot, StartingWeights};

use crate::compile::Config;
use crate::metrics::Metrics;
use crate::split::identity::Identity;
use crate::split::{CanaryRegistry, Experiment, Tally};
use crate::upstream::Upstream;
use crate::upstream::def::UpstreamDef;
use registry::Registry;
use std::sync::Arc;

/// Live state of one experiment definition.
#[derive(Debug)]
pub struct ExperimentState {
    /// The definition's identity: the state is reused while it holds.
    identity: Identity,
    /// Exposures counted.
    pub tally: Tally,
}

/// The long-lived state snapshots are linked to.
#[derive(Debug)]
pub struct Runtime {
    upstreams: Registry<Upstream>,
    canaries: Arc<CanaryRegistry>,
    experiments: Registry<ExperimentState>,
    metrics: Option<Arc<Metrics>>,
    /// Where active health checks run: set only for a runtime that serves
    /// (`run`, `demo`).
    checks: Option<tokio::runtime::Handle>,
}

impl Runtime {
    /// A runtime recording into `metrics` (`None`: nothing is recorded),
    /// with no active health checks (benchmarks, tools).
    pub fn new(metrics: Option<Arc<Metrics>>) -> Arc<Runtime> {
        Arc::new(Runtime {
            upstreams: Registry::default(),
            canaries: Arc::new(CanaryRegistry::new()),
            experiments: Registry::default(),
            metrics,
            checks: None,
        })
    }

    /// A runtime that serves: as [`Runtime::new`], and every upstream with
    /// `health_check` gets its active checks on the current tokio runtime
    /// (for as long as a snapshot uses it). Outside a tokio runtime no
    /// check runs (and a warning says so).
    pub fn serving(metrics: Option<Arc<Metrics>>) -> Arc<Runtime> {
        let checks = tokio::runtime::Handle::try_current()
            .map_err(|e| tracing::warn!("no active health checks: {e}"))
            .ok();
        Arc::new(Runtime {
            upstreams: Registry::default(),
            canaries: Arc::new(CanaryRegistry::new()),
            experiments: Registry::default(),
            metrics,
            checks,
        })
    }

    /// The canary registry (for the step driver and the `state_file`).
    pub fn canaries(&self) -> &Arc<CanaryRegistry> {
        &self.canaries
    }

    /// The process's metrics, if recording.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Every live upstream runtime.
    pub fn live_upstreams(&self) -> Vec<Arc<Upstream>> {
        self.upstreams.all()
    }

    /// Joins `config` to this runtime: upstreams, canaries and experiments
    /// whose definitions are unchanged get their existing state, new ones
    /// fresh state; metric handles are resolved.
    pub fn link(&self, config: Config) -> Snapshot {
        let upstreams = config.upstreams.iter().map(|d| self.upstream(d)).collect();
        let now = tokio::time::Instant::now();
        let canaries = config
            .canaries
            .iter()
            .map(|d| self.canaries.attach_shared(d.clone(), now))
            .collect();
        let experiments = config
            .experiments
            .iter()
            .map(|e| self.experiment(e))
            .collect();
        let metrics = self
            .metrics
            .as_deref()
            .map(|m| handles::resolve(m, &config))
            .unwrap_or_default();
        Snapshot {
            config,
            upstreams,
            canaries,
            experiments,
            metrics,
        }
    }

    fn upstream(&self, def: &UpstreamDef) -> Arc<Upstream> {
        let before = self.upstreams.live(&def.name);
        let (upstream, new) =
            self.upstreams
                .get_or_make(&def.name, |u| u.def == *def, || Upstream::new(def.clone()));
        if !new {
            // The same runtime, its health, ejections and checks.
            return upstream;
        }
        if before.is_some() {
            tracing::info!(
                target: "upstream",
                upstream = %def.name,
                reason = "its definition changed",
                "upstream starts afresh: new pools, every endpoint healthy until checked, no ejection"
            );
        }
        if let Some(m) = &self.metrics {
            let name = &def.name;
            upstream.record_into(m.upstream_errors(name), |endpoint| {
                m.endpoint_counters(name, endpoint)
            });
        }
        if let Some(rt) = &self.checks {
            upstream.start_health_checks(rt);
        }
        upstream
    }

    fn experiment(&self, e: &Experiment) -> Arc<ExperimentState> {
        let (state, _) = self.experiments.get_or_make(
            &e.name,
            |s| s.identity == *e.identity() && s.tally.fits(e.variants.len()),
            || ExperimentState {
                identity: *e.identity(),
                tally: Tally::new(e.variants.len()),
            },
        );
        state
    }
}
