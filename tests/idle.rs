//! An idle proxy sleeps: with no traffic, none of its threads is woken
//! more than a few times a second (NGINX's workers are not woken at all).
//! Measured from outside, in the context switches of every thread of the
//! process (`/proc/PID/task/*/status`).

use crate::support::binary::Binary;
use crate::support::http::get;
use std::collections::BTreeMap;
use std::time::Duration;

/// Each thread's name and context switches (voluntary and not) so far, by
/// thread id.
fn switches(pid: u32) -> BTreeMap<String, (String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            Some((t.file_name().to_string_lossy().into_owned(), status))
        })
        .map(|(tid, status)| {
            let name = status
                .lines()
                .find_map(|l| l.strip_prefix("Name:"))
                .unwrap_or("?")
                .trim()
                .to_owned();
            let n = status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .sum();
            (tid, (name, n))
        })
        .collect()
}

/// With the access log on and a request served (so the log writer, the
/// connection sweeper and the request path have all run), the process
/// then sits idle: at most 6 wake-ups in 3 s, all threads together (the
/// dashboard's sampler, every 10 s, may fall in them). The log writer
/// alone woke 300 times (every 10 ms), the canary driver 24 (every 250 ms,
/// and no canary configured) and the connection sweeper 6 (every second)
/// before they learnt to sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_is_not_woken() {
    let p = Binary::start(
        "listen:\n  - bind: \"{LISTEN}\"\nadmin:\n  bind: \"{ADMIN}\"\nroutes:\n  - name: hello\n    respond: { status: 200, body: hi }\n",
    );
    let r = get(p.addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(p.log_text().contains("method=GET"), "{}", p.log_text());
    // Past the log writer's quiet second and the client connection's close.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let pid = p.child.id();
    let before = switches(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = switches(pid);
    // A thread that ended meanwhile (tokio's blocking pool lets idle ones
    // go) is left out; a new one counts whole.
    let woken: u64 = after
        .iter()
        .map(|(tid, (_, n))| n - before.get(tid).map_or(0, |b| b.1.min(*n)))
        .sum();
    assert!(!before.is_empty());
    assert!(
        woken <= 6,
        "{woken} wake-ups in 3 s of idle; per thread, before and after: {before:?} {after:?}"
    );
}
