//! Fleet mode (SPEC 11): replicas with the same `fleet.name` share canary
//! state, guard windows, kill switches and experiment counts through one
//! Redis, so they behave as one proxy.
//!
//! One task per replica ([`Fleet::start`]) owns every change a replica makes
//! to canary and experiment state: every `sync_interval` it publishes this
//! replica's windows and counts, adopts the fleet's state, advances steps on
//! the wall clock and judges guards on the fleet's sums, each transition a
//! compare-and-set so exactly one replica makes it. Operator actions reach
//! it through a channel. The request path never touches the store; when the
//! store cannot be reached, replicas keep the state they last knew, no step
//! advances, and a local guard may still roll back (written to the store
//! once it answers).
//!
//! - [`store`]: the Redis connection and its calls.
//! - [`wire`]: what is written there.
//! - [`sync`]: the task; [`canaries`] and [`experiments`] what it does for
//!   each.

mod canaries;
mod experiments;
mod store;
mod sync;
mod wire;

use crate::compile::FleetSettings;
use crate::metrics::Metrics;
use crate::runtime::{ExperimentActionError, Live, Snapshot};
use crate::split::canary::{Action as CanaryAction, ActionError};
use crate::split::tally::TallyCounts;
use crate::split::window::WindowStats;
use crate::split::{Canary, Experiment};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::Store;
use tokio::sync::{mpsc, oneshot, watch};

/// This replica's membership of a fleet.
#[derive(Debug)]
pub struct Fleet {
    name: String,
    replica: String,
    sync_interval: Duration,
    store: Store,
    connected: AtomicBool,
    gauge: Option<prometheus::IntGauge>,
    figures: ArcSwap<Figures>,
    commands: mpsc::Sender<Command>,
    /// True once the first sync ran (whether or not the store answered).
    synced_once: watch::Sender<bool>,
}

/// The fleet's figures as of the last sync, by store key.
#[derive(Debug, Default)]
struct Figures {
    canaries: HashMap<String, CanaryFigures>,
    experiments: HashMap<String, ExperimentFigures>,
}

/// A canary's guard window summed over the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryFigures {
    /// Replicas whose windows were summed.
    pub replicas: usize,
    /// The store record's revision (bumped by each transition).
    pub revision: u64,
    /// The stable arm.
    pub stable: WindowStats,
    /// The canary arm.
    pub canary: WindowStats,
}

/// An experiment's counts summed over the fleet.
#[derive(Debug, Clone)]
pub struct ExperimentFigures {
    /// Replicas that published counts recently.
    pub replicas: usize,
    /// The summed counts.
    pub counts: TallyCounts,
}

/// `/canaries` and `/experiments`: which fleet, which replica, and whether
/// the store answers.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// The fleet's name.
    pub name: String,
    /// This replica's id in the store.
    pub replica: String,
    /// Whether the store answered the last sync.
    pub connected: bool,
    /// How often replicas sync, milliseconds.
    pub sync_interval_ms: u64,
}

/// Why an operator action through the fleet failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetActionError {
    /// The canary refused the action in its current state (409).
    #[error(transparent)]
    Canary(#[from] ActionError),
    /// The experiment refused the action (404 or 409).
    #[error(transparent)]
    Experiment(#[from] ExperimentActionError),
    /// The store cannot be reached and the action is not one a replica
    /// takes alone (503).
    #[error("{0}")]
    Unavailable(String),
}

/// An operator action, carried to the sync task.
#[derive(Debug)]
enum Command {
    Canary {
        canary: Canary,
        action: CanaryAction,
        reply: oneshot::Sender<Result<(), FleetActionError>>,
    },
    Experiment {
        snapshot: Arc<Snapshot>,
        experiment: Arc<Experiment>,
        action: crate::runtime::ExperimentAction,
        variant: Option<String>,
        reply: oneshot::Sender<Result<(), FleetActionError>>,
    },
}

impl Fleet {
    /// Joins the fleet of `settings`: creates the store client (nothing is
    /// dialled yet) and spawns the sync task for `live` on the current tokio
    /// runtime. `pointsman_fleet_connected` goes into `metrics`.
    pub fn start(
        settings: &FleetSettings,
        live: Arc<Live>,
        metrics: Option<&Metrics>,
    ) -> Result<Arc<Fleet>, String> {
        let store = Store::new(settings).map_err(|e| format!("fleet store: {e}"))?;
        let gauge = match metrics.map(Metrics::fleet_connected).transpose() {
            Ok(g) => g,
            Err(e) => return Err(format!("fleet metric: {e}")),
        };
        let (commands, rx) = mpsc::channel(64);
        let fleet = Arc::new(Fleet {
            name: settings.name.clone(),
            replica: replica_id(),
            sync_interval: settings.sync_interval,
            store,
            connected: AtomicBool::new(false),
            gauge,
            figures: ArcSwap::from_pointee(Figures::default()),
            commands,
            synced_once: watch::Sender::new(false),
        });
        tracing::info!(
            fleet = %fleet.name,
            replica = %fleet.replica,
            store = %crate::compile::settings::redact(&settings.url),
            sync_interval_ms = settings.sync_interval.as_millis() as u64,
            "fleet mode: canary and experiment state are shared through the store"
        );
        tokio::spawn(sync::Syncer::new(fleet.clone(), live).run(rx));
        Ok(fleet)
    }

    /// Waits (at most `limit`) until the first sync ran, so a replica that
    /// joins late turns ready at the fleet's current step, not at step 0.
    pub async fn wait_first_sync(&self, limit: Duration) {
        let mut rx = self.synced_once.subscribe();
        if tokio::time::timeout(limit, rx.wait_for(|done| *done))
            .await
            .is_err()
        {
            tracing::warn!(fleet = %self.name, "no fleet sync within {limit:?}: starting with this replica's own state");
        }
    }

    /// Which fleet, which replica, and whether the store answers.
    pub fn status(&self) -> FleetStatus {
        FleetStatus {
            name: self.name.clone(),
            replica: self.replica.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            sync_interval_ms: u64::try_from(self.sync_interval.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The fleet's window sums for `canary`, as of the last sync.
    pub fn canary_figures(&self, canary: &Canary) -> Option<CanaryFigures> {
        let key = canaries::record_key(&self.store, canary);
        self.figures.load().canaries.get(&key).cloned()
    }

    /// The fleet's counts for `e`, as of the last sync.
    pub fn experiment_figures(&self, e: &Experiment) -> Option<ExperimentFigures> {
        let key = experiments::record_key(&self.store, e);
        self.figures.load().experiments.get(&key).cloned()
    }

    /// Applies an operator action to `canary` fleet-wide (SPEC 11): a
    /// compare-and-set in the store, then here; the other replicas take it
    /// at their next sync. With the store away, `pause` and `rollback` act
    /// on this replica at once (and reach the store when it is back);
    /// `promote` and `resume` wait for it.
    pub async fn act_on_canary(
        &self,
        canary: Canary,
        action: CanaryAction,
    ) -> Result<(), FleetActionError> {
        self.ask(|reply| Command::Canary {
            canary,
            action,
            reply,
        })
        .await
    }

    /// Applies a kill-switch action to experiment `experiment` fleet-wide;
    /// with the store away, only `stop` acts (here, at once).
    pub async fn act_on_experiment(
        &self,
        snapshot: Arc<Snapshot>,
        experiment: Arc<Experiment>,
        action: crate::runtime::ExperimentAction,
        variant: Option<String>,
    ) -> Result<(), FleetActionError> {
        self.ask(|reply| Command::Experiment {
            snapshot,
            experiment,
            action,
            variant,
            reply,
        })
        .await
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), FleetActionError>>) -> Command,
    ) -> Result<(), FleetActionError> {
        let gone = || FleetActionError::Unavailable("the fleet sync task is not running".into());
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| gone())?;
        // Store calls have deadlines; this bounds a queue of them.
        match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(FleetActionError::Unavailable(
                "no answer from the fleet's store within 10s".into(),
            )),
        }
    }

    fn set_connected(&self, up: bool) {
        let was = self.connected.swap(up, Ordering::Relaxed);
        if let Some(g) = &self.gauge {
            g.set(i64::from(up));
        }
        match (was, up) {
            (false, true) => {
                tracing::info!(fleet = %self.name, "fleet store reachable: state is shared")
            }
            (true, false) => tracing::warn!(
                fleet = %self.name,
                "fleet store unreachable: serving with the last known state; steps wait, guards judge this replica alone"
            ),
            _ => {}
        }
    }
}

/// `{host}-{pid}-{random}`: unique per process, readable in `/canaries`.
fn replica_id() -> String {
    format!(
        "{}-{}-{:04x}",
        crate::runtime::exposure::replica_name(),
        std::process::id(),
        rand::random::<u16>()
    )
}

/// A replica's entry older than this (ms) is one that went away.
fn fresh_for(interval: Duration) -> u64 {
    u64::try_from((interval * 3).as_millis())
        .unwrap_or(u64::MAX)
        .max(2_000)
}

/// Now, Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
