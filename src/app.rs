//! `pointsman run`: wiring only. Load and compile the config, link it to a
//! new runtime, bind the listeners and the admin API, serve, reload on
//! SIGHUP, and drain on SIGTERM/SIGINT.

use crate::admin::{self, AdminState};
use crate::compile::Config;
use crate::config::Diagnostic;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::reload::{self, Reloader, Trigger};
use crate::runtime::{Live, Runtime};
use crate::server::Server;
use crate::split::canary::Plan;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

/// The event loop `run` starts on: the first serving thread's
/// ([`crate::server::serving_runtime`]); [`Started::serve`] starts the
/// others.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    crate::server::serving_runtime()
}

/// How many serving threads `--threads` asks for: one per CPU by default.
pub fn serving_threads(threads: Option<usize>) -> usize {
    threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
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
    /// The rule file or directory.
    pub config: PathBuf,
    /// Serving threads (`--threads`; see [`serving_threads`]).
    pub threads: usize,
}

/// Addresses a started proxy listens on.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The public listeners, in config order.
    pub listeners: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
}

/// A started proxy: bound, not yet serving.
#[derive(Debug)]
pub struct Started {
    /// Where it listens.
    pub bound: Bound,
    server: Server,
    admin: Arc<AdminState>,
    admin_listener: TcpListener,
}

/// Loads the config and binds every listener and the admin API.
pub async fn start(opts: &RunOptions) -> Result<Started, RunError> {
    let reload::LoadedConfig { compiled, started } =
        reload::load_and_compile(&opts.config).map_err(RunError::Config)?;
    // The parse tree and build tables are gone: give their pages back.
    crate::allocator::release_free_memory();
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    let config = compiled.config;
    warn_unpersisted_canaries(&config);
    let token = read_admin_token(&config)?;
    let admin_addr = config.settings.admin.addr;
    let fleet_settings = config.settings.fleet.clone();
    // Before the config is linked: its pools keep a queue per thread.
    crate::worker::set_count(opts.threads);
    let metrics =
        Metrics::new().map_err(|e| RunError::Runtime(format!("cannot create metrics: {e}")))?;
    metrics.set_generation(1);
    let runtime = Runtime::serving(Some(metrics));
    if let Some(path) = &config.settings.state_file {
        runtime.use_state_file(path);
    }
    let live = Live::new(runtime.link(config), runtime.clone());
    let server = Server::bind(live.clone(), opts.threads)
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
    // In fleet mode the fleet's sync task advances steps and judges
    // guards; otherwise this process does, on its own.
    let fleet = match &fleet_settings {
        Some(settings) => {
            let fleet = Fleet::start(settings, live.clone(), runtime.metrics().map(|m| &**m))
                .map_err(RunError::Runtime)?;
            fleet.wait_first_sync(Duration::from_secs(3)).await;
            Some(fleet)
        }
        None => {
            runtime.canaries().spawn_driver(Duration::from_millis(250));
            None
        }
    };
    let reloader = Reloader::new(opts.config.clone(), live, started);
    crate::runtime::timelines::spawn_sampler(reloader.live());
    let admin = Arc::new(AdminState {
        reloader,
        ready: Default::default(),
        draining: Default::default(),
        token,
        fleet,
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

fn read_admin_token(config: &Config) -> Result<Option<String>, RunError> {
    let Some(path) = &config.settings.admin.token_file else {
        return Ok(None);
    };
    admin::read_token(path).map(Some).map_err(|e| {
        RunError::Config(vec![Diagnostic::whole_file(
            &path.display().to_string(),
            format!("cannot read admin token file: {e}"),
        )])
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
        let _admin_thread = AdminThread::spawn(admin_listener, admin.clone())?;
        spawn_sighup(admin.reloader.clone());
        spawn_sigusr1(admin.reloader.live().runtime().clone());
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
        // The last state changes and exposures are written before exit.
        let runtime = admin.reloader.live().runtime().clone();
        let _ = tokio::task::spawn_blocking(move || runtime.flush()).await;
        tracing::info!("drained; bye");
        Ok(())
    }
}

/// The admin API's own thread and event loop, as Envoy's main thread: a
/// slow admin request (`/routes` of 10,000 routes renders for 40 ms, a
/// scrape of many series, a reload's last steps) never holds a thread that
/// serves proxied requests, which matters most with `--threads 1`.
/// Dropping it stops the admin API.
struct AdminThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AdminThread {
    fn spawn(listener: TcpListener, state: Arc<AdminState>) -> Result<AdminThread, RunError> {
        let failed =
            |e: std::io::Error| RunError::Runtime(format!("cannot start the admin API: {e}"));
        // Registered with the serving runtime's reactor; moved to the
        // admin thread's own.
        let listener = listener.into_std().map_err(failed)?;
        let event_loop = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("pointsman-admin".into())
            .spawn(move || {
                // A 10,000-route `/routes` renders for tens of milliseconds
                // of CPU the serving threads should have first.
                crate::yielding::run_in_background();
                event_loop.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return tracing::error!("admin API stopped: {e}"),
                    };
                    let serve = crate::server::plain::serve_plain(listener, move |req| {
                        admin::handle(state.clone(), req)
                    });
                    tokio::select! {
                        () = serve => {}
                        _ = stopped => {}
                    }
                });
                event_loop.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(failed)?;
        Ok(AdminThread { stop: Some(stop) })
    }
}

impl Drop for AdminThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// SPEC 4: without `state_file` (or `fleet`), canary state does not
/// survive a restart.
fn warn_unpersisted_canaries(config: &Config) {
    if config.settings.state_file.is_some() || config.settings.fleet.is_some() {
        return;
    }
    for c in &config.canaries {
        if c.guard.is_some() || matches!(c.plan, Plan::Steps(_)) {
            tracing::warn!(
                canary = %c.route,
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

/// SIGUSR1 reopens the exposure log (after logrotate moved it).
fn spawn_sigusr1(runtime: Arc<Runtime>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            tracing::warn!("cannot listen for SIGUSR1");
            return;
        };
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening the exposure log");
            runtime.exposures().reopen();
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
