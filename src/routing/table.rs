//! Route selection: the indexed fast path for requests, and a plain
//! in-order trace for `explain`. Both see the same routes in the same
//! order, so the trace and the real decision agree.

use super::HasMatch;
use super::context::RequestContext;
use super::index::RouteIndex;

/// Routes in file order with their host/path index.
#[derive(Debug)]
pub struct RouteTable<R> {
    routes: Box<[R]>,
    index: RouteIndex,
}

/// One route tried by [`RouteTable::trace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    /// Position in the table.
    pub route: usize,
    /// The first failing predicate; `None` for the route that matched.
    pub failed: Option<String>,
}

impl<R: HasMatch> RouteTable<R> {
    /// Indexes `routes` (in file order).
    pub fn new(routes: Vec<R>) -> Self {
        let routes = super::exact_slice(routes);
        let index = RouteIndex::build(&routes);
        RouteTable { routes, index }
    }

    /// The routes in file order.
    pub fn routes(&self) -> &[R] {
        &self.routes
    }

    /// The index over the routes (for tests and diagnostics).
    pub fn index(&self) -> &RouteIndex {
        &self.index
    }

    /// The first route in file order whose `match` holds, with its
    /// position, found through the host/path index.
    pub fn select(&self, ctx: &RequestContext<'_>) -> Option<(usize, &R)> {
        let i = self.index.first_match(&self.routes, ctx)?;
        self.routes.get(i).map(|r| (i, r))
    }

    /// Every route in file order up to and including the first that
    /// matches, each with why it failed (a linear scan, for `explain`).
    pub fn trace(&self, ctx: &RequestContext<'_>) -> Vec<Trial> {
        let mut trials = Vec::new();
        for (route, r) in self.routes.iter().enumerate() {
            let failed = r.matcher().first_failure(ctx);
            let matched = failed.is_none();
            trials.push(Trial { route, failed });
            if matched {
                break;
            }
        }
        trials
    }
}
