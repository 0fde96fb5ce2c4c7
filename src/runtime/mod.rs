//! What outlives snapshots: upstream runtimes (pools, balancer, in-flight
//! counts), canary state, experiment tallies and the metrics registry, each
//! keyed by the definition it belongs to. [`Runtime::link`] joins a compiled
//! [`Config`] to that state and yields the [`Snapshot`] that serves; a
//! reload is compile (off the request path) + link + one swap, and
//! unchanged upstreams, canaries and experiments keep their state across it.

pub mod experiments;
pub mod exposure;
pub mod handles;
pub mod live;
mod registry;
pub mod scrape;
pub mod snapshot;
pub mod timelines;

pub use experiments::{ExperimentAction, ExperimentActionError, ExperimentState};
pub use exposure::ExposureLog;
pub use live::Live;
pub use snapshot::{Snapshot, SplitState, StartingState};

use crate::compile::Config;
use crate::metrics::Metrics;
use crate::split::persist::StateStore;
use crate::split::{CanaryRegistry, Experiment};
use crate::upstream::Upstream;
use crate::upstream::def::UpstreamDef;
use arc_swap::ArcSwapOption;
use registry::Registry;
use std::sync::Arc;

/// The long-lived state snapshots are linked to.
#[derive(Debug)]
pub struct Runtime {
    upstreams: Registry<Upstream>,
    canaries: Arc<CanaryRegistry>,
    experiments: Registry<ExperimentState>,
    exposures: Arc<ExposureLog>,
    /// The `state_file`, once [`Runtime::use_state_file`] ran.
    store: ArcSwapOption<StateStore>,
    metrics: Option<Arc<Metrics>>,
    /// Where active health checks run: set only for a runtime that serves
    /// (`run`, `demo`).
    checks: Option<tokio::runtime::Handle>,
}

impl Runtime {
    /// A runtime recording into `metrics` (`None`: nothing is recorded),
    /// with no active health checks (benchmarks, tools).
    pub fn new(metrics: Option<Arc<Metrics>>) -> Arc<Runtime> {
        Arc::new(Self::build(metrics, None))
    }

    fn build(metrics: Option<Arc<Metrics>>, checks: Option<tokio::runtime::Handle>) -> Runtime {
        let counters = metrics.as_ref().map(|m| m.exposure_counters());
        Runtime {
            upstreams: Registry::default(),
            canaries: Arc::new(CanaryRegistry::new()),
            experiments: Registry::default(),
            exposures: Arc::new(ExposureLog::new(counters)),
            store: ArcSwapOption::empty(),
            metrics,
            checks,
        }
    }

    /// A runtime that serves: as [`Runtime::new`], and every upstream with
    /// `health_check` gets its active checks on the current tokio runtime
    /// (for as long as a snapshot uses it). Outside a tokio runtime no
    /// check runs (and a warning says so).
    pub fn serving(metrics: Option<Arc<Metrics>>) -> Arc<Runtime> {
        let checks = tokio::runtime::Handle::try_current()
            .map_err(|e| tracing::warn!("no active health checks: {e}"))
            .ok();
        Arc::new(Self::build(metrics, checks))
    }

    /// Keeps canary and experiment state in `path` from now on (SPEC 4):
    /// reads it, gives every live canary and experiment whose definition is
    /// unchanged its saved state, and writes the file. An unreadable or
    /// invalid file is logged and replaced.
    pub fn use_state_file(&self, path: &std::path::Path) {
        let store = Arc::new(StateStore::open(path).unwrap_or_else(|e| {
            tracing::warn!("{e}; canaries and experiments start afresh");
            StateStore::empty(path)
        }));
        self.store.store(Some(store.clone()));
        self.canaries.use_store(store, tokio::time::Instant::now());
    }

    /// Waits until the `state_file` and the exposure log hold every change
    /// made so far (at exit).
    pub fn flush(&self) {
        self.flush_state();
        self.exposures.flush(std::time::Duration::from_secs(2));
    }

    /// Waits until the `state_file` holds every change made so far (after
    /// an operator action). Blocks: call it off the serving threads.
    pub fn flush_state(&self) {
        if let Some(store) = self.store.load_full() {
            store.flush();
        }
    }

    /// The exposure log.
    pub fn exposures(&self) -> &Arc<ExposureLog> {
        &self.exposures
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
        // SPEC 3.1: every linked config (start-up, reload) reopens the log.
        self.exposures
            .configure(config.settings.exposure_log.clone());
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
            exposures: self.exposures.clone(),
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
        let (state, new) = self.experiments.get_or_make(
            &e.name,
            |s| s.identity == *e.identity() && s.tally.fits(e.variants.len()),
            || ExperimentState::new(e),
        );
        if new {
            state.use_store(e, self.store.load_full());
        }
        state
    }
}
