//! A compiled canary definition and the per-request decision it makes at a
//! given weight. Pure: the weight comes from the caller (the runtime's
//! current weight when serving, the initial weight for `explain`).

use super::super::experiment::minted_cookie;
use super::super::hash::{self, HashVersion};
use super::super::identity::Identity;
use super::super::sticky::{StickyConfig, StickyId, StickyLookup};
use super::super::window::Arm;
use crate::upstream::def::UpstreamId;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Default guard window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default `min_requests` of a guard.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

/// A compiled canary definition (immutable, part of the config).
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryDef {
    /// The route's name (hash seed, forcing key, admin and metrics name).
    pub route: Arc<str>,
    /// Position in the config's canary list (indexes runtime state).
    pub index: usize,
    /// The stable upstream.
    pub stable: UpstreamId,
    /// The canary upstream.
    pub canary: UpstreamId,
    /// The stable and canary upstreams' names, as written.
    pub upstream_names: [Arc<str>; 2],
    /// Fixed weight or steps.
    pub plan: Plan,
    /// Automatic rollback thresholds.
    pub guard: Option<GuardDef>,
    /// What a guard breach does.
    pub on_breach: OnBreach,
    /// Where the sticky id comes from.
    pub sticky: StickyConfig,
    /// Whether `x-pointsman-force` may pick the arm.
    pub allow_force: bool,
    /// Whether the response tells the client its arm.
    pub expose_variant: bool,
    /// Identity of what decides who is on the canary (SPEC 4): route,
    /// upstream names, sticky settings and the weights.
    pub identity: Identity,
    /// Per arm (stable, canary): its name and the `ROUTE=ARM` value of
    /// `x-pointsman-variant`, made once instead of per request.
    pub arm_labels: [(Arc<str>, Option<http::HeaderValue>); 2],
}

/// Fixed weight or a progression.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// A fixed percent on the canary (`static`).
    Fixed(f64),
    /// Steps; every one but the last has a hold.
    Steps(Vec<Step>),
}

/// One step of a progression.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Percent on the canary, 0–100.
    pub weight: f64,
    /// `None` only on the last step.
    pub hold: Option<Duration>,
}

/// Automatic rollback thresholds; a breach is a value strictly above one.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardDef {
    /// The window judged.
    pub window: Duration,
    /// Fewer canary requests in the window are not judged.
    pub min_requests: u64,
    /// Highest canary error rate.
    pub max_error_rate: Option<f64>,
    /// Highest canary error rate above stable's.
    pub max_error_rate_increase: Option<f64>,
    /// Highest canary p99 latency.
    pub max_p99_latency: Option<Duration>,
}

/// What a guard breach does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBreach {
    /// Weight 0, `rolled_back`.
    Rollback,
    /// Hold the weight, `paused`.
    Pause,
}

/// A canary's state (SPEC 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A fixed weight, or the last step below 100.
    Static,
    /// Holding a step before the next.
    Progressing,
    /// Held by an operator or a guard.
    Paused,
    /// At 100 %.
    Promoted,
    /// At 0 % after a breach or an operator.
    RolledBack,
}

impl State {
    /// Every state, in the order of [`super::Canary::transitions`].
    pub const ALL: [State; 5] = [
        State::Static,
        State::Progressing,
        State::Paused,
        State::Promoted,
        State::RolledBack,
    ];

    /// The label value: `static`, `progressing`, `paused`, `promoted`,
    /// `rolled_back`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Static => "static",
            State::Progressing => "progressing",
            State::Paused => "paused",
            State::Promoted => "promoted",
            State::RolledBack => "rolled_back",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator action (`POST /canaries/NAME/ACTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Hold the current weight.
    Pause,
    /// Back to the plan.
    Resume,
    /// To 100 %.
    Promote,
    /// To 0 %.
    Rollback,
}

impl Action {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::Rollback => "rollback",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown action name (answer 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown canary action {0:?}: use pause, resume, promote or rollback")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pause" => Ok(Action::Pause),
            "resume" => Ok(Action::Resume),
            "promote" => Ok(Action::Promote),
            "rollback" => Ok(Action::Rollback),
            _ => Err(UnknownAction(s.to_owned())),
        }
    }
}

/// An operator action that does not apply to the current state (answer 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} canary {canary:?}: it is {state}")]
pub struct ActionError {
    /// The canary's route name.
    pub canary: String,
    /// What was asked.
    pub action: Action,
    /// The state that refused it.
    pub state: State,
}

/// Why a request went to its arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmReason {
    /// `x-pointsman-force` / `pm_force` (with `allow_force`).
    Forced,
    /// `hash_v2(route, id) < weight / 100`.
    Hashed,
    /// No sticky id and none minted: stable.
    NoId,
}

/// One request's canary decision.
#[derive(Debug, Clone)]
pub struct CanaryDecision<'a> {
    /// The arm chosen.
    pub arm: Arm,
    /// The upstream of the arm.
    pub upstream: UpstreamId,
    /// Why that arm.
    pub reason: ArmReason,
    /// The sticky id, when one was found or minted.
    pub sticky: Option<StickyId<'a>>,
    /// `hash_v2(route, id)`, when hashed.
    pub bucket: Option<f64>,
    /// The canary weight (percent) at decision time.
    pub weight: f64,
}

impl CanaryDecision<'_> {
    /// The `Set-Cookie` value when an id was minted for this request.
    pub fn set_cookie(&self, tls: bool) -> Option<String> {
        minted_cookie(self.sticky.as_ref(), tls)
    }
}

impl CanaryDef {
    /// The name and variant header of `arm`.
    pub fn arm_label(&self, arm: Arm) -> &(Arc<str>, Option<http::HeaderValue>) {
        match arm {
            Arm::Stable => &self.arm_labels[0],
            Arm::Canary => &self.arm_labels[1],
        }
    }

    /// The weight a fresh canary starts at: the fixed weight or step 0's.
    pub fn initial_weight(&self) -> f64 {
        match &self.plan {
            Plan::Fixed(w) => *w,
            Plan::Steps(steps) => steps.first().map_or(0.0, |s| s.weight),
        }
    }

    /// Decides stable or canary for one request at `weight` percent.
    /// `forced`: the value forced for this route by
    /// [`super::super::forced_variant`] (`canary` or `stable`), honoured
    /// only with `allow_force`. Mints an id when none is present and
    /// minting is on (send [`CanaryDecision::set_cookie`]).
    pub fn decide<'a>(
        &self,
        req: &'a dyn StickyLookup,
        forced: Option<&str>,
        weight: f64,
    ) -> CanaryDecision<'a> {
        let forced_arm = match forced {
            Some("canary") if self.allow_force => Some(Arm::Canary),
            Some("stable") if self.allow_force => Some(Arm::Stable),
            _ => None,
        };
        let (arm, reason, sticky, bucket) = match forced_arm {
            Some(arm) => (arm, ArmReason::Forced, self.sticky.lookup(req), None),
            None => match self.sticky.lookup_or_mint(req) {
                None => (Arm::Stable, ArmReason::NoId, None, None),
                Some(id) => {
                    let bucket = self.bucket(&id.value);
                    (
                        arm_for_bucket(bucket, weight),
                        ArmReason::Hashed,
                        Some(id),
                        Some(bucket),
                    )
                }
            },
        };
        CanaryDecision {
            arm,
            upstream: match arm {
                Arm::Stable => self.stable,
                Arm::Canary => self.canary,
            },
            reason,
            sticky,
            bucket,
            weight,
        }
    }

    /// `hash_v2(seed = route name, id)`.
    pub fn bucket(&self, id: &str) -> f64 {
        hash::hash_with(HashVersion::V2, &self.route, id)
    }

    /// What differs from `other` among the settings that decide who is on
    /// the canary (what changes its identity), by key.
    pub fn identity_changed(&self, other: &CanaryDef) -> Vec<&'static str> {
        let weights = |d: &CanaryDef| match &d.plan {
            Plan::Fixed(w) => vec![*w],
            Plan::Steps(s) => s.iter().map(|s| s.weight).collect(),
        };
        let mut changed = Vec::new();
        if self.upstream_names[0] != other.upstream_names[0] {
            changed.push("stable");
        }
        if self.upstream_names[1] != other.upstream_names[1] {
            changed.push("canary");
        }
        if self.sticky != other.sticky {
            changed.push("sticky_on/issue_cookie");
        }
        if weights(self) != weights(other)
            || matches!(self.plan, Plan::Fixed(_)) != matches!(other.plan, Plan::Fixed(_))
        {
            changed.push("weights");
        }
        changed
    }

    /// What differs from `other` among the settings that do not decide who
    /// is on the canary (guard, holds, `on_breach`, `allow_force`,
    /// `expose_variant`), by key.
    pub fn settings_changed(&self, other: &CanaryDef) -> Vec<&'static str> {
        let holds = |d: &CanaryDef| match &d.plan {
            Plan::Fixed(_) => Vec::new(),
            Plan::Steps(s) => s.iter().map(|s| s.hold).collect(),
        };
        let mut changed = Vec::new();
        if self.guard != other.guard {
            changed.push("guard");
        }
        if holds(self) != holds(other) {
            changed.push("hold");
        }
        if self.on_breach != other.on_breach {
            changed.push("on_breach");
        }
        if self.allow_force != other.allow_force {
            changed.push("allow_force");
        }
        if self.expose_variant != other.expose_variant {
            changed.push("expose_variant");
        }
        changed
    }
}

/// The arm of a bucket at `weight` percent: canary iff
/// `bucket < weight / 100`.
pub fn arm_for_bucket(bucket: f64, weight: f64) -> Arm {
    if bucket < weight / 100.0 {
        Arm::Canary
    } else {
        Arm::Stable
    }
}

/// [`CanaryDef::arm_labels`] for `route`.
pub fn arm_labels(route: &str) -> [(Arc<str>, Option<http::HeaderValue>); 2] {
    [Arm::Stable, Arm::Canary].map(|arm| {
        let name = arm.as_str();
        let header = http::HeaderValue::from_str(&format!("{route}={name}")).ok();
        (Arc::from(name), header)
    })
}
