//! Request series: per (route, upstream, variant) counters by status code
//! and a duration histogram, recorded with relaxed atomics and exported by
//! a custom collector.

use super::names::*;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLockReadGuard, RwLockWriteGuard};

/// The one lock in the crate (clippy.toml bans the others): linking a
/// config resolves thousands of new series in a row, and copying the whole
/// set for each (copy on write) would be quadratic. Never taken on the
/// request path: only at link, reload and scrape time.
#[allow(clippy::disallowed_types)]
type SeriesLock = std::sync::RwLock<SeriesSet>;
use std::time::Duration;

/// Request count by status code and duration histogram of one (route,
/// upstream, variant). Recording is lock-free and allocation-free once the
/// series has seen its first request.
#[derive(Debug)]
pub struct RequestSeries {
    pub(super) route: Arc<str>,
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
    pub(super) upstream: Arc<str>,
    pub(super) variant: Arc<str>,
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

/// Every live [`RequestSeries`]. Changed only when a config is linked and
/// after a reload, read at scrape time; requests never touch it (they hold
/// their handles).
#[derive(Debug)]
pub(super) struct RequestTable {
    requests_desc: Desc,
    duration_desc: Desc,
    series: SeriesLock,
}

impl RequestTable {
    pub(super) fn new() -> prometheus::Result<Self> {
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
            series: SeriesLock::new(HashSet::new()),
        })
    }

    /// The series with `labels`; `owned` gives its labels when it is new.
    pub(super) fn series(
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

    pub(super) fn retain(&self, keep: impl Fn(&RequestSeries) -> bool) {
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
pub(super) struct RequestCollector(pub(super) Arc<RequestTable>);

impl Collector for RequestCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.requests_desc, &self.0.duration_desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let table = self.0.all();
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        for s in &table {
            crate::yielding::yield_point();
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
