//! Scrape-time and reload-time bookkeeping of the metrics registry: values
//! kept by other components (experiment exposures, canary weight, state and
//! transitions, whether each endpoint is serving) are copied in by
//! [`refresh`]; [`after_reload`] counts a reload and drops the series of
//! whatever left the config.

use super::snapshot::Snapshot;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set while one scrape copies values in, so two scrapes do not both add
/// the same difference.
static REFRESHING: AtomicBool = AtomicBool::new(false);

/// Copies experiment exposures, canary weight, state and transitions, and
/// endpoint health (healthy and not ejected, at this moment) of `snapshot`
/// into `metrics`; call before rendering.
pub fn refresh(metrics: &Metrics, snapshot: &Snapshot) {
    if REFRESHING.swap(true, Ordering::Acquire) {
        // Another scrape is copying the same values right now.
        return;
    }
    let config = &snapshot.config;
    for e in &config.experiments {
        let Some(t) = snapshot.tally(e.index) else {
            continue;
        };
        for ((v, n), u) in e.variants.iter().zip(t.assignments()).zip(t.users()) {
            metrics.sync_experiment_assignments(&e.name, &v.name, n);
            metrics.set_experiment_users(&e.name, &v.name, u);
        }
    }
    for c in snapshot.canaries() {
        let name = &c.def().route;
        metrics.set_canary(name, c.weight(), c.state().as_str());
        for (to, n) in c.transitions() {
            metrics.sync_canary_transitions(name, to.as_str(), n);
        }
    }
    for (u, def) in snapshot.upstreams().iter().zip(&config.upstreams) {
        for (i, e) in def.endpoints.iter().enumerate() {
            metrics
                .endpoint_health(&def.name, &e.authority)
                .set(u.serving(i));
        }
    }
    metrics.sync_log_lines_dropped(crate::logging::dropped_lines());
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
pub fn after_reload(metrics: &Metrics, snapshot: Option<&Snapshot>, generation: u64) {
    metrics.reload_result(snapshot.is_some());
    let Some(s) = snapshot else { return };
    metrics.set_generation(generation);
    let handles = s.metrics();
    let live: Vec<(&str, &str, &str)> = handles
        .routes
        .iter()
        .flat_map(|r| r.arms.iter().chain(&r.direct))
        .chain(&handles.fallback)
        .map(|series| series.key())
        .collect();
    metrics.retain_routes(&live);
    let config = &s.config;
    let upstreams: Vec<(&str, Vec<&str>)> = config
        .upstreams
        .iter()
        .map(|u| {
            let eps = u.endpoints.iter().map(|e| e.authority.as_str()).collect();
            (&*u.name, eps)
        })
        .collect();
    metrics.retain_upstreams(&upstreams);
    let experiments: Vec<&str> = config.experiments.iter().map(|e| &*e.name).collect();
    metrics.retain_experiments(&experiments);
    let canaries: Vec<&str> = config.canaries.iter().map(|c| &*c.route).collect();
    metrics.retain_canaries(&canaries);
}
