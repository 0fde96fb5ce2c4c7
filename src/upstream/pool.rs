//! A small per-endpoint pool of HTTP/1.1 connections toward upstreams.
//!
//! Each endpoint keeps a lock-free queue of idle connections for each
//! serving thread (its memory allocated as they arrive): a connection is
//! watched by the event loop of the thread that opened it, so that thread
//! reuses it first. A thread with none of its own takes another thread's
//! and moves the socket to its own loop (as HAProxy's threads take over
//! each other's idle connections), rather than opening one while another
//! thread's stay idle. A connection comes back only from a
//! response body that ended cleanly (see [`h1::ResponseBody`]); a
//! response dropped part-way, a 101, or any error closes it instead (no
//! pool poisoning). Idle connections that are older than the idle
//! timeout, closed by the upstream, or sent bytes unasked are dropped at
//! checkout and by a reaper task.

use super::h1::Conn;
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
    /// A pool with a queue for each of `queues` serving threads.
    pub(super) fn with_queues(idle_timeout: Duration, queues: usize) -> Arc<Self> {
        Arc::new(EndpointPool {
            idle: (0..queues.max(1))
                .map(|_| BoundedQueue::new(MAX_IDLE))
                .collect(),
            idle_timeout,
            reaper: AtomicBool::new(false),
        })
    }

    /// The index of the calling serving thread's queue.
    fn own(&self) -> usize {
        crate::worker::slot(self.idle.len())
    }

    /// An idle connection ready for a request at `now`: one of the calling
    /// serving thread's, else another thread's, moved to this thread's
    /// event loop.
    pub(crate) fn checkout(&self, now: Instant) -> Option<Conn> {
        let own = self.own();
        if let Some(conn) = self.take(own, now) {
            return Some(conn);
        }
        (1..self.idle.len())
            .map(|step| (own + step) % self.idle.len())
            .find_map(|other| {
                // A socket that cannot be moved is closed, as a stale one.
                self.take(other, now).and_then(|conn| conn.move_here().ok())
            })
    }

    /// A connection of queue `queue` that is ready for a request at `now`.
    fn take(&self, queue: usize, now: Instant) -> Option<Conn> {
        loop {
            let mut idle = self.idle[queue].pop()?;
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
    pub(super) fn put(self: &Arc<Self>, conn: Conn) {
        let _ = self.idle[self.own()].push(Idle {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gather::Gathered;
    use crate::upstream::h1::Io;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn event_loop() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Opens a connection to `upstream` on `event_loop` as serving thread
    /// `thread`, keeps it idle in `pool`, and returns the upstream's side
    /// of it.
    fn park_one(
        pool: &Arc<EndpointPool>,
        event_loop: &tokio::runtime::Runtime,
        upstream: &std::net::TcpListener,
        thread: usize,
    ) -> std::net::TcpStream {
        let addr = upstream.local_addr().expect("addr");
        crate::worker::set_index(thread);
        event_loop.block_on(async {
            let stream = TcpStream::connect(addr).await.expect("connect");
            pool.put(Conn::new(Io::Plain(Gathered(stream))));
        });
        crate::worker::set_index(0);
        upstream.accept().expect("accept").0
    }

    /// An upstream listener and a pool with places for two serving
    /// threads.
    fn two_thread_pool() -> (std::net::TcpListener, Arc<EndpointPool>) {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let pool = EndpointPool::with_queues(Duration::from_secs(60), 2);
        (upstream, pool)
    }

    /// Sends "ping" on `io` and waits up to 5 s for the upstream's "pong":
    /// it only comes if the calling loop watches the socket.
    async fn assert_answered(io: &mut Io) {
        io.write_all(b"ping").await.expect("write");
        io.flush().await.expect("flush");
        let mut answer = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut answer))
            .await
            .expect("the answer is seen by the taking thread's loop")
            .expect("read");
        assert_eq!(&answer, b"pong");
    }

    fn local_port(conn: &mut Conn) -> u16 {
        match conn.io_mut() {
            Io::Plain(s) => s.0.local_addr().expect("addr").port(),
            Io::Tls(_) => unreachable!("plain connections only here"),
        }
    }

    /// A serving thread reuses the connections its own event loop watches
    /// first.
    #[test]
    fn a_serving_thread_reuses_its_own_idle_connections_first() {
        let (upstream, pool) = two_thread_pool();
        let event_loop = event_loop();
        let _theirs = park_one(&pool, &event_loop, &upstream, 1);
        let ours = park_one(&pool, &event_loop, &upstream, 0);

        let _in_loop = event_loop.enter();
        let mut conn = pool.checkout(Instant::now()).expect("an idle connection");
        assert_eq!(
            local_port(&mut conn),
            ours.peer_addr().expect("addr").port(),
            "thread 0 took thread 1's connection while it had its own"
        );
    }

    /// With none of its own, a serving thread takes one another thread
    /// opened, and the socket works on the taking thread's event loop
    /// although the opening thread's loop no longer runs: it was moved.
    #[test]
    fn a_serving_thread_without_idle_connections_takes_and_moves_another_threads() {
        let (upstream, pool) = two_thread_pool();
        let opener = event_loop();
        let mut server_side = park_one(&pool, &opener, &upstream, 1);
        let echo = std::thread::spawn(move || {
            let mut asked = [0u8; 4];
            server_side.read_exact(&mut asked).expect("read");
            server_side.write_all(b"pong").expect("write");
            server_side
        });

        event_loop().block_on(async {
            let mut conn = pool
                .checkout(Instant::now())
                .expect("thread 1's idle connection");
            assert!(pool.checkout(Instant::now()).is_none(), "taken once");
            assert_answered(conn.io_mut()).await;
        });
        echo.join().expect("upstream thread");
    }

    /// A connection the upstream closed while its opening loop did not
    /// run (so that loop never saw the close) is not handed to another
    /// thread.
    #[test]
    fn a_connection_closed_unseen_is_not_taken() {
        let (upstream, pool) = two_thread_pool();
        let opener = event_loop();
        let server_side = park_one(&pool, &opener, &upstream, 1);
        drop(server_side);
        // Time for the FIN to arrive.
        std::thread::sleep(Duration::from_millis(50));

        event_loop().block_on(async {
            assert!(
                pool.checkout(Instant::now()).is_none(),
                "a closed connection was taken"
            );
        });
    }

    /// A TLS connection moves the same way: its session goes on over the
    /// moved socket.
    #[test]
    fn a_tls_connection_keeps_its_session_when_moved() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
        let cert =
            rcgen::generate_simple_self_signed(vec!["upstream.test".into()]).expect("certificate");
        let der = cert.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let (upstream, pool) = two_thread_pool();
        let addr = upstream.local_addr().expect("addr");
        // The upstream answers one ping with a pong, on a thread and loop
        // of its own.
        let echo = std::thread::spawn(move || {
            event_loop().block_on(async {
                upstream.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(upstream).expect("listener");
                let (tcp, _) = listener.accept().await.expect("accept");
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
                let mut tls = acceptor.accept(tcp).await.expect("handshake");
                let mut asked = [0u8; 4];
                tls.read_exact(&mut asked).await.expect("read");
                // Late enough that the taking side waits for its loop to
                // see the answer arrive.
                tokio::time::sleep(Duration::from_millis(200)).await;
                tls.write_all(b"pong").await.expect("write");
                tls.flush().await.expect("flush");
                let _ = tls.read(&mut asked).await;
            });
        });

        let opener = event_loop();
        crate::worker::set_index(1);
        opener.block_on(async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from("upstream.test").expect("name");
            let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(name, Gathered(tcp))
                .await
                .expect("handshake");
            pool.put(Conn::new(Io::Tls(Box::new(tls))));
        });
        crate::worker::set_index(0);

        event_loop().block_on(async {
            let mut conn = pool
                .checkout(Instant::now())
                .expect("thread 1's idle connection");
            assert_answered(conn.io_mut()).await;
        });
        echo.join().expect("upstream thread");
    }
}
