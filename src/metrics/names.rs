//! Every metric name (SPEC 9) and fixed label value, in one place.

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
/// Counter `{upstream, endpoint}`: passive ejections (SPEC 6.1).
pub const UPSTREAM_EJECTIONS_TOTAL: &str = "pointsman_upstream_ejections_total";
/// Counter `{upstream, endpoint, result}`, result ∈ [`HEALTH_CHECK_RESULTS`].
pub const HEALTH_CHECKS_TOTAL: &str = "pointsman_health_checks_total";

/// Gauge `{experiment, variant}`: distinct users enrolled (SPEC 3).
pub const EXPERIMENT_USERS: &str = "pointsman_experiment_users";
/// Counter: exposure log lines written.
pub const EXPOSURES_LOGGED_TOTAL: &str = "pointsman_exposures_logged_total";
/// Counter: exposure log lines dropped (queue full, write failed).
pub const EXPOSURES_DROPPED_TOTAL: &str = "pointsman_exposures_dropped_total";
/// Counter: log lines (access and other) dropped because the log queue was
/// full (its reader stalled).
pub const LOG_LINES_DROPPED_TOTAL: &str = "pointsman_log_lines_dropped_total";

/// Gauge: 1 while the fleet's shared store answers (fleet mode only).
pub const FLEET_CONNECTED: &str = "pointsman_fleet_connected";

/// Gauge `{version, commit}`, always 1: what binary is running.
pub const BUILD_INFO: &str = "pointsman_build_info";

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
    EXPERIMENT_USERS,
    EXPOSURES_LOGGED_TOTAL,
    EXPOSURES_DROPPED_TOTAL,
    LOG_LINES_DROPPED_TOTAL,
    UPSTREAM_EJECTIONS_TOTAL,
    HEALTH_CHECKS_TOTAL,
    FLEET_CONNECTED,
    BUILD_INFO,
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
pub(super) const DURATION_BUCKETS_NS: [u64; 15] = [
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

/// Values of the `result` label of [`HEALTH_CHECKS_TOTAL`].
pub const HEALTH_CHECK_RESULTS: [&str; 2] = ["pass", "fail"];

/// Values of the `kind` label of [`UPSTREAM_ERRORS_TOTAL`].
pub const UPSTREAM_ERROR_KINDS: [&str; 4] = ["connect", "timeout", "reset", "no_healthy"];

/// Status codes with a fixed counter slot in every [`RequestSeries`]: the
/// codes the proxy itself emits and the ones upstreams commonly send.
pub const COMMON_CODES: [u16; 36] = [
    100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406,
    408, 409, 410, 412, 413, 415, 416, 422, 429, 431, 499, 500, 501, 502, 503, 504, 505,
];

/// The lowest and highest code counted exactly (`http::StatusCode`'s range).
pub(super) const MIN_CODE: u16 = 100;
pub(super) const MAX_CODE: u16 = 999;
pub(super) const NO_SLOT: u8 = u8::MAX;

/// `CODE_SLOT[code]` is the index of `code` in [`COMMON_CODES`], or [`NO_SLOT`].
pub(super) static CODE_SLOT: [u8; MAX_CODE as usize + 1] = {
    let mut table = [NO_SLOT; MAX_CODE as usize + 1];
    let mut i = 0;
    while i < COMMON_CODES.len() {
        table[COMMON_CODES[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Values of the `state` label of [`CANARY_STATE`] (and `to` of
/// [`CANARY_TRANSITIONS_TOTAL`]), one per canary state of SPEC 4.
pub const CANARY_STATES: [&str; 5] = ["static", "progressing", "paused", "promoted", "rolled_back"];
