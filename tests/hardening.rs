//! The hostile suite (issue 14): the real binary attacked from outside over
//! loopback with raw sockets and hand-built HTTP/2, covering the rows of
//! `RELIABILITY.md` section 2 that fit CI time on 2 cores, and SPEC 5.1.
//! Every test names its row in its doc comment. The backend is a
//! [`Recorder`] that parses framing itself and keeps every request it got,
//! so "nothing smuggled" is checked on what actually arrived.
//!
//! - [`framing`]: smuggling and framing (rows 1-6), TRACE/CONNECT;
//! - [`edge`]: Host and path confusion, header limits, hop-by-hop abuse,
//!   forwarded-header spoofing (rows 8, 9, 11-13);
//! - [`slow`]: silent and slow clients, slow readers, idle tunnels at
//!   reduced scale (rows 6, 18-21), with short limits in their own rules;
//! - [`h2flood`]: HTTP/2 floods and the 20 ms isolation promise (row 22);
//! - [`faults`]: upstream faults and pool poisoning (rows 24-27);
//! - [`ops`]: reload under attack, rejected configs, drain (rows 28-30).

use crate::support::binary::Binary;
use crate::support::prom::Sample;
use crate::support::recorder::{Recorder, recorder};
use crate::support::upstream::in_background;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod edge;
mod faults;
mod framing;
mod h2flood;
mod ops;
mod slow;

/// Held by the tests that measure another client's latency (and by the
/// flood that would skew them), so that they do not measure each other.
pub static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The proxy in front of a recorder: routes `/blockedz` and `/admin` to a
/// local 403, `internal.example` to a local 403, everything else to the
/// recorder. `limits` are the entries of the `limits` mapping.
pub struct Target {
    pub proxy: Binary,
    pub backend: Recorder,
}

/// The rule file of a [`Target`] for a backend at `backend`.
pub fn rules(backend: SocketAddr, limits: &str, extra: &str) -> String {
    format!(
        r#"listen:
  - bind: "{{LISTEN}}"
admin: {{ bind: "{{ADMIN}}" }}
upstreams:
  rec: {{ endpoints: ["{backend}"], connect_timeout: 500ms, request_timeout: 5s }}
routes:
  - name: treasure
    match: {{ path_prefix: /blockedz }}
    respond: {{ status: 403, body: "denied" }}
  - name: admin
    match: {{ path_prefix: /admin }}
    respond: {{ status: 403, body: "denied" }}
  - name: internal
    match: {{ host: internal.example }}
    respond: {{ status: 403, body: "internal" }}
  - name: lan
    match: {{ client_ip: 10.0.0.0/8 }}
    respond: {{ status: 403, body: "lan only" }}
{extra}  - name: all
    to: rec
limits: {{ drain_timeout: 2s{limits} }}
"#
    )
}

impl Target {
    /// A recorder (on a runtime of its own, so a blocked test cannot stall
    /// it) and the proxy in front of it with extra `limits` entries (each
    /// starting with `, `) and extra routes.
    pub fn start(limits: &str, extra_routes: &str) -> Target {
        let backend = in_background(recorder);
        let proxy = Binary::launch()
            .args(&["--access-log", "off", "--threads", "2"])
            .log_filter("warn")
            .start(&rules(backend.addr, limits, extra_routes));
        Target { proxy, backend }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// The sum of `pointsman_upstream_errors_total`.
    pub fn upstream_errors(&self) -> f64 {
        sum(&self.proxy.metrics(), "pointsman_upstream_errors_total")
    }

    /// VmRSS of the proxy, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.proxy.child.id())
    }
}

/// The sum of every sample of `name`.
pub fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// VmRSS of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What a raw exchange got back.
#[derive(Debug)]
pub struct Exchange {
    pub bytes: Vec<u8>,
    /// The proxy closed the connection (EOF or reset) within the wait.
    pub closed: bool,
    /// Time until the close (or the end of the wait).
    pub elapsed: Duration,
}

impl Exchange {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
    /// The status code of every response, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("HTTP/1.1 ") {
            let code = rest[i + 9..].get(..3).and_then(|c| c.parse::<u16>().ok());
            out.extend(code);
            rest = &rest[i + 9..];
        }
        out
    }
    /// The first status code (0 when none).
    pub fn status(&self) -> u16 {
        self.statuses().first().copied().unwrap_or(0)
    }
}

/// Writes `bytes` on a new connection and reads until the proxy closes it
/// or `wait` passes.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Exchange {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    // The proxy may close before reading everything: a write error is
    // part of the answer.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let closed = loop {
        match tokio::time::timeout_at((start + wait).into(), s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    Exchange {
        bytes: out,
        closed,
        elapsed: start.elapsed(),
    }
}

/// Latencies of sequential `GET /probe` requests on one keep-alive
/// connection (a client minding its own business), in ms, sorted.
pub async fn probe(addr: SocketAddr, n: usize, gap: Duration) -> Vec<f64> {
    let mut s = TcpStream::connect(addr).await.expect("probe connect");
    s.set_nodelay(true).expect("nodelay");
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"GET /probe HTTP/1.1\r\nHost: probe.example\r\n\r\n")
            .await
            .expect("probe write");
        let mut got = Vec::new();
        // The recorder answers `ok` with a Content-Length of 2.
        while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok")) {
            let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("probe answered within 10 s")
                .expect("probe read");
            assert!(k > 0, "probe connection closed");
            got.extend_from_slice(&buf[..k]);
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(gap).await;
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Whether the proxy under test is an optimized build (`POINTSMAN_TEST_BIN`,
/// e.g. `target/release/pointsman`) rather than the debug build `cargo
/// test` makes, whose HTTP/2 frame handling is about ten times slower.
pub fn optimized() -> bool {
    std::env::var_os("POINTSMAN_TEST_BIN").is_some()
}

/// The isolation promise (SPEC 5.1) on probe latencies measured before
/// and during an attack: another client waits at most 20 ms longer. Held
/// on the p90 against an optimized binary. The debug build spends ten
/// times the CPU per frame and shares two cores with the attacker and the
/// other tests: one read slice of a PING flood (16 KiB, about 1,000
/// frames, see `server::conn`) alone takes it about 20 ms, so it is held
/// to 50 ms on the median, which still fails a flood that holds a worker
/// beyond its slice (about a second before there was one). Returns the
/// added ms on (p50, p90), printed by the caller.
pub fn assert_isolated(what: &str, base: &[f64], during: &[f64]) -> (f64, f64) {
    let p50 = quantile(during, 0.5) - quantile(base, 0.5);
    let p90 = quantile(during, 0.9) - quantile(base, 0.9);
    let (added, which, limit) = if optimized() {
        (p90, "p90", 20.0)
    } else {
        (p50, "p50", 50.0)
    };
    assert!(
        added < limit,
        "{what} delayed another client by {added:.1} ms ({which})"
    );
    (p50, p90)
}

/// The `q` quantile (0-1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
