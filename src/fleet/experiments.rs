//! An experiment in the fleet: its kill switch under
//! `exp:{name}:{identity}`, each replica's counts under
//! `tally:{name}:{identity}`.

use super::store::{Store, StoreError};
use super::sync::{Syncer, json, parse};
use super::wire::{ExperimentRecord, TallyEntry};
use super::{ExperimentFigures, Figures, FleetActionError, fresh_for, unix_ms};
use crate::runtime::experiments::next_mode;
use crate::runtime::{ExperimentAction, ExperimentState};
use crate::split::Experiment;
use crate::split::experiment::Mode;
use crate::split::tally::TallyCounts;
use std::collections::HashMap;
use std::time::Duration;

/// How long a fleet's experiment counts outlive their last writer.
const TALLY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many times an operator action retries a lost compare-and-set.
const ACTION_ATTEMPTS: usize = 5;

/// The key of `e`'s kill-switch record.
pub(super) fn record_key(store: &Store, e: &Experiment) -> String {
    store.key("exp", &e.name, &e.identity().hex())
}

fn tally_key(store: &Store, e: &Experiment) -> String {
    store.key("tally", &e.name, &e.identity().hex())
}

impl Syncer {
    /// Publishes this replica's counts, sums the fleet's, and takes the
    /// fleet's kill-switch state (writing a stop made while the store was
    /// away first).
    pub(super) async fn sync_experiment(
        &mut self,
        e: &Experiment,
        state: &ExperimentState,
        figures: &mut Figures,
    ) -> Result<(), StoreError> {
        let store = &self.fleet.store;
        let key = record_key(store, e);
        let now_ms = unix_ms();
        let entry = TallyEntry::of(&state.tally.counts(), now_ms);
        let (raw, tallies) = store
            .exchange(
                &key,
                &tally_key(store, e),
                &self.fleet.replica,
                &json(&entry),
                TALLY_TTL,
            )
            .await?;
        let mut record = parse::<ExperimentRecord>(raw.as_deref(), &key);
        if let Some(mode) = self.pending_experiments.remove(&key) {
            let cur = record.as_ref().map_or(Mode::Running, |r| r.mode(e));
            if cur != mode {
                let next = ExperimentRecord::of(record.as_ref().map_or(1, |r| r.rev + 1), e, mode);
                if store.cas(&key, raw.as_deref(), &json(&next)).await? {
                    tracing::info!(
                        experiment = %e.name,
                        state = mode.as_str(),
                        "fleet store reachable again: this replica's stop is now the fleet's"
                    );
                    record = Some(next);
                } else {
                    self.pending_experiments.insert(key.clone(), mode);
                }
            }
        }
        if let Some(r) = &record {
            state.apply(e, r.mode(e), "from the fleet");
            self.synced.insert(key.clone(), r.rev);
        }
        let interval = self.fleet.sync_interval;
        figures
            .experiments
            .insert(key, sum_tallies(&tallies, e, now_ms, interval));
        Ok(())
    }

    /// A kill-switch action: a compare-and-set on the fleet's record, then
    /// here.
    pub(super) async fn act_on_experiment(
        &mut self,
        e: &Experiment,
        state: &ExperimentState,
        action: ExperimentAction,
        variant: Option<&str>,
    ) -> Result<(), FleetActionError> {
        let store = &self.fleet.store;
        let key = record_key(store, e);
        for _ in 0..ACTION_ATTEMPTS {
            let raw = match store.get(&key).await {
                Ok(raw) => raw,
                Err(err) => return self.experiment_alone(e, state, action, &key, err),
            };
            let record = parse::<ExperimentRecord>(raw.as_deref(), &key);
            let (rev, cur) = record.map_or((0, Mode::Running), |r| (r.rev, r.mode(e)));
            let mode = next_mode(cur, e, action, variant)?;
            let next = ExperimentRecord::of(rev + 1, e, mode);
            match store.cas(&key, raw.as_deref(), &json(&next)).await {
                Ok(true) => {
                    state.apply(e, mode, "operator action");
                    self.synced.insert(key.clone(), next.rev);
                    self.pending_experiments.remove(&key);
                    return Ok(());
                }
                Ok(false) => continue,
                Err(err) => return self.experiment_alone(e, state, action, &key, err),
            }
        }
        Err(FleetActionError::Unavailable(format!(
            "experiment {} kept changing in the fleet's store; try again",
            e.name
        )))
    }

    /// The store is away: `stop` (the safe direction) acts here and now;
    /// `release` and `resume` wait for the store.
    fn experiment_alone(
        &mut self,
        e: &Experiment,
        state: &ExperimentState,
        action: ExperimentAction,
        key: &str,
        err: StoreError,
    ) -> Result<(), FleetActionError> {
        if action != ExperimentAction::Stop {
            return Err(FleetActionError::Unavailable(format!(
                "the fleet's store cannot be reached ({err}): this action acts on the whole fleet and waits for it; stop acts on this replica at once"
            )));
        }
        state.act(e, action, None)?;
        tracing::warn!(
            experiment = %e.name,
            error = %err,
            "fleet store unreachable: the experiment stops on this replica and in the fleet once the store answers"
        );
        self.pending_experiments
            .insert(key.to_owned(), Mode::Stopped);
        Ok(())
    }
}

/// The fleet's counts for `e`: every replica's entry of the same shape
/// (replicas gone away keep counting: the users they served were enrolled);
/// `replicas` counts those that wrote lately.
fn sum_tallies(
    tallies: &HashMap<String, String>,
    e: &Experiment,
    now_ms: u64,
    interval: Duration,
) -> ExperimentFigures {
    let fresh = fresh_for(interval);
    let mut counts = TallyCounts::default();
    let mut replicas = 0;
    for raw in tallies.values() {
        let Ok(entry) = serde_json::from_str::<TallyEntry>(raw) else {
            continue;
        };
        if entry.variants.len() != e.variants.len() {
            continue;
        }
        counts.add(&entry.counts());
        if now_ms.saturating_sub(entry.at_ms) <= fresh {
            replicas += 1;
        }
    }
    ExperimentFigures { replicas, counts }
}
