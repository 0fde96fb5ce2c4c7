//! Endpoint health (SPEC 6.1): what the active checks found, passive
//! ejection after consecutive upstream faults, the last failure, and the
//! rate-limited warn lines of SPEC 6. All of it is atomics (plus `ArcSwap`
//! for the text of the last check and failure), shared by the balancer, the
//! request path, the checker and the admin API.
//!
//! Times are milliseconds on a process-wide monotonic clock ([`now_ms`]);
//! `0` means "never" / "not ejected".

use super::def::{HealthCheck, Outlier};
use crate::metrics::{EndpointCounters, UpstreamErrors};
use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The process-wide epoch of [`now_ms`].
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the process's first look at the clock; monotonic.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (wall clock, for the admin API).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long the `times`-th ejection in a row lasts: `eject_for` times
/// `times`, capped at 10× (SPEC 6.1).
pub(crate) fn eject_duration(eject_for: Duration, times: u32) -> Duration {
    eject_for.saturating_mul(times.clamp(1, 10))
}

/// How many of `endpoints` may be ejected at once: `max_ejected_percent`
/// of them, rounded down, and always at least one (SPEC 6.1).
pub(crate) fn max_ejectable(endpoints: usize, percent: u32) -> usize {
    let percent = usize::try_from(percent.min(100)).unwrap_or(100);
    (endpoints.saturating_mul(percent) / 100).max(1)
}

/// What kind of upstream failure an endpoint had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// Connect refused, timed out, or TLS not verified.
    Connect = 0,
    /// No response headers in time.
    Timeout = 1,
    /// Closed or reset, before or during the response.
    Reset = 2,
    /// A 5xx answer (counts toward ejection; not logged as a failure).
    Status = 3,
}

impl FaultKind {
    /// The name used in logs and the admin API (the `kind` of SPEC 9
    /// where there is one).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultKind::Connect => "connect",
            FaultKind::Timeout => "timeout",
            FaultKind::Reset => "reset",
            FaultKind::Status => "status",
        }
    }
}

/// At most one log line per window, counting the lines left out.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    /// [`now_ms`] + 1 of the last line written (0: never).
    last: AtomicU64,
    left_out: AtomicU64,
}

impl LogLimit {
    /// The window: SPEC 6 allows one line per endpoint and kind per second.
    const WINDOW_MS: u64 = 1000;

    /// `Some(lines left out since the last one)` when a line may be
    /// written at `now` (ms), else `None` (and the line is counted).
    pub(crate) fn admit(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_add(1) >= last.saturating_add(Self::WINDOW_MS);
        if due
            && self
                .last
                .compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The outcome of one active check, as the admin API shows it.
#[derive(Debug)]
pub(crate) struct CheckRecord {
    /// Unix milliseconds.
    pub(crate) at: u64,
    pub(crate) pass: bool,
    pub(crate) reason: String,
}

/// An upstream failure before response headers, as the admin API shows
/// it.
#[derive(Debug)]
pub(crate) struct FailureRecord {
    /// Unix milliseconds.
    pub(crate) at: u64,
    pub(crate) kind: FaultKind,
    pub(crate) reason: String,
    /// Orders it against the last 5xx (both may fall in one millisecond).
    seq: u64,
}

/// The metric handles of one endpoint (set once, when the upstream runtime
/// is first linked to the process's metrics).
#[derive(Debug)]
pub(crate) struct EndpointMetrics {
    pub(crate) errors: UpstreamErrors,
    pub(crate) counters: EndpointCounters,
}

/// The live state of one endpoint. Shared (`Arc`) by the upstream runtime,
/// the serving threads' shares of it (which the response bodies and
/// tunnels in flight hold), and the checker.
#[derive(Debug)]
pub(crate) struct Vitals {
    /// The upstream's name (log lines).
    pub(crate) upstream: Arc<str>,
    /// `host:port` (log lines, the access log, metric labels).
    pub(crate) label: Arc<str>,
    /// What the active checks say (true until a check says otherwise).
    healthy: AtomicBool,
    /// Checks passed / failed in a row.
    passes: AtomicU32,
    fails: AtomicU32,
    /// Upstream faults in a row (passive).
    faults: AtomicU32,
    /// [`now_ms`] when the current ejection ends (0: not ejected).
    ejected_until: AtomicU64,
    /// Ejections in a row (reset by an answer after the endpoint returned).
    ejected_in_row: AtomicU32,
    /// Ejections in all.
    ejections: AtomicU64,
    last_check: ArcSwapOption<CheckRecord>,
    /// The last failure with a reason (connect, timeout, reset).
    last_error: ArcSwapOption<FailureRecord>,
    /// The last 5xx answer: unix ms and status, kept in atomics so that a
    /// 5xx costs no allocation.
    last_status_at: AtomicU64,
    last_status: AtomicU16,
    last_status_seq: AtomicU64,
    /// Failures so far: orders the last error against the last 5xx.
    failures: AtomicU64,
    /// One per logged kind: connect, timeout, reset.
    limits: [LogLimit; 3],
    pub(crate) metrics: OnceLock<EndpointMetrics>,
}

impl Vitals {
    pub(crate) fn new(upstream: Arc<str>, label: Arc<str>) -> Self {
        Vitals {
            upstream,
            label,
            healthy: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            faults: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejected_in_row: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            last_check: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            last_status_at: AtomicU64::new(0),
            last_status: AtomicU16::new(0),
            last_status_seq: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            limits: Default::default(),
            metrics: OnceLock::new(),
        }
    }

    /// Whether the active checks call it healthy.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether it is ejected at `now`.
    pub(crate) fn ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// Whether the balancer may pick it at `now`: healthy and not ejected.
    /// The first look after an ejection ended logs its return.
    pub(crate) fn available(&self, now: u64) -> bool {
        self.available_at(|| now)
    }

    /// [`Self::available`] with the time read only when it matters (the
    /// endpoint was ejected): a clock read fewer on nearly every pick.
    pub(crate) fn available_at(&self, now: impl FnOnce() -> u64) -> bool {
        if !self.healthy() {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now() < until {
            return false;
        }
        if self
            .ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::info!(
                target: "upstream",
                upstream = %self.upstream,
                endpoint = %self.label,
                reason = "its ejection time is over",
                "endpoint back in rotation"
            );
        }
        true
    }

    /// An answer below 500: the faults in a row start again, and an
    /// endpoint that came back from ejection is trusted again.
    pub(crate) fn answered(&self) {
        if self.faults.load(Ordering::Relaxed) != 0 {
            self.faults.store(0, Ordering::Relaxed);
        }
        if self.ejected_in_row.load(Ordering::Relaxed) != 0
            && self.ejected_until.load(Ordering::Relaxed) == 0
        {
            self.ejected_in_row.store(0, Ordering::Relaxed);
        }
    }

    /// A 5xx answer: remembered without allocating. Returns the faults in
    /// a row.
    pub(crate) fn answered_5xx(&self, status: u16) -> u32 {
        let seq = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.last_status.store(status, Ordering::Relaxed);
        self.last_status_at.store(unix_ms(), Ordering::Relaxed);
        self.last_status_seq.store(seq, Ordering::Relaxed);
        self.faults.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A failure before response headers (`kind` is not `Status`):
    /// remembered, logged at warn (target `upstream`, at most one line per
    /// kind per second with the count of those left out). Returns the
    /// faults in a row.
    pub(crate) fn failed(&self, kind: FaultKind, reason: String) -> u32 {
        self.note_error(kind, reason);
        self.faults.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A reset in the middle of a response: remembered and logged, but
    /// outside the faults in a row (the answer already counted).
    pub(crate) fn reset_mid_response(&self, reason: String) {
        self.note_error(FaultKind::Reset, reason);
    }

    fn note_error(&self, kind: FaultKind, reason: String) {
        if let Some(limit) = self.limits.get(kind as usize)
            && let Some(left_out) = limit.admit(now_ms())
        {
            tracing::warn!(
                target: "upstream",
                upstream = %self.upstream,
                endpoint = %self.label,
                kind = kind.as_str(),
                reason = %reason,
                left_out,
                "upstream failure"
            );
        }
        let seq = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.last_error.store(Some(Arc::new(FailureRecord {
            at: unix_ms(),
            kind,
            reason,
            seq,
        })));
    }

    /// Ejects the endpoint at `now` for its next ejection time. `last` is
    /// the fault that made it.
    pub(crate) fn eject(&self, o: &Outlier, now: u64, last: &str) {
        let times = self.ejected_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        let lasts = eject_duration(o.eject_for, times);
        self.ejected_until
            .store(now.saturating_add(millis(lasts)).max(1), Ordering::Relaxed);
        self.faults.store(0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.counters.ejected();
        }
        tracing::warn!(
            target: "upstream",
            upstream = %self.upstream,
            endpoint = %self.label,
            ejected_for = ?lasts,
            times_in_row = times,
            reason = %format_args!(
                "{} upstream faults in a row, the last: {last}",
                o.consecutive_failures
            ),
            "endpoint ejected"
        );
    }

    /// Records the outcome of an active check (`Ok(status)`: it answered)
    /// and moves between healthy and unhealthy per `hc`'s thresholds.
    pub(crate) fn checked(&self, hc: &HealthCheck, outcome: Result<u16, String>) {
        let (pass, reason) = match outcome {
            Ok(status) if (200..400).contains(&status) => (true, format!("answered {status}")),
            Ok(status) => (false, format!("answered {status}")),
            Err(e) => (false, e),
        };
        if let Some(m) = self.metrics.get() {
            m.counters.checked(pass);
        }
        if pass {
            self.fails.store(0, Ordering::Relaxed);
            let n = self
                .passes
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if !self.healthy() && n >= hc.healthy_after {
                self.healthy.store(true, Ordering::Relaxed);
                tracing::info!(
                    target: "upstream",
                    upstream = %self.upstream,
                    endpoint = %self.label,
                    reason = %format_args!("{n} health checks passed in a row, the last: {reason}"),
                    "endpoint healthy"
                );
            }
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let n = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if self.healthy() && n >= hc.unhealthy_after {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(
                    target: "upstream",
                    upstream = %self.upstream,
                    endpoint = %self.label,
                    reason = %format_args!("{n} health checks failed in a row, the last: {reason}"),
                    "endpoint unhealthy"
                );
            } else {
                tracing::debug!(
                    target: "upstream",
                    upstream = %self.upstream,
                    endpoint = %self.label,
                    %reason,
                    "health check failed"
                );
            }
        }
        self.last_check.store(Some(Arc::new(CheckRecord {
            at: unix_ms(),
            pass,
            reason,
        })));
    }

    /// The current ejection: when it ends (unix ms) and the ejections in a
    /// row, if ejected at `now`.
    pub(crate) fn ejection(&self, now: u64) -> Option<(u64, u32)> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until != 0 && now < until).then(|| {
            let left = until - now;
            (
                unix_ms().saturating_add(left),
                self.ejected_in_row.load(Ordering::Relaxed),
            )
        })
    }

    /// Ejections in all.
    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// The last active check.
    pub(crate) fn last_check(&self) -> Option<Arc<CheckRecord>> {
        self.last_check.load_full()
    }

    /// The last failure: the later of the last error and the last 5xx.
    pub(crate) fn last_failure(&self) -> Option<FailureRecord> {
        let error = self.last_error.load_full();
        let status_seq = self.last_status_seq.load(Ordering::Relaxed);
        match error {
            Some(e) if e.seq > status_seq => Some(FailureRecord {
                at: e.at,
                kind: e.kind,
                reason: e.reason.clone(),
                seq: e.seq,
            }),
            _ if status_seq != 0 => Some(FailureRecord {
                at: self.last_status_at.load(Ordering::Relaxed),
                kind: FaultKind::Status,
                reason: format!("answered {}", self.last_status.load(Ordering::Relaxed)),
                seq: status_seq,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier(n: u32, secs: u64, percent: u32) -> Outlier {
        Outlier {
            consecutive_failures: n,
            eject_for: Duration::from_secs(secs),
            max_ejected_percent: percent,
        }
    }

    #[test]
    fn ejection_time_grows_with_ejections_in_a_row_up_to_ten_times() {
        let base = Duration::from_secs(30);
        assert_eq!(eject_duration(base, 1), Duration::from_secs(30));
        assert_eq!(eject_duration(base, 2), Duration::from_secs(60));
        assert_eq!(eject_duration(base, 10), Duration::from_secs(300));
        assert_eq!(eject_duration(base, 11), Duration::from_secs(300));
        assert_eq!(eject_duration(base, u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn at_most_the_percent_is_ejected_but_always_one_may_be() {
        assert_eq!(max_ejectable(4, 50), 2);
        assert_eq!(max_ejectable(5, 50), 2);
        assert_eq!(max_ejectable(3, 50), 1);
        assert_eq!(max_ejectable(1, 50), 1);
        assert_eq!(max_ejectable(10, 0), 1);
        assert_eq!(max_ejectable(10, 100), 10);
        assert_eq!(max_ejectable(10, 250), 10);
    }

    #[test]
    fn an_ejection_ends_by_itself_and_repeats_grow_until_an_answer() {
        let v = Vitals::new("up".into(), "10.0.0.1:80".into());
        let o = outlier(2, 1, 50);
        assert!(v.available(0));
        v.eject(&o, 1_000, "reset");
        assert!(!v.available(1_999));
        assert!(v.ejected(1_999));
        assert!(v.available(2_000), "back after eject_for");
        // Ejected again without an answer in between: twice as long.
        v.eject(&o, 3_000, "reset");
        assert!(!v.available(4_999));
        assert!(v.available(5_000));
        assert_eq!(v.ejections(), 2);
        // An answer after it came back: the next ejection is 1x again.
        v.answered();
        v.eject(&o, 6_000, "reset");
        assert!(v.available(7_000));
    }

    #[test]
    fn checks_move_health_only_after_the_thresholds() {
        let v = Vitals::new("up".into(), "10.0.0.1:80".into());
        let hc = HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
        };
        v.checked(&hc, Ok(500));
        v.checked(&hc, Err("refused".into()));
        assert!(v.healthy(), "two failures are not three");
        v.checked(&hc, Ok(204));
        v.checked(&hc, Ok(404));
        v.checked(&hc, Ok(503));
        assert!(v.healthy(), "a pass restarts the count");
        v.checked(&hc, Ok(500));
        assert!(!v.healthy());
        assert!(!v.available(0));
        v.checked(&hc, Ok(301));
        assert!(!v.healthy(), "one pass is not two");
        v.checked(&hc, Ok(200));
        assert!(v.healthy());
        let last = v.last_check().unwrap();
        assert!(last.pass);
        assert_eq!(last.reason, "answered 200");
    }

    #[test]
    fn failures_count_in_a_row_and_an_answer_resets_them() {
        let v = Vitals::new("up".into(), "10.0.0.1:80".into());
        assert_eq!(v.failed(FaultKind::Connect, "refused".into()), 1);
        assert_eq!(v.answered_5xx(503), 2);
        let last = v.last_failure().unwrap();
        assert_eq!(
            (last.kind, last.reason.as_str()),
            (FaultKind::Status, "answered 503")
        );
        v.answered();
        assert_eq!(v.failed(FaultKind::Timeout, "slow".into()), 1);
        let last = v.last_failure().unwrap();
        assert_eq!(
            (last.kind, last.reason.as_str()),
            (FaultKind::Timeout, "slow")
        );
    }

    #[test]
    fn log_lines_are_limited_per_window_with_a_count_left_out() {
        let l = LogLimit::default();
        assert_eq!(l.admit(5_000), Some(0));
        assert_eq!(l.admit(5_001), None);
        assert_eq!(l.admit(5_999), None);
        assert_eq!(l.admit(6_000), Some(2));
        assert_eq!(l.admit(6_500), None);
        assert_eq!(l.admit(60_000), Some(1));
        // The very first millisecond of the clock is a time like any other.
        let l = LogLimit::default();
        assert_eq!(l.admit(0), Some(0));
        assert_eq!(l.admit(999), None);
        assert_eq!(l.admit(1_000), Some(1));
    }
}
