//! Which serving thread the caller is. Each serving thread runs an event
//! loop of its own (`server`), and a socket is watched by the event loop
//! that opened it; so each serving thread keeps its own idle HTTP/1.1
//! upstream connections (`upstream::pool`, which moves a socket to the
//! loop of a thread that takes another's), and a request to an HTTP/1.1
//! upstream never waits on a socket another thread's loop watches.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many serving threads the process runs (1 until `run` says more).
static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The calling serving thread's number, from 0; 0 on other threads.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Sets how many serving threads there are; before the config is linked,
/// so that pools are made with a place for each.
pub fn set_count(threads: usize) {
    COUNT.store(threads.max(1), Ordering::Relaxed);
}

/// How many serving threads there are.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Marks the calling thread as serving thread `index`.
pub fn set_index(index: usize) {
    INDEX.set(index);
}

/// The calling serving thread's number (0 on any other thread).
pub fn index() -> usize {
    INDEX.get()
}

/// The calling thread's place among `slots` kept one per serving thread
/// (pool queues, in-flight shares, round-robin positions), so that a
/// thread writes only its own.
pub fn slot(slots: usize) -> usize {
    index() % slots.max(1)
}
