//! Upgraded connections (WebSocket and other `Upgrade`s): both sides as
//! plain byte streams, joined once the upstream answered 101.
//!
//! The server and the upstream connection turn their protocol library's
//! upgrade handles into a [`PendingUpgrade`], so nothing here knows the
//! wire library.

use super::body::BoxError;
use bytes::{Buf, Bytes};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Moves what `buf` has room for from `early` (bytes read ahead of a
/// stream, due before anything read from it now) into `buf`. Whether
/// there was anything to replay: a read then returns at once.
pub fn replay(early: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if early.is_empty() {
        return false;
    }
    let n = early.len().min(buf.remaining());
    buf.put_slice(&early[..n]);
    early.advance(n);
    true
}

/// A byte stream after an upgrade.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// One side of an upgrade, ready once the 101 is through.
pub type PendingUpgrade =
    Pin<Box<dyn Future<Output = Result<Box<dyn UpgradedIo>, BoxError>> + Send>>;

/// Joins the client and the upstream once both upgrades complete and
/// copies bytes both ways until either side closes, or until no byte has
/// moved either way for `idle` (`limits.tunnel_idle_timeout`). `guard`
/// (the endpoint's in-flight count) is held until then.
pub async fn tunnel<G: Send>(
    client: PendingUpgrade,
    server: PendingUpgrade,
    guard: G,
    idle: Duration,
) {
    let (client, server) = match tokio::try_join!(client, server) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let moved = AtomicU64::new(0);
    let mut client = Counted {
        inner: client,
        moved: &moved,
    };
    let mut server = Counted {
        inner: server,
        moved: &moved,
    };
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut server) => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "tunnel closed");
            }
        }
        () = quiet_for(&moved, idle) => {
            tracing::debug!(?idle, "tunnel idle: closed");
        }
    }
    drop(guard);
}

/// Resolves once `moved` has not changed for `idle`.
async fn quiet_for(moved: &AtomicU64, idle: Duration) {
    let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = moved.load(Ordering::Relaxed);
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        let now = tick.tick().await;
        let m = moved.load(Ordering::Relaxed);
        if m != seen {
            seen = m;
            quiet_since = now;
        } else if now.duration_since(quiet_since) >= idle {
            return;
        }
    }
}

/// One side of a tunnel, counting the reads and writes that moved bytes.
struct Counted<'a> {
    inner: Box<dyn UpgradedIo>,
    moved: &'a AtomicU64,
}

impl Counted<'_> {
    fn count(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.count();
        }
        res
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.count();
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
