//! Where log lines go: a lock-free queue that a thread of their own
//! empties into stderr every few milliseconds, never a write (nor a
//! wake-up) on a serving thread.
//!
//! Written in place, every access line was a `write` on stderr from the
//! thread serving the request, under stderr's lock; a log reader that
//! stalls (a full pipe, a slow log shipper) then stalled every request.
//! Queued, a line costs its copy into the queue. The writer wakes every
//! [`WRITE_INTERVAL`] (sooner when the queue is half full) and writes what
//! gathered in one `write`, so lines appear up to that late. After a
//! quiet second it sleeps until the next line wakes it
//! ([`IdlePark`]): an idle process is not woken. When the
//! reader stalls long enough to fill the queue, lines are dropped and
//! counted (`pointsman_log_lines_dropped_total`), as HAProxy drops log
//! lines rather than wait, so traffic goes on.

use crate::bounded::BoundedQueue;
use crate::idle_park::IdlePark;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};
use tracing_subscriber::fmt::MakeWriter;

/// Log lines the queue holds while the reader is behind (about 5 MB of
/// access lines).
pub const QUEUED_LINES: usize = 16_384;

/// How often the writer empties the queue.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes the writer gathers before a `write`.
const WRITE_BUFFER: usize = 64 * 1024;

/// How long dropping the [`LogGuard`] waits for queued lines to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Lines dropped by the process's log, for the metric.
static DROPPED: OnceLock<Arc<Shared>> = OnceLock::new();

#[derive(Debug)]
struct Shared {
    queue: BoundedQueue<Vec<u8>>,
    /// The writer's wait between drains.
    park: IdlePark,
    dropped: AtomicU64,
    /// Set by the guard: write what is queued now.
    closing: AtomicBool,
    /// Set by the writer once the queue was empty and written after
    /// `closing`.
    closed: AtomicBool,
    writer: OnceLock<Thread>,
}

/// The log's writer side for `tracing_subscriber::fmt`: each event's line
/// is queued whole.
#[derive(Debug, Clone)]
pub struct LogQueue(Arc<Shared>);

/// Keep until exit: dropping it writes the lines still queued.
#[derive(Debug)]
pub struct LogGuard(Arc<Shared>);

/// The process's log: lines queued for a `pointsman-log` thread that
/// writes them to stderr.
pub fn stderr_writer() -> (LogQueue, LogGuard) {
    let (queue, guard) = writer_to(std::io::stderr());
    let _ = DROPPED.set(queue.0.clone());
    (queue, guard)
}

/// Log lines dropped so far because the queue was full (0 before
/// [`stderr_writer`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// A queue whose lines a new thread writes to `out`.
fn writer_to(out: impl Write + Send + 'static) -> (LogQueue, LogGuard) {
    let shared = Arc::new(Shared {
        queue: BoundedQueue::new(QUEUED_LINES),
        park: IdlePark::new(WRITE_INTERVAL),
        dropped: AtomicU64::new(0),
        closing: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        writer: OnceLock::new(),
    });
    let for_thread = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("pointsman-log".into())
        .spawn(move || write_loop(&for_thread, out));
    match spawned {
        Ok(handle) => {
            let _ = shared.writer.set(handle.thread().clone());
        }
        // Nothing is written then; the lines are counted as dropped.
        Err(e) => eprintln!("cannot start the log writer: {e}"),
    }
    (LogQueue(shared.clone()), LogGuard(shared))
}

impl LogQueue {
    fn push(&self, line: Vec<u8>) {
        let shared = &self.0;
        let Some(writer) = shared.writer.get() else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if shared.queue.push(line).is_err() {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.park.pushed(writer, shared.queue.len(), QUEUED_LINES);
    }
}

/// One event's line, queued when the formatter is done with it.
#[derive(Debug)]
pub struct Line<'a> {
    queue: &'a LogQueue,
    bytes: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.queue.push(std::mem::take(&mut self.bytes));
        }
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            queue: self,
            bytes: Vec::new(),
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let shared = &self.0;
        let Some(writer) = shared.writer.get() else {
            return;
        };
        shared.closing.store(true, Ordering::Release);
        writer.unpark();
        let deadline = Instant::now() + FLUSH_WAIT;
        while !shared.closed.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The writer thread: every [`WRITE_INTERVAL`] while lines come, or when
/// woken, writes every queued line and flushes. A write error drops the
/// line, counted.
fn write_loop(shared: &Shared, out: impl Write) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, out);
    loop {
        shared
            .park
            .wait(|| shared.queue.is_empty() && !shared.closing.load(Ordering::Acquire));
        let closing = shared.closing.load(Ordering::Acquire);
        let mut found = false;
        while let Some(line) = shared.queue.pop() {
            found = true;
            if out.write_all(&line).is_err() {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.park.drained(found);
        if found {
            let _ = out.flush();
        }
        if closing {
            shared.closed.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines from several threads are all written, each thread's in order,
    /// by the time the guard is dropped; none is dropped.
    #[test]
    fn queued_lines_are_written_in_order_by_the_guards_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (queue, guard) = writer_to(std::fs::File::create(&path).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        let mut line = queue.make_writer();
                        line.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = std::fs::read_to_string(&path).unwrap();
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(who, _)| *who == t.to_string())
                .map(|(_, i)| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..1_000).collect::<Vec<_>>(), "thread {t}");
        }
        assert_eq!(queue.0.dropped.load(Ordering::Relaxed), 0);
    }

    /// A writer that never finishes a write: the queue fills, the rest is
    /// dropped and counted, queuing never waits, and the guard waits for
    /// the writer no longer than it says.
    #[test]
    fn a_stuck_writer_drops_and_counts_instead_of_waiting() {
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(0)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (queue, guard) = writer_to(Stuck);
        let started = Instant::now();
        // The writer's buffer holds ~330 of these; then it is stuck.
        for _ in 0..2 * QUEUED_LINES {
            queue.make_writer().write_all(&[b'x'; 200]).unwrap();
        }
        let dropped = queue.0.dropped.load(Ordering::Relaxed);
        assert!(dropped >= QUEUED_LINES as u64 / 2, "{dropped} dropped");
        assert!(started.elapsed() < Duration::from_secs(5));
        let waiting = Instant::now();
        drop(guard);
        assert!(waiting.elapsed() < FLUSH_WAIT + Duration::from_millis(500));
    }
}
