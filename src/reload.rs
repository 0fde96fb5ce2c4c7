//! Reloading the rule files: read, validate and compile the whole new config
//! off the request path, then swap the compiled snapshot in one store. On any
//! error the old snapshot keeps serving.
//!
//! Triggers: the file watcher ([`watch`]), SIGHUP and `POST /reload`.
//! Observers ([`ReloadObserver`]) hear every applied or failed reload, so
//! metrics can count them without this module knowing about metrics.

pub mod watch;

use crate::config::{self, Diagnostic};
use crate::router::compile::{self, CompileEnv, Compiled};
use crate::router::{AdminSettings, Settings};
use crate::server::Proxy;
use crate::split::CanaryRegistry;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

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

/// How a reload attempt ended, as told to a [`ReloadObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new snapshot is active.
    Success,
    /// The new config was rejected; the old snapshot keeps serving.
    Failure,
}

impl ReloadResult {
    /// `success` or `failure` (the `result` label of
    /// `pointsman_config_reloads_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

/// Hears every reload attempt that was applied or rejected (a file change
/// with an unchanged hash is neither). `status` is the `/config` answer
/// after the attempt; its `generation` is the active one. Called off the
/// request path, after the swap.
pub trait ReloadObserver: Send + Sync {
    /// One reload attempt ended.
    fn reloaded(&self, result: ReloadResult, status: &ConfigStatus);
}

impl<F: Fn(ReloadResult, &ConfigStatus) + Send + Sync> ReloadObserver for F {
    fn reloaded(&self, result: ReloadResult, status: &ConfigStatus) {
        self(result, status)
    }
}

/// The observers, swapped whole when one is added.
#[derive(Default)]
struct Observers(ArcSwap<Vec<Arc<dyn ReloadObserver>>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.load().len())
    }
}

/// What was bound at start-up: a reload that changes it needs a restart.
#[derive(Debug, Clone, PartialEq)]
struct Bound {
    /// Address and, for TLS listeners, the ALPN list (fixed at bind).
    listeners: Vec<(SocketAddr, Option<Vec<String>>)>,
    admin: AdminSettings,
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
        }
    }
}

/// Owns the config path and reloads it into the proxy.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    proxy: Arc<Proxy>,
    canaries: Arc<CanaryRegistry>,
    status: ArcSwap<ConfigStatus>,
    /// Listener and admin settings as bound at start-up.
    bound: Bound,
    observers: Observers,
    /// Serializes reloads; never taken on the request path.
    running: tokio::sync::Mutex<()>,
}

/// Loads and compiles the config at `path` (used at start-up and by
/// `check`-like commands).
pub fn load_and_compile(
    path: &std::path::Path,
    env: CompileEnv<'_>,
) -> Result<(Compiled, Vec<String>, String), Vec<Diagnostic>> {
    let loaded = config::load(path)?;
    let sources = loaded.sources.iter().map(|s| s.name.to_string()).collect();
    let sha = loaded.sha256.clone();
    let compiled = compile::compile(&loaded, env)?;
    Ok((compiled, sources, sha))
}

/// RFC 3339 text of a time, in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Reloader {
    /// Wraps a proxy that was started from `path` with the given sources
    /// and hash (generation 1).
    pub fn new(
        path: PathBuf,
        proxy: Arc<Proxy>,
        canaries: Arc<CanaryRegistry>,
        sources: Vec<String>,
        sha256: String,
    ) -> Arc<Reloader> {
        let status = ConfigStatus {
            generation: 1,
            sha256,
            loaded_at: rfc3339(SystemTime::now()),
            sources,
            last_reload: None,
            pending_restart: false,
        };
        let bound = Bound::of(&proxy.snapshot().settings);
        Arc::new(Reloader {
            path,
            proxy,
            canaries,
            status: ArcSwap::from_pointee(status),
            bound,
            observers: Observers::default(),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// Adds an observer of reload outcomes (e.g. the metrics that count
    /// `pointsman_config_reloads_total{result}` and set
    /// `pointsman_config_generation`).
    pub fn add_observer(&self, observer: Arc<dyn ReloadObserver>) {
        self.observers.0.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(observer.clone());
            list
        });
    }

    /// The config path (a file or a directory) this reloader reads.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn notify(&self, result: ReloadResult, status: &ConfigStatus) {
        for o in self.observers.0.load().iter() {
            o.reloaded(result, status);
        }
    }

    /// The current `/config` status.
    pub fn status(&self) -> Arc<ConfigStatus> {
        self.status.load_full()
    }

    /// The proxy this reloader feeds.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Reloads now. The file watcher's trigger is skipped when the content
    /// hash equals the active config's; SIGHUP and `POST /reload` always
    /// make a new generation.
    pub async fn reload(&self, trigger: Trigger) -> Result<Arc<ConfigStatus>, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        let path = self.path.clone();
        // Only the compile holds the old snapshot, so the swap can free it.
        let prev_for_compile = self.proxy.snapshot();
        let canaries = self.canaries.clone();
        let active_sha = self.status().sha256.clone();
        let metrics = self.proxy.metrics().cloned();
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = (|| {
                let loaded = config::load(&path)?;
                if trigger == Trigger::FileChange && loaded.sha256 == active_sha {
                    return Ok(None);
                }
                let env = CompileEnv {
                    previous: Some(&prev_for_compile),
                    canaries: Some(&canaries),
                    metrics: metrics.as_deref(),
                };
                let sources: Vec<String> =
                    loaded.sources.iter().map(|s| s.name.to_string()).collect();
                let compiled = compile::compile(&loaded, env)?;
                Ok(Some((compiled, sources, loaded.sha256.clone())))
            })();
            // The parse tree was allocated and freed on this thread, whether
            // the result is used, unchanged or rejected: give its pages back.
            crate::allocator::release_free_memory();
            outcome
        })
        .await
        .unwrap_or_else(|e| {
            Err(vec![Diagnostic {
                file: Arc::from(self.path.display().to_string()),
                line: 1,
                column: 1,
                severity: config::Severity::Error,
                message: format!("reload task failed: {e}"),
            }])
        });
        let now = rfc3339(SystemTime::now());
        match outcome {
            Ok(None) => Err(ReloadError::Unchanged),
            Ok(Some((compiled, sources, sha256))) => {
                for w in &compiled.warnings {
                    tracing::warn!(target: "reload", "{w}");
                }
                // Compared with what is bound, so undoing the change clears it.
                let pending_restart = Bound::of(&compiled.snapshot.settings) != self.bound;
                if pending_restart {
                    tracing::warn!(
                        "listener `bind` or `admin` settings differ from the running ones: \
                         they take effect after a restart"
                    );
                }
                self.proxy.store(compiled.snapshot);
                // The old snapshot is freed by now, unless a request still
                // holds it.
                crate::allocator::release_free_memory();
                let old = self.status();
                let status = ConfigStatus {
                    generation: old.generation + 1,
                    sha256,
                    loaded_at: now.clone(),
                    sources,
                    last_reload: Some(LastReload {
                        result: "success",
                        at: now,
                        error: None,
                    }),
                    pending_restart,
                };
                tracing::info!(
                    generation = status.generation,
                    sha256 = %status.sha256,
                    ?trigger,
                    "config reloaded"
                );
                let active = self.proxy.snapshot();
                crate::telemetry::after_reload(
                    self.proxy.metrics().map(|m| &**m),
                    Some(&active),
                    status.generation,
                );
                let status = Arc::new(status);
                self.status.store(status.clone());
                self.notify(ReloadResult::Success, &status);
                Ok(status)
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(target: "reload", ?trigger, "{e}");
                }
                let first = errors.first().map(|d| d.to_string());
                let mut status = (*self.status()).clone();
                status.last_reload = Some(LastReload {
                    result: "failure",
                    at: now,
                    error: first,
                });
                self.notify(ReloadResult::Failure, &status);
                self.status.store(Arc::new(status));
                crate::telemetry::after_reload(self.proxy.metrics().map(|m| &**m), None, 0);
                Err(ReloadError::Invalid(errors))
            }
        }
    }
}
