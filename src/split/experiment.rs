//! Compiled A/B experiments: sticky, GrowthBook-compatible assignment with
//! targeting, namespaces, coverage and forcing. An [`Experiment`] is a pure
//! definition; what it counts lives in a [`super::tally::Tally`] owned by
//! the runtime.

use super::hash::{self, HashVersion};
use super::identity::Identity;
use super::sticky::{StickyConfig, StickyId, StickyLookup, mint_id, set_cookie_value};
use crate::routing::Expr;
use crate::upstream::def::UpstreamId;
use serde::Serialize;
use std::sync::Arc;

/// A compiled experiment (SPEC 2 `experiments`, SPEC 3).
#[derive(Debug)]
pub struct Experiment {
    /// The experiment's name (the route's name for an inline experiment).
    pub name: Arc<str>,
    /// Position in the config's experiment list (indexes runtime state).
    pub index: usize,
    /// Hash seed (default: the name).
    pub seed: Arc<str>,
    /// GrowthBook hash version (1 or 2).
    pub hash_version: HashVersion,
    /// Share of eligible users enrolled, in `[0, 1]`.
    pub coverage: f64,
    /// Mutual-exclusion slice `[name, start, end)`.
    pub namespace: Option<(Arc<str>, f64, f64)>,
    /// The compiled targeting `match`; the caller evaluates it.
    pub targeting: Option<Expr>,
    /// Whether `x-pointsman-force` / `pm_force` are honoured.
    pub allow_force: bool,
    /// Whether the response tells the client its variant
    /// (`x-pointsman-variant`).
    pub expose_variant: bool,
    /// Where the sticky id comes from.
    pub sticky: StickyConfig,
    /// Variants in file order, weights normalized to sum to 1.
    pub variants: Vec<Variant>,
    /// Variant ranges from `get_bucket_ranges(weights, coverage)`.
    pub(crate) ranges: Vec<(f64, f64)>,
    /// The definition's identity (SPEC 7: counts survive while it holds).
    pub(crate) identity: Identity,
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The variant's name (unique within the experiment).
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
    /// The kill switch stopped the experiment.
    Stopped,
}

impl Exclusion {
    /// The reason as `explain` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::Targeting => "targeting",
            Exclusion::Namespace => "namespace",
            Exclusion::Coverage => "coverage",
            Exclusion::NoId => "no_id",
            Exclusion::Stopped => "stopped",
        }
    }
}

/// What [`Experiment::assign`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Assigned by hash; counted as an exposure.
    Enrolled(usize),
    /// Forced by `x-pointsman-force` / `pm_force`; not counted.
    Forced(usize),
    /// The kill switch released this variant to everybody eligible;
    /// counted apart.
    Released(usize),
    /// Goes to the route's `to`, carries no `x-pointsman-variant`.
    Excluded(Exclusion),
}

/// One request's assignment, with what `explain` shows.
#[derive(Debug, Clone)]
pub struct Assignment<'a> {
    /// Enrolled, forced or excluded.
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
            Outcome::Enrolled(i) | Outcome::Forced(i) | Outcome::Released(i) => Some(i),
            Outcome::Excluded(_) => None,
        }
    }

    /// The `Set-Cookie` value to send when an id was minted for this
    /// request (`tls`: the listener is TLS, adds `Secure`).
    pub fn set_cookie(&self, tls: bool) -> Option<String> {
        minted_cookie(self.sticky.as_ref(), tls)
    }
}

/// What the kill switch says about an experiment (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The configured split.
    #[default]
    Running,
    /// Nobody is enrolled: every request goes to the route's `to`.
    Stopped,
    /// Everybody eligible gets this variant.
    Released(usize),
}

impl Mode {
    /// `running`, `stopped` or `released`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Running => "running",
            Mode::Stopped => "stopped",
            Mode::Released(_) => "released",
        }
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

impl Experiment {
    /// Assigns one request; counts nothing (the caller records exposures).
    /// `targeting_passed`: the caller's evaluation of
    /// [`Experiment::targeting`] (true when there is none). `forced`: the
    /// variant named for this experiment by [`super::forced_variant`]; it
    /// is ignored without `allow_force` or when no variant has that name.
    /// `mode`: the kill switch (a stopped experiment enrolls nobody, a
    /// released one gives every eligible request its variant).
    ///
    /// An id is minted only when targeting passed, the experiment runs and
    /// the request is not forced; send [`Assignment::set_cookie`] then.
    pub fn assign<'a>(
        &self,
        req: &'a dyn StickyLookup,
        targeting_passed: bool,
        forced: Option<&str>,
        mode: Mode,
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
        match mode {
            Mode::Running => {}
            Mode::Stopped => return excluded(Exclusion::Stopped, None, None),
            Mode::Released(i) => {
                return Assignment {
                    outcome: Outcome::Released(i),
                    sticky: self.sticky.lookup(req),
                    bucket: None,
                    range: None,
                };
            }
        }
        let Some(id) = self.sticky.lookup_or_mint(req) else {
            return excluded(Exclusion::NoId, None, None);
        };
        let bucket = self.bucket(&id.value);
        match self.place_at(&id.value, bucket) {
            Ok(i) => Assignment {
                outcome: Outcome::Enrolled(i),
                sticky: Some(id),
                bucket: Some(bucket),
                range: self.ranges.get(i).copied(),
            },
            Err(Exclusion::Namespace) => excluded(Exclusion::Namespace, Some(id), None),
            Err(why) => excluded(why, Some(id), Some(bucket)),
        }
    }

    /// Where `id` lands, ignoring targeting and forcing: the variant index,
    /// or why it is excluded (namespace or coverage). For `assign ID...`
    /// and `diff`.
    pub fn place(&self, id: &str) -> Result<usize, Exclusion> {
        self.place_at(id, self.bucket(id))
    }

    /// [`Self::place`] with the id's bucket already known.
    fn place_at(&self, id: &str, bucket: f64) -> Result<usize, Exclusion> {
        if let Some((ns, start, end)) = &self.namespace
            && !hash::in_namespace(id, (ns, *start, *end))
        {
            return Err(Exclusion::Namespace);
        }
        hash::choose_variation(bucket, &self.ranges).ok_or(Exclusion::Coverage)
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

    /// The configured shares of the variants (normalized weights).
    pub fn shares(&self) -> Vec<f64> {
        self.variants.iter().map(|v| v.weight).collect()
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

    /// The definition's identity: equal across reloads, builds and versions
    /// exactly when the definition is unchanged.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}
