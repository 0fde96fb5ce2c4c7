//! Fleet mode (SPEC 11, issue 15), black-box: real `pointsman run`
//! replicas sharing one real `redis-server` on an ephemeral port.
//!
//! - `replicas_step_together_and_a_late_joiner_joins_the_current_step`:
//!   steps change on the fleet's wall clock, not each replica's start.
//! - `a_rollback_on_one_replica_reaches_every_replica`: an operator action
//!   on any replica acts on the fleet, made once.
//! - `a_guard_breach_spread_over_replicas_rolls_all_back`: the guard judges
//!   the fleet's summed windows.
//! - `a_store_outage_loses_no_request_and_moves_no_user`: the store stopped
//!   and restarted under load; a rollback made while it is away reaches the
//!   fleet once it is back.
//! - `fleet_settings_are_checked`: `fleet` with `state_file`, bad URLs and
//!   unreadable password files are config errors.

use crate::support;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::binary::{Binary, run_cli};
use support::http::send_blocking;
use support::prom;
use support::redis::Redis;
use support::upstream::{in_background, named, tagged};

const SYNC: Duration = Duration::from_millis(200);

fn upstream(name: &'static str) -> SocketAddr {
    in_background(move || tagged(name))
}

/// A rule file with the `shop` canary (`canary` is its YAML body) over
/// upstreams `a` and `b`, in fleet `name` on `redis`.
fn rules(redis: &Redis, name: &str, a: SocketAddr, b: SocketAddr, canary: &str) -> String {
    format!(
        r#"listen: [{{ bind: "{{LISTEN}}" }}]
admin: {{ bind: "{{ADMIN}}" }}
fleet: {{ redis: "{url}", name: {name}, sync_interval: {sync}ms }}
upstreams:
  a: {{ endpoints: ["{a}"] }}
  b: {{ endpoints: ["{b}"] }}
routes:
  - name: shop
    canary:
      stable: a
      canary: b
      sticky_on: [header:x-user-id]
{canary}
"#,
        url = redis.url(),
        sync = SYNC.as_millis(),
    )
}

fn canary(p: &Binary) -> Value {
    p.admin("GET", "/canaries", &[], "").json()["canaries"][0].clone()
}

/// Polls `done` every 20 ms for up to `limit`; true once it held.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn transitions(replicas: &[&Binary], to: &str) -> f64 {
    replicas
        .iter()
        .map(|p| {
            let m = p.metrics();
            prom::find(
                &m,
                "pointsman_canary_transitions_total",
                &[("canary", "shop"), ("to", to)],
            )
            .first()
            .map_or(0.0, |s| s.value)
        })
        .sum()
}

fn connected(p: &Binary) -> f64 {
    prom::value(&p.metrics(), "pointsman_fleet_connected", &[])
}

#[test]
fn replicas_step_together_and_a_late_joiner_joins_the_current_step() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (upstream("a"), upstream("b"));
    let text = rules(
        &redis,
        "steps",
        a,
        b,
        "      steps: [{ weight: 10, hold: 1500ms }, { weight: 40, hold: 1500ms }, { weight: 100 }]",
    );
    let r1 = Binary::start(&text);
    // Started well after r1: on its own clock it would step 700 ms later.
    std::thread::sleep(Duration::from_millis(700));
    let r2 = Binary::start(&text);
    assert_eq!(canary(&r2)["weight"], 10.0, "r2 joins at step 0");

    // When each replica first showed each weight.
    let mut first_seen: [HashMap<u64, Instant>; 2] = Default::default();
    let mut r3: Option<(Binary, Value)> = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let now = Instant::now();
        let views = [canary(&r1), canary(&r2)];
        for (seen, v) in first_seen.iter_mut().zip(&views) {
            let w = v["weight"].as_f64().unwrap() as u64;
            seen.entry(w).or_insert(now);
        }
        if r3.is_none() && views[0]["step"] == 1 {
            // A late joiner: ready at the current step, not at step 0.
            let p = Binary::start(&text);
            let first = canary(&p);
            r3 = Some((p, first));
        }
        if views.iter().all(|v| v["weight"] == 100.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    for seen in &first_seen {
        let mut weights: Vec<_> = seen.keys().copied().collect();
        weights.sort();
        assert_eq!(weights, vec![10, 40, 100], "every step, in order");
    }
    // Each step change reached both within sync_interval (plus polling).
    for w in [40, 100] {
        let (t1, t2) = (first_seen[0][&w], first_seen[1][&w]);
        let apart = if t1 > t2 { t1 - t2 } else { t2 - t1 };
        assert!(
            apart <= SYNC + Duration::from_millis(450),
            "weight {w}: replicas changed {apart:?} apart"
        );
    }
    let (r3, first) = r3.expect("the late joiner started");
    assert!(
        first["step"].as_u64().unwrap() >= 1,
        "the late joiner started afresh: {first}"
    );
    assert!(within(Duration::from_secs(2), || canary(&r3)["weight"] == 100.0));
    assert_eq!(canary(&r3)["state"], "promoted");
    // Each transition was made once, by one replica.
    assert_eq!(transitions(&[&r1, &r2, &r3], "promoted"), 1.0);
}

#[test]
fn a_rollback_on_one_replica_reaches_every_replica() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (upstream("a"), upstream("b"));
    let text = rules(&redis, "rollback", a, b, "      weight: 50");
    let replicas: Vec<Binary> = (0..3).map(|_| Binary::start(&text)).collect();
    let [r1, r2, r3] = [&replicas[0], &replicas[1], &replicas[2]];
    let answer = r2.admin("POST", "/canaries/shop/rollback", &[], "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["state"], "rolled_back");
    let started = Instant::now();
    assert!(
        within(Duration::from_secs(2), || [r1, r3]
            .iter()
            .all(|p| canary(p)["state"] == "rolled_back")),
        "not every replica rolled back within 2s"
    );
    eprintln!("rollback reached every replica in {:?}", started.elapsed());
    // Everyone on stable now, on every replica.
    for p in [r1, r2, r3] {
        for i in 0..20 {
            let r = p.get("/", &[("x-user-id", &format!("u{i}"))]);
            assert!(r.body.starts_with("a|"), "{}", r.body);
        }
    }
    // Made once; refused where the fleet is already rolled back.
    assert_eq!(transitions(&[r1, r2, r3], "rolled_back"), 1.0);
    assert_eq!(
        r3.admin("POST", "/canaries/shop/rollback", &[], "").status,
        409
    );
    // Resumed from another replica: everyone back at 50.
    assert_eq!(
        r3.admin("POST", "/canaries/shop/resume", &[], "").status,
        200
    );
    assert!(within(Duration::from_secs(2), || [r1, r2].iter().all(
        |p| canary(p)["state"] == "static" && canary(p)["weight"] == 50.0
    )));
    let all = r1.admin("GET", "/canaries", &[], "").json();
    assert_eq!(all["fleet"]["name"], "rollback");
    assert_eq!(all["fleet"]["connected"], true);
    assert!(within(Duration::from_secs(2), || canary(r1)["replicas"] == 3));
}

#[test]
fn a_guard_breach_spread_over_replicas_rolls_all_back() {
    let Some(redis) = Redis::start() else { return };
    let a = upstream("a");
    let failing = in_background(|| named("b"));
    failing.fail.store(true, Ordering::SeqCst);
    let text = rules(
        &redis,
        "guard",
        a,
        failing.addr,
        "      weight: 100\n      guard: { window: 1m, min_requests: 45, max_error_rate: 0.5 }",
    );
    let replicas: Vec<Binary> = (0..3).map(|_| Binary::start(&text)).collect();
    // 20 failing requests per replica: under min_requests on each, 60 in
    // the fleet.
    for p in &replicas {
        for i in 0..20 {
            assert_eq!(p.get("/", &[("x-user-id", &format!("u{i}"))]).status, 500);
        }
        assert!(canary(p)["replica"]["canary"]["requests"].as_u64().unwrap() < 45);
    }
    assert!(
        within(Duration::from_secs(3), || replicas
            .iter()
            .all(|p| canary(p)["state"] == "rolled_back")),
        "the fleet's guard did not roll back: {}",
        canary(&replicas[0])
    );
    let refs: Vec<&Binary> = replicas.iter().collect();
    assert_eq!(transitions(&refs, "rolled_back"), 1.0);
    let why = replicas
        .iter()
        .map(Binary::log_text)
        .find(|log| log.contains("guard breached"))
        .expect("a replica logged the breach");
    assert!(why.contains("over 3 replicas"), "{why}");
}

#[test]
fn a_store_outage_loses_no_request_and_moves_no_user() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (upstream("a"), upstream("b"));
    let text = rules(&redis, "outage", a, b, "      weight: 50");
    let replicas = Arc::new([Binary::start(&text), Binary::start(&text)]);
    let users: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let arm_of = |p: &Binary, u: &str| p.get("/", &[("x-user-id", u)]).body[..1].to_string();
    let arms: HashMap<String, String> = users
        .iter()
        .map(|u| (u.clone(), arm_of(&replicas[0], u)))
        .collect();
    assert!(arms.values().any(|a| a == "a") && arms.values().any(|a| a == "b"));

    // Load on both replicas while the store goes away and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed, replicas) =
            (stop.clone(), sent.clone(), failed.clone(), replicas.clone());
        let arms = arms.clone();
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let user = format!("user-{}", i % 100);
                let p = &replicas[i % 2];
                let r = send_blocking(p.addr, "GET", "/", &[("x-user-id", &user)], "");
                let moved_or_failed = match r {
                    Ok(r) => r.status != 200 || r.body[..1] != arms[&user],
                    Err(_) => true,
                };
                if moved_or_failed {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    redis.stop();
    assert!(
        within(Duration::from_secs(3), || replicas
            .iter()
            .all(|p| connected(p) == 0.0)),
        "pointsman_fleet_connected did not fall to 0"
    );
    for p in replicas.iter() {
        assert_eq!(p.admin("GET", "/readyz", &[], "").status, 200);
        let all = p.admin("GET", "/canaries", &[], "").json();
        assert_eq!(all["fleet"]["connected"], false);
        assert_eq!(all["canaries"][0]["weight"], 50.0);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(redis.resume(), "redis-server restarts");
    assert!(
        within(Duration::from_secs(3), || replicas
            .iter()
            .all(|p| connected(p) == 1.0)),
        "the replicas did not reconnect"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 200, "only {sent} requests sent");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {sent} requests, some failed or moved a user"
    );
    // The store was empty on its return: the replicas wrote the state back.
    let keys = redis.command("KEYS pm:outage:canary:*").unwrap_or_default();
    assert!(keys.contains("pm:outage:canary:shop:"), "{keys}");

    // Away again: a promote waits for the store, a rollback acts here now
    // and reaches the other replica once the store is back.
    let [r1, r2] = &*replicas;
    redis.stop();
    assert!(within(Duration::from_secs(3), || connected(r1) == 0.0));
    let promote = r1.admin("POST", "/canaries/shop/promote", &[], "");
    assert_eq!(promote.status, 503, "{}", promote.body);
    assert_eq!(
        r1.admin("POST", "/canaries/shop/rollback", &[], "").status,
        200
    );
    assert_eq!(canary(r1)["state"], "rolled_back");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(canary(r2)["state"], "static", "no store, no sharing");
    assert!(redis.resume());
    assert!(
        within(Duration::from_secs(3), || canary(r2)["state"]
            == "rolled_back"),
        "the rollback made during the outage did not reach the fleet: {}",
        canary(r2)
    );
}

#[test]
fn fleet_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let check = |fleet: &str, extra: &str| {
        let path = dir.path().join("routes.yaml");
        std::fs::write(
            &path,
            format!(
                "{extra}fleet: {fleet}\nupstreams:\n  a: {{ endpoints: [\"127.0.0.1:1\"] }}\nroutes:\n  - {{ name: r, to: a }}\n"
            ),
        )
        .unwrap();
        let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()], None);
        (code, (), format!("{out}{err}"))
    };
    std::fs::write(dir.path().join("redis-password"), "s3cret\n").unwrap();
    let (code, _, err) = check(
        "{ redis: \"redis://127.0.0.1:6379/0\", password_file: redis-password, name: edge }",
        "",
    );
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = check(
        "{ redis: \"redis://127.0.0.1:6379/0\", name: edge }",
        "state_file: state.json\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("routes.yaml:2:"), "{err}");
    assert!(
        err.contains("`fleet` and `state_file` are alternatives"),
        "{err}"
    );

    let (code, _, err) = check("{ redis: \"http://127.0.0.1:6379\", name: edge }", "");
    assert_eq!(code, 1);
    assert!(err.contains("routes.yaml:1:"), "{err}");
    assert!(err.contains("invalid fleet redis URL"), "{err}");

    let (code, _, err) = check(
        "{ redis: \"redis://:pw@127.0.0.1:notaport/0\", name: edge }",
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("invalid fleet redis URL"), "{err}");
    assert!(!err.contains(":pw@"), "the password is not printed: {err}");

    let (code, _, err) = check(
        "{ redis: \"rediss://redis.example:6380/0\", password_file: missing, name: edge }",
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("cannot read password file"), "{err}");
}
