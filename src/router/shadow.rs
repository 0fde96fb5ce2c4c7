//! `check`'s provable-overlap warnings: routes an earlier route always wins
//! over, and experiments whose namespace slices overlap.
//!
//! Both checks are conservative: they warn only when they can prove the
//! problem, and stay silent otherwise.

use super::Snapshot;
use super::compile::Place;
use crate::config::{Diagnostic, Severity};
use std::collections::HashSet;

/// Warnings for routes an earlier route provably always wins over.
///
/// A route's `match` is a conjunction of atoms (its top-level conjuncts,
/// each named by its canonical [`crate::rules::Expr::summary`]). When every
/// atom of an earlier route is also an atom of a later one, any request the
/// later route matches is matched first by the earlier one. An empty earlier
/// `match` therefore shadows every route after it. `places[i]` is where
/// `snapshot.routes[i]` is defined.
pub(crate) fn shadowed_routes(snapshot: &Snapshot, places: &[Place]) -> Vec<Diagnostic> {
    let atoms: Vec<HashSet<String>> = snapshot
        .routes
        .iter()
        .map(|r| r.matcher.conjuncts().iter().map(|c| c.summary()).collect())
        .collect();
    let mut out = Vec::new();
    for (j, later) in atoms.iter().enumerate() {
        let Some(place) = places.get(j) else { continue };
        let Some(i) = (0..j).find(|&i| atoms[i].is_subset(later)) else {
            continue;
        };
        let (Some(earlier), Some(at), Some(route)) = (
            snapshot.routes.get(i),
            places.get(i),
            snapshot.routes.get(j),
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
