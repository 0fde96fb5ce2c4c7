//! A split route's decision for one request: the upstream, the
//! `x-pointsman-variant` value, a minted cookie, and what `explain` shows.
//! Shared by the request path and `explain`, so both decide alike.

use super::canary::{ArmReason, CanaryDef};
use super::experiment::{Experiment, Outcome};
use super::force::forced_variant;
use super::sticky::StickyLookup;
use super::window::Arm;
use crate::routing::RequestContext;
use crate::routing::context::{cookie_values, query_values};
use crate::upstream::def::UpstreamId;
use http::HeaderValue;
use serde::Serialize;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// What a split decided, owned (it does not borrow the request).
#[derive(Debug, Clone)]
pub struct SplitDecision {
    /// Where the request goes.
    pub upstream: UpstreamId,
    /// The variant name (`stable`/`canary` for canaries); `None` when not
    /// enrolled.
    pub variant: Option<Arc<str>>,
    /// `NAME=VARIANT` for the upstream request.
    pub variant_header: Option<HeaderValue>,
    /// `Set-Cookie` for a minted sticky id.
    pub set_cookie: Option<HeaderValue>,
    /// The canary arm, for the guard's observations.
    pub arm: Option<Arm>,
    /// The experiment variant enrolled by hash: an exposure to count
    /// (forced and excluded requests are not counted).
    pub enrolled: Option<usize>,
    /// What `explain` prints; built for [`Purpose::Explain`] only.
    pub trace: Option<SplitTrace>,
}

/// Who asks for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The request path: build no trace.
    Serve,
    /// `explain`: build the trace.
    Explain,
}

/// The experiment or canary step of `explain`.
#[derive(Debug, Clone, Serialize)]
pub struct SplitTrace {
    /// `experiment` or `canary`.
    pub kind: &'static str,
    /// The experiment's or canary route's name.
    pub name: String,
    /// The sticky id used, if any.
    pub sticky_id: Option<String>,
    /// `header:x-user-id`, `cookie:pm_uid`, ...
    pub sticky_source: Option<String>,
    /// The id was minted for this request (a `Set-Cookie` is sent).
    pub minted: bool,
    /// The id's hash bucket in `[0, 1)`.
    pub bucket: Option<f64>,
    /// The variant's range `[start, end)` (experiments, when hashed).
    pub range: Option<(f64, f64)>,
    /// The canary weight in percent at decision time.
    pub weight: Option<f64>,
    /// The variant or arm chosen.
    pub variant: Option<String>,
    /// Forced by `x-pointsman-force` / `pm_force`.
    pub forced: bool,
    /// Why the request was not enrolled: targeting, namespace, coverage, no_id.
    pub excluded: Option<&'static str>,
}

/// Decides an experiment route.
pub fn decide_experiment(
    default: UpstreamId,
    exp: &Experiment,
    ctx: &RequestContext<'_>,
    tls: bool,
    purpose: Purpose,
) -> SplitDecision {
    let targeting = exp.targeting.as_ref().is_none_or(|t| t.matches(ctx));
    let forced = if exp.allow_force {
        forced_variant(ctx, &exp.name)
    } else {
        None
    };
    let a = exp.assign(ctx, targeting, forced.as_deref());
    let chosen = a.variant().and_then(|i| exp.variants.get(i));
    let upstream = chosen.and_then(|v| v.upstream).unwrap_or(default);
    let variant = chosen.map(|v| v.name.clone());
    let trace = (purpose == Purpose::Explain).then(|| SplitTrace {
        kind: "experiment",
        name: exp.name.to_string(),
        sticky_id: a.sticky.as_ref().map(|s| s.value.to_string()),
        sticky_source: a.sticky.as_ref().map(|s| s.source.to_string()),
        minted: a.sticky.as_ref().is_some_and(|s| s.minted),
        bucket: a.bucket,
        range: a.range,
        weight: None,
        variant: variant.as_deref().map(str::to_owned),
        forced: matches!(a.outcome, Outcome::Forced(_)),
        excluded: match a.outcome {
            Outcome::Excluded(why) => Some(why.as_str()),
            _ => None,
        },
    });
    let enrolled = match a.outcome {
        Outcome::Enrolled(i) => Some(i),
        _ => None,
    };
    SplitDecision {
        upstream,
        variant_header: chosen.and_then(|v| v.header.clone()),
        set_cookie: a
            .set_cookie(tls)
            .and_then(|c| HeaderValue::from_str(&c).ok()),
        arm: None,
        enrolled,
        trace,
        variant,
    }
}

/// Decides a canary route at `weight` percent.
pub fn decide_canary(
    canary: &CanaryDef,
    weight: f64,
    ctx: &RequestContext<'_>,
    tls: bool,
    purpose: Purpose,
) -> SplitDecision {
    let name = &canary.route;
    let forced = if canary.allow_force {
        forced_variant(ctx, name)
    } else {
        None
    };
    let d = canary.decide(ctx, forced.as_deref(), weight);
    let (variant, variant_header) = canary.arm_label(d.arm).clone();
    SplitDecision {
        upstream: d.upstream,
        variant_header,
        set_cookie: d
            .set_cookie(tls)
            .and_then(|c| HeaderValue::from_str(&c).ok()),
        arm: Some(d.arm),
        enrolled: None,
        trace: (purpose == Purpose::Explain).then(|| SplitTrace {
            kind: "canary",
            name: name.to_string(),
            sticky_id: d.sticky.as_ref().map(|s| s.value.to_string()),
            sticky_source: d.sticky.as_ref().map(|s| s.source.to_string()),
            minted: d.sticky.as_ref().is_some_and(|s| s.minted),
            bucket: d.bucket,
            range: None,
            weight: Some(d.weight),
            variant: Some(variant.to_string()),
            forced: d.reason == ArmReason::Forced,
            excluded: (d.reason == ArmReason::NoId).then_some("no_id"),
        }),
        variant: Some(variant),
    }
}

/// Sticky ids read through the same parsers as the matchers (SPEC 3).
impl StickyLookup for RequestContext<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        cookie_values(self.headers, name).next().map(Cow::Borrowed)
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        query_values(self.query?, name).next()
    }

    fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
}
