//! Decide: which route matches and, for a split route, which variant or
//! arm. The same function serves requests, `pointsman explain` and
//! `POST /explain`, so a trace and the real decision cannot drift.

use crate::compile::{Action, Config, Route};
use crate::routing::RequestContext;
use crate::runtime::SplitState;
use crate::split::sticky::StickyId;
use crate::split::{Purpose, Split, SplitDecision, decide_canary, decide_experiment};
use crate::upstream::def::UpstreamId;

/// What routing and splitting decided for one request.
#[derive(Debug)]
pub struct Decision {
    /// The matching route's position, `None` when none matched.
    pub route: Option<usize>,
    /// The split's decision on an experiment or canary route.
    pub split: Option<SplitDecision>,
}

impl Decision {
    /// The matching route.
    pub fn route<'c>(&self, config: &'c Config) -> Option<&'c Route> {
        self.route.and_then(|i| config.routes.routes().get(i))
    }

    /// Where a forwarding route sends the request (`None` for `respond`,
    /// `redirect` and no route).
    pub fn upstream(&self, config: &Config) -> Option<UpstreamId> {
        let route = self.route(config)?;
        let split = self.split.as_ref().map(|d| d.upstream);
        match &route.action {
            Action::Forward(id) => Some(*id),
            Action::Experiment { default, .. } => Some(split.unwrap_or(*default)),
            Action::Canary(c) => Some(split.unwrap_or(c.stable)),
            Action::Respond(_) | Action::Redirect(_) => None,
        }
    }
}

/// Routes the request (first match in file order) and decides its split,
/// reading canary weights and kill switches from `state`. `tls`: the
/// listener is TLS (a minted cookie gets `Secure`). Also returns the sticky
/// id a split used, borrowed from the request.
pub fn decide<'a>(
    config: &Config,
    state: &dyn SplitState,
    ctx: &'a RequestContext<'_>,
    tls: bool,
    purpose: Purpose,
) -> (Decision, Option<StickyId<'a>>) {
    let Some((i, route)) = config.routes.select(ctx) else {
        let none = Decision {
            route: None,
            split: None,
        };
        return (none, None);
    };
    let split: Option<Split<'a>> = match &route.action {
        Action::Experiment {
            default,
            experiment,
        } => {
            let mode = state.experiment_mode(experiment);
            Some(decide_experiment(
                *default, experiment, mode, ctx, tls, purpose,
            ))
        }
        Action::Canary(c) => {
            let weight = state.canary_weight(c);
            Some(decide_canary(c, weight, ctx, tls, purpose))
        }
        _ => None,
    };
    let (split, sticky) = match split {
        Some(s) => (Some(s.decision), s.sticky),
        None => (None, None),
    };
    let decision = Decision {
        route: Some(i),
        split,
    };
    (decision, sticky)
}
