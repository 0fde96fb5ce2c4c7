//! Compiled A/B experiments: sticky, GrowthBook-compatible assignment with
//! targeting, namespaces, coverage, forcing and exposure counting.

use super::hash::{self, HashVersion};
use super::stats::{SRM_THRESHOLD, srm_p_value};
use super::sticky::{StickyConfig, StickyId, StickyLookup, mint_id, set_cookie_value};
use crate::config::Diagnostics;
use crate::config::raw::{self, Spanned};
use crate::router::UpstreamId;
use crate::rules::Expr;
use serde::Serialize;
use serde_saphyr::Location;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A compiled experiment (SPEC 2 `experiments`, SPEC 3).
#[derive(Debug)]
pub struct Experiment {
    /// The experiment's name (the route's name for an inline experiment).
    pub name: Arc<str>,
    /// Hash seed (default: the name).
    pub seed: Arc<str>,
    pub hash_version: HashVersion,
    /// Share of eligible users enrolled, in `[0, 1]`.
    pub coverage: f64,
    /// Mutual-exclusion slice `[name, start, end)`.
    pub namespace: Option<(Arc<str>, f64, f64)>,
    /// The compiled targeting `match`; the caller evaluates it.
    pub targeting: Option<Expr>,
    /// Whether `x-pointsman-force` / `pm_force` are honoured.
    pub allow_force: bool,
    /// Where the sticky id comes from.
    pub sticky: StickyConfig,
    /// Variants in file order, weights normalized to sum to 1.
    pub variants: Vec<Variant>,
    /// Variant ranges from `get_bucket_ranges(weights, coverage)`.
    ranges: Vec<(f64, f64)>,
    /// Exposures per variant (forced requests not counted).
    counters: Arc<[AtomicU64]>,
    /// SHA-256 of the normalized definition.
    definition_hash: [u8; 32],
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: Arc<str>,
    /// The configured share, normalized (the weights sum to 1).
    pub weight: f64,
    /// `None`: the route's `to`.
    pub upstream: Option<UpstreamId>,
    /// `EXPERIMENT=VARIANT`, the `x-pointsman-variant` value sent upstream
    /// (`None` if the names cannot form a header value).
    pub header: Option<http::HeaderValue>,
}

/// Why a request was not enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// The targeting `match` did not hold.
    Targeting,
    /// The id hashed outside the namespace slice.
    Namespace,
    /// The bucket fell outside every variant's range.
    Coverage,
    /// No sticky id was present and none was minted.
    NoId,
}

/// What [`Experiment::assign`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Assigned by hash; counted as an exposure.
    Enrolled(usize),
    /// Forced by `x-pointsman-force` / `pm_force`; not counted.
    Forced(usize),
    /// Goes to the route's `to`, carries no `x-pointsman-variant`.
    Excluded(Exclusion),
}

/// One request's assignment, with what `explain` shows.
#[derive(Debug, Clone)]
pub struct Assignment<'a> {
    pub outcome: Outcome,
    /// The sticky id and its source (minted when `sticky.minted`).
    pub sticky: Option<StickyId<'a>>,
    /// The id's bucket in `[0, 1)`, when hashed.
    pub bucket: Option<f64>,
    /// The chosen variant's range, when enrolled by hash.
    pub range: Option<(f64, f64)>,
}

impl Assignment<'_> {
    /// The variant index, enrolled or forced.
    pub fn variant(&self) -> Option<usize> {
        match self.outcome {
            Outcome::Enrolled(i) | Outcome::Forced(i) => Some(i),
            Outcome::Excluded(_) => None,
        }
    }

    /// The `Set-Cookie` value to send when an id was minted for this
    /// request (`tls`: the listener is TLS, adds `Secure`).
    pub fn set_cookie(&self, tls: bool) -> Option<String> {
        minted_cookie(self.sticky.as_ref(), tls)
    }
}

/// `Set-Cookie` for a minted id, `None` otherwise.
pub(crate) fn minted_cookie(id: Option<&StickyId<'_>>, tls: bool) -> Option<String> {
    let id = id.filter(|id| id.minted)?;
    match &id.source {
        super::StickySource::Cookie(name) => Some(set_cookie_value(name, &id.value, tls)),
        _ => None,
    }
}

/// `/experiments` data for one experiment.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentStats {
    pub name: String,
    pub variants: Vec<VariantStats>,
    /// Exposures counted over every variant.
    pub total: u64,
    /// Chi-square goodness-of-fit p-value of the counts against the shares
    /// (`None` before two arms with a share have counts).
    pub p_value: Option<f64>,
    /// `p_value < 0.001`.
    pub srm: bool,
}

/// `/experiments` data for one variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantStats {
    pub name: String,
    /// Configured share of enrolled users.
    pub share: f64,
    pub assignments: u64,
}

impl Experiment {
    /// Assigns one request. `targeting_passed`: the caller's evaluation of
    /// [`Experiment::targeting`] (true when there is none). `forced`: the
    /// variant named for this experiment by [`super::forced_variant`]; it
    /// is ignored without `allow_force` or when no variant has that name.
    ///
    /// An id is minted only when targeting passed and the request is not
    /// forced; send [`Assignment::set_cookie`] then. Enrolled requests are
    /// counted.
    pub fn assign<'a>(
        &self,
        req: &'a dyn StickyLookup,
        targeting_passed: bool,
        forced: Option<&str>,
    ) -> Assignment<'a> {
        self.assign_counting(req, targeting_passed, forced, true)
    }

    /// [`Experiment::assign`] without counting the exposure (`explain`).
    pub fn preview<'a>(
        &self,
        req: &'a dyn StickyLookup,
        targeting_passed: bool,
        forced: Option<&str>,
    ) -> Assignment<'a> {
        self.assign_counting(req, targeting_passed, forced, false)
    }

    fn assign_counting<'a>(
        &self,
        req: &'a dyn StickyLookup,
        targeting_passed: bool,
        forced: Option<&str>,
        count: bool,
    ) -> Assignment<'a> {
        if self.allow_force
            && let Some(i) = forced.and_then(|f| self.variant_index(f))
        {
            return Assignment {
                outcome: Outcome::Forced(i),
                sticky: self.sticky.lookup(req),
                bucket: None,
                range: None,
            };
        }
        let excluded = |why, sticky, bucket| Assignment {
            outcome: Outcome::Excluded(why),
            sticky,
            bucket,
            range: None,
        };
        if !targeting_passed {
            return excluded(Exclusion::Targeting, None, None);
        }
        let Some(id) = self.sticky.lookup_or_mint(req) else {
            return excluded(Exclusion::NoId, None, None);
        };
        let bucket = self.bucket(&id.value);
        match self.place(&id.value) {
            Ok(i) => {
                if count && let Some(c) = self.counters.get(i) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                Assignment {
                    outcome: Outcome::Enrolled(i),
                    sticky: Some(id),
                    bucket: Some(bucket),
                    range: self.ranges.get(i).copied(),
                }
            }
            Err(Exclusion::Namespace) => excluded(Exclusion::Namespace, Some(id), None),
            Err(why) => excluded(why, Some(id), Some(bucket)),
        }
    }

    /// Where `id` lands, ignoring targeting and forcing, without counting:
    /// the variant index, or why it is excluded (namespace or coverage).
    /// For `assign ID...` and `diff`.
    pub fn place(&self, id: &str) -> Result<usize, Exclusion> {
        if let Some((ns, start, end)) = &self.namespace
            && !hash::in_namespace(id, (ns, *start, *end))
        {
            return Err(Exclusion::Namespace);
        }
        hash::choose_variation(self.bucket(id), &self.ranges).ok_or(Exclusion::Coverage)
    }

    /// The id's bucket: `hash(seed, id, hash_version)`.
    pub fn bucket(&self, id: &str) -> f64 {
        hash::hash_with(self.hash_version, &self.seed, id)
    }

    /// The index of the variant named `name`.
    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| &*v.name == name)
    }

    /// The variant ranges `[start, end)` in `[0, 1)`.
    pub fn ranges(&self) -> &[(f64, f64)] {
        &self.ranges
    }

    /// Share of each variant over `n` random ids (ignoring targeting); the
    /// rest (1 minus the sum) is not enrolled. For `assign --sample N`.
    pub fn sample_shares(&self, n: usize) -> Vec<f64> {
        let mut counts = vec![0u64; self.variants.len()];
        for _ in 0..n {
            if let Some(c) = self.place(&mint_id()).ok().and_then(|i| counts.get_mut(i)) {
                *c += 1;
            }
        }
        counts
            .into_iter()
            .map(|c| if n == 0 { 0.0 } else { c as f64 / n as f64 })
            .collect()
    }

    /// Exposures counted per variant, in variant order.
    pub fn assignments(&self) -> Vec<u64> {
        self.counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Variants, shares, counts and the SRM test, for `/experiments`.
    pub fn stats(&self) -> ExperimentStats {
        let counts = self.assignments();
        let shares: Vec<f64> = self.variants.iter().map(|v| v.weight).collect();
        let p_value = srm_p_value(&counts, &shares);
        ExperimentStats {
            name: self.name.to_string(),
            variants: self
                .variants
                .iter()
                .zip(&counts)
                .map(|(v, c)| VariantStats {
                    name: v.name.to_string(),
                    share: v.weight,
                    assignments: *c,
                })
                .collect(),
            total: counts.iter().sum(),
            p_value,
            srm: p_value.is_some_and(|p| p < SRM_THRESHOLD),
        }
    }

    /// SHA-256 of the normalized definition (upstreams by name, the
    /// targeting by its compiled form): equal across reloads exactly when
    /// the definition is unchanged.
    pub fn definition_hash(&self) -> [u8; 32] {
        self.definition_hash
    }

    /// Keeps `previous`'s counters when its definition is the same (SPEC 7:
    /// counts survive a reload that leaves the experiment unchanged). Call
    /// before the experiment is shared.
    pub fn carry_over_from(&mut self, previous: &Experiment) {
        if previous.definition_hash == self.definition_hash
            && previous.counters.len() == self.counters.len()
        {
            self.counters = previous.counters.clone();
        }
    }
}

/// Compiles one experiment. The caller compiles the targeting `match` and
/// passes it in, and resolves upstream names (`resolve_upstream` reports
/// its own error and returns `None`). Every problem is reported to `diags`
/// with its position; `None` when any was found.
pub fn compile_experiment(
    name: &str,
    raw: &raw::Experiment,
    file: &Arc<str>,
    at: Location,
    diags: &mut Diagnostics,
    resolve_upstream: &dyn Fn(&Spanned<String>) -> Option<UpstreamId>,
    targeting: Option<Expr>,
) -> Option<Experiment> {
    let errors_before = error_count(diags);
    let mut err = |at: Location, msg: String| diags.error(file, at, msg);

    let hash_version = match &raw.hash_version {
        None => HashVersion::V2,
        Some(v) => HashVersion::from_number(v.value).unwrap_or_else(|| {
            err(
                v.referenced,
                format!(
                    "experiment {name:?}: hash_version must be 1 or 2, not {}",
                    v.value
                ),
            );
            HashVersion::V2
        }),
    };
    let coverage = match &raw.coverage {
        None => 1.0,
        Some(c) => {
            if !(0.0..=1.0).contains(&c.value) {
                err(
                    c.referenced,
                    format!(
                        "experiment {name:?}: coverage must be between 0 and 1, not {}",
                        c.value
                    ),
                );
            }
            c.value
        }
    };
    let namespace = raw.namespace.as_ref().map(|ns| {
        let (n, start, end) = &ns.value;
        if !(0.0..=1.0).contains(start) || !(0.0..=1.0).contains(end) {
            err(
                ns.referenced,
                format!("experiment {name:?}: namespace start and end must be between 0 and 1"),
            );
        } else if start >= end {
            err(
                ns.referenced,
                format!(
                    "experiment {name:?}: namespace start ({start}) must be below its end ({end})"
                ),
            );
        }
        if n.is_empty() {
            err(
                ns.referenced,
                format!("experiment {name:?}: namespace needs a name"),
            );
        }
        (Arc::<str>::from(n.as_str()), *start, *end)
    });
    let sticky = compile_sticky(
        name,
        raw.sticky_on.as_ref(),
        raw.issue_cookie.as_ref(),
        at,
        &mut err,
    );

    let list = &raw.variants.value;
    if list.is_empty() {
        err(
            raw.variants.referenced,
            format!("experiment {name:?} has no variants"),
        );
    }
    let mut seen = HashSet::new();
    let mut variants = Vec::with_capacity(list.len());
    for v in list {
        let vname = &v.value.name;
        if vname.value.is_empty() || vname.value.contains([',', '=']) {
            err(
                vname.referenced,
                format!(
                    "experiment {name:?}: variant name {:?} must be non-empty and contain neither ',' nor '='",
                    vname.value
                ),
            );
        }
        if !seen.insert(vname.value.as_str()) {
            err(
                vname.referenced,
                format!(
                    "experiment {name:?}: variant {:?} is defined twice",
                    vname.value
                ),
            );
        }
        let w = &v.value.weight;
        if !w.value.is_finite() || w.value < 0.0 {
            err(
                w.referenced,
                format!(
                    "experiment {name:?}: variant {:?} has weight {}; weights must be 0 or more",
                    vname.value, w.value
                ),
            );
        }
        let upstream = v.value.to.as_ref().and_then(resolve_upstream);
        variants.push(Variant {
            name: vname.value.as_str().into(),
            weight: w.value,
            upstream,
            header: http::HeaderValue::from_str(&format!("{name}={}", vname.value)).ok(),
        });
    }
    let total: f64 = variants.iter().map(|v| v.weight).sum();
    if !list.is_empty() && variants.iter().all(|v| v.weight >= 0.0) && total <= 0.0 {
        err(
            raw.variants.referenced,
            format!("experiment {name:?}: every variant has weight 0"),
        );
    }
    // resolve_upstream reports its own errors, so count them all.
    if error_count(diags) > errors_before {
        return None;
    }
    if !(0.99..=1.01).contains(&total) {
        for v in &mut variants {
            v.weight /= total;
        }
    }
    let weights: Vec<f64> = variants.iter().map(|v| v.weight).collect();
    let ranges = hash::get_bucket_ranges(variants.len(), coverage, Some(&weights));
    let seed: Arc<str> = raw.seed.as_ref().map_or(name, |s| s.value.as_str()).into();
    let allow_force = raw.allow_force.as_ref().is_some_and(|f| f.value);

    let mut canon = format!(
        "experiment\n{name}\n{seed}\n{}\n{coverage:?}\n{namespace:?}\n{allow_force}\n{sticky:?}\n{targeting:?}\n",
        hash_version.number()
    );
    for (v, raw_v) in variants.iter().zip(list) {
        let to = raw_v.value.to.as_ref().map(|t| t.value.as_str());
        canon.push_str(&format!("{}\t{:?}\t{to:?}\n", v.name, v.weight));
    }
    let definition_hash: [u8; 32] = Sha256::digest(canon.as_bytes()).into();

    Some(Experiment {
        name: name.into(),
        seed,
        hash_version,
        coverage,
        namespace,
        targeting,
        allow_force,
        sticky,
        counters: variants.iter().map(|_| AtomicU64::new(0)).collect(),
        variants,
        ranges,
        definition_hash,
    })
}

/// Errors (not warnings) recorded so far.
pub(crate) fn error_count(diags: &Diagnostics) -> usize {
    diags
        .items()
        .iter()
        .filter(|d| d.severity == crate::config::Severity::Error)
        .count()
}

/// Builds the sticky config of an experiment or canary, reporting a bad
/// `sticky_on` entry or `issue_cookie` at its position.
pub(crate) fn compile_sticky(
    owner: &str,
    sticky_on: Option<&Spanned<Vec<Spanned<String>>>>,
    issue_cookie: Option<&Spanned<String>>,
    at: Location,
    err: &mut dyn FnMut(Location, String),
) -> StickyConfig {
    let list: Option<Vec<&str>> =
        sticky_on.map(|s| s.value.iter().map(|e| e.value.as_str()).collect());
    if let Some(s) = sticky_on
        && s.value.is_empty()
        && issue_cookie.is_none()
    {
        err(
            s.referenced,
            format!("{owner:?}: sticky_on is empty, so no request could be assigned"),
        );
    }
    match StickyConfig::build(list.as_deref(), issue_cookie.map(|c| c.value.as_str())) {
        Ok(c) => c,
        Err((index, e)) => {
            let pos = match index {
                Some(i) => sticky_on.and_then(|s| s.value.get(i)).map(|e| e.referenced),
                None => issue_cookie.map(|c| c.referenced),
            };
            err(pos.unwrap_or(at), format!("{owner:?}: {e}"));
            StickyConfig {
                sources: Vec::new(),
                mint_cookie: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::sticky::SimpleRequest;

    fn compile(yaml: &str) -> (Option<Experiment>, Vec<String>) {
        let raw: raw::Experiment = serde_saphyr::from_str(yaml).unwrap();
        let file: Arc<str> = "t.yaml".into();
        let mut diags = Diagnostics::default();
        let resolve = |s: &Spanned<String>| (s.value == "v2").then_some(7);
        let e = compile_experiment(
            "exp",
            &raw,
            &file,
            raw.variants.referenced,
            &mut diags,
            &resolve,
            None,
        );
        (e, diags.items().iter().map(ToString::to_string).collect())
    }

    fn ok(yaml: &str) -> Experiment {
        let (e, d) = compile(yaml);
        assert!(d.is_empty(), "{d:?}");
        e.unwrap()
    }

    #[test]
    fn weights_are_normalized_unless_they_sum_to_one() {
        let e = ok("variants:\n  - { name: a, weight: 90 }\n  - { name: b, weight: 10, to: v2 }\n");
        assert_eq!(e.variants[0].weight, 0.9);
        assert_eq!(e.variants[1].upstream, Some(7));
        assert_eq!(e.variants[0].upstream, None);
        assert_eq!(e.hash_version, HashVersion::V2);
        assert_eq!(&*e.seed, "exp");
        let e = ok("variants:\n  - { name: a, weight: 0.4 }\n  - { name: b, weight: 0.5999 }\n");
        assert_eq!(e.ranges(), &[(0.0, 0.4), (0.4, 0.9999)]);
    }

    #[test]
    fn config_errors_name_their_line() {
        let cases = [
            (
                "variants: []\n",
                "1:11: error: experiment \"exp\" has no variants",
            ),
            (
                "variants:\n  - { name: a, weight: -1 }\n",
                "2:24: error: experiment \"exp\": variant \"a\" has weight -1",
            ),
            (
                "variants:\n  - { name: a, weight: 0 }\n  - { name: b, weight: 0 }\n",
                "every variant has weight 0",
            ),
            (
                "variants:\n  - { name: a, weight: 1 }\n  - { name: a, weight: 1 }\n",
                "3:13: error: experiment \"exp\": variant \"a\" is defined twice",
            ),
            (
                "coverage: 1.5\nvariants:\n  - { name: a, weight: 1 }\n",
                "1:11: error: experiment \"exp\": coverage must be between 0 and 1",
            ),
            (
                "hash_version: 3\nvariants:\n  - { name: a, weight: 1 }\n",
                "1:15: error: experiment \"exp\": hash_version must be 1 or 2",
            ),
            (
                "namespace: [n, 0.5, 0.5]\nvariants:\n  - { name: a, weight: 1 }\n",
                "start (0.5) must be below its end",
            ),
            (
                "namespace: [n, 0, 1.5]\nvariants:\n  - { name: a, weight: 1 }\n",
                "namespace start and end must be between 0 and 1",
            ),
            (
                "sticky_on: [ip, 'body:x']\nvariants:\n  - { name: a, weight: 1 }\n",
                "1:17: error: \"exp\": invalid sticky_on source \"body:x\"",
            ),
        ];
        for (yaml, want) in cases {
            let (e, d) = compile(yaml);
            assert!(e.is_none(), "{yaml}");
            assert!(d.iter().any(|m| m.contains(want)), "{yaml}: {d:?}");
        }
    }

    #[test]
    fn assignment_is_sticky_and_counted() {
        let e = ok(
            "sticky_on: [header:x-user-id]\nvariants:\n  - { name: a, weight: 1 }\n  - { name: b, weight: 1 }\n",
        );
        let req = SimpleRequest::default().header("x-user-id", "user-1");
        let first = e.assign(&req, true, None);
        let Outcome::Enrolled(i) = first.outcome else {
            panic!("{first:?}")
        };
        assert_eq!(first.bucket, Some(hash::hash("exp", "user-1", 2).unwrap()));
        assert!(first.range.is_some());
        for _ in 0..4 {
            assert_eq!(e.assign(&req, true, None).variant(), Some(i));
        }
        assert_eq!(e.assignments()[i], 5);
        assert_eq!(first.set_cookie(false), None);
    }

    #[test]
    fn exclusions_and_no_id() {
        let e = ok("sticky_on: [header:x-user-id]\nvariants:\n  - { name: a, weight: 1 }\n");
        let none = SimpleRequest::default();
        assert_eq!(
            e.assign(&none, true, None).outcome,
            Outcome::Excluded(Exclusion::NoId)
        );
        let req = SimpleRequest::default().header("x-user-id", "u");
        assert_eq!(
            e.assign(&req, false, None).outcome,
            Outcome::Excluded(Exclusion::Targeting)
        );
        let e = ok("coverage: 0\nvariants:\n  - { name: a, weight: 1 }\n");
        let req = SimpleRequest::default().cookie("pm_uid=u");
        let a = e.assign(&req, true, None);
        assert_eq!(a.outcome, Outcome::Excluded(Exclusion::Coverage));
        assert!(a.bucket.is_some());
        assert_eq!(e.assignments(), vec![0]);
    }

    #[test]
    fn mints_only_when_needed() {
        let e = ok(
            "allow_force: true\nvariants:\n  - { name: a, weight: 1 }\n  - { name: b, weight: 1 }\n",
        );
        let none = SimpleRequest::default();
        let a = e.assign(&none, true, None);
        assert!(a.sticky.as_ref().is_some_and(|s| s.minted));
        let cookie = a.set_cookie(true).unwrap();
        assert!(
            cookie.starts_with("pm_uid=") && cookie.ends_with("; HttpOnly; SameSite=Lax; Secure")
        );
        assert!(e.assign(&none, false, None).sticky.is_none());
        let forced = e.assign(&none, false, Some("b"));
        assert_eq!(forced.outcome, Outcome::Forced(1));
        assert_eq!(forced.set_cookie(false), None);
        assert_eq!(e.assignments().iter().sum::<u64>(), 1);
        // An unknown variant is not a force.
        assert_ne!(
            e.assign(&none, false, Some("zz")).outcome,
            Outcome::Forced(0)
        );
    }

    #[test]
    fn force_needs_allow_force() {
        let e = ok("variants:\n  - { name: a, weight: 1 }\n  - { name: b, weight: 1 }\n");
        let req = SimpleRequest::default();
        assert_eq!(
            e.assign(&req, false, Some("b")).outcome,
            Outcome::Excluded(Exclusion::Targeting)
        );
    }

    #[test]
    fn counters_survive_an_unchanged_definition_only() {
        let yaml = "variants:\n  - { name: a, weight: 1 }\n";
        let old = ok(yaml);
        old.assign(&SimpleRequest::default().cookie("pm_uid=x"), true, None);
        let mut same = ok(yaml);
        same.carry_over_from(&old);
        assert_eq!(same.assignments(), vec![1]);
        let mut changed = ok("variants:\n  - { name: a2, weight: 1 }\n");
        assert_ne!(changed.definition_hash(), old.definition_hash());
        changed.carry_over_from(&old);
        assert_eq!(changed.assignments(), vec![0]);
    }

    #[test]
    fn sample_shares_follow_weights() {
        let e = ok("variants:\n  - { name: a, weight: 3 }\n  - { name: b, weight: 1 }\n");
        let s = e.sample_shares(20_000);
        assert!(
            (s[0] - 0.75).abs() < 0.02 && (s[1] - 0.25).abs() < 0.02,
            "{s:?}"
        );
        let stats = e.stats();
        assert_eq!(stats.p_value, None);
        assert!(!stats.srm);
    }
}
