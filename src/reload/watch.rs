//! The config file watcher: watches DIRECTORIES, not files, debounces, and
//! asks the [`Reloader`] for a [`Trigger::FileChange`] reload.
//!
//! A watch on a file goes deaf when an editor saves by renaming a new file
//! over it, or when Kubernetes swaps a ConfigMap's `..data` symlink: the
//! watched inode is no longer the file. A directory watch sees both, so the
//! watcher watches the config's directory (the file's parent for a single
//! file) and the directories of the files the config names
//! ([`Reloader::files`]: certificates, keys, CA bundles). An event there on
//! a config file (the rule file, a `*.yaml`/`*.yml` in a config directory,
//! a named file) or on Kubernetes' `..data` swap starts a quiet period
//! ([`DEBOUNCE`]); when it ends, the config is read again, and the reload
//! is skipped when the content hash is unchanged. Other files in those
//! directories (a log, a state file, an editor's swap file) are ignored on
//! the watcher's own thread: they neither wake the serving runtime nor make
//! it read and hash the config again. A half-written file fails to parse (a
//! failed reload; the old config stays), and the event of the completed
//! write triggers the next read.

use super::{Reloader, Trigger};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
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
    ConfigFiles::new(config, files).dirs.into_keys().collect()
}

/// The config's files, by watched directory: what an event must name to
/// count as a change.
#[derive(Debug, Default)]
struct ConfigFiles {
    dirs: BTreeMap<PathBuf, DirFiles>,
}

/// The config's files in one watched directory.
#[derive(Debug, Default)]
struct DirFiles {
    /// A config directory: every rule file it lists counts, present or
    /// yet to be created.
    rule_files: bool,
    /// The files named there: a rule file given by path, certificates,
    /// keys, CA bundles.
    names: BTreeSet<OsString>,
}

impl ConfigFiles {
    fn new(config: &Path, files: &[PathBuf]) -> Self {
        let mut this = ConfigFiles::default();
        if config.is_dir() {
            this.dirs
                .entry(config.to_path_buf())
                .or_default()
                .rule_files = true;
        } else {
            this.name(config);
        }
        for p in files {
            this.name(p);
        }
        this
    }

    fn name(&mut self, file: &Path) {
        let dir = self.dirs.entry(dir_of(file, false)).or_default();
        if let Some(name) = file.file_name() {
            dir.names.insert(name.to_os_string());
        }
    }

    /// Whether an event on `paths` can change the config. An event with no
    /// path, or on a path outside the watched directories (the directory
    /// itself), counts: a needless read is skipped by the hash, a missed
    /// change is not.
    fn touched_by(&self, paths: &[PathBuf]) -> bool {
        paths.is_empty() || paths.iter().any(|p| self.covers(p))
    }

    fn covers(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return true;
        };
        let Some(files) = self.dirs.get(dir) else {
            return true;
        };
        let bytes = name.as_encoded_bytes();
        // Kubernetes swaps a ConfigMap's or Secret's files by renaming a new
        // `..data` link over the old one; the files are links through it.
        bytes.starts_with(b"..")
            || files.names.contains(name)
            || (files.rule_files && crate::config::is_rule_file_name(bytes))
    }
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
    // Told from the active config at each event, so a reload by any
    // trigger that names other files is followed at once.
    let active = reloader.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(event)
            if is_change(&event.kind)
                && ConfigFiles::new(active.path(), &active.files()).touched_by(&event.paths) =>
        {
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
        // Failures are logged and recorded by the reloader. The watches
        // follow the active config whatever the result: SIGHUP or `POST
        // /reload` may have applied this change already (this one is then
        // unchanged).
        let _ = reloader.reload(Trigger::FileChange).await;
        let want = watch_dirs(reloader.path(), &reloader.files());
        if want != watched {
            update_watches(&mut watcher, &mut watched, want);
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
    fn only_config_files_and_kubernetes_swaps_count() {
        let files = ConfigFiles::new(
            Path::new("conf/rules.yaml"),
            &[PathBuf::from("conf/tls/site.crt")],
        );
        let touched = |p: &str| files.touched_by(&[PathBuf::from(p)]);
        assert!(touched("conf/rules.yaml"));
        assert!(touched("conf/tls/site.crt"));
        assert!(touched("conf/..data"), "a ConfigMap swap");
        assert!(touched("conf/tls/..data_tmp"));
        assert!(!touched("conf/access.log"), "a log next to the rules");
        assert!(!touched("conf/other.yaml"), "the config is one file");
        assert!(!touched("conf/.rules.yaml.swp"));
        assert!(!touched("conf/tls/site.key"), "not named by the config");
        assert!(touched("elsewhere/x"), "outside the watched directories");
        assert!(touched("conf"), "the directory itself");
        assert!(files.touched_by(&[]), "an event with no path");
        assert!(files.touched_by(&[
            PathBuf::from("conf/rules.yaml.tmp"),
            PathBuf::from("conf/rules.yaml")
        ]));
    }

    #[test]
    fn every_rule_file_of_a_config_directory_counts() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("rules.d");
        std::fs::create_dir(&conf).unwrap();
        let files = ConfigFiles::new(&conf, &[conf.join("ca.pem")]);
        let touched = |n: &str| files.touched_by(&[conf.join(n)]);
        assert!(touched("20-new.yaml"), "a rule file yet to be listed");
        assert!(touched("10-a.yml"));
        assert!(touched("ca.pem"));
        assert!(!touched(".10-a.yaml"), "hidden files are not listed");
        assert!(!touched("state.json"));
        assert!(!touched("notes.txt"));
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
