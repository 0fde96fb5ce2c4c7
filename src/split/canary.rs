//! Canary releases (SPEC 3, 4): the compiled definition, the runtime state
//! kept outside the routing snapshot, guards and operator actions.
//!
//! Time: everything takes a `tokio::time::Instant`, so tests drive it with
//! `tokio::time::pause()` / `advance()`. Steps advance and guards are judged
//! in [`CanaryRegistry::tick`]; [`CanaryRegistry::spawn_driver`] calls it
//! periodically (once a second is plenty).
//!
//! State lives in [`CanaryRuntime`], shared through the [`CanaryRegistry`]
//! by (route name, definition hash): a reload with an unchanged definition
//! gets the same runtime (state, step, timers, window); a changed one starts
//! afresh. The per-request path reads the weight from an atomic and records
//! observations into lock-free slots ([`super::window`]); transitions swap
//! an immutable `Control` with compare-and-swap.

use super::experiment::{compile_sticky, error_count, minted_cookie};
use super::hash::{self, HashVersion};
use super::persist::{Entry, StateStore};
use super::sticky::{StickyConfig, StickyId, StickyLookup};
use super::window::{Arm, Window, WindowStats};
use crate::config::raw::{self, Spanned};
use crate::config::{Diagnostics, parse_duration};
use crate::router::UpstreamId;
use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;
use serde_saphyr::Location;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Default guard window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default `min_requests` of a guard.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

/// A compiled canary definition (immutable, part of the snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryDef {
    /// The route's name (hash seed, forcing key, admin and metrics name).
    pub route: Arc<str>,
    pub stable: UpstreamId,
    pub canary: UpstreamId,
    pub plan: Plan,
    pub guard: Option<GuardDef>,
    pub on_breach: OnBreach,
    pub sticky: StickyConfig,
    pub allow_force: bool,
    /// SHA-256 of the normalized definition (upstreams by name).
    pub definition_hash: [u8; 32],
    /// Per arm (stable, canary): its name and the `ROUTE=ARM` value of
    /// `x-pointsman-variant`, made once instead of per request.
    pub arm_labels: [(Arc<str>, Option<http::HeaderValue>); 2],
}

impl CanaryDef {
    /// The name and variant header of `arm`.
    pub fn arm_label(&self, arm: Arm) -> &(Arc<str>, Option<http::HeaderValue>) {
        match arm {
            Arm::Stable => &self.arm_labels[0],
            Arm::Canary => &self.arm_labels[1],
        }
    }
}

/// [`CanaryDef::arm_labels`] for `route`.
fn arm_labels(route: &str) -> [(Arc<str>, Option<http::HeaderValue>); 2] {
    [Arm::Stable, Arm::Canary].map(|arm| {
        let name = arm.as_str();
        let header = http::HeaderValue::from_str(&format!("{route}={name}")).ok();
        (Arc::from(name), header)
    })
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
    pub window: Duration,
    pub min_requests: u64,
    pub max_error_rate: Option<f64>,
    pub max_error_rate_increase: Option<f64>,
    pub max_p99_latency: Option<Duration>,
}

/// What a guard breach does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBreach {
    Rollback,
    Pause,
}

/// A canary's state (SPEC 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Static,
    Progressing,
    Paused,
    Promoted,
    RolledBack,
}

impl State {
    /// Every state, in the order of [`Canary::transitions`].
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
    Pause,
    Resume,
    Promote,
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
    pub canary: String,
    pub action: Action,
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
    pub arm: Arm,
    /// The upstream of the arm.
    pub upstream: UpstreamId,
    pub reason: ArmReason,
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

/// `/canaries` entry.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryView {
    pub name: String,
    pub state: State,
    /// Percent on the canary.
    pub weight: f64,
    /// Current step index (stepped canaries only).
    pub step: Option<usize>,
    /// Number of steps (0 for a fixed weight).
    pub steps: usize,
    /// Time left on the current step's hold (`progressing` only).
    pub hold_remaining_ms: Option<u64>,
    pub stable: WindowStats,
    pub canary: WindowStats,
}

#[derive(Debug, Clone)]
struct Control {
    state: State,
    step: usize,
    entered: Instant,
    weight: f64,
}

/// Runtime state of one canary definition, shared across reloads that keep
/// the definition.
#[derive(Debug)]
pub struct CanaryRuntime {
    def: Arc<CanaryDef>,
    control: ArcSwap<Control>,
    /// The current weight's `f64` bits (the per-request read).
    weight_bits: AtomicU64,
    window: Window,
    transitions: [AtomicU64; 5],
    /// The `state_file`, when configured: written on every change.
    store: ArcSwapOption<StateStore>,
}

/// What a route's `canary` action holds: the definition and a handle to its
/// runtime state.
#[derive(Debug, Clone)]
pub struct Canary {
    pub def: Arc<CanaryDef>,
    runtime: Arc<CanaryRuntime>,
}

impl Canary {
    /// Creates a canary with fresh state, outside any registry (tests,
    /// `explain`, `diff`).
    pub fn detached(def: CanaryDef, now: Instant) -> Self {
        let def = Arc::new(def);
        Canary {
            runtime: Arc::new(CanaryRuntime::new(def.clone(), now)),
            def,
        }
    }

    /// Decides stable or canary for one request. `forced`: the value forced
    /// for this route by [`super::forced_variant`] (`canary` or `stable`),
    /// honoured only with `allow_force`. Mints an id when none is present
    /// and minting is on (send [`CanaryDecision::set_cookie`]).
    pub fn decide<'a>(
        &self,
        req: &'a dyn StickyLookup,
        forced: Option<&str>,
    ) -> CanaryDecision<'a> {
        let weight = self.weight();
        let forced_arm = match forced {
            Some("canary") if self.def.allow_force => Some(Arm::Canary),
            Some("stable") if self.def.allow_force => Some(Arm::Stable),
            _ => None,
        };
        let (arm, reason, sticky, bucket) = match forced_arm {
            Some(arm) => (arm, ArmReason::Forced, self.def.sticky.lookup(req), None),
            None => match self.def.sticky.lookup_or_mint(req) {
                None => (Arm::Stable, ArmReason::NoId, None, None),
                Some(id) => {
                    let bucket = self.bucket(&id.value);
                    (
                        self.arm_for_bucket(bucket, weight),
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
                Arm::Stable => self.def.stable,
                Arm::Canary => self.def.canary,
            },
            reason,
            sticky,
            bucket,
            weight,
        }
    }

    /// `hash_v2(seed = route name, id)`.
    pub fn bucket(&self, id: &str) -> f64 {
        hash::hash_with(HashVersion::V2, &self.def.route, id)
    }

    /// The arm of a bucket at `weight` percent: canary iff
    /// `bucket < weight / 100`.
    pub fn arm_for_bucket(&self, bucket: f64, weight: f64) -> Arm {
        if bucket < weight / 100.0 {
            Arm::Canary
        } else {
            Arm::Stable
        }
    }

    /// Records one request's outcome for the guard (`error`: 5xx or
    /// upstream failure).
    pub fn record(&self, arm: Arm, error: bool, latency: Duration) {
        self.record_at(Instant::now(), arm, error, latency);
    }

    /// [`Canary::record`] at a given time.
    pub fn record_at(&self, now: Instant, arm: Arm, error: bool, latency: Duration) {
        self.runtime.window.record(now, arm, error, latency);
    }

    /// The current percent on the canary.
    pub fn weight(&self) -> f64 {
        f64::from_bits(self.runtime.weight_bits.load(Ordering::Acquire))
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.runtime.control.load().state
    }

    /// State changes so far, per target state (in [`State::ALL`] order), for
    /// `pointsman_canary_transitions_total{to}`. A changed definition starts
    /// from zero.
    pub fn transitions(&self) -> [(State, u64); 5] {
        let t = &self.runtime.transitions;
        State::ALL.map(|s| (s, t[s as usize].load(Ordering::Relaxed)))
    }

    /// Advances steps whose hold has passed and judges the guard.
    pub fn tick(&self, now: Instant) {
        self.runtime.tick(now);
    }

    /// Applies an operator action; `Err` (409) when it does not apply to
    /// the current state. Returns the new `/canaries` entry.
    pub fn act(&self, action: Action, now: Instant) -> Result<CanaryView, ActionError> {
        self.runtime.act(action, now)?;
        Ok(self.view(now))
    }

    /// The `/canaries` entry at `now`.
    pub fn view(&self, now: Instant) -> CanaryView {
        self.runtime.view(now)
    }

    /// Whether two handles share one runtime state.
    pub fn same_state(&self, other: &Canary) -> bool {
        Arc::ptr_eq(&self.runtime, &other.runtime)
    }
}

impl CanaryRuntime {
    fn new(def: Arc<CanaryDef>, now: Instant) -> Self {
        let control = initial_control(&def, now);
        let window = Window::new(def.guard.as_ref().map_or(DEFAULT_WINDOW, |g| g.window), now);
        CanaryRuntime {
            weight_bits: AtomicU64::new(control.weight.to_bits()),
            control: ArcSwap::from_pointee(control),
            window,
            transitions: Default::default(),
            store: ArcSwapOption::empty(),
            def,
        }
    }

    /// Writes the current state to the `state_file`, if any.
    fn persist(&self, now: Instant) {
        let Some(store) = self.store.load_full() else {
            return;
        };
        let c = self.control.load();
        let wall = std::time::SystemTime::now()
            .checked_sub(now.saturating_duration_since(c.entered))
            .unwrap_or(std::time::UNIX_EPOCH);
        let entered_unix_ms = wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        store.save(
            &self.def.route,
            Entry {
                definition: hex::encode(self.def.definition_hash),
                state: c.state,
                step: c.step,
                entered_unix_ms,
                weight: c.weight,
            },
        );
    }

    /// Takes over a persisted state (start-up): not a transition, the
    /// window starts afresh.
    fn restore(&self, e: &Entry, now: Instant) {
        let since = std::time::UNIX_EPOCH + Duration::from_millis(e.entered_unix_ms);
        let ago = std::time::SystemTime::now()
            .duration_since(since)
            .unwrap_or_default();
        let step = match &self.def.plan {
            Plan::Fixed(_) => 0,
            Plan::Steps(steps) => e.step.min(steps.len().saturating_sub(1)),
        };
        let control = Control {
            state: e.state,
            step,
            entered: now.checked_sub(ago).unwrap_or(now),
            weight: e.weight.clamp(0.0, 100.0),
        };
        self.weight_bits
            .store(control.weight.to_bits(), Ordering::Release);
        self.control.store(Arc::new(control));
        self.window.restart(now);
        tracing::info!(canary = &*self.def.route, state = %e.state, step, weight = e.weight, "canary state restored from state_file");
    }

    /// Swaps the control state with `f`'s answer (retrying on a race), then
    /// publishes the weight, restarts the window, logs and counts.
    fn update<E>(
        &self,
        now: Instant,
        f: impl Fn(&Control) -> Result<Option<(Control, String)>, E>,
    ) -> Result<bool, E> {
        loop {
            let cur = self.control.load_full();
            let Some((next, reason)) = f(&cur)? else {
                return Ok(false);
            };
            let next = Arc::new(next);
            let prev = self.control.compare_and_swap(&cur, next.clone());
            if !Arc::ptr_eq(&prev, &cur) {
                continue;
            }
            self.weight_bits
                .store(next.weight.to_bits(), Ordering::Release);
            self.window.restart(now);
            let route = &*self.def.route;
            if next.state != cur.state {
                self.transitions[next.state as usize].fetch_add(1, Ordering::Relaxed);
                if matches!(next.state, State::RolledBack | State::Paused) {
                    tracing::warn!(canary = route, from = %cur.state, to = %next.state, weight = next.weight, %reason, "canary state change");
                } else {
                    tracing::info!(canary = route, from = %cur.state, to = %next.state, weight = next.weight, %reason, "canary state change");
                }
            } else {
                tracing::info!(canary = route, step = next.step, weight = next.weight, %reason, "canary step");
            }
            self.persist(now);
            return Ok(true);
        }
    }

    fn tick(&self, now: Instant) {
        let def = &self.def;
        // Advance as many steps as have elapsed.
        while let Ok(true) = self.update::<()>(now, |c| Ok(advance(def, c, now))) {}
        let Some(guard) = &def.guard else {
            return;
        };
        let state = self.control.load().state;
        if !matches!(state, State::Static | State::Progressing) {
            return;
        }
        let canary = self.window.stats(now, Arm::Canary);
        let stable = self.window.stats(now, Arm::Stable);
        let Some(reason) = breach(guard, &canary, &stable) else {
            return;
        };
        let _ = self.update::<()>(now, |c| {
            if !matches!(c.state, State::Static | State::Progressing) {
                return Ok(None);
            }
            let next = match def.on_breach {
                OnBreach::Rollback => Control {
                    state: State::RolledBack,
                    weight: 0.0,
                    entered: now,
                    ..c.clone()
                },
                OnBreach::Pause => Control {
                    state: State::Paused,
                    entered: now,
                    ..c.clone()
                },
            };
            Ok(Some((next, format!("guard breached: {reason}"))))
        });
    }

    fn act(&self, action: Action, now: Instant) -> Result<(), ActionError> {
        let def = &self.def;
        self.update(now, |c| {
            let refuse = || ActionError {
                canary: def.route.to_string(),
                action,
                state: c.state,
            };
            let next = match (action, c.state) {
                (Action::Pause, State::Static | State::Progressing) => Control {
                    state: State::Paused,
                    entered: now,
                    ..c.clone()
                },
                (Action::Resume, State::Paused | State::RolledBack) => resume(def, c, now),
                (Action::Promote, s) if s != State::Promoted => Control {
                    state: State::Promoted,
                    weight: 100.0,
                    entered: now,
                    ..c.clone()
                },
                (Action::Rollback, s) if s != State::RolledBack => Control {
                    state: State::RolledBack,
                    weight: 0.0,
                    entered: now,
                    ..c.clone()
                },
                _ => return Err(refuse()),
            };
            Ok(Some((next, format!("operator {action}"))))
        })
        .map(|_| ())
    }

    fn view(&self, now: Instant) -> CanaryView {
        let c = self.control.load();
        let (step, steps, hold_remaining) = match &self.def.plan {
            Plan::Fixed(_) => (None, 0, None),
            Plan::Steps(steps) => {
                let hold = (c.state == State::Progressing)
                    .then(|| steps.get(c.step).and_then(|s| s.hold))
                    .flatten()
                    .map(|h| h.saturating_sub(now.saturating_duration_since(c.entered)));
                (Some(c.step), steps.len(), hold)
            }
        };
        CanaryView {
            name: self.def.route.to_string(),
            state: c.state,
            weight: c.weight,
            step,
            steps,
            hold_remaining_ms: hold_remaining.map(|d| d.as_millis() as u64),
            stable: self.window.stats(now, Arm::Stable),
            canary: self.window.stats(now, Arm::Canary),
        }
    }
}

/// The state a definition starts in.
fn initial_control(def: &CanaryDef, now: Instant) -> Control {
    match &def.plan {
        Plan::Fixed(w) => Control {
            state: State::Static,
            step: 0,
            entered: now,
            weight: *w,
        },
        Plan::Steps(steps) => at_step(steps, 0, now),
    }
}

/// `progressing` at `step`, or the end state at the last step.
fn at_step(steps: &[Step], step: usize, now: Instant) -> Control {
    let weight = steps.get(step).map_or(0.0, |s| s.weight);
    let state = if step + 1 < steps.len() {
        State::Progressing
    } else if weight >= 100.0 {
        State::Promoted
    } else {
        State::Static
    };
    Control {
        state,
        step,
        entered: now,
        weight,
    }
}

/// The next step when the current one's hold has passed.
fn advance(def: &CanaryDef, c: &Control, now: Instant) -> Option<(Control, String)> {
    let Plan::Steps(steps) = &def.plan else {
        return None;
    };
    if c.state != State::Progressing {
        return None;
    }
    let hold = steps.get(c.step)?.hold?;
    let ends = c.entered + hold;
    if now < ends {
        return None;
    }
    let next = at_step(steps, c.step + 1, ends);
    let reason = format!("hold of step {} passed", c.step);
    Some((next, reason))
}

fn resume(def: &CanaryDef, c: &Control, now: Instant) -> Control {
    match &def.plan {
        Plan::Fixed(w) => Control {
            state: State::Static,
            step: 0,
            entered: now,
            weight: *w,
        },
        Plan::Steps(steps) => at_step(steps, c.step, now),
    }
}

/// The first broken threshold, when the canary has enough requests.
fn breach(g: &GuardDef, canary: &WindowStats, stable: &WindowStats) -> Option<String> {
    if canary.requests < g.min_requests.max(1) {
        return None;
    }
    let rate = canary.error_rate.unwrap_or(0.0);
    if let Some(max) = g.max_error_rate
        && rate > max
    {
        return Some(format!(
            "error rate {rate:.4} > {max} over {} requests",
            canary.requests
        ));
    }
    if let Some(max) = g.max_error_rate_increase {
        let base = stable.error_rate.unwrap_or(0.0);
        if rate - base > max {
            return Some(format!(
                "error rate {rate:.4} exceeds stable's {base:.4} by more than {max}"
            ));
        }
    }
    if let (Some(max), Some(p99)) = (g.max_p99_latency, canary.p99())
        && p99 > max
    {
        return Some(format!("p99 latency {p99:?} > {max:?}"));
    }
    None
}

/// (route name, definition hash).
type RegistryKey = (Arc<str>, [u8; 32]);

/// Runtime states of all canaries, keyed by (route name, definition hash).
/// Holds them weakly: a state lives as long as a snapshot uses it.
#[derive(Debug, Default)]
pub struct CanaryRegistry {
    map: ArcSwap<HashMap<RegistryKey, Weak<CanaryRuntime>>>,
    /// The `state_file`, once [`CanaryRegistry::use_state_file`] ran.
    store: ArcSwapOption<StateStore>,
}

impl CanaryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The canary for `def`: the existing state when a live canary has the
    /// same route and definition, else a fresh one started at `now`.
    pub fn attach(&self, def: CanaryDef, now: Instant) -> Canary {
        let key = (def.route.clone(), def.definition_hash);
        let def = Arc::new(def);
        loop {
            let cur = self.map.load_full();
            if let Some(runtime) = cur.get(&key).and_then(Weak::upgrade) {
                return Canary {
                    def: runtime.def.clone(),
                    runtime,
                };
            }
            let runtime = Arc::new(CanaryRuntime::new(def.clone(), now));
            let store = self.store.load_full();
            if let Some(store) = &store
                && let Some(e) = store.entry(&def.route, &def.definition_hash)
            {
                runtime.restore(&e, now);
            }
            runtime.store.store(store);
            runtime.persist(now);
            let mut next: HashMap<_, _> = cur
                .iter()
                .filter(|(_, w)| w.strong_count() > 0)
                .map(|(k, w)| (k.clone(), w.clone()))
                .collect();
            next.insert(key.clone(), Arc::downgrade(&runtime));
            let prev = self.map.compare_and_swap(&cur, Arc::new(next));
            if Arc::ptr_eq(&prev, &cur) {
                return Canary {
                    def: def.clone(),
                    runtime,
                };
            }
        }
    }

    /// Persists canary state to `path` from now on (SPEC 4): reads it, gives
    /// every live canary whose definition is unchanged its saved state,
    /// and writes the file. An unreadable or invalid file is logged and
    /// replaced.
    pub fn use_state_file(&self, path: &std::path::Path, now: Instant) {
        let store = Arc::new(StateStore::open(path).unwrap_or_else(|e| {
            tracing::warn!("{e}; canaries start afresh");
            StateStore::empty(path)
        }));
        self.store.store(Some(store.clone()));
        for runtime in self.map.load().values().filter_map(Weak::upgrade) {
            if let Some(e) = store.entry(&runtime.def.route, &runtime.def.definition_hash) {
                runtime.restore(&e, now);
            }
            runtime.store.store(Some(store.clone()));
            runtime.persist(now);
        }
    }

    /// Advances steps and judges guards of every live canary.
    pub fn tick(&self, now: Instant) {
        for runtime in self.map.load().values().filter_map(Weak::upgrade) {
            runtime.tick(now);
        }
    }

    /// Spawns a task calling [`CanaryRegistry::tick`] every `period`.
    pub fn spawn_driver(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                registry.tick(Instant::now());
            }
        })
    }
}

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
    if error_count(diags) > errors_before {
        return None;
    }
    let (stable, canary) = (stable?, canary?);
    let canon = format!(
        "canary\n{route}\n{}\n{}\n{plan:?}\n{guard:?}\n{on_breach:?}\n{sticky:?}\n{allow_force}\n",
        raw.stable.value, raw.canary.value
    );
    Some(CanaryDef {
        arm_labels: arm_labels(route),
        route: route.into(),
        stable,
        canary,
        plan,
        guard,
        on_breach,
        sticky,
        allow_force,
        definition_hash: Sha256::digest(canon.as_bytes()).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::sticky::SimpleRequest;

    fn compile(yaml: &str) -> (Option<CanaryDef>, Vec<String>) {
        let raw: raw::Canary = serde_saphyr::from_str(yaml).unwrap();
        let file: Arc<str> = "t.yaml".into();
        let mut diags = Diagnostics::default();
        let resolve = |s: &Spanned<String>| Some(if s.value == "v1" { 1 } else { 2 });
        let d = compile_canary(
            "shop",
            &raw,
            &file,
            raw.stable.referenced,
            &mut diags,
            &resolve,
        );
        (d, diags.items().iter().map(ToString::to_string).collect())
    }

    fn def(yaml: &str) -> CanaryDef {
        let (d, errs) = compile(&format!("stable: v1\ncanary: v2\n{yaml}"));
        assert!(errs.is_empty(), "{errs:?}");
        d.unwrap()
    }

    const STEPS: &str = "steps:\n  - { weight: 5, hold: 10m }\n  - { weight: 50, hold: 10m }\n  - { weight: 100 }\n";
    const GUARD: &str = "guard: { window: 1m, min_requests: 10, max_error_rate: 0.1 }\n";

    fn count(c: &Canary, s: State) -> u64 {
        c.transitions()[s as usize].1
    }

    #[test]
    fn config_errors() {
        let cases = [
            (
                "weight: 5\nsteps: [{ weight: 100 }]\n",
                "either weight or steps",
            ),
            ("", "needs weight or steps"),
            ("weight: 101\n", "weight must be between 0 and 100"),
            (
                "steps: [{ weight: 5 }, { weight: 100 }]\n",
                "step 0 needs a hold",
            ),
            (
                "steps: [{ weight: 5, hold: 1m }, { weight: 100, hold: 1m }]\n",
                "the last step cannot have a hold",
            ),
            (
                "weight: 5\non_breach: explode\n",
                "on_breach must be rollback or pause",
            ),
            (
                "weight: 5\nguard: { max_error_rate: 2 }\n",
                "max_error_rate must be between 0 and 1",
            ),
            (
                "weight: 5\nguard: { window: soon, max_error_rate: 0.1 }\n",
                "window: invalid duration",
            ),
            (
                "weight: 5\nguard: { window: 1m }\n",
                "guard needs max_error_rate",
            ),
            (
                "weight: 5\nsticky_on: ['nope']\n",
                "invalid sticky_on source",
            ),
        ];
        for (yaml, want) in cases {
            let (d, errs) = compile(&format!("stable: v1\ncanary: v2\n{yaml}"));
            assert!(d.is_none(), "{yaml}");
            assert!(
                errs.iter()
                    .any(|e| e.contains(want) && e.starts_with("t.yaml:")),
                "{yaml}: {errs:?}"
            );
        }
        let (_, errs) = compile("stable: v1\ncanary: v2\nweight: 101\n");
        assert_eq!(
            errs[0],
            "t.yaml:3:9: error: canary \"shop\": weight must be between 0 and 100, not 101"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn steps_advance_after_hold_and_end_promoted() {
        let c = Canary::detached(def(STEPS), Instant::now());
        assert_eq!((c.state(), c.weight()), (State::Progressing, 5.0));
        tokio::time::advance(Duration::from_secs(599)).await;
        c.tick(Instant::now());
        assert_eq!(c.weight(), 5.0);
        assert_eq!(c.view(Instant::now()).hold_remaining_ms, Some(1000));
        tokio::time::advance(Duration::from_secs(1)).await;
        c.tick(Instant::now());
        assert_eq!(
            (c.state(), c.weight(), c.view(Instant::now()).step),
            (State::Progressing, 50.0, Some(1))
        );
        assert_eq!(
            count(&c, State::Progressing),
            0,
            "a step advance is not a transition"
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        c.tick(Instant::now());
        assert_eq!((c.state(), c.weight()), (State::Promoted, 100.0));
        assert_eq!(count(&c, State::Promoted), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn late_tick_catches_up_every_step() {
        let c = Canary::detached(def(&STEPS.replace("100 }", "80 }")), Instant::now());
        tokio::time::advance(Duration::from_secs(3600)).await;
        c.tick(Instant::now());
        assert_eq!((c.state(), c.weight()), (State::Static, 80.0));
    }

    #[tokio::test(start_paused = true)]
    async fn guard_breach_rolls_back_to_zero() {
        let c = Canary::detached(def(&format!("{STEPS}{GUARD}")), Instant::now());
        let now = Instant::now();
        for i in 0..9 {
            c.record_at(now, Arm::Canary, i < 5, Duration::from_millis(5));
        }
        c.tick(now);
        assert_eq!(c.state(), State::Progressing, "below min_requests");
        c.record_at(now, Arm::Canary, true, Duration::from_millis(5));
        c.tick(now);
        assert_eq!((c.state(), c.weight()), (State::RolledBack, 0.0));
        assert_eq!(count(&c, State::RolledBack), 1);
        // Stays rolled back: no step advance, no re-judging.
        tokio::time::advance(Duration::from_secs(3600)).await;
        c.tick(Instant::now());
        assert_eq!(c.state(), State::RolledBack);
        let v = c.view(Instant::now());
        assert_eq!(v.canary.requests, 0, "window restarted at the rollback");
    }

    #[tokio::test(start_paused = true)]
    async fn breach_can_pause_and_judges_increase_and_p99() {
        let c = Canary::detached(
            def(
                "weight: 20\non_breach: pause\nguard: { min_requests: 10, max_error_rate_increase: 0.05, max_p99_latency: 100ms }\n",
            ),
            Instant::now(),
        );
        let now = Instant::now();
        for i in 0..20 {
            c.record_at(now, Arm::Stable, i < 4, Duration::from_millis(1));
            c.record_at(now, Arm::Canary, i < 4, Duration::from_millis(50));
        }
        c.tick(now);
        assert_eq!(c.state(), State::Static, "same error rate as stable, fast");
        for _ in 0..20 {
            c.record_at(now, Arm::Canary, false, Duration::from_millis(500));
        }
        c.tick(now);
        assert_eq!((c.state(), c.weight()), (State::Paused, 20.0));
    }

    #[tokio::test(start_paused = true)]
    async fn operator_actions_follow_the_allowed_states() {
        let now = Instant::now();
        let c = Canary::detached(def(STEPS), now);
        let refused = |r: Result<CanaryView, ActionError>, state| {
            assert_eq!(r.map(|v| v.state).unwrap_err().state, state);
        };
        refused(c.act(Action::Resume, now), State::Progressing);
        assert_eq!(c.act(Action::Pause, now).unwrap().state, State::Paused);
        refused(c.act(Action::Pause, now), State::Paused);
        let v = c.act(Action::Resume, now).unwrap();
        assert_eq!(
            (v.state, v.weight, v.step),
            (State::Progressing, 5.0, Some(0))
        );
        let v = c.act(Action::Rollback, now).unwrap();
        assert_eq!((v.state, v.weight), (State::RolledBack, 0.0));
        refused(c.act(Action::Rollback, now), State::RolledBack);
        let v = c.act(Action::Promote, now).unwrap();
        assert_eq!((v.state, v.weight), (State::Promoted, 100.0));
        refused(c.act(Action::Promote, now), State::Promoted);
        refused(c.act(Action::Pause, now), State::Promoted);
        refused(c.act(Action::Resume, now), State::Promoted);
        assert_eq!(
            c.act(Action::Rollback, now).unwrap().state,
            State::RolledBack
        );
        assert_eq!(count(&c, State::Paused), 1);
        assert_eq!(count(&c, State::RolledBack), 2);
        assert_eq!("promote".parse::<Action>(), Ok(Action::Promote));
        assert!("explode".parse::<Action>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn resume_at_last_step_goes_to_end_state() {
        let c = Canary::detached(def(STEPS), Instant::now());
        tokio::time::advance(Duration::from_secs(1200)).await;
        c.tick(Instant::now());
        assert_eq!(c.state(), State::Promoted);
        c.act(Action::Rollback, Instant::now()).unwrap();
        let before = c.transitions();
        let v = c.act(Action::Resume, Instant::now()).unwrap();
        assert_eq!((v.state, v.weight), (State::Promoted, 100.0));
        let after = c.transitions();
        let moved: u64 = after.iter().zip(before).map(|(a, b)| a.1 - b.1).sum();
        assert_eq!(moved, 1);
        // A fixed weight resumes to static at its configured weight.
        let f = Canary::detached(def("weight: 7\n"), Instant::now());
        f.act(Action::Promote, Instant::now()).unwrap();
        f.act(Action::Rollback, Instant::now()).unwrap();
        let v = f.act(Action::Resume, Instant::now()).unwrap();
        assert_eq!((v.state, v.weight), (State::Static, 7.0));
    }

    #[tokio::test(start_paused = true)]
    async fn registry_keeps_state_for_an_unchanged_definition() {
        let reg = CanaryRegistry::new();
        let now = Instant::now();
        let a = reg.attach(def(STEPS), now);
        a.act(Action::Pause, now).unwrap();
        let b = reg.attach(def(STEPS), now);
        assert!(a.same_state(&b));
        assert_eq!(b.state(), State::Paused);
        let changed = reg.attach(def(&STEPS.replace("weight: 5,", "weight: 6,")), now);
        assert!(!changed.same_state(&a));
        assert_eq!(
            (changed.state(), changed.weight()),
            (State::Progressing, 6.0)
        );
        drop((a, b));
        let fresh = reg.attach(def(STEPS), now);
        assert_eq!(
            fresh.state(),
            State::Progressing,
            "dropped state is not reused"
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        reg.tick(Instant::now());
        assert_eq!(fresh.weight(), 50.0);
    }

    #[tokio::test(start_paused = true)]
    async fn state_file_survives_a_restart_for_an_unchanged_definition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let now = Instant::now();
        let reg = CanaryRegistry::new();
        let a = reg.attach(def(STEPS), now);
        reg.use_state_file(&path, now);
        tokio::time::advance(Duration::from_secs(600)).await;
        reg.tick(Instant::now());
        assert_eq!(a.weight(), 50.0);
        a.act(Action::Rollback, Instant::now()).unwrap();
        // A new process: same definition → rolled back; changed → fresh.
        let reg2 = CanaryRegistry::new();
        let b = reg2.attach(def(STEPS), Instant::now());
        assert_eq!(
            b.state(),
            State::Progressing,
            "not restored before use_state_file"
        );
        reg2.use_state_file(&path, Instant::now());
        assert_eq!((b.state(), b.weight()), (State::RolledBack, 0.0));
        assert_eq!(b.view(Instant::now()).step, Some(1));
        assert_eq!(
            count(&b, State::RolledBack),
            0,
            "a restore is not a transition"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"rolled_back\""), "{text}");
        let reg3 = CanaryRegistry::new();
        let changed = reg3.attach(def(&STEPS.replace("weight: 5,", "weight: 6,")), now);
        reg3.use_state_file(&path, Instant::now());
        assert_eq!(
            (changed.state(), changed.weight()),
            (State::Progressing, 6.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn driver_ticks_on_its_own() {
        let reg = Arc::new(CanaryRegistry::new());
        let c = reg.attach(def(STEPS), Instant::now());
        let task = reg.spawn_driver(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(601)).await;
        assert_eq!(c.weight(), 50.0);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn decisions_hash_force_and_mint() {
        let c = Canary::detached(def("weight: 30\nallow_force: true\n"), Instant::now());
        let none = SimpleRequest::default();
        let d = c.decide(&none, None);
        assert_eq!(d.reason, ArmReason::Hashed);
        assert!(d.set_cookie(false).unwrap().starts_with("pm_uid="));
        let forced = c.decide(&none, Some("canary"));
        assert_eq!(
            (forced.arm, forced.upstream, forced.reason),
            (Arm::Canary, 2, ArmReason::Forced)
        );
        assert_eq!(forced.set_cookie(false), None);
        let req = SimpleRequest::default().cookie("pm_uid=user-9");
        let d = c.decide(&req, None);
        let bucket = hash::hash("shop", "user-9", 2).unwrap();
        assert_eq!(d.bucket, Some(bucket));
        assert_eq!(d.arm == Arm::Canary, bucket < 0.3);
        let strict = Canary::detached(def("weight: 30\nsticky_on: [header:x-u]\n"), Instant::now());
        let d = strict.decide(&none, Some("canary"));
        assert_eq!(
            (d.arm, d.reason, d.upstream),
            (Arm::Stable, ArmReason::NoId, 1)
        );
    }
}
