//! The config file watcher: watches DIRECTORIES, not files, debounces, and
//! asks the [`Reloader`] for a [`Trigger::FileChange`] reload.
//!
//! A watch on a file goes deaf when an editor saves by renaming a new file
//! over it, or when Kubernetes swaps a ConfigMap's `..data` symlink: the
//! watched inode is no longer the file. A directory watch sees both, so the
//! watcher watches the config's directory (the file's parent for a single
//! file) and the directories of the files the config names
//! ([`Reloader::files`]: certificates, keys, CA bundles). Any event there
//! starts a quiet period
//! ([`DEBOUNCE`]); when it ends, the config is read again, and the reload
//! is skipped when the content hash is unchanged. A half-written file fails
//! to parse (a failed reload; the old config stays), and the event of the
//! completed write triggers the next read.

use super::{Reloader, Trigger};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Quiet time after the last event before the config is read.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// A steady stream of events cannot delay a reload longer than this, so a
/// change is in effect within 1 second (SPEC 7).
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The OS watcher could not be created (e.g. the inotify limit).
    #[error("cannot watch config files: {0}")]
    Notify(#[from] notify::Error),
}

/// The directories to watch for a config at `config` (a file or a
/// directory) and the other files it names (`files`).
pub fn watch_dirs(config: &Path, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    dirs.insert(dir_of(config, config.is_dir()));
    for p in files {
        dirs.insert(dir_of(p, false));
    }
    dirs
}

/// The directory itself, or a file's parent (`.` for a bare file name).
fn dir_of(path: &Path, is_dir: bool) -> PathBuf {
    if is_dir {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether an event can mean changed content. Opening or reading a file
/// (the reload itself reads them) cannot.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// A running watcher; dropping it stops watching.
#[derive(Debug)]
pub struct ConfigWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `reloader`'s config. The watches are in place when this
/// returns, so a change made afterwards is seen. Must be called inside a
/// tokio runtime.
pub fn spawn(reloader: Arc<Reloader>) -> Result<ConfigWatcher, WatchError> {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(event) if is_change(&event.kind) => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(target: "reload", error = %e, "config watcher error"),
    })?;
    let mut watched = BTreeSet::new();
    update_watches(
        &mut watcher,
        &mut watched,
        watch_dirs(reloader.path(), &reloader.files()),
    );
    let task = tokio::spawn(run(reloader, watcher, watched, rx));
    Ok(ConfigWatcher { task })
}

/// Adds and removes directory watches to match `want`.
fn update_watches(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    want: BTreeSet<PathBuf>,
) {
    for gone in watched.difference(&want) {
        if let Err(e) = watcher.unwatch(gone) {
            tracing::debug!(target: "reload", dir = %gone.display(), error = %e, "unwatch failed");
        }
    }
    let mut now = BTreeSet::new();
    for dir in want {
        if watched.contains(&dir) {
            now.insert(dir);
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::debug!(target: "reload", dir = %dir.display(), "watching");
                now.insert(dir);
            }
            Err(e) => tracing::warn!(
                target: "reload",
                dir = %dir.display(),
                error = %e,
                "cannot watch directory; changes there need SIGHUP or POST /reload"
            ),
        }
    }
    *watched = now;
}

async fn run(
    reloader: Arc<Reloader>,
    mut watcher: RecommendedWatcher,
    mut watched: BTreeSet<PathBuf>,
    mut events: mpsc::UnboundedReceiver<()>,
) {
    while events.recv().await.is_some() {
        // Debounce: wait for DEBOUNCE without events, at most MAX_DELAY.
        let deadline = Instant::now() + MAX_DELAY;
        loop {
            let quiet = (Instant::now() + DEBOUNCE).min(deadline);
            tokio::select! {
                ev = events.recv() => if ev.is_none() { return },
                _ = tokio::time::sleep_until(quiet) => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        // Failures are logged and recorded by the reloader.
        if reloader.reload(Trigger::FileChange).await.is_ok() {
            let want = watch_dirs(reloader.path(), &reloader.files());
            if want != watched {
                update_watches(&mut watcher, &mut watched, want);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_watched_through_its_directory() {
        let dirs = watch_dirs(Path::new("conf/rules.yaml"), &[]);
        assert_eq!(
            dirs.into_iter().collect::<Vec<_>>(),
            vec![PathBuf::from("conf")]
        );
        let dirs = watch_dirs(Path::new("rules.yaml"), &[]);
        assert_eq!(
            dirs.into_iter().collect::<Vec<_>>(),
            vec![PathBuf::from(".")]
        );
    }

    #[test]
    fn reads_are_not_changes() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            notify::event::AccessMode::Any
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(
            notify::event::ModifyKind::Any
        )));
    }
}
