//! Wiring the process-wide [`Metrics`] into compiled snapshots.
//!
//! [`attach`] resolves, when a config is compiled, every handle a request
//! can record into: one [`RequestSeries`] per (route, upstream, variant)
//! the route can answer with, the fallback's and `route="none"`'s series,
//! each upstream's error counters and each route's mirror counters. The
//! request path then only indexes into those tables and does atomic adds.
//!
//! Values kept by other components (experiment exposures, canary weight,
//! state and transitions) are copied into the registry at scrape time by
//! [`refresh`]; [`after_reload`] counts a reload and drops the series of
//! whatever left the config.

use crate::forward::ForwardError;
use crate::metrics::{
    Metrics, MirrorCounters, ROUTE_FALLBACK, ROUTE_NONE, RequestSeries, SeriesTarget,
    UpstreamErrors,
};
use crate::router::{Action, FallbackAction, Route, Snapshot};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A route's metric handles, resolved at compile time. `Default` (no
/// handles) records nothing: configs compiled without [`Metrics`] (`check`,
/// `explain`, hand-built test snapshots).
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// `(route, "", "")`: `respond` and `redirect` answers.
    pub direct: Option<Arc<RequestSeries>>,
    /// One series per arm. `to`: `[to]`; experiment: `[not enrolled (the
    /// route's to), variant 0, variant 1, …]`; canary: `[stable, canary]`.
    pub arms: Box<[Arc<RequestSeries>]>,
    /// The `mirror` counters, when the route mirrors.
    pub mirror: Option<MirrorCounters>,
}

/// Snapshot-wide metric handles, resolved at compile time (`Default`:
/// none, records nothing).
#[derive(Debug, Default)]
pub struct SnapshotMetrics {
    /// `route="none"`: nothing served (no route and no fallback, or the
    /// request failed before routing).
    pub none: Option<Arc<RequestSeries>>,
    /// `route="fallback"` with the fallback's upstream.
    pub fallback: Option<Arc<RequestSeries>>,
    /// Error counters by [`crate::router::UpstreamId`].
    pub upstream_errors: Box<[Arc<UpstreamErrors>]>,
}

impl SnapshotMetrics {
    /// Counts a forwarding failure of upstream `id` under its SPEC 9 kind
    /// (failures that are not the upstream's, such as 413, are not counted).
    pub fn upstream_error(&self, id: usize, err: &ForwardError) {
        let Some(e) = self.upstream_errors.get(id) else {
            return;
        };
        match err {
            ForwardError::UpstreamConnect(_) => e.connect(),
            ForwardError::UpstreamTimeout(_) => e.timeout(),
            ForwardError::UpstreamReset(_) => e.reset(),
            ForwardError::NoHealthyUpstream(_) => e.no_healthy(),
            _ => {}
        }
    }
}

/// Resolves every handle of `snapshot` in `metrics` and marks every
/// endpoint healthy (there are no health checks yet).
pub fn attach(metrics: &Metrics, snapshot: &mut Snapshot) {
    let upstreams = &snapshot.upstreams;
    let name = |id: usize| upstreams.get(id).map_or("", |u| &*u.def.name);
    // Series share the labels of the config (route, upstream and variant
    // names) instead of copying them: 10,000 routes, 10,000 series.
    let mut labels = Labels {
        empty: Arc::from(""),
        stable: Arc::from("stable"),
        canary: Arc::from("canary"),
        upstreams: upstreams.iter().map(|u| u.def.name.clone()).collect(),
        targets: HashMap::new(),
    };
    for route in &mut snapshot.routes {
        route.metrics = route_metrics(metrics, route, &mut labels);
    }
    let fallback = snapshot.fallback.as_ref().map(|f| match &f.action {
        FallbackAction::Forward(id) => metrics.series(ROUTE_FALLBACK, name(*id), ""),
        FallbackAction::Respond(_) => metrics.series(ROUTE_FALLBACK, "", ""),
    });
    for u in upstreams {
        for e in &u.def.endpoints {
            metrics.endpoint_health(&u.def.name, &e.authority).set(true);
        }
    }
    snapshot.metrics = SnapshotMetrics {
        none: Some(metrics.series(ROUTE_NONE, "", "")),
        fallback,
        upstream_errors: upstreams
            .iter()
            .map(|u| Arc::new(metrics.upstream_errors(&u.def.name)))
            .collect(),
    };
}

/// Label values shared by the series of one config.
struct Labels {
    empty: Arc<str>,
    stable: Arc<str>,
    canary: Arc<str>,
    /// Upstream names by [`crate::router::UpstreamId`].
    upstreams: Vec<Arc<str>>,
    /// (upstream, variant) labels by upstream (`None`: `""`) and the
    /// address of the variant name.
    targets: HashMap<(Option<usize>, usize), Arc<SeriesTarget>>,
}

impl Labels {
    fn upstream(&self, id: usize) -> &str {
        self.upstreams.get(id).map_or("", |u| u)
    }

    /// The shared labels of `upstream` (`None`: `""`) and `variant` (one
    /// of this config's strings, kept alive meanwhile: keyed by address).
    fn target(&mut self, upstream: Option<usize>, variant: &Arc<str>) -> Arc<SeriesTarget> {
        let key = (upstream, Arc::as_ptr(variant).cast::<u8>() as usize);
        let up = upstream
            .and_then(|id| self.upstreams.get(id))
            .unwrap_or(&self.empty)
            .clone();
        self.targets
            .entry(key)
            .or_insert_with(|| Arc::new(SeriesTarget::shared(up, variant.clone())))
            .clone()
    }
}

fn route_metrics(metrics: &Metrics, route: &Route, labels: &mut Labels) -> RouteMetrics {
    let r = &route.name;
    let none = labels.empty.clone();
    let (stable, canary) = (labels.stable.clone(), labels.canary.clone());
    let mut series = |up: Option<usize>, variant: &Arc<str>| {
        metrics.series_shared(r, &labels.target(up, variant))
    };
    let arms: Vec<Arc<RequestSeries>> = match &route.action {
        Action::Forward(id) => vec![series(Some(*id), &none)],
        Action::Experiment {
            default,
            experiment,
        } => {
            let mut arms = Vec::with_capacity(1 + experiment.variants.len());
            arms.push(series(Some(*default), &none));
            for v in &experiment.variants {
                arms.push(series(Some(v.upstream.unwrap_or(*default)), &v.name));
            }
            arms
        }
        Action::Canary(c) => vec![
            series(Some(c.def.stable), &stable),
            series(Some(c.def.canary), &canary),
        ],
        Action::Respond(_) | Action::Redirect(_) => Vec::new(),
    };
    let direct = matches!(route.action, Action::Respond(_) | Action::Redirect(_))
        .then(|| series(None, &none));
    let mirror = route
        .forward
        .mirror
        .as_ref()
        .map(|m| metrics.mirror(r, labels.upstream(m.upstream)));
    RouteMetrics {
        direct,
        arms: arms.into(),
        mirror,
    }
}

/// Set while one scrape copies values in, so two scrapes do not both add
/// the same difference.
static REFRESHING: AtomicBool = AtomicBool::new(false);

/// Copies experiment exposures and canary weight, state and transitions
/// of `snapshot` into `metrics`; call before rendering.
pub fn refresh(metrics: &Metrics, snapshot: &Snapshot) {
    if REFRESHING.swap(true, Ordering::Acquire) {
        // Another scrape is copying the same values right now.
        return;
    }
    for e in &snapshot.experiments {
        for (v, n) in e.variants.iter().zip(e.assignments()) {
            metrics.sync_experiment_assignments(&e.name, &v.name, n);
        }
    }
    for r in &snapshot.routes {
        if let Action::Canary(c) = &r.action {
            metrics.set_canary(&r.name, c.weight(), c.state());
            for (to, n) in c.transitions() {
                metrics.sync_canary_transitions(&r.name, to, n);
            }
        }
    }
    REFRESHING.store(false, Ordering::Release);
}

/// [`refresh`], then the whole exposition.
pub fn render(metrics: &Metrics, snapshot: &Snapshot) -> String {
    refresh(metrics, snapshot);
    metrics.render()
}

/// Counts a reload (`snapshot`: the newly active config on success) and,
/// on success, sets the generation and drops series of routes, upstreams,
/// experiments and canaries that are gone.
pub fn after_reload(metrics: Option<&Metrics>, snapshot: Option<&Snapshot>, generation: u64) {
    let Some(m) = metrics else { return };
    m.reload_result(snapshot.is_some());
    let Some(s) = snapshot else { return };
    m.set_generation(generation);
    let live: Vec<(&str, &str, &str)> = s
        .routes
        .iter()
        .flat_map(|r| r.metrics.arms.iter().chain(&r.metrics.direct))
        .chain(&s.metrics.fallback)
        .map(|series| series.key())
        .collect();
    m.retain_routes(&live);
    m.retain_upstreams(&s.upstreams);
    let experiments: Vec<&str> = s.experiments.iter().map(|e| &*e.name).collect();
    m.retain_experiments(&experiments);
    let canaries: Vec<&str> = s
        .routes
        .iter()
        .filter(|r| matches!(r.action, Action::Canary(_)))
        .map(|r| &*r.name)
        .collect();
    m.retain_canaries(&canaries);
}
