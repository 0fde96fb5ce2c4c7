//! `pointsman check` warnings at their exact `FILE:LINE:COL`: shadowed
//! routes (conservative: only when an earlier route's matchers are a subset
//! of a later one's), overlapping namespace slices, and all-zero weights as
//! an error.

use crate::support;

use std::path::Path;
use support::check::{check, check_file};

const UPSTREAMS: &str = "upstreams:\n  web: { endpoints: [\"127.0.0.1:9001\"] }\n";
const VARIANTS: &str = "    variants: [{ name: x, weight: 1 }, { name: y, weight: 1 }]\n";

#[test]
fn a_route_behind_a_subset_of_its_matchers_is_shadowed() {
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}routes:
  - name: api
    match: {{ path_prefix: /api }}
    to: web
  - name: api-get
    match: {{ method: GET, path_prefix: /api }}
    to: web
"
    ));
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        [
            "ok: 2 routes, 1 upstreams, 0 experiments, 0 canaries",
            "DIR/r.yaml:7:5: warning: route `api-get` can never match: the earlier route `api` (DIR/r.yaml:4:5) matches every request it matches",
        ]
    );
}

#[test]
fn an_empty_match_shadows_every_later_route() {
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}routes:
  - name: all
    to: web
  - name: a
    match: {{ host: a.example.com }}
    to: web
  - name: b
    match: {{ path: /b }}
    to: web
"
    ));
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].starts_with("DIR/r.yaml:6:5: warning: route `a` can never match: the earlier route `all` (DIR/r.yaml:4:5)"), "{lines:?}");
    assert!(
        lines[2].starts_with("DIR/r.yaml:9:5: warning: route `b` can never match"),
        "{lines:?}"
    );
}

#[test]
fn no_warning_when_shadowing_is_not_provable() {
    // A narrower route first, then a wider one; different values; any/not.
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}routes:
  - name: narrow
    match: {{ path_prefix: /x, method: GET }}
    to: web
  - name: wide
    match: {{ path_prefix: /x }}
    to: web
  - name: other
    match: {{ path_prefix: /y }}
    to: web
  - name: either
    match: {{ any: [{{ path_prefix: /y }}, {{ path_prefix: /z }}] }}
    to: web
  - name: not-y
    match: {{ not: {{ path_prefix: /y }} }}
    to: web
"
    ));
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        ["ok: 5 routes, 1 upstreams, 0 experiments, 0 canaries"]
    );
}

/// Experiments `a`, `b`, ... in the namespace slices given, each behind a
/// route `r1`, `r2`, ... on `/a`, `/b`, ...
fn sliced_experiments(namespaces: &[&str]) -> String {
    let (mut experiments, mut routes) = (String::new(), String::new());
    for (i, ns) in namespaces.iter().enumerate() {
        let name = ["a", "b", "c"][i];
        experiments.push_str(&format!("  {name}:\n    namespace: [{ns}]\n{VARIANTS}"));
        routes.push_str(&format!(
            "  - name: r{}\n    match: {{ path_prefix: /{name} }}\n    to: web\n    experiment: {name}\n",
            i + 1
        ));
    }
    format!("{UPSTREAMS}experiments:\n{experiments}routes:\n{routes}")
}

#[test]
fn overlapping_namespace_slices_warn_at_the_later_experiment() {
    let (code, lines) = check_file(&sliced_experiments(&[
        "checkout, 0, 0.5",
        "checkout, 0.4, 1",
        "search, 0.4, 1",
    ]));
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        [
            "ok: 3 routes, 1 upstreams, 3 experiments, 0 canaries",
            "DIR/r.yaml:8:16: warning: experiment `b`: namespace `checkout` range [0.4, 1) overlaps experiment `a`'s [0, 0.5) (DIR/r.yaml:5:16); a user can be enrolled in both",
        ]
    );
}

#[test]
fn disjoint_namespace_slices_do_not_warn() {
    let (code, lines) = check_file(&sliced_experiments(&[
        "checkout, 0, 0.5",
        "checkout, 0.5, 1",
    ]));
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        ["ok: 2 routes, 1 upstreams, 2 experiments, 0 canaries"]
    );
}

#[test]
fn all_zero_weights_are_an_error_at_the_variants() {
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}experiments:
  a:
    variants: [{{ name: x, weight: 0 }}, {{ name: y, weight: 0 }}]
routes:
  - name: r1
    to: web
    experiment: a
"
    ));
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        ["DIR/r.yaml:5:15: error: experiment \"a\": every variant has weight 0"]
    );
}

#[test]
fn the_demo_config_has_no_warnings() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes/demo.yaml");
    let run = check(&demo);
    let stdout = run.stdout;
    assert_eq!(run.code, 0, "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("1 experiments, 1 canaries"), "{stdout}");
}
