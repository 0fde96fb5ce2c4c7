//! The `state_file` (SPEC 4, 8): each canary's state, step, time entered
//! and weight, and each experiment's kill-switch state, keyed by name with
//! the definition identity, so a restart does not undo a rollback, a
//! promotion or a stopped experiment.
//!
//! The file is JSON, rewritten whole on every change: written to a
//! temporary file next to it, then renamed over it, so a crash leaves
//! either the old or the new content. Writes happen on a thread of their
//! own, never on the serving runtime: a change updates the entries in
//! memory and wakes the writer, which writes the newest entries (changes
//! that arrive meanwhile are written together).

use super::canary::State;
use super::identity::Identity;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file exists but cannot be read.
    #[error("cannot read canary state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the JSON this module writes.
    #[error("canary state file {path} is not valid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// One canary's persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Hex identity of the definition; a changed definition starts afresh.
    pub definition: String,
    /// The state.
    pub state: State,
    /// The step (0 for a fixed weight).
    pub step: usize,
    /// When the current state or step was entered, Unix milliseconds.
    pub entered_unix_ms: u64,
    /// Percent on the canary.
    pub weight: f64,
}

/// One experiment's persisted kill-switch state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperimentEntry {
    /// Hex identity of the definition; a changed definition runs afresh.
    pub definition: String,
    /// `running`, `stopped` or `released`.
    pub state: String,
    /// The released variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct FileBody {
    #[serde(default)]
    canaries: BTreeMap<String, Entry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    experiments: BTreeMap<String, ExperimentEntry>,
}

type Entries = Arc<ArcSwap<FileBody>>;

enum WriterMsg {
    /// The entries changed: write them.
    Changed,
    /// Answer once everything before this message is written.
    Flush(mpsc::SyncSender<()>),
}

/// The state file and its current content.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    entries: Entries,
    writer: mpsc::Sender<WriterMsg>,
}

impl StateStore {
    /// Opens `path`, reading the canaries it holds; a missing file is empty.
    pub fn open(path: &Path) -> Result<Self, StateFileError> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<FileBody>(&bytes).map_err(|source| {
                StateFileError::Parse {
                    path: path.to_path_buf(),
                    source,
                }
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileBody::default(),
            Err(source) => {
                return Err(StateFileError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(Self::with_entries(path, entries))
    }

    /// An empty store that writes to `path` (its content is ignored).
    pub fn empty(path: &Path) -> Self {
        Self::with_entries(path, FileBody::default())
    }

    fn with_entries(path: &Path, entries: FileBody) -> Self {
        let entries: Entries = Arc::new(ArcSwap::from_pointee(entries));
        let (writer, rx) = mpsc::channel();
        let (path2, entries2) = (path.to_path_buf(), entries.clone());
        let spawned = std::thread::Builder::new()
            .name("pointsman-state".into())
            .spawn(move || write_loop(&path2, &entries2, &rx));
        if let Err(e) = spawned {
            tracing::error!(path = %path.display(), "cannot start the state file writer: {e}");
        }
        StateStore {
            path: path.to_path_buf(),
            entries,
            writer,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted entry of `route`, when its definition is `identity`.
    pub fn entry(&self, route: &str, identity: &Identity) -> Option<Entry> {
        let entries = self.entries.load();
        let e = entries.canaries.get(route)?;
        (e.definition == identity.hex()).then(|| e.clone())
    }

    /// Records `route`'s entry; the writer thread rewrites the file soon.
    /// Write failures are logged: serving goes on with the state in memory.
    pub fn save(&self, route: &str, entry: Entry) {
        if self.entries.load().canaries.get(route) == Some(&entry) {
            return;
        }
        self.entries.rcu(|cur| {
            let mut next = (**cur).clone();
            next.canaries.insert(route.to_owned(), entry.clone());
            next
        });
        let _ = self.writer.send(WriterMsg::Changed);
    }

    /// The persisted kill-switch state of experiment `name`, when its
    /// definition is `identity`.
    pub fn experiment(&self, name: &str, identity: &Identity) -> Option<ExperimentEntry> {
        let entries = self.entries.load();
        let e = entries.experiments.get(name)?;
        (e.definition == identity.hex()).then(|| e.clone())
    }

    /// Records experiment `name`'s kill-switch state.
    pub fn save_experiment(&self, name: &str, entry: ExperimentEntry) {
        if self.entries.load().experiments.get(name) == Some(&entry) {
            return;
        }
        self.entries.rcu(|cur| {
            let mut next = (**cur).clone();
            next.experiments.insert(name.to_owned(), entry.clone());
            next
        });
        let _ = self.writer.send(WriterMsg::Changed);
    }

    /// Blocks until every change saved so far is in the file.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.writer.send(WriterMsg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The writer thread: waits for changes, writes the newest entries, answers
/// flushes; ends when the store is dropped.
fn write_loop(path: &Path, entries: &Entries, rx: &mpsc::Receiver<WriterMsg>) {
    while let Ok(first) = rx.recv() {
        let mut changed = matches!(first, WriterMsg::Changed);
        let mut flushes = Vec::new();
        if let WriterMsg::Flush(ack) = first {
            flushes.push(ack);
        }
        // Coalesce whatever else is queued: one write covers it all.
        while let Ok(msg) = rx.try_recv() {
            match msg {
                WriterMsg::Changed => changed = true,
                WriterMsg::Flush(ack) => flushes.push(ack),
            }
        }
        if changed && let Err(e) = write(path, &entries.load()) {
            tracing::error!(path = %path.display(), "cannot write canary state file: {e}");
        }
        for ack in flushes {
            let _ = ack.send(());
        }
    }
}

fn write(path: &Path, body: &FileBody) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(body).map_err(std::io::Error::other)?;
    text.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::identity::Canonical;

    fn id(n: u8) -> Identity {
        Canonical::new("test").number("n", f64::from(n)).finish()
    }

    fn entry(state: State) -> Entry {
        Entry {
            definition: id(7).hex(),
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
        assert_eq!(store.entry("shop", &id(7)), None);
        store.save("shop", entry(State::RolledBack));
        store.flush();
        let again = StateStore::open(&path).unwrap();
        assert_eq!(again.entry("shop", &id(7)), Some(entry(State::RolledBack)));
        assert_eq!(again.entry("shop", &id(8)), None, "changed definition");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }

    /// Re-house fix: saving never writes the file on the caller's thread
    /// (the serving runtime), even when the write itself blocks: here the
    /// temporary file is a FIFO no one reads yet, so `open` blocks.
    #[test]
    fn save_returns_while_the_write_is_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canary.json");
        let tmp = dir
            .path()
            .join(format!("canary.json.tmp.{}", std::process::id()));
        let made = std::process::Command::new("mkfifo").arg(&tmp).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let store = StateStore::open(&path).unwrap();
        let t = std::time::Instant::now();
        store.save("shop", entry(State::Paused));
        assert!(t.elapsed() < std::time::Duration::from_millis(200));
        // The writer waits on the FIFO; reading it lets the write through.
        let written = std::fs::read_to_string(&tmp).unwrap();
        assert!(written.contains("\"paused\""), "{written}");
        store.flush();
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
