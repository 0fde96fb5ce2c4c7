//! Every live canary runtime, keyed by route name and definition identity,
//! so a reload that keeps a canary's identity keeps its state, step and
//! timers, and a changed one starts afresh.

use super::def::CanaryDef;
use super::runtime::{Canary, CanaryRuntime};
use crate::split::identity::Identity;
use crate::split::persist::StateStore;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// (route name, definition identity).
type RegistryKey = (Arc<str>, Identity);

/// Runtime states of all canaries. Holds them weakly: a state lives as
/// long as a snapshot uses it.
#[derive(Debug, Default)]
pub struct CanaryRegistry {
    map: ArcSwap<HashMap<RegistryKey, Weak<CanaryRuntime>>>,
    /// The `state_file`, once [`CanaryRegistry::use_state_file`] ran.
    store: ArcSwapOption<StateStore>,
    /// Told when a canary starts, or the registry goes: the driver waits
    /// on it while no canary is live.
    started: Arc<Notify>,
}

impl CanaryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The canary for `def`: the existing state when a live canary has the
    /// same route and identity (taking `def`'s guard, holds and other
    /// settings that move no user), else a fresh one started at `now`.
    pub fn attach(&self, def: CanaryDef, now: Instant) -> Canary {
        self.attach_shared(Arc::new(def), now)
    }

    /// [`CanaryRegistry::attach`] for a definition already shared.
    pub fn attach_shared(&self, def: Arc<CanaryDef>, now: Instant) -> Canary {
        let key = (def.route.clone(), def.identity);
        loop {
            let cur = self.map.load_full();
            if let Some(runtime) = cur.get(&key).and_then(Weak::upgrade) {
                runtime.adopt(def.clone(), now);
                return Canary::from_parts(def, runtime);
            }
            warn_restart(&cur, &def);
            let runtime = Arc::new(CanaryRuntime::new(def.clone(), now));
            let store = self.store.load_full();
            if let Some(store) = &store
                && let Some(e) = store.entry(&def.route, &def.identity)
            {
                runtime.restore(&e, now);
            }
            let mut next: HashMap<_, _> = cur
                .iter()
                .filter(|(_, w)| w.strong_count() > 0)
                .map(|(k, w)| (k.clone(), w.clone()))
                .collect();
            next.insert(key.clone(), Arc::downgrade(&runtime));
            let prev = self.map.compare_and_swap(&cur, Arc::new(next));
            if Arc::ptr_eq(&prev, &cur) {
                self.started.notify_one();
                runtime.set_store(store, now);
                return Canary::from_parts(def, runtime);
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
        self.use_store(store, now);
    }

    /// Keeps canary state in `store` from now on (see
    /// [`CanaryRegistry::use_state_file`]).
    pub fn use_store(&self, store: Arc<StateStore>, now: Instant) {
        self.store.store(Some(store.clone()));
        for runtime in self.live() {
            let def = runtime.def();
            if let Some(e) = store.entry(&def.route, &def.identity) {
                runtime.restore(&e, now);
            }
            runtime.set_store(Some(store.clone()), now);
        }
    }

    /// Waits until the `state_file` holds every change made so far.
    pub fn flush(&self) {
        if let Some(store) = self.store.load_full() {
            store.flush();
        }
    }

    fn live(&self) -> Vec<Arc<CanaryRuntime>> {
        self.map.load().values().filter_map(Weak::upgrade).collect()
    }

    /// Advances steps and judges guards of every live canary; whether
    /// any was live.
    pub fn tick(&self, now: Instant) -> bool {
        let live = self.live();
        for runtime in &live {
            runtime.tick(now);
        }
        !live.is_empty()
    }

    /// Spawns a task calling [`CanaryRegistry::tick`] every `period` while
    /// a canary is live; while none is, it sleeps until one starts (an
    /// idle process is not woken four times a second for nothing). It ends
    /// with the registry.
    pub fn spawn_driver(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let registry = Arc::downgrade(self);
        let started = self.started.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                if registry.tick(Instant::now()) {
                    continue;
                }
                drop(registry);
                // A start since the look above left a permit: no wait then.
                started.notified().await;
                interval.reset();
            }
        })
    }
}

impl Drop for CanaryRegistry {
    fn drop(&mut self) {
        // Ends a driver waiting for a start.
        self.started.notify_one();
    }
}

/// SPEC 4: a changed definition starts afresh; say so, and what changed.
fn warn_restart(live: &HashMap<RegistryKey, Weak<CanaryRuntime>>, def: &CanaryDef) {
    let previous = live
        .iter()
        .filter(|((route, identity), _)| *route == def.route && *identity != def.identity)
        .find_map(|(_, w)| w.upgrade());
    if let Some(old) = previous {
        let changed = old.def().identity_changed(def);
        tracing::warn!(
            canary = &*def.route,
            changed = %changed.join(", "),
            "canary definition changed: it starts afresh"
        );
    }
}
