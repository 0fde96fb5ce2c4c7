//! The canary `state_file` (SPEC 4): each canary's state, step, time
//! entered and weight, keyed by route name with the definition hash, so a
//! restart does not undo a rollback or a promotion.
//!
//! The file is JSON, rewritten whole on every change: written to a
//! temporary file next to it, then renamed over it, so a crash leaves
//! either the old or the new content. Writes happen off the request path
//! (operator actions, the canary driver, start-up and reload).

use super::canary::State;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read canary state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("canary state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One canary's persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Hex SHA-256 of the definition; a changed definition starts afresh.
    pub definition: String,
    pub state: State,
    pub step: usize,
    /// When the current state or step was entered, Unix milliseconds.
    pub entered_unix_ms: u64,
    /// Percent on the canary.
    pub weight: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileBody {
    canaries: BTreeMap<String, Entry>,
}

/// The state file and its current content.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    entries: ArcSwap<BTreeMap<String, Entry>>,
    /// Bumped on every change; a writer that finds it moved after its
    /// rename writes again, so the newest content always lands last.
    generation: AtomicU64,
    tmp_seq: AtomicU64,
}

impl StateStore {
    /// Opens `path`, reading the canaries it holds; a missing file is empty.
    pub fn open(path: &Path) -> Result<Self, StateFileError> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<FileBody>(&bytes)
                    .map_err(|source| StateFileError::Parse {
                        path: path.to_path_buf(),
                        source,
                    })?
                    .canaries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(StateFileError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(StateStore {
            path: path.to_path_buf(),
            entries: ArcSwap::from_pointee(entries),
            generation: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
        })
    }

    /// An empty store that writes to `path` (its content is ignored).
    pub fn empty(path: &Path) -> Self {
        StateStore {
            path: path.to_path_buf(),
            entries: ArcSwap::from_pointee(BTreeMap::new()),
            generation: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted entry of `route`, when its definition hash is `hash`.
    pub fn entry(&self, route: &str, hash: &[u8; 32]) -> Option<Entry> {
        let entries = self.entries.load();
        let e = entries.get(route)?;
        (e.definition == hex::encode(hash)).then(|| e.clone())
    }

    /// Records `route`'s entry and rewrites the file. Failures are logged:
    /// serving goes on with the state in memory.
    pub fn save(&self, route: &str, entry: Entry) {
        if self.entries.load().get(route) == Some(&entry) {
            return;
        }
        self.entries.rcu(|cur| {
            let mut next = (**cur).clone();
            next.insert(route.to_owned(), entry.clone());
            next
        });
        self.generation.fetch_add(1, Ordering::AcqRel);
        loop {
            let generation = self.generation.load(Ordering::Acquire);
            if let Err(e) = self.write() {
                tracing::error!(path = %self.path.display(), "cannot write canary state file: {e}");
                return;
            }
            if self.generation.load(Ordering::Acquire) == generation {
                return;
            }
        }
    }

    fn write(&self) -> std::io::Result<()> {
        let body = FileBody {
            canaries: (**self.entries.load()).clone(),
        };
        let mut text = serde_json::to_vec_pretty(&body).map_err(std::io::Error::other)?;
        text.push(b'\n');
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}.{seq}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: State) -> Entry {
        Entry {
            definition: hex::encode([7u8; 32]),
            state,
            step: 1,
            entered_unix_ms: 1_700_000_000_000,
            weight: 0.0,
        }
    }

    #[test]
    fn saves_atomically_and_reads_back_only_for_the_same_definition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("canary.json");
        let store = StateStore::open(&path).unwrap();
        assert_eq!(store.entry("shop", &[7; 32]), None);
        store.save("shop", entry(State::RolledBack));
        let again = StateStore::open(&path).unwrap();
        assert_eq!(
            again.entry("shop", &[7; 32]),
            Some(entry(State::RolledBack))
        );
        assert_eq!(again.entry("shop", &[8; 32]), None, "changed definition");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn an_invalid_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            StateStore::open(&path),
            Err(StateFileError::Parse { .. })
        ));
    }
}
