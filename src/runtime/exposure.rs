//! The exposure log (SPEC 3.1): one JSON line per first exposure of a user
//! to an experiment variant or a canary arm, shaped like GrowthBook's
//! `experiment_viewed` events so a warehouse loads it as it is.
//!
//! The request path only pushes a record into a bounded lock-free queue
//! (dropped and counted when full, never waited on; it takes memory only
//! as records wait, not 13 MB up front for a log that may be off); a thread of its own
//! formats the lines and appends them to the file, one `write` per line
//! (a line is never written half). The file is reopened on SIGUSR1 and on
//! every reload (logrotate's habit).

use crate::bounded::BoundedQueue;
use crate::clock::rfc3339_millis;
use crate::idle_park::IdlePark;
use crate::logging::WRITE_INTERVAL;
use http::HeaderValue;
use prometheus::IntCounter;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, SystemTime};

/// Records waiting for the writer at most; more are dropped (counted).
pub const QUEUE: usize = 65_536;

pub use crate::compile::settings::ExposureTarget;

/// One first exposure, as the request path hands it over.
#[derive(Debug)]
pub struct ExposureRecord {
    /// When it happened.
    pub at: SystemTime,
    /// The experiment's name, or the canary's route name.
    pub experiment: Arc<str>,
    /// The variant, or `stable` / `canary`.
    pub variant: Arc<str>,
    /// The sticky id.
    pub user: String,
    /// Where it came from (`cookie:pm_uid`).
    pub source: String,
    /// The hash seed (for `hash_ids`).
    pub seed: Arc<str>,
    /// The GrowthBook hash version.
    pub hash_version: u32,
    /// The id's bucket.
    pub bucket: f64,
    /// The route that served.
    pub route: Arc<str>,
    /// The request id.
    pub request_id: HeaderValue,
}

/// The exposure log: configured by each linked config, written by a
/// background thread.
#[derive(Debug)]
pub struct ExposureLog {
    shared: Arc<Shared>,
    writer: OnceLock<Thread>,
}

#[derive(Debug)]
struct Shared {
    /// At most [`QUEUE`] records, allocated as they arrive.
    queue: BoundedQueue<ExposureRecord>,
    /// The writer's wait between drains.
    park: IdlePark,
    target: arc_swap::ArcSwapOption<ExposureTarget>,
    reopen: AtomicBool,
    logged: Option<IntCounter>,
    dropped: Option<IntCounter>,
    replica: String,
}

impl ExposureLog {
    /// A log that writes nothing until configured; `counters` are
    /// `pointsman_exposures_logged_total` and `_dropped_total`.
    pub fn new(counters: Option<(IntCounter, IntCounter)>) -> Self {
        let (logged, dropped) = counters.unzip();
        ExposureLog {
            shared: Arc::new(Shared {
                queue: BoundedQueue::new(QUEUE),
                park: IdlePark::new(WRITE_INTERVAL),
                target: Default::default(),
                reopen: AtomicBool::new(false),
                logged,
                dropped,
                replica: replica_name(),
            }),
            writer: OnceLock::new(),
        }
    }

    /// Takes the setting of a newly linked config (`None`: log nothing) and
    /// reopens the file.
    pub fn configure(&self, target: Option<ExposureTarget>) {
        let on = target.is_some();
        self.shared.target.store(target.map(Arc::new));
        self.reopen();
        if on {
            self.writer();
        }
    }

    /// Whether a log is configured.
    pub fn enabled(&self) -> bool {
        self.shared.target.load().is_some()
    }

    /// Closes and reopens the file (SIGUSR1, after logrotate moved it).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Queues a record; when the queue is full it is dropped and counted.
    /// The writer is not woken (that would be a system call on the serving
    /// thread): it looks every [`WRITE_INTERVAL`], sooner at half full,
    /// unless it went quiet ([`IdlePark`]): the first record after a quiet
    /// second wakes it.
    pub fn push(&self, record: ExposureRecord) {
        if self.shared.queue.push(record).is_err() {
            if let Some(c) = &self.shared.dropped {
                c.inc();
            }
            return;
        }
        if let Some(t) = self.writer.get() {
            self.shared.park.pushed(t, self.shared.queue.len(), QUEUE);
        }
    }

    /// Waits (up to `timeout`) until every queued record is written.
    pub fn flush(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while !self.shared.queue.is_empty() && std::time::Instant::now() < deadline {
            if let Some(t) = self.writer.get() {
                t.unpark();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn writer(&self) -> &Thread {
        self.writer.get_or_init(|| {
            let shared = self.shared.clone();
            match std::thread::Builder::new()
                .name("pointsman-exposures".into())
                .spawn(move || write_loop(&shared))
            {
                Ok(handle) => handle.thread().clone(),
                Err(e) => {
                    tracing::error!("cannot start the exposure log writer: {e}");
                    std::thread::current()
                }
            }
        })
    }
}

/// The writer thread: every [`WRITE_INTERVAL`] while records come, or
/// when woken (a record after a quiet spell, a reopen, a new config),
/// reopens when asked and drains the queue line by line. Never ends (the
/// process owns one log).
fn write_loop(shared: &Shared) {
    let mut out: Option<(Arc<ExposureTarget>, Box<dyn Write + Send>)> = None;
    loop {
        shared
            .park
            .wait(|| shared.queue.is_empty() && !shared.reopen.load(Ordering::Acquire));
        if shared.reopen.swap(false, Ordering::AcqRel) {
            out = None;
        }
        let Some(target) = shared.target.load_full() else {
            // Disabled: records queued before are dropped quietly.
            let mut found = false;
            while shared.queue.pop().is_some() {
                found = true;
            }
            shared.park.drained(found);
            out = None;
            continue;
        };
        if out.as_ref().is_none_or(|(t, _)| *t != target) {
            out = open(&target).map(|w| (target.clone(), w));
        }
        let Some((target, w)) = out.as_mut() else {
            // Not open: tried again at the next drain while records wait,
            // else when the next one comes.
            shared.park.drained(!shared.queue.is_empty());
            continue;
        };
        let mut wrote = false;
        let mut found = false;
        while let Some(r) = shared.queue.pop() {
            found = true;
            let line = format_line(&r, target.hash_ids, &shared.replica);
            match w.write_all(line.as_bytes()) {
                Ok(()) => {
                    wrote = true;
                    if let Some(c) = &shared.logged {
                        c.inc();
                    }
                }
                Err(e) => {
                    tracing::error!("cannot write the exposure log: {e}");
                    if let Some(c) = &shared.dropped {
                        c.inc();
                    }
                }
            }
        }
        if wrote && let Err(e) = w.flush() {
            tracing::error!("cannot write the exposure log: {e}");
        }
        shared.park.drained(found);
    }
}

fn open(target: &ExposureTarget) -> Option<Box<dyn Write + Send>> {
    let Some(path) = &target.path else {
        return Some(Box::new(std::io::LineWriter::new(std::io::stdout())));
    };
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // Buffered per batch: each line goes out in one write (lines are
        // far smaller than the buffer).
        Ok(f) => Some(Box::new(std::io::BufWriter::with_capacity(1 << 16, f))),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot open the exposure log: {e}");
            None
        }
    }
}

/// One `experiment_viewed`-shaped JSON line.
fn format_line(r: &ExposureRecord, hash_ids: bool, replica: &str) -> String {
    let user = if hash_ids {
        let mut h = Sha256::new();
        h.update(r.seed.as_bytes());
        h.update(r.user.as_bytes());
        hex::encode(h.finalize())
    } else {
        r.user.clone()
    };
    let mut line = serde_json::json!({
        "timestamp": rfc3339_millis(r.at),
        "experiment_id": &*r.experiment,
        "variation_id": &*r.variant,
        "user_id": user,
        "id_source": r.source,
        "hash_version": r.hash_version,
        "bucket": (r.bucket * 10_000.0).round() / 10_000.0,
        "route": &*r.route,
        "request_id": r.request_id.to_str().unwrap_or(""),
        "replica": replica,
    })
    .to_string();
    line.push('\n');
    line
}

/// This replica's name: `$HOSTNAME`, else the kernel's host name.
pub fn replica_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str) -> ExposureRecord {
        ExposureRecord {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            experiment: "checkout".into(),
            variant: "redesign".into(),
            user: user.into(),
            source: "cookie:pm_uid".into(),
            seed: "checkout".into(),
            hash_version: 2,
            bucket: 0.431_234,
            route: "checkout".into(),
            request_id: HeaderValue::from_static("req-1"),
        }
    }

    #[test]
    fn lines_have_growthbooks_fields() {
        let line = format_line(&record("alice"), false, "edge-1");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["experiment_id"], "checkout");
        assert_eq!(v["variation_id"], "redesign");
        assert_eq!(v["user_id"], "alice");
        assert_eq!(v["id_source"], "cookie:pm_uid");
        assert_eq!(v["hash_version"], 2);
        assert_eq!(v["bucket"], 0.4312);
        assert_eq!(v["route"], "checkout");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["replica"], "edge-1");
        let hashed = format_line(&record("alice"), true, "edge-1");
        let v: serde_json::Value = serde_json::from_str(&hashed).unwrap();
        let want = hex::encode(Sha256::digest(b"checkoutalice"));
        assert_eq!(v["user_id"], want);
    }

    #[test]
    fn writes_appends_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exposures.jsonl");
        let log = ExposureLog::new(None);
        log.configure(Some(ExposureTarget {
            path: Some(path.clone()),
            hash_ids: false,
        }));
        log.push(record("a"));
        log.flush(Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(300));
        // Rotated away, then reopened: the next line starts a new file.
        let rotated = dir.path().join("exposures.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.push(record("b"));
        log.flush(Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(300));
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 1, "{old}");
        assert_eq!(new.lines().count(), 1, "{new}");
        assert!(new.contains("\"user_id\":\"b\""));
    }
}
