//! `check`'s provable-overlap warnings: routes an earlier route always wins
//! over, and experiments whose namespace slices overlap.
//!
//! Both checks are conservative: they warn only when they can prove the
//! problem, and stay silent otherwise.

use super::Place;
use super::config::Config;
use crate::config::{Diagnostic, Severity};
use foldhash::{HashMap, HashMapExt};

/// Most candidate routes compared with one later route (see
/// [`shadowed_routes`]).
const MAX_CANDIDATES: usize = 4096;

/// Warnings for routes an earlier route provably always wins over.
///
/// A route's `match` is a conjunction of atoms (its top-level conjuncts,
/// each named by its canonical [`crate::routing::Expr::summary`]). When every
/// atom of an earlier route is also an atom of a later one, any request the
/// later route matches is matched first by the earlier one. An empty earlier
/// `match` therefore shadows every route after it. `places[i]` is where
/// `config.routes.routes()[i]` is defined. The warning names the first such
/// earlier route.
///
/// # Cost
///
/// Not pairwise: atoms are interned, and each route with atoms is filed
/// under its rarest atom (fewest routes have it). An earlier route whose
/// atoms are all in a later route has its rarest atom there too, so a later
/// route compares only with the routes filed under one of its own atoms (in
/// file order, stopping at the first that shadows it). Routes with unrelated
/// hosts, paths or headers are never compared. At most [`MAX_CANDIDATES`]
/// earlier routes are compared with one later route; in a config that
/// exceeds this the remaining ones are skipped, which can only leave a
/// warning out (the check stays conservative).
pub(crate) fn shadowed_routes(config: &Config, places: &[Place]) -> Vec<Diagnostic> {
    let shadowers = first_shadowers(&interned_atoms(config));
    let mut out = Vec::new();
    for (j, found) in shadowers.into_iter().enumerate() {
        let Some(place) = places.get(j) else { continue };
        let Some(i) = found else { continue };
        let (Some(earlier), Some(at), Some(route)) = (
            config.routes.routes().get(i),
            places.get(i),
            config.routes.routes().get(j),
        ) else {
            continue;
        };
        out.push(Diagnostic {
            file: place.file.clone(),
            line: place.at.line(),
            column: place.at.column(),
            severity: Severity::Warning,
            message: format!(
                "route `{}` can never match: the earlier route `{}` ({}:{}:{}) matches every request it matches",
                route.name,
                earlier.name,
                at.file,
                at.at.line(),
                at.at.column()
            ),
        });
    }
    out
}

/// For each route, the first earlier route whose atoms (sorted ids) are all
/// among its own, within [`MAX_CANDIDATES`] comparisons.
fn first_shadowers(atoms: &[Vec<usize>]) -> Vec<Option<usize>> {
    // How many routes have each atom.
    let mut count: Vec<usize> = Vec::new();
    for &a in atoms.iter().flatten() {
        if count.len() <= a {
            count.resize(a + 1, 0);
        }
        count[a] += 1;
    }
    // Routes by their rarest atom, in file order; the first empty `match`.
    let mut filed: Vec<Vec<usize>> = vec![Vec::new(); count.len()];
    let mut first_empty = None;
    for (i, set) in atoms.iter().enumerate() {
        match set.iter().min_by_key(|&&a| (count[a], a)) {
            Some(&key) => filed[key].push(i),
            None => {
                first_empty.get_or_insert(i);
            }
        }
    }
    let mut out = Vec::with_capacity(atoms.len());
    for (j, later) in atoms.iter().enumerate() {
        let mut found = first_empty.filter(|&e| e < j);
        let mut budget = MAX_CANDIDATES;
        'atoms: for &a in later {
            for &i in &filed[a] {
                if i >= j || found.is_some_and(|f| i >= f) {
                    break;
                }
                if budget == 0 {
                    break 'atoms;
                }
                budget -= 1;
                if is_subset(&atoms[i], later) {
                    found = Some(i);
                    break;
                }
            }
        }
        out.push(found);
    }
    out
}

/// Each route's atoms as a sorted, deduplicated list of ids (equal
/// summaries, equal ids).
fn interned_atoms(config: &Config) -> Vec<Vec<usize>> {
    let mut ids: HashMap<String, usize> = HashMap::new();
    config
        .routes
        .routes()
        .iter()
        .map(|r| {
            let mut set: Vec<usize> = r
                .matcher
                .conjuncts()
                .iter()
                .map(|c| {
                    let next = ids.len();
                    *ids.entry(c.summary()).or_insert(next)
                })
                .collect();
            set.sort_unstable();
            set.dedup();
            set
        })
        .collect()
}

/// Whether every id of `small` is in `big` (both sorted).
fn is_subset(small: &[usize], big: &[usize]) -> bool {
    small.len() <= big.len() && small.iter().all(|a| big.binary_search(a).is_ok())
}

/// An experiment's namespace slice and where it is written.
#[derive(Debug, Clone)]
pub(crate) struct NamespaceUse {
    pub experiment: String,
    pub namespace: String,
    pub start: f64,
    pub end: f64,
    pub place: Place,
}

/// Warnings for two experiments whose ranges in one namespace overlap: a
/// user in the overlap can be enrolled in both, which namespaces exist to
/// prevent. Reported at the later definition.
pub(crate) fn overlapping_namespaces(uses: &[NamespaceUse]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (j, b) in uses.iter().enumerate() {
        for a in &uses[..j] {
            if a.namespace != b.namespace || a.experiment == b.experiment {
                continue;
            }
            if a.start < b.end && b.start < a.end {
                out.push(Diagnostic {
                    file: b.place.file.clone(),
                    line: b.place.at.line(),
                    column: b.place.at.column(),
                    severity: Severity::Warning,
                    message: format!(
                        "experiment `{}`: namespace `{}` range [{}, {}) overlaps experiment `{}`'s [{}, {}) ({}:{}:{}); a user can be enrolled in both",
                        b.experiment,
                        b.namespace,
                        b.start,
                        b.end,
                        a.experiment,
                        a.start,
                        a.end,
                        a.place.file,
                        a.place.at.line(),
                        a.place.at.column()
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: the first earlier route whose atoms are a subset.
    fn pairwise(atoms: &[Vec<usize>]) -> Vec<Option<usize>> {
        (0..atoms.len())
            .map(|j| (0..j).find(|&i| is_subset(&atoms[i], &atoms[j])))
            .collect()
    }

    #[test]
    fn filing_by_rarest_atom_finds_what_pairwise_finds() {
        // Small pseudo-random atom sets over few atoms, so subsets are common.
        let mut seed = 0x2545_f491_u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % m).unwrap_or(0)
        };
        for round in 0..200 {
            let routes = 1 + next(60);
            let universe = 1 + round % 9;
            let atoms: Vec<Vec<usize>> = (0..routes)
                .map(|_| {
                    let mut set: Vec<usize> = (0..next(4)).map(|_| next(universe as u64)).collect();
                    set.sort_unstable();
                    set.dedup();
                    set
                })
                .collect();
            assert_eq!(first_shadowers(&atoms), pairwise(&atoms), "{atoms:?}");
        }
    }

    #[test]
    fn unrelated_routes_are_not_compared() {
        // 20,000 routes with distinct atoms, then one each shadowed by an
        // earlier route: quick, and the first shadowing route is named.
        let mut atoms: Vec<Vec<usize>> = (0..20_000).map(|i| vec![i, 100_000 + i % 3]).collect();
        atoms.push(vec![100_001]);
        atoms.push(vec![7, 100_001]);
        atoms.push(vec![100_001, 200_000]);
        let got = first_shadowers(&atoms);
        assert!(got[..20_001].iter().all(Option::is_none));
        assert_eq!(got[20_001], Some(7));
        assert_eq!(got[20_002], Some(20_000));
    }
}
