//! Issue 16, SPEC 8.1: the dashboard in a real headless Chromium against the
//! real binary. `tests/browser/dashboard.mjs` (playwright-core) does the
//! clicking; this test starts `pointsman run` with a canary, an experiment
//! and an admin token, sends traffic, runs the script and checks the
//! canary is paused. The screenshot lands in `target/dashboard.png`.
//!
//! Needs `node`, `/usr/bin/chromium` (Debian's `chromium`) and
//! `npm ci --prefix tests/browser` (`.ci/run` installs all three). Without
//! them the test says so and passes, except under `CI=true`, where it
//! fails.

use crate::support::binary::Binary;
use crate::support::http::send_blocking;
use crate::support::upstream::{in_background, tagged};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "dashboard-s3cret";

const RULES: &str = r#"
listen:
  - bind: "{LISTEN}"
admin:
  bind: "{ADMIN}"
  token_file: token
upstreams:
  v1: { endpoints: ["{V1}"] }
  v2: { endpoints: ["{V2}"] }
routes:
  - name: checkout
    match: { path_prefix: /checkout }
    to: v1
    experiment: checkout-redesign
  - name: shop
    match: { path_prefix: /shop }
    canary:
      stable: v1
      canary: v2
      steps:
        - { weight: 20, hold: 10m }
        - { weight: 50, hold: 10m }
        - { weight: 100 }
      guard: { window: 1m, min_requests: 100000, max_error_rate: 0.05, max_p99_latency: 800ms }
      sticky_on: [header:x-user-id]
  - name: web
    to: v1
experiments:
  checkout-redesign:
    sticky_on: [header:x-user-id]
    variants:
      - { name: control, weight: 1 }
      - { name: redesign, weight: 1, to: v2 }
"#;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the browser test needs, or why it cannot run.
fn browser() -> Result<PathBuf, String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} not found (apt-get install chromium)",
            chromium.display()
        ));
    }
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Err("node not found (apt-get install nodejs npm)".into());
    }
    let module = manifest_dir().join("tests/browser/node_modules/playwright-core");
    if !module.is_dir() {
        return Err("playwright-core not installed (npm ci --prefix tests/browser)".into());
    }
    Ok(chromium)
}

/// Skips loudly, or fails under `CI=true`.
fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("dashboard browser test cannot run in CI: {why}");
    }
    // Straight to stderr: the test harness hides eprintln! of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED the dashboard browser test: {why} ***\n"
    );
}

/// Sends requests to the canary and the experiment from 300 users until
/// `stop` is set.
fn traffic(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let user = format!("user-{}", n % 300);
            let path = if n.is_multiple_of(2) {
                "/shop"
            } else {
                "/checkout"
            };
            let _ = send_blocking(addr, "GET", path, &[("x-user-id", &user)], "");
            n += 1;
            std::thread::sleep(Duration::from_millis(15));
        }
    })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target"))
}

/// Runs the script, killing it after `limit`; its output is printed.
fn run_script(envs: &[(&str, &Path)], strings: &[(&str, &str)], limit: Duration) -> bool {
    let dir = manifest_dir();
    let mut child = Command::new("node")
        .arg(dir.join("tests/browser/dashboard.mjs"))
        .current_dir(dir.join("tests/browser"))
        .envs(envs.iter().map(|(k, v)| (*k, v.as_os_str())))
        .envs(strings.iter().copied())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("dashboard.mjs did not finish within {limit:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn issue16_the_dashboard_shows_splits_and_pauses_the_canary_with_the_token() {
    let chromium = match browser() {
        Ok(c) => c,
        Err(why) => return skip_or_fail(&why),
    };
    let v1 = in_background(|| tagged("v1"));
    let v2 = in_background(|| tagged("v2"));
    let rules = RULES
        .replace("{V1}", &v1.to_string())
        .replace("{V2}", &v2.to_string());
    let proxy = Binary::launch()
        .file("token", &format!("{TOKEN}\n"))
        .start(&rules);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(proxy.addr, stop.clone());

    let screenshot = target_dir().join("dashboard.png");
    let _ = std::fs::create_dir_all(target_dir());
    let profile = tempfile::tempdir().expect("browser profile dir");
    let admin = format!("http://{}", proxy.admin);
    let passed = run_script(
        &[
            ("SCREENSHOT", &screenshot),
            ("USER_DATA_DIR", profile.path()),
            ("CHROMIUM", &chromium),
        ],
        &[
            ("ADMIN_URL", &admin),
            ("ADMIN_TOKEN", TOKEN),
            ("CANARY", "shop"),
            ("EXPERIMENT", "checkout-redesign"),
        ],
        Duration::from_secs(150),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    if !passed {
        eprintln!("--- pointsman log ---\n{}", proxy.log_text());
    }
    assert!(passed, "the browser test failed (its output is above)");

    // What the browser did, seen from the API.
    let canaries = proxy.admin("GET", "/canaries", &[], "").json();
    assert_eq!(canaries["canaries"][0]["state"], "paused", "{canaries:#}");
    let series = proxy.admin("GET", "/series", &[], "").json();
    let shop = &series["canaries"][0];
    assert_eq!(shop["name"], "shop");
    let served: u64 = shop["arms"]
        .as_array()
        .expect("arms")
        .iter()
        .flat_map(|a| a["requests"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .sum();
    assert!(served > 0, "the series counted the traffic: {series:#}");
    assert!(screenshot.is_file(), "{} was saved", screenshot.display());
}

/// Without a browser: the page and its assets come from the binary with a
/// policy that forbids other origins, and `/series` has one entry per
/// canary and experiment, one array per arm.
#[test]
fn issue16_the_page_and_series_are_served_by_the_admin_api() {
    let v1 = in_background(|| tagged("v1"));
    let v2 = in_background(|| tagged("v2"));
    let rules = RULES
        .replace("{V1}", &v1.to_string())
        .replace("{V2}", &v2.to_string());
    let proxy = Binary::launch()
        .file("token", &format!("{TOKEN}\n"))
        .start(&rules);
    let page = proxy.admin("GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert!(page.body.contains("dashboard.js"));
    for (asset, kind) in [
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let r = proxy.admin("GET", asset, &[], "");
        assert_eq!(r.status, 200, "{asset}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{asset}"
        );
    }
    assert_eq!(
        proxy
            .admin(
                "POST",
                "/",
                &[("authorization", &format!("Bearer {TOKEN}"))],
                ""
            )
            .status,
        405
    );

    let series = proxy.admin("GET", "/series", &[], "").json();
    assert_eq!(series["bucket_ms"], 10_000);
    assert_eq!(series["buckets"], 90);
    let shop = &series["canaries"][0];
    assert_eq!(shop["name"], "shop");
    let arms: Vec<&str> = shop["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(arms, ["stable", "canary"]);
    let exp = &series["experiments"][0];
    assert_eq!(exp["name"], "checkout-redesign");
    assert_eq!(exp["arms"].as_array().unwrap().len(), 2);
    for key in ["requests", "errors", "error_rate", "p99_ms"] {
        assert_eq!(
            exp["arms"][1][key].as_array().map(Vec::len),
            exp["at"].as_array().map(Vec::len),
            "{key}"
        );
    }

    // Another site's page cannot act, even with the token; the dashboard's
    // own origin can.
    let bearer = format!("Bearer {TOKEN}");
    let host = proxy.admin.to_string();
    let from = |origin: &str| {
        proxy
            .admin(
                "POST",
                "/canaries/shop/pause",
                &[
                    ("authorization", &bearer),
                    ("host", &host),
                    ("origin", origin),
                ],
                "",
            )
            .status
    };
    assert_eq!(from("http://evil.example"), 403);
    assert_eq!(from("null"), 403);
    assert_eq!(from(&format!("http://{}", proxy.admin)), 200);
    let resumed = proxy.admin(
        "POST",
        "/canaries/shop/resume",
        &[("authorization", &bearer), ("sec-fetch-site", "cross-site")],
        "",
    );
    assert_eq!(resumed.status, 403);
    assert_eq!(
        proxy
            .admin(
                "POST",
                "/canaries/shop/resume",
                &[("authorization", &bearer)],
                ""
            )
            .status,
        200
    );

    // The ladder and the guard are in /canaries for the page to draw.
    let canaries = proxy.admin("GET", "/canaries", &[], "").json();
    let c = &canaries["canaries"][0];
    assert_eq!(c["ladder"].as_array().unwrap().len(), 3);
    assert_eq!(c["ladder"][0]["weight"], 20.0);
    assert_eq!(c["ladder"][0]["hold_ms"], 600_000);
    assert_eq!(c["ladder"][2]["hold_ms"], serde_json::Value::Null);
    assert_eq!(c["guard"]["window_ms"], 60_000);
    assert_eq!(c["guard"]["max_p99_ms"], 800.0);
    assert_eq!(c["guard"]["on_breach"], "rollback");
}
