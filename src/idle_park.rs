//! How a writer thread waits between two drains of its queue: a timed
//! sleep while items arrive, so a busy queue is drained in batches and no
//! producer ever wakes it, and an untimed one once [`QUIET`] has passed
//! with nothing to drain, so an idle process is not woken a hundred times
//! a second (the log writer was, with the access log off). The first push
//! after that wakes the thread: one `unpark` per quiet spell.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
use std::thread::Thread;
use std::time::Duration;

/// How long a queue stays empty before its writer sleeps until woken.
pub const QUIET: Duration = Duration::from_secs(1);

/// The writer's side of the wait and the producers' way to end it.
#[derive(Debug)]
pub struct IdlePark {
    /// The timed sleep between two drains.
    interval: Duration,
    /// Empty drains in a row after which the writer sleeps until woken.
    quiet_drains: u32,
    /// The writer sleeps untimed: the next push wakes it.
    asleep: AtomicBool,
    /// Drains in a row that found nothing (the writer's own count).
    empty_drains: AtomicU32,
}

impl IdlePark {
    /// A writer draining every `interval` while items arrive.
    pub fn new(interval: Duration) -> Self {
        let drains = QUIET.as_nanos() / interval.as_nanos().max(1);
        IdlePark {
            interval,
            quiet_drains: u32::try_from(drains).unwrap_or(u32::MAX).max(1),
            asleep: AtomicBool::new(false),
            empty_drains: AtomicU32::new(0),
        }
    }

    /// The writer, before each drain: waits its interval, or, once its
    /// drains found nothing for [`QUIET`], until a producer wakes it (or a
    /// spurious wake-up). `is_empty` is the queue's.
    pub fn wait(&self, is_empty: impl FnOnce() -> bool) {
        if self.empty_drains.load(Ordering::Relaxed) < self.quiet_drains {
            std::thread::park_timeout(self.interval);
            return;
        }
        self.asleep.store(true, Ordering::Relaxed);
        // Pairs with the fence in `pushed`: either this check sees the
        // push, or the producer sees `asleep` and unparks (a token that
        // `park` consumes even when given before it).
        fence(Ordering::SeqCst);
        if is_empty() {
            std::thread::park();
        }
        self.asleep.store(false, Ordering::Relaxed);
    }

    /// The writer, after each drain: whether it found anything.
    pub fn drained(&self, found: bool) {
        let n = if found {
            0
        } else {
            self.empty_drains.load(Ordering::Relaxed).saturating_add(1)
        };
        self.empty_drains.store(n, Ordering::Relaxed);
    }

    /// A producer, after a push that left `queued` items of the queue's
    /// `capacity` waiting: wakes `writer` if it sleeps untimed, or when
    /// the queue just reached half full (a burst is written before it
    /// fills).
    pub fn pushed(&self, writer: &Thread, queued: usize, capacity: usize) {
        if queued == capacity / 2 {
            writer.unpark();
            return;
        }
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::Relaxed) {
            writer.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::BoundedQueue;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// A writer over a queue, as the log's: counts its wake-ups and what it
    /// drained.
    struct Writer {
        queue: BoundedQueue<u32>,
        park: IdlePark,
        wakeups: AtomicUsize,
        drained: AtomicUsize,
    }

    fn start(park: IdlePark) -> (Arc<Writer>, Thread) {
        let w = Arc::new(Writer {
            queue: BoundedQueue::new(1024),
            park,
            wakeups: AtomicUsize::new(0),
            drained: AtomicUsize::new(0),
        });
        let for_thread = w.clone();
        let handle = std::thread::spawn(move || {
            let w = for_thread;
            loop {
                w.park.wait(|| w.queue.is_empty());
                w.wakeups.fetch_add(1, Ordering::Relaxed);
                let mut found = false;
                while w.queue.pop().is_some() {
                    found = true;
                    w.drained.fetch_add(1, Ordering::Relaxed);
                }
                w.park.drained(found);
            }
        });
        (w, handle.thread().clone())
    }

    fn wait_for(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Quiet for longer than [`QUIET`], the writer stops waking; a push
    /// then wakes it at once, and it drains on its timer again.
    #[test]
    fn a_quiet_writer_sleeps_until_a_push_wakes_it() {
        let (w, thread) = start(IdlePark::new(Duration::from_millis(10)));
        std::thread::sleep(QUIET + Duration::from_millis(200));
        let before = w.wakeups.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let idle = w.wakeups.load(Ordering::Relaxed) - before;
        assert!(idle <= 1, "woke {idle} times in 300 ms of quiet");

        let pushed_at = Instant::now();
        assert!(w.queue.push(7).is_ok());
        w.park.pushed(&thread, w.queue.len(), 1024);
        wait_for(|| w.drained.load(Ordering::Relaxed) == 1);
        assert!(pushed_at.elapsed() < Duration::from_millis(500));

        // Busy again: timed drains, no producer needed.
        let before = w.wakeups.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        assert!(w.wakeups.load(Ordering::Relaxed) - before >= 3);
    }

    /// Pushes racing with the writer going to sleep are never left
    /// behind: every item is drained. The pushes are sparse (the queue
    /// never gets near half full, which would wake the writer anyway), so
    /// the writer falls asleep between them again and again.
    #[test]
    fn no_push_is_left_in_the_queue() {
        // Asleep after every empty drain: as many races as can be.
        let (w, thread) = start(IdlePark {
            quiet_drains: 1,
            ..IdlePark::new(Duration::from_micros(100))
        });
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let w = w.clone();
                let thread = thread.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        assert!(w.queue.push(i).is_ok());
                        w.park.pushed(&thread, w.queue.len(), 1024);
                        std::thread::sleep(Duration::from_micros(u64::from(i % 5) * 100));
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        wait_for(|| w.drained.load(Ordering::Relaxed) == 2_000);
    }
}
