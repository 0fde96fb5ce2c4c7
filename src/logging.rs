//! Where log lines go: a queue to a thread of their own that writes them
//! to stderr, never a write on a serving thread.
//!
//! Written in place, every access line was a `write` on stderr from the
//! thread serving the request, under stderr's lock; a log reader that
//! stalls (a full pipe, a slow log shipper) then stalled every request.
//! Queued, a line costs a copy into the queue; the writer batches lines
//! into one `write` when it catches up. When the reader stalls long enough
//! to fill the queue, lines are dropped and counted
//! (`pointsman_log_lines_dropped_total`), as HAProxy does with its log
//! buffer, so traffic goes on.

use std::io::{BufWriter, Stderr};
use std::sync::OnceLock;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Log lines the queue holds while the reader is behind (about 5 MB of
/// access lines).
pub const QUEUED_LINES: usize = 16_384;

/// Bytes the writer gathers before a `write` (it also writes whenever the
/// queue is empty).
const WRITE_BUFFER: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The writer of the process's log: lines go to stderr through the queue.
/// Keep the guard until exit: dropping it writes what is queued.
pub fn stderr_writer() -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("pointsman-log")
        .finish::<BufWriter<Stderr>>(BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr()));
    let _ = DROPPED.set(writer.error_counter());
    (writer, guard)
}

/// Log lines dropped so far because the queue was full (0 before
/// [`stderr_writer`]).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
