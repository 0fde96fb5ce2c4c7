//! Upstream health (issue 12, SPEC 6 and 6.1) against real sockets:
//!
//! - `*_leaves_rotation_and_comes_back`: an endpoint that fails `/healthz`,
//!   answers 500, closes before answering, refuses connections or
//!   blackholes leaves rotation within `interval × unhealthy_after` + 1 s
//!   and returns within `interval × healthy_after` + 1 s.
//! - `consecutive_faults_eject_for_a_growing_time`,
//!   `ejection_stops_at_max_ejected_percent`: with ejection on, fewer than
//!   `consecutive_failures` + 2 requests fail per bad endpoint.
//! - `a_single_endpoint_is_not_retried`
//! - `last_endpoint_down_is_503_no_healthy_upstream`,
//!   `failover_takes_unhealthy_and_unsent_streamed_requests`
//! - `check_explain_assign_and_diff_send_no_probe`
//! - `probes_go_over_h2_and_tls`
//! - `health_survives_a_reload_and_checks_stop_with_their_upstream` (the
//!   binary: `/upstreams`, metrics, logs, reloads)
//! - `failures_are_counted_per_attempt_logged_and_rate_limited` (the
//!   binary)
//! - `malformed_chunked_bodies_cannot_roll_a_canary_back` (the binary)

use crate::support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::binary::{Binary, free_port, local};
use support::http::get;
use support::prom::{self, Sample};
use support::upstream::{Health, Switch};
use support::{Mode, Rules, Running, eventually, start, upstream};

/// Checks every 100 ms; 2 failures take an endpoint out, 2 passes bring it
/// back: out within 1.2 s, back within 1.2 s (SPEC 6.1's bound).
const CHECK: &str = "health_check: { path: /healthz, interval: 100ms, timeout: 100ms, \
                     unhealthy_after: 2, healthy_after: 2 }";
const BOUND: Duration = Duration::from_millis(100 * 2 + 1000);

/// A port nothing listens on.
fn dead() -> SocketAddr {
    local(free_port())
}

/// What `GET /upstreams` would show of upstream `id`, in-process.
fn view(p: &Running, id: usize) -> Value {
    let snapshot = p.live.snapshot();
    let u = snapshot.upstream(id).expect("an upstream");
    serde_json::to_value(u.view()).expect("JSON")
}

fn serving(p: &Running, id: usize, endpoint: usize) -> bool {
    view(p, id)["endpoints"][endpoint]["serving"] == true
}

/// `n` GETs in turn: the bodies of the answers, "502"-style for errors.
async fn bodies(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = get(addr, "/", &[]).await;
        out.push(if r.status == 200 {
            r.body
        } else {
            r.status.to_string()
        });
    }
    out
}

// === active checks ===

async fn leaves_rotation_and_comes_back(mode: Health) {
    let good = Switch::start("good").await;
    let bad = Switch::start("bad").await;
    let extra = format!("retries: 0, request_timeout: 300ms, {CHECK}");
    let p = start(
        Rules::new()
            .upstream_with("pair", &[good.addr, bad.addr], &extra)
            .route("name: all, to: pair"),
    )
    .await;
    assert!(
        eventually(BOUND, || async { bad.probes() > 0 && good.probes() > 0 }).await,
        "no probes"
    );
    assert!(serving(&p, 0, 1));
    assert_eq!(
        *bad.probe_agent.lock().unwrap(),
        Some("pointsman-health".into())
    );

    bad.set(mode).await;
    let t = Instant::now();
    assert!(
        eventually(BOUND, || async { !serving(&p, 0, 1) }).await,
        "{mode:?}: still in rotation after {:?}: {}",
        t.elapsed(),
        view(&p, 0)
    );
    let v = view(&p, 0);
    assert_eq!(v["endpoints"][1]["healthy"], false, "{v}");
    assert_eq!(v["endpoints"][1]["last_check"]["result"], "fail", "{v}");
    assert_eq!(v["endpoints"][0]["serving"], true, "{v}");
    let before = bad.requests();
    assert_eq!(bodies(p.addr, 10).await, vec!["good"; 10], "{mode:?}");
    assert_eq!(bad.requests(), before, "{mode:?}: a request reached it");

    bad.set(Health::Ok).await;
    let t = Instant::now();
    assert!(
        eventually(BOUND, || async { serving(&p, 0, 1) }).await,
        "{mode:?}: not back after {:?}: {}",
        t.elapsed(),
        view(&p, 0)
    );
    let got = bodies(p.addr, 10).await;
    assert_eq!(got.iter().filter(|b| *b == "bad").count(), 5, "{got:?}");
}

#[tokio::test]
async fn failing_healthz_leaves_rotation_and_comes_back() {
    leaves_rotation_and_comes_back(Health::FailsHealthz).await;
}

#[tokio::test]
async fn answering_500_leaves_rotation_and_comes_back() {
    leaves_rotation_and_comes_back(Health::Answers500).await;
}

#[tokio::test]
async fn closing_before_answering_leaves_rotation_and_comes_back() {
    leaves_rotation_and_comes_back(Health::Closes).await;
}

#[tokio::test]
async fn refusing_connections_leaves_rotation_and_comes_back() {
    leaves_rotation_and_comes_back(Health::Refuses).await;
}

#[tokio::test]
async fn blackhole_leaves_rotation_and_comes_back() {
    leaves_rotation_and_comes_back(Health::Blackhole).await;
}

// === passive ejection ===

#[tokio::test]
async fn consecutive_faults_eject_for_a_growing_time() {
    let good = Switch::start("good").await;
    let bad = Switch::start("bad").await;
    bad.set(Health::Answers500).await;
    let extra = "retries: 0, outlier: { consecutive_failures: 3, eject_for: 500ms }";
    let p = start(
        Rules::new()
            .upstream_with("pair", &[good.addr, bad.addr], extra)
            .route("name: all, to: pair"),
    )
    .await;
    let got = bodies(p.addr, 30).await;
    let failed = got.iter().filter(|b| *b == "500").count();
    assert_eq!(failed, 3, "fewer than consecutive_failures + 2: {got:?}");
    let v = view(&p, 0);
    let ep = &v["endpoints"][1];
    assert_eq!(ep["ejected"]["times_in_row"], 1, "{v}");
    assert_eq!(
        (ep["ejections"].as_u64(), ep["serving"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(ep["healthy"], true, "no active checks: healthy");
    assert_eq!(ep["last_failure"]["kind"], "status", "{v}");
    assert_eq!(ep["last_failure"]["reason"], "answered 500", "{v}");

    // It returns by itself after eject_for, fails 3 more times in a row,
    // and is ejected for twice as long.
    let t = Instant::now();
    assert!(eventually(Duration::from_secs(2), || async { serving(&p, 0, 1) }).await);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let got = bodies(p.addr, 20).await;
    assert_eq!(got.iter().filter(|b| *b == "500").count(), 3, "{got:?}");
    let v = view(&p, 0);
    assert_eq!(v["endpoints"][1]["ejected"]["times_in_row"], 2, "{v}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!serving(&p, 0, 1), "the second ejection lasts 1 s");
    assert!(eventually(Duration::from_secs(2), || async { serving(&p, 0, 1) }).await);

    // An answer after it came back: the next ejection is 1x again.
    bad.set(Health::Ok).await;
    let got = bodies(p.addr, 4).await;
    assert_eq!(got.iter().filter(|b| *b == "bad").count(), 2, "{got:?}");
    bad.set(Health::Answers500).await;
    bodies(p.addr, 6).await;
    let v = view(&p, 0);
    assert_eq!(v["endpoints"][1]["ejected"]["times_in_row"], 1, "{v}");
    assert_eq!(v["endpoints"][1]["ejections"], 3, "{v}");
}

#[tokio::test]
async fn ejection_stops_at_max_ejected_percent() {
    let good = Switch::start("good").await;
    let eps = [good.addr, dead(), dead(), dead()];
    let extra =
        "retries: 0, outlier: { consecutive_failures: 2, eject_for: 30s, max_ejected_percent: 50 }";
    let p = start(
        Rules::new()
            .upstream_with("four", &eps, extra)
            .route("name: all, to: four"),
    )
    .await;
    let got = bodies(p.addr, 40).await;
    let v = view(&p, 0);
    let ejected: Vec<bool> = (0..4)
        .map(|i| v["endpoints"][i]["ejected"].is_object())
        .collect();
    assert_eq!(ejected.iter().filter(|e| **e).count(), 2, "50% of 4: {v}");
    assert!(!ejected[0], "{v}");
    // The dead endpoint left in rotation keeps failing (a 502 for each of
    // its turns); each ejected one failed exactly twice.
    let failed = got.iter().filter(|b| *b == "502").count();
    assert!(failed > 2 * 2 + 4, "{got:?}");
    for i in 1..4 {
        let ejections = v["endpoints"][i]["ejections"].as_u64();
        assert_eq!(ejections, Some(u64::from(ejected[i])), "{v}");
    }
    // At least one may always be ejected: a single endpoint at 0%.
    let extra = "retries: 0, outlier: { consecutive_failures: 2, max_ejected_percent: 0 }";
    let p = start(
        Rules::new()
            .upstream_with("one", &[dead()], extra)
            .route("name: all, to: one"),
    )
    .await;
    let statuses: Vec<String> = bodies(p.addr, 4).await;
    assert_eq!(statuses, ["502", "502", "503", "503"]);
}

#[tokio::test]
async fn a_single_endpoint_is_not_retried() {
    let only = Switch::start("only").await;
    only.set(Health::Closes).await;
    let p = start(
        Rules::new()
            .upstream_with("one", &[only.addr], "retries: 3")
            .route("name: all, to: one"),
    )
    .await;
    let r = get(p.addr, "/", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-pointsman-error"), Some("upstream_reset"));
    assert_eq!(only.requests(), 1, "a retry to the same endpoint");
}

// === no endpoint left ===

#[tokio::test]
async fn last_endpoint_down_is_503_no_healthy_upstream() {
    let only = Switch::start("only").await;
    let extra = format!("retries: 0, {CHECK}");
    let p = start(
        Rules::new()
            .upstream_with("one", &[only.addr], &extra)
            .route("name: shop, to: one"),
    )
    .await;
    assert_eq!(get(p.addr, "/", &[]).await.body, "only");
    only.set(Health::FailsHealthz).await;
    assert!(eventually(BOUND, || async { !serving(&p, 0, 0) }).await);
    let r = get(p.addr, "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-pointsman-error"), Some("no_healthy_upstream"));
    assert_eq!(r.body, r#"{"error":"no_healthy_upstream","route":"shop"}"#);
    let before = only.requests();
    get(p.addr, "/", &[]).await;
    assert_eq!(only.requests(), before, "nothing was sent");
}

#[tokio::test]
async fn failover_takes_unhealthy_and_unsent_streamed_requests() {
    let only = Switch::start("only").await;
    let fb = upstream(Mode::Echo).await;
    let extra = format!("retries: 0, {CHECK}");
    let p = start(
        Rules::new()
            .upstream_with("one", &[only.addr], &extra)
            .upstream("dead", &[dead()])
            .upstream("fb", &[fb.addr])
            .route("name: shop, match: { path_prefix: /shop }, to: one")
            .route("name: gone, match: { path_prefix: /gone }, to: dead")
            .fallback("to: fb, failover: true"),
    )
    .await;
    only.set(Health::FailsHealthz).await;
    assert!(eventually(BOUND, || async { !serving(&p, 0, 0) }).await);
    let r = get(p.addr, "/shop", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(fb.hits(), 1);
    // A streamed body (nothing inspects it) that never left the proxy
    // because the connect failed goes to the fallback whole.
    let body = "x".repeat(100_000);
    for path in ["/gone", "/shop"] {
        let r = support::http::send(p.addr, "POST", path, &[], &body)
            .await
            .expect("POST");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{path}");
        assert_eq!(fb.last().body.len(), body.len(), "{path}");
    }
    assert_eq!(fb.hits(), 3);
}

// === where checks run ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_explain_assign_and_diff_send_no_probe() {
    let up = Switch::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let addr = up.addr;
    let rules = move |interval: &str| {
        format!(
            "listen:\n  - bind: \"{{LISTEN}}\"\nadmin: {{ bind: \"{{ADMIN}}\" }}\n\
             upstreams:\n  up: {{ endpoints: [\"{addr}\"], \
             health_check: {{ path: /healthz, interval: {interval} }} }}\n\
             experiments:\n  exp: {{ variants: [{{ name: a, weight: 1 }}] }}\n\
             routes:\n  - {{ name: all, to: up, experiment: exp }}\n"
        )
    };
    // A probe every millisecond, if anything started them.
    let f = dir.path().join("r.yaml");
    std::fs::write(
        &f,
        rules("1ms")
            .replace("{LISTEN}", "127.0.0.1:0")
            .replace("{ADMIN}", "127.0.0.1:0"),
    )
    .unwrap();
    let f = f.to_str().unwrap().to_owned();
    let runs: Vec<Vec<String>> = vec![
        vec!["check".into(), "--config".into(), f.clone()],
        vec!["explain".into(), "--config".into(), f.clone(), "/".into()],
        vec![
            "assign".into(),
            "--config".into(),
            f.clone(),
            "--experiment".into(),
            "exp".into(),
            "u1".into(),
        ],
        vec![
            "diff".into(),
            "--config".into(),
            f.clone(),
            "--against".into(),
            f.clone(),
            "--sample".into(),
            "10".into(),
        ],
    ];
    for args in runs {
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            support::binary::run_cli(&args, None)
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{out}{err}");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(up.probes(), 0);
    // `run` on the same upstream does probe it.
    let p = tokio::task::spawn_blocking(move || Binary::start(&rules("50ms")))
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(2), || async { up.probes() > 0 }).await);
    drop(p);
}

#[tokio::test]
async fn probes_go_over_h2_and_tls() {
    let h2 = support::h2_upstream().await;
    let ca = crate::tls::ca();
    let stranger = crate::tls::ca();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let leaf = crate::tls::leaf(&ca, &["up.test"]);
    let https = crate::tls::https_upstream(&leaf, accepted.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), &stranger.pem).unwrap();
    let yaml = format!(
        r#"listen:
  - bind: "127.0.0.1:0"
admin: {{ bind: "127.0.0.1:0" }}
upstreams:
  h2c: {{ endpoints: ["{h2}"], protocol: h2, {CHECK} }}
  tls: {{ endpoints: ["https://{https}"], tls: {{ ca: ca.pem, server_name: up.test }}, {CHECK} }}
  tls-h2: {{ endpoints: ["https://{https}"], protocol: h2, tls: {{ ca: ca.pem, server_name: up.test }}, {CHECK} }}
  wrong-ca: {{ endpoints: ["https://{https}"], tls: {{ ca: other-ca.pem, server_name: up.test }}, {CHECK} }}
routes:
  - {{ name: a, to: h2c }}
  - {{ name: b, to: tls }}
  - {{ name: c, to: tls-h2 }}
  - {{ name: d, to: wrong-ca }}
"#,
        h2 = h2.addr
    );
    let f = dir.path().join("r.yaml");
    std::fs::write(&f, yaml).unwrap();
    let loaded = pointsman::reload::load_and_compile(&f).expect("config");
    let runtime = pointsman::runtime::Runtime::serving(None);
    let snapshot = runtime.link(loaded.compiled.config);
    let result = |id: usize| {
        let v = serde_json::to_value(snapshot.upstream(id).unwrap().view()).unwrap();
        v["endpoints"][0].clone()
    };
    let passed = |id| result(id)["last_check"]["result"] == "pass";
    assert!(eventually(BOUND, || async { passed(0) && passed(1) && passed(2) }).await);
    assert!(eventually(BOUND, || async { result(3)["healthy"] == false }).await);
    let wrong = result(3);
    let reason = wrong["last_check"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("TLS") || reason.contains("certificate"),
        "{wrong}"
    );
    let probe = h2.last();
    assert_eq!(probe.uri, format!("http://{}/healthz", h2.addr));
    assert_eq!(probe.headers["user-agent"], "pointsman-health");
}

// === the binary: /upstreams, metrics, logs, reloads ===

async fn admin_json(p: &Binary, path: &str) -> Value {
    let (status, body) = support::fetch(&support::client(), &p.admin_url(path))
        .await
        .expect(path);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

async fn metrics(p: &Binary) -> Vec<Sample> {
    let (status, body) = support::fetch(&support::client(), &p.admin_url("/metrics"))
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    prom::parse(&body)
}

fn endpoint<'a>(upstreams: &'a Value, name: &str, i: usize) -> &'a Value {
    let list = upstreams["upstreams"].as_array().expect("a list");
    let u = list.iter().find(|u| u["name"] == name).expect(name);
    &u["endpoints"][i]
}

fn pair_rules(good: &Switch, bad: &Switch, check: &str, extra_route: &str) -> String {
    format!(
        "listen:\n  - bind: \"{{LISTEN}}\"\nadmin: {{ bind: \"{{ADMIN}}\" }}\n\
         upstreams:\n  pair: {{ endpoints: [\"{}\", \"{}\"], retries: 0{check} }}\n\
         routes:\n  - {{ name: all, to: pair }}\n{extra_route}",
        good.addr, bad.addr
    )
}

/// Probes `s` received over `window`.
async fn probe_rate(s: &Switch, window: Duration) -> usize {
    let before = s.probes();
    tokio::time::sleep(window).await;
    s.probes() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_survives_a_reload_and_checks_stop_with_their_upstream() {
    let good = Switch::start("good").await;
    let bad = Switch::start("bad").await;
    let check = format!(", {CHECK}");
    let rules = pair_rules(&good, &bad, &check, "");
    let p =
        tokio::task::spawn_blocking(move || Binary::start_with(&rules, &["--log-format", "json"]))
            .await
            .unwrap();
    bad.set(Health::FailsHealthz).await;
    let out =
        || async { endpoint(&admin_json(&p, "/upstreams").await, "pair", 1)["healthy"] == false };
    assert!(eventually(BOUND, out).await);

    let u = admin_json(&p, "/upstreams").await;
    let pair = &u["upstreams"][0];
    assert_eq!(
        (pair["balance"].as_str(), pair["protocol"].as_str()),
        (Some("round_robin"), Some("http1"))
    );
    assert_eq!(pair["health_check"]["interval_ms"], 100);
    let e = endpoint(&u, "pair", 1);
    assert_eq!(e["endpoint"], bad.addr.to_string());
    assert_eq!(
        (e["serving"].as_bool(), e["in_flight"].as_u64()),
        (Some(false), Some(0))
    );
    assert_eq!(e["last_check"]["result"], "fail", "{e}");
    assert_eq!(e["last_check"]["reason"], "answered 503", "{e}");
    assert!(
        e["last_check"]["at"]
            .as_str()
            .unwrap_or_default()
            .ends_with('Z'),
        "{e}"
    );
    assert_eq!(endpoint(&u, "pair", 0)["serving"], true);

    let m = metrics(&p).await;
    let (g, b) = (good.addr.to_string(), bad.addr.to_string());
    let healthy = |e: &str| {
        let labels = [("upstream", "pair"), ("endpoint", e)];
        prom::value(&m, "pointsman_upstream_endpoint_healthy", &labels)
    };
    assert_eq!((healthy(&g), healthy(&b)), (1.0, 0.0));
    let checks = |e: &str, result: &str| {
        let labels = [("upstream", "pair"), ("endpoint", e), ("result", result)];
        prom::value(&m, "pointsman_health_checks_total", &labels)
    };
    assert!(checks(&b, "fail") >= 2.0 && checks(&g, "pass") >= 1.0);
    assert_eq!(checks(&g, "fail"), 0.0);
    let logged = p.json_log("upstream");
    assert!(
        logged.iter().any(|l| l["message"] == "endpoint unhealthy"
            && l["level"] == "WARN"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("answered 503"))),
        "{logged:?}"
    );

    // A reload that leaves the upstream as it is keeps its state and its
    // one checker (every 100 ms: about 10 probes a second, not 20).
    let route = "  - { name: extra, match: { path: /x }, respond: { status: 204 } }\n";
    let write = |check: &str| {
        let text = pair_rules(&good, &bad, check, route)
            .replace("{LISTEN}", &p.addr.to_string())
            .replace("{ADMIN}", &p.admin.to_string());
        std::fs::write(&p.config, text).unwrap();
    };
    write(&check);
    assert_eq!(p.post_reload().await.0, 200);
    assert_eq!(
        endpoint(&admin_json(&p, "/upstreams").await, "pair", 1)["healthy"],
        false
    );
    assert_eq!(get(p.addr, "/", &[]).await.body, "good");
    assert!(probe_rate(&bad, Duration::from_secs(1)).await <= 14);

    // A changed definition starts afresh (healthy until checked), and the
    // old upstream's checks stop with it: without `health_check`, none.
    write("");
    assert_eq!(p.post_reload().await.0, 200);
    let e = endpoint(&admin_json(&p, "/upstreams").await, "pair", 1).clone();
    assert_eq!(
        (e["healthy"].as_bool(), e["last_check"].is_null()),
        (Some(true), true),
        "{e}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe_rate(&bad, Duration::from_millis(500)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_per_attempt_logged_and_rate_limited() {
    let good = Switch::start("good").await;
    let (gone, solo) = (dead(), dead());
    let rules = format!(
        "listen:\n  - bind: \"{{LISTEN}}\"\nadmin: {{ bind: \"{{ADMIN}}\" }}\n\
         upstreams:\n\
         \x20 pair: {{ endpoints: [\"{gone}\", \"{}\"], outlier: {{ consecutive_failures: 3 }} }}\n\
         \x20 solo: {{ endpoints: [\"{solo}\"], retries: 0 }}\n\
         routes:\n  - {{ name: solo, match: {{ path: /solo }}, to: solo }}\n  - {{ name: all, to: pair }}\n",
        good.addr
    );
    let p =
        tokio::task::spawn_blocking(move || Binary::start_with(&rules, &["--log-format", "json"]))
            .await
            .unwrap();
    // Every first attempt on the dead endpoint is retried on the good one
    // until the third fault ejects it; the failed attempts still count.
    for _ in 0..20 {
        assert_eq!(get(p.addr, "/", &[]).await.body, "good");
    }
    let m = metrics(&p).await;
    let errors = |u: &str, kind: &str| {
        prom::value(
            &m,
            "pointsman_upstream_errors_total",
            &[("upstream", u), ("kind", kind)],
        )
    };
    assert_eq!(errors("pair", "connect"), 3.0);
    let g = gone.to_string();
    let ejections = |e: &str| {
        let labels = [("upstream", "pair"), ("endpoint", e)];
        prom::value(&m, "pointsman_upstream_ejections_total", &labels)
    };
    assert_eq!(ejections(&g), 1.0);
    assert_eq!(ejections(&good.addr.to_string()), 0.0);
    assert_eq!(
        prom::value(
            &m,
            "pointsman_upstream_endpoint_healthy",
            &[("upstream", "pair"), ("endpoint", &g)]
        ),
        0.0
    );
    let u = admin_json(&p, "/upstreams").await;
    let e = endpoint(&u, "pair", 0);
    assert_eq!(e["ejected"]["times_in_row"], 1, "{e}");
    assert_eq!(e["last_failure"]["kind"], "connect", "{e}");
    let logs = p.json_log("upstream");
    let ejected: Vec<&Value> = logs
        .iter()
        .filter(|l| l["message"] == "endpoint ejected")
        .collect();
    assert_eq!(ejected.len(), 1, "{logs:?}");
    assert!(
        ejected[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("3 upstream faults in a row, the last: connect")),
        "{ejected:?}"
    );

    // One line per endpoint and kind per second, with the count left out.
    let t = Instant::now();
    for _ in 0..5 {
        assert_eq!(get(p.addr, "/solo", &[]).await.status, 502);
    }
    assert!(t.elapsed() < Duration::from_millis(900), "too slow to test");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(p.addr, "/solo", &[]).await.status, 502);
    let s = solo.to_string();
    let lines: Vec<Value> = p
        .json_log("upstream")
        .into_iter()
        .filter(|l| l["message"] == "upstream failure" && l["endpoint"] == s.as_str())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let f = &lines[1];
    assert_eq!(
        (f["upstream"].as_str(), f["kind"].as_str()),
        (Some("solo"), Some("connect"))
    );
    assert_eq!(f["left_out"], 4, "{lines:?}");
    assert!(
        f["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("connect failed")),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_cannot_roll_a_canary_back() {
    let stable = Switch::start("stable").await;
    let canary = Switch::start("canary").await;
    let rules = format!(
        "listen:\n  - bind: \"{{LISTEN}}\"\nadmin: {{ bind: \"{{ADMIN}}\" }}\n\
         upstreams:\n\
         \x20 stable: {{ endpoints: [\"{}\"], outlier: {{ consecutive_failures: 3 }} }}\n\
         \x20 canary: {{ endpoints: [\"{}\"], outlier: {{ consecutive_failures: 3 }} }}\n\
         routes:\n\
         \x20 - name: shop\n\
         \x20   canary:\n\
         \x20     stable: stable\n\
         \x20     canary: canary\n\
         \x20     weight: 100\n\
         \x20     sticky_on: [header:x-user-id]\n\
         \x20     guard: {{ window: 30s, min_requests: 5, max_error_rate: 0.2 }}\n",
        stable.addr, canary.addr
    );
    let p = tokio::task::spawn_blocking(move || Binary::start(&rules))
        .await
        .unwrap();
    let head =
        "POST / HTTP/1.1\r\nHost: shop.test\r\nx-user-id: u1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(20_000));
    let bodies = [
        "ZZ\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\nXYZ\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "5\nhello\n0\n\n",
        &long_ext,
    ];
    for i in 0..10 {
        let raw = format!("{head}{}", bodies[i % bodies.len()]);
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, raw.as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out),
        )
        .await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "body {i}: {text}");
    }
    // A client that goes away in the middle of its body.
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let raw = "POST / HTTP/1.1\r\nHost: shop.test\r\nx-user-id: u1\r\nContent-Length: 100\r\n\r\n0123456789";
        tokio::io::AsyncWriteExt::write_all(&mut s, raw.as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = admin_json(&p, "/canaries").await;
    let shop = &c["canaries"][0];
    assert_eq!(shop["state"], "static", "{shop}");
    assert_eq!(shop["canary"]["errors"], 0, "{shop}");
    let m = metrics(&p).await;
    let upstream_errors: f64 = prom::find(&m, "pointsman_upstream_errors_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(upstream_errors, 0.0);
    let ejections: f64 = prom::find(&m, "pointsman_upstream_ejections_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(ejections, 0.0);
    let u = admin_json(&p, "/upstreams").await;
    assert!(endpoint(&u, "canary", 0)["last_failure"].is_null(), "{u}");
    // The canary still serves.
    let r = get(p.addr, "/", &[("x-user-id", "u1")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "canary"));
    assert_eq!(stable.requests(), 0);
}
