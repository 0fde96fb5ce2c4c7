//! Picking an endpoint (SPEC 6.1): only among healthy, non-ejected
//! endpoints; round robin in turn over them, `least_request` the less
//! loaded of two random ones (power of two choices), `random` at random.
//! Retries go to another endpoint and do not move the round-robin
//! position, so a bad endpoint does not keep getting first attempts.
//!
//! No allocation: the available endpoints are counted, then the k-th is
//! found by walking again.

use super::def::Balance;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the balancer needs to know about the endpoints.
pub(crate) trait Endpoints {
    /// How many endpoints there are.
    fn count(&self) -> usize;
    /// Whether endpoint `i` may be picked now.
    fn available(&self, i: usize) -> bool;
    /// Requests in flight on endpoint `i`.
    fn load(&self, i: usize) -> usize;
}

/// The endpoints one request has tried: a bit per endpoint for the first
/// 64, and always the last one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tried {
    bits: u64,
    last: Option<usize>,
}

impl Tried {
    /// Notes endpoint `i` as tried.
    pub(crate) fn add(&mut self, i: usize) {
        if i < 64 {
            self.bits |= 1 << i;
        }
        self.last = Some(i);
    }

    fn has(&self, i: usize) -> bool {
        (i < 64 && self.bits & (1 << i) != 0) || self.last == Some(i)
    }
}

/// Picks an endpoint for a request's first attempt (moving the
/// round-robin position `next`), or a retry's (`tried` not empty:
/// another endpoint, `next` untouched). `None`: no endpoint is left.
pub(crate) fn pick(
    balance: Balance,
    eps: &impl Endpoints,
    next: &AtomicUsize,
    tried: &Tried,
) -> Option<usize> {
    let n = eps.count();
    let ok = |i: usize| !tried.has(i) && eps.available(i);
    let left = (0..n).filter(|&i| ok(i)).count();
    let kth = |k: usize| (0..n).filter(|&i| ok(i)).nth(k);
    if left <= 1 {
        return kth(0);
    }
    match (balance, tried.last) {
        (Balance::RoundRobin, None) => kth(next.fetch_add(1, Ordering::Relaxed) % left),
        // A retry: the next one after the endpoint that failed.
        (Balance::RoundRobin, Some(last)) => (1..=n).map(|d| (last + d) % n).find(|&i| ok(i)),
        (Balance::Random, _) => kth(rand::random_range(0..left)),
        (Balance::LeastRequest, _) => {
            let a = rand::random_range(0..left);
            let mut b = rand::random_range(0..left - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (kth(a)?, kth(b)?);
            Some(if eps.load(b) < eps.load(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoints with fixed availability and load.
    struct Fixed(Vec<(bool, usize)>);

    impl Endpoints for Fixed {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn available(&self, i: usize) -> bool {
            self.0[i].0
        }
        fn load(&self, i: usize) -> usize {
            self.0[i].1
        }
    }

    fn counts(balance: Balance, eps: &Fixed, rounds: usize) -> Vec<usize> {
        let next = AtomicUsize::new(0);
        let mut seen = vec![0; eps.count()];
        for _ in 0..rounds {
            seen[pick(balance, eps, &next, &Tried::default()).unwrap()] += 1;
        }
        seen
    }

    #[test]
    fn unavailable_endpoints_are_never_picked() {
        let eps = Fixed(vec![(true, 0), (false, 0), (true, 0), (false, 0)]);
        for balance in [Balance::RoundRobin, Balance::Random, Balance::LeastRequest] {
            let seen = counts(balance, &eps, 400);
            assert_eq!((seen[1], seen[3]), (0, 0), "{balance:?}: {seen:?}");
            assert!(seen[0] > 100 && seen[2] > 100, "{balance:?}: {seen:?}");
        }
        // Round robin spreads evenly over the available ones.
        assert_eq!(counts(Balance::RoundRobin, &eps, 400), [200, 0, 200, 0]);
    }

    #[test]
    fn nothing_available_is_none() {
        let eps = Fixed(vec![(false, 0), (false, 0)]);
        for balance in [Balance::RoundRobin, Balance::Random, Balance::LeastRequest] {
            let next = AtomicUsize::new(0);
            assert_eq!(pick(balance, &eps, &next, &Tried::default()), None);
        }
        let empty = Fixed(vec![]);
        let next = AtomicUsize::new(0);
        assert_eq!(
            pick(Balance::RoundRobin, &empty, &next, &Tried::default()),
            None
        );
    }

    #[test]
    fn least_request_takes_the_less_loaded_of_two_random() {
        // Power of two choices: the most loaded endpoint always loses its
        // pair; the least loaded wins every pair it is in (3 of the 6
        // pairs of 4 endpoints, so about half of all picks).
        let eps = Fixed(vec![(true, 7), (true, 0), (true, 3), (true, 5)]);
        let seen = counts(Balance::LeastRequest, &eps, 6000);
        assert_eq!(seen[0], 0, "{seen:?}");
        assert!((2600..3400).contains(&seen[1]), "{seen:?}");
        // Endpoint 2 wins against 3 and 0 (2 pairs), endpoint 3 against 0.
        assert!(seen[2] > seen[3], "{seen:?}");
        // Two endpoints: always the less loaded one.
        let two = Fixed(vec![(true, 9), (true, 1)]);
        assert_eq!(counts(Balance::LeastRequest, &two, 100), [0, 100]);
        // An unavailable idle endpoint does not attract traffic.
        let down = Fixed(vec![(true, 4), (false, 0), (true, 2)]);
        assert_eq!(counts(Balance::LeastRequest, &down, 100), [0, 0, 100]);
    }

    #[test]
    fn a_retry_goes_elsewhere_and_does_not_move_the_rotation() {
        let eps = Fixed(vec![(true, 0), (true, 0), (true, 0)]);
        let next = AtomicUsize::new(0);
        let first = pick(Balance::RoundRobin, &eps, &next, &Tried::default()).unwrap();
        assert_eq!(first, 0);
        let mut tried = Tried::default();
        tried.add(first);
        for _ in 0..5 {
            assert_eq!(pick(Balance::RoundRobin, &eps, &next, &tried), Some(1));
        }
        tried.add(1);
        assert_eq!(pick(Balance::RoundRobin, &eps, &next, &tried), Some(2));
        tried.add(2);
        assert_eq!(pick(Balance::RoundRobin, &eps, &next, &tried), None);
        // The next first attempt carries on from where first attempts were.
        assert_eq!(
            pick(Balance::RoundRobin, &eps, &next, &Tried::default()),
            Some(1)
        );
        for balance in [Balance::Random, Balance::LeastRequest] {
            let mut tried = Tried::default();
            tried.add(1);
            for _ in 0..50 {
                assert_ne!(pick(balance, &eps, &next, &tried), Some(1));
            }
        }
        // A single endpoint is not retried.
        let one = Fixed(vec![(true, 0)]);
        let mut tried = Tried::default();
        tried.add(0);
        assert_eq!(pick(Balance::RoundRobin, &one, &next, &tried), None);
    }
}
