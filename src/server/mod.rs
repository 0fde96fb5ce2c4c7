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
    listeners: Vec<(std::net::TcpListener, Option<Arc<rustls::ServerConfig>>)>,
}

impl Server {
    /// Binds every `settings.listeners` address; TLS listeners get a rustls
    /// acceptor whose certificates follow the current snapshot.
    pub fn bind(live: Arc<Live>) -> io::Result<Server> {
        let snapshot = live.snapshot();
        let mut listeners = Vec::new();
        for l in &snapshot.config.settings.listeners {
            let acceptor = match &l.tls {
                Some(tls) => {
                    let source: Arc<dyn CertSource> = live.clone();
                    let config =
                        crate::tls::server_config(source, l.addr, tls.keys.clone(), &tls.alpn)
                            .map_err(|e| io::Error::other(format!("{}: {e}", l.bind)))?;
                    Some(config)
                }
                None => None,
            };
            let listener = std::net::TcpListener::bind(l.addr)?;
            listener.set_nonblocking(true)?;
            listeners.push((listener, acceptor));
        }
        Ok(Server { live, listeners })
    }

    /// The bound addresses, in `settings.listeners` order.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(|(l, _)| l.local_addr()).collect()
    }

    /// Accepts and serves until `shutdown` completes; then stops accepting,
    /// asks every connection to finish (HTTP/1 after the current response,
    /// HTTP/2 with GOAWAY) and waits for them up to `drain_timeout`.
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
            stop_rx,
        ));
        let mut accepts = tokio::task::JoinSet::new();
        let settings = self.live.snapshot().config.settings.clone();
        for ((l, tls), conf) in self.listeners.into_iter().zip(&settings.listeners) {
            let listener = TcpListener::from_std(l)?;
            let gauge = self
                .live
                .runtime()
                .metrics()
                .map(|m| m.listener(&conf.bind));
            accepts.spawn(accept_loop(
                listener,
                tls.map(TlsAcceptor::from),
                self.live.clone(),
                permits.clone(),
                registry.clone(),
                gauge,
            ));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        accepts.abort_all();
        while accepts.join_next().await.is_some() {}
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
        sweeper.abort();
        Ok(())
    }
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
