//! Experiments users can trust and analyse (issue 17), end to end:
//!
//! - `srm_on_users_does_not_false_alarm_on_uneven_requests` and
//!   `a_52_48_skew_of_users_raises_srm`: the SRM test runs on distinct
//!   users (simulated A/A runs, then a real skew).
//! - `exposure_log_has_one_line_per_user_and_survives_rotation`: the real
//!   binary, concurrent requests of repeating users, GrowthBook's hash
//!   recomputed independently, logrotate's rename + SIGUSR1.
//! - `guardrails_flag_a_variant_whose_backend_fails`: per-variant 5xx rates
//!   with the difference to the first, its interval and p-value.
//! - `the_kill_switch_stops_releases_and_resumes`: codes, routing, the
//!   state across a restart (`state_file`), `expose_variant`.
//! - `a_guard_only_edit_keeps_the_canary_step` and `diff_names_and_exits`:
//!   canary identity per SPEC 4; `diff --exit-code`.

use crate::support;
use pointsman::compile::compile_text;
use pointsman::split::Tally;
use pointsman::split::experiment::Mode;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::binary::{Binary, run_cli};
use support::upstream::{in_background, tagged};

// === SRM on users ===

/// A config with a 50/50 experiment `aa` (its first experiment).
fn fair() -> pointsman::compile::Config {
    let text = "upstreams:\n  a: { endpoints: [\"127.0.0.1:1\"] }\nexperiments:\n  aa:\n    sticky_on: [header:x-id]\n    variants:\n      - { name: a, weight: 1 }\n      - { name: b, weight: 1 }\nroutes:\n  - { name: r, to: a, experiment: aa }\n";
    compile_text("aa.yaml", text).unwrap().config
}

/// A cheap deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn srm_on_users_does_not_false_alarm_on_uneven_requests() {
    let config = fair();
    let e = &config.experiments[0];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut user_alarms, mut request_alarms) = (0, 0);
    let runs = 200;
    for run in 0..runs {
        let tally = Tally::new(2);
        // 1,000 users, each sending 1 to 40 requests.
        for u in 0..1000 {
            let id = format!("run{run}-user{u}-{}", rng.next());
            let v = e.place(&id).expect("everyone is enrolled");
            for _ in 0..(1 + rng.next() % 40) {
                tally.enroll(v, &id);
                tally.record(v, false, Duration::ZERO);
            }
        }
        let stats = tally.stats(e);
        user_alarms += usize::from(stats.srm);
        let requests = pointsman::split::stats::srm_p_value(&tally.assignments(), &[0.5, 0.5]);
        request_alarms += usize::from(requests.is_some_and(|p| p < 0.001));
    }
    println!("SRM alarms in {runs} A/A runs: users {user_alarms}, requests {request_alarms}");
    // SPEC 3: at most 1 false alarm in 100 runs.
    assert!(user_alarms <= runs / 100, "{user_alarms}");
    // Counting requests instead would alarm far more often.
    assert!(request_alarms > 10 * user_alarms.max(1), "{request_alarms}");
}

#[test]
fn a_52_48_skew_of_users_raises_srm() {
    let config = fair();
    let e = &config.experiments[0];
    let tally = Tally::new(2);
    for u in 0..20_000 {
        let v = usize::from(u >= 10_400);
        tally.enroll(v, &format!("user{u}"));
    }
    let stats = tally.stats(e);
    assert_eq!(stats.users, 20_000);
    assert!(stats.srm, "{stats:?}");
    assert!(stats.p_value.is_some_and(|p| p < 1e-6));
    assert_eq!(Mode::default(), Mode::Running);
}

// === GrowthBook's hash, written out again (not the proxy's code) ===

fn fnv1a32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for unit in s.encode_utf16() {
        h ^= u32::from(unit);
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// GrowthBook hash version 2.
fn hash_v2(seed: &str, id: &str) -> f64 {
    let inner = fnv1a32(&format!("{seed}{id}"));
    f64::from(fnv1a32(&inner.to_string()) % 10_000) / 10_000.0
}

// === the exposure log ===

fn upstream(name: &'static str) -> SocketAddr {
    in_background(move || tagged(name))
}

fn exposure_rules(a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        r#"listen: [{{ bind: "{{LISTEN}}" }}]
admin: {{ bind: "{{ADMIN}}" }}
exposure_log: {{ path: exposures.jsonl{extra} }}
upstreams:
  a: {{ endpoints: ["{a}"] }}
  b: {{ endpoints: ["{b}"] }}
experiments:
  checkout:
    sticky_on: [header:x-user-id]
    variants:
      - {{ name: control, weight: 1 }}
      - {{ name: redesign, weight: 1, to: b }}
routes:
  - {{ name: checkout-page, match: {{ path_prefix: /checkout }}, to: a, experiment: checkout }}
  - name: shop
    match: {{ path_prefix: /shop }}
    canary: {{ stable: a, canary: b, weight: 50, sticky_on: [header:x-user-id] }}
"#
    )
}

/// The exposure lines of `path`, parsed.
fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn exposure_log_has_one_line_per_user_and_survives_rotation() {
    let (a, b) = (upstream("a"), upstream("b"));
    let p = Binary::start(&exposure_rules(a, b, ""));
    let path = p.config.with_file_name("exposures.jsonl");
    // 60 users, 5 requests each, from 6 threads at once.
    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    std::thread::scope(|s| {
        for chunk in users.chunks(10) {
            let p = &p;
            s.spawn(move || {
                for _ in 0..5 {
                    for u in chunk {
                        let r = p.get("/checkout", &[("x-user-id", u)]);
                        assert_eq!(r.status, 200);
                    }
                }
            });
        }
    });
    p.get("/shop", &[("x-user-id", "user-0")]);
    assert!(
        wait_for(|| lines(&path).len() == 61),
        "{}",
        lines(&path).len()
    );
    let all = lines(&path);
    for u in &users {
        let mine: Vec<&Value> = all
            .iter()
            .filter(|l| l["user_id"] == u.as_str() && l["experiment_id"] == "checkout")
            .collect();
        assert_eq!(mine.len(), 1, "{u}: {mine:?}");
        let line = mine[0];
        let bucket = hash_v2("checkout", u);
        let want = if bucket < 0.5 { "control" } else { "redesign" };
        assert_eq!(line["variation_id"], want, "{u}");
        assert_eq!(line["bucket"].as_f64(), Some(bucket));
        assert_eq!(line["id_source"], "header:x-user-id");
        assert_eq!(line["hash_version"], 2);
        assert_eq!(line["route"], "checkout-page");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(line["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    }
    let canary: Vec<&Value> = all
        .iter()
        .filter(|l| l["experiment_id"] == "shop")
        .collect();
    assert_eq!(canary.len(), 1);
    let arm = if hash_v2("shop", "user-0") < 0.5 {
        "canary"
    } else {
        "stable"
    };
    assert_eq!(canary[0]["variation_id"], arm);
    // logrotate: move the file away, SIGUSR1; new users go to a new file.
    let rotated = path.with_extension("jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    p.signal("USR1");
    std::thread::sleep(Duration::from_millis(300));
    p.get("/checkout", &[("x-user-id", "late")]);
    p.get("/checkout", &[("x-user-id", "user-1")]);
    assert!(wait_for(|| lines(&path).len() == 1));
    assert_eq!(lines(&path)[0]["user_id"], "late");
    assert_eq!(lines(&rotated).len(), 61);
    let m = p.metrics();
    assert_eq!(
        support::prom::value(&m, "pointsman_exposures_logged_total", &[]),
        62.0
    );
    assert_eq!(
        support::prom::value(&m, "pointsman_exposures_dropped_total", &[]),
        0.0
    );
    let users_metric: f64 = ["control", "redesign"]
        .iter()
        .map(|v| {
            support::prom::value(
                &m,
                "pointsman_experiment_users",
                &[("experiment", "checkout"), ("variant", v)],
            )
        })
        .sum();
    assert_eq!(users_metric, 61.0);
    let exps = p.admin("GET", "/experiments", &[], "").json();
    let e = &exps["experiments"][0];
    assert_eq!(e["users"], 61);
    assert_eq!(e["total"], 302);
    assert_eq!(e["state"], "running");
}

#[test]
fn hashed_ids_are_logged_as_sha256_of_seed_and_id() {
    use sha2::{Digest, Sha256};
    let (a, b) = (upstream("a"), upstream("b"));
    let p = Binary::start(&exposure_rules(a, b, ", hash_ids: true"));
    let path = p.config.with_file_name("exposures.jsonl");
    p.get("/checkout", &[("x-user-id", "alice")]);
    assert!(wait_for(|| lines(&path).len() == 1));
    let want = hex::encode(Sha256::digest(b"checkoutalice"));
    assert_eq!(lines(&path)[0]["user_id"], want.as_str());
}

// === guardrails ===

/// An upstream answering 500 to 3 requests in 10 (the first 3 of each 10).
fn flaky() -> SocketAddr {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    in_background(|| async {
        let (listener, addr) = support::upstream::bind().await;
        let n = Arc::new(AtomicUsize::new(0));
        support::upstream::serve(listener, move |_req| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if i % 10 < 3 { 500 } else { 200 };
                let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r
            }
        });
        addr
    })
}

#[test]
fn guardrails_flag_a_variant_whose_backend_fails() {
    let good = upstream("good");
    let bad = flaky();
    let rules = format!(
        r#"listen: [{{ bind: "{{LISTEN}}" }}]
admin: {{ bind: "{{ADMIN}}" }}
upstreams:
  good: {{ endpoints: ["{good}"] }}
  bad: {{ endpoints: ["{bad}"], retries: 0 }}
experiments:
  exp:
    sticky_on: [header:x-user-id]
    variants:
      - {{ name: control, weight: 1 }}
      - {{ name: broken, weight: 1, to: bad }}
routes:
  - {{ name: r, to: good, experiment: exp }}
"#
    );
    let p = Binary::start(&rules);
    for i in 0..400 {
        p.get("/", &[("x-user-id", &format!("u{i}"))]);
    }
    let e = p.admin("GET", "/experiments", &[], "").json()["experiments"][0].clone();
    let control = &e["variants"][0];
    let broken = &e["variants"][1];
    println!("{}", serde_json::to_string_pretty(&e).unwrap());
    assert_eq!(control["errors_5xx"], 0);
    assert!(control["vs_first"].is_null());
    let rate = broken["error_rate"].as_f64().unwrap();
    assert!((rate - 0.3).abs() < 0.05, "{rate}");
    let g = &broken["vs_first"];
    assert!((g["difference"].as_f64().unwrap() - rate).abs() < 1e-9);
    assert!(g["interval"][0].as_f64().unwrap() > 0.2);
    assert!(g["p_value"].as_f64().unwrap() < 1e-6);
    assert!(broken["p99_ms"].as_f64().is_some());
    assert_eq!(
        control["requests"].as_u64().unwrap() + broken["requests"].as_u64().unwrap(),
        400
    );
}

// === the kill switch ===

fn kill_rules(a: SocketAddr, b: SocketAddr) -> String {
    format!(
        r#"listen: [{{ bind: "{{LISTEN}}" }}]
admin: {{ bind: "{{ADMIN}}" }}
state_file: state.json
upstreams:
  a: {{ endpoints: ["{a}"] }}
  b: {{ endpoints: ["{b}"] }}
experiments:
  exp:
    sticky_on: [header:x-user-id]
    expose_variant: true
    match: {{ header: {{ name: x-country, equals: US }} }}
    variants:
      - {{ name: control, weight: 1 }}
      - {{ name: treatment, weight: 1, to: b }}
routes:
  - {{ name: r, to: a, experiment: exp }}
"#
    )
}

/// Which upstream served each of 40 users (`a|...` or `b|...` bodies).
fn served_by(p: &Binary) -> (usize, usize, Vec<String>) {
    let mut exposed = Vec::new();
    let (mut a, mut b) = (0, 0);
    for i in 0..40 {
        let r = p.get("/", &[("x-user-id", &format!("k{i}")), ("x-country", "US")]);
        if r.body.starts_with("a|") {
            a += 1;
        } else {
            b += 1;
        }
        exposed.extend(r.header("x-pointsman-variant").map(str::to_owned));
    }
    (a, b, exposed)
}

#[test]
fn the_kill_switch_stops_releases_and_resumes() {
    let (a, b) = (upstream("a"), upstream("b"));
    let dir = tempfile::tempdir().unwrap();
    let rules = kill_rules(a, b);
    let p = Binary::launch().in_dir(dir.path()).start(&rules);
    let (ra, rb, exposed) = served_by(&p);
    assert!(ra > 5 && rb > 5, "a split: {ra}/{rb}");
    // expose_variant: the client sees its variant.
    assert_eq!(exposed.len(), 40);
    assert!(
        exposed
            .iter()
            .all(|v| v == "exp=control" || v == "exp=treatment")
    );
    let post = |path: &str| p.admin("POST", path, &[], "");
    let r = post("/experiments/exp/stop");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "stopped");
    assert_eq!(post("/experiments/exp/stop").status, 409);
    let (ra, rb, exposed) = served_by(&p);
    assert_eq!((ra, rb), (40, 0), "stopped: everyone on the route's to");
    assert!(exposed.is_empty());
    assert_eq!(post("/experiments/exp/release?variant=nope").status, 404);
    assert_eq!(post("/experiments/nope/stop").status, 404);
    assert_eq!(post("/experiments/exp/explode").status, 404);
    let r = post("/experiments/exp/release?variant=treatment");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "released");
    assert_eq!(r.json()["released_variant"], "treatment");
    assert_eq!(served_by(&p).1, 40, "released: everyone eligible gets it");
    // Not eligible (targeting): still the route's `to`.
    let other = p.get("/", &[("x-user-id", "k1"), ("x-country", "FR")]);
    assert!(other.body.starts_with("a|"), "{}", other.body);
    let exps = p.admin("GET", "/experiments", &[], "").json();
    assert_eq!(exps["experiments"][0]["released_requests"], 40);
    // Kept across a restart (state_file), while the definition holds.
    drop(p);
    let p = Binary::launch().in_dir(dir.path()).start(&rules);
    assert_eq!(served_by(&p).1, 40, "still released after a restart");
    let r = p.admin("POST", "/experiments/exp/resume", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "running");
    assert_eq!(
        p.admin("POST", "/experiments/exp/resume", &[], "").status,
        409
    );
    let (ra, rb, _) = served_by(&p);
    assert!(ra > 5 && rb > 5, "back to the split: {ra}/{rb}");
}

// === canary identity and diff ===

fn canary_rules(a: SocketAddr, b: SocketAddr, guard: &str) -> String {
    format!(
        r#"listen: [{{ bind: "{{LISTEN}}" }}]
admin: {{ bind: "{{ADMIN}}" }}
upstreams:
  a: {{ endpoints: ["{a}"] }}
  b: {{ endpoints: ["{b}"] }}
routes:
  - name: shop
    canary:
      stable: a
      canary: b
      steps: [{{ weight: 10, hold: 300ms }}, {{ weight: 50, hold: 1h }}, {{ weight: 100 }}]
      guard: {{ min_requests: 1000, max_error_rate: {guard} }}
"#
    )
}

#[tokio::test]
async fn a_guard_only_edit_keeps_the_canary_step() {
    let (a, b) = (upstream("a"), upstream("b"));
    let p = Binary::start(&canary_rules(a, b, "0.05"));
    let canary = |p: &Binary| p.admin("GET", "/canaries", &[], "").json()["canaries"][0].clone();
    assert!(wait_for(|| canary(&p)["step"] == 1));
    assert_eq!(canary(&p)["weight"], 50.0);
    // Only the guard threshold changes: same step, same weight.
    let edited = canary_rules(a, b, "0.02")
        .replace("{LISTEN}", &p.addr.to_string())
        .replace("{ADMIN}", &p.admin.to_string());
    std::fs::write(&p.config, edited).unwrap();
    let (status, _) = p.post_reload().await;
    assert_eq!(status, 200);
    let c = canary(&p);
    assert_eq!(
        (c["step"].clone(), c["weight"].clone()),
        (1.into(), 50.0.into())
    );
    assert_eq!(c["state"], "progressing");
    assert!(
        p.log_text().contains("canary settings changed"),
        "{}",
        p.log_text()
    );
}

#[test]
fn diff_names_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    let text = |guard| {
        canary_rules(a, b, guard)
            .replace("{LISTEN}", "127.0.0.1:8080")
            .replace("{ADMIN}", "127.0.0.1:9901")
    };
    std::fs::write(&old, text("0.05")).unwrap();
    std::fs::write(&new, text("0.02")).unwrap();
    let args = |exit: bool| {
        let mut v = vec![
            "diff",
            "--config",
            old.to_str().unwrap(),
            "--against",
            new.to_str().unwrap(),
        ];
        if exit {
            v.push("--exit-code");
        }
        v
    };
    let (code, out, err) = run_cli(&args(false), None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("canary shop: 0.00% of users change assignment"),
        "{out}"
    );
    assert!(
        out.contains("changed without moving anyone: guard"),
        "{out}"
    );
    let (code, _, _) = run_cli(&args(true), None);
    assert_eq!(code, 1, "--exit-code: something differs");
    let same = [
        "diff",
        "--config",
        old.to_str().unwrap(),
        "--against",
        old.to_str().unwrap(),
        "--exit-code",
    ];
    assert_eq!(run_cli(&same, None).0, 0);
    // assign takes the canary's route name too.
    let (code, out, err) = run_cli(
        &[
            "assign",
            "--config",
            old.to_str().unwrap(),
            "--experiment",
            "shop",
            "alice",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let arm = if hash_v2("shop", "alice") < 0.10 {
        "canary"
    } else {
        "stable"
    };
    assert!(out.starts_with(&format!("alice {arm} ")), "{out}");
}

#[test]
fn explain_says_when_targeting_did_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.yaml");
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let text = kill_rules(a, a)
        .replace("{LISTEN}", "127.0.0.1:8080")
        .replace("{ADMIN}", "127.0.0.1:9901");
    std::fs::write(&f, text).unwrap();
    let (code, out, err) = run_cli(
        &[
            "explain",
            "--config",
            f.to_str().unwrap(),
            "-H",
            "x-country: FR",
            "-H",
            "x-user-id: u",
            "/",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("experiment exp: targeting did not match"),
        "{out}"
    );
    assert!(!out.contains("no sticky id"), "{out}");
}
