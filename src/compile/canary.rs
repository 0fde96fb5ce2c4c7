//! A route's `canary` mapping → [`CanaryDef`], every problem reported with
//! its position.

use super::sticky::{compile_sticky, error_count};
use crate::config::raw::{self, Spanned};
use crate::config::{Diagnostics, Location, parse_duration};
use crate::split::canary::def::{
    CanaryDef, DEFAULT_MIN_REQUESTS, DEFAULT_WINDOW, GuardDef, OnBreach, Plan, Step, arm_labels,
};
use crate::split::identity::Canonical;
use crate::upstream::def::UpstreamId;
use std::sync::Arc;

/// Compiles a route's `canary`. `resolve_upstream` reports its own error
/// and returns `None`. Every problem is reported to `diags` with its
/// position; `None` when any was found.
///
/// Giving neither `weight` nor `steps` is an error (write `weight: 0` for a
/// canary that starts empty and is promoted by hand).
pub fn compile_canary(
    route: &str,
    raw: &raw::Canary,
    file: &Arc<str>,
    at: Location,
    diags: &mut Diagnostics,
    resolve_upstream: &dyn Fn(&Spanned<String>) -> Option<UpstreamId>,
) -> Option<CanaryDef> {
    let errors_before = error_count(diags);
    let stable = resolve_upstream(&raw.stable);
    let canary = resolve_upstream(&raw.canary);
    let mut err = |at: Location, msg: String| diags.error(file, at, msg);
    let pct_ok = |w: f64| (0.0..=100.0).contains(&w);
    let duration = |s: &Spanned<String>, what: &str, err: &mut dyn FnMut(Location, String)| {
        parse_duration(&s.value)
            .map_err(|e| err(s.referenced, format!("canary {route:?}: {what}: {e}")))
            .ok()
    };

    let plan = match (&raw.weight, &raw.steps) {
        (Some(w), Some(_)) => {
            err(
                w.referenced,
                format!("canary {route:?}: give either weight or steps, not both"),
            );
            Plan::Fixed(0.0)
        }
        (None, None) => {
            err(at, format!("canary {route:?} needs weight or steps"));
            Plan::Fixed(0.0)
        }
        (Some(w), None) => {
            if !pct_ok(w.value) {
                err(
                    w.referenced,
                    format!(
                        "canary {route:?}: weight must be between 0 and 100, not {}",
                        w.value
                    ),
                );
            }
            Plan::Fixed(w.value)
        }
        (None, Some(steps)) => {
            if steps.value.is_empty() {
                err(
                    steps.referenced,
                    format!("canary {route:?}: steps is empty"),
                );
            }
            let last = steps.value.len().saturating_sub(1);
            let mut out = Vec::with_capacity(steps.value.len());
            for (i, s) in steps.value.iter().enumerate() {
                let w = &s.value.weight;
                if !pct_ok(w.value) {
                    err(
                        w.referenced,
                        format!(
                            "canary {route:?}: step weight must be between 0 and 100, not {}",
                            w.value
                        ),
                    );
                }
                let hold = match (&s.value.hold, i == last) {
                    (None, false) => {
                        err(
                            s.referenced,
                            format!(
                                "canary {route:?}: step {i} needs a hold (only the last step has none)"
                            ),
                        );
                        None
                    }
                    (Some(h), true) => {
                        err(
                            h.referenced,
                            format!("canary {route:?}: the last step cannot have a hold"),
                        );
                        None
                    }
                    (Some(h), false) => duration(h, "hold", &mut err),
                    (None, true) => None,
                };
                out.push(Step {
                    weight: w.value,
                    hold,
                });
            }
            Plan::Steps(out)
        }
    };

    let on_breach = match raw.on_breach.as_ref().map(|o| (o, o.value.as_str())) {
        None | Some((_, "rollback")) => OnBreach::Rollback,
        Some((_, "pause")) => OnBreach::Pause,
        Some((o, other)) => {
            err(
                o.referenced,
                format!("canary {route:?}: on_breach must be rollback or pause, not {other:?}"),
            );
            OnBreach::Rollback
        }
    };

    let guard = raw.guard.as_ref().map(|g| {
        let gv = &g.value;
        let window = gv.window.as_ref().and_then(|w| {
            let d = duration(w, "window", &mut err)?;
            if d.is_zero() {
                err(w.referenced, format!("canary {route:?}: guard window must be more than 0"));
            }
            Some(d)
        });
        let mut rate = |r: &Option<Spanned<f64>>, key: &str| {
            r.as_ref().map(|r| {
                if !(0.0..=1.0).contains(&r.value) {
                    err(r.referenced, format!("canary {route:?}: {key} must be between 0 and 1, not {}", r.value));
                }
                r.value
            })
        };
        let max_error_rate = rate(&gv.max_error_rate, "max_error_rate");
        let max_error_rate_increase = rate(&gv.max_error_rate_increase, "max_error_rate_increase");
        let max_p99_latency = gv
            .max_p99_latency
            .as_ref()
            .and_then(|p| duration(p, "max_p99_latency", &mut err));
        if gv.max_error_rate.is_none() && gv.max_error_rate_increase.is_none() && gv.max_p99_latency.is_none() {
            err(g.referenced, format!("canary {route:?}: guard needs max_error_rate, max_error_rate_increase or max_p99_latency"));
        }
        GuardDef {
            window: window.unwrap_or(DEFAULT_WINDOW),
            min_requests: gv.min_requests.as_ref().map_or(DEFAULT_MIN_REQUESTS, |m| m.value),
            max_error_rate,
            max_error_rate_increase,
            max_p99_latency,
        }
    });

    let sticky = compile_sticky(
        route,
        raw.sticky_on.as_ref(),
        raw.issue_cookie.as_ref(),
        at,
        &mut err,
    );
    let allow_force = raw.allow_force.as_ref().is_some_and(|f| f.value);
    let expose_variant = raw.expose_variant.as_ref().is_some_and(|f| f.value);
    if error_count(diags) > errors_before {
        return None;
    }
    let (stable, canary) = (stable?, canary?);
    // SPEC 4: only what decides who is on the canary.
    let weights: Vec<f64> = match &plan {
        Plan::Fixed(w) => vec![*w],
        Plan::Steps(steps) => steps.iter().map(|s| s.weight).collect(),
    };
    let identity = Canonical::new(if matches!(plan, Plan::Fixed(_)) {
        "canary-fixed"
    } else {
        "canary-steps"
    })
    .text("route", route)
    .text("stable", &raw.stable.value)
    .text("canary", &raw.canary.value)
    .texts(
        "sticky_on",
        sticky
            .sources
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    )
    .opt_text("issue_cookie", sticky.mint_cookie.as_deref())
    .numbers("weights", weights)
    .finish();
    Some(CanaryDef {
        index: 0,
        upstream_names: [
            raw.stable.value.as_str().into(),
            raw.canary.value.as_str().into(),
        ],
        arm_labels: arm_labels(route),
        route: route.into(),
        stable,
        canary,
        plan,
        guard,
        on_breach,
        sticky,
        allow_force,
        expose_variant,
        identity,
    })
}
