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

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::upstream::Upstream;

// === names ===

/// Counter `{route, upstream, variant, code}`.
pub const REQUESTS_TOTAL: &str = "pointsman_requests_total";
/// Histogram `{route, upstream, variant}`: seconds until the response headers are sent.
pub const REQUEST_DURATION_SECONDS: &str = "pointsman_request_duration_seconds";
/// Counter `{upstream, kind}`, kind ∈ [`UPSTREAM_ERROR_KINDS`].
pub const UPSTREAM_ERRORS_TOTAL: &str = "pointsman_upstream_errors_total";
/// Gauge `{upstream, endpoint}`: 1 healthy, 0 unhealthy or ejected.
pub const UPSTREAM_ENDPOINT_HEALTHY: &str = "pointsman_upstream_endpoint_healthy";
/// Counter `{experiment, variant}`: enrolled requests (exposures).
pub const EXPERIMENT_ASSIGNMENTS_TOTAL: &str = "pointsman_experiment_assignments_total";
/// Gauge `{canary}`: current canary weight, 0–100.
pub const CANARY_WEIGHT_PERCENT: &str = "pointsman_canary_weight_percent";
/// Gauge `{canary, state}`: 1 for the current state, 0 for the others.
pub const CANARY_STATE: &str = "pointsman_canary_state";
/// Counter `{canary, to}`: state changes.
pub const CANARY_TRANSITIONS_TOTAL: &str = "pointsman_canary_transitions_total";
/// Counter `{result}`, result ∈ `success`, `failure`.
pub const CONFIG_RELOADS_TOTAL: &str = "pointsman_config_reloads_total";
/// Gauge: generation of the active config.
pub const CONFIG_GENERATION: &str = "pointsman_config_generation";
/// Gauge `{listener}`: open downstream connections per public listener.
pub const CONNECTIONS_ACTIVE: &str = "pointsman_connections_active";
/// Counter `{route, upstream, result}`, result ∈ `sent`, `failed`, `skipped`.
pub const MIRROR_REQUESTS_TOTAL: &str = "pointsman_mirror_requests_total";

/// Every metric name the proxy exports (histograms without their
/// `_bucket`/`_sum`/`_count` suffixes).
pub const ALL: &[&str] = &[
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    UPSTREAM_ERRORS_TOTAL,
    UPSTREAM_ENDPOINT_HEALTHY,
    EXPERIMENT_ASSIGNMENTS_TOTAL,
    CANARY_WEIGHT_PERCENT,
    CANARY_STATE,
    CANARY_TRANSITIONS_TOTAL,
    CONFIG_RELOADS_TOTAL,
    CONFIG_GENERATION,
    CONNECTIONS_ACTIVE,
    MIRROR_REQUESTS_TOTAL,
];

/// The names in [`ALL`] that are histograms.
pub const HISTOGRAMS: &[&str] = &[REQUEST_DURATION_SECONDS];

/// `route` label when the fallback served the request.
pub const ROUTE_FALLBACK: &str = "fallback";
/// `route` label when nothing served the request (404 `no_route`).
pub const ROUTE_NONE: &str = "none";

/// Upper bounds (seconds) of the duration histogram buckets; `+Inf` is implied.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The same bounds in nanoseconds, compared against on the hot path.
const DURATION_BUCKETS_NS: [u64; 15] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Values of the `kind` label of [`UPSTREAM_ERRORS_TOTAL`].
pub const UPSTREAM_ERROR_KINDS: [&str; 4] = ["connect", "timeout", "reset", "no_healthy"];

/// Status codes with a fixed counter slot in every [`RequestSeries`]: the
/// codes the proxy itself emits and the ones upstreams commonly send.
pub const COMMON_CODES: [u16; 36] = [
    100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406,
    408, 409, 410, 412, 413, 415, 416, 422, 429, 431, 499, 500, 501, 502, 503, 504, 505,
];

/// The lowest and highest code counted exactly (`http::StatusCode`'s range).
const MIN_CODE: u16 = 100;
const MAX_CODE: u16 = 999;
const NO_SLOT: u8 = u8::MAX;

/// `CODE_SLOT[code]` is the index of `code` in [`COMMON_CODES`], or [`NO_SLOT`].
static CODE_SLOT: [u8; MAX_CODE as usize + 1] = {
    let mut table = [NO_SLOT; MAX_CODE as usize + 1];
    let mut i = 0;
    while i < COMMON_CODES.len() {
        table[COMMON_CODES[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// A canary's state (SPEC 4): its `as_str` gives the `state`/`to` label values.
pub use crate::split::CanaryState;

// === Metrics ===

/// The process-wide metrics: one per process, shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestTable>,
    upstream_errors: IntCounterVec,
    endpoint_healthy: IntGaugeVec,
    experiment_assignments: IntCounterVec,
    canary_weight: GaugeVec,
    canary_state: IntGaugeVec,
    canary_transitions: IntCounterVec,
    reload_success: IntCounter,
    reload_failure: IntCounter,
    config_generation: IntGauge,
    connections: IntGaugeVec,
    mirror: IntCounterVec,
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

        Ok(Arc::new(Metrics {
            registry,
            requests,
            upstream_errors,
            endpoint_healthy,
            experiment_assignments,
            canary_weight,
            canary_state,
            canary_transitions,
            reload_success,
            reload_failure,
            config_generation,
            connections,
            mirror,
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

    /// The assignment counter of one experiment variant; call at compile time
    /// and `inc()` per enrolled request.
    pub fn experiment_assignments(&self, experiment: &str, variant: &str) -> IntCounter {
        self.experiment_assignments
            .with_label_values(&[experiment, variant])
    }

    /// Sets a canary's weight and state gauges (the state gauge is 1 for
    /// `state` and 0 for the other states).
    pub fn set_canary(&self, canary: &str, weight_percent: f64, state: CanaryState) {
        self.canary_weight
            .with_label_values(&[canary])
            .set(weight_percent);
        for s in CanaryState::ALL {
            self.canary_state
                .with_label_values(&[canary, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// Counts a canary state change to `to`.
    pub fn canary_transition(&self, canary: &str, to: CanaryState) {
        self.canary_transitions
            .with_label_values(&[canary, to.as_str()])
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

    /// Drops error and endpoint-health series of upstreams and endpoints that
    /// are not in the new config (pass `&snapshot.upstreams`).
    pub fn retain_upstreams(&self, live: &[Arc<Upstream>]) {
        let names: HashSet<&str> = live.iter().map(|u| &*u.def.name).collect();
        let endpoints: HashSet<(&str, &str)> = live
            .iter()
            .flat_map(|u| {
                u.def
                    .endpoints
                    .iter()
                    .map(|e| (&*u.def.name, e.authority.as_str()))
            })
            .collect();
        retain_vec(&self.upstream_errors, |l| {
            names.contains(label(l, "upstream"))
        });
        retain_vec(&self.endpoint_healthy, |l| {
            endpoints.contains(&(label(l, "upstream"), label(l, "endpoint")))
        });
    }

    /// Drops assignment series of experiments that are not in the new config.
    pub fn retain_experiments(&self, live: &[&str]) {
        let names: HashSet<&str> = live.iter().copied().collect();
        retain_vec(&self.experiment_assignments, |l| {
            names.contains(label(l, "experiment"))
        });
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

    /// Brings a canary's transition counter for `to` up to `total` (the
    /// canary's own count, read at scrape time).
    pub fn sync_canary_transitions(&self, canary: &str, to: CanaryState, total: u64) {
        if total == 0 {
            // No series for transitions that never happened.
            return;
        }
        let c = self
            .canary_transitions
            .with_label_values(&[canary, to.as_str()]);
        sync_counter(&c, total);
    }

    /// Every metric in the Prometheus text format (for `GET /metrics`).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::new();
        if let Err(err) = TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!(%err, "encoding metrics failed");
        }
        out
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

// === RequestSeries ===

/// Request count by status code and duration histogram of one (route,
/// upstream, variant). Recording is lock-free and allocation-free once the
/// series has seen its first request.
#[derive(Debug)]
pub struct RequestSeries {
    route: Arc<str>,
    /// Shared by the series of one (upstream, variant): 40 bytes a series
    /// instead of 64 (issue 6).
    target: Arc<SeriesTarget>,
    /// The counters, allocated by the first observation: most series of a
    /// large config never see a request, and idle ones cost only labels.
    counts: OnceLock<Box<Counts>>,
}

/// The counters of one [`RequestSeries`].
#[derive(Debug)]
struct Counts {
    /// Counts of [`COMMON_CODES`], by slot.
    common: [AtomicU64; COMMON_CODES.len()],
    /// Counts of other codes in 100..=999 (index `code - 100`), allocated
    /// the first time such a code is seen.
    rare: OnceLock<Box<[AtomicU64]>>,
    /// Codes outside 100..=999 (exported as `code="other"`).
    other: AtomicU64,
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Counts {
    fn new() -> Box<Self> {
        Box::new(Counts {
            common: std::array::from_fn(|_| AtomicU64::new(0)),
            rare: OnceLock::new(),
            other: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        })
    }
}

/// The `upstream` and `variant` labels of request series.
#[derive(Debug)]
pub struct SeriesTarget {
    upstream: Arc<str>,
    variant: Arc<str>,
}

impl SeriesTarget {
    /// Labels copied from `upstream` and `variant`.
    pub fn new(upstream: &str, variant: &str) -> Self {
        SeriesTarget::shared(upstream.into(), variant.into())
    }

    /// Labels sharing the caller's strings.
    pub fn shared(upstream: Arc<str>, variant: Arc<str>) -> Self {
        SeriesTarget { upstream, variant }
    }
}

impl RequestSeries {
    fn new(route: Arc<str>, target: Arc<SeriesTarget>) -> Self {
        RequestSeries {
            route,
            target,
            counts: OnceLock::new(),
        }
    }

    /// The series' labels: (route, upstream, variant).
    pub fn key(&self) -> (&str, &str, &str) {
        (&self.route, &self.target.upstream, &self.target.variant)
    }

    /// Records one response: its status code and the time until its headers
    /// were sent.
    #[inline]
    pub fn observe(&self, code: u16, duration: Duration) {
        let counts = self.counts.get_or_init(Counts::new);
        counts.count(code);
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = DURATION_BUCKETS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(DURATION_BUCKETS_NS.len());
        if let Some(b) = counts.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        counts.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// (code label, count) of every code counted at least once.
    fn codes(&self) -> Vec<(String, u64)> {
        self.counts.get().map_or_else(Vec::new, |c| c.codes())
    }

    /// The histogram as of now; `None` before the first observation.
    fn histogram(&self) -> Option<proto::Histogram> {
        self.counts.get()?.histogram()
    }
}
impl Counts {
    #[inline]
    fn count(&self, code: u16) {
        let slot = CODE_SLOT.get(usize::from(code)).copied().unwrap_or(NO_SLOT);
        if let Some(c) = self.common.get(usize::from(slot)) {
            c.fetch_add(1, Ordering::Relaxed);
        } else if (MIN_CODE..=MAX_CODE).contains(&code) {
            let rare = self
                .rare
                .get_or_init(|| (MIN_CODE..=MAX_CODE).map(|_| AtomicU64::new(0)).collect());
            if let Some(c) = rare.get(usize::from(code - MIN_CODE)) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.other.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (code label, count) of every code counted at least once.
    fn codes(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut push = |code: String, n: u64| {
            if n > 0 {
                out.push((code, n));
            }
        };
        for (code, c) in COMMON_CODES.iter().zip(&self.common) {
            push(code.to_string(), c.load(Ordering::Relaxed));
        }
        if let Some(rare) = self.rare.get() {
            for (code, c) in (MIN_CODE..=MAX_CODE).zip(rare.iter()) {
                push(code.to_string(), c.load(Ordering::Relaxed));
            }
        }
        push("other".to_owned(), self.other.load(Ordering::Relaxed));
        out
    }

    /// The histogram as of now; `None` before the first observation. The
    /// count is the sum of the buckets read, so `+Inf` always equals it.
    fn histogram(&self) -> Option<proto::Histogram> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let mut cumulative = 0;
        let buckets = DURATION_BUCKETS
            .iter()
            .zip(&counts)
            .map(|(&bound, &n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = proto::Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(total);
        h.set_sample_sum(self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        Some(h)
    }
}

impl RequestSeries {
    fn labels(&self) -> Vec<LabelPair> {
        vec![
            label_pair("route", &self.route),
            label_pair("upstream", &self.target.upstream),
            label_pair("variant", &self.target.variant),
        ]
    }
}

fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

/// The labels of a series: (route, upstream, variant).
type Labels<'a> = (&'a str, &'a str, &'a str);

/// Something with series labels: a stored [`BySeriesLabels`] or the
/// labels looked up. The set of series is keyed by the labels the series
/// itself holds, so each entry is one pointer (no key copy), and a lookup
/// by `&str`s borrows both sides as `dyn HasLabels`.
trait HasLabels {
    fn labels(&self) -> Labels<'_>;
}

impl HasLabels for Labels<'_> {
    fn labels(&self) -> Labels<'_> {
        *self
    }
}

impl std::hash::Hash for dyn HasLabels + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.labels().hash(state);
    }
}

impl PartialEq for dyn HasLabels + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.labels() == other.labels()
    }
}

impl Eq for dyn HasLabels + '_ {}

/// A series in the table, hashed and compared by its labels.
#[derive(Debug)]
struct BySeriesLabels(Arc<RequestSeries>);

impl HasLabels for BySeriesLabels {
    fn labels(&self) -> Labels<'_> {
        self.0.key()
    }
}

impl<'a> std::borrow::Borrow<dyn HasLabels + 'a> for BySeriesLabels {
    fn borrow(&self) -> &(dyn HasLabels + 'a) {
        self
    }
}

impl std::hash::Hash for BySeriesLabels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self as &dyn HasLabels).hash(state);
    }
}

impl PartialEq for BySeriesLabels {
    fn eq(&self, other: &Self) -> bool {
        self.labels() == other.labels()
    }
}

impl Eq for BySeriesLabels {}

type SeriesSet = HashSet<BySeriesLabels>;

/// Every live [`RequestSeries`]. Changed only at compile and reload time,
/// read at scrape time; requests never touch it (they hold their handles).
/// A lock rather than copy on write: compile resolves thousands of new
/// series in a row, and copying the whole map for each is quadratic.
#[derive(Debug)]
struct RequestTable {
    requests_desc: Desc,
    duration_desc: Desc,
    series: RwLock<SeriesSet>,
}

impl RequestTable {
    fn new() -> prometheus::Result<Self> {
        let labels = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Ok(RequestTable {
            requests_desc: Desc::new(
                REQUESTS_TOTAL.to_owned(),
                "Requests answered, by route, upstream, variant and status code.".to_owned(),
                labels(&["route", "upstream", "variant", "code"]),
                HashMap::new(),
            )?,
            duration_desc: Desc::new(
                REQUEST_DURATION_SECONDS.to_owned(),
                "Seconds from receiving a request until its response headers were sent.".to_owned(),
                labels(&["route", "upstream", "variant"]),
                HashMap::new(),
            )?,
            series: RwLock::new(HashSet::new()),
        })
    }

    /// The series with `labels`; `owned` gives its labels when it is new.
    fn series(
        &self,
        labels: Labels<'_>,
        owned: impl FnOnce() -> (Arc<str>, Arc<SeriesTarget>),
    ) -> Arc<RequestSeries> {
        let key: &dyn HasLabels = &labels;
        if let Some(s) = self.read().get(key) {
            return s.0.clone();
        }
        // Another thread may insert the same labels meanwhile: whichever is
        // in the set is the one everyone gets.
        let mut set = self.write();
        if let Some(s) = set.get(key) {
            return s.0.clone();
        }
        let (route, target) = owned();
        let s = Arc::new(RequestSeries::new(route, target));
        set.insert(BySeriesLabels(s.clone()));
        s
    }

    fn retain(&self, keep: impl Fn(&RequestSeries) -> bool) {
        self.write().retain(|s| keep(&s.0));
    }

    /// Every live series, copied out so the lock is not held while scraping.
    fn all(&self) -> Vec<Arc<RequestSeries>> {
        self.read().iter().map(|s| s.0.clone()).collect()
    }

    // A panic while holding the lock leaves the set intact (inserts and
    // removals are single set operations), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, SeriesSet> {
        self.series.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SeriesSet> {
        self.series.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Exports a [`RequestTable`] through the registry.
#[derive(Debug)]
struct RequestCollector(Arc<RequestTable>);

impl Collector for RequestCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.requests_desc, &self.0.duration_desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let table = self.0.all();
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        for s in &table {
            for (code, n) in s.codes() {
                let mut labels = s.labels();
                labels.push(label_pair("code", &code));
                let mut m = proto::Metric::from_label(labels);
                let mut c = proto::Counter::default();
                c.set_value(n as f64);
                m.set_counter(c);
                requests.push(m);
            }
            if let Some(h) = s.histogram() {
                let mut m = proto::Metric::from_label(s.labels());
                m.set_histogram(h);
                durations.push(m);
            }
        }
        let family = |desc: &Desc, kind, metrics| {
            let mut f = MetricFamily::default();
            f.set_name(desc.fq_name.clone());
            f.set_help(desc.help.clone());
            f.set_field_type(kind);
            f.set_metric(metrics);
            f
        };
        vec![
            family(&self.0.requests_desc, MetricType::COUNTER, requests),
            family(&self.0.duration_desc, MetricType::HISTOGRAM, durations),
        ]
    }
}

// === handles ===

/// Error counters of one upstream, one per `kind`.
#[derive(Debug, Clone)]
pub struct UpstreamErrors {
    connect: IntCounter,
    timeout: IntCounter,
    reset: IntCounter,
    no_healthy: IntCounter,
}

impl UpstreamErrors {
    /// Connect refused or timed out after retries (or upstream TLS failed).
    pub fn connect(&self) {
        self.connect.inc();
    }
    /// No response headers within the timeout.
    pub fn timeout(&self) {
        self.timeout.inc();
    }
    /// Closed or reset, before or during the response.
    pub fn reset(&self) {
        self.reset.inc();
    }
    /// Every endpoint unhealthy or ejected.
    pub fn no_healthy(&self) {
        self.no_healthy.inc();
    }
}

/// The health gauge of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointHealth(IntGauge);

impl EndpointHealth {
    /// Sets the gauge to 1 (healthy) or 0.
    pub fn set(&self, healthy: bool) {
        self.0.set(i64::from(healthy));
    }
}

/// Mirror counters of one route and mirror upstream.
#[derive(Debug, Clone)]
pub struct MirrorCounters {
    sent: IntCounter,
    failed: IntCounter,
    skipped: IntCounter,
}

impl MirrorCounters {
    /// The mirrored request got a response.
    pub fn sent(&self) {
        self.sent.inc();
    }
    /// The mirrored request failed.
    pub fn failed(&self) {
        self.failed.inc();
    }
    /// The request was chosen for mirroring but not mirrored (e.g. its body
    /// could not be held).
    pub fn skipped(&self) {
        self.skipped.inc();
    }
}

/// The open-connection gauge of one listener.
#[derive(Debug, Clone)]
pub struct ListenerConnections(IntGauge);

impl ListenerConnections {
    /// Counts a connection as open until the guard is dropped.
    pub fn open(&self) -> ConnectionGuard {
        self.0.inc();
        ConnectionGuard(self.0.clone())
    }
}

/// Decrements its listener's connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Endpoint, UpstreamDef};

    /// One sample line of the exposition format.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    impl Sample {
        fn label(&self, name: &str) -> Option<&str> {
            self.labels
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Parses `name{k="v",...} value` lines (comments skipped), undoing the
    /// `\\`, `\"` and `\n` escapes of label values.
    fn parse(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).expect("name");
            let name = line[..name_end].to_owned();
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(r) = rest.strip_prefix('{') {
                let mut chars = r.char_indices().peekable();
                let end;
                loop {
                    // label name up to '='
                    let (start, c) = chars.next().expect("label or }");
                    if c == '}' {
                        end = start + 1;
                        break;
                    }
                    if c == ',' {
                        continue;
                    }
                    let mut lname = String::from(c);
                    loop {
                        let (_, c) = chars.next().expect("=");
                        if c == '=' {
                            break;
                        }
                        lname.push(c);
                    }
                    assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next().expect("closing quote");
                        match c {
                            '"' => break,
                            '\\' => match chars.next().expect("escape").1 {
                                'n' => value.push('\n'),
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                other => panic!("bad escape \\{other} in {line}"),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.push((lname, value));
                }
                rest = &r[end..];
            }
            let value = rest.trim().split(' ').next().expect("value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            out.push(Sample {
                name,
                labels,
                value,
            });
        }
        out
    }

    /// The one sample called `name` whose labels include all of `want`.
    fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
        samples
            .iter()
            .filter(|s| s.name == name && want.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .collect()
    }

    fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
        let found = find(samples, name, want);
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].value
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_name_is_exported_once_with_spec_labels() {
        let m = Metrics::new().unwrap();
        let s = m.series("api", "backend", "");
        s.observe(200, ms(1));
        m.upstream_errors("backend").connect();
        m.endpoint_health("backend", "10.0.0.1:80").set(true);
        m.experiment_assignments("checkout", "b").inc();
        m.set_canary("web", 10.0, CanaryState::Progressing);
        m.canary_transition("web", CanaryState::Paused);
        m.reload_result(true);
        m.set_generation(3);
        let _c = m.listener("0.0.0.0:8080").open();
        m.mirror("api", "shadow").sent();
        let text = m.render();
        let samples = parse(&text);
        let expect: &[(&str, &[&str])] = &[
            (REQUESTS_TOTAL, &["route", "upstream", "variant", "code"]),
            (UPSTREAM_ERRORS_TOTAL, &["upstream", "kind"]),
            (UPSTREAM_ENDPOINT_HEALTHY, &["upstream", "endpoint"]),
            (EXPERIMENT_ASSIGNMENTS_TOTAL, &["experiment", "variant"]),
            (CANARY_WEIGHT_PERCENT, &["canary"]),
            (CANARY_STATE, &["canary", "state"]),
            (CANARY_TRANSITIONS_TOTAL, &["canary", "to"]),
            (CONFIG_RELOADS_TOTAL, &["result"]),
            (CONFIG_GENERATION, &[]),
            (CONNECTIONS_ACTIVE, &["listener"]),
            (MIRROR_REQUESTS_TOTAL, &["route", "upstream", "result"]),
        ];
        for (name, labels) in expect {
            let found: Vec<_> = samples.iter().filter(|s| s.name == *name).collect();
            assert!(!found.is_empty(), "{name} missing in\n{text}");
            for s in found {
                let mut got: Vec<&str> = s.labels.iter().map(|(n, _)| n.as_str()).collect();
                let mut want = labels.to_vec();
                got.sort();
                want.sort();
                assert_eq!(got, want, "{name}");
            }
        }
        for (suffix, extra) in [("_bucket", Some("le")), ("_sum", None), ("_count", None)] {
            let name = format!("{REQUEST_DURATION_SECONDS}{suffix}");
            let found: Vec<_> = samples.iter().filter(|s| s.name == name).collect();
            assert!(!found.is_empty(), "{name} missing");
            for s in found {
                let mut got: Vec<&str> = s.labels.iter().map(|(n, _)| n.as_str()).collect();
                got.sort();
                let mut want = vec!["route", "upstream", "variant"];
                want.extend(extra);
                want.sort();
                assert_eq!(got, want, "{name}");
            }
        }
        // TYPE lines say what SPEC 9 says.
        for (name, kind) in [
            (REQUESTS_TOTAL, "counter"),
            (REQUEST_DURATION_SECONDS, "histogram"),
            (UPSTREAM_ERRORS_TOTAL, "counter"),
            (UPSTREAM_ENDPOINT_HEALTHY, "gauge"),
            (EXPERIMENT_ASSIGNMENTS_TOTAL, "counter"),
            (CANARY_WEIGHT_PERCENT, "gauge"),
            (CANARY_STATE, "gauge"),
            (CANARY_TRANSITIONS_TOTAL, "counter"),
            (CONFIG_RELOADS_TOTAL, "counter"),
            (CONFIG_GENERATION, "gauge"),
            (CONNECTIONS_ACTIVE, "gauge"),
            (MIRROR_REQUESTS_TOTAL, "counter"),
        ] {
            assert!(
                text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
                "{name} {kind}"
            );
        }
        assert_eq!(ALL.len(), 12);
    }

    #[test]
    fn request_counts_by_code_and_series() {
        let m = Metrics::new().unwrap();
        let stable = m.series("checkout", "shop-v1", "stable");
        let canary = m.series("checkout", "shop-v2", "canary");
        let none = m.series(ROUTE_NONE, "", "");
        for _ in 0..5 {
            stable.observe(200, ms(3));
        }
        stable.observe(502, ms(40));
        canary.observe(200, ms(1));
        canary.observe(503, ms(2));
        canary.observe(503, ms(2));
        canary.observe(418, ms(2)); // not a common code
        canary.observe(799, ms(2)); // odd but valid
        canary.observe(42, ms(2)); // out of range
        none.observe(404, Duration::ZERO);

        let samples = parse(&m.render());
        let req = |route, up, var, code| {
            value(
                &samples,
                REQUESTS_TOTAL,
                &[
                    ("route", route),
                    ("upstream", up),
                    ("variant", var),
                    ("code", code),
                ],
            )
        };
        assert_eq!(req("checkout", "shop-v1", "stable", "200"), 5.0);
        assert_eq!(req("checkout", "shop-v1", "stable", "502"), 1.0);
        assert_eq!(req("checkout", "shop-v2", "canary", "200"), 1.0);
        assert_eq!(req("checkout", "shop-v2", "canary", "503"), 2.0);
        assert_eq!(req("checkout", "shop-v2", "canary", "418"), 1.0);
        assert_eq!(req("checkout", "shop-v2", "canary", "799"), 1.0);
        assert_eq!(req("checkout", "shop-v2", "canary", "other"), 1.0);
        assert_eq!(req("none", "", "", "404"), 1.0);
        // Codes never seen are not exported.
        let requests = find(&samples, REQUESTS_TOTAL, &[]);
        assert_eq!(requests.len(), 8, "{requests:?}");
    }

    #[test]
    fn histogram_has_cumulative_buckets_sum_and_count() {
        let m = Metrics::new().unwrap();
        let s = m.series("api", "backend", "");
        s.observe(200, Duration::from_micros(400)); // <= 0.0005
        s.observe(200, ms(1)); // exactly on the 0.001 bound
        s.observe(200, ms(70)); // <= 0.1
        s.observe(200, Duration::from_secs(31)); // only +Inf
        let samples = parse(&m.render());
        let labels = [("route", "api"), ("upstream", "backend"), ("variant", "")];
        let bucket = |le: &str| {
            let mut want = labels.to_vec();
            want.push(("le", le));
            value(&samples, "pointsman_request_duration_seconds_bucket", &want)
        };
        assert_eq!(bucket("0.0005"), 1.0);
        assert_eq!(bucket("0.001"), 2.0);
        assert_eq!(bucket("0.05"), 2.0);
        assert_eq!(bucket("0.1"), 3.0);
        assert_eq!(bucket("30"), 3.0);
        assert_eq!(bucket("+Inf"), 4.0);
        let buckets = find(
            &samples,
            "pointsman_request_duration_seconds_bucket",
            &labels,
        );
        assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1);
        let mut last = 0.0;
        for b in buckets {
            assert!(b.value >= last, "buckets not cumulative: {b:?}");
            last = b.value;
        }
        assert_eq!(
            value(
                &samples,
                "pointsman_request_duration_seconds_count",
                &labels
            ),
            4.0
        );
        let sum = value(&samples, "pointsman_request_duration_seconds_sum", &labels);
        assert!((sum - 31.0714).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn series_is_idempotent() {
        let m = Metrics::new().unwrap();
        let a = m.series("api", "backend", "");
        let b = m.series("api", "backend", "");
        assert!(Arc::ptr_eq(&a, &b));
        a.observe(200, ms(1));
        b.observe(200, ms(1));
        let samples = parse(&m.render());
        assert_eq!(
            value(
                &samples,
                REQUESTS_TOTAL,
                &[("route", "api"), ("code", "200")]
            ),
            2.0
        );
        assert!(!Arc::ptr_eq(&a, &m.series("api", "backend", "v2")));
    }

    #[test]
    fn retain_routes_drops_removed_routes_only() {
        let m = Metrics::new().unwrap();
        let keep = m.series("keep", "up", "");
        let gone = m.series("gone", "up", "");
        let old_variant = m.series("keep", "up", "b");
        let fallback = m.series(ROUTE_FALLBACK, "default", "");
        let none = m.series(ROUTE_NONE, "", "");
        for s in [&keep, &gone, &old_variant, &fallback, &none] {
            s.observe(200, ms(1));
        }
        m.mirror("keep", "shadow").sent();
        m.mirror("gone", "shadow").failed();

        m.retain_routes(&[("keep", "up", ""), ("new", "up", "")]);

        let samples = parse(&m.render());
        let routes = |name: &str| {
            let mut r: Vec<(String, String)> = find(&samples, name, &[])
                .iter()
                .map(|s| {
                    let r = s.label("route").unwrap_or_default().to_owned();
                    (r, s.label("variant").unwrap_or_default().to_owned())
                })
                .collect();
            r.sort();
            r.dedup();
            r
        };
        let want: Vec<(String, String)> = [("fallback", ""), ("keep", ""), ("none", "")]
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(routes(REQUESTS_TOTAL), want);
        assert_eq!(routes("pointsman_request_duration_seconds_count"), want);
        let mirrors: Vec<_> = find(&samples, MIRROR_REQUESTS_TOTAL, &[])
            .iter()
            .map(|s| s.label("route").unwrap_or_default().to_owned())
            .collect();
        assert_eq!(mirrors, vec!["keep"; 3]);
        // A route that comes back starts afresh.
        let back = m.series("gone", "up", "");
        assert!(!Arc::ptr_eq(&back, &gone));
        assert!(Arc::ptr_eq(&keep, &m.series("keep", "up", "")));
    }

    #[test]
    fn retain_upstreams_experiments_and_canaries() {
        let m = Metrics::new().unwrap();
        m.upstream_errors("a").timeout();
        m.upstream_errors("b").reset();
        m.endpoint_health("a", "10.0.0.1:80").set(true);
        m.endpoint_health("a", "10.0.0.2:80").set(false);
        m.experiment_assignments("x", "control").inc();
        m.experiment_assignments("y", "control").inc();
        m.set_canary("c1", 5.0, CanaryState::Static);
        m.set_canary("c2", 5.0, CanaryState::Static);
        m.canary_transition("c2", CanaryState::RolledBack);

        let def = UpstreamDef {
            name: "a".into(),
            endpoints: vec![Endpoint {
                tls: false,
                authority: "10.0.0.1:80".to_owned(),
            }],
            balance: Default::default(),
            connect_timeout: ms(1),
            request_timeout: ms(1),
            retries: 0,
            protocol: Default::default(),
            tls: None,
            health_check: None,
            outlier: None,
        };
        m.retain_upstreams(&[Arc::new(Upstream::new(def))]);
        m.retain_experiments(&["x"]);
        m.retain_canaries(&["c1"]);

        let samples = parse(&m.render());
        let distinct = |name: &str, label: &str| {
            let mut v: Vec<String> = find(&samples, name, &[])
                .iter()
                .map(|s| s.label(label).unwrap_or_default().to_owned())
                .collect();
            v.dedup();
            v
        };
        assert_eq!(distinct(UPSTREAM_ERRORS_TOTAL, "upstream"), ["a"]);
        assert_eq!(
            distinct(UPSTREAM_ENDPOINT_HEALTHY, "endpoint"),
            ["10.0.0.1:80"]
        );
        assert_eq!(distinct(EXPERIMENT_ASSIGNMENTS_TOTAL, "experiment"), ["x"]);
        assert_eq!(distinct(CANARY_WEIGHT_PERCENT, "canary"), ["c1"]);
        assert_eq!(distinct(CANARY_STATE, "canary"), ["c1"]);
        assert!(find(&samples, CANARY_TRANSITIONS_TOTAL, &[]).is_empty());
    }

    #[test]
    fn canary_state_is_one_hot_and_counters_count() {
        let m = Metrics::new().unwrap();
        m.set_canary("web", 25.0, CanaryState::Progressing);
        m.set_canary("web", 0.0, CanaryState::RolledBack);
        m.canary_transition("web", CanaryState::RolledBack);
        m.reload_result(true);
        m.reload_result(true);
        m.reload_result(false);
        m.set_generation(7);
        let l = m.listener("0.0.0.0:8080");
        let a = l.open();
        let b = l.open();
        drop(a);
        let errors = m.upstream_errors("api");
        errors.connect();
        errors.timeout();
        errors.timeout();
        errors.no_healthy();
        let mirror = m.mirror("r", "shadow");
        mirror.sent();
        mirror.skipped();
        let samples = parse(&m.render());

        assert_eq!(
            value(&samples, CANARY_WEIGHT_PERCENT, &[("canary", "web")]),
            0.0
        );
        for s in CanaryState::ALL {
            let want = if s == CanaryState::RolledBack {
                1.0
            } else {
                0.0
            };
            let got = value(
                &samples,
                CANARY_STATE,
                &[("canary", "web"), ("state", s.as_str())],
            );
            assert_eq!(got, want, "{s:?}");
        }
        let to = [("canary", "web"), ("to", "rolled_back")];
        assert_eq!(value(&samples, CANARY_TRANSITIONS_TOTAL, &to), 1.0);
        assert_eq!(
            value(&samples, CONFIG_RELOADS_TOTAL, &[("result", "success")]),
            2.0
        );
        assert_eq!(
            value(&samples, CONFIG_RELOADS_TOTAL, &[("result", "failure")]),
            1.0
        );
        assert_eq!(value(&samples, CONFIG_GENERATION, &[]), 7.0);
        let listener = [("listener", "0.0.0.0:8080")];
        assert_eq!(value(&samples, CONNECTIONS_ACTIVE, &listener), 1.0);
        drop(b);
        let samples = parse(&m.render());
        assert_eq!(value(&samples, CONNECTIONS_ACTIVE, &listener), 0.0);
        for (kind, n) in [
            ("connect", 1.0),
            ("timeout", 2.0),
            ("reset", 0.0),
            ("no_healthy", 1.0),
        ] {
            let got = value(
                &samples,
                UPSTREAM_ERRORS_TOTAL,
                &[("upstream", "api"), ("kind", kind)],
            );
            assert_eq!(got, n, "{kind}");
        }
        for (result, n) in [("sent", 1.0), ("failed", 0.0), ("skipped", 1.0)] {
            let got = value(
                &samples,
                MIRROR_REQUESTS_TOTAL,
                &[("route", "r"), ("result", result)],
            );
            assert_eq!(got, n, "{result}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new().unwrap();
        let nasty = "a\"b\\c\nd";
        m.series(nasty, "up\\", "").observe(200, ms(1));
        m.experiment_assignments(nasty, "v\"").inc();
        let text = m.render();
        assert!(
            text.contains(r#"route="a\"b\\c\nd""#),
            "raw escaping wrong:\n{text}"
        );
        let samples = parse(&text);
        let want = [("route", nasty), ("upstream", "up\\"), ("code", "200")];
        assert_eq!(value(&samples, REQUESTS_TOTAL, &want), 1.0);
        let want = [("experiment", nasty), ("variant", "v\"")];
        assert_eq!(value(&samples, EXPERIMENT_ASSIGNMENTS_TOTAL, &want), 1.0);
    }

    #[test]
    fn concurrent_observes_are_all_counted() {
        let m = Metrics::new().unwrap();
        let s = m.series("api", "up", "");
        std::thread::scope(|scope| {
            for t in 0..4u16 {
                let s = &s;
                scope.spawn(move || {
                    for _ in 0..10_000 {
                        s.observe(if t % 2 == 0 { 200 } else { 418 }, ms(2));
                    }
                });
            }
        });
        let samples = parse(&m.render());
        assert_eq!(
            value(&samples, REQUESTS_TOTAL, &[("code", "200")]),
            20_000.0
        );
        assert_eq!(
            value(&samples, REQUESTS_TOTAL, &[("code", "418")]),
            20_000.0
        );
        let count = value(&samples, "pointsman_request_duration_seconds_count", &[]);
        assert_eq!(count, 40_000.0);
    }

    #[test]
    fn code_slots_match_common_codes() {
        for (i, &code) in COMMON_CODES.iter().enumerate() {
            assert_eq!(usize::from(CODE_SLOT[usize::from(code)]), i, "{code}");
        }
        let slotted = CODE_SLOT.iter().filter(|&&s| s != NO_SLOT).count();
        assert_eq!(slotted, COMMON_CODES.len(), "duplicate common code");
    }
}
