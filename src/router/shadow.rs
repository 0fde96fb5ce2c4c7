//! `check`'s shadowed-route warning. (Stub until the matcher summaries land.)

use super::Snapshot;
use super::compile::Place;
use crate::config::Diagnostic;

/// Warnings for routes an earlier route provably always wins over.
pub(crate) fn shadowed_routes(_snapshot: &Snapshot, _places: &[Place]) -> Vec<Diagnostic> {
    Vec::new()
}
