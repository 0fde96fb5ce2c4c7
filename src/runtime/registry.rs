//! A name-keyed registry of weakly held runtime state: the state of a
//! definition lives as long as a snapshot uses it, and a config whose
//! definition under that name is unchanged gets the same state back.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Runtime state by name, reused while `same` says the definition holds.
#[derive(Debug)]
pub(crate) struct Registry<V> {
    map: ArcSwap<HashMap<Arc<str>, Weak<V>>>,
}

impl<V> Default for Registry<V> {
    fn default() -> Self {
        Registry {
            map: ArcSwap::default(),
        }
    }
}

impl<V> Registry<V> {
    /// The live state under `name` when `same` accepts it, else `make()`'s,
    /// which replaces it. The bool tells whether the state is new.
    pub(crate) fn get_or_make(
        &self,
        name: &Arc<str>,
        same: impl Fn(&V) -> bool,
        make: impl FnOnce() -> V,
    ) -> (Arc<V>, bool) {
        if let Some(v) = self.live(name).filter(|v| same(v)) {
            return (v, false);
        }
        let made = Arc::new(make());
        self.map.rcu(|cur| {
            let mut next: HashMap<_, _> = cur
                .iter()
                .filter(|(_, w)| w.strong_count() > 0)
                .map(|(k, w)| (k.clone(), w.clone()))
                .collect();
            next.insert(name.clone(), Arc::downgrade(&made));
            next
        });
        (made, true)
    }

    /// The live state under `name`, if any.
    pub(crate) fn live(&self, name: &str) -> Option<Arc<V>> {
        self.map.load().get(name).and_then(Weak::upgrade)
    }

    /// Every live state.
    pub(crate) fn all(&self) -> Vec<Arc<V>> {
        self.map.load().values().filter_map(Weak::upgrade).collect()
    }
}
