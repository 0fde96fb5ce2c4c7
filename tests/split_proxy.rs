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
//! - `a_canary_added_to_an_idle_proxy_is_driven`: the driver, asleep
//!   while no canary is live, wakes for one a reload adds.
//! - `failing_canary_rolls_back_and_stable_keeps_serving`: the guard.
//! - `operator_actions_answer_200_404_409`.
//! - `rollback_survives_a_restart_with_state_file`.

use crate::support;

use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::binary::{Binary, run_cli};
use support::http::{get, post};
use support::upstream::{Named, named};

/// Starts the binary on `body` (rule text without `listen`/`admin`) written
/// to `dir`, where a later start finds what this one left (its state file).
fn start(dir: &Path, body: &str) -> Binary {
    let rules = format!("listen:\n  - bind: \"{{LISTEN}}\"\nadmin:\n  bind: \"{{ADMIN}}\"\n{body}");
    Binary::launch()
        .args(&["--access-log", "off"])
        .in_dir(dir)
        .start(&rules)
}

/// Upstreams `a` and `b` (answering with their names and the variant they
/// saw as `x-seen-variant`) and the binary on their definitions followed by
/// `rest`.
struct Ab {
    b: Named,
    dir: tempfile::TempDir,
    p: Binary,
}

async fn start_ab(rest: &str) -> Ab {
    let (a, b) = (named("a").await, named("b").await);
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), &format!("{}{rest}", upstreams(&a, &b)));
    Ab { b, dir, p }
}

async fn canary_view(p: &Binary, name: &str) -> Value {
    let all = get(p.admin, "/canaries", &[]).await.json();
    all["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap()
}

async fn experiment_stats(p: &Binary, name: &str) -> Value {
    let all = get(p.admin, "/experiments", &[]).await.json();
    all["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap()
}

fn upstreams(a: &Named, b: &Named) -> String {
    format!(
        "upstreams:\n  a: {{ endpoints: [\"{}\"] }}\n  b: {{ endpoints: [\"{}\"] }}\n",
        a.addr, b.addr
    )
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_by_header_matches_assign_and_counts() {
    let Ab { dir: _dir, p, .. } = start_ab(
        "experiments:
  exp:
    sticky_on: [header:x-user-id]
    variants:
      - { name: control, weight: 1 }
      - { name: treat, weight: 1, to: b }
routes:
  - name: r
    match: { path_prefix: /exp }
    to: a
    experiment: exp
",
    )
    .await;
    let ids: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let mut seen: HashMap<String, String> = HashMap::new();
    for id in &ids {
        for _ in 0..3 {
            let r = get(p.addr, "/exp/x", &[("x-user-id", id)]).await;
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
    let config = p.config.to_str().unwrap();
    let mut args = vec!["assign", "--experiment", "exp", "--config", config];
    args.extend(ids.iter().map(String::as_str));
    let (code, text, _) = run_cli(&args, None);
    assert_eq!(code, 0, "{text}");
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert_eq!(seen[f[0]], format!("exp={}", f[1]), "{line}");
        assert_eq!(f[2].split('.').nth(1).map(str::len), Some(4), "{line}");
    }
    assert_eq!(text.lines().count(), ids.len());
    // Not enrolled (no id): the route's `to`, no variant header, not counted.
    let r = get(p.addr, "/exp/x", &[]).await;
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
    let Ab { dir: _dir, p, .. } = start_ab(
        "experiments:
  exp:
    variants:
      - { name: control, weight: 1 }
      - { name: treat, weight: 1, to: b }
routes:
  - name: r
    to: a
    experiment: exp
",
    )
    .await;
    for _ in 0..5 {
        let first = get(p.addr, "/", &[]).await;
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
            let again = get(p.addr, "/", &[("cookie", pair)]).await;
            assert_eq!(again.header("x-seen-variant"), Some(variant.as_str()));
            assert_eq!(again.header("set-cookie"), None, "no new cookie");
            assert_eq!(again.body, first.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_exclude_each_other() {
    let exp = |ns: &str| {
        format!(
            "    sticky_on: [header:x-user-id]\n    namespace: [{ns}]\n    variants: [{{ name: on, weight: 1, to: b }}]\n"
        )
    };
    let Ab { dir: _dir, p, .. } = start_ab(&format!(
        "experiments:\n  left:\n{}  right:\n{}routes:
  - name: r1
    match: {{ path_prefix: /left }}
    to: a
    experiment: left
  - name: r2
    match: {{ path_prefix: /right }}
    to: a
    experiment: right
",
        exp("shared, 0, 0.5"),
        exp("shared, 0.5, 1")
    ))
    .await;
    let (mut left, mut right) = (0, 0);
    for i in 0..100 {
        let id = format!("ns-user-{i}");
        let l = get(p.addr, "/left", &[("x-user-id", &id)]).await;
        let r = get(p.addr, "/right", &[("x-user-id", &id)]).await;
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
    let exp = |force: bool| {
        format!(
            "    sticky_on: [header:x-user-id]\n    allow_force: {force}\n    variants: [{{ name: control, weight: 1 }}, {{ name: treat, weight: 1, to: b }}]\n"
        )
    };
    let Ab { dir: _dir, p, .. } = start_ab(&format!(
        "experiments:\n  open:\n{}  closed:\n{}routes:
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
        exp(true),
        exp(false)
    ))
    .await;
    let r = get(p.addr, "/open", &[("x-pointsman-force", "open=treat")]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("b", Some("open=treat"))
    );
    let r = get(p.addr, "/open?pm_force=open%3Dcontrol", &[]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("a", Some("open=control"))
    );
    // Without allow_force the force is ignored: no id, not enrolled.
    let r = get(p.addr, "/closed", &[("x-pointsman-force", "closed=treat")]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("a", Some("none"))
    );
    let r = get(p.addr, "/closed?pm_force=closed%3Dtreat", &[]).await;
    assert_eq!(r.header("x-seen-variant"), Some("none"));
    // A canary at weight 0 forced onto its canary arm.
    let r = get(p.addr, "/shop", &[("x-pointsman-force", "shop=canary")]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("b", Some("shop=canary"))
    );
    let r = get(p.addr, "/shop", &[("x-user-id", "u1")]).await;
    assert_eq!(
        (r.body.as_str(), r.header("x-seen-variant")),
        ("a", Some("shop=stable"))
    );
    // Forced requests are not counted.
    assert_eq!(experiment_stats(&p, "open").await["total"], 0);
}

/// While no canary is live the driver sleeps (an idle proxy is not woken
/// for it); a canary a reload adds is then driven through its steps all
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_added_to_an_idle_proxy_is_driven() {
    let Ab { dir: _dir, p, .. } = start_ab("routes:\n  - name: shop\n    to: a\n").await;
    // Long past the driver's first look: it waits for a canary now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let text = std::fs::read_to_string(&p.config).unwrap();
    let with_canary = text.replace(
        "    to: a\n",
        "    canary:\n      stable: a\n      canary: b\n      sticky_on: [header:x-user-id]\n      steps:\n        - { weight: 0, hold: 300ms }\n        - { weight: 100 }\n",
    );
    assert_ne!(text, with_canary);
    support::write_atomic(&p.config, &with_canary);
    let (status, body) = p.post_reload().await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = canary_view(&p, "shop").await;
        if view["state"] == "promoted" {
            assert_eq!(view["weight"].as_f64(), Some(100.0), "{view}");
            break;
        }
        assert!(Instant::now() < deadline, "not driven: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get(p.addr, "/", &[("x-user-id", "after")]).await;
    assert_eq!(r.header("x-seen-variant"), Some("shop=canary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_progresses_through_short_steps() {
    let Ab { dir: _dir, p, .. } = start_ab(
        "routes:
  - name: shop
    canary:
      stable: a
      canary: b
      sticky_on: [header:x-user-id]
      steps:
        - { weight: 0, hold: 1s }
        - { weight: 50, hold: 600ms }
        - { weight: 100 }
",
    )
    .await;
    assert!(
        p.log_text().contains("no state_file"),
        "start-up warning:\n{}",
        p.log_text()
    );
    let mut weights = Vec::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let before = canary_view(&p, "shop").await;
        let id = format!("c-{n}");
        n += 1;
        let r = get(p.addr, "/", &[("x-user-id", &id)]).await;
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
        let r = get(p.addr, "/", &[("x-user-id", &format!("late-{i}"))]).await;
        assert_eq!(
            (r.body.as_str(), r.header("x-seen-variant")),
            ("b", Some("shop=canary"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_rolls_back_and_stable_keeps_serving() {
    let Ab {
        b, dir: _dir, p, ..
    } = start_ab(
        "routes:
  - name: shop
    canary:
      stable: a
      canary: b
      weight: 50
      sticky_on: [header:x-user-id]
      guard: { window: 10s, min_requests: 5, max_error_rate: 0.2 }
",
    )
    .await;
    b.fail.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        let r = get(p.addr, "/", &[("x-user-id", &format!("g-{i}"))]).await;
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
    assert!(p.log_text().contains("guard breached"), "{}", p.log_text());
    for i in 0..20 {
        let r = get(p.addr, "/", &[("x-user-id", &format!("after-{i}"))]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "a"));
        assert_eq!(r.header("x-seen-variant"), Some("shop=stable"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_answer_200_404_409() {
    let Ab { dir: _dir, p, .. } =
        start_ab("routes:\n  - name: shop\n    canary: { stable: a, canary: b, weight: 20 }\n")
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
    let (a, b) = (named("a").await, named("b").await);
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
    let p = start(dir.path(), &rules);
    assert!(!p.log_text().contains("no state_file"), "{}", p.log_text());
    assert_eq!(post(p.admin, "/canaries/shop/rollback").await.status, 200);
    let saved = std::fs::read_to_string(dir.path().join("state/canary.json")).unwrap();
    assert!(saved.contains("\"rolled_back\""), "{saved}");
    drop(p);
    let p = start(dir.path(), &rules);
    let v = canary_view(&p, "shop").await;
    assert_eq!(
        (v["state"].as_str(), v["weight"].as_f64()),
        (Some("rolled_back"), Some(0.0))
    );
    let r = get(p.addr, "/", &[("cookie", "pm_uid=anyone")]).await;
    assert_eq!(r.header("x-seen-variant"), Some("shop=stable"));
    drop(p);
    // A changed definition starts afresh.
    let p = start(dir.path(), &rules.replace("weight: 10,", "weight: 20,"));
    let v = canary_view(&p, "shop").await;
    assert_eq!(
        (v["state"].as_str(), v["weight"].as_f64()),
        (Some("progressing"), Some(20.0))
    );
}
