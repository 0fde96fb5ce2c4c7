//! The registry's exposition: names, labels, retention, counters.

use super::*;
use std::time::Duration;

/// One sample line of the exposition format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `name{k="v",...} value` lines (comments skipped), undoing the
/// `\\`, `\"` and `\n` escapes of label values.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("name");
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                // label name up to '='
                let (start, c) = chars.next().expect("label or }");
                if c == '}' {
                    end = start + 1;
                    break;
                }
                if c == ',' {
                    continue;
                }
                let mut lname = String::from(c);
                loop {
                    let (_, c) = chars.next().expect("=");
                    if c == '=' {
                        break;
                    }
                    lname.push(c);
                }
                assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    let (_, c) = chars.next().expect("closing quote");
                    match c {
                        '"' => break,
                        '\\' => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            other => panic!("bad escape \\{other} in {line}"),
                        },
                        c => value.push(c),
                    }
                }
                labels.push((lname, value));
            }
            rest = &r[end..];
        }
        let value = rest.trim().split(' ').next().expect("value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The one sample called `name` whose labels include all of `want`.
fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect()
}

fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, want);
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
    found[0].value
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn every_name_is_exported_once_with_spec_labels() {
    let m = Metrics::new().unwrap();
    let s = m.series("api", "backend", "");
    s.observe(200, ms(1));
    m.upstream_errors("backend").connect();
    m.endpoint_health("backend", "10.0.0.1:80").set(true);
    m.experiment_assignments("checkout", "b").inc();
    m.set_canary("web", 10.0, "progressing");
    m.canary_transition("web", "paused");
    m.reload_result(true);
    m.set_generation(3);
    let _c = m.listener("0.0.0.0:8080").open();
    m.mirror("api", "shadow").sent();
    m.set_experiment_users("checkout", "b", 3);
    let (logged, dropped) = m.exposure_counters();
    logged.inc();
    dropped.inc();
    let ep = m.endpoint_counters("backend", "10.0.0.1:80");
    ep.ejected();
    ep.checked(true);
    let _fleet = m.fleet_connected().unwrap();
    let text = m.render();
    let samples = parse(&text);
    let expect: &[(&str, &[&str])] = &[
        (REQUESTS_TOTAL, &["route", "upstream", "variant", "code"]),
        (UPSTREAM_ERRORS_TOTAL, &["upstream", "kind"]),
        (UPSTREAM_ENDPOINT_HEALTHY, &["upstream", "endpoint"]),
        (EXPERIMENT_ASSIGNMENTS_TOTAL, &["experiment", "variant"]),
        (CANARY_WEIGHT_PERCENT, &["canary"]),
        (CANARY_STATE, &["canary", "state"]),
        (CANARY_TRANSITIONS_TOTAL, &["canary", "to"]),
        (CONFIG_RELOADS_TOTAL, &["result"]),
        (CONFIG_GENERATION, &[]),
        (CONNECTIONS_ACTIVE, &["listener"]),
        (MIRROR_REQUESTS_TOTAL, &["route", "upstream", "result"]),
        (EXPERIMENT_USERS, &["experiment", "variant"]),
        (EXPOSURES_LOGGED_TOTAL, &[]),
        (EXPOSURES_DROPPED_TOTAL, &[]),
        (LOG_LINES_DROPPED_TOTAL, &[]),
        (UPSTREAM_EJECTIONS_TOTAL, &["upstream", "endpoint"]),
        (HEALTH_CHECKS_TOTAL, &["upstream", "endpoint", "result"]),
        (FLEET_CONNECTED, &[]),
        (BUILD_INFO, &["version", "commit"]),
    ];
    for (name, labels) in expect {
        let found: Vec<_> = samples.iter().filter(|s| s.name == *name).collect();
        assert!(!found.is_empty(), "{name} missing in\n{text}");
        for s in found {
            let mut got: Vec<&str> = s.labels.iter().map(|(n, _)| n.as_str()).collect();
            let mut want = labels.to_vec();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{name}");
        }
    }
    for (suffix, extra) in [("_bucket", Some("le")), ("_sum", None), ("_count", None)] {
        let name = format!("{REQUEST_DURATION_SECONDS}{suffix}");
        let found: Vec<_> = samples.iter().filter(|s| s.name == name).collect();
        assert!(!found.is_empty(), "{name} missing");
        for s in found {
            let mut got: Vec<&str> = s.labels.iter().map(|(n, _)| n.as_str()).collect();
            got.sort();
            let mut want = vec!["route", "upstream", "variant"];
            want.extend(extra);
            want.sort();
            assert_eq!(got, want, "{name}");
        }
    }
    // TYPE lines say what SPEC 9 says.
    for (name, kind) in [
        (REQUESTS_TOTAL, "counter"),
        (REQUEST_DURATION_SECONDS, "histogram"),
        (UPSTREAM_ERRORS_TOTAL, "counter"),
        (UPSTREAM_ENDPOINT_HEALTHY, "gauge"),
        (EXPERIMENT_ASSIGNMENTS_TOTAL, "counter"),
        (CANARY_WEIGHT_PERCENT, "gauge"),
        (CANARY_STATE, "gauge"),
        (CANARY_TRANSITIONS_TOTAL, "counter"),
        (CONFIG_RELOADS_TOTAL, "counter"),
        (CONFIG_GENERATION, "gauge"),
        (CONNECTIONS_ACTIVE, "gauge"),
        (MIRROR_REQUESTS_TOTAL, "counter"),
        (EXPERIMENT_USERS, "gauge"),
        (EXPOSURES_LOGGED_TOTAL, "counter"),
        (EXPOSURES_DROPPED_TOTAL, "counter"),
        (LOG_LINES_DROPPED_TOTAL, "counter"),
        (UPSTREAM_EJECTIONS_TOTAL, "counter"),
        (HEALTH_CHECKS_TOTAL, "counter"),
        (FLEET_CONNECTED, "gauge"),
        (BUILD_INFO, "gauge"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "{name} {kind}"
        );
    }
    assert_eq!(ALL.len(), 20);
    let info = format!(
        "{BUILD_INFO}{{commit=\"{}\",version=\"{}\"}} 1",
        crate::version::COMMIT,
        crate::version::VERSION
    );
    assert!(text.lines().any(|l| l == info), "{info} in\n{text}");
}

#[test]
fn request_counts_by_code_and_series() {
    let m = Metrics::new().unwrap();
    let stable = m.series("checkout", "shop-v1", "stable");
    let canary = m.series("checkout", "shop-v2", "canary");
    let none = m.series(ROUTE_NONE, "", "");
    for _ in 0..5 {
        stable.observe(200, ms(3));
    }
    stable.observe(502, ms(40));
    canary.observe(200, ms(1));
    canary.observe(503, ms(2));
    canary.observe(503, ms(2));
    canary.observe(418, ms(2)); // not a common code
    canary.observe(799, ms(2)); // odd but valid
    canary.observe(42, ms(2)); // out of range
    none.observe(404, Duration::ZERO);

    let samples = parse(&m.render());
    let req = |route, up, var, code| {
        value(
            &samples,
            REQUESTS_TOTAL,
            &[
                ("route", route),
                ("upstream", up),
                ("variant", var),
                ("code", code),
            ],
        )
    };
    assert_eq!(req("checkout", "shop-v1", "stable", "200"), 5.0);
    assert_eq!(req("checkout", "shop-v1", "stable", "502"), 1.0);
    assert_eq!(req("checkout", "shop-v2", "canary", "200"), 1.0);
    assert_eq!(req("checkout", "shop-v2", "canary", "503"), 2.0);
    assert_eq!(req("checkout", "shop-v2", "canary", "418"), 1.0);
    assert_eq!(req("checkout", "shop-v2", "canary", "799"), 1.0);
    assert_eq!(req("checkout", "shop-v2", "canary", "other"), 1.0);
    assert_eq!(req("none", "", "", "404"), 1.0);
    // Codes never seen are not exported.
    let requests = find(&samples, REQUESTS_TOTAL, &[]);
    assert_eq!(requests.len(), 8, "{requests:?}");
}

#[test]
fn histogram_has_cumulative_buckets_sum_and_count() {
    let m = Metrics::new().unwrap();
    let s = m.series("api", "backend", "");
    s.observe(200, Duration::from_micros(400)); // <= 0.0005
    s.observe(200, ms(1)); // exactly on the 0.001 bound
    s.observe(200, ms(70)); // <= 0.1
    s.observe(200, Duration::from_secs(31)); // only +Inf
    let samples = parse(&m.render());
    let labels = [("route", "api"), ("upstream", "backend"), ("variant", "")];
    let bucket = |le: &str| {
        let mut want = labels.to_vec();
        want.push(("le", le));
        value(&samples, "pointsman_request_duration_seconds_bucket", &want)
    };
    assert_eq!(bucket("0.0005"), 1.0);
    assert_eq!(bucket("0.001"), 2.0);
    assert_eq!(bucket("0.05"), 2.0);
    assert_eq!(bucket("0.1"), 3.0);
    assert_eq!(bucket("30"), 3.0);
    assert_eq!(bucket("+Inf"), 4.0);
    let buckets = find(
        &samples,
        "pointsman_request_duration_seconds_bucket",
        &labels,
    );
    assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1);
    let mut last = 0.0;
    for b in buckets {
        assert!(b.value >= last, "buckets not cumulative: {b:?}");
        last = b.value;
    }
    assert_eq!(
        value(
            &samples,
            "pointsman_request_duration_seconds_count",
            &labels
        ),
        4.0
    );
    let sum = value(&samples, "pointsman_request_duration_seconds_sum", &labels);
    assert!((sum - 31.0714).abs() < 1e-9, "{sum}");
}

#[test]
fn series_is_idempotent() {
    let m = Metrics::new().unwrap();
    let a = m.series("api", "backend", "");
    let b = m.series("api", "backend", "");
    assert!(Arc::ptr_eq(&a, &b));
    a.observe(200, ms(1));
    b.observe(200, ms(1));
    let samples = parse(&m.render());
    assert_eq!(
        value(
            &samples,
            REQUESTS_TOTAL,
            &[("route", "api"), ("code", "200")]
        ),
        2.0
    );
    assert!(!Arc::ptr_eq(&a, &m.series("api", "backend", "v2")));
}

#[test]
fn retain_routes_drops_removed_routes_only() {
    let m = Metrics::new().unwrap();
    let keep = m.series("keep", "up", "");
    let gone = m.series("gone", "up", "");
    let old_variant = m.series("keep", "up", "b");
    let fallback = m.series(ROUTE_FALLBACK, "default", "");
    let none = m.series(ROUTE_NONE, "", "");
    for s in [&keep, &gone, &old_variant, &fallback, &none] {
        s.observe(200, ms(1));
    }
    m.mirror("keep", "shadow").sent();
    m.mirror("gone", "shadow").failed();

    m.retain_routes(&[("keep", "up", ""), ("new", "up", "")]);

    let samples = parse(&m.render());
    let routes = |name: &str| {
        let mut r: Vec<(String, String)> = find(&samples, name, &[])
            .iter()
            .map(|s| {
                let r = s.label("route").unwrap_or_default().to_owned();
                (r, s.label("variant").unwrap_or_default().to_owned())
            })
            .collect();
        r.sort();
        r.dedup();
        r
    };
    let want: Vec<(String, String)> = [("fallback", ""), ("keep", ""), ("none", "")]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(routes(REQUESTS_TOTAL), want);
    assert_eq!(routes("pointsman_request_duration_seconds_count"), want);
    let mirrors: Vec<_> = find(&samples, MIRROR_REQUESTS_TOTAL, &[])
        .iter()
        .map(|s| s.label("route").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(mirrors, vec!["keep"; 3]);
    // A route that comes back starts afresh.
    let back = m.series("gone", "up", "");
    assert!(!Arc::ptr_eq(&back, &gone));
    assert!(Arc::ptr_eq(&keep, &m.series("keep", "up", "")));
}

#[test]
fn retain_upstreams_experiments_and_canaries() {
    let m = Metrics::new().unwrap();
    m.upstream_errors("a").timeout();
    m.upstream_errors("b").reset();
    m.endpoint_health("a", "10.0.0.1:80").set(true);
    m.endpoint_health("a", "10.0.0.2:80").set(false);
    m.endpoint_counters("a", "10.0.0.1:80").ejected();
    m.endpoint_counters("a", "10.0.0.2:80").checked(false);
    m.experiment_assignments("x", "control").inc();
    m.experiment_assignments("y", "control").inc();
    m.set_canary("c1", 5.0, "static");
    m.set_canary("c2", 5.0, "static");
    m.canary_transition("c2", "rolled_back");

    m.retain_upstreams(&[("a", vec!["10.0.0.1:80"])]);
    m.retain_experiments(&["x"]);
    m.retain_canaries(&["c1"]);

    let samples = parse(&m.render());
    let distinct = |name: &str, label: &str| {
        let mut v: Vec<String> = find(&samples, name, &[])
            .iter()
            .map(|s| s.label(label).unwrap_or_default().to_owned())
            .collect();
        v.dedup();
        v
    };
    assert_eq!(distinct(UPSTREAM_ERRORS_TOTAL, "upstream"), ["a"]);
    for name in [
        UPSTREAM_ENDPOINT_HEALTHY,
        UPSTREAM_EJECTIONS_TOTAL,
        HEALTH_CHECKS_TOTAL,
    ] {
        assert_eq!(distinct(name, "endpoint"), ["10.0.0.1:80"], "{name}");
    }
    assert_eq!(distinct(EXPERIMENT_ASSIGNMENTS_TOTAL, "experiment"), ["x"]);
    assert_eq!(distinct(CANARY_WEIGHT_PERCENT, "canary"), ["c1"]);
    assert_eq!(distinct(CANARY_STATE, "canary"), ["c1"]);
    assert!(find(&samples, CANARY_TRANSITIONS_TOTAL, &[]).is_empty());
}

#[test]
fn canary_state_is_one_hot_and_counters_count() {
    let m = Metrics::new().unwrap();
    m.set_canary("web", 25.0, "progressing");
    m.set_canary("web", 0.0, "rolled_back");
    m.canary_transition("web", "rolled_back");
    m.reload_result(true);
    m.reload_result(true);
    m.reload_result(false);
    m.set_generation(7);
    let l = m.listener("0.0.0.0:8080");
    let a = l.open();
    let b = l.open();
    drop(a);
    let errors = m.upstream_errors("api");
    errors.connect();
    errors.timeout();
    errors.timeout();
    errors.no_healthy();
    let mirror = m.mirror("r", "shadow");
    mirror.sent();
    mirror.skipped();
    let samples = parse(&m.render());

    assert_eq!(
        value(&samples, CANARY_WEIGHT_PERCENT, &[("canary", "web")]),
        0.0
    );
    for s in CANARY_STATES {
        let want = if s == "rolled_back" { 1.0 } else { 0.0 };
        let got = value(&samples, CANARY_STATE, &[("canary", "web"), ("state", s)]);
        assert_eq!(got, want, "{s:?}");
    }
    let to = [("canary", "web"), ("to", "rolled_back")];
    assert_eq!(value(&samples, CANARY_TRANSITIONS_TOTAL, &to), 1.0);
    assert_eq!(
        value(&samples, CONFIG_RELOADS_TOTAL, &[("result", "success")]),
        2.0
    );
    assert_eq!(
        value(&samples, CONFIG_RELOADS_TOTAL, &[("result", "failure")]),
        1.0
    );
    assert_eq!(value(&samples, CONFIG_GENERATION, &[]), 7.0);
    let listener = [("listener", "0.0.0.0:8080")];
    assert_eq!(value(&samples, CONNECTIONS_ACTIVE, &listener), 1.0);
    drop(b);
    let samples = parse(&m.render());
    assert_eq!(value(&samples, CONNECTIONS_ACTIVE, &listener), 0.0);
    for (kind, n) in [
        ("connect", 1.0),
        ("timeout", 2.0),
        ("reset", 0.0),
        ("no_healthy", 1.0),
    ] {
        let got = value(
            &samples,
            UPSTREAM_ERRORS_TOTAL,
            &[("upstream", "api"), ("kind", kind)],
        );
        assert_eq!(got, n, "{kind}");
    }
    for (result, n) in [("sent", 1.0), ("failed", 0.0), ("skipped", 1.0)] {
        let got = value(
            &samples,
            MIRROR_REQUESTS_TOTAL,
            &[("route", "r"), ("result", result)],
        );
        assert_eq!(got, n, "{result}");
    }
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new().unwrap();
    let nasty = "a\"b\\c\nd";
    m.series(nasty, "up\\", "").observe(200, ms(1));
    m.experiment_assignments(nasty, "v\"").inc();
    let text = m.render();
    assert!(
        text.contains(r#"route="a\"b\\c\nd""#),
        "raw escaping wrong:\n{text}"
    );
    let samples = parse(&text);
    let want = [("route", nasty), ("upstream", "up\\"), ("code", "200")];
    assert_eq!(value(&samples, REQUESTS_TOTAL, &want), 1.0);
    let want = [("experiment", nasty), ("variant", "v\"")];
    assert_eq!(value(&samples, EXPERIMENT_ASSIGNMENTS_TOTAL, &want), 1.0);
}

#[test]
fn concurrent_observes_are_all_counted() {
    let m = Metrics::new().unwrap();
    let s = m.series("api", "up", "");
    std::thread::scope(|scope| {
        for t in 0..4u16 {
            let s = &s;
            scope.spawn(move || {
                for _ in 0..10_000 {
                    s.observe(if t % 2 == 0 { 200 } else { 418 }, ms(2));
                }
            });
        }
    });
    let samples = parse(&m.render());
    assert_eq!(
        value(&samples, REQUESTS_TOTAL, &[("code", "200")]),
        20_000.0
    );
    assert_eq!(
        value(&samples, REQUESTS_TOTAL, &[("code", "418")]),
        20_000.0
    );
    let count = value(&samples, "pointsman_request_duration_seconds_count", &[]);
    assert_eq!(count, 40_000.0);
}

#[test]
fn code_slots_match_common_codes() {
    for (i, &code) in COMMON_CODES.iter().enumerate() {
        assert_eq!(usize::from(CODE_SLOT[usize::from(code)]), i, "{code}");
    }
    let slotted = CODE_SLOT.iter().filter(|&&s| s != NO_SLOT).count();
    assert_eq!(slotted, COMMON_CODES.len(), "duplicate common code");
}
