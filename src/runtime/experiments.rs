//! Live state of an experiment definition: its tally (exposures, users,
//! guardrails) and the kill switch (SPEC 8: `stop`, `release`, `resume`),
//! kept across reloads while the definition is unchanged and in the
//! `state_file`.

use crate::split::experiment::Mode;
use crate::split::identity::Identity;
use crate::split::persist::{ExperimentEntry, StateStore};
use crate::split::{Experiment, Tally};
use arc_swap::ArcSwapOption;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live state of one experiment definition.
#[derive(Debug)]
pub struct ExperimentState {
    pub(super) identity: Identity,
    /// Exposures, users and guardrails counted.
    pub tally: Tally,
    /// The kill switch, encoded: 0 running, 1 stopped, 2 + i released i.
    mode: AtomicU64,
    store: ArcSwapOption<StateStore>,
}

/// A kill-switch action (`POST /experiments/NAME/ACTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentAction {
    /// Nobody is enrolled.
    Stop,
    /// Everybody eligible gets one variant.
    Release,
    /// Back to the configured split.
    Resume,
}

impl FromStr for ExperimentAction {
    type Err = ExperimentActionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stop" => Ok(ExperimentAction::Stop),
            "release" => Ok(ExperimentAction::Release),
            "resume" => Ok(ExperimentAction::Resume),
            other => Err(ExperimentActionError::UnknownAction(other.to_owned())),
        }
    }
}

/// Why a kill-switch action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExperimentActionError {
    /// Not `stop`, `release` or `resume` (404).
    #[error("unknown experiment action {0:?}: use stop, release or resume")]
    UnknownAction(String),
    /// `release` without a known `variant` (404).
    #[error("experiment {experiment:?} has no variant {variant:?}")]
    UnknownVariant {
        /// The experiment.
        experiment: String,
        /// What was asked.
        variant: String,
    },
    /// The action does not apply to the current state (409).
    #[error("cannot {action} experiment {experiment:?}: it is {state}")]
    NotApplicable {
        /// The experiment.
        experiment: String,
        /// What was asked.
        action: &'static str,
        /// The state that refused it.
        state: &'static str,
    },
}

impl ExperimentState {
    pub(super) fn new(e: &Experiment) -> Self {
        ExperimentState {
            identity: *e.identity(),
            tally: Tally::new(e.variants.len()),
            mode: AtomicU64::new(0),
            store: ArcSwapOption::empty(),
        }
    }

    /// The kill switch's current say.
    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Running,
            1 => Mode::Stopped,
            n => Mode::Released(usize::try_from(n - 2).unwrap_or(0)),
        }
    }

    fn set(&self, mode: Mode) {
        let n = match mode {
            Mode::Running => 0,
            Mode::Stopped => 1,
            Mode::Released(i) => 2 + i as u64,
        };
        self.mode.store(n, Ordering::Release);
    }

    /// Applies a kill-switch action to experiment `e` (`variant` names the
    /// released one); logs it and writes it to the `state_file`.
    pub fn act(
        &self,
        e: &Experiment,
        action: ExperimentAction,
        variant: Option<&str>,
    ) -> Result<Mode, ExperimentActionError> {
        let next = next_mode(self.mode(), e, action, variant)?;
        self.apply(e, next, "operator action");
        Ok(next)
    }

    /// Takes `mode` (an operator's action here or on another replica of the
    /// fleet), logging `reason` when it changes anything.
    pub fn apply(&self, e: &Experiment, next: Mode, reason: &str) {
        let cur = self.mode();
        if cur == next {
            return;
        }
        self.set(next);
        let variant = match next {
            Mode::Released(i) => e.variants.get(i).map(|v| v.name.to_string()),
            _ => None,
        };
        tracing::warn!(
            experiment = %e.name,
            from = cur.as_str(),
            to = next.as_str(),
            variant = variant.as_deref().unwrap_or(""),
            %reason,
            "experiment kill switch"
        );
        self.persist(e);
    }
}

/// What a kill-switch action makes of mode `cur`; `Err` when it does not
/// apply (409) or names no variant of `e` (404).
pub fn next_mode(
    cur: Mode,
    e: &Experiment,
    action: ExperimentAction,
    variant: Option<&str>,
) -> Result<Mode, ExperimentActionError> {
    let refuse = |action| ExperimentActionError::NotApplicable {
        experiment: e.name.to_string(),
        action,
        state: cur.as_str(),
    };
    let next = match action {
        ExperimentAction::Stop if cur == Mode::Stopped => return Err(refuse("stop")),
        ExperimentAction::Stop => Mode::Stopped,
        ExperimentAction::Resume if cur == Mode::Running => return Err(refuse("resume")),
        ExperimentAction::Resume => Mode::Running,
        ExperimentAction::Release => {
            let name = variant.unwrap_or("");
            let Some(i) = e.variant_index(name) else {
                return Err(ExperimentActionError::UnknownVariant {
                    experiment: e.name.to_string(),
                    variant: name.to_owned(),
                });
            };
            if cur == Mode::Released(i) {
                return Err(refuse("release"));
            }
            Mode::Released(i)
        }
    };
    Ok(next)
}

impl ExperimentState {
    /// Uses `store` from now on: takes over the state saved there for this
    /// definition, then writes the current one.
    pub(super) fn use_store(&self, e: &Experiment, store: Option<Arc<StateStore>>) {
        if let Some(saved) = store
            .as_ref()
            .and_then(|s| s.experiment(&e.name, &e.identity))
        {
            let mode = match (saved.state.as_str(), saved.variant.as_deref()) {
                ("stopped", _) => Mode::Stopped,
                ("released", Some(v)) => e.variant_index(v).map_or(Mode::Running, Mode::Released),
                _ => Mode::Running,
            };
            if mode != Mode::Running {
                tracing::info!(experiment = %e.name, state = mode.as_str(), "experiment state restored from state_file");
            }
            self.set(mode);
        }
        self.store.store(store);
        self.persist(e);
    }

    fn persist(&self, e: &Experiment) {
        let Some(store) = self.store.load_full() else {
            return;
        };
        let mode = self.mode();
        let variant = match mode {
            Mode::Released(i) => e.variants.get(i).map(|v| v.name.to_string()),
            _ => None,
        };
        store.save_experiment(
            &e.name,
            ExperimentEntry {
                definition: e.identity().hex(),
                state: mode.as_str().to_owned(),
                variant,
            },
        );
    }
}
