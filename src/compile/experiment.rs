//! An `experiments` entry (or a route's inline `experiment`) →
//! [`Experiment`], every problem reported with its position.

use super::sticky::{compile_sticky, error_count};
use crate::config::raw::{self, Spanned};
use crate::config::{Diagnostics, Location};
use crate::routing::Expr;
use crate::split::hash::{self, HashVersion};
use crate::split::identity::Canonical;
use crate::split::{Experiment, Variant};
use crate::upstream::def::UpstreamId;
use std::collections::HashSet;
use std::sync::Arc;

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
    let expose_variant = raw.expose_variant.as_ref().is_some_and(|f| f.value);

    let sources: Vec<String> = sticky.sources.iter().map(ToString::to_string).collect();
    let (ns_name, ns_start, ns_end) = namespace
        .as_ref()
        .map_or((None, 0.0, 1.0), |(n, a, b)| (Some(&**n), *a, *b));
    let identity = Canonical::new("experiment")
        .text("name", name)
        .text("seed", &seed)
        .number("hash_version", f64::from(hash_version.number()))
        .number("coverage", coverage)
        .opt_text("namespace", ns_name)
        .numbers("namespace_range", [ns_start, ns_end])
        .texts("sticky_on", sources.iter().map(String::as_str))
        .opt_text("issue_cookie", sticky.mint_cookie.as_deref())
        .opt_text(
            "targeting",
            targeting.as_ref().map(Expr::summary).as_deref(),
        )
        .texts("variants", variants.iter().map(|v| &*v.name))
        .numbers("weights", variants.iter().map(|v| v.weight))
        .texts(
            "to",
            list.iter()
                .map(|v| v.value.to.as_ref().map_or("", |t| t.value.as_str())),
        )
        .finish();

    Some(Experiment {
        name: name.into(),
        index: 0,
        seed,
        hash_version,
        coverage,
        namespace,
        targeting,
        allow_force,
        expose_variant,
        sticky,
        variants,
        ranges,
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::experiment::Mode;
    use crate::split::sticky::SimpleRequest;
    use crate::split::tally::Tally;
    use crate::split::{Exclusion, Outcome};

    /// Assigns like the request path: counts enrolled requests in `tally`.
    fn assign<'a>(
        e: &Experiment,
        tally: &Tally,
        req: &'a SimpleRequest,
        targeting: bool,
        forced: Option<&str>,
    ) -> crate::split::Assignment<'a> {
        let a = e.assign(req, targeting, forced, Mode::Running);
        if let Outcome::Enrolled(i) = a.outcome {
            tally.record(i, false, std::time::Duration::ZERO);
        }
        a
    }

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
        let tally = Tally::new(e.variants.len());
        let req = SimpleRequest::default().header("x-user-id", "user-1");
        let first = assign(&e, &tally, &req, true, None);
        let Outcome::Enrolled(i) = first.outcome else {
            panic!("{first:?}")
        };
        assert_eq!(first.bucket, Some(hash::hash("exp", "user-1", 2).unwrap()));
        assert!(first.range.is_some());
        for _ in 0..4 {
            assert_eq!(assign(&e, &tally, &req, true, None).variant(), Some(i));
        }
        assert_eq!(tally.assignments()[i], 5);
        assert_eq!(first.set_cookie(false), None);
    }

    #[test]
    fn exclusions_and_no_id() {
        let e = ok("sticky_on: [header:x-user-id]\nvariants:\n  - { name: a, weight: 1 }\n");
        let none = SimpleRequest::default();
        assert_eq!(
            e.assign(&none, true, None, Mode::Running).outcome,
            Outcome::Excluded(Exclusion::NoId)
        );
        let req = SimpleRequest::default().header("x-user-id", "u");
        assert_eq!(
            e.assign(&req, false, None, Mode::Running).outcome,
            Outcome::Excluded(Exclusion::Targeting)
        );
        let e = ok("coverage: 0\nvariants:\n  - { name: a, weight: 1 }\n");
        let tally = Tally::new(e.variants.len());
        let req = SimpleRequest::default().cookie("pm_uid=u");
        let a = assign(&e, &tally, &req, true, None);
        assert_eq!(a.outcome, Outcome::Excluded(Exclusion::Coverage));
        assert!(a.bucket.is_some());
        assert_eq!(tally.assignments(), vec![0]);
    }

    #[test]
    fn mints_only_when_needed() {
        let e = ok(
            "allow_force: true\nvariants:\n  - { name: a, weight: 1 }\n  - { name: b, weight: 1 }\n",
        );
        let tally = Tally::new(e.variants.len());
        let none = SimpleRequest::default();
        let a = assign(&e, &tally, &none, true, None);
        assert!(a.sticky.as_ref().is_some_and(|s| s.minted));
        let cookie = a.set_cookie(true).unwrap();
        assert!(
            cookie.starts_with("pm_uid=") && cookie.ends_with("; HttpOnly; SameSite=Lax; Secure")
        );
        assert!(assign(&e, &tally, &none, false, None).sticky.is_none());
        let forced = assign(&e, &tally, &none, false, Some("b"));
        assert_eq!(forced.outcome, Outcome::Forced(1));
        assert_eq!(forced.set_cookie(false), None);
        assert_eq!(tally.assignments().iter().sum::<u64>(), 1);
        // An unknown variant is not a force.
        assert_ne!(
            e.assign(&none, false, Some("zz"), Mode::Running).outcome,
            Outcome::Forced(0)
        );
    }

    #[test]
    fn the_kill_switch_stops_and_releases() {
        let e = ok(
            "sticky_on: [header:x-u]\nvariants:\n  - { name: a, weight: 1 }\n  - { name: b, weight: 1 }\n",
        );
        let req = SimpleRequest::default().header("x-u", "someone");
        let stopped = e.assign(&req, true, None, Mode::Stopped);
        assert_eq!(stopped.outcome, Outcome::Excluded(Exclusion::Stopped));
        assert_eq!(stopped.variant(), None);
        let released = e.assign(&req, true, None, Mode::Released(1));
        assert_eq!(released.outcome, Outcome::Released(1));
        // Only the eligible: targeting still decides.
        let ineligible = e.assign(&req, false, None, Mode::Released(1));
        assert_eq!(ineligible.outcome, Outcome::Excluded(Exclusion::Targeting));
        // Resumed, the user is back in their own variant.
        let own = e.assign(&req, true, None, Mode::Running).variant();
        assert_eq!(own, e.place("someone").ok());
    }

    #[test]
    fn force_needs_allow_force() {
        let e = ok("variants:\n  - { name: a, weight: 1 }\n  - { name: b, weight: 1 }\n");
        let req = SimpleRequest::default();
        assert_eq!(
            e.assign(&req, false, Some("b"), Mode::Running).outcome,
            Outcome::Excluded(Exclusion::Targeting)
        );
    }

    #[test]
    fn identity_follows_the_definition_only() {
        let yaml = "variants:\n  - { name: a, weight: 1 }\n";
        assert_eq!(ok(yaml).identity(), ok(yaml).identity());
        let changed = ok("variants:\n  - { name: a2, weight: 1 }\n");
        assert_ne!(changed.identity(), ok(yaml).identity());
        let reweighted = ok("variants:\n  - { name: a, weight: 1 }\n  - { name: b, weight: 0 }\n");
        assert_ne!(reweighted.identity(), ok(yaml).identity());
    }

    #[test]
    fn sample_shares_follow_weights() {
        let e = ok("variants:\n  - { name: a, weight: 3 }\n  - { name: b, weight: 1 }\n");
        let s = e.sample_shares(20_000);
        assert!(
            (s[0] - 0.75).abs() < 0.02 && (s[1] - 0.25).abs() < 0.02,
            "{s:?}"
        );
        let stats = Tally::new(e.variants.len()).stats(&e);
        assert_eq!(stats.p_value, None);
        assert!(!stats.srm);
    }
}
