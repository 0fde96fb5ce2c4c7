//! Connection timeouts without a timer per request or a task per
//! connection: one sweeper task per server looks at every open connection
//! a few times per second (the idle timeout, the head-read deadline, the
//! first request's deadline, the send timeout, the drain), keeps a coarse
//! clock, and wakes a connection's task only when
//! it has something to do there. A connection's own task notes its
//! activity in a counter and registers its waker when polled; nothing on
//! the request path takes a lock or arms a timer.
//!
//! The head-read deadline (`header_read_timeout`) is hyper's, fed with a
//! [`HeadTimer`]: a hyper `Timer` whose sleeps read the coarse clock and
//! are woken by the sweeper, instead of one tokio timer entry per request.
//! Deadlines are kept to within one sweep period (a quarter of the
//! smallest of `idle_timeout` and `header_read_timeout`, at most 1 s).
//! While no connection is open the sweeper sleeps until one opens, so an
//! idle proxy is not woken for it; each connection brings the coarse
//! clock to now as it opens, since the clock stands still meanwhile.

use crate::compile::Limits;
use atomic_waker::AtomicWaker;
use crossbeam_queue::SegQueue;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The sweeper asks a connection to close (idle timeout, drain).
pub(super) const CLOSE: u8 = 1;
/// The sweeper asks an idle HTTP/1.1 connection to hand its socket back
/// from hyper, releasing its buffers until the client speaks again.
pub(super) const PARK: u8 = 2;
/// The sweeper asks a connection to close at once, request in flight or
/// not (no first request within the header read timeout, a client that
/// accepted nothing within the send timeout).
pub(super) const CLOSE_NOW: u8 = 4;

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Milliseconds since [`EPOCH`], as of the last sweep.
static CLOCK_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// The coarse clock: milliseconds since the process's first look, as of
/// the latest sweep of any server.
pub(super) fn now_ms() -> u64 {
    CLOCK_MS.load(Ordering::Relaxed)
}

/// Advances the coarse clock to the real time and returns it.
fn tick_clock() -> u64 {
    let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
    CLOCK_MS.fetch_max(now, Ordering::Relaxed).max(now)
}

fn to_ms(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the sweeper and a connection's task share.
#[derive(Debug)]
pub(super) struct Watch {
    /// The client, for logs.
    peer: SocketAddr,
    /// Requests in flight (counted by the service).
    pub(super) in_flight: AtomicUsize,
    waker: AtomicWaker,
    /// Reads and writes that moved bytes; written by the connection's
    /// task only (a load and a store, no read-modify-write).
    reads: AtomicU64,
    writes: AtomicU64,
    /// A write found the socket full and has not gone through since.
    write_waiting: AtomicBool,
    /// Whether a request head has arrived (until then the connection has
    /// the header read timeout from its start to send one).
    started: AtomicBool,
    /// [`CLOSE`] and [`PARK`] requests.
    asks: AtomicU8,
    /// The running head-read deadline (coarse ms), 0 for none.
    head_deadline: AtomicU64,
    /// A head-read deadline carried over a park: the next head must
    /// arrive by it (coarse ms), 0 for none.
    carry: AtomicU64,
    /// Whether the connection may park (plain HTTP/1.1, between hyper
    /// connections' lives).
    pub(super) parkable: AtomicBool,
    /// While parking: hyper's shutdown of the socket is skipped.
    pub(super) parking: AtomicBool,
    /// The sweeper's own notes: moves at its last look, quiet since when;
    /// writes at its last look, and since when a write has been waiting.
    seen: AtomicU64,
    quiet_since: AtomicU64,
    seen_writes: AtomicU64,
    blocked_since: AtomicU64,
    opened: u64,
    idle_ms: u64,
    send_ms: u64,
    first_head_ms: u64,
}

impl Watch {
    pub(super) fn new(peer: SocketAddr, limits: &Limits) -> Self {
        let now = now_ms();
        Watch {
            peer,
            in_flight: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            write_waiting: AtomicBool::new(false),
            started: AtomicBool::new(false),
            asks: AtomicU8::new(0),
            head_deadline: AtomicU64::new(0),
            carry: AtomicU64::new(0),
            parkable: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            seen: AtomicU64::new(0),
            quiet_since: AtomicU64::new(now),
            seen_writes: AtomicU64::new(0),
            blocked_since: AtomicU64::new(0),
            opened: now,
            idle_ms: duration_ms(limits.idle_timeout),
            send_ms: duration_ms(limits.send_timeout),
            first_head_ms: duration_ms(limits.header_read_timeout),
        }
    }

    fn moves(&self) -> u64 {
        self.reads
            .load(Ordering::Relaxed)
            .wrapping_add(self.writes.load(Ordering::Relaxed))
    }

    /// Notes a read that moved bytes (the connection's own task only).
    #[inline]
    pub(super) fn read(&self) {
        let n = self.reads.load(Ordering::Relaxed);
        self.reads.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Notes the outcome of a write (the connection's own task only).
    #[inline]
    pub(super) fn wrote(&self, res: &Poll<std::io::Result<usize>>) {
        match res {
            Poll::Ready(Ok(n)) if *n > 0 => {
                let n = self.writes.load(Ordering::Relaxed);
                self.writes.store(n.wrapping_add(1), Ordering::Relaxed);
                if self.write_waiting.load(Ordering::Relaxed) {
                    self.write_waiting.store(false, Ordering::Relaxed);
                }
            }
            Poll::Pending => self.write_waiting.store(true, Ordering::Relaxed),
            _ => {}
        }
    }

    /// Notes that a request head arrived.
    #[inline]
    pub(super) fn started(&self) {
        if !self.started.load(Ordering::Relaxed) {
            self.started.store(true, Ordering::Relaxed);
        }
    }

    /// Registers the connection task's waker (each time it is polled).
    #[inline]
    pub(super) fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// The pending requests ([`CLOSE`], [`PARK`]).
    #[inline]
    pub(super) fn asks(&self) -> u8 {
        self.asks.load(Ordering::Relaxed)
    }

    /// Withdraws a [`PARK`] request (handled or declined).
    pub(super) fn clear_park(&self) {
        self.asks.fetch_and(!PARK, Ordering::Relaxed);
    }

    /// Asks `what` of the connection; whether it was not asked already.
    fn ask(&self, what: u8) -> bool {
        let new = self.asks.fetch_or(what, Ordering::Relaxed) & what == 0;
        if new {
            self.waker.wake();
        }
        new
    }

    /// Whether the running (or carried) head-read deadline has passed.
    pub(super) fn head_expired(&self) -> bool {
        let d = self.head_deadline.load(Ordering::Relaxed);
        d != 0 && now_ms() >= d
    }

    /// Keeps the head-read deadline of a parked connection: it holds
    /// while parked and bounds the next head.
    pub(super) fn carry_deadline(&self, deadline: u64) {
        self.carry.store(deadline, Ordering::Relaxed);
        self.head_deadline.store(deadline, Ordering::Relaxed);
    }

    /// The running head-read deadline (coarse ms), 0 for none.
    pub(super) fn head_deadline(&self) -> u64 {
        self.head_deadline.load(Ordering::Relaxed)
    }
}

/// The open connections of a server, looked at by its sweeper task.
#[derive(Debug, Default)]
pub(super) struct Registry {
    conns: SegQueue<Weak<Watch>>,
    /// The sweeper waits for a connection to open (none is).
    idle: AtomicBool,
    /// Wakes an idle sweeper.
    opened: tokio::sync::Notify,
}

impl Registry {
    /// A new connection's watch, registered (it leaves when dropped); an
    /// idle sweeper is woken.
    pub(super) fn open(&self, peer: SocketAddr, limits: &Limits) -> Arc<Watch> {
        // The coarse clock stood still if no connection was open; the
        // watch's deadlines start from it.
        tick_clock();
        let watch = Arc::new(Watch::new(peer, limits));
        self.conns.push(Arc::downgrade(&watch));
        // Pairs with the fence in `going_idle`: either the sweeper sees
        // this connection, or this sees the sweeper idle.
        fence(Ordering::SeqCst);
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::Relaxed) {
            self.opened.notify_one();
        }
        watch
    }

    /// After a sweep: whether no connection is open, and if so the
    /// sweeper counts as idle (the next [`Registry::open`] wakes it).
    fn going_idle(&self) -> bool {
        if !self.conns.is_empty() {
            return false;
        }
        self.idle.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.conns.is_empty() {
            return true;
        }
        self.idle.store(false, Ordering::Relaxed);
        false
    }

    /// Looks at every connection once: asks the idle ones to close (or,
    /// for HTTP/1.1, to park), the rest of them too when `stopping`, and
    /// wakes those whose head-read deadline passed. Returns how many
    /// connections let go of memory since the last sweep (closed, or asked
    /// to park).
    fn sweep(&self, now: u64, stopping: bool) -> usize {
        let mut released = 0;
        for _ in 0..self.conns.len() {
            let Some(weak) = self.conns.pop() else { break };
            let Some(conn) = weak.upgrade() else {
                released += 1;
                continue;
            };
            if look(&conn, now, stopping) {
                released += 1;
            }
            drop(conn);
            self.conns.push(weak);
        }
        released
    }

    /// Sweeps every `period()` while a connection is open, until the
    /// process ends; from the first `stop`, every connection is asked to
    /// close.
    pub(super) async fn run(
        self: Arc<Self>,
        period: impl Fn() -> Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut stopping = *stop.borrow();
        let mut release = false;
        let mut idle = false;
        loop {
            if stopping {
                tokio::time::sleep(period()).await;
            } else if idle {
                tokio::select! {
                    r = stop.changed() => stopping = r.is_err() || *stop.borrow(),
                    () = self.opened.notified() => {}
                }
                self.idle.store(false, Ordering::Relaxed);
            } else {
                tokio::select! {
                    r = stop.changed() => stopping = r.is_err() || *stop.borrow(),
                    () = tokio::time::sleep(period()) => {}
                }
            }
            if release {
                // What parked and closed connections freed (their buffers
                // and tasks) goes back to the OS: the allocator would
                // otherwise keep those pages resident until its next
                // allocation on the same thread.
                crate::allocator::release_free_memory();
            }
            release = self.sweep(tick_clock(), stopping) > 0;
            // Memory a closing connection freed is handed back first.
            idle = !release && !stopping && self.going_idle();
        }
    }
}

/// Looks at one connection; whether it was newly asked to park.
fn look(w: &Watch, now: u64, stopping: bool) -> bool {
    if !w.started.load(Ordering::Relaxed) && now.saturating_sub(w.opened) >= w.first_head_ms {
        // A socket that sends nothing, or not even enough to tell HTTP/1.1
        // from HTTP/2 or to finish a TLS handshake.
        tracing::debug!(peer = %w.peer, "no request head within the header read timeout");
        w.ask(CLOSE_NOW);
        return false;
    }
    let writes = w.writes.load(Ordering::Relaxed);
    if w.write_waiting.load(Ordering::Relaxed) && writes == w.seen_writes.load(Ordering::Relaxed) {
        let since = match w.blocked_since.load(Ordering::Relaxed) {
            0 => {
                w.blocked_since.store(now.max(1), Ordering::Relaxed);
                now
            }
            t => t,
        };
        if now.saturating_sub(since) >= w.send_ms {
            tracing::debug!(peer = %w.peer, "client accepted nothing within the send timeout");
            w.ask(CLOSE_NOW);
            return false;
        }
    } else {
        w.blocked_since.store(0, Ordering::Relaxed);
    }
    w.seen_writes.store(writes, Ordering::Relaxed);
    if stopping {
        w.ask(CLOSE);
        return false;
    }
    let moves = w.moves();
    let busy = w.in_flight.load(Ordering::Relaxed) > 0;
    let mut parking = false;
    if moves != w.seen.load(Ordering::Relaxed) || busy {
        w.seen.store(moves, Ordering::Relaxed);
        w.quiet_since.store(now, Ordering::Relaxed);
    } else if now.saturating_sub(w.quiet_since.load(Ordering::Relaxed)) >= w.idle_ms {
        tracing::debug!(peer = %w.peer, "idle timeout");
        w.ask(CLOSE);
        return false;
    } else if w.parkable.load(Ordering::Relaxed) {
        parking = w.ask(PARK);
    }
    let d = w.head_deadline.load(Ordering::Relaxed);
    if d != 0 && now >= d {
        w.waker.wake();
    }
    parking
}

/// The sweep period for these timeouts: a quarter of the smallest, from
/// 10 ms to 1 s.
pub(super) fn period(limits: &Limits) -> Duration {
    let shortest = limits
        .idle_timeout
        .min(limits.header_read_timeout)
        .min(limits.send_timeout);
    (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// hyper's timer for one HTTP/1.1 connection's head-read deadline: the
/// coarse clock, and sleeps the sweeper wakes.
#[derive(Debug, Clone)]
pub(super) struct HeadTimer(pub(super) Arc<Watch>);

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let mut deadline = to_ms(deadline);
        let w = &self.0;
        let carried = w.carry.load(Ordering::Relaxed);
        if carried != 0 {
            // The first head after a park keeps the deadline it had.
            w.carry.store(0, Ordering::Relaxed);
            deadline = deadline.min(carried);
        }
        Box::pin(HeadSleep {
            watch: self.0.clone(),
            deadline,
        })
    }

    fn now(&self) -> Instant {
        epoch() + Duration::from_millis(now_ms())
    }
}

/// A head-read deadline: ready once the coarse clock reaches it. The
/// connection's task is woken by the sweeper then (its waker is the one
/// the connection registered).
struct HeadSleep {
    watch: Arc<Watch>,
    deadline: u64,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if now_ms() >= self.deadline {
            return Poll::Ready(());
        }
        self.watch
            .head_deadline
            .store(self.deadline, Ordering::Relaxed);
        Poll::Pending
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        self.watch.head_deadline.store(0, Ordering::Relaxed);
    }
}
