//! One client connection: TLS, then HTTP/1.1 or HTTP/2 with hyper. On
//! clear text the HTTP/2 preface is sniffed once (a `peek`, nothing
//! wraps the reads after it); on TLS, ALPN decides. Timeouts and the drain
//! come from the server's sweeper ([`super::sweep`]), which also asks an
//! idle clear-text HTTP/1.1 connection to park: hyper hands the socket
//! back, its read and write buffers are freed, and a new hyper connection
//! takes the socket when the client speaks again.

use super::service::{BoxedResponse, Conn, proxy_service};
use super::sweep::{CLOSE, CLOSE_NOW, HeadTimer, PARK, Registry, Watch};
use crate::compile::Limits;
use crate::forward::tunnel::replay;
use crate::gather::poll_write_gathered;
use crate::pipeline::ConnInfo;
use crate::runtime::Live;
use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// What an HTTP/2 client sends first (RFC 9113 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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

fn h1_builder(limits: &Limits, watch: &Arc<Watch>) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(HeadTimer(watch.clone()))
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // A head longer than this is a 431, however the reads fell (the
        // read buffer's size alone lets a head that arrives in one large
        // read through).
        .max_header_size(limits.max_header_bytes)
        // hyper answers 431 when the head does not fit the read buffer.
        // The same size caps what it buffers toward a client that does not
        // read (64 KiB by default): the response body is pulled, and so
        // the upstream read, only as that buffer drains.
        .max_buf_size(limits.max_header_bytes.max(8192));
    b
}

fn h2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
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
    registry: Arc<Registry>,
) {
    let limits = live.snapshot().config.settings.limits.clone();
    let watch = registry.open(peer, &limits);
    // `closed` resolves when the socket is dropped: an upgraded stream
    // (WebSocket) outlives hyper's connection, and the connection, its
    // permit included, lasts until then, so the drain waits for it too.
    let (open, closed) = oneshot::channel::<()>();
    let tracked = Tracked {
        inner: stream,
        watch: watch.clone(),
        prefix: None,
        read_run: 0,
        _open: open,
    };
    let Some(acceptor) = tls else {
        let conn = Arc::new(Conn {
            info: ConnInfo::new(peer, false, None),
            watch,
        });
        plain(tracked, &conn, &limits, &live).await;
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
    let conn = Arc::new(Conn {
        info: ConnInfo::new(peer, true, session.server_name().map(Box::from)),
        watch,
    });
    match h2 {
        Some(true) => serve_h2(stream, &conn, &limits, &live).await,
        Some(false) => {
            serve_h1(stream, &conn, &limits, &live, false).await;
        }
        None => serve_auto(stream, &conn, &limits, &live).await,
    }
    let _ = closed.await;
}

/// A clear-text connection: HTTP/2 if it starts with the preface, else
/// HTTP/1.1, parked whenever the sweeper finds it idle.
async fn plain(mut io: Tracked, conn: &Arc<Conn>, limits: &Limits, live: &Arc<Live>) {
    let w = &conn.watch;
    // The first request's deadline, from the accept on, is the sweeper's
    // (it closes a connection that has not started one in time).
    match sniff(&io.inner, w).await {
        None => return,
        Some(true) => {
            serve_h2(io, conn, limits, live).await;
            return;
        }
        Some(false) => {}
    }
    loop {
        let Some((back, leftover)) = serve_h1(io, conn, limits, live, true).await else {
            return;
        };
        io = back;
        if leftover.is_empty() {
            if !wait_readable(&io.inner, w).await {
                tracing::debug!(peer = %conn.info.peer, "parked connection closed");
                return;
            }
        } else {
            io.prefix = Some(leftover);
        }
    }
}

/// Whether the connection starts with the HTTP/2 preface (`None`: it
/// closed, or was closed, first). Peeks: the bytes stay in the socket.
async fn sniff(stream: &TcpStream, w: &Watch) -> Option<bool> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = poll_fn(|cx| {
            w.register(cx);
            if w.asks() & (CLOSE | CLOSE_NOW) != 0 || w.head_expired() {
                return Poll::Ready(None);
            }
            let mut rb = ReadBuf::new(&mut buf);
            match stream.poll_peek(cx, &mut rb) {
                Poll::Ready(Ok(n)) => Poll::Ready(Some(n)),
                Poll::Ready(Err(_)) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        let seen = buf.get(..n)?;
        if n == 0 {
            return None;
        }
        if seen != &PREFACE[..n] {
            return Some(false);
        }
        if n == PREFACE.len() {
            return Some(true);
        }
        // Part of the preface so far: wait for the rest (rare; a peek
        // would see the same bytes again at once).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until a parked connection's socket is readable (`true`), or the
/// connection is to close: asked to, its head-read deadline passed, or
/// the socket failed (`false`).
async fn wait_readable(stream: &TcpStream, w: &Watch) -> bool {
    poll_fn(|cx| {
        w.register(cx);
        if w.asks() & (CLOSE | CLOSE_NOW) != 0 || w.head_expired() {
            return Poll::Ready(false);
        }
        match stream.poll_read_ready(cx) {
            Poll::Ready(r) => Poll::Ready(r.is_ok()),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Serves HTTP/1.1 on `io` until the connection ends (`None`) or, when
/// `parkable`, until the sweeper finds it idle: then the socket and any
/// bytes hyper read ahead come back.
async fn serve_h1<I>(
    io: I,
    conn: &Arc<Conn>,
    limits: &Limits,
    live: &Arc<Live>,
    parkable: bool,
) -> Option<(I, Bytes)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let w = &conn.watch;
    let service = proxy_service(live.clone(), conn.clone());
    // Boxed: a parked connection's task keeps only the small state.
    let mut hc = Box::new(
        h1_builder(limits, w)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
    );
    w.clear_park();
    w.parkable.store(parkable, Ordering::Relaxed);
    let mut parking = false;
    let res = drive(Pin::new(&mut *hc), w, |hc, asks| {
        if asks & CLOSE != 0 {
            w.parking.store(false, Ordering::Relaxed);
            hc.graceful_shutdown();
            return true;
        }
        if asks & PARK != 0 && !parking {
            w.clear_park();
            // Idle as hyper sees it: no request in flight (a response
            // already had its head written). hyper then closes its side
            // at once, leaving any bytes of a next head in its buffer.
            if w.in_flight.load(Ordering::Relaxed) == 0 {
                parking = true;
                w.parking.store(true, Ordering::Relaxed);
                hc.graceful_shutdown();
                return true;
            }
        }
        false
    })
    .await;
    w.parkable.store(false, Ordering::Relaxed);
    let parked = w.parking.swap(false, Ordering::Relaxed);
    // Asked to close at once: dropping the connection closes the socket.
    let res = res?;
    if let Err(e) = res {
        tracing::debug!(peer = %conn.info.peer, error = %e, "connection error");
        return None;
    }
    if !parked || w.asks() & CLOSE != 0 {
        return None;
    }
    let deadline = w.head_deadline();
    let parts = (*hc).into_parts()?;
    drop(parts.service);
    w.carry_deadline(deadline);
    Some((parts.io.into_inner(), parts.read_buf))
}

/// Serves HTTP/2 on `io` until the connection ends.
async fn serve_h2<I>(io: I, conn: &Arc<Conn>, limits: &Limits, live: &Arc<Live>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inner = proxy_service(live.clone(), conn.clone());
    let service = service_fn(move |req| -> BoxedResponse { Box::pin(inner.call(req)) });
    let hc = Box::pin(h2_builder(limits).serve_connection(TokioIo::new(io), service));
    drive_unparked(hc, conn, |hc| hc.graceful_shutdown()).await;
}

/// TLS without ALPN: HTTP/1.1 or HTTP/2 as the first bytes say
/// (hyper-util's detection).
async fn serve_auto<I>(io: I, conn: &Arc<Conn>, limits: &Limits, live: &Arc<Live>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(HeadTimer(conn.watch.clone()))
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(H2_SEND_BUF)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS);
    let service = proxy_service(live.clone(), conn.clone());
    let hc = Box::pin(b.serve_connection_with_upgrades(TokioIo::new(io), service));
    drive_unparked(hc, conn, |hc| hc.graceful_shutdown()).await;
}

/// Drives a connection that never parks (HTTP/2, TLS without ALPN) to its
/// end: a request to close is answered with `shutdown` (graceful).
async fn drive_unparked<F, E>(mut hc: Pin<Box<F>>, conn: &Conn, shutdown: impl Fn(Pin<&mut F>))
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let res = drive(hc.as_mut(), &conn.watch, |hc, asks| {
        if asks & CLOSE != 0 {
            shutdown(hc);
            return true;
        }
        conn.watch.clear_park();
        false
    })
    .await;
    if let Some(Err(e)) = res {
        tracing::debug!(peer = %conn.info.peer, error = %e, "connection error");
    }
}

/// Polls a hyper connection to its end (`None`: the sweeper asked it to
/// close at once, [`CLOSE_NOW`], and the caller drops it). Each time it
/// waits, what the sweeper asks is handed to `on_ask`, which returns
/// whether it changed the connection's state (it is then polled again at
/// once). Only a request to close ends the asking: it is answered once.
async fn drive<F, T>(
    mut hc: Pin<&mut F>,
    w: &Watch,
    mut on_ask: impl FnMut(Pin<&mut F>, u8) -> bool,
) -> Option<T>
where
    F: Future<Output = T>,
{
    let mut closing = false;
    poll_fn(move |cx: &mut Context<'_>| {
        w.register(cx);
        loop {
            if let Poll::Ready(r) = hc.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            let asks = w.asks();
            if asks & CLOSE_NOW != 0 {
                return Poll::Ready(None);
            }
            if asks == 0 || closing {
                return Poll::Pending;
            }
            closing = asks & CLOSE != 0;
            if !on_ask(hc.as_mut(), asks) {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Bytes a connection may read before its task yields to the others.
/// hyper's HTTP/2 side handles every frame it has read before it returns,
/// and a client that keeps the socket full (a PING or SETTINGS flood, tiny
/// frames by the hundred thousand) would otherwise hold a serving thread
/// for as long as tokio's budget of 128 reads lasts: up to a second in
/// tests, while every other client waited (SPEC 5.1, the 20 ms promise).
const READ_SLICE: usize = 16 * 1024;

/// A client socket that counts its reads and writes for the sweeper,
/// yields after [`READ_SLICE`] bytes read without a pause, replays bytes a
/// parked hyper connection had read ahead, skips the shutdown while
/// parking, and tells when it is dropped (`_open` closes its channel).
struct Tracked {
    inner: TcpStream,
    watch: Arc<Watch>,
    prefix: Option<Bytes>,
    /// Bytes read since the socket last had nothing to give (or since the
    /// task last yielded).
    read_run: usize,
    _open: oneshot::Sender<()>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(p) = &mut this.prefix {
            let replayed = replay(p, buf);
            if p.is_empty() {
                this.prefix = None;
            }
            if replayed {
                return Poll::Ready(Ok(()));
            }
        }
        if this.read_run >= READ_SLICE {
            // Back of the run queue (a task woken while it runs is
            // rescheduled as a yield), then read on.
            this.read_run = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read_run += n;
            this.watch.read();
        } else if res.is_pending() {
            this.read_run = 0;
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
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch.wrote(&res);
        res
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.watch.parking.load(Ordering::Relaxed) {
            // hyper ends its side of a parked connection: the socket stays.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = poll_write_gathered(Pin::new(&mut this.inner), cx, bufs);
        this.watch.wrote(&res);
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
