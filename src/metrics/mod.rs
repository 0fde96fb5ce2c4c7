//! Prometheus metrics (SPEC 9): every name as a constant, a process-wide
//! [`Metrics`] registry, and per-config handles resolved at compile time.
//!
//! The request path only ever touches handles that were resolved when a
//! config was compiled ([`RequestSeries`], [`UpstreamErrors`],
//! [`MirrorCounters`], …): recording is a few relaxed atomic adds, with
//! no lock, no hash lookup and no allocation.
//!
//! `pointsman_requests_total` has a dynamic `code` label, so it and
//! `pointsman_request_duration_seconds` are not `prometheus` vecs (whose
//! `with_label_values` hashes and locks) but atomics owned by each
//! [`RequestSeries`], exported by a custom [`Collector`] that builds the
//! metric families at scrape time. Status codes seen in practice
//! ([`COMMON_CODES`]) have a fixed slot; any other code goes to a table of
//! every code 100–999 that a series allocates once, the first time it sees
//! such a code.
//!
//! Label values come only from config names, status codes and fixed sets.
//! Series of routes, upstreams, experiments and canaries that left the
//! config are dropped with the `retain_*` methods after a reload.

mod handles;
mod names;
mod series;

pub use handles::{
    ConnectionGuard, EndpointCounters, EndpointHealth, ListenerConnections, MirrorCounters,
    UpstreamErrors,
};
pub use names::*;
pub use series::{RequestSeries, SeriesTarget};

use crate::yielding::YieldingWriter;
use prometheus::core::Collector;
use prometheus::proto::LabelPair;
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use series::{RequestCollector, RequestTable};
use std::collections::HashSet;
use std::sync::Arc;

/// The process-wide metrics: one per process, shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestTable>,
    upstream_errors: IntCounterVec,
    endpoint_healthy: IntGaugeVec,
    ejections: IntCounterVec,
    health_checks: IntCounterVec,
    experiment_assignments: IntCounterVec,
    canary_weight: GaugeVec,
    canary_state: IntGaugeVec,
    canary_transitions: IntCounterVec,
    reload_success: IntCounter,
    reload_failure: IntCounter,
    config_generation: IntGauge,
    connections: IntGaugeVec,
    mirror: IntCounterVec,
    experiment_users: IntGaugeVec,
    exposures_logged: IntCounter,
    exposures_dropped: IntCounter,
    log_lines_dropped: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric. Fails only if a metric definition
    /// is invalid, which the unit tests rule out.
    pub fn new() -> prometheus::Result<Arc<Metrics>> {
        let registry = Registry::new();
        let requests = Arc::new(RequestTable::new()?);
        registry.register(Box::new(RequestCollector(requests.clone())))?;

        fn counter_vec(
            r: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> prometheus::Result<IntCounterVec> {
            let v = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(v.clone()))?;
            Ok(v)
        }
        fn gauge_vec(
            r: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> prometheus::Result<IntGaugeVec> {
            let v = IntGaugeVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(v.clone()))?;
            Ok(v)
        }

        let upstream_errors = counter_vec(
            &registry,
            UPSTREAM_ERRORS_TOTAL,
            "Upstream failures by kind (connect, timeout, reset, no_healthy).",
            &["upstream", "kind"],
        )?;
        let endpoint_healthy = gauge_vec(
            &registry,
            UPSTREAM_ENDPOINT_HEALTHY,
            "1 if the endpoint is healthy and not ejected, else 0.",
            &["upstream", "endpoint"],
        )?;
        let ejections = counter_vec(
            &registry,
            UPSTREAM_EJECTIONS_TOTAL,
            "Endpoints ejected after consecutive upstream faults (outlier).",
            &["upstream", "endpoint"],
        )?;
        let health_checks = counter_vec(
            &registry,
            HEALTH_CHECKS_TOTAL,
            "Active health checks by result (pass, fail).",
            &["upstream", "endpoint", "result"],
        )?;
        let experiment_assignments = counter_vec(
            &registry,
            EXPERIMENT_ASSIGNMENTS_TOTAL,
            "Requests enrolled in an experiment variant (exposures; forced requests excluded).",
            &["experiment", "variant"],
        )?;
        let canary_weight = GaugeVec::new(
            Opts::new(CANARY_WEIGHT_PERCENT, "Current canary weight in percent."),
            &["canary"],
        )?;
        registry.register(Box::new(canary_weight.clone()))?;
        let canary_state = gauge_vec(
            &registry,
            CANARY_STATE,
            "1 for the canary's current state, 0 for the others.",
            &["canary", "state"],
        )?;
        let canary_transitions = counter_vec(
            &registry,
            CANARY_TRANSITIONS_TOTAL,
            "Canary state changes by target state.",
            &["canary", "to"],
        )?;
        let reloads = counter_vec(
            &registry,
            CONFIG_RELOADS_TOTAL,
            "Config reloads by result (success, failure).",
            &["result"],
        )?;
        let reload_success = reloads.get_metric_with_label_values(&["success"])?;
        let reload_failure = reloads.get_metric_with_label_values(&["failure"])?;
        let config_generation =
            IntGauge::new(CONFIG_GENERATION, "Generation of the active config.")?;
        registry.register(Box::new(config_generation.clone()))?;
        let connections = gauge_vec(
            &registry,
            CONNECTIONS_ACTIVE,
            "Open downstream connections per public listener.",
            &["listener"],
        )?;
        let mirror = counter_vec(
            &registry,
            MIRROR_REQUESTS_TOTAL,
            "Mirrored (shadow) requests by result (sent, failed, skipped).",
            &["route", "upstream", "result"],
        )?;

        let experiment_users = gauge_vec(
            &registry,
            EXPERIMENT_USERS,
            "Distinct users enrolled in an experiment variant.",
            &["experiment", "variant"],
        )?;
        let exposures_logged =
            IntCounter::new(EXPOSURES_LOGGED_TOTAL, "Exposure log lines written.")?;
        registry.register(Box::new(exposures_logged.clone()))?;
        let exposures_dropped = IntCounter::new(
            EXPOSURES_DROPPED_TOTAL,
            "Exposure log lines dropped (queue full or write failed).",
        )?;
        registry.register(Box::new(exposures_dropped.clone()))?;
        let log_lines_dropped = IntCounter::new(
            LOG_LINES_DROPPED_TOTAL,
            "Log lines dropped because the log queue was full (its reader stalled).",
        )?;
        registry.register(Box::new(log_lines_dropped.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "What binary is running (always 1)."),
            &["version", "commit"],
        )?;
        build_info
            .get_metric_with_label_values(&[crate::version::VERSION, crate::version::COMMIT])?
            .set(1);
        registry.register(Box::new(build_info))?;

        Ok(Arc::new(Metrics {
            registry,
            requests,
            upstream_errors,
            endpoint_healthy,
            ejections,
            health_checks,
            experiment_assignments,
            canary_weight,
            canary_state,
            canary_transitions,
            reload_success,
            reload_failure,
            config_generation,
            connections,
            mirror,
            experiment_users,
            exposures_logged,
            exposures_dropped,
            log_lines_dropped,
        }))
    }

    /// The request counters and duration histogram of one (route, upstream,
    /// variant); call at compile time. The same labels give the same series
    /// until [`Metrics::retain_routes`] drops it.
    pub fn series(&self, route: &str, upstream: &str, variant: &str) -> Arc<RequestSeries> {
        self.requests.series((route, upstream, variant), || {
            (route.into(), Arc::new(SeriesTarget::new(upstream, variant)))
        })
    }

    /// [`Metrics::series`] with labels the caller already holds: a new
    /// series shares them instead of copying (a config with 10,000 routes
    /// resolves 10,000 series whose route names are already in its routes,
    /// and whose (upstream, variant) pairs repeat, issue 6).
    pub fn series_shared(
        &self,
        route: &Arc<str>,
        target: &Arc<SeriesTarget>,
    ) -> Arc<RequestSeries> {
        let labels = (&**route, &*target.upstream, &*target.variant);
        self.requests
            .series(labels, || (route.clone(), target.clone()))
    }

    /// The error counters of one upstream; call at compile time.
    pub fn upstream_errors(&self, upstream: &str) -> UpstreamErrors {
        let [connect, timeout, reset, no_healthy] = UPSTREAM_ERROR_KINDS
            .map(|kind| self.upstream_errors.with_label_values(&[upstream, kind]));
        UpstreamErrors {
            connect,
            timeout,
            reset,
            no_healthy,
        }
    }

    /// The health gauge of one endpoint, for the health checker to set.
    pub fn endpoint_health(&self, upstream: &str, endpoint: &str) -> EndpointHealth {
        EndpointHealth(
            self.endpoint_healthy
                .with_label_values(&[upstream, endpoint]),
        )
    }

    /// The ejection and health-check counters of one endpoint; call when
    /// an upstream runtime is made.
    pub fn endpoint_counters(&self, upstream: &str, endpoint: &str) -> EndpointCounters {
        let [checks_pass, checks_fail] = HEALTH_CHECK_RESULTS.map(|result| {
            self.health_checks
                .with_label_values(&[upstream, endpoint, result])
        });
        EndpointCounters {
            ejections: self.ejections.with_label_values(&[upstream, endpoint]),
            checks_pass,
            checks_fail,
        }
    }

    /// The assignment counter of one experiment variant; call at compile time
    /// and `inc()` per enrolled request.
    pub fn experiment_assignments(&self, experiment: &str, variant: &str) -> IntCounter {
        self.experiment_assignments
            .with_label_values(&[experiment, variant])
    }

    /// Sets a canary's weight and state gauges (the state gauge is 1 for
    /// `state` and 0 for the other states).
    pub fn set_canary(&self, canary: &str, weight_percent: f64, state: &str) {
        self.canary_weight
            .with_label_values(&[canary])
            .set(weight_percent);
        for s in CANARY_STATES {
            self.canary_state
                .with_label_values(&[canary, s])
                .set(i64::from(s == state));
        }
    }

    /// Counts a canary state change to `to` (one of [`CANARY_STATES`]).
    pub fn canary_transition(&self, canary: &str, to: &str) {
        self.canary_transitions
            .with_label_values(&[canary, to])
            .inc();
    }

    /// Counts a config reload.
    pub fn reload_result(&self, success: bool) {
        if success {
            self.reload_success.inc();
        } else {
            self.reload_failure.inc();
        }
    }

    /// Sets the generation of the active config.
    pub fn set_generation(&self, generation: u64) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// The connection gauge of one public listener (`bind` as written).
    pub fn listener(&self, bind: &str) -> ListenerConnections {
        ListenerConnections(self.connections.with_label_values(&[bind]))
    }

    /// The mirror counters of one route and its mirror upstream; call at
    /// compile time.
    pub fn mirror(&self, route: &str, upstream: &str) -> MirrorCounters {
        let [sent, failed, skipped] = ["sent", "failed", "skipped"]
            .map(|result| self.mirror.with_label_values(&[route, upstream, result]));
        MirrorCounters {
            sent,
            failed,
            skipped,
        }
    }

    /// Drops request, duration and mirror series that are not in the new
    /// config. `live` lists every (route, upstream, variant) the config
    /// records requests under; series of [`ROUTE_FALLBACK`] and
    /// [`ROUTE_NONE`] are always kept, mirror series are kept while their
    /// route is live. Call after the new snapshot is active: counts that
    /// requests of the old snapshot record afterwards are not exported.
    pub fn retain_routes(&self, live: &[(&str, &str, &str)]) {
        let triples: HashSet<(&str, &str, &str)> = live.iter().copied().collect();
        let routes: HashSet<&str> = live.iter().map(|t| t.0).collect();
        self.requests.retain(|s| {
            matches!(&*s.route, ROUTE_FALLBACK | ROUTE_NONE) || triples.contains(&s.key())
        });
        retain_vec(&self.mirror, |labels| {
            let route = label(labels, "route");
            matches!(route, ROUTE_FALLBACK | ROUTE_NONE) || routes.contains(route)
        });
    }

    /// Drops error, endpoint-health, ejection and health-check series of
    /// upstreams and endpoints that
    /// are not in the new config: `live` lists each (upstream, endpoints).
    pub fn retain_upstreams(&self, live: &[(&str, Vec<&str>)]) {
        let names: HashSet<&str> = live.iter().map(|(u, _)| *u).collect();
        let endpoints: HashSet<(&str, &str)> = live
            .iter()
            .flat_map(|(u, eps)| eps.iter().map(move |e| (*u, *e)))
            .collect();
        retain_vec(&self.upstream_errors, |l| {
            names.contains(label(l, "upstream"))
        });
        let live =
            |l: &[LabelPair]| endpoints.contains(&(label(l, "upstream"), label(l, "endpoint")));
        retain_vec(&self.endpoint_healthy, live);
        retain_vec(&self.ejections, live);
        retain_vec(&self.health_checks, live);
    }

    /// Drops assignment and user series of experiments that are not in the
    /// new config.
    pub fn retain_experiments(&self, live: &[&str]) {
        let names: HashSet<&str> = live.iter().copied().collect();
        retain_vec(&self.experiment_assignments, |l| {
            names.contains(label(l, "experiment"))
        });
        retain_vec(&self.experiment_users, |l| {
            names.contains(label(l, "experiment"))
        });
    }

    /// Sets the distinct users of one experiment variant.
    pub fn set_experiment_users(&self, experiment: &str, variant: &str, users: u64) {
        self.experiment_users
            .with_label_values(&[experiment, variant])
            .set(i64::try_from(users).unwrap_or(i64::MAX));
    }

    /// The exposure log's counters: (lines written, lines dropped).
    pub fn exposure_counters(&self) -> (IntCounter, IntCounter) {
        (
            self.exposures_logged.clone(),
            self.exposures_dropped.clone(),
        )
    }

    /// Drops weight, state and transition series of canaries that are not in
    /// the new config.
    pub fn retain_canaries(&self, live: &[&str]) {
        let names: HashSet<&str> = live.iter().copied().collect();
        retain_vec(&self.canary_weight, |l| names.contains(label(l, "canary")));
        retain_vec(&self.canary_state, |l| names.contains(label(l, "canary")));
        retain_vec(&self.canary_transitions, |l| {
            names.contains(label(l, "canary"))
        });
    }

    /// Brings the assignment counter of one experiment variant up to
    /// `total` (the experiment's own exposure count, read at scrape time).
    /// A smaller `total` (the definition changed and counting restarted)
    /// resets the counter first.
    pub fn sync_experiment_assignments(&self, experiment: &str, variant: &str, total: u64) {
        sync_counter(&self.experiment_assignments(experiment, variant), total);
    }

    /// Brings the dropped log lines counter up to `total` (the log queue's
    /// own count, read at scrape time).
    pub fn sync_log_lines_dropped(&self, total: u64) {
        sync_counter(&self.log_lines_dropped, total);
    }

    /// Brings a canary's transition counter for `to` up to `total` (the
    /// canary's own count, read at scrape time).
    pub fn sync_canary_transitions(&self, canary: &str, to: &str, total: u64) {
        if total == 0 {
            // No series for transitions that never happened.
            return;
        }
        let c = self.canary_transitions.with_label_values(&[canary, to]);
        sync_counter(&c, total);
    }

    /// Registers `pointsman_fleet_connected` (fleet mode only: a single
    /// replica has no store to be connected to); starts at 0.
    pub fn fleet_connected(&self) -> prometheus::Result<IntGauge> {
        let g = IntGauge::new(
            FLEET_CONNECTED,
            "1 while the fleet's shared store answers, else 0.",
        )?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    /// Every metric in the Prometheus text format (for `GET /metrics`).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        // 10,000 routes' series are megabytes of text: written through a
        // yield point (the admin thread gives way to the serving ones).
        let mut out = Vec::new();
        let written = TextEncoder::new().encode(&families, &mut YieldingWriter(&mut out));
        if let Err(err) = written {
            tracing::error!(%err, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_else(|err| {
            tracing::error!(%err, "encoded metrics are not UTF-8");
            String::new()
        })
    }

    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub fn content_type(&self) -> String {
        TextEncoder::new().format_type().to_owned()
    }
}

/// Moves `c` to `total`: forward by the difference, or reset first when
/// `total` is below it.
fn sync_counter(c: &IntCounter, total: u64) {
    let now = c.get();
    if total < now {
        c.reset();
        c.inc_by(total);
    } else if total > now {
        c.inc_by(total - now);
    }
}

/// The value of label `name` in a collected metric ("" if absent).
fn label<'a>(labels: &'a [LabelPair], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// Removes every label set of `vec` for which `keep` is false. The label
/// sets are read back from the vec itself, so nothing is tracked twice.
fn retain_vec<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    keep: impl Fn(&[LabelPair]) -> bool,
) {
    let Some(names) = vec.desc().first().map(|d| d.variable_labels.clone()) else {
        return;
    };
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels = metric.get_label();
            if keep(labels) {
                continue;
            }
            let values: Vec<&str> = names.iter().map(|n| label(labels, n)).collect();
            // Err only if the set vanished meanwhile: nothing left to remove.
            let _ = vec.remove_label_values(&values);
        }
    }
}

#[cfg(test)]
mod tests;
