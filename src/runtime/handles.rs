//! Wiring the process-wide [`Metrics`] into a linked snapshot.
//!
//! [`resolve`] resolves, when a config is linked, every handle a request
//! can record into: one [`RequestSeries`] per (route, upstream, variant)
//! the route can answer with, the fallback's and `route="none"`'s series,
//! and each route's mirror counters. The request path then only indexes
//! into those tables and does atomic adds.
//!
//! Values kept by other components are copied in at scrape time, and
//! series of what left a config dropped, by [`super::scrape`].

use crate::compile::{Action, Config, FallbackAction, Route};
use crate::metrics::{
    Metrics, MirrorCounters, ROUTE_FALLBACK, ROUTE_NONE, RequestSeries, SeriesTarget,
};
use std::collections::HashMap;
use std::sync::Arc;

/// A route's metric handles, resolved at link time. `Default` (no handles)
/// records nothing: a runtime without [`Metrics`].
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

/// Snapshot-wide metric handles, resolved at link time (`Default`: none,
/// records nothing).
#[derive(Debug, Default)]
pub struct SnapshotMetrics {
    /// `route="none"`: nothing served (no route and no fallback, or the
    /// request failed before routing).
    pub none: Option<Arc<RequestSeries>>,
    /// `route="fallback"` with the fallback's upstream.
    pub fallback: Option<Arc<RequestSeries>>,
    /// Per route, in route order.
    pub routes: Box<[RouteMetrics]>,
}

/// Resolves every handle of `config` in `metrics`.
pub fn resolve(metrics: &Metrics, config: &Config) -> SnapshotMetrics {
    let upstreams = &config.upstreams;
    // Series share the labels of the config (route, upstream and variant
    // names) instead of copying them: 10,000 routes, 10,000 series.
    let mut labels = Labels {
        empty: Arc::from(""),
        stable: Arc::from("stable"),
        canary: Arc::from("canary"),
        upstreams: upstreams.iter().map(|u| u.name.clone()).collect(),
        targets: HashMap::new(),
    };
    let routes = config
        .routes
        .routes()
        .iter()
        .map(|route| route_metrics(metrics, route, &mut labels))
        .collect();
    let fallback = config.fallback.as_ref().map(|f| match &f.action {
        FallbackAction::Forward(id) => {
            metrics.series(ROUTE_FALLBACK, config.upstream_name(*id), "")
        }
        FallbackAction::Respond(_) => metrics.series(ROUTE_FALLBACK, "", ""),
    });
    SnapshotMetrics {
        none: Some(metrics.series(ROUTE_NONE, "", "")),
        fallback,
        routes,
    }
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
            series(Some(c.stable), &stable),
            series(Some(c.canary), &canary),
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
