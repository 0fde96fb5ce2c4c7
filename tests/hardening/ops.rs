//! Operations under attack: reload under load (row 28), rejected configs
//! (row 29), drain with hostile connections open (row 30).

use super::{Target, exchange, rules};
use crate::support::binary::{Binary, run_cli};
use crate::support::{eventually, write_atomic};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn generation_route(n: usize) -> String {
    format!(
        "  - name: gen\n    match: {{ path_prefix: /gen }}\n    respond: {{ status: 200, body: \"gen-{n}\" }}\n"
    )
}

/// Row 28: 12 reloads (atomic renames) while two clients send requests and
/// silent sockets pile up: no request fails and every answer is one
/// generation's. (Half-written files: `reload::half_written_file_is_never_applied`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row28_reloads_under_load_fail_nothing() {
    let t = Target::start(", header_read_timeout: 2s", &generation_route(0));
    let (addr, file, backend) = (t.addr(), t.proxy.config.clone(), t.backend.addr);
    let admin = t.proxy.admin;
    let rules = |route: String| {
        rules(backend, ", header_read_timeout: 2s", &route)
            .replace("{LISTEN}", &addr.to_string())
            .replace("{ADMIN}", &admin.to_string())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let x = exchange(
                    addr,
                    b"GET /gen HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                    Duration::from_secs(2),
                )
                .await;
                let body = x.text();
                let one_gen = body
                    .rsplit("\r\n\r\n")
                    .next()
                    .is_some_and(|b| b.starts_with("gen-"));
                if x.status() == 200 && one_gen {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else if bad.fetch_add(1, Ordering::SeqCst) < 3 {
                    println!("failed: {:?} {body:?}", x.statuses());
                }
            }
        }));
    }
    let mut silent = Vec::new();
    for n in 1..=12 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
        write_atomic(&file, &rules(generation_route(n)));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let last = eventually(Duration::from_secs(2), || async {
        exchange(
            addr,
            b"GET /gen HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(1),
        )
        .await
        .text()
        .ends_with("gen-12")
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        let _ = l.await;
    }
    println!(
        "{} ok, {} failed",
        ok.load(Ordering::SeqCst),
        bad.load(Ordering::SeqCst)
    );
    assert!(last, "the last file is in effect");
    assert_eq!(bad.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) > 20);
}

/// Row 29: configs that must be refused, fast and with FILE:LINE:COL:
/// a syntax error, an unknown field (also among the new limits), a bad
/// regex, a negative weight, an alias bomb, a 10 MB file (over the 4 MiB a
/// rule file may have), a bad
/// `underscore_headers` and a zero `send_timeout`. A refused reload keeps
/// the old config serving and counts a failure; a bad config at start-up
/// exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row29_rejected_configs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let head = "upstreams:\n  u: { endpoints: [\"127.0.0.1:1\"] }\n";
    // Ten aliases deep, ten wide: 10^10 match nodes if expanded.
    let mut bomb = format!(
        "{head}routes:\n  - {{ name: r, to: u, match: {{ all: &a [{}] }} }}\n",
        ["{ method: GET }"; 10].join(", ")
    );
    for i in 0..9 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("b{}", i - 1)
        };
        let wide = vec![format!("{{ all: *{prev} }}"); 10].join(", ");
        bomb.push_str(&format!(
            "  - {{ name: r{i}, to: u, match: {{ all: &b{i} [{wide}] }} }}\n"
        ));
    }
    let big = format!(
        "{head}routes:\n{}",
        "  - { name: r, to: u }\n".repeat(450_000)
    );
    let cases: Vec<(&str, String)> = vec![
        ("syntax", format!("{head}routes: [ {{ name: a, to: u }}\n")),
        (
            "unknown field",
            format!("{head}limits: {{ send_timeouts: 5s }}\n"),
        ),
        (
            "bad regex",
            format!("{head}routes:\n  - {{ name: a, match: {{ path_regex: \"(\" }}, to: u }}\n"),
        ),
        (
            "negative weight",
            format!(
                "{head}routes:\n  - name: a\n    to: u\n    experiment:\n      variants: [{{ name: x, weight: -1 }}, {{ name: y, weight: 1 }}]\n"
            ),
        ),
        ("alias bomb", bomb),
        ("10 MB", big),
        (
            "underscore",
            format!("{head}limits: {{ underscore_headers: sometimes }}\n"),
        ),
        (
            "zero send",
            format!("{head}limits: {{ send_timeout: 0s }}\n"),
        ),
    ];
    for (what, text) in &cases {
        let f = dir.path().join("r.yaml");
        std::fs::write(&f, text).expect("write");
        let t = Instant::now();
        let (code, out, err) = run_cli(&["check", "--config", f.to_str().expect("utf-8")], None);
        let took = t.elapsed();
        let first = out
            .lines()
            .chain(err.lines())
            .find(|l| l.contains(": error:"))
            .unwrap_or("")
            .to_owned();
        println!("{what}: exit {code} in {took:?}: {first}");
        assert_eq!(code, 1, "{what}: {out}{err}");
        let place = first.split(": error:").next().unwrap_or("");
        let mut parts = place.rsplitn(3, ':');
        let (col, line) = (parts.next(), parts.next());
        assert!(
            col.is_some_and(|c| c.parse::<u32>().is_ok())
                && line.is_some_and(|l| l.parse::<u32>().is_ok()),
            "{what}: no FILE:LINE:COL in {first:?}"
        );
        assert!(took < Duration::from_secs(3), "{what}: {took:?}");
    }
    // The new keys are accepted with valid values.
    let f = dir.path().join("r.yaml");
    std::fs::write(
        &f,
        format!("{head}limits: {{ send_timeout: 1m30s, tunnel_idle_timeout: 2h, underscore_headers: reject }}\n"),
    )
    .expect("write");
    let (code, out, err) = run_cli(&["check", "--config", f.to_str().expect("utf-8")], None);
    assert_eq!(code, 0, "{out}{err}");
    // A refused reload keeps serving.
    let t = Target::start("", "");
    std::fs::write(&t.proxy.config, &cases[3].1).expect("write bad rules");
    let (status, body) = t.proxy.post_reload().await;
    assert_eq!(status, 422, "{body}");
    let x = exchange(
        t.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(x.status(), 200);
    let failures: f64 = t
        .proxy
        .metrics()
        .iter()
        .filter(|s| {
            s.name == "pointsman_config_reloads_total" && s.label("result") == Some("failure")
        })
        .map(|s| s.value)
        .sum();
    assert!(failures >= 1.0);
    // At start-up: exit 1.
    std::fs::write(&f, &cases[1].1).expect("write");
    let (code, _, err) = run_cli(&["run", "--config", f.to_str().expect("utf-8")], None);
    assert_eq!(code, 1, "{err}");
}

/// Row 30: on SIGTERM with hostile connections open (silent sockets, slow
/// readers) and a request in flight, new connections are refused, the
/// request in flight completes, and the process exits 0 within
/// `drain_timeout` plus a margin: no client can hold the drain open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row30_drain_is_bounded_by_drain_timeout() {
    let backend = crate::support::upstream::in_background(crate::support::recorder::recorder);
    let text = rules(backend.addr, "", "").replace("drain_timeout: 2s", "drain_timeout: 1500ms");
    let mut p = Binary::launch().args(&["--access-log", "off"]).start(&text);
    let mut hostile = Vec::new();
    for i in 0..10 {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut s = sock.connect(p.addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /big?n=67108864 HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .expect("write");
        }
        hostile.push(s);
    }
    let addr = p.addr;
    let slow = tokio::spawn(async move {
        exchange(
            addr,
            b"GET /slow?ms=600 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    p.signal("TERM");
    let refused = eventually(Duration::from_secs(1), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "new connections refused while draining");
    let x = slow.await.expect("join");
    assert_eq!(x.status(), 200, "{}", x.text());
    let status = p.wait_exit(Duration::from_secs(5)).await.expect("exited");
    let took = sent.elapsed();
    println!("exited {status} after {took:?}");
    assert!(status.success());
    assert!(took < Duration::from_millis(3000), "{took:?}");
    drop(hostile);
}
