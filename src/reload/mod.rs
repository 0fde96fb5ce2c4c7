//! Reloading the rule files: read, validate and compile the whole new config
//! off the request path, link it to the runtime, then swap the snapshot in
//! one store. On any error the old snapshot keeps serving.
//!
//! Triggers: the file watcher ([`watch`]), SIGHUP and `POST /reload`.

pub mod client;
pub mod watch;

use crate::clock::rfc3339;
use crate::compile::{self, AdminSettings, Compiled, FleetSettings, Settings};
use crate::config::{self, Diagnostic};
use crate::runtime::Live;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A config file changed (skipped when the content hash is unchanged).
    FileChange,
    /// SIGHUP.
    Signal,
    /// `POST /reload`.
    Admin,
}

/// The `/config` answer.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigStatus {
    /// 1 at start-up, +1 per applied reload.
    pub generation: u64,
    /// Over every file's listed name and content, in load order.
    pub sha256: String,
    /// When the active config was applied; RFC 3339, UTC.
    pub loaded_at: String,
    /// The rule files of the active config, in load order.
    pub sources: Vec<String>,
    /// The latest reload attempt (`null` before the first).
    pub last_reload: Option<LastReload>,
    /// A listener's `bind` or `admin` differs from what is running.
    pub pending_restart: bool,
}

/// The outcome of the latest reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// `success` or `failure`.
    pub result: &'static str,
    /// RFC 3339, UTC.
    pub at: String,
    /// The first error, `FILE:LINE:COL: error: MESSAGE`, on failure.
    pub error: Option<String>,
}

/// Why a reload did not apply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid; the old one keeps serving.
    #[error("{}", .0.first().map(|d| d.to_string()).unwrap_or_default())]
    Invalid(Vec<Diagnostic>),
    /// The files did not change (file watcher only).
    #[error("config unchanged")]
    Unchanged,
}

/// What was bound at start-up: a reload that changes it needs a restart.
#[derive(Debug, Clone, PartialEq)]
struct Bound {
    /// Address and, for TLS listeners, the ALPN list (fixed at bind).
    listeners: Vec<(SocketAddr, Option<Vec<String>>)>,
    admin: AdminSettings,
    /// The fleet joined at start (SPEC 11).
    fleet: Option<FleetSettings>,
}

impl Bound {
    fn of(settings: &Settings) -> Bound {
        Bound {
            listeners: settings
                .listeners
                .iter()
                .map(|l| (l.addr, l.tls.as_ref().map(|t| t.alpn.clone())))
                .collect(),
            admin: settings.admin.clone(),
            fleet: settings.fleet.clone(),
        }
    }
}

/// Owns the config path and reloads it into the live snapshot.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    live: Arc<Live>,
    status: ArcSwap<ConfigStatus>,
    /// Listener and admin settings as bound at start-up.
    bound: Bound,
    /// The certificate, key and CA files of the active config (watched).
    files: ArcSwap<Vec<PathBuf>>,
    /// Serializes reloads; never taken on the request path.
    running: tokio::sync::Mutex<()>,
}

/// A config read and compiled, with what `/config` says about it.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The compiled config and its warnings.
    pub compiled: Compiled,
    /// What `/config` says about it.
    pub started: Started,
}

/// What `/config` says about the config a process started with.
#[derive(Debug, Clone)]
pub struct Started {
    /// The rule files, in load order.
    pub sources: Vec<String>,
    /// The config hash (SPEC 7).
    pub sha256: String,
    /// The certificate, key and CA files it names.
    pub files: Vec<PathBuf>,
}

/// Loads and compiles the config at `path` (start-up, reloads, `check`,
/// `explain`, `assign`, `diff`).
pub fn load_and_compile(path: &std::path::Path) -> Result<LoadedConfig, Vec<Diagnostic>> {
    let loaded = config::load(path)?;
    let started = Started::of(&loaded);
    let compiled = compile::compile(loaded)?;
    Ok(LoadedConfig { compiled, started })
}

impl Started {
    /// What `/config` will say about `loaded`, taken before it is compiled
    /// (the compile consumes it).
    fn of(loaded: &config::Loaded) -> Started {
        Started {
            sources: loaded.source_names(),
            sha256: loaded.sha256.clone(),
            files: loaded.files.paths().map(PathBuf::from).collect(),
        }
    }
}

impl Reloader {
    /// Wraps a live snapshot that was started from `path` (generation 1)
    /// with what `/config` says about its config.
    pub fn new(path: PathBuf, live: Arc<Live>, started: Started) -> Arc<Reloader> {
        let status = ConfigStatus {
            generation: 1,
            sha256: started.sha256,
            loaded_at: rfc3339(SystemTime::now()),
            sources: started.sources,
            last_reload: None,
            pending_restart: false,
        };
        let bound = Bound::of(&live.snapshot().config.settings);
        Arc::new(Reloader {
            path,
            live,
            status: ArcSwap::from_pointee(status),
            bound,
            files: ArcSwap::from_pointee(started.files),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The config path (a file or a directory) this reloader reads.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The certificate, key and CA files of the active config.
    pub fn files(&self) -> Arc<Vec<PathBuf>> {
        self.files.load_full()
    }

    /// The current `/config` status.
    pub fn status(&self) -> Arc<ConfigStatus> {
        self.status.load_full()
    }

    /// The live snapshot this reloader feeds.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Reloads now. The file watcher's trigger is skipped when the content
    /// hash equals the active config's; SIGHUP and `POST /reload` always
    /// make a new generation. The whole reload runs on a thread of its own
    /// ([`off_the_request_path`]), never on a serving one.
    pub async fn reload(
        self: &Arc<Self>,
        trigger: Trigger,
    ) -> Result<Arc<ConfigStatus>, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        let this = self.clone();
        off_the_request_path(move |answer| {
            let retired = match this.prepare(trigger) {
                Ok(None) => {
                    let _ = answer.send(Err(ReloadError::Unchanged));
                    None
                }
                Ok(Some(next)) => {
                    let (status, old) = this.apply(next, trigger);
                    let _ = answer.send(Ok(status));
                    Some(old)
                }
                Err(errors) => {
                    let _ = answer.send(Err(this.refuse(errors, trigger)));
                    None
                }
            };
            // After the answer. The parse tree was freed on this thread,
            // whether the result was used, unchanged or rejected: its pages
            // go back. Freeing the old snapshot takes milliseconds for a
            // large rule set, and is not left to the last request that
            // held it.
            crate::allocator::release_free_memory();
            if let Some(old) = retired {
                drop_when_unshared(old, RETIRE_WAIT);
                crate::allocator::release_free_memory();
            }
        })
        .await
        .unwrap_or_else(|e| {
            Err(ReloadError::Invalid(vec![Diagnostic::whole_file(
                &self.path.display().to_string(),
                format!("reload task failed: {e}"),
            )]))
        })
    }

    /// Reads, compiles and links the config (`None`: a file change that
    /// left the content as it is, told by its hash before any parsing).
    fn prepare(&self, trigger: Trigger) -> Result<Option<Prepared>, Vec<Diagnostic>> {
        if trigger == Trigger::FileChange
            && config::fingerprint(&self.path, &self.files()).as_ref()
                == Some(&self.status().sha256)
        {
            return Ok(None);
        }
        let LoadedConfig { compiled, started } = load_and_compile(&self.path)?;
        for w in &compiled.warnings {
            tracing::warn!(target: "reload", "{w}");
        }
        Ok(Some(Prepared {
            bound: Bound::of(&compiled.config.settings),
            snapshot: self.live.runtime().link(compiled.config),
            started,
        }))
    }

    /// Swaps the new snapshot in, records the new generation and updates
    /// the metrics; gives back the replaced snapshot.
    fn apply(
        &self,
        next: Prepared,
        trigger: Trigger,
    ) -> (Arc<ConfigStatus>, Arc<crate::runtime::Snapshot>) {
        // Compared with what is bound, so undoing the change clears it.
        let pending_restart = next.bound != self.bound;
        if pending_restart {
            tracing::warn!(
                "listener `bind`, `admin` or `fleet` settings differ from the running ones: \
                 they take effect after a restart"
            );
        }
        let now = rfc3339(SystemTime::now());
        let status = Arc::new(ConfigStatus {
            generation: self.status().generation + 1,
            sha256: next.started.sha256,
            loaded_at: now.clone(),
            sources: next.started.sources,
            last_reload: Some(LastReload {
                result: "success",
                at: now,
                error: None,
            }),
            pending_restart,
        });
        // `/config` tells the new generation from the moment it serves.
        let old = self.live.swap(next.snapshot);
        self.status.store(status.clone());
        self.files.store(Arc::new(next.started.files));
        tracing::info!(
            generation = status.generation,
            sha256 = %status.sha256,
            ?trigger,
            "config reloaded"
        );
        // Drops the series of routes that are gone (milliseconds for
        // 10,000 routes); the answer to `POST /reload` waits for it.
        if let Some(m) = self.live.runtime().metrics() {
            let active = self.live.snapshot();
            crate::runtime::scrape::after_reload(m, Some(&active), status.generation);
        }
        (status, old)
    }

    /// Keeps the old config serving and records why the new one was refused.
    fn refuse(&self, errors: Vec<Diagnostic>, trigger: Trigger) -> ReloadError {
        for e in &errors {
            tracing::error!(target: "reload", ?trigger, "{e}");
        }
        let mut status = (*self.status()).clone();
        status.last_reload = Some(LastReload {
            result: "failure",
            at: rfc3339(SystemTime::now()),
            error: errors.first().map(|d| d.to_string()),
        });
        self.status.store(Arc::new(status));
        if let Some(m) = self.live.runtime().metrics() {
            crate::runtime::scrape::after_reload(m, None, 0);
        }
        ReloadError::Invalid(errors)
    }
}

/// A compiled and linked config, ready to swap in.
struct Prepared {
    snapshot: crate::runtime::Snapshot,
    bound: Bound,
    started: Started,
}

/// Runs `f` on a background thread of its own (nice 10, yielding every
/// 100 µs: [`crate::yielding::run_in_background`]); `f` answers through
/// the sender it is given and may go on with work nobody waits for. On a
/// machine whose cores are busy serving, a reload's parse and compile
/// (40–80 ms of CPU for 10,000 routes) then take the CPU the requests
/// leave, instead of an equal share of it, and never hold a core a
/// serving thread waits for longer than that.
async fn off_the_request_path<T: Send + 'static>(
    f: impl FnOnce(tokio::sync::oneshot::Sender<T>) + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pointsman-reload".into())
        .spawn(move || {
            crate::yielding::run_in_background();
            f(tx);
        })
        .map_err(|e| e.to_string())?;
    rx.await
        .map_err(|_| "the reload thread ended early".to_string())
}

/// How long a replaced snapshot waits for the requests still using it
/// before it is let go anyway (a long-lived tunnel may hold one).
const RETIRE_WAIT: Duration = Duration::from_secs(10);

/// Drops `old` once nothing else holds it (polling every millisecond, up
/// to `wait`), so that its memory is freed on this thread rather than by
/// whichever request lets go of it last.
fn drop_when_unshared<T>(old: Arc<T>, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(old);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::thread::ThreadId;

    /// Records the thread it was dropped on.
    struct Dropped(Arc<OnceLock<ThreadId>>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.set(std::thread::current().id());
        }
    }

    #[test]
    fn a_replaced_snapshot_is_freed_by_the_retiring_thread() {
        let on = Arc::new(OnceLock::new());
        let old = Arc::new(Dropped(on.clone()));
        let request = old.clone();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(request);
        });
        let start = std::time::Instant::now();
        drop_when_unshared(old, Duration::from_secs(5));
        assert!(start.elapsed() >= Duration::from_millis(25));
        assert_eq!(on.get(), Some(&std::thread::current().id()));
        holder.join().unwrap();
        // A holder that never lets go is not waited for beyond `wait`.
        let on = Arc::new(OnceLock::new());
        let old = Arc::new(Dropped(on.clone()));
        let _kept = old.clone();
        let start = std::time::Instant::now();
        drop_when_unshared(old, Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(on.get().is_none());
    }

    #[tokio::test]
    async fn a_reload_passes_yield_points_as_it_parses_and_compiles() {
        use std::fmt::Write;
        let mut text = String::from("upstreams:\n  b: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n");
        for i in 0..200 {
            let _ = writeln!(
                text,
                "  - {{name: r{i}, match: {{path_prefix: /p{i}, header: {{name: x, equals: v}}}}, to: b}}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, text).unwrap();
        assert_eq!(crate::yielding::points_passed(), None);
        let passed = off_the_request_path(move |answer| {
            let loaded = load_and_compile(&path).map(|l| l.compiled.config.routes.routes().len());
            let _ = answer.send((loaded.ok(), crate::yielding::points_passed()));
        })
        .await;
        let (routes, passed) = passed.unwrap();
        assert_eq!(routes, Some(200));
        // At least one point per route read and one per route compiled.
        assert!(passed.unwrap_or(0) >= 400, "{passed:?}");
    }
}
