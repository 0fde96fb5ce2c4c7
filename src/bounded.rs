//! A lock-free queue with a capacity that allocates as items arrive and
//! frees as they leave (crossbeam's `ArrayQueue` allocates all of its
//! capacity up front). Used where the bound is large and usually far from
//! reached: the exposure log's queue, an endpoint's idle connections.

use crossbeam_queue::SegQueue;

/// At most `capacity` items, first in, first out. The bound is checked
/// against the queue's own length (loads, no atomic read-modify-write:
/// the pool pushes and pops on every request), so pushes racing on
/// several threads may each pass it by one.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    items: SegQueue<T>,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    /// An empty queue (no allocation until the first push).
    pub const fn new(capacity: usize) -> Self {
        BoundedQueue {
            items: SegQueue::new(),
            capacity,
        }
    }

    /// Queues `item`, or hands it back when `capacity` items wait already.
    pub fn push(&self, item: T) -> Result<(), T> {
        if self.items.len() >= self.capacity {
            return Err(item);
        }
        self.items.push(item);
        Ok(())
    }

    /// The oldest item, if any.
    pub fn pop(&self) -> Option<T> {
        self.items.pop()
    }

    /// How many items wait (a snapshot: pushes and pops may be under way).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedQueue;

    #[test]
    fn holds_at_most_its_capacity_in_order() {
        let q = BoundedQueue::new(3);
        for i in 0..3 {
            assert_eq!(q.push(i), Ok(()), "item {i}");
        }
        assert_eq!(q.push(3), Err(3));
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some(0));
        assert_eq!(q.push(4), Ok(()));
        let rest: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, [1, 2, 4]);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }
}
