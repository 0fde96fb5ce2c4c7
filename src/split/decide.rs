//! A split route's decision for one request: the upstream, the
//! `x-pointsman-variant` value, a minted cookie, and what `explain` shows.
//! Shared by the request path and `explain`, so both decide alike.

use super::{Arm, ArmReason, Canary, Exclusion, Experiment, Outcome, StickyLookup, forced_variant};
use crate::context::RequestContext;
use crate::router::UpstreamId;
use http::HeaderValue;
use serde::Serialize;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// What a split decided, owned (it does not borrow the request).
#[derive(Debug, Clone)]
pub struct SplitDecision {
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
    /// What `explain` prints; built for [`Purpose::Explain`] only.
    pub trace: Option<SplitTrace>,
}

/// Who asks for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The request path: count the exposure, build no trace.
    Serve,
    /// `explain`: count nothing, build the trace.
    Explain,
}

/// The experiment or canary step of `explain`.
#[derive(Debug, Clone, Serialize)]
pub struct SplitTrace {
    /// `experiment` or `canary`.
    pub kind: &'static str,
    pub name: String,
    pub sticky_id: Option<String>,
    /// `header:x-user-id`, `cookie:pm_uid`, ...
    pub sticky_source: Option<String>,
    /// The id was minted for this request (a `Set-Cookie` is sent).
    pub minted: bool,
    pub bucket: Option<f64>,
    /// The variant's range `[start, end)` (experiments, when hashed).
    pub range: Option<(f64, f64)>,
    /// The canary weight in percent at decision time.
    pub weight: Option<f64>,
    pub variant: Option<String>,
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
    let a = match purpose {
        Purpose::Serve => exp.assign(ctx, targeting, forced.as_deref()),
        Purpose::Explain => exp.preview(ctx, targeting, forced.as_deref()),
    };
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
            Outcome::Excluded(why) => Some(exclusion_text(why)),
            _ => None,
        },
    });
    SplitDecision {
        upstream,
        variant_header: chosen.and_then(|v| v.header.clone()),
        set_cookie: a
            .set_cookie(tls)
            .and_then(|c| HeaderValue::from_str(&c).ok()),
        arm: None,
        trace,
        variant,
    }
}

/// Decides a canary route.
pub fn decide_canary(
    canary: &Canary,
    ctx: &RequestContext<'_>,
    tls: bool,
    purpose: Purpose,
) -> SplitDecision {
    let name = &canary.def.route;
    let forced = if canary.def.allow_force {
        forced_variant(ctx, name)
    } else {
        None
    };
    let d = canary.decide(ctx, forced.as_deref());
    let (variant, variant_header) = canary.def.arm_label(d.arm).clone();
    SplitDecision {
        upstream: d.upstream,
        variant_header,
        set_cookie: d
            .set_cookie(tls)
            .and_then(|c| HeaderValue::from_str(&c).ok()),
        arm: Some(d.arm),
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

fn exclusion_text(why: Exclusion) -> &'static str {
    match why {
        Exclusion::Targeting => "targeting",
        Exclusion::Namespace => "namespace",
        Exclusion::Coverage => "coverage",
        Exclusion::NoId => "no_id",
    }
}

/// Sticky ids are read raw from the request; `split` decodes them (SPEC 3).
impl StickyLookup for RequestContext<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        let lines = self
            .headers
            .get_all(http::header::COOKIE)
            .into_iter()
            .filter_map(|v| v.to_str().ok());
        super::sticky::find_cookie(lines, name).map(Cow::Borrowed)
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        super::sticky::find_query_param(self.query?, name).map(Cow::Borrowed)
    }

    fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
}
