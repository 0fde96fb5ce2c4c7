//! Background work that yields to the serving threads.
//!
//! A reload parses and compiles for 40–80 ms of CPU (10,000 routes).
//! Its thread runs at a lower priority, but once it holds a core the
//! scheduler hands that core back only at its next tick (4 ms at the usual
//! `HZ=250`) or when the thread blocks: a serving thread it displaced
//! waits that long, and every request on it with it. A thread marked with
//! [`run_in_background`] gives its core up at the next [`yield_point`]
//! once it has run for its slice, so such a wait is bounded by the slice
//! instead.
//! [`yield_point`] is placed in the loops of long work (a reload's parse
//! and compile, the admin API's large answers, through [`YieldingWriter`]);
//! on threads not marked it reads one thread-local and returns.
//!
//! The serving threads cooperate the other way round: one that has run for
//! 1 ms without blocking lets the threads queued for its CPU go first when
//! it next runs out of work ([`before_waiting`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a background thread runs before it gives way: well under a
/// request's latency, and long enough that yielding costs under 1 %.
pub const BACKGROUND_SLICE: Duration = Duration::from_micros(100);

/// Calls between two looks at the clock: a yield point may be passed every
/// microsecond, a clock read costs about 20 ns.
const CALLS_PER_LOOK: u32 = 16;

#[derive(Clone, Copy)]
struct Slice {
    length: Duration,
    ends: Instant,
    calls: u32,
    /// Yield points passed since the thread was marked.
    passed: u64,
}

thread_local! {
    /// The calling thread's slice; `None` on threads that do not yield.
    static SLICE: Cell<Option<Slice>> = const { Cell::new(None) };
}

/// Makes the calling thread a background one: nice 10 (it takes the CPU
/// the serving threads leave, not an equal share) and yielding every
/// [`BACKGROUND_SLICE`]. For the reload and admin threads.
pub fn run_in_background() {
    lower_priority();
    yield_every(BACKGROUND_SLICE);
}

/// Sets the calling thread's nice value to 10 (Linux: a thread's own
/// priority; elsewhere, nothing).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` and `setpriority` take no pointers; on Linux
    // `PRIO_PROCESS` with a thread id changes that thread only.
    #[allow(unsafe_code)]
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0 {
            tracing::debug!("cannot lower a background thread's priority");
        }
    }
}

/// Makes the calling thread yield at a [`yield_point`] once it has run for
/// `length` since it started or last yielded.
fn yield_every(length: Duration) {
    SLICE.set(Some(Slice {
        length,
        ends: Instant::now() + length,
        calls: 0,
        passed: 0,
    }));
}

/// Yields the CPU if the calling thread was marked with
/// [`run_in_background`] and its slice is used up.
#[inline]
pub fn yield_point() {
    let Some(mut slice) = SLICE.get() else { return };
    slice.passed += 1;
    slice.calls += 1;
    if slice.calls >= CALLS_PER_LOOK {
        slice.calls = 0;
        if Instant::now() >= slice.ends {
            std::thread::yield_now();
            slice.ends = Instant::now() + slice.length;
        }
    }
    SLICE.set(Some(slice));
}

/// How long a serving thread may run without blocking before it gives
/// way ([`before_waiting`]): under one scheduler slice (1.4 ms on a 2-CPU
/// Linux 6.x), so a thread queued behind it waits less than a slice, and
/// seldom enough that the serving thread keeps its share of the CPU.
/// Measured on a shared 2-core host: giving way every 300 µs cost 12 % of
/// the requests per second; 1 ms against 2 ms cut the p99 to 0.77× with a
/// two-thread client and backend, at the same requests per second there
/// and with single-thread peers, 1 % fewer with the backend on the
/// proxy's core.
pub const SERVING_TURN: Duration = Duration::from_millis(1);

/// A wait for events that lasted this long blocked: the thread slept, and
/// the threads queued for its CPU ran. One that found events waiting
/// returns within a few microseconds.
const BLOCKED: Duration = Duration::from_micros(20);

/// A serving thread's turn: when it began (the thread last gave way or woke
/// from a wait that blocked) and when the thread began its current wait.
#[derive(Clone, Copy, Default)]
struct Turn {
    began: Option<Instant>,
    waiting_since: Option<Instant>,
}

impl Turn {
    /// The thread is about to wait at `now`: whether it gives way first.
    fn before_waiting(&mut self, now: Instant) -> bool {
        self.waiting_since = Some(now);
        let over = self
            .began
            .is_none_or(|at| now.saturating_duration_since(at) >= SERVING_TURN);
        if over {
            self.began = Some(now);
        }
        over
    }

    /// The thread's wait ended at `now`.
    fn after_waiting(&mut self, now: Instant) {
        if let Some(since) = self.waiting_since.take()
            && now.saturating_duration_since(since) >= BLOCKED
        {
            self.began = Some(now);
        }
    }
}

thread_local! {
    /// The calling serving thread's turn.
    static TURN: Cell<Turn> = const { Cell::new(Turn { began: None, waiting_since: None }) };
}

/// Called by a serving thread each time it has nothing left to run and is
/// about to wait for events (tokio's `on_thread_park`). A busy event loop
/// seldom blocks there, because the next events are already waiting, and
/// then a thread woken onto its CPU (on a host it shares: the load
/// generator, the backend) waits for the end of the loop's scheduler
/// slice, or of two, and so do the requests it carries. So once the
/// thread has run for [`SERVING_TURN`] without blocking, it lets the
/// threads queued for its CPU go first. With none there, the yield
/// returns at once.
pub fn before_waiting() {
    let mut turn = TURN.get();
    let give_way = turn.before_waiting(Instant::now());
    TURN.set(turn);
    if give_way {
        std::thread::yield_now();
    }
}

/// Called by a serving thread when its wait for events ends (tokio's
/// `on_thread_unpark`): a wait that blocked begins a new turn.
pub fn after_waiting() {
    let mut turn = TURN.get();
    turn.after_waiting(Instant::now());
    TURN.set(turn);
}

/// A writer that passes a [`yield_point`] at every write: a large answer
/// (`/routes`, `/metrics` of 10,000 routes: megabytes written in small
/// pieces) rendered into it gives the core back as it goes.
pub struct YieldingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for YieldingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        yield_point();
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The yield points the calling thread has passed since it was marked;
/// `None` when it does not yield (for tests).
pub fn points_passed() -> Option<u64> {
    SLICE.get().map(|s| s.passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_thread_gives_way_once_a_turn_and_a_blocked_wait_begins_one() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let turn_us = SERVING_TURN.as_micros() as u64;
        let mut turn = Turn::default();
        assert!(turn.before_waiting(t0), "the first wait gives way");
        turn.after_waiting(at(1));
        assert!(!turn.before_waiting(at(turn_us / 2)), "within the turn");
        turn.after_waiting(at(turn_us / 2 + 1));
        assert!(turn.before_waiting(at(turn_us)), "the turn is over");
        turn.after_waiting(at(turn_us + 1));

        // A wait that blocked begins a new turn from when it ended.
        let woke = turn_us + 10 + BLOCKED.as_micros() as u64;
        assert!(!turn.before_waiting(at(turn_us + 10)));
        turn.after_waiting(at(woke));
        assert!(
            !turn.before_waiting(at(2 * turn_us + 20)),
            "a turn from the wake"
        );
        turn.after_waiting(at(2 * turn_us + 21));
        assert!(turn.before_waiting(at(woke + turn_us)));

        // A clock that steps back gives no yield.
        let mut turn = Turn::default();
        turn.before_waiting(at(turn_us));
        assert!(!turn.before_waiting(t0));
    }

    #[test]
    fn only_a_marked_thread_counts_the_points_it_passes() {
        std::thread::spawn(|| {
            assert_eq!(points_passed(), None);
            yield_point();
            yield_every(Duration::ZERO);
            for _ in 0..CALLS_PER_LOOK * 2 {
                yield_point();
            }
            assert_eq!(points_passed(), Some(u64::from(CALLS_PER_LOOK) * 2));
        })
        .join()
        .unwrap();
        assert_eq!(points_passed(), None);
    }
}
