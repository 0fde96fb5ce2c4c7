//! Background work that yields to the serving threads.
//!
//! A reload parses and compiles for about 100 ms of CPU (10,000 routes).
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
