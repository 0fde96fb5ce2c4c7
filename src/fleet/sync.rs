//! The sync task: every `sync_interval`, each canary and experiment of the
//! live snapshot is synced with the store; operator actions are handled
//! between syncs, so one task makes every fleet change of this replica.

use super::store::StoreError;
use super::{Command, Figures, Fleet};
use crate::runtime::Live;
use crate::split::SharedControl;
use crate::split::experiment::Mode;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

/// The task's own state.
pub(super) struct Syncer {
    pub(super) fleet: Arc<Fleet>,
    live: Arc<Live>,
    /// The record revision this replica last took, by record key.
    pub(super) synced: HashMap<String, u64>,
    /// Canary changes made here while the store was away (rollbacks and
    /// pauses only), to write once it answers.
    pub(super) pending_canaries: HashMap<String, SharedControl>,
    /// Experiments stopped here while the store was away.
    pub(super) pending_experiments: HashMap<String, Mode>,
}

impl Syncer {
    pub(super) fn new(fleet: Arc<Fleet>, live: Arc<Live>) -> Self {
        Syncer {
            fleet,
            live,
            synced: HashMap::new(),
            pending_canaries: HashMap::new(),
            pending_experiments: HashMap::new(),
        }
    }

    /// Syncs every `sync_interval` and answers operator actions, for as
    /// long as the process runs.
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut every = tokio::time::interval(self.fleet.sync_interval);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.sync().await,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => return,
                },
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Canary {
                canary,
                action,
                reply,
            } => {
                let result = self.act_on_canary(&canary, action).await;
                let _ = reply.send(result);
            }
            Command::Experiment {
                snapshot,
                experiment,
                action,
                variant,
                reply,
            } => {
                let result = match snapshot.experiment_state(experiment.index) {
                    Some(state) => {
                        self.act_on_experiment(&experiment, state, action, variant.as_deref())
                            .await
                    }
                    None => Err(super::FleetActionError::Unavailable(format!(
                        "experiment {} has no live state",
                        experiment.name
                    ))),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// One round: publish, adopt, advance, judge; on the first store error
    /// the rest of the round runs locally.
    async fn sync(&mut self) {
        let snapshot = self.live.snapshot();
        let now = Instant::now();
        let mut figures = Figures::default();
        let mut failed: Option<StoreError> = None;
        for canary in snapshot.canaries() {
            if failed.is_none()
                && let Err(e) = self.sync_canary(canary, now, &mut figures).await
            {
                failed = Some(e);
            }
            if failed.is_some() {
                self.judge_locally(canary, now);
            }
        }
        for e in &snapshot.config.experiments {
            let Some(state) = snapshot.experiment_state(e.index) else {
                continue;
            };
            if failed.is_none()
                && let Err(err) = self.sync_experiment(e, state, &mut figures).await
            {
                failed = Some(err);
            }
        }
        match failed {
            None => {
                self.fleet.set_connected(true);
                self.forget_gone(&figures);
                self.fleet.figures.store(Arc::new(figures));
            }
            Some(e) => {
                if self
                    .fleet
                    .connected
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(fleet = %self.fleet.name, error = %e, "fleet store call failed");
                }
                self.fleet.set_connected(false);
            }
        }
        self.fleet.synced_once.send_replace(true);
    }

    /// Drops what this task keeps for records no live canary or
    /// experiment has any more.
    fn forget_gone(&mut self, live: &Figures) {
        let keep = |k: &String| live.canaries.contains_key(k) || live.experiments.contains_key(k);
        self.synced.retain(|k, _| keep(k));
        self.pending_canaries.retain(|k, _| keep(k));
        self.pending_experiments.retain(|k, _| keep(k));
    }
}

/// Parses a record; a value that is no record is logged and overwritten.
pub(super) fn parse<T: serde::de::DeserializeOwned>(raw: Option<&str>, key: &str) -> Option<T> {
    let raw = raw?;
    match serde_json::from_str(raw) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key, error = %e, "fleet store holds an unreadable record: replacing it");
            None
        }
    }
}

/// JSON of a record or entry (plain data: serializing cannot fail).
pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
