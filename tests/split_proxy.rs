//! Experiments and canaries through the real binary (`pointsman run`) with
//! real upstreams on 127.0.0.1:0:
//!
//! - `sticky_by_header_matches_assign_and_counts`: same `x-user-id`, same
//!   upstream; `pointsman assign` agrees; `x-pointsman-variant` reaches the
//!   upstream only when enrolled; `/experiments` counts and SRM fields.
//! - `sticky_by_minted_cookie`: the minted `pm_uid` cookie keeps the variant.
//! - `namespaces_exclude_each_other`: disjoint slices never share an id.
//! - `forcing_needs_allow_force`: header and `pm_force`, experiment and canary.
//! - `canary_progresses_through_short_steps`: weights seen via `/canaries`
//!   and traffic; the start-up warning without `state_file`.
//! - `failing_canary_rolls_back_and_stable_keeps_serving`: the guard.
//! - `operator_actions_answer_200_404_409`.
//! - `rollback_survives_a_restart_with_state_file`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// === test upstreams ===

/// An upstream answering `200 NAME` (or 500 when `fail` is set) and echoing
/// the `x-pointsman-variant` it received as `x-seen-variant`.
struct Upstream {
    addr: SocketAddr,
    fail: Arc<AtomicBool>,
}

async fn upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let f = fail.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let f = f.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    let fail = f.load(Ordering::SeqCst);
                    async move {
                        let seen = req
                            .headers()
                            .get("x-pointsman-variant")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_owned();
                        let resp = hyper::Response::builder()
                            .status(if fail { 500 } else { 200 })
                            .header("x-seen-variant", seen)
                            .body(Full::new(Bytes::from(name)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, fail }
}

// === the proxy process ===

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `pointsman run` child; killed on drop.
struct Proxy {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Writes `body` (rule text without `listen`/`admin`) under fresh ports to
/// `dir/rules.yaml` and starts the binary on it; waits for `/readyz`.
async fn start(dir: &Path, body: &str) -> Proxy {
    let (lp, ap) = (free_port(), free_port());
    let config = dir.join("rules.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  - bind: \"127.0.0.1:{lp}\"\nadmin:\n  bind: \"127.0.0.1:{ap}\"\n{body}"
        ),
    )
    .unwrap();
    let log = dir.join(format!("run-{lp}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_pointsman"))
        .args(["run", "--access-log", "off", "--config"])
        .arg(&config)
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ))
        .spawn()
        .unwrap();
    let p = Proxy {
        child,
        listen: ([127, 0, 0, 1], lp).into(),
        admin: ([127, 0, 0, 1], ap).into(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = try_get(p.admin, "GET", "/readyz", &[]).await
            && r.status == 200
        {
            return p;
        }
        assert!(Instant::now() < deadline, "proxy not ready:\n{}", p.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === a minimal HTTP/1.1 client ===

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn try_get(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("content-length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_owned(),
    })
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    try_get(addr, "GET", path, headers).await.unwrap()
}

async fn post(addr: SocketAddr, path: &str) -> Resp {
    try_get(addr, "POST", path, &[]).await.unwrap()
}

async fn canary_view(p: &Proxy, name: &str) -> Value {
    let all = get(p.admin, "/canaries", &[]).await.json();
    all["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap()
}

async fn experiment_stats(p: &Proxy, name: &str) -> Value {
    let all = get(p.admin, "/experiments", &[]).await.json();
    all["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap()
}

fn upstreams(a: &Upstream, b: &Upstream) -> String {
    format!(
        "upstreams:\n  a: {{ endpoints: [\"{}\"] }}\n  b: {{ endpoints: [\"{}\"] }}\n",
        a.addr, b.addr
    )
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_by_header_matches_assign_and_counts() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    let p = start(
        dir.path(),
        &format!(
            "{}experiments:
  exp:
    sticky_on: [header:x-user-id]
    variants:
      - {{ name: control, weight: 1 }}
      - {{ name: treat, weight: 1, to: b }}
routes:
  - name: r
    match: {{ path_prefix: /exp }}
    to: a
    experiment: exp
",
            upstreams(&a, &b)
        ),
    )
    .await;
    let ids: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let mut seen: HashMap<String, String> = HashMap::new();
    for id in &ids {
        for _ in 0..3 {
            let r = get(p.listen, "/exp/x", &[("x-user-id", id)]).await;
            assert_eq!(r.status, 200);
            let variant = r.header("x-seen-variant").unwrap().to_owned();
            let want_body = if variant == "exp=treat" { "b" } else { "a" };
            assert_eq!(r.body, want_body, "{id}: {variant}");
            assert!(
                r.header("set-cookie").is_none(),
                "sticky_on given: no cookie"
            );
            let first = seen.entry(id.clone()).or_insert(variant.clone());
            assert_eq!(*first, variant, "{id} moved");
        }
    }
    // `pointsman assign` prints the same variant for each id.
    let out = Command::new(env!("CARGO_BIN_EXE_pointsman"))
        .args(["assign", "--experiment", "exp", "--config"])
        .arg(dir.path().join("rules.yaml"))
        .args(&ids)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert_eq!(seen[f[0]], format!("exp={}", f[1]), "{line}");
        assert_eq!(f[2].split('.').nth(1).map(str::len), Some(4), "{line}");
    }
    assert_eq!(text.lines().count(), ids.len());
    // Not enrolled (no id): the route's `to`, no variant header, not counted.
    let r = get(p.listen, "/exp/x", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "a"));
    assert_eq!(r.header("x-seen-variant"), Some("none"));
    let stats = experiment_stats(&p, "exp").await;
    assert_eq!(stats["total"], 60, "{stats}");
    let counted: u64 = stats["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["assignments"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 60);
    assert_eq!(stats["variants"][1]["share"], 0.5);
    assert!(stats["p_value"].is_number(), "{stats}");
    assert!(stats["srm"].is_boolean(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_by_minted_cookie() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    let p = start(
        dir.path(),
        &format!(
            "{}experiments:
  exp:
    variants:
      - {{ name: control, weight: 1 }}
      - {{ name: treat, weight: 1, to: b }}
routes:
  - name: r
    to: a
    experiment: exp
",
            upstreams(&a, &b)
        ),
    )
    .await;
    for _ in 0..5 {
        let first = get(p.listen, "/", &[]).await;
        let cookie = first.header("set-cookie").expect("a minted cookie");
        let (pair, attrs) = cookie.split_once(';').unwrap();
        assert_eq!(
            attrs, " Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
            "{cookie}"
        );
        let id = pair.strip_prefix("pm_uid=").unwrap();
        assert!(id.len() >= 16, "at least 96 bits: {id}");
        let variant = first.header("x-seen-variant").unwrap().to_owned();
        assert!(variant.starts_with("exp="), "{variant}");
        for _ in 0..3 {
            let again = get(p.listen, "/", &[("cookie", pair)]).await;
            assert_eq!(again.header("x-seen-variant"), Some(variant.as_str()));
            assert_eq!(again.header("set-cookie"), None, "no new cookie");
            assert_eq!(again.body, first.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_exclude_each_other() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    let exp = |ns: &str| {
        format!(
            "    sticky_on: [header:x-user-id]\n    namespace: [{ns}]\n    variants: [{{ name: on, weight: 1, to: b }}]\n"
        )
    };
    let p = start(
        dir.path(),
        &format!(
            "{}experiments:\n  left:\n{}  right:\n{}routes:
  - name: r1
    match: {{ path_prefix: /left }}
    to: a
    experiment: left
  - name: r2
    match: {{ path_prefix: /right }}
    to: a
    experiment: right
",
            upstreams(&a, &b),
            exp("shared, 0, 0.5"),
            exp("shared, 0.5, 1")
        ),
    )
    .await;
    let (mut left, mut right) = (0, 0);
    for i in 0..100 {
        let id = format!("ns-user-{i}");
        let l = get(p.listen, "/left", &[("x-user-id", &id)]).await;
        let r = get(p.listen, "/right", &[("x-user-id", &id)]).await;
        let in_l = l.header("x-seen-variant") == Some("left=on");
        let in_r = r.header("x-seen-variant") == Some("right=on");
        assert!(!(in_l && in_r), "{id} is in both");
        assert!(in_l || in_r, "{id}: the slices cover the namespace");
        left += usize::from(in_l);
        right += usize::from(in_r);
    }
    assert!(left > 20 && right > 20, "{left} / {right}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_needs_allow_force() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    let exp = |force: bool| {
        format!(
            "    sticky_on: [header:x-user-id]\n    allow_force: {force}\n    variants: [{{ name: control, weight: 1 }}, {{ name: treat, weight: 1, to: b }}]\n"
        )
    };
    let p = start(
        dir.path(),
        &format!(
            "{}experiments:\n  open:\n{}  closed:\n{}routes:
  - name: r1
    match: {{ path_prefix: /open }}
    to: a
    experiment: open
  - name: r2
    match: {{ path_prefix: /closed }}
    to: a
    experiment: closed
  - name: shop
    match: {{ path_prefix: /shop }}
    canary: {{ stable: a, canary: b, weight: 0, allow_force: true, sticky_on: [header:x-user-id] }}
",
            upstreams(&a, &b),
            exp(true),
            exp(false)
        ),
    )
    .await;
    let r = get(p.listen, "/open", &[("x-pointsman-force", "open=treat")]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("b", Some("open=treat"))
    );
    let r = get(p.listen, "/open?pm_force=open%3Dcontrol", &[]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("a", Some("open=control"))
    );
    // Without allow_force the force is ignored: no id, not enrolled.
    let r = get(
        p.listen,
        "/closed",
        &[("x-pointsman-force", "closed=treat")],
    )
    .await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("a", Some("none"))
    );
    let r = get(p.listen, "/closed?pm_force=closed%3Dtreat", &[]).await;
    assert_eq!(r.header("x-seen-variant"), Some("none"));
    // A canary at weight 0 forced onto its canary arm.
    let r = get(p.listen, "/shop", &[("x-pointsman-force", "shop=canary")]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("b", Some("shop=canary"))
    );
    let r = get(p.listen, "/shop", &[("x-user-id", "u1")]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("a", Some("shop=stable"))
    );
    // Forced requests are not counted.
    assert_eq!(experiment_stats(&p, "open").await["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_progresses_through_short_steps() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    let p = start(
        dir.path(),
        &format!(
            "{}routes:
  - name: shop
    canary:
      stable: a
      canary: b
      sticky_on: [header:x-user-id]
      steps:
        - {{ weight: 0, hold: 1s }}
        - {{ weight: 50, hold: 600ms }}
        - {{ weight: 100 }}
",
            upstreams(&a, &b)
        ),
    )
    .await;
    assert!(
        p.log().contains("no state_file"),
        "start-up warning:\n{}",
        p.log()
    );
    let mut weights = Vec::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let before = canary_view(&p, "shop").await;
        let id = format!("c-{n}");
        n += 1;
        let r = get(p.listen, "/", &[("x-user-id", &id)]).await;
        let after = canary_view(&p, "shop").await;
        let w = before["weight"].as_f64().unwrap();
        if before["weight"] == after["weight"] {
            // Weight 0: everyone stable; 100: everyone canary.
            if w == 0.0 {
                assert_eq!(r.header("x-seen-variant"), Some("shop=stable"));
            } else if w == 100.0 {
                assert_eq!(r.header("x-seen-variant"), Some("shop=canary"));
            }
        }
        if weights.last() != Some(&w) {
            weights.push(w);
        }
        if after["state"] == "promoted" {
            break;
        }
        assert_eq!(after["state"], "progressing", "{after}");
        assert!(Instant::now() < deadline, "stuck at {after}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let last = canary_view(&p, "shop").await;
    assert_eq!(
        (last["weight"].as_f64(), last["step"].as_u64()),
        (Some(100.0), Some(2))
    );
    if !weights.ends_with(&[100.0]) {
        weights.push(100.0);
    }
    assert_eq!(weights, [0.0, 50.0, 100.0]);
    for i in 0..10 {
        let r = get(p.listen, "/", &[("x-user-id", &format!("late-{i}"))]).await;
        assert_eq!(
            (r.body.as_str(), r.header("x-seen-variant")),
            ("b", Some("shop=canary"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_rolls_back_and_stable_keeps_serving() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    b.fail.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let p = start(
        dir.path(),
        &format!(
            "{}routes:
  - name: shop
    canary:
      stable: a
      canary: b
      weight: 50
      sticky_on: [header:x-user-id]
      guard: {{ window: 10s, min_requests: 5, max_error_rate: 0.2 }}
",
            upstreams(&a, &b)
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        let r = get(p.listen, "/", &[("x-user-id", &format!("g-{i}"))]).await;
        i += 1;
        match r.header("x-seen-variant") {
            Some("shop=stable") => assert_eq!((r.status, r.body.as_str()), (200, "a")),
            Some("shop=canary") => assert_eq!(r.status, 500),
            other => panic!("{other:?}"),
        }
        let v = canary_view(&p, "shop").await;
        if v["state"] == "rolled_back" {
            assert_eq!(v["weight"], 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no rollback: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p.log().contains("guard breached"), "{}", p.log());
    for i in 0..20 {
        let r = get(p.listen, "/", &[("x-user-id", &format!("after-{i}"))]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "a"));
        assert_eq!(r.header("x-seen-variant"), Some("shop=stable"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_answer_200_404_409() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    let p = start(
        dir.path(),
        &format!(
            "{}routes:\n  - name: shop\n    canary: {{ stable: a, canary: b, weight: 20 }}\n",
            upstreams(&a, &b)
        ),
    )
    .await;
    let act = |action: &'static str| {
        let admin = p.admin;
        async move { post(admin, &format!("/canaries/shop/{action}")).await }
    };
    let r = act("pause").await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("paused"))
    );
    assert_eq!(act("pause").await.status, 409);
    let r = act("resume").await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("static"))
    );
    assert_eq!(r.json()["weight"], 20.0);
    assert_eq!(act("resume").await.status, 409);
    let r = act("promote").await;
    assert_eq!((r.status, r.json()["weight"].as_f64()), (200, Some(100.0)));
    assert_eq!(act("promote").await.status, 409);
    let r = act("rollback").await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("rolled_back"))
    );
    assert_eq!(act("rollback").await.status, 409);
    assert_eq!(post(p.admin, "/canaries/nope/pause").await.status, 404);
    assert_eq!(post(p.admin, "/canaries/shop/explode").await.status, 404);
    let v = canary_view(&p, "shop").await;
    assert_eq!(
        (v["state"].as_str(), v["weight"].as_f64()),
        (Some("rolled_back"), Some(0.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_survives_a_restart_with_state_file() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "state_file: state/canary.json\n{}routes:
  - name: shop
    canary:
      stable: a
      canary: b
      steps: [{{ weight: 10, hold: 1h }}, {{ weight: 100 }}]
      guard: {{ min_requests: 50, max_error_rate: 0.5 }}
",
        upstreams(&a, &b)
    );
    let p = start(dir.path(), &rules).await;
    assert!(!p.log().contains("no state_file"), "{}", p.log());
    assert_eq!(post(p.admin, "/canaries/shop/rollback").await.status, 200);
    let saved = std::fs::read_to_string(dir.path().join("state/canary.json")).unwrap();
    assert!(saved.contains("\"rolled_back\""), "{saved}");
    drop(p);
    let p = start(dir.path(), &rules).await;
    let v = canary_view(&p, "shop").await;
    assert_eq!(
        (v["state"].as_str(), v["weight"].as_f64()),
        (Some("rolled_back"), Some(0.0))
    );
    let r = get(p.listen, "/", &[("cookie", "pm_uid=anyone")]).await;
    assert_eq!(r.header("x-seen-variant"), Some("shop=stable"));
    drop(p);
    // A changed definition starts afresh.
    let p = start(dir.path(), &rules.replace("weight: 10,", "weight: 20,")).await;
    let v = canary_view(&p, "shop").await;
    assert_eq!(
        (v["state"].as_str(), v["weight"].as_f64()),
        (Some("progressing"), Some(20.0))
    );
}
