//! `pointsman run`: load the config, bind the listeners and the admin API,
//! serve, reload on SIGHUP, and drain on SIGTERM/SIGINT.

use crate::admin::{self, AdminState};
use crate::config::Diagnostic;
use crate::metrics::Metrics;
use crate::reload::{self, Reloader, Trigger};
use crate::router::compile::CompileEnv;
use crate::router::{Action, Snapshot};
use crate::server::{Proxy, Server};
use crate::split::CanaryRegistry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

/// The runtime `run` serves on: `threads` workers (default: one per CPU).
/// One worker runs on a current-thread runtime: the same event loop
/// without the work-stealing scheduler's atomics and cross-thread wakeups.
pub fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = threads.filter(|&n| n > 1) {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config is invalid or missing (exit code 1).
    #[error("invalid config")]
    Config(Vec<Diagnostic>),
    /// A runtime failure such as a bind error (exit code 3).
    #[error("{0}")]
    Runtime(String),
}

/// What `run` serves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
}

/// Addresses a started proxy listens on.
#[derive(Debug, Clone)]
pub struct Bound {
    pub listeners: Vec<SocketAddr>,
    pub admin: SocketAddr,
}

/// A started proxy: bound, not yet serving.
#[derive(Debug)]
pub struct Started {
    pub bound: Bound,
    server: Server,
    admin: Arc<AdminState>,
    admin_listener: TcpListener,
}

/// Loads the config and binds every listener and the admin API.
pub async fn start(opts: &RunOptions) -> Result<Started, RunError> {
    let canaries = Arc::new(CanaryRegistry::new());
    let metrics =
        Metrics::new().map_err(|e| RunError::Runtime(format!("cannot create metrics: {e}")))?;
    let env = CompileEnv {
        previous: None,
        canaries: Some(&canaries),
        metrics: Some(&metrics),
    };
    let (compiled, sources, sha) =
        reload::load_and_compile(&opts.config, env).map_err(RunError::Config)?;
    // The parse tree and build tables are gone: give their pages back.
    crate::allocator::release_free_memory();
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    warn_unpersisted_canaries(&compiled.snapshot);
    if let Some(path) = &compiled.snapshot.settings.state_file {
        canaries.use_state_file(path, tokio::time::Instant::now());
    }
    let admin_addr = compiled.snapshot.settings.admin.addr;
    let token = match &compiled.snapshot.settings.admin.token_file {
        Some(path) => Some(admin::read_token(path).map_err(|e| {
            RunError::Config(vec![Diagnostic {
                file: Arc::from(path.display().to_string()),
                line: 1,
                column: 1,
                severity: crate::config::Severity::Error,
                message: format!("cannot read admin token file: {e}"),
            }])
        })?),
        None => None,
    };
    metrics.set_generation(1);
    let proxy = Proxy::with_metrics(compiled.snapshot, Some(metrics.clone()));
    let server = Server::bind(proxy.clone())
        .map_err(|e| RunError::Runtime(format!("cannot bind listener: {e}")))?;
    let listeners = server
        .local_addrs()
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let admin_listener = TcpListener::bind(admin_addr)
        .await
        .map_err(|e| RunError::Runtime(format!("cannot bind admin {admin_addr}: {e}")))?;
    let admin_local = admin_listener
        .local_addr()
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let reloader = Reloader::new(
        opts.config.clone(),
        proxy.clone(),
        canaries.clone(),
        sources,
        sha,
    );
    canaries.spawn_driver(Duration::from_millis(250));
    let admin = Arc::new(AdminState {
        reloader,
        ready: Default::default(),
        draining: Default::default(),
        token,
        metrics: Some(Arc::new(move || {
            crate::telemetry::render(&metrics, &proxy.snapshot())
        })),
    });
    Ok(Started {
        bound: Bound {
            listeners,
            admin: admin_local,
        },
        server,
        admin,
        admin_listener,
    })
}

impl Started {
    /// Serves until SIGTERM/SIGINT, then drains and returns. A second signal
    /// exits the process at once. SIGHUP reloads.
    pub async fn serve(self) -> Result<(), RunError> {
        let Started {
            bound,
            server,
            admin,
            admin_listener,
        } = self;
        tokio::spawn(admin::serve(admin_listener, admin.clone()));
        spawn_sighup(admin.reloader.clone());
        // Watches are in place before /readyz turns 200; dropped on return.
        let _watcher = reload::watch::spawn(admin.reloader.clone())
            .map_err(|e| tracing::warn!("{e}; reload with SIGHUP or POST /reload"))
            .ok();
        admin.ready.store(true, Ordering::Relaxed);
        tracing::info!(listeners = ?bound.listeners, admin = %bound.admin, "pointsman serving");
        let draining = admin.clone();
        let shutdown = async move {
            wait_for_signal().await;
            draining.draining.store(true, Ordering::Relaxed);
            tracing::info!("shutting down: draining in-flight requests");
            tokio::spawn(async {
                wait_for_signal().await;
                tracing::warn!("second signal: exiting now");
                std::process::exit(0);
            });
        };
        server
            .serve(shutdown)
            .await
            .map_err(|e| RunError::Runtime(e.to_string()))?;
        tracing::info!("drained; bye");
        Ok(())
    }
}

/// SPEC 4: without `state_file`, canary state does not survive a restart.
fn warn_unpersisted_canaries(snapshot: &Snapshot) {
    if snapshot.settings.state_file.is_some() {
        return;
    }
    for r in &snapshot.routes {
        if let Action::Canary(c) = &r.action
            && (c.def.guard.is_some() || matches!(c.def.plan, crate::split::canary::Plan::Steps(_)))
        {
            tracing::warn!(
                canary = %r.name,
                "no state_file: this canary's progress and rollbacks start afresh on restart"
            );
        }
    }
}

fn spawn_sighup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        while hup.recv().await.is_some() {
            let _ = reloader.reload(Trigger::Signal).await;
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
