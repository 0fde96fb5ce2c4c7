//! A small per-endpoint pool of HTTP/1.1 connections toward upstreams.
//!
//! Each endpoint keeps a lock-free queue of idle connections for each
//! serving thread (its memory allocated as they arrive): a connection is
//! watched by the event loop of the thread that opened it, so that thread
//! alone reuses it. A connection comes back only from a
//! response body that ended cleanly (see [`h1::ResponseBody`]); a
//! response dropped part-way, a 101, or any error closes it instead (no
//! pool poisoning). Idle connections that are older than the idle
//! timeout, closed by the upstream, or sent bytes unasked are dropped at
//! checkout and by a reaper task.

use super::h1::{self, Conn};
use crate::bounded::BoundedQueue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Idle connections kept per endpoint at most; more are closed. Room for
/// the connections a busy front keeps in use at once (500 concurrent h2
/// streams need 500): with fewer, every burst closes and reopens the
/// difference (1,300 new upstream connections a second at 256 under
/// `h2load -c50 -m10`). As Envoy's default connection limit per cluster.
/// Memory grows with the connections actually idle, not with this bound.
const MAX_IDLE: usize = 1024;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections of one endpoint, one queue per serving thread.
pub(crate) struct EndpointPool {
    idle: Box<[BoundedQueue<Idle>]>,
    idle_timeout: Duration,
    reaper: AtomicBool,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field(
                "idle",
                &self.idle.iter().map(BoundedQueue::len).sum::<usize>(),
            )
            .finish()
    }
}

impl EndpointPool {
    /// A pool with a queue for each serving thread.
    pub(crate) fn new(idle_timeout: Duration) -> Arc<Self> {
        EndpointPool::with_queues(idle_timeout, crate::worker::count())
    }

    fn with_queues(idle_timeout: Duration, queues: usize) -> Arc<Self> {
        Arc::new(EndpointPool {
            idle: (0..queues.max(1))
                .map(|_| BoundedQueue::new(MAX_IDLE))
                .collect(),
            idle_timeout,
            reaper: AtomicBool::new(false),
        })
    }

    /// The calling serving thread's queue.
    fn own(&self) -> &BoundedQueue<Idle> {
        &self.idle[crate::worker::index() % self.idle.len()]
    }

    /// An idle connection of the calling serving thread that is ready for
    /// a request at `now`.
    pub(crate) fn checkout(&self, now: Instant) -> Option<Conn> {
        loop {
            let mut idle = self.own().pop()?;
            if now.saturating_duration_since(idle.since) < self.idle_timeout
                && idle.conn.is_reusable()
            {
                return Some(idle.conn);
            }
            // Stale, closed or sent bytes unasked: dropping closes it.
        }
    }

    /// Keeps a connection whose exchange ended cleanly (a full pool
    /// closes it).
    fn put(self: &Arc<Self>, conn: Conn) {
        let _ = self.own().push(Idle {
            conn,
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
        for queue in &self.idle {
            for _ in 0..queue.len() {
                let Some(mut idle) = queue.pop() else {
                    break;
                };
                if now.duration_since(idle.since) < self.idle_timeout && idle.conn.is_reusable() {
                    let _ = queue.push(idle);
                }
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

impl h1::Release for EndpointPool {
    fn release(self: Arc<Self>, conn: Conn) {
        self.put(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gather::Gathered;
    use crate::upstream::h1::Io;
    use tokio::net::{TcpListener, TcpStream};

    /// A socket is watched by the event loop of the serving thread that
    /// opened it: only that thread gets it back from the pool.
    #[tokio::test]
    async fn an_idle_connection_goes_back_to_the_serving_thread_that_opened_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _upstream_side = listener.accept().await.expect("accept");
        let pool = EndpointPool::with_queues(Duration::from_secs(60), 2);

        crate::worker::set_index(1);
        pool.put(Conn::new(Io::Plain(Gathered(stream))));
        crate::worker::set_index(0);
        assert!(
            pool.checkout(Instant::now()).is_none(),
            "serving thread 0 took thread 1's connection"
        );
        crate::worker::set_index(1);
        assert!(pool.checkout(Instant::now()).is_some());
        assert!(pool.checkout(Instant::now()).is_none(), "taken once");
        crate::worker::set_index(0);
    }
}
