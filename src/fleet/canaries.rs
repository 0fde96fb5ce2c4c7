//! A canary in the fleet: its record (state, step, when entered, weight)
//! under `canary:{route}:{identity}`, each replica's guard window under
//! `win:{route}:{identity}`.

use super::store::{Store, StoreError};
use super::sync::{Syncer, json, parse};
use super::wire::{CanaryRecord, WindowEntry};
use super::{CanaryFigures, Figures, FleetActionError, fresh_for, unix_ms};
use crate::split::canary::{Action, Plan, State};
use crate::split::window::ArmCounts;
use crate::split::{Canary, SharedControl};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How many times an operator action retries a lost compare-and-set.
const ACTION_ATTEMPTS: usize = 5;

/// The key of `canary`'s record.
pub(super) fn record_key(store: &Store, canary: &Canary) -> String {
    let def = canary.def();
    store.key("canary", &def.route, &def.identity.hex())
}

fn window_key(store: &Store, canary: &Canary) -> String {
    let def = canary.def();
    store.key("win", &def.route, &def.identity.hex())
}

impl Syncer {
    /// Publishes this replica's window, takes the fleet's record (creating
    /// it, or writing a rollback made while the store was away), advances
    /// due steps and judges the guard on the fleet's sums.
    pub(super) async fn sync_canary(
        &mut self,
        canary: &Canary,
        now: Instant,
        figures: &mut Figures,
    ) -> Result<(), StoreError> {
        let store = &self.fleet.store;
        let key = record_key(store, canary);
        let now_ms = unix_ms();
        let [stable, canary_arm] = canary.window_counts(now);
        let entry = WindowEntry {
            rev: self.synced.get(&key).copied().unwrap_or(0),
            at_ms: now_ms,
            stable: (&stable).into(),
            canary: (&canary_arm).into(),
        };
        let interval = self.fleet.sync_interval;
        let (raw, windows) = store
            .exchange(
                &key,
                &window_key(store, canary),
                &self.fleet.replica,
                &json(&entry),
                window_ttl(interval),
            )
            .await?;
        let Some(mut cur) = parse::<CanaryRecord>(raw.as_deref(), &key) else {
            // The first replica to see this definition makes its record.
            let first = CanaryRecord {
                rev: 1,
                control: self
                    .pending_canaries
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| canary.shared(now)),
            };
            if store.cas(&key, raw.as_deref(), &json(&first)).await? {
                self.pending_canaries.remove(&key);
                self.synced.insert(key.clone(), first.rev);
            }
            figures.canaries.insert(key, empty_figures(first.rev));
            return Ok(());
        };
        let mut raw = raw.unwrap_or_default();
        if let Some(local) = self.pending_canaries.remove(&key)
            && let Some(next) = written_back(&local, &cur)
        {
            if !store.cas(&key, Some(&raw), &json(&next)).await? {
                // Someone moved first: try again next round.
                self.pending_canaries.insert(key.clone(), local);
                figures.canaries.insert(key, empty_figures(cur.rev));
                return Ok(());
            }
            tracing::info!(
                canary = %canary.def().route,
                state = %next.control.state,
                "fleet store reachable again: this replica's change made while it was away is now the fleet's"
            );
            raw = json(&next);
            cur = next;
        }
        canary.adopt_shared(&cur.control, now);
        self.synced.insert(key.clone(), cur.rev);

        // Steps advance on the wall clock the record holds.
        let steps = match &canary.def().plan {
            Plan::Steps(s) => s.len(),
            Plan::Fixed(_) => 0,
        };
        for _ in 0..=steps {
            let Some((control, reason)) = canary.due_step(&cur.control, now) else {
                break;
            };
            let next = CanaryRecord {
                rev: cur.rev + 1,
                control,
            };
            if !store.cas(&key, Some(&raw), &json(&next)).await? {
                break;
            }
            canary.commit_shared(&next.control, &reason, now);
            raw = json(&next);
            cur = next;
            self.synced.insert(key.clone(), cur.rev);
        }

        // The guard judges the fleet's windows of the current revision.
        let (sums, replicas) = sum_windows(&windows, cur.rev, now_ms, interval);
        let [stable, canary_arm] = [sums[0].stats(), sums[1].stats()];
        if let Some((control, reason)) = canary.judged(&cur.control, &canary_arm, &stable, now) {
            let next = CanaryRecord {
                rev: cur.rev + 1,
                control,
            };
            if store.cas(&key, Some(&raw), &json(&next)).await? {
                canary.commit_shared(
                    &next.control,
                    &format!("{reason} (over {replicas} replicas)"),
                    now,
                );
                cur = next;
                self.synced.insert(key.clone(), cur.rev);
            }
        }
        figures.canaries.insert(
            key,
            CanaryFigures {
                replicas,
                revision: cur.rev,
                stable,
                canary: canary_arm,
            },
        );
        Ok(())
    }

    /// The store is away: this replica's guard judges its own window; a
    /// breach acts here and is written to the store later.
    pub(super) fn judge_locally(&mut self, canary: &Canary, now: Instant) {
        if canary.judge_locally(now) {
            let key = record_key(&self.fleet.store, canary);
            self.pending_canaries.insert(key, canary.shared(now));
        }
    }

    /// An operator action: a compare-and-set on the fleet's record, then
    /// here.
    pub(super) async fn act_on_canary(
        &mut self,
        canary: &Canary,
        action: Action,
    ) -> Result<(), FleetActionError> {
        let store = &self.fleet.store;
        let key = record_key(store, canary);
        for _ in 0..ACTION_ATTEMPTS {
            let now = Instant::now();
            let raw = match store.get(&key).await {
                Ok(raw) => raw,
                Err(e) => return self.canary_alone(canary, action, &key, e),
            };
            let cur = parse::<CanaryRecord>(raw.as_deref(), &key);
            let (rev, control) = cur.map_or((0, canary.shared(now)), |r| (r.rev, r.control));
            let next = CanaryRecord {
                rev: rev + 1,
                control: canary.acted(&control, action, now)?,
            };
            match store.cas(&key, raw.as_deref(), &json(&next)).await {
                Ok(true) => {
                    canary.commit_shared(&next.control, &format!("operator {action}"), now);
                    self.synced.insert(key.clone(), next.rev);
                    self.pending_canaries.remove(&key);
                    return Ok(());
                }
                Ok(false) => continue,
                Err(e) => return self.canary_alone(canary, action, &key, e),
            }
        }
        Err(FleetActionError::Unavailable(format!(
            "canary {} kept changing in the fleet's store; try again",
            canary.def().route
        )))
    }

    /// The store is away: the safe actions (pause, rollback) act here and
    /// now; the others wait for the store.
    fn canary_alone(
        &mut self,
        canary: &Canary,
        action: Action,
        key: &str,
        e: StoreError,
    ) -> Result<(), FleetActionError> {
        if !matches!(action, Action::Pause | Action::Rollback) {
            return Err(FleetActionError::Unavailable(format!(
                "the fleet's store cannot be reached ({e}): {action} acts on the whole fleet and waits for it; pause and rollback act on this replica at once"
            )));
        }
        let now = Instant::now();
        canary.act(action, now)?;
        tracing::warn!(
            canary = %canary.def().route,
            %action,
            error = %e,
            "fleet store unreachable: the action holds on this replica and is written to the fleet once the store answers"
        );
        self.pending_canaries
            .insert(key.to_owned(), canary.shared(now));
        Ok(())
    }
}

/// What a rollback or pause made here while the store was away writes over
/// the fleet's `cur`: nothing when the fleet is no longer running the
/// canary (someone else paused, promoted or rolled back meanwhile).
fn written_back(local: &SharedControl, cur: &CanaryRecord) -> Option<CanaryRecord> {
    if !matches!(cur.control.state, State::Static | State::Progressing)
        || !matches!(local.state, State::RolledBack | State::Paused)
    {
        return None;
    }
    Some(CanaryRecord {
        rev: cur.rev + 1,
        control: SharedControl {
            state: local.state,
            step: cur.control.step,
            entered_ms: local.entered_ms,
            weight: if local.state == State::RolledBack {
                0.0
            } else {
                cur.control.weight
            },
        },
    })
}

/// Windows live a while after their replica stopped writing them.
fn window_ttl(interval: Duration) -> Duration {
    (interval * 10).max(Duration::from_secs(10))
}

/// The fleet's (stable, canary) window sums for revision `rev`, and how
/// many replicas' windows went into them.
fn sum_windows(
    windows: &HashMap<String, String>,
    rev: u64,
    now_ms: u64,
    interval: Duration,
) -> ([ArmCounts; 2], usize) {
    let mut sums = [ArmCounts::default(), ArmCounts::default()];
    let mut replicas = 0;
    for (replica, raw) in windows {
        let Ok(w) = serde_json::from_str::<WindowEntry>(raw) else {
            tracing::debug!(%replica, "unreadable window entry skipped");
            continue;
        };
        if w.rev != rev || now_ms.saturating_sub(w.at_ms) > fresh_for(interval) {
            continue;
        }
        w.stable.add_to_arm(&mut sums[0]);
        w.canary.add_to_arm(&mut sums[1]);
        replicas += 1;
    }
    (sums, replicas)
}

fn empty_figures(rev: u64) -> CanaryFigures {
    CanaryFigures {
        replicas: 0,
        revision: rev,
        stable: ArmCounts::default().stats(),
        canary: ArmCounts::default().stats(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(state: State, step: usize, weight: f64) -> SharedControl {
        SharedControl {
            state,
            step,
            entered_ms: 1_000,
            weight,
        }
    }

    #[test]
    fn a_rollback_made_alone_is_written_over_a_running_canary_only() {
        let local = control(State::RolledBack, 0, 0.0);
        let running = CanaryRecord {
            rev: 4,
            control: control(State::Progressing, 2, 50.0),
        };
        let next = written_back(&local, &running).unwrap();
        assert_eq!(next.rev, 5);
        assert_eq!(next.control.state, State::RolledBack);
        assert_eq!(next.control.weight, 0.0);
        assert_eq!(next.control.step, 2);
        // A pause keeps the fleet's weight.
        let paused = written_back(&control(State::Paused, 0, 10.0), &running).unwrap();
        assert_eq!(paused.control.weight, 50.0);
        // The fleet promoted meanwhile: the operator's word stands.
        let promoted = CanaryRecord {
            rev: 4,
            control: control(State::Promoted, 3, 100.0),
        };
        assert_eq!(written_back(&local, &promoted), None);
        // Only the safe direction is written back.
        assert_eq!(
            written_back(&control(State::Progressing, 1, 20.0), &running),
            None
        );
    }

    #[test]
    fn only_fresh_windows_of_the_current_revision_are_summed() {
        let entry = |rev, at_ms, requests| {
            let a = ArmCounts {
                requests,
                errors: 1,
                ..Default::default()
            };
            json(&WindowEntry {
                rev,
                at_ms,
                stable: (&a).into(),
                canary: (&a).into(),
            })
        };
        let windows: HashMap<String, String> = [
            ("a".to_string(), entry(3, 10_000, 5)),
            ("b".to_string(), entry(3, 9_500, 7)),
            ("old-rev".to_string(), entry(2, 10_000, 100)),
            ("gone".to_string(), entry(3, 1_000, 100)),
            ("junk".to_string(), "{".to_string()),
        ]
        .into_iter()
        .collect();
        let (sums, replicas) = sum_windows(&windows, 3, 10_100, Duration::from_secs(1));
        assert_eq!(replicas, 2);
        assert_eq!(sums[1].requests, 12);
        assert_eq!(sums[1].errors, 2);
    }
}
