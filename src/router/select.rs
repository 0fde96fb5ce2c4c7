//! Route selection on a snapshot: the indexed fast path for requests, and a
//! plain in-order trace for `explain`.

use super::{Route, Snapshot};
use crate::context::RequestContext;

/// One route tried by [`Snapshot::trace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    /// Position in [`Snapshot::routes`].
    pub route: usize,
    /// The first failing predicate; `None` for the route that matched.
    pub failed: Option<String>,
}

impl Snapshot {
    /// The first route in file order whose `match` holds, found through the
    /// host/path index.
    pub fn select(&self, ctx: &RequestContext<'_>) -> Option<&Route> {
        self.index
            .first_match(&self.routes, ctx)
            .and_then(|i| self.routes.get(i))
    }

    /// Every route in file order up to and including the first that matches,
    /// each with why it failed (a linear scan, for `explain`).
    pub fn trace(&self, ctx: &RequestContext<'_>) -> Vec<Trial> {
        let mut trials = Vec::new();
        for (route, r) in self.routes.iter().enumerate() {
            let failed = r.matcher.first_failure(ctx);
            let matched = failed.is_none();
            trials.push(Trial { route, failed });
            if matched {
                break;
            }
        }
        trials
    }
}
