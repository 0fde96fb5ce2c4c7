//! The command line: the SPEC example passes `check`, `explain` in text and
//! JSON, `assign`, `diff`, usage errors, and `demo` serving its built-in rules.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::binary::run_cli;
use support::http::send_blocking;

/// The rule-file example of SPEC section 2, read from the shared spec.
fn spec_example() -> String {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/SPEC.md");
    let text = std::fs::read_to_string(&spec).expect("../shared/SPEC.md");
    let start = text.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + text[start..].find("```").expect("its end");
    text[start..end].to_string()
}

#[test]
fn the_spec_example_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spec.yaml");
    let example = spec_example();
    std::fs::write(&f, &example).unwrap();
    // `check` reads the certificates and the password file the example names.
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let shop = rcgen::generate_simple_self_signed(vec!["shop.example.com".into()]).unwrap();
    std::fs::write(certs.join("shop.pem"), shop.cert.pem()).unwrap();
    std::fs::write(certs.join("shop.key"), shop.signing_key.serialize_pem()).unwrap();
    std::fs::write(certs.join("ca.pem"), shop.cert.pem()).unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/redis-password"), "s3cret\n").unwrap();
    // The example shows every optional key, `state_file` and `fleet` both,
    // which SPEC 11 makes alternatives: that, and only that, is refused.
    let (code, out, _) = run_cli(&["check", "--config", f.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert!(
        errors[0].contains("`fleet` and `state_file` are alternatives"),
        "{out}"
    );
    // With one of the two, it passes.
    let without_state_file: String = example
        .lines()
        .filter(|l| !l.starts_with("state_file:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&f, without_state_file).unwrap();
    let (code, out, _) = run_cli(&["check", "--config", f.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("ok: 5 routes, 2 upstreams, 1 experiments, 1 canaries"),
        "{out}"
    );
}

const RULES: &str = r#"
upstreams:
  a: { endpoints: ["127.0.0.1:1"] }
  b: { endpoints: ["127.0.0.1:2"] }
experiments:
  exp:
    sticky_on: [header:x-user-id]
    variants:
      - { name: control, weight: 1 }
      - { name: treatment, weight: 1, to: b }
routes:
  - name: beta
    match: { header: { name: x-beta, equals: "1" } }
    to: b
  - name: split
    match: { path_prefix: /split }
    to: a
    experiment: exp
  - name: rest
    match: { method: GET }
    to: a
"#;

fn rules_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.yaml");
    std::fs::write(&f, text).unwrap();
    let path = f.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn explain_prints_each_route_tried_and_the_choice() {
    let (_d, f) = rules_file(RULES);
    let (code, out, err) = run_cli(
        &[
            "explain",
            "--config",
            &f,
            "-X",
            "POST",
            "http://x.test/other",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("route beta: no (header x-beta equals \"1\")"),
        "{out}"
    );
    assert!(
        out.contains("route split: no (path_prefix /split)"),
        "{out}"
    );
    assert!(out.contains("route rest: no (method GET)"), "{out}");
    assert!(out.contains("route: none (no_route)"), "{out}");
    let (_, out, _) = run_cli(
        &["explain", "--config", &f, "-H", "x-beta: 1", "/anything"],
        None,
    );
    assert!(out.contains("route beta: matched"), "{out}");
    assert!(out.contains("upstream: b"), "{out}");
}

#[test]
fn explain_json_shows_the_split_and_agrees_with_assign() {
    let (_d, f) = rules_file(RULES);
    let (code, out, err) = run_cli(
        &[
            "explain",
            "--config",
            &f,
            "--json",
            "-H",
            "x-user-id: user-7",
            "/split/x",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let trace: serde_json::Value = serde_json::from_str(&out).expect("JSON trace");
    assert_eq!(trace["route"], "split");
    assert_eq!(trace["action"], "experiment");
    let split = &trace["split"];
    assert_eq!(split["sticky_id"], "user-7");
    assert_eq!(split["sticky_source"], "header:x-user-id");
    let variant = split["variant"].as_str().expect("enrolled").to_string();
    let bucket = split["bucket"].as_f64().expect("bucket");
    let upstream = if variant == "treatment" { "b" } else { "a" };
    assert_eq!(trace["upstream"], upstream);
    // `assign` gives the same variant and bucket for the same id.
    let (code, out, _) = run_cli(
        &["assign", "--config", &f, "--experiment", "exp", "user-7"],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("user-7 {variant} {bucket:.4}"));
}

#[test]
fn assign_sample_reports_shares_near_the_weights() {
    let (_d, f) = rules_file(RULES);
    let (code, out, _) = run_cli(
        &[
            "assign",
            "--config",
            &f,
            "--experiment",
            "exp",
            "--sample",
            "20000",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}");
    for variant in ["control", "treatment"] {
        let line = out.lines().find(|l| l.starts_with(variant)).expect(variant);
        let cols: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|c| c.parse().unwrap())
            .collect();
        // 5 sigma of a binomial with p = 0.5 over 20000 ids is about 0.018.
        assert!((cols[0] - 0.5).abs() < 0.018, "{line}");
        assert_eq!(cols[1], 0.5, "{line}");
    }
}

#[test]
fn unknown_experiment_and_bad_usage_exit_2() {
    let (_d, f) = rules_file(RULES);
    let (code, _, err) = run_cli(
        &["assign", "--config", &f, "--experiment", "nope", "id"],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown experiment \"nope\""), "{err}");
    let (code, _, _) = run_cli(&["frobnicate"], None);
    assert_eq!(code, 2);
    let (code, _, _) = run_cli(&["explain", "--config", &f, "-H", "no-colon", "/"], None);
    assert_eq!(code, 2);
}

#[test]
fn diff_reports_route_changes_and_who_moves() {
    let (_d, old) = rules_file(RULES);
    let changed = RULES
        .replace(
            "{ name: control, weight: 1 }",
            "{ name: control, weight: 3 }",
        )
        .replace("match: { method: GET }", "match: { method: [GET, HEAD] }");
    let (_d2, new) = rules_file(&format!("{changed}  - name: extra\n    to: a\n"));
    let (code, out, err) = run_cli(
        &[
            "diff",
            "--config",
            &old,
            "--against",
            &new,
            "--sample",
            "20000",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("  + extra: * -> to a"), "{out}");
    assert!(
        out.contains("  ~ rest: method GET -> to a  =>  method in [GET, HEAD] -> to a"),
        "{out}"
    );
    assert!(
        !out.contains("beta"),
        "unchanged routes are not listed: {out}"
    );
    // 50/50 → 75/25 moves a quarter of the users from treatment to control.
    let line = out
        .lines()
        .find(|l| l.starts_with("experiment exp:"))
        .expect("experiment line");
    let pct: f64 = line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!((pct - 25.0).abs() < 1.5, "{line}");
    assert!(out.contains("  treatment -> control:"), "{out}");
}

#[test]
fn demo_serves_its_built_in_rules() {
    // A directory without routes/demo.yaml: the built-in copy is used.
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman"))
        .args(["demo", "--access-log", "off"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let proxy = "127.0.0.1:8080".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = None;
    while Instant::now() < deadline && answer.is_none() {
        answer = send_blocking(proxy, "GET", "/", &[], "").ok();
        std::thread::sleep(Duration::from_millis(50));
    }
    let beta = send_blocking(proxy, "GET", "/", &[("x-beta", "1")], "").ok();
    let admin = "127.0.0.1:9901".parse().unwrap();
    let page = send_blocking(admin, "GET", "/", &[], "").ok();
    let _ = child.kill();
    let _ = child.wait();
    let mut banner = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut banner);
    // Issue 16: the demo says where its dashboard is, and serves it there.
    assert!(
        banner.contains("dashboard: http://127.0.0.1:9901/"),
        "{banner}"
    );
    let page = page.expect("the dashboard answers on 127.0.0.1:9901");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>Pointsman</title>"));
    let answer = answer.expect("the demo answers on 127.0.0.1:8080");
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains("\"upstream\":\"v1\""),
        "{}",
        answer.body
    );
    let beta = beta.expect("beta answer");
    assert!(beta.body.contains("\"upstream\":\"v2\""), "{}", beta.body);
}
