//! A split route's decision for one request: the upstream, the
//! `x-pointsman-variant` value, a minted cookie, and what `explain` shows.
//! Shared by the request path and `explain`, so both decide alike.

use super::canary::{ArmReason, CanaryDef};
use super::experiment::{Experiment, Mode, Outcome};
use super::force::forced_variant;
use super::sticky::{StickyId, StickyLookup};
use super::window::Arm;
use crate::routing::RequestContext;
use crate::routing::context::{cookie_values, query_values};
use crate::upstream::def::UpstreamId;
use http::{HeaderName, HeaderValue};
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
    /// `NAME=VARIANT` for the upstream request (and for the response with
    /// `expose_variant`).
    pub variant_header: Option<HeaderValue>,
    /// Whether the response carries the variant (`expose_variant`).
    pub expose: bool,
    /// `Set-Cookie` for a minted sticky id.
    pub set_cookie: Option<HeaderValue>,
    /// The canary arm, for the guard's observations.
    pub arm: Option<Arm>,
    /// Assigned by hash: an exposure to count and, the first time for this
    /// user, to log (forced, excluded and released requests are not).
    pub exposure: Option<Exposure>,
    /// The kill switch released this request's variant (counted apart).
    pub released: bool,
    /// What `explain` prints; built for [`Purpose::Explain`] only.
    pub trace: Option<Box<SplitTrace>>,
}

/// An assignment by hash, as the exposure log records it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exposure {
    /// The experiment variant's index, or the canary arm's (0 stable, 1
    /// canary).
    pub index: usize,
    /// The sticky id's bucket.
    pub bucket: f64,
    /// The GrowthBook hash version used (2 for canaries).
    pub hash_version: u32,
}

/// A split decision with the sticky id it used, borrowed from the request.
#[derive(Debug)]
pub struct Split<'a> {
    /// The decision.
    pub decision: SplitDecision,
    /// The sticky id (minted, found, or none).
    pub sticky: Option<StickyId<'a>>,
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

/// Decides an experiment route under the kill switch's `mode`.
pub fn decide_experiment<'a>(
    default: UpstreamId,
    exp: &Experiment,
    mode: Mode,
    ctx: &'a RequestContext<'_>,
    tls: bool,
    purpose: Purpose,
) -> Split<'a> {
    let targeting = exp.targeting.as_ref().is_none_or(|t| t.matches(ctx));
    let forced = if exp.allow_force {
        forced_variant(ctx, &exp.name)
    } else {
        None
    };
    let a = exp.assign(ctx, targeting, forced.as_deref(), mode);
    let chosen = a.variant().and_then(|i| exp.variants.get(i));
    let upstream = chosen.and_then(|v| v.upstream).unwrap_or(default);
    let variant = chosen.map(|v| v.name.clone());
    let trace = (purpose == Purpose::Explain).then(|| {
        Box::new(SplitTrace {
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
        })
    });
    let exposure = match (a.outcome, a.bucket) {
        (Outcome::Enrolled(index), Some(bucket)) => Some(Exposure {
            index,
            bucket,
            hash_version: exp.hash_version.number(),
        }),
        _ => None,
    };
    let decision = SplitDecision {
        upstream,
        variant_header: chosen.and_then(|v| v.header.clone()),
        expose: exp.expose_variant && chosen.is_some(),
        set_cookie: a
            .set_cookie(tls)
            .and_then(|c| HeaderValue::from_str(&c).ok()),
        arm: None,
        exposure,
        released: matches!(a.outcome, Outcome::Released(_)),
        trace,
        variant,
    };
    Split {
        decision,
        sticky: a.sticky,
    }
}

/// Decides a canary route at `weight` percent.
pub fn decide_canary<'a>(
    canary: &CanaryDef,
    weight: f64,
    ctx: &'a RequestContext<'_>,
    tls: bool,
    purpose: Purpose,
) -> Split<'a> {
    let name = &canary.route;
    let forced = if canary.allow_force {
        forced_variant(ctx, name)
    } else {
        None
    };
    let d = canary.decide(ctx, forced.as_deref(), weight);
    let (variant, variant_header) = canary.arm_label(d.arm).clone();
    let exposure = match (d.reason, d.bucket) {
        (ArmReason::Hashed, Some(bucket)) => Some(Exposure {
            index: d.arm as usize,
            bucket,
            hash_version: 2,
        }),
        _ => None,
    };
    let decision = SplitDecision {
        upstream: d.upstream,
        variant_header,
        expose: canary.expose_variant,
        set_cookie: d
            .set_cookie(tls)
            .and_then(|c| HeaderValue::from_str(&c).ok()),
        arm: Some(d.arm),
        exposure,
        released: false,
        trace: (purpose == Purpose::Explain).then(|| {
            Box::new(SplitTrace {
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
            })
        }),
        variant: Some(variant),
    };
    Split {
        decision,
        sticky: d.sticky,
    }
}

/// Sticky ids read through the same parsers as the matchers (SPEC 3).
impl StickyLookup for RequestContext<'_> {
    fn header(&self, name: &HeaderName) -> Option<&str> {
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
