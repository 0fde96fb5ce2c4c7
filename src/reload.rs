//! Reloading the rule files: read, validate and compile the whole new config
//! off the request path, then swap the compiled snapshot in one store. On any
//! error the old snapshot keeps serving.

use crate::config::{self, Diagnostic};
use crate::router::Settings;
use crate::router::compile::{self, CompileEnv, Compiled};
use crate::server::Proxy;
use crate::split::CanaryRegistry;
use arc_swap::ArcSwap;
use serde::Serialize;
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
    pub generation: u64,
    pub sha256: String,
    /// RFC 3339, UTC.
    pub loaded_at: String,
    pub sources: Vec<String>,
    pub last_reload: Option<LastReload>,
    pub pending_restart: bool,
}

/// The outcome of the latest reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// `success` or `failure`.
    pub result: &'static str,
    pub at: String,
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

/// Owns the config path and reloads it into the proxy.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    proxy: Arc<Proxy>,
    canaries: Arc<CanaryRegistry>,
    status: ArcSwap<ConfigStatus>,
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
        Arc::new(Reloader {
            path,
            proxy,
            canaries,
            status: ArcSwap::from_pointee(status),
            running: tokio::sync::Mutex::new(()),
        })
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
        let previous = self.proxy.snapshot();
        let canaries = self.canaries.clone();
        let active_sha = self.status().sha256.clone();
        let prev_for_compile = previous.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let loaded = config::load(&path)?;
            if trigger == Trigger::FileChange && loaded.sha256 == active_sha {
                return Ok(None);
            }
            let env = CompileEnv {
                previous: Some(&prev_for_compile),
                canaries: Some(&canaries),
            };
            let sources: Vec<String> = loaded.sources.iter().map(|s| s.name.to_string()).collect();
            let compiled = compile::compile(&loaded, env)?;
            Ok(Some((compiled, sources, loaded.sha256)))
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
                let pending_restart = self.status().pending_restart
                    || needs_restart(&previous.settings, &compiled.snapshot.settings);
                if needs_restart(&previous.settings, &compiled.snapshot.settings) {
                    tracing::warn!(
                        "listener or admin settings changed: they take effect after a restart"
                    );
                }
                self.proxy.store(compiled.snapshot);
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
                let status = Arc::new(status);
                self.status.store(status.clone());
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
                self.status.store(Arc::new(status));
                Err(ReloadError::Invalid(errors))
            }
        }
    }
}

/// Listener and admin changes need a restart (SPEC 7).
fn needs_restart(old: &Settings, new: &Settings) -> bool {
    let binds = |s: &Settings| {
        s.listeners
            .iter()
            .map(|l| (l.addr, l.tls.as_ref().map(|t| t.alpn.clone())))
            .collect::<Vec<_>>()
    };
    binds(old) != binds(new) || old.admin != new.admin
}
