//! One client connection: TLS, then HTTP/1.1 or HTTP/2 through hyper-util's
//! auto builder, with the idle timeout and the drain signal watched by a
//! task of its own.

use super::service::{Conn, ProxyService};
use crate::compile::Limits;
use crate::pipeline::ConnInfo;
use crate::runtime::Live;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

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

pub(super) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    live: Arc<Live>,
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
        let info = ConnInfo {
            peer,
            tls: false,
            sni: None,
        };
        drive(TokioIo::new(tracked), info, None, activity, live, stop).await;
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
    let info = ConnInfo {
        peer,
        tls: true,
        sni: session.server_name().map(Box::from),
    };
    drive(TokioIo::new(stream), info, h2, activity, live, stop).await;
    let _ = closed.await;
}

/// Serves HTTP on an established connection (TLS already done). `h2` is
/// what ALPN chose, if anything: the protocol is then fixed to it.
async fn drive<I>(
    io: TokioIo<I>,
    info: ConnInfo,
    h2: Option<bool>,
    activity: Arc<Activity>,
    live: Arc<Live>,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let state = Arc::new(Conn {
        info,
        in_flight: AtomicUsize::new(0),
    });
    let limits = live.snapshot().config.settings.limits.clone();
    let service = ProxyService::new(live, state.clone());
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
        state,
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
    conn: Arc<Conn>,
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
                if moves != seen || conn.in_flight.load(Ordering::Relaxed) > 0 {
                    seen = moves;
                    quiet_since = now;
                } else if now.duration_since(quiet_since) >= idle {
                    tracing::debug!(peer = %conn.info.peer, "idle timeout");
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
