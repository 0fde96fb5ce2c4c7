//! Listeners and connections: the swappable [`Proxy`] state and the
//! [`Server`] accept loop with its connection limits and graceful drain.

use crate::metrics::{ListenerConnections, Metrics};
use crate::router::{Limits, Snapshot};
use crate::service::{ConnInfo, ProxyService};
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_rustls::TlsAcceptor;

/// The proxy's shared state: the current routing snapshot, swapped whole on
/// reload.
#[derive(Debug)]
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    /// The process's metrics (`None`: nothing recorded).
    metrics: Option<Arc<Metrics>>,
}

impl Proxy {
    /// Wraps the first snapshot.
    pub fn new(snapshot: Snapshot) -> Arc<Proxy> {
        Self::with_metrics(snapshot, None)
    }

    /// Wraps the first snapshot (compiled with the same `metrics`).
    pub fn with_metrics(snapshot: Snapshot, metrics: Option<Arc<Metrics>>) -> Arc<Proxy> {
        Arc::new(Proxy {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
        })
    }

    /// The process's metrics, if recording.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The current snapshot (one atomic load).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot; requests in flight keep the one they loaded.
    pub fn store(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct Server {
    proxy: Arc<Proxy>,
    listeners: Vec<(std::net::TcpListener, Option<Arc<rustls::ServerConfig>>)>,
}

impl Server {
    /// Binds every `settings.listeners` address; TLS listeners get a rustls
    /// acceptor whose certificates follow the current snapshot.
    pub fn bind(proxy: Arc<Proxy>) -> io::Result<Server> {
        let snapshot = proxy.snapshot();
        let mut listeners = Vec::new();
        for l in &snapshot.settings.listeners {
            let acceptor = match &l.tls {
                Some(tls) => Some(
                    crate::tls::server_config(proxy.clone(), l.addr, tls)
                        .map_err(|e| io::Error::other(format!("{}: {e}", l.bind)))?,
                ),
                None => None,
            };
            let listener = std::net::TcpListener::bind(l.addr)?;
            listener.set_nonblocking(true)?;
            listeners.push((listener, acceptor));
        }
        Ok(Server { proxy, listeners })
    }

    /// The bound addresses, in `settings.listeners` order.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(|(l, _)| l.local_addr()).collect()
    }

    /// Accepts and serves until `shutdown` completes; then stops accepting,
    /// asks every connection to finish (HTTP/1 after the current response,
    /// HTTP/2 with GOAWAY) and waits for them up to `drain_timeout`.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let limits = self.proxy.snapshot().settings.limits.clone();
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let permits = Arc::new(Semaphore::new(max));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accepts = tokio::task::JoinSet::new();
        let settings = self.proxy.snapshot().settings.clone();
        for ((l, tls), conf) in self.listeners.into_iter().zip(&settings.listeners) {
            let listener = TcpListener::from_std(l)?;
            let gauge = self.proxy.metrics().map(|m| m.listener(&conf.bind));
            accepts.spawn(accept_loop(
                listener,
                tls.map(TlsAcceptor::from),
                self.proxy.clone(),
                permits.clone(),
                stop_rx.clone(),
                gauge,
            ));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        accepts.abort_all();
        while accepts.join_next().await.is_some() {}
        // Every connection holds a permit: all permits back = all drained.
        // The drain timeout of the config active now (it may have reloaded).
        let drain = self.proxy.snapshot().settings.limits.drain_timeout;
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(?drain, "connections still open after the drain timeout");
        }
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
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
        let proxy = proxy.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        let open = gauge.as_ref().map(ListenerConnections::open);
        tokio::spawn(async move {
            serve_connection(stream, peer, tls, proxy, stop).await;
            drop(open);
            drop(permit);
        });
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // hyper answers 431 when the head does not fit the read buffer.
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(100);
    b
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    // `closed` resolves when the socket is dropped: an upgraded stream
    // (WebSocket) outlives hyper's connection, and the connection, its
    // permit included, lasts until then, so the drain waits for it too.
    let (open, closed) = oneshot::channel::<()>();
    let tracked = Tracked {
        inner: stream,
        activity: activity.clone(),
        _open: open,
    };
    let Some(acceptor) = tls else {
        let conn_info = ConnInfo {
            peer,
            proto: "http",
            sni: None,
            in_flight: AtomicUsize::new(0),
        };
        drive(
            TokioIo::new(tracked),
            conn_info,
            None,
            activity,
            proxy,
            stop,
        )
        .await;
        let _ = closed.await;
        return;
    };
    // The handshake holds the connection's permit: bounded by the timeout.
    let timeout = crate::tls::handshake_timeout();
    let stream = match tokio::time::timeout(timeout, acceptor.accept(tracked)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
            return;
        }
    };
    let session = stream.get_ref().1;
    let h2 = session.alpn_protocol().map(|p| p == b"h2");
    let conn_info = ConnInfo {
        peer,
        proto: "https",
        sni: session.server_name().map(Box::from),
        in_flight: AtomicUsize::new(0),
    };
    drive(TokioIo::new(stream), conn_info, h2, activity, proxy, stop).await;
    let _ = closed.await;
}

/// Serves HTTP on an established connection (TLS already done). `h2` is
/// what ALPN chose, if anything: the protocol is then fixed to it.
async fn drive<I>(
    io: TokioIo<I>,
    conn_info: ConnInfo,
    h2: Option<bool>,
    activity: Arc<Activity>,
    proxy: Arc<Proxy>,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn_info.peer;
    let conn_info = Arc::new(conn_info);
    let limits = proxy.snapshot().settings.limits.clone();
    let service = ProxyService::new(proxy, conn_info.clone());
    let builder = match h2 {
        Some(true) => builder(&limits).http2_only(),
        Some(false) => builder(&limits).http1_only(),
        None => builder(&limits),
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    // The idle timer and the drain signal live in their own task: polled
    // next to the connection, they would be polled (a timer entry and a
    // `Notify` registration) on every wakeup of every request.
    let (close_tx, mut close_rx) = oneshot::channel::<()>();
    let watchdog = tokio::spawn(watch_connection(
        conn_info,
        activity,
        limits.idle_timeout,
        stop,
        close_tx,
    ));
    let res = tokio::select! {
        biased;
        res = conn.as_mut() => res,
        Ok(()) = &mut close_rx => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    watchdog.abort();
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection error");
    }
}

/// Asks (through `close`) for a graceful close of the connection when the
/// proxy drains (`stop`) or when it has been idle, with nothing in flight,
/// for `idle`.
async fn watch_connection(
    conn_info: Arc<ConnInfo>,
    activity: Arc<Activity>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
    close: oneshot::Sender<()>,
) {
    let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = activity.moves();
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            now = tick.tick() => {
                let moves = activity.moves();
                if moves != seen || conn_info.in_flight.load(Ordering::Relaxed) > 0 {
                    seen = moves;
                    quiet_since = now;
                } else if now.duration_since(quiet_since) >= idle {
                    tracing::debug!(peer = %conn_info.peer, "idle timeout");
                    break;
                }
            }
        }
    }
    let _ = close.send(());
}

/// How often a connection moved bytes: a counter, cheaper on every read
/// and write than a clock; the watchdog compares it between ticks.
#[derive(Debug, Default)]
struct Activity {
    moves: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }
    fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A stream that records its last read or write, and tells when it is
    /// dropped (`_open` closes its channel).
    struct Tracked {
        #[pin]
        inner: TcpStream,
        activity: Arc<Activity>,
        _open: oneshot::Sender<()>,
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        res
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res
            && *n > 0
        {
            this.activity.touch();
        }
        res
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &res
            && *n > 0
        {
            this.activity.touch();
        }
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
