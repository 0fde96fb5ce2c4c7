//! Canary behaviour: steps, guards, operator actions, the registry and the
//! state file, on definitions compiled from rule-file snippets.

use super::*;
use crate::compile::canary::compile_canary;
use crate::config::Diagnostics;
use crate::config::raw::{self, Spanned};
use crate::split::hash;
use crate::split::sticky::SimpleRequest;
use crate::split::window::Arm;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn compile(yaml: &str) -> (Option<CanaryDef>, Vec<String>) {
    let raw: raw::Canary = serde_saphyr::from_str(yaml).unwrap();
    let file: Arc<str> = "t.yaml".into();
    let mut diags = Diagnostics::default();
    let resolve = |s: &Spanned<String>| Some(if s.value == "v1" { 1 } else { 2 });
    let d = compile_canary(
        "shop",
        &raw,
        &file,
        raw.stable.referenced,
        &mut diags,
        &resolve,
    );
    (d, diags.items().iter().map(ToString::to_string).collect())
}

fn def(yaml: &str) -> CanaryDef {
    let (d, errs) = compile(&format!("stable: v1\ncanary: v2\n{yaml}"));
    assert!(errs.is_empty(), "{errs:?}");
    d.unwrap()
}

const STEPS: &str =
    "steps:\n  - { weight: 5, hold: 10m }\n  - { weight: 50, hold: 10m }\n  - { weight: 100 }\n";
const GUARD: &str = "guard: { window: 1m, min_requests: 10, max_error_rate: 0.1 }\n";

fn count(c: &Canary, s: State) -> u64 {
    c.transitions()[s as usize].1
}

#[test]
fn config_errors() {
    let cases = [
        (
            "weight: 5\nsteps: [{ weight: 100 }]\n",
            "either weight or steps",
        ),
        ("", "needs weight or steps"),
        ("weight: 101\n", "weight must be between 0 and 100"),
        (
            "steps: [{ weight: 5 }, { weight: 100 }]\n",
            "step 0 needs a hold",
        ),
        (
            "steps: [{ weight: 5, hold: 1m }, { weight: 100, hold: 1m }]\n",
            "the last step cannot have a hold",
        ),
        (
            "weight: 5\non_breach: explode\n",
            "on_breach must be rollback or pause",
        ),
        (
            "weight: 5\nguard: { max_error_rate: 2 }\n",
            "max_error_rate must be between 0 and 1",
        ),
        (
            "weight: 5\nguard: { window: soon, max_error_rate: 0.1 }\n",
            "window: invalid duration",
        ),
        (
            "weight: 5\nguard: { window: 1m }\n",
            "guard needs max_error_rate",
        ),
        (
            "weight: 5\nsticky_on: ['nope']\n",
            "invalid sticky_on source",
        ),
    ];
    for (yaml, want) in cases {
        let (d, errs) = compile(&format!("stable: v1\ncanary: v2\n{yaml}"));
        assert!(d.is_none(), "{yaml}");
        assert!(
            errs.iter()
                .any(|e| e.contains(want) && e.starts_with("t.yaml:")),
            "{yaml}: {errs:?}"
        );
    }
    let (_, errs) = compile("stable: v1\ncanary: v2\nweight: 101\n");
    assert_eq!(
        errs[0],
        "t.yaml:3:9: error: canary \"shop\": weight must be between 0 and 100, not 101"
    );
}

#[tokio::test(start_paused = true)]
async fn steps_advance_after_hold_and_end_promoted() {
    let c = Canary::detached(def(STEPS), Instant::now());
    assert_eq!((c.state(), c.weight()), (State::Progressing, 5.0));
    tokio::time::advance(Duration::from_secs(599)).await;
    c.tick(Instant::now());
    assert_eq!(c.weight(), 5.0);
    assert_eq!(c.view(Instant::now()).hold_remaining_ms, Some(1000));
    tokio::time::advance(Duration::from_secs(1)).await;
    c.tick(Instant::now());
    assert_eq!(
        (c.state(), c.weight(), c.view(Instant::now()).step),
        (State::Progressing, 50.0, Some(1))
    );
    assert_eq!(
        count(&c, State::Progressing),
        0,
        "a step advance is not a transition"
    );
    tokio::time::advance(Duration::from_secs(600)).await;
    c.tick(Instant::now());
    assert_eq!((c.state(), c.weight()), (State::Promoted, 100.0));
    assert_eq!(count(&c, State::Promoted), 1);
}

#[tokio::test(start_paused = true)]
async fn late_tick_catches_up_every_step() {
    let c = Canary::detached(def(&STEPS.replace("100 }", "80 }")), Instant::now());
    tokio::time::advance(Duration::from_secs(3600)).await;
    c.tick(Instant::now());
    assert_eq!((c.state(), c.weight()), (State::Static, 80.0));
}

#[tokio::test(start_paused = true)]
async fn guard_breach_rolls_back_to_zero() {
    let c = Canary::detached(def(&format!("{STEPS}{GUARD}")), Instant::now());
    let now = Instant::now();
    for i in 0..9 {
        c.record_at(now, Arm::Canary, i < 5, Duration::from_millis(5));
    }
    c.tick(now);
    assert_eq!(c.state(), State::Progressing, "below min_requests");
    c.record_at(now, Arm::Canary, true, Duration::from_millis(5));
    c.tick(now);
    assert_eq!((c.state(), c.weight()), (State::RolledBack, 0.0));
    assert_eq!(count(&c, State::RolledBack), 1);
    // Stays rolled back: no step advance, no re-judging.
    tokio::time::advance(Duration::from_secs(3600)).await;
    c.tick(Instant::now());
    assert_eq!(c.state(), State::RolledBack);
    let v = c.view(Instant::now());
    assert_eq!(v.canary.requests, 0, "window restarted at the rollback");
}

#[tokio::test(start_paused = true)]
async fn breach_can_pause_and_judges_increase_and_p99() {
    let c = Canary::detached(
        def(
            "weight: 20\non_breach: pause\nguard: { min_requests: 10, max_error_rate_increase: 0.05, max_p99_latency: 100ms }\n",
        ),
        Instant::now(),
    );
    let now = Instant::now();
    for i in 0..20 {
        c.record_at(now, Arm::Stable, i < 4, Duration::from_millis(1));
        c.record_at(now, Arm::Canary, i < 4, Duration::from_millis(50));
    }
    c.tick(now);
    assert_eq!(c.state(), State::Static, "same error rate as stable, fast");
    for _ in 0..20 {
        c.record_at(now, Arm::Canary, false, Duration::from_millis(500));
    }
    c.tick(now);
    assert_eq!((c.state(), c.weight()), (State::Paused, 20.0));
}

#[tokio::test(start_paused = true)]
async fn operator_actions_follow_the_allowed_states() {
    let now = Instant::now();
    let c = Canary::detached(def(STEPS), now);
    let refused = |r: Result<CanaryView, ActionError>, state| {
        assert_eq!(r.map(|v| v.state).unwrap_err().state, state);
    };
    refused(c.act(Action::Resume, now), State::Progressing);
    assert_eq!(c.act(Action::Pause, now).unwrap().state, State::Paused);
    refused(c.act(Action::Pause, now), State::Paused);
    let v = c.act(Action::Resume, now).unwrap();
    assert_eq!(
        (v.state, v.weight, v.step),
        (State::Progressing, 5.0, Some(0))
    );
    let v = c.act(Action::Rollback, now).unwrap();
    assert_eq!((v.state, v.weight), (State::RolledBack, 0.0));
    refused(c.act(Action::Rollback, now), State::RolledBack);
    let v = c.act(Action::Promote, now).unwrap();
    assert_eq!((v.state, v.weight), (State::Promoted, 100.0));
    refused(c.act(Action::Promote, now), State::Promoted);
    refused(c.act(Action::Pause, now), State::Promoted);
    refused(c.act(Action::Resume, now), State::Promoted);
    assert_eq!(
        c.act(Action::Rollback, now).unwrap().state,
        State::RolledBack
    );
    assert_eq!(count(&c, State::Paused), 1);
    assert_eq!(count(&c, State::RolledBack), 2);
    assert_eq!("promote".parse::<Action>(), Ok(Action::Promote));
    assert!("explode".parse::<Action>().is_err());
}

#[tokio::test(start_paused = true)]
async fn resume_at_last_step_goes_to_end_state() {
    let c = Canary::detached(def(STEPS), Instant::now());
    tokio::time::advance(Duration::from_secs(1200)).await;
    c.tick(Instant::now());
    assert_eq!(c.state(), State::Promoted);
    c.act(Action::Rollback, Instant::now()).unwrap();
    let before = c.transitions();
    let v = c.act(Action::Resume, Instant::now()).unwrap();
    assert_eq!((v.state, v.weight), (State::Promoted, 100.0));
    let after = c.transitions();
    let moved: u64 = after.iter().zip(before).map(|(a, b)| a.1 - b.1).sum();
    assert_eq!(moved, 1);
    // A fixed weight resumes to static at its configured weight.
    let f = Canary::detached(def("weight: 7\n"), Instant::now());
    f.act(Action::Promote, Instant::now()).unwrap();
    f.act(Action::Rollback, Instant::now()).unwrap();
    let v = f.act(Action::Resume, Instant::now()).unwrap();
    assert_eq!((v.state, v.weight), (State::Static, 7.0));
}

#[tokio::test(start_paused = true)]
async fn registry_keeps_state_for_an_unchanged_definition() {
    let reg = CanaryRegistry::new();
    let now = Instant::now();
    let a = reg.attach(def(STEPS), now);
    a.act(Action::Pause, now).unwrap();
    let b = reg.attach(def(STEPS), now);
    assert!(a.same_state(&b));
    assert_eq!(b.state(), State::Paused);
    let changed = reg.attach(def(&STEPS.replace("weight: 5,", "weight: 6,")), now);
    assert!(!changed.same_state(&a));
    assert_eq!(
        (changed.state(), changed.weight()),
        (State::Progressing, 6.0)
    );
    drop((a, b));
    let fresh = reg.attach(def(STEPS), now);
    assert_eq!(
        fresh.state(),
        State::Progressing,
        "dropped state is not reused"
    );
    tokio::time::advance(Duration::from_secs(600)).await;
    reg.tick(Instant::now());
    assert_eq!(fresh.weight(), 50.0);
}

#[tokio::test(start_paused = true)]
async fn state_file_survives_a_restart_for_an_unchanged_definition() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let now = Instant::now();
    let reg = CanaryRegistry::new();
    let a = reg.attach(def(STEPS), now);
    reg.use_state_file(&path, now);
    tokio::time::advance(Duration::from_secs(600)).await;
    reg.tick(Instant::now());
    assert_eq!(a.weight(), 50.0);
    a.act(Action::Rollback, Instant::now()).unwrap();
    // What a process does as it exits.
    reg.flush();
    // A new process: same definition → rolled back; changed → fresh.
    let reg2 = CanaryRegistry::new();
    let b = reg2.attach(def(STEPS), Instant::now());
    assert_eq!(
        b.state(),
        State::Progressing,
        "not restored before use_state_file"
    );
    reg2.use_state_file(&path, Instant::now());
    assert_eq!((b.state(), b.weight()), (State::RolledBack, 0.0));
    assert_eq!(b.view(Instant::now()).step, Some(1));
    assert_eq!(
        count(&b, State::RolledBack),
        0,
        "a restore is not a transition"
    );
    reg2.flush();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"rolled_back\""), "{text}");
    let reg3 = CanaryRegistry::new();
    let changed = reg3.attach(def(&STEPS.replace("weight: 5,", "weight: 6,")), now);
    reg3.use_state_file(&path, Instant::now());
    assert_eq!(
        (changed.state(), changed.weight()),
        (State::Progressing, 6.0)
    );
}

#[tokio::test(start_paused = true)]
async fn settings_that_move_no_user_keep_state_and_step() {
    let reg = CanaryRegistry::new();
    let now = Instant::now();
    let a = reg.attach(def(&format!("{STEPS}{GUARD}")), now);
    tokio::time::advance(Duration::from_secs(600)).await;
    reg.tick(Instant::now());
    assert_eq!(a.weight(), 50.0);
    // A guard threshold, the holds and on_breach edited: same identity.
    let edited = STEPS.replace(
        "hold: 10m }\n  - { weight: 100",
        "hold: 20m }\n  - { weight: 100",
    );
    let b = reg.attach(
        def(&format!(
            "{edited}guard: {{ window: 30s, min_requests: 5, max_error_rate: 0.5 }}\non_breach: pause\n"
        )),
        Instant::now(),
    );
    assert!(a.same_state(&b));
    assert_eq!(
        (b.state(), b.weight(), b.view(Instant::now()).step),
        (State::Progressing, 50.0, Some(1))
    );
    // The new hold counts from when the step was entered.
    tokio::time::advance(Duration::from_secs(900)).await;
    reg.tick(Instant::now());
    assert_eq!(b.weight(), 50.0, "a 20m hold has not passed after 15m");
    // The new guard applies at once: 5 requests are enough, breach pauses.
    let now = Instant::now();
    for _ in 0..5 {
        b.record_at(now, Arm::Canary, true, Duration::from_millis(1));
    }
    reg.tick(now);
    assert_eq!((b.state(), b.weight()), (State::Paused, 50.0));
}

#[tokio::test(start_paused = true)]
async fn driver_ticks_on_its_own() {
    let reg = Arc::new(CanaryRegistry::new());
    let c = reg.attach(def(STEPS), Instant::now());
    let task = reg.spawn_driver(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(601)).await;
    assert_eq!(c.weight(), 50.0);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn decisions_hash_force_and_mint() {
    let c = Canary::detached(def("weight: 30\nallow_force: true\n"), Instant::now());
    let none = SimpleRequest::default();
    let d = c.decide(&none, None);
    assert_eq!(d.reason, ArmReason::Hashed);
    assert!(d.set_cookie(false).unwrap().starts_with("pm_uid="));
    let forced = c.decide(&none, Some("canary"));
    assert_eq!(
        (forced.arm, forced.upstream, forced.reason),
        (Arm::Canary, 2, ArmReason::Forced)
    );
    assert_eq!(forced.set_cookie(false), None);
    let req = SimpleRequest::default().cookie("pm_uid=user-9");
    let d = c.decide(&req, None);
    let bucket = hash::hash("shop", "user-9", 2).unwrap();
    assert_eq!(d.bucket, Some(bucket));
    assert_eq!(d.arm == Arm::Canary, bucket < 0.3);
    let strict = Canary::detached(def("weight: 30\nsticky_on: [header:x-u]\n"), Instant::now());
    let d = strict.decide(&none, Some("canary"));
    assert_eq!(
        (d.arm, d.reason, d.upstream),
        (Arm::Stable, ArmReason::NoId, 1)
    );
}

/// Issue 16: the timeline keeps what the window forgets (an operator
/// action restarts the window, not the history), and `/canaries` carries
/// the ladder and the guard for the dashboard.
#[tokio::test(start_paused = true)]
async fn the_timeline_outlives_window_restarts_and_the_view_has_the_ladder() {
    let now = Instant::now();
    let c = Canary::detached(def(&format!("{STEPS}{GUARD}")), now);
    for i in 0..10 {
        c.record_at(now, Arm::Canary, i < 2, Duration::from_millis(20));
    }
    c.record_at(now, Arm::Stable, false, Duration::from_millis(5));
    c.act(Action::Pause, now).unwrap();
    assert_eq!(c.view(now).canary.requests, 0, "the window restarted");
    c.sample(10_000);
    let s = c.series(0);
    assert_eq!(s.at, vec![10_000]);
    assert_eq!((s.arms[0][0].requests, s.arms[0][0].errors), (1, 0));
    assert_eq!((s.arms[1][0].requests, s.arms[1][0].errors), (10, 2));
    assert!(s.arms[1][0].p99_ms.unwrap() >= 20.0);

    let v = c.view(now);
    let ladder: Vec<(f64, Option<u64>)> = v.ladder.iter().map(|s| (s.weight, s.hold_ms)).collect();
    assert_eq!(
        ladder,
        [(5.0, Some(600_000)), (50.0, Some(600_000)), (100.0, None)]
    );
    let g = v.guard.unwrap();
    assert_eq!((g.window_ms, g.min_requests), (60_000, 10));
    assert_eq!((g.max_error_rate, g.on_breach), (Some(0.1), "rollback"));
    let fixed = Canary::detached(def("weight: 5\n"), now).view(now);
    assert!(fixed.ladder.is_empty() && fixed.guard.is_none());
}
