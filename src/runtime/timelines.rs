//! The sampler behind the dashboard's charts (SPEC 8.1): every
//! [`BUCKET`] it takes one point of each live canary's and experiment's
//! timeline ([`crate::split::timeline`]) from the counters the request
//! path already keeps. It runs off the request path and adds nothing to it.

use super::{Live, Snapshot};
use crate::split::timeline::BUCKET;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds of `t` (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Takes one point, stamped `at_ms` (Unix ms), of every canary and
/// experiment of `snapshot`.
pub fn sample(snapshot: &Snapshot, at_ms: u64) {
    for c in snapshot.canaries() {
        c.sample(at_ms);
    }
    for e in snapshot.experiments.iter() {
        e.tally.sample(at_ms);
    }
}

/// Samples the serving snapshot every [`BUCKET`] until `live` is dropped.
pub fn spawn_sampler(live: &Arc<Live>) -> tokio::task::JoinHandle<()> {
    let live = Arc::downgrade(live);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + BUCKET;
        let mut interval = tokio::time::interval_at(start, BUCKET);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(live) = live.upgrade() else {
                return;
            };
            sample(&live.snapshot(), unix_ms(SystemTime::now()));
        }
    })
}
