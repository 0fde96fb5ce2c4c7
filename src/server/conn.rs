//! One client connection: TLS, then HTTP/1.1 or HTTP/2 through hyper-util's
//! auto builder, with its timers (the first request head, the send
//! timeout, the idle timeout) and the drain signal watched by a task of its
//! own.

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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

/// HTTP/2 flow control toward clients (RELIABILITY 3: 64 KiB streams, a
/// 1 MiB connection): what one client may make the proxy hold of its
/// uploads.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONN_WINDOW: u32 = 1024 * 1024;
/// Response bytes buffered per HTTP/2 stream while the client's window is
/// closed (hyper's default is 400 KiB).
const H2_SEND_BUF: usize = 64 * 1024;
/// Streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 100;
/// Streams the proxy itself may reset for protocol errors on one
/// connection before it sends GOAWAY (hyper's default is 1024).
const H2_MAX_LOCAL_RESETS: usize = 100;

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // hyper answers 431 when the head does not fit the read buffer.
        // The same size caps what it buffers toward a client that does not
        // read (64 KiB by default): the response body is pulled, and so
        // the upstream read, only as that buffer drains.
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(H2_SEND_BUF)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS);
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
        read_run: 0,
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
        started: AtomicBool::new(false),
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
    // The timers and the drain signal live in their own task: polled next
    // to the connection, they would be polled (a timer entry and a
    // `Notify` registration) on every wakeup of every request.
    let (close_tx, mut close_rx) = watch::channel(Close::Open);
    let watchdog = tokio::spawn(watch_connection(
        state,
        activity,
        Deadlines::of(&limits),
        stop,
        close_tx,
    ));
    let mut graceful = false;
    let res = loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => break res,
            Ok(()) = close_rx.changed() => match *close_rx.borrow_and_update() {
                Close::Open => {}
                Close::Graceful => {
                    if !graceful {
                        graceful = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                // Dropping the connection closes the socket.
                Close::Now => break Ok(()),
            },
        }
    };
    watchdog.abort();
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection error");
    }
}

/// What the watchdog asks of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Open,
    /// Finish the request in flight, then close (idle, drain).
    Graceful,
    /// Close at once (no request head in time, a client that reads
    /// nothing).
    Now,
}

/// The connection timers of `limits`, and how often to look at them.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    idle: Duration,
    first_head: Duration,
    send: Duration,
    period: Duration,
}

impl Deadlines {
    fn of(limits: &Limits) -> Deadlines {
        let shortest = limits.idle_timeout.min(limits.send_timeout);
        Deadlines {
            idle: limits.idle_timeout,
            first_head: limits.header_read_timeout,
            send: limits.send_timeout,
            period: (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        }
    }
}

/// Watches one connection and asks (through `close`) for:
/// - a close at once when no request has arrived within the header read
///   timeout of the connection's start (a socket that sends nothing, or
///   not even enough to tell HTTP/1.1 from HTTP/2, which hyper's own
///   header timer does not cover);
/// - a close at once when a write has waited on the client for
///   `send_timeout` without a byte accepted;
/// - a graceful close when the proxy drains (`stop`) or when the
///   connection has been idle, with nothing in flight, for `idle`.
async fn watch_connection(
    conn: Arc<Conn>,
    activity: Arc<Activity>,
    limits: Deadlines,
    mut stop: watch::Receiver<bool>,
    close: watch::Sender<Close>,
) {
    let mut tick = tokio::time::interval(limits.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let opened = tokio::time::Instant::now();
    let mut state = Watch::new(&activity, opened);
    let first_head = tokio::time::sleep_until(opened + limits.first_head);
    tokio::pin!(first_head);
    let (mut waiting_head, mut draining) = (true, false);
    loop {
        let now = tokio::select! {
            changed = stop.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    let _ = close.send(Close::Graceful);
                }
                continue;
            }
            () = &mut first_head, if waiting_head => {
                waiting_head = false;
                if conn.started.load(Ordering::Relaxed) {
                    continue;
                }
                tracing::debug!(peer = %conn.info.peer, "no request head within the header read timeout");
                break;
            }
            now = tick.tick() => now,
        };
        match state.tick(now, &conn, &activity, &limits) {
            Some(Close::Now) => break,
            Some(Close::Graceful) if !draining => {
                draining = true;
                let _ = close.send(Close::Graceful);
            }
            _ => {}
        }
    }
    let _ = close.send(Close::Now);
}

/// What the watchdog remembers between two ticks.
#[derive(Debug)]
struct Watch {
    /// Reads and writes at the last tick, and since when there were none.
    moves: u64,
    quiet_since: tokio::time::Instant,
    /// Writes at the last tick, and since when a write has been waiting.
    writes: u64,
    blocked_since: Option<tokio::time::Instant>,
}

impl Watch {
    fn new(activity: &Activity, now: tokio::time::Instant) -> Watch {
        Watch {
            moves: activity.moves(),
            quiet_since: now,
            writes: activity.writes(),
            blocked_since: None,
        }
    }

    /// `Now` when a write has waited `send` without a byte accepted,
    /// `Graceful` when the connection has been idle for `idle`.
    fn tick(
        &mut self,
        now: tokio::time::Instant,
        conn: &Conn,
        activity: &Activity,
        limits: &Deadlines,
    ) -> Option<Close> {
        let writes = activity.writes();
        if activity.write_waiting() && writes == self.writes {
            let since = *self.blocked_since.get_or_insert(now);
            if now.duration_since(since) >= limits.send {
                tracing::debug!(peer = %conn.info.peer, "client accepted nothing within the send timeout");
                return Some(Close::Now);
            }
        } else {
            self.blocked_since = None;
        }
        self.writes = writes;
        let moves = activity.moves();
        if moves != self.moves || conn.in_flight.load(Ordering::Relaxed) > 0 {
            self.moves = moves;
            self.quiet_since = now;
        } else if now.duration_since(self.quiet_since) >= limits.idle {
            tracing::debug!(peer = %conn.info.peer, "idle timeout");
            return Some(Close::Graceful);
        }
        None
    }
}

/// What a connection's socket did, in counters that are cheaper on every
/// read and write than a clock; the watchdog compares them between ticks.
#[derive(Debug, Default)]
struct Activity {
    reads: AtomicU64,
    writes: AtomicU64,
    /// A write found the socket full and has not gone through since.
    write_waiting: AtomicBool,
}

impl Activity {
    fn moves(&self) -> u64 {
        self.reads
            .load(Ordering::Relaxed)
            .wrapping_add(self.writes.load(Ordering::Relaxed))
    }
    fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
    fn write_waiting(&self) -> bool {
        self.write_waiting.load(Ordering::Relaxed)
    }
    /// Records the outcome of a write.
    fn wrote(&self, res: &Poll<io::Result<usize>>) {
        match res {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                if self.write_waiting.load(Ordering::Relaxed) {
                    self.write_waiting.store(false, Ordering::Relaxed);
                }
            }
            Poll::Pending => self.write_waiting.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
}

/// Bytes a connection may read before its task yields to the others.
/// hyper's HTTP/2 side handles every frame it has read before it returns,
/// and a client that keeps the socket full (a PING or SETTINGS flood, tiny
/// frames by the hundred thousand) would otherwise hold a worker thread
/// for as long as tokio's budget of 128 reads lasts: up to a second in
/// tests, while every other client waited (SPEC 5.1, the 20 ms promise).
const READ_SLICE: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// A stream that records its reads and writes, yields after
    /// [`READ_SLICE`] bytes read without a pause, and tells when it is
    /// dropped (`_open` closes its channel).
    struct Tracked {
        #[pin]
        inner: TcpStream,
        activity: Arc<Activity>,
        // Bytes read since the socket last had nothing to give (or since
        // the task last yielded).
        read_run: usize,
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
        if *this.read_run >= READ_SLICE {
            // Back of the run queue (a task woken while it runs is
            // rescheduled as a yield), then read on.
            *this.read_run = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            *this.read_run += n;
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
        } else if res.is_pending() {
            *this.read_run = 0;
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
        this.activity.wrote(&res);
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
        this.activity.wrote(&res);
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
