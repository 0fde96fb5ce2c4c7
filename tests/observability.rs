//! Observability end to end, against the real binary (`pointsman run
//! --log-format json`) and real upstreams on 127.0.0.1:
//!
//! - `metrics_count_every_request_by_route_upstream_and_variant`: after a
//!   known number of requests per route and variant, the parsed `/metrics`
//!   exposition holds exactly those counts (fallback, `none`, respond,
//!   upstream connect errors, experiment exposures, canary gauges,
//!   connections, reloads and generation included), and the JSON access log
//!   carries every SPEC 10 field with the right values.
//! - `admin_api_answers_per_spec`: every SPEC 8 endpoint, and the bearer
//!   token (401/403/200).
//! - `logs_never_carry_raw_escape_bytes`: a request with ESC in its head
//!   leaves no raw ESC byte in the log.

use crate::support;

use serde_json::Value;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::binary::{Binary, free_port, run_cli};
use support::http::raw_blocking;
use support::prom::{find, value};
use support::upstream::{in_background, tagged};

const TOKEN: &str = "s3cret-token";

/// An upstream answering 200 with `NAME|x-pointsman-variant` as the body,
/// served beside these blocking tests.
fn upstream(name: &'static str) -> SocketAddr {
    in_background(move || tagged(name))
}

// === the config ===

struct Upstreams {
    v1: SocketAddr,
    v2: SocketAddr,
    fb: SocketAddr,
    dead: u16,
}

fn config(u: &Upstreams) -> String {
    format!(
        r#"listen:
  - bind: "{{LISTEN}}"
admin:
  bind: "{{ADMIN}}"
  token_file: token.txt
upstreams:
  v1: {{ endpoints: ["{v1}"] }}
  v2: {{ endpoints: ["{v2}"] }}
  fb: {{ endpoints: ["{fb}"] }}
  dead: {{ endpoints: ["127.0.0.1:{dead}"], retries: 0, connect_timeout: 1s }}
experiments:
  ab-exp:
    sticky_on: [header:x-user-id]
    allow_force: true
    variants:
      - {{ name: control, weight: 1 }}
      - {{ name: treatment, weight: 1, to: v2 }}
routes:
  - name: plain
    match: {{ path_prefix: /plain }}
    to: v1
  - name: ab
    match: {{ path_prefix: /ab }}
    to: v1
    experiment: ab-exp
  - name: can
    match: {{ path_prefix: /can }}
    canary:
      stable: v1
      canary: v2
      weight: 50
      sticky_on: [header:x-user-id]
  - name: gone
    match: {{ path: /gone }}
    respond: {{ status: 410, body: "gone" }}
  - name: broken
    match: {{ path_prefix: /broken }}
    to: dead
  - name: mirrored
    match: {{ path_prefix: /mirrored }}
    to: v1
    mirror: {{ to: v2, percent: 100 }}
fallback:
  to: fb
"#,
        v1 = u.v1,
        v2 = u.v2,
        fb = u.fb,
        dead = u.dead,
    )
}

/// The binary on [`config`], logging JSON, with the admin token in
/// `token.txt` next to the rule file (whitespace trimmed, SPEC 8).
fn start() -> (Binary, Upstreams) {
    start_with(&["--log-format", "json"])
}

/// As [`start`], with other `run` arguments.
fn start_with(args: &[&str]) -> (Binary, Upstreams) {
    let u = Upstreams {
        v1: upstream("v1"),
        v2: upstream("v2"),
        fb: upstream("fb"),
        dead: free_port(),
    };
    let p = Binary::launch()
        .args(args)
        .file("token.txt", &format!("  {TOKEN}\n\n"))
        .start(&config(&u));
    (p, u)
}

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

// === tests ===

#[test]
fn metrics_count_every_request_by_route_upstream_and_variant() {
    let (p, u) = start();
    // (route, upstream, variant, code) → requests sent.
    let mut want: HashMap<(String, String, String, String), u64> = HashMap::new();
    let mut count = |r: &str, up: &str, v: &str, code: u16| {
        *want
            .entry((r.into(), up.into(), v.into(), code.to_string()))
            .or_default() += 1;
    };

    for i in 0..5 {
        let r = p.get(
            &format!("/plain/{i}"),
            &[("x-request-id", &format!("plain-{i}"))],
        );
        assert_eq!((r.status, r.body.as_str()), (200, "v1|"));
        count("plain", "v1", "", 200);
    }
    // Experiment: the upstream echoes x-pointsman-variant, so the test
    // knows where each user went.
    let mut exposures: HashMap<String, u64> = HashMap::new();
    for i in 0..12 {
        let user = format!("user-{i}");
        let r = p.get("/ab", &[("x-user-id", &user)]);
        assert_eq!(r.status, 200);
        let (up, header) = r.body.split_once('|').unwrap();
        let variant = header.strip_prefix("ab-exp=").unwrap();
        count("ab", up, variant, 200);
        *exposures.entry(variant.to_owned()).or_default() += 1;
    }
    // No sticky id: not enrolled, the route's `to`, no variant.
    for _ in 0..3 {
        let r = p.get("/ab", &[]);
        assert_eq!(r.body, "v1|");
        count("ab", "v1", "", 200);
    }
    // Forced: served by the variant, not counted as an exposure.
    let r = p.get(
        "/ab",
        &[
            ("x-user-id", "forced"),
            ("x-pointsman-force", "ab-exp=treatment"),
        ],
    );
    assert_eq!(r.body, "v2|ab-exp=treatment");
    count("ab", "v2", "treatment", 200);

    let mut arms = HashMap::new();
    for i in 0..10 {
        let r = p.get("/can", &[("x-user-id", &format!("c{i}"))]);
        assert_eq!(r.status, 200);
        let (up, header) = r.body.split_once('|').unwrap();
        let arm = header.strip_prefix("can=").unwrap();
        assert_eq!(up, if arm == "canary" { "v2" } else { "v1" });
        count("can", up, arm, 200);
        *arms.entry(arm.to_owned()).or_insert(0) += 1;
    }
    for _ in 0..2 {
        assert_eq!(p.get("/gone", &[]).status, 410);
        count("gone", "", "", 410);
    }
    for _ in 0..3 {
        let r = p.get("/broken", &[]);
        assert_eq!(r.status, 502);
        assert_eq!(r.header("x-pointsman-error").unwrap(), "upstream_connect");
        count("broken", "dead", "", 502);
    }
    for _ in 0..4 {
        assert_eq!(p.get("/nothing/here", &[]).body, "fb|");
        count("fallback", "fb", "", 200);
    }
    // Fails before routing (climbs above /): nothing served it.
    for _ in 0..2 {
        assert_eq!(p.get("/a/../../etc", &[]).status, 400);
        count("none", "", "", 400);
    }
    assert_eq!(p.get("/mirrored", &[]).body, "v1|");
    count("mirrored", "v1", "", 200);

    // One connection held open counts on its listener.
    let held = TcpStream::connect(p.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let samples = p.metrics();
    let bind = p.addr.to_string();
    let listener = [("listener", bind.as_str())];
    assert_eq!(
        value(&samples, "pointsman_connections_active", &listener),
        1.0
    );
    drop(held);

    // Requests: exactly the ones sent, no other series with requests.
    let got: HashMap<(String, String, String, String), u64> =
        find(&samples, "pointsman_requests_total", &[])
            .iter()
            .map(|s| {
                let l = |n| s.label(n).unwrap().to_owned();
                (
                    (l("route"), l("upstream"), l("variant"), l("code")),
                    s.value as u64,
                )
            })
            .collect();
    assert_eq!(got, want);

    // The histogram: _bucket (cumulative, +Inf = count), _sum, _count.
    let mut per_series: HashMap<(String, String, String), u64> = HashMap::new();
    for ((r, up, v, _), n) in &want {
        *per_series
            .entry((r.clone(), up.clone(), v.clone()))
            .or_default() += n;
    }
    for ((r, up, v), n) in &per_series {
        let l = [
            ("route", r.as_str()),
            ("upstream", up.as_str()),
            ("variant", v.as_str()),
        ];
        let name = "pointsman_request_duration_seconds";
        assert_eq!(
            value(&samples, &format!("{name}_count"), &l),
            *n as f64,
            "{l:?}"
        );
        let sum = value(&samples, &format!("{name}_sum"), &l);
        assert!(sum > 0.0 && sum < 60.0, "{l:?} sum {sum}");
        let buckets = find(&samples, &format!("{name}_bucket"), &l);
        assert_eq!(buckets.len(), 16, "{l:?}");
        let inf = buckets
            .iter()
            .find(|b| b.label("le") == Some("+Inf"))
            .unwrap();
        assert_eq!(inf.value, *n as f64);
        assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
    }

    // Upstream errors, endpoint health.
    let errors = |up: &str, kind: &str| {
        value(
            &samples,
            "pointsman_upstream_errors_total",
            &[("upstream", up), ("kind", kind)],
        )
    };
    assert_eq!(errors("dead", "connect"), 3.0);
    assert_eq!(errors("v1", "connect"), 0.0);
    assert_eq!(errors("dead", "timeout"), 0.0);
    let v1 = u.v1.to_string();
    let health = [("upstream", "v1"), ("endpoint", v1.as_str())];
    assert_eq!(
        value(&samples, "pointsman_upstream_endpoint_healthy", &health),
        1.0
    );

    // Experiment exposures: enrolled by hash only.
    for variant in ["control", "treatment"] {
        let l = [("experiment", "ab-exp"), ("variant", variant)];
        let n = exposures.get(variant).copied().unwrap_or(0) as f64;
        assert_eq!(
            value(&samples, "pointsman_experiment_assignments_total", &l),
            n
        );
    }
    // Canary gauges.
    let can = [("canary", "can")];
    assert_eq!(
        value(&samples, "pointsman_canary_weight_percent", &can),
        50.0
    );
    assert_eq!(
        value(
            &samples,
            "pointsman_canary_state",
            &[("canary", "can"), ("state", "static")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "pointsman_canary_state",
            &[("canary", "can"), ("state", "paused")]
        ),
        0.0
    );
    assert_eq!(value(&samples, "pointsman_config_generation", &[]), 1.0);

    // The mirror ran in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = p.metrics();
        let l = [
            ("route", "mirrored"),
            ("upstream", "v2"),
            ("result", "sent"),
        ];
        if value(&s, "pointsman_mirror_requests_total", &l) == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "mirror never counted");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A canary action is counted as a transition at the next scrape.
    let r = p.admin(
        "POST",
        "/canaries/can/pause",
        &[(bearer().0, &bearer().1)],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let s = p.metrics();
    let to = [("canary", "can"), ("to", "paused")];
    assert_eq!(value(&s, "pointsman_canary_transitions_total", &to), 1.0);
    assert_eq!(
        value(
            &s,
            "pointsman_canary_state",
            &[("canary", "can"), ("state", "paused")]
        ),
        1.0
    );

    // A reload: counted, generation 2, unchanged series kept; a failed
    // reload counted too.
    let r = p.admin("POST", "/reload", &[(bearer().0, &bearer().1)], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let s = p.metrics();
    assert_eq!(
        value(
            &s,
            "pointsman_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );
    assert_eq!(value(&s, "pointsman_config_generation", &[]), 2.0);
    let plain = [
        ("route", "plain"),
        ("upstream", "v1"),
        ("variant", ""),
        ("code", "200"),
    ];
    assert_eq!(value(&s, "pointsman_requests_total", &plain), 5.0);
    // The experiment is unchanged: its exposures are kept (SPEC 7).
    for variant in ["control", "treatment"] {
        let l = [("experiment", "ab-exp"), ("variant", variant)];
        let n = exposures.get(variant).copied().unwrap_or(0) as f64;
        assert_eq!(value(&s, "pointsman_experiment_assignments_total", &l), n);
    }
    std::fs::write(&p.config, "routes: [ {").unwrap();
    let r = p.admin("POST", "/reload", &[(bearer().0, &bearer().1)], "");
    assert_eq!(r.status, 422, "{}", r.body);
    let s = p.metrics();
    assert_eq!(
        value(
            &s,
            "pointsman_config_reloads_total",
            &[("result", "failure")]
        ),
        1.0
    );
    assert_eq!(value(&s, "pointsman_config_generation", &[]), 2.0);

    // The JSON access log: one line per request, every field.
    std::thread::sleep(Duration::from_millis(200));
    let lines = p.json_log("access");
    let total: u64 = want.values().sum();
    // The 400s of the path check are answered by the pipeline too.
    assert_eq!(lines.len() as u64, total, "{}", p.log_text());
    for l in &lines {
        for field in [
            "request_id",
            "method",
            "host",
            "path",
            "status",
            "route",
            "upstream",
            "endpoint",
            "variant",
            "duration_ms",
            "bytes_out",
        ] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
    }
    let plain0 = lines
        .iter()
        .find(|l| l["request_id"] == "plain-0")
        .expect("access line of plain-0");
    assert_eq!(plain0["method"], "GET");
    assert_eq!(plain0["host"], "example.test");
    assert_eq!(plain0["path"], "/plain/0");
    assert_eq!(plain0["status"], 200);
    assert_eq!(plain0["route"], "plain");
    assert_eq!(plain0["upstream"], "v1");
    assert_eq!(plain0["endpoint"], v1.as_str());
    assert_eq!(plain0["variant"], "");
    assert_eq!(plain0["bytes_out"], 3);
    assert!(plain0["duration_ms"].as_u64().is_some());
    let fb = lines.iter().find(|l| l["path"] == "/nothing/here").unwrap();
    assert_eq!(
        (&fb["route"], &fb["upstream"]),
        (&"fallback".into(), &"fb".into())
    );
    let broken = lines.iter().find(|l| l["path"] == "/broken").unwrap();
    assert_eq!(broken["status"], 502);
    assert_eq!(broken["route"], "broken");
    let forced = lines
        .iter()
        .find(|l| l["route"] == "ab" && l["variant"] == "treatment")
        .unwrap();
    assert_eq!(forced["upstream"], "v2");
}

#[test]
fn admin_api_answers_per_spec() {
    let (p, _u) = start();
    let auth = bearer();
    let auth = [(auth.0, auth.1.as_str())];

    let r = p.admin("GET", "/healthz", &[], "");
    assert_eq!((r.status, r.body.trim()), (200, "ok"));
    assert_eq!(p.admin("GET", "/readyz", &[], "").status, 200);
    let r = p.admin("GET", "/metrics", &[], "");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(
        r.body.contains("# TYPE pointsman_config_generation gauge"),
        "{}",
        r.body
    );

    let config = p.admin("GET", "/config", &[], "").json();
    for key in [
        "generation",
        "sha256",
        "loaded_at",
        "sources",
        "last_reload",
        "pending_restart",
    ] {
        assert!(config.get(key).is_some(), "/config lacks {key}: {config}");
    }
    assert_eq!(config["generation"], 1);
    assert_eq!(config["sha256"].as_str().unwrap().len(), 64);

    // Token: 401 without or malformed, 403 wrong, 200 right.
    assert_eq!(p.admin("POST", "/reload", &[], "").status, 401);
    let basic = [("Authorization", "Basic czNjcmV0")];
    assert_eq!(p.admin("POST", "/reload", &basic, "").status, 401);
    let empty = [("Authorization", "Bearer ")];
    assert_eq!(p.admin("POST", "/reload", &empty, "").status, 401);
    let wrong = [("Authorization", "Bearer s3cret-tokeX")];
    assert_eq!(p.admin("POST", "/reload", &wrong, "").status, 403);
    let r = p.admin("POST", "/reload", &auth, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let status = r.json();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_reload"]["result"], "success");
    // GETs need no token.
    assert_eq!(p.admin("GET", "/config", &[], "").json()["generation"], 2);

    let routes = p.admin("GET", "/routes", &[], "").json();
    let list = routes["routes"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["plain", "ab", "can", "gone", "broken", "mirrored"]);
    for r in list {
        assert!(r.get("match").is_some() && r.get("action").is_some(), "{r}");
    }
    assert_eq!(list[0]["action"]["to"], "v1");
    assert_eq!(list[1]["action"]["experiment"], "ab-exp");
    assert_eq!(list[3]["action"]["respond"]["status"], 410);

    for i in 0..20 {
        p.get("/ab", &[("x-user-id", &format!("u{i}"))]);
    }
    let exps = p.admin("GET", "/experiments", &[], "").json();
    let e = &exps["experiments"][0];
    assert_eq!(e["name"], "ab-exp");
    let variants = e["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    let mut total = 0;
    for v in variants {
        assert_eq!(v["share"], 0.5);
        total += v["assignments"].as_u64().unwrap();
    }
    assert_eq!(total, 20);
    assert!(e["p_value"].as_f64().is_some(), "{e}");
    assert_eq!(e["srm"], e["p_value"].as_f64().unwrap() < 0.001);

    let canaries = p.admin("GET", "/canaries", &[], "").json();
    let c = &canaries["canaries"][0];
    assert_eq!(c["name"], "can");
    assert_eq!(c["state"], "static");
    assert_eq!(c["weight"], 50.0);
    for key in ["step", "hold_remaining_ms", "stable", "canary"] {
        assert!(c.get(key).is_some(), "/canaries lacks {key}: {c}");
    }
    assert_eq!(p.admin("POST", "/canaries/can/pause", &[], "").status, 401);
    let r = p.admin("POST", "/canaries/can/pause", &auth, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "paused");
    assert_eq!(
        p.admin("POST", "/canaries/nope/pause", &auth, "").status,
        404
    );
    assert_eq!(
        p.admin("POST", "/canaries/can/promote", &auth, "").status,
        200
    );
    let r = p.admin("POST", "/canaries/can/promote", &auth, "");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        p.admin("POST", "/canaries/can/pause", &auth, "").status,
        409
    );

    // POST /explain: the same trace as `explain --json`.
    let body = r#"{"method": "GET", "url": "http://example.test/ab/x", "headers": {"x-user-id": "u1"}, "client_ip": "10.1.2.3", "body": ""}"#;
    let r = p.admin("POST", "/explain", &auth, body);
    assert_eq!(r.status, 200, "{}", r.body);
    let trace = r.json();
    let (code, out, err) = run_cli(
        &[
            "explain",
            "--config",
            p.config.to_str().unwrap(),
            "--json",
            "-H",
            "x-user-id: u1",
            "--client-ip",
            "10.1.2.3",
            "--data",
            "",
            "http://example.test/ab/x",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(trace, cli);
    assert_eq!(p.admin("POST", "/explain", &auth, "{nope").status, 400);
    assert_eq!(p.admin("POST", "/explain", &[], body).status, 401);
}

/// Pointsman logs what it receives; a terminal escape in a request must not
/// reach an operator's terminal raw.
#[test]
fn logs_never_carry_raw_escape_bytes() {
    let (p, _u) = start();
    let esc_host = b"GET /plain/esc HTTP/1.1\r\nHost: evil\x1b[31mred\r\nConnection: close\r\n\r\n";
    let esc_path = b"GET /plain/\x1b[31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let esc_id = b"GET /plain/id HTTP/1.1\r\nHost: x\r\nx-request-id: a\x1b[2Jb\r\nConnection: close\r\n\r\n";
    for bytes in [&esc_host[..], &esc_path[..], &esc_id[..]] {
        let r = raw_blocking(p.addr, bytes).unwrap();
        // hyper refuses control bytes in the head; either way nothing raw
        // may be logged.
        assert!(matches!(r.status, 200 | 400), "{r:?}");
    }
    // A percent-encoded ESC stays encoded in the logged path.
    assert_eq!(p.get("/plain/%1b[31m", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read(&p.log).unwrap();
    assert!(!log.contains(&0x1b), "raw ESC in the log");
    let lines = p.json_log("access");
    assert!(lines.iter().any(|l| {
        l["path"]
            .as_str()
            .is_some_and(|s| s.starts_with("/plain/%1"))
    }));
}

#[test]
fn metrics_are_recorded_with_the_access_log_off() {
    let (p, _u) = start_with(&["--access-log", "off"]);
    for _ in 0..3 {
        assert_eq!(p.get("/plain", &[]).status, 200);
    }
    let samples = p.metrics();
    let want = [
        ("route", "plain"),
        ("upstream", "v1"),
        ("variant", ""),
        ("code", "200"),
    ];
    assert_eq!(value(&samples, "pointsman_requests_total", &want), 3.0);
    assert!(!p.log_text().contains("\"access\"") && !p.log_text().contains(" access:"));
}

/// An upstream that answers every request with a head promising 1000 bytes,
/// sends 3, and closes: a reset mid-response.
fn cut_short() -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nabc");
        }
    });
    addr
}

/// Re-house fix: a reset mid-response counts in
/// `pointsman_upstream_errors_total{kind="reset"}` whether or not the access
/// log is on (it was counted only by the access log's body wrapper).
#[test]
fn mid_response_reset_is_counted_with_the_access_log_off() {
    let cut = cut_short();
    let rules = format!(
        "listen: [{{ bind: \"{{LISTEN}}\" }}]\nadmin: {{ bind: \"{{ADMIN}}\" }}\n\
         upstreams:\n  cut: {{ endpoints: [\"{cut}\"] }}\nroutes:\n  - {{ name: all, to: cut }}\n"
    );
    let p = Binary::start_with(&rules, &["--access-log", "off"]);
    for _ in 0..2 {
        // The client sees a short body and a closed connection.
        let _ = raw_blocking(p.addr, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
    }
    let reset = || {
        value(
            &p.metrics(),
            "pointsman_upstream_errors_total",
            &[("upstream", "cut"), ("kind", "reset")],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while reset() < 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(reset(), 2.0);
}

/// The admin API has a thread of its own: with one serving thread, a
/// proxied request does not wait while `/routes` renders a large config
/// over and over. Before, it waited for the render in progress (up to one
/// whole render); now it only shares the CPU with it.
#[test]
fn a_slow_admin_request_does_not_hold_up_proxied_ones() {
    use std::fmt::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let a = upstream("a");
    let mut rules = format!(
        "listen: [{{bind: \"{{LISTEN}}\"}}]\nadmin: {{bind: \"{{ADMIN}}\"}}\n\
         upstreams:\n  a: {{endpoints: [\"{a}\"]}}\nroutes:\n"
    );
    for i in 0..5_000 {
        let _ = writeln!(
            rules,
            "  - {{name: r{i}, match: {{host: h{i}.example.com, path_prefix: /p{i}}}, to: a}}"
        );
    }
    rules.push_str("  - {name: all, match: {path_prefix: /}, to: a}\n");
    let p = Binary::start_with(&rules, &["--threads", "1"]);
    let admin = p.admin;
    let render = move || {
        let t = Instant::now();
        let r = support::http::send_blocking(admin, "GET", "/routes", &[], "").expect("/routes");
        assert_eq!(r.status, 200);
        t.elapsed()
    };
    let one_render = (0..3).map(|_| render()).min().unwrap_or_default();
    let renders = Arc::new(AtomicUsize::new(0));
    let poller = {
        let renders = renders.clone();
        std::thread::spawn(move || {
            while renders.load(Ordering::Relaxed) < 3 {
                render();
                renders.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Proxied requests until the poller has rendered three more times.
    let mut worst = Duration::ZERO;
    let mut sent = 0;
    while renders.load(Ordering::Relaxed) < 3 {
        let t = Instant::now();
        assert_eq!(p.get("/x", &[]).status, 200);
        worst = worst.max(t.elapsed());
        sent += 1;
    }
    poller.join().expect("poller");
    assert!(
        sent >= 10,
        "only {sent} proxied requests during three renders"
    );
    assert!(
        worst < one_render / 2,
        "a proxied request waited {worst:?}; one /routes render takes {one_render:?}"
    );
}

/// Log lines leave the serving threads through a queue: with stderr a pipe
/// that nobody reads, every request is still answered (written in place,
/// the first few hundred access lines filled the pipe and the next write
/// stalled the proxy), and the lines that did not fit in the queue are
/// counted in `pointsman_log_lines_dropped_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_reader_does_not_stall_requests() {
    use std::process::{Command, Stdio};
    let a = upstream("a");
    let (listen, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("routes.yaml");
    let rules = format!(
        "listen: [{{bind: \"127.0.0.1:{listen}\"}}]\nadmin: {{bind: \"127.0.0.1:{admin}\"}}\n\
         upstreams:\n  a: {{endpoints: [\"{a}\"]}}\n\
         routes:\n  - {{name: all, match: {{path_prefix: /}}, to: a}}\n"
    );
    std::fs::write(&config, rules).expect("write rules");
    // stderr is a pipe this test never reads.
    let mut child = Command::new(support::binary::binary_path())
        .args(["run", "--config"])
        .arg(&config)
        .env("POINTSMAN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pointsman");
    let client = support::client();
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    let ready = support::eventually(Duration::from_secs(10), || {
        let client = client.clone();
        let u = url(admin, "/readyz");
        async move { matches!(support::fetch(&client, &u).await, Ok((s, _)) if s == 200) }
    })
    .await;
    assert!(ready, "pointsman did not become ready");
    // More access lines than the pipe, the writer's buffer and the queue
    // (16,384 lines) hold together.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (client, u) = (client.clone(), url(listen, "/x"));
            tokio::spawn(async move {
                for _ in 0..2_500 {
                    let answer =
                        tokio::time::timeout(Duration::from_secs(5), support::fetch(&client, &u));
                    match answer.await {
                        Ok(Ok((status, _))) => assert_eq!(status, 200),
                        Ok(Err(e)) => panic!("request failed: {e}"),
                        Err(_) => panic!("no answer in 5 s: the proxy waits for its log reader"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let (status, text) = support::fetch(&client, &url(admin, "/metrics"))
        .await
        .expect("/metrics");
    assert_eq!(status, 200);
    let dropped = value(
        &support::prom::parse(&text),
        "pointsman_log_lines_dropped_total",
        &[],
    );
    assert!(dropped > 0.0, "no dropped log line counted:\n{text}");
    let _ = child.kill();
    let _ = child.wait();
}

/// A client that leaves before its answer is logged with status 499
/// (NGINX's "client closed request"), not with a status it never got.
#[test]
fn a_client_that_leaves_before_the_answer_is_logged_as_499() {
    use std::io::Write;
    // An upstream that takes the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = silent.local_addr().expect("addr");
    let p = Binary::start_with(
        &format!(
            "listen: [{{bind: \"{{LISTEN}}\"}}]\nadmin: {{bind: \"{{ADMIN}}\"}}\n\
             upstreams:\n  slow: {{endpoints: [\"{at}\"], request_timeout: 30s}}\n\
             routes:\n  - {{name: all, match: {{path_prefix: /}}, to: slow}}\n"
        ),
        &["--log-format", "json"],
    );
    let mut client = TcpStream::connect(p.addr).expect("connect");
    client
        .write_all(b"GET /left-early HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(300));
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let lines = p.json_log("access");
        if let Some(l) = lines.into_iter().find(|l| l["path"] == "/left-early") {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no access line: {}",
            p.log_text()
        );
    };
    assert_eq!(line["status"], 499, "{line}");
    // What was decided before the client left is kept.
    assert_eq!(line["route"], "all", "{line}");
    assert_eq!(line["upstream"], "slow", "{line}");
    assert_eq!(
        line["request_id"].as_str().map(str::len),
        Some(32),
        "{line}"
    );
    drop(silent);
}
