//! Listeners and connections: the accept loop with its connection limit and
//! graceful drain ([`Server`]), each connection's HTTP/1.1 or HTTP/2 serving
//! (`conn`), the hyper service that hands requests to the pipeline
//! (`service`), and a small server for fixed handlers ([`plain`]). With the
//! upstream connections, this is where hyper lives.

mod conn;
pub mod plain;
mod service;
mod sweep;

use crate::metrics::ListenerConnections;
use crate::runtime::Live;
use crate::tls::CertSource;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use sweep::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct Server {
    live: Arc<Live>,
    listeners: Vec<Listener>,
    threads: usize,
}

/// One `settings.listeners` entry: a listening socket for each serving
/// thread, and its TLS config.
#[derive(Debug)]
struct Listener {
    sockets: Vec<std::net::TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The accept queue of each listening socket (as NGINX's default on
/// Linux, 511, rounded up; the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;

impl Server {
    /// Binds every `settings.listeners` address for `threads` serving
    /// threads; TLS listeners get a rustls acceptor whose certificates
    /// follow the current snapshot. With more than one thread each
    /// address gets a socket per thread (`SO_REUSEPORT`, as Envoy and
    /// HAProxy do by default): the kernel spreads new connections over
    /// them, where threads sharing one socket would leave a burst of
    /// connections to whichever thread woke first.
    ///
    /// The upstream pools keep a queue of idle connections per serving
    /// thread, made when the config is linked: [`crate::worker::set_count`]
    /// must have been told at least `threads` before that, or binding
    /// fails (a thread would take connections another loop watches).
    pub fn bind(live: Arc<Live>, threads: usize) -> io::Result<Server> {
        let threads = threads.max(1);
        let counted = crate::worker::count();
        if threads > counted {
            return Err(io::Error::other(format!(
                "{threads} serving threads, but the upstream pools were made for {counted}: \
                 call worker::set_count before linking the config"
            )));
        }
        let snapshot = live.snapshot();
        let mut listeners = Vec::new();
        for l in &snapshot.config.settings.listeners {
            let tls = match &l.tls {
                Some(tls) => {
                    let source: Arc<dyn CertSource> = live.clone();
                    let config =
                        crate::tls::server_config(source, l.addr, tls.keys.clone(), &tls.alpn)
                            .map_err(|e| io::Error::other(format!("{}: {e}", l.bind)))?;
                    Some(config)
                }
                None => None,
            };
            let shared = threads > 1;
            let first = listen(l.addr, shared)?;
            // Port 0 is chosen once; the other sockets join it.
            let addr = first.local_addr()?;
            let mut sockets = vec![first];
            for _ in 1..threads {
                sockets.push(listen(addr, shared)?);
            }
            listeners.push(Listener { sockets, tls });
        }
        Ok(Server {
            live,
            listeners,
            threads,
        })
    }

    /// The bound addresses, in `settings.listeners` order.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners
            .iter()
            .map(|l| match l.sockets.first() {
                Some(s) => s.local_addr(),
                None => Err(io::Error::other("a listener without a socket")),
            })
            .collect()
    }

    /// Accepts and serves until `shutdown` completes, on the serving
    /// threads `bind` was given: this one and one more for each other,
    /// each with an event loop of its own that accepts from its sockets
    /// and serves the connections it accepted (as NGINX's workers do).
    /// Then stops accepting, asks every connection to finish (HTTP/1 after
    /// the current response, HTTP/2 with GOAWAY) and waits for them up to
    /// `drain_timeout`; every thread's loop runs until then.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let limits = self.live.snapshot().config.settings.limits.clone();
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let permits = Arc::new(Semaphore::new(max));
        let (stop_tx, stop_rx) = watch::channel(false);
        // One sweeper for every connection: idle timeouts, head-read
        // deadlines, parking, the drain.
        let registry = Arc::new(Registry::default());
        let period_live = self.live.clone();
        let sweeper = tokio::spawn(registry.clone().run(
            move || sweep::period(&period_live.snapshot().config.settings.limits),
            stop_rx.clone(),
        ));
        // The accept loops of each thread: one per listener.
        let settings = self.live.snapshot().config.settings.clone();
        let mut per_thread: Vec<Vec<Accept>> = (0..self.threads).map(|_| Vec::new()).collect();
        for (l, conf) in self.listeners.into_iter().zip(&settings.listeners) {
            let gauge = self
                .live
                .runtime()
                .metrics()
                .map(|m| m.listener(&conf.bind));
            let tls = l.tls.map(TlsAcceptor::from);
            for (socket, accepts) in l.sockets.into_iter().zip(&mut per_thread) {
                accepts.push(Accept {
                    listener: socket,
                    tls: tls.clone(),
                    live: self.live.clone(),
                    permits: permits.clone(),
                    registry: registry.clone(),
                    gauge: gauge.clone(),
                });
            }
        }
        let mut per_thread = per_thread.into_iter();
        let own = per_thread.next().unwrap_or_default();
        let (finish_tx, finish_rx) = watch::channel(false);
        let mut others = Vec::new();
        for (i, accepts) in per_thread.enumerate() {
            let index = i + 1;
            let stop = stop_rx.clone();
            let mut finish = finish_rx.clone();
            let runtime = serving_runtime()?;
            let thread = std::thread::Builder::new()
                .name(format!("pointsman-serve-{index}"))
                .spawn(move || {
                    crate::worker::set_index(index);
                    runtime.block_on(async move {
                        match run_accepts(accepts) {
                            Ok(running) => stop_accepting(running, stop).await,
                            Err(e) => tracing::error!(thread = index, "cannot accept: {e}"),
                        }
                        // Its connections drain on this loop; the first
                        // thread says when they are done or timed out.
                        let _ = finish.wait_for(|f| *f).await;
                    });
                })?;
            others.push(thread);
        }
        let running = run_accepts(own)?;
        shutdown.await;
        let _ = stop_tx.send(true);
        stop_accepting(running, stop_rx).await;
        // Every connection holds a permit: all permits back = all drained.
        // The drain timeout of the config active now (it may have reloaded).
        let drain = self.live.snapshot().config.settings.limits.drain_timeout;
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(?drain, "connections still open after the drain timeout");
        }
        let _ = finish_tx.send(true);
        let _ = tokio::task::spawn_blocking(move || {
            for t in others {
                let _ = t.join();
            }
        })
        .await;
        sweeper.abort();
        Ok(())
    }
}

/// A listening socket on `addr`; `shared` lets other sockets bind the
/// same address (`SO_REUSEPORT`), one for each serving thread.
fn listen(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std's `TcpListener::bind`: a restart can bind at once while the
    // last run's connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The event loop of a serving thread: one thread, so that a connection's
/// requests are served where it was accepted, with no work-stealing
/// between threads. A thread that has run for a while gives way before it
/// waits for events (`yielding`).
pub fn serving_runtime() -> io::Result<tokio::runtime::Runtime> {
    // Keeps tokio's default event interval: 61 task polls between two
    // looks at the sockets while every task stays busy. An interval of 16
    // brought in half as many requests per `epoll_wait` (0.13 calls a
    // request on HTTP/1.1, against 0.06) and cost 7 % of HTTP/2
    // throughput. Isolation (SPEC 5.1) does not need it: a connection
    // yields after reading `READ_SLICE` bytes, and `hardening::h2flood`
    // sees a probe's p90 stay near 1 ms under every flood, with one
    // serving thread or two.
    tokio::runtime::Builder::new_current_thread()
        .on_thread_park(crate::yielding::before_waiting)
        .on_thread_unpark(crate::yielding::after_waiting)
        .enable_all()
        .build()
}

/// What one accept loop needs.
struct Accept {
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    live: Arc<Live>,
    permits: Arc<Semaphore>,
    registry: Arc<Registry>,
    gauge: Option<ListenerConnections>,
}

/// Starts the accept loops on the calling thread's event loop.
fn run_accepts(accepts: Vec<Accept>) -> io::Result<tokio::task::JoinSet<()>> {
    let mut set = tokio::task::JoinSet::new();
    for a in accepts {
        let listener = TcpListener::from_std(a.listener)?;
        set.spawn(accept_loop(
            listener, a.tls, a.live, a.permits, a.registry, a.gauge,
        ));
    }
    Ok(set)
}

/// Waits for the drain to begin, then stops the accept loops.
async fn stop_accepting(mut running: tokio::task::JoinSet<()>, mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
    running.abort_all();
    while running.join_next().await.is_some() {}
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    live: Arc<Live>,
    permits: Arc<Semaphore>,
    registry: Arc<Registry>,
    gauge: Option<ListenerConnections>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "max_connections reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let live = live.clone();
        let registry = registry.clone();
        let tls = tls.clone();
        let open = gauge.as_ref().map(ListenerConnections::open);
        tokio::spawn(async move {
            conn::serve_connection(stream, peer, tls, live, registry).await;
            drop(open);
            drop(permit);
        });
    }
}
