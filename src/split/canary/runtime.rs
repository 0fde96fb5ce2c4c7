//! A canary's live state: state, step, weight, the guard's window and its
//! transitions, shared by every snapshot whose config holds the same
//! definition (by identity).
//!
//! Time: everything takes a `tokio::time::Instant`, so tests drive it with
//! `tokio::time::pause()` / `advance()`. The per-request path reads the
//! weight from an atomic and records observations into lock-free slots
//! ([`crate::split::window`]); transitions swap an immutable `Control` with
//! compare-and-swap.

use super::def::{Action, ActionError, CanaryDecision, CanaryDef, GuardDef, OnBreach, Plan, State};
use crate::split::persist::{Entry, StateStore};
use crate::split::sticky::StickyLookup;
use crate::split::timeline::{Series, Timeline, Totals};
use crate::split::users::DistinctIds;
use crate::split::window::{Arm, ArmCounts, Window, WindowStats};
use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A canary's control as a fleet shares it (SPEC 11): the wall-clock time
/// the state or step was entered, so every replica advances at the same
/// moment.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SharedControl {
    /// The state.
    pub state: State,
    /// The step (0 for a fixed weight).
    pub step: usize,
    /// When the state or step was entered, Unix milliseconds.
    pub entered_ms: u64,
    /// Percent on the canary.
    pub weight: f64,
}

/// `/canaries` entry.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryView {
    /// The canary's route name.
    pub name: String,
    /// The current state.
    pub state: State,
    /// Percent on the canary.
    pub weight: f64,
    /// Current step index (stepped canaries only).
    pub step: Option<usize>,
    /// Number of steps (0 for a fixed weight).
    pub steps: usize,
    /// Time left on the current step's hold (`progressing` only).
    pub hold_remaining_ms: Option<u64>,
    /// The guard window's stable arm.
    pub stable: WindowStats,
    /// The guard window's canary arm.
    pub canary: WindowStats,
    /// The step ladder: each step's weight and hold (empty for a fixed
    /// weight); `step` is the index of the current one.
    pub ladder: Vec<StepView>,
    /// The guard's thresholds, if it has a guard.
    pub guard: Option<GuardView>,
}

/// One step of a canary's ladder, as `/canaries` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepView {
    /// Percent on the canary at this step.
    pub weight: f64,
    /// How long the step is held (`None` on the last step).
    pub hold_ms: Option<u64>,
}

/// A canary's guard, as `/canaries` shows it: a breach is a value above a
/// threshold once the canary arm has `min_requests` in the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GuardView {
    /// The window judged, ms.
    pub window_ms: u64,
    /// Fewer canary requests in the window are not judged.
    pub min_requests: u64,
    /// Highest canary error rate.
    pub max_error_rate: Option<f64>,
    /// Highest canary error rate above stable's.
    pub max_error_rate_increase: Option<f64>,
    /// Highest canary p99 latency, ms.
    pub max_p99_ms: Option<f64>,
    /// `rollback` or `pause`.
    pub on_breach: &'static str,
}

impl GuardView {
    fn new(g: &GuardDef, on_breach: OnBreach) -> Self {
        GuardView {
            window_ms: u64::try_from(g.window.as_millis()).unwrap_or(u64::MAX),
            min_requests: g.min_requests,
            max_error_rate: g.max_error_rate,
            max_error_rate_increase: g.max_error_rate_increase,
            max_p99_ms: g.max_p99_latency.map(|d| d.as_secs_f64() * 1000.0),
            on_breach: match on_breach {
                OnBreach::Rollback => "rollback",
                OnBreach::Pause => "pause",
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Control {
    state: State,
    step: usize,
    entered: Instant,
    weight: f64,
}

/// Runtime state of one canary definition, shared across reloads that keep
/// the definition's identity.
#[derive(Debug)]
pub(super) struct CanaryRuntime {
    /// The newest definition with this identity: its guard, holds and
    /// `on_breach` apply at once when a reload changes them.
    def: ArcSwap<CanaryDef>,
    control: ArcSwap<Control>,
    /// The current weight's `f64` bits (the per-request read).
    weight_bits: AtomicU64,
    window: Window,
    transitions: [AtomicU64; 5],
    /// The `state_file`, when configured: written on every change.
    store: ArcSwapOption<StateStore>,
    /// Users seen per arm, for the exposure log's first exposures.
    users: DistinctIds,
    /// Every request recorded, per arm (stable, canary): what the
    /// timeline samples (the window forgets).
    totals: [Totals; 2],
    /// The dashboard's last 15 minutes per arm.
    timeline: Timeline,
}

/// A canary route's definition with a handle to its runtime state.
#[derive(Debug, Clone)]
pub struct Canary {
    def: Arc<CanaryDef>,
    runtime: Arc<CanaryRuntime>,
}

impl Canary {
    /// Creates a canary with fresh state, outside any registry (tests).
    pub fn detached(def: CanaryDef, now: Instant) -> Self {
        let def = Arc::new(def);
        Canary {
            runtime: Arc::new(CanaryRuntime::new(def.clone(), now)),
            def,
        }
    }

    pub(super) fn from_parts(def: Arc<CanaryDef>, runtime: Arc<CanaryRuntime>) -> Self {
        Canary { def, runtime }
    }

    /// The definition this handle was linked with.
    pub fn def(&self) -> &Arc<CanaryDef> {
        &self.def
    }

    /// Decides stable or canary for one request at the current weight
    /// (see [`CanaryDef::decide`]).
    pub fn decide<'a>(
        &self,
        req: &'a dyn StickyLookup,
        forced: Option<&str>,
    ) -> CanaryDecision<'a> {
        self.def.decide(req, forced, self.weight())
    }

    /// Records one request's outcome for the guard (`error`: 5xx or
    /// upstream failure).
    pub fn record(&self, arm: Arm, error: bool, latency: Duration) {
        self.record_at(Instant::now(), arm, error, latency);
    }

    /// [`Canary::record`] at a given time.
    pub fn record_at(&self, now: Instant, arm: Arm, error: bool, latency: Duration) {
        self.runtime.window.record(now, arm, error, latency);
        self.runtime.totals[arm as usize].record(error, latency);
    }

    /// Takes one point of the timeline at `at_ms` (Unix ms): each arm's
    /// requests, errors and p99 since the previous one.
    pub fn sample(&self, at_ms: u64) {
        let totals = &self.runtime.totals;
        self.runtime.timeline.sample(at_ms, |i| {
            totals.get(i).map_or(
                (0, 0, crate::split::latency::Histogram::snapshot_zero()),
                Totals::read,
            )
        });
    }

    /// The timeline's points after `since_ms` (Unix ms): arms stable,
    /// canary.
    pub fn series(&self, since_ms: u64) -> Series {
        self.runtime.timeline.read(since_ms)
    }

    /// The current percent on the canary.
    pub fn weight(&self) -> f64 {
        self.runtime.weight()
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

    /// Records that user `id` was on `arm` (0 stable, 1 canary): true the
    /// first time (a first exposure, SPEC 3.1).
    pub fn first_seen(&self, arm: usize, id: &str) -> bool {
        self.runtime
            .users
            .insert(u8::try_from(arm).unwrap_or(u8::MAX), id)
    }

    /// This replica's control, with the wall-clock time it was entered.
    pub fn shared(&self, now: Instant) -> SharedControl {
        let c = self.runtime.control.load();
        SharedControl {
            state: c.state,
            step: c.step,
            entered_ms: wall_ms(now, c.entered),
            weight: c.weight,
        }
    }

    /// Takes a control another replica of the fleet made (logged, not
    /// counted here); the window restarts when it differs.
    pub fn adopt_shared(&self, shared: &SharedControl, now: Instant) {
        let next = control_of(shared, now);
        let _ = self.runtime.update::<()>(now, Made::Elsewhere, |c| {
            let same = c.state == next.state && c.step == next.step && c.weight == next.weight;
            Ok((!same).then(|| (next.clone(), "from the fleet".to_string())))
        });
    }

    /// Makes a control this replica won for the fleet (logged and counted
    /// here).
    pub fn commit_shared(&self, shared: &SharedControl, reason: &str, now: Instant) {
        let next = control_of(shared, now);
        let _ = self.runtime.update::<()>(now, Made::Here, |_| {
            Ok(Some((next.clone(), reason.to_string())))
        });
    }

    /// The next step of `shared` when its hold has passed (wall clock).
    pub fn due_step(
        &self,
        shared: &SharedControl,
        now: Instant,
    ) -> Option<(SharedControl, String)> {
        let def = self.runtime.def();
        let (next, reason) = advance(&def, &control_of(shared, now), now)?;
        Some((shared_of(&next, now), reason))
    }

    /// What the guard does to `shared` given these window counts (summed
    /// over the fleet), if it acts.
    pub fn judged(
        &self,
        shared: &SharedControl,
        canary: &WindowStats,
        stable: &WindowStats,
        now: Instant,
    ) -> Option<(SharedControl, String)> {
        let def = self.runtime.def();
        let reason = judge(&def, shared.state, canary, stable)?;
        let next = on_breach(&def, &control_of(shared, now), now)?;
        Some((shared_of(&next, now), format!("guard breached: {reason}")))
    }

    /// What an operator action does to `shared`; `Err` (409) when it does
    /// not apply.
    pub fn acted(
        &self,
        shared: &SharedControl,
        action: Action,
        now: Instant,
    ) -> Result<SharedControl, ActionError> {
        let def = self.runtime.def();
        let next = on_action(&def, &control_of(shared, now), action, now)?;
        Ok(shared_of(&next, now))
    }

    /// Judges the guard on this replica's own window (when the fleet's
    /// store cannot be reached): true when it acted.
    pub fn judge_locally(&self, now: Instant) -> bool {
        self.runtime.judge_guard(now)
    }

    /// This replica's window counts (stable, canary) for the fleet's sums.
    pub fn window_counts(&self, now: Instant) -> [ArmCounts; 2] {
        [
            self.runtime.window.counts(now, Arm::Stable),
            self.runtime.window.counts(now, Arm::Canary),
        ]
    }

    /// Whether two handles share one runtime state.
    pub fn same_state(&self, other: &Canary) -> bool {
        Arc::ptr_eq(&self.runtime, &other.runtime)
    }
}

impl CanaryRuntime {
    pub(super) fn new(def: Arc<CanaryDef>, now: Instant) -> Self {
        let control = initial_control(&def, now);
        let window = Window::new(window_of(&def), now);
        CanaryRuntime {
            weight_bits: AtomicU64::new(control.weight.to_bits()),
            control: ArcSwap::from_pointee(control),
            window,
            transitions: Default::default(),
            store: ArcSwapOption::empty(),
            users: DistinctIds::new(),
            totals: Default::default(),
            timeline: Timeline::new(2),
            def: ArcSwap::new(def),
        }
    }

    pub(super) fn def(&self) -> Arc<CanaryDef> {
        self.def.load_full()
    }

    fn weight(&self) -> f64 {
        f64::from_bits(self.weight_bits.load(Ordering::Acquire))
    }

    /// Takes the settings of `def` (same identity) that do not decide who is
    /// on the canary: guard, holds, `on_breach`, `allow_force`. State and
    /// step are kept; a changed guard window restarts the window.
    pub(super) fn adopt(&self, def: Arc<CanaryDef>, now: Instant) {
        let old = self.def.load_full();
        let changed = old.settings_changed(&def);
        if changed.is_empty() {
            return;
        }
        let window = window_of(&def);
        self.def.store(def);
        if window != window_of(&old) {
            self.window.resize(window, now);
        }
        tracing::info!(
            canary = &*old.route,
            changed = %changed.join(", "),
            "canary settings changed; state and step kept"
        );
    }

    /// Uses `store` from now on and writes the current state to it.
    pub(super) fn set_store(&self, store: Option<Arc<StateStore>>, now: Instant) {
        self.store.store(store);
        self.persist(now);
    }

    /// Writes the current state to the `state_file`, if any.
    fn persist(&self, now: Instant) {
        let Some(store) = self.store.load_full() else {
            return;
        };
        let c = self.control.load();
        let entered_unix_ms = wall_ms(now, c.entered);
        let def = self.def.load();
        store.save(
            &def.route,
            Entry {
                definition: def.identity.hex(),
                state: c.state,
                step: c.step,
                entered_unix_ms,
                weight: c.weight,
            },
        );
    }

    /// Takes over a persisted state (start-up): not a transition, the
    /// window starts afresh.
    pub(super) fn restore(&self, e: &Entry, now: Instant) {
        let since = std::time::UNIX_EPOCH + Duration::from_millis(e.entered_unix_ms);
        let ago = std::time::SystemTime::now()
            .duration_since(since)
            .unwrap_or_default();
        let def = self.def.load();
        let step = match &def.plan {
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
        tracing::info!(canary = &*def.route, state = %e.state, step, weight = e.weight, "canary state restored from state_file");
    }

    /// Swaps the control state with `f`'s answer (retrying on a race), then
    /// publishes the weight, restarts the window, logs and counts (a change
    /// another replica of the fleet made is logged, not counted here).
    fn update<E>(
        &self,
        now: Instant,
        made: Made,
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
            let def = self.def.load();
            let route = &*def.route;
            if next.state != cur.state {
                if made == Made::Here {
                    self.transitions[next.state as usize].fetch_add(1, Ordering::Relaxed);
                }
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

    pub(super) fn tick(&self, now: Instant) {
        let def = self.def.load_full();
        // Advance as many steps as have elapsed.
        while let Ok(true) = self.update::<()>(now, Made::Here, |c| Ok(advance(&def, c, now))) {}
        self.judge_guard(now);
    }

    /// Judges the guard on this replica's window; on a breach, applies
    /// `on_breach`. True when it did.
    pub(super) fn judge_guard(&self, now: Instant) -> bool {
        let def = self.def.load_full();
        let canary = self.window.stats(now, Arm::Canary);
        let stable = self.window.stats(now, Arm::Stable);
        let Some(reason) = judge(&def, self.control.load().state, &canary, &stable) else {
            return false;
        };
        let done = self.update::<()>(now, Made::Here, |c| {
            Ok(on_breach(&def, c, now).map(|next| (next, format!("guard breached: {reason}"))))
        });
        done == Ok(true)
    }

    fn act(&self, action: Action, now: Instant) -> Result<(), ActionError> {
        let def = self.def.load_full();
        self.update(now, Made::Here, |c| {
            let next = on_action(&def, c, action, now)?;
            Ok(Some((next, format!("operator {action}"))))
        })
        .map(|_| ())
    }

    fn view(&self, now: Instant) -> CanaryView {
        let c = self.control.load();
        let def = self.def.load();
        let (step, steps, hold_remaining) = match &def.plan {
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
            name: def.route.to_string(),
            state: c.state,
            weight: c.weight,
            step,
            steps,
            hold_remaining_ms: hold_remaining.map(|d| d.as_millis() as u64),
            stable: self.window.stats(now, Arm::Stable),
            canary: self.window.stats(now, Arm::Canary),
            ladder: match &def.plan {
                Plan::Fixed(_) => Vec::new(),
                Plan::Steps(steps) => steps
                    .iter()
                    .map(|s| StepView {
                        weight: s.weight,
                        hold_ms: s
                            .hold
                            .map(|h| u64::try_from(h.as_millis()).unwrap_or(u64::MAX)),
                    })
                    .collect(),
            },
            guard: def.guard.as_ref().map(|g| GuardView::new(g, def.on_breach)),
        }
    }
}

/// `entered` as Unix milliseconds, read against `now`.
fn wall_ms(now: Instant, entered: Instant) -> u64 {
    let wall = std::time::SystemTime::now()
        .checked_sub(now.saturating_duration_since(entered))
        .unwrap_or(std::time::UNIX_EPOCH);
    wall.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The local control of a shared one (its wall clock read against `now`).
fn control_of(s: &SharedControl, now: Instant) -> Control {
    let since = std::time::UNIX_EPOCH + Duration::from_millis(s.entered_ms);
    let ago = std::time::SystemTime::now()
        .duration_since(since)
        .unwrap_or_default();
    Control {
        state: s.state,
        step: s.step,
        entered: now.checked_sub(ago).unwrap_or(now),
        weight: s.weight.clamp(0.0, 100.0),
    }
}

fn shared_of(c: &Control, now: Instant) -> SharedControl {
    SharedControl {
        state: c.state,
        step: c.step,
        entered_ms: wall_ms(now, c.entered),
        weight: c.weight,
    }
}

fn window_of(def: &CanaryDef) -> Duration {
    def.guard
        .as_ref()
        .map_or(super::def::DEFAULT_WINDOW, |g| g.window)
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
fn at_step(steps: &[super::def::Step], step: usize, now: Instant) -> Control {
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

/// Who made a change: this replica, or another of its fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    Here,
    Elsewhere,
}

/// What an operator action does to `c`; `Err` (409) when it does not apply.
fn on_action(
    def: &CanaryDef,
    c: &Control,
    action: Action,
    now: Instant,
) -> Result<Control, ActionError> {
    let refuse = || ActionError {
        canary: def.route.to_string(),
        action,
        state: c.state,
    };
    Ok(match (action, c.state) {
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
    })
}

/// What `on_breach` does to `c` (`None` when the guard does not judge its
/// state).
fn on_breach(def: &CanaryDef, c: &Control, now: Instant) -> Option<Control> {
    if !matches!(c.state, State::Static | State::Progressing) {
        return None;
    }
    Some(match def.on_breach {
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
    })
}

/// Why the guard would act on a canary in `state` with these window
/// stats, if it would.
fn judge(
    def: &CanaryDef,
    state: State,
    canary: &WindowStats,
    stable: &WindowStats,
) -> Option<String> {
    let guard = def.guard.as_ref()?;
    if !matches!(state, State::Static | State::Progressing) {
        return None;
    }
    breach(guard, canary, stable)
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
