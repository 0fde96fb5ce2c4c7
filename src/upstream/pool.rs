//! A small per-endpoint pool of HTTP/1.1 connections toward upstreams.
//!
//! Each endpoint keeps a lock-free queue of idle `SendRequest` handles
//! (its memory allocated as they arrive). A connection goes back to the
//! pool only once its response body has been read to the end (see
//! [`PooledBody`]); a response dropped part-way, a 101, or any error drops
//! the handle instead, and hyper closes the connection (no pool
//! poisoning). Idle handles older than the idle timeout are dropped at
//! checkout and by a reaper task.

use crate::bounded::BoundedQueue;
use crate::forward::body::ProxyBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// An HTTP/1.1 request sender on one upstream connection.
pub(crate) type Sender = SendRequest<ProxyBody>;

/// Idle connections kept per endpoint at most; more are closed. Room for
/// the connections a busy front keeps in use at once (500 concurrent h2
/// streams need 500): with fewer, every burst closes and reopens the
/// difference (1,300 new upstream connections a second at 256 under
/// `h2load -c50 -m10`). As Envoy's default connection limit per cluster.
/// Memory grows with the connections actually idle, not with this bound.
const MAX_IDLE: usize = 1024;

struct Idle {
    tx: Sender,
    since: Instant,
}

/// The idle connections of one endpoint.
pub(crate) struct EndpointPool {
    idle: BoundedQueue<Idle>,
    idle_timeout: Duration,
    reaper: AtomicBool,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("idle", &self.idle.len())
            .finish()
    }
}

impl EndpointPool {
    pub(crate) fn new(idle_timeout: Duration) -> Arc<Self> {
        Arc::new(EndpointPool {
            idle: BoundedQueue::new(MAX_IDLE),
            idle_timeout,
            reaper: AtomicBool::new(false),
        })
    }

    /// An idle connection that is ready for a request.
    pub(crate) fn checkout(&self) -> Option<Sender> {
        loop {
            let idle = self.idle.pop()?;
            if idle.tx.is_ready() && idle.since.elapsed() < self.idle_timeout {
                return Some(idle.tx);
            }
            // Closed, busy or stale: drop it (hyper closes the connection).
        }
    }

    /// Returns a connection whose last exchange completed.
    fn put(self: &Arc<Self>, tx: Sender) {
        if !tx.is_ready() {
            if tx.is_closed() {
                return;
            }
            // The connection task has not yet noticed the end of the
            // response; wait for it off the request path (outside a
            // runtime, e.g. at shutdown, just close it).
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = Arc::downgrade(self);
            rt.spawn(async move {
                let mut tx = tx;
                if tx.ready().await.is_ok()
                    && let Some(pool) = pool.upgrade()
                {
                    pool.push(tx);
                }
            });
            return;
        }
        self.push(tx);
    }

    fn push(self: &Arc<Self>, tx: Sender) {
        // A full pool closes the connection (the handle is dropped).
        let _ = self.idle.push(Idle {
            tx,
            since: Instant::now(),
        });
        if !self.reaper.load(Ordering::Relaxed)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
            && !self.reaper.swap(true, Ordering::Relaxed)
        {
            spawn_reaper(&rt, Arc::downgrade(self), self.idle_timeout);
        }
    }

    /// Drops idle connections older than the idle timeout or closed.
    fn reap(&self) {
        let now = Instant::now();
        for _ in 0..self.idle.len() {
            let Some(idle) = self.idle.pop() else { break };
            if now.duration_since(idle.since) < self.idle_timeout && !idle.tx.is_closed() {
                let _ = self.idle.push(idle);
            }
        }
    }
}

fn spawn_reaper(rt: &tokio::runtime::Handle, pool: Weak<EndpointPool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(100));
    rt.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(p) => p.reap(),
                None => return,
            }
        }
    });
}

/// A response body from a pooled connection: when read to the end, the
/// connection goes back to the pool; dropped before that, it is closed.
pub(crate) struct PooledBody {
    inner: Incoming,
    ret: Option<(Sender, Arc<EndpointPool>)>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl PooledBody {
    /// A body that never returns a connection (h2, 101).
    pub(crate) fn plain(inner: Incoming) -> Self {
        PooledBody { inner, ret: None }
    }

    /// A body that returns `tx` to `pool` once read to the end.
    pub(crate) fn pooled(inner: Incoming, tx: Sender, pool: Arc<EndpointPool>) -> Self {
        let mut body = PooledBody {
            inner,
            ret: Some((tx, pool)),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((tx, pool)) = self.ret.take() {
            pool.put(tx);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to its declared end (the server may stop polling there).
        if self.ret.is_some() && self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.ret = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
