//! `pointsman check` on real files: exit codes, the `ok:` line, and every
//! error and warning at its exact `FILE:LINE:COL`.

use crate::support;

use std::path::{Path, PathBuf};
use support::check::{check, check_file};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write rule file");
    p
}

const UPSTREAMS: &str = "upstreams:\n  web: { endpoints: [\"127.0.0.1:9001\"] }\n";

#[test]
fn valid_config_prints_ok_and_exits_0() {
    let (code, lines) = check_file(&format!("{UPSTREAMS}routes:\n  - name: a\n    to: web\n"));
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines,
        ["ok: 1 routes, 1 upstreams, 0 experiments, 0 canaries"]
    );
}

#[test]
fn missing_config_exits_1() {
    let run = check(Path::new("/nonexistent/pointsman/routes"));
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .starts_with("/nonexistent/pointsman/routes:1:1: error: cannot read config"),
        "{}",
        run.stdout
    );
}

#[test]
fn unknown_key_is_an_error_at_its_position() {
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}routes:\n  - name: a\n    to: web\n    tmeout: 5s\n"
    ));
    assert_eq!(code, 1);
    assert!(
        lines[0].starts_with("DIR/r.yaml:6:5: error: unknown field `tmeout`"),
        "{lines:?}"
    );
}

#[test]
fn undefined_upstream_names_the_line_and_the_known_ones() {
    let (code, lines) = check_file(&format!("{UPSTREAMS}routes:\n  - name: a\n    to: wbe\n"));
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        ["DIR/r.yaml:5:9: error: undefined upstream `wbe` (defined: web)"]
    );
}

#[test]
fn duplicate_route_name_reports_both_places() {
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}routes:\n  - name: a\n    to: web\n  - name: a\n    to: web\n"
    ));
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        ["DIR/r.yaml:6:11: error: duplicate route name `a` (first defined at DIR/r.yaml:4:11)"]
    );
}

#[test]
fn reserved_route_names_are_errors() {
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}routes:\n  - name: fallback\n    to: web\n  - name: none\n    to: web\n"
    ));
    assert_eq!(code, 1);
    assert!(
        lines[0].starts_with("DIR/r.yaml:4:11: error: route name `fallback` is reserved"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("DIR/r.yaml:6:11: error: route name `none` is reserved"),
        "{lines:?}"
    );
}

#[test]
fn action_shape_must_be_exactly_one() {
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}routes:\n  - name: a\n  - name: b\n    to: web\n    respond: {{ status: 200 }}\n"
    ));
    assert_eq!(code, 1);
    assert!(
        lines[0].starts_with("DIR/r.yaml:4:5: error: route `a` has no action"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("DIR/r.yaml:5:5: error: route `b` has several actions (to, respond)"),
        "{lines:?}"
    );
}

#[test]
fn bad_values_are_reported_where_they_are() {
    let (code, lines) = check_file(
        "upstreams:\n  web: { endpoints: [\"nohost\"], balance: fastest, connect_timeout: 2 s }\n\
         limits: { max_header_bytes: 100 }\nroutes:\n  - name: a\n    to: web\n    strip_prefix: api\n",
    );
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines[0].starts_with("DIR/r.yaml:2:22: error: invalid endpoint `nohost`"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("DIR/r.yaml:2:42: error: unknown balance `fastest`"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("DIR/r.yaml:2:68: error: invalid duration \"2 s\""),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("DIR/r.yaml:3:29: error: max_header_bytes must be at least 8192"),
        "{lines:?}"
    );
    assert!(
        lines[4].starts_with("DIR/r.yaml:7:19: error: strip_prefix must start with `/`"),
        "{lines:?}"
    );
}

#[test]
fn unused_upstream_is_a_warning() {
    let (code, lines) = check_file(&format!(
        "{UPSTREAMS}  spare: {{ endpoints: [\"127.0.0.1:9002\"] }}\nroutes:\n  - name: a\n    to: web\n"
    ));
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        [
            "ok: 1 routes, 2 upstreams, 0 experiments, 0 canaries",
            "DIR/r.yaml:3:3: warning: upstream `spare` is not used by any route"
        ]
    );
}

#[test]
fn directory_merges_files_in_name_order_and_skips_dot_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "10-upstreams.yaml", UPSTREAMS);
    write(
        dir.path(),
        "20-routes.yml",
        "routes:\n  - name: a\n    to: web\n",
    );
    write(dir.path(), ".hidden.yaml", "this: is not read\n");
    write(dir.path(), "notes.txt", "not yaml\n");
    let run = check(dir.path());
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        run.stdout.trim(),
        "ok: 1 routes, 1 upstreams, 0 experiments, 0 canaries"
    );
}

#[test]
fn a_map_key_or_singleton_defined_in_two_files_names_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "a.yaml",
        &format!("{UPSTREAMS}admin: {{ bind: \"127.0.0.1:9901\" }}\n"),
    );
    write(
        dir.path(),
        "b.yaml",
        &format!(
            "{UPSTREAMS}admin: {{ bind: \"127.0.0.1:9902\" }}\nroutes:\n  - name: a\n    to: web\n"
        ),
    );
    let run = check(dir.path());
    let lines = run.lines(dir.path());
    assert_eq!(run.code, 1, "{lines:?}");
    assert_eq!(
        lines,
        [
            "DIR/b.yaml:2:3: error: upstream `web` is already defined at DIR/a.yaml:2:3",
            "DIR/b.yaml:3:8: error: `admin` is already defined in DIR/a.yaml; it may appear in one file only",
        ]
    );
}

#[test]
fn every_example_and_the_demo_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .expect("examples dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.push(root.join("routes/demo.yaml"));
    assert!(files.len() >= 6, "expected the five examples and the demo");
    for f in files {
        let run = check(&f);
        assert_eq!(run.code, 0, "{}: {}", f.display(), run.stdout);
        assert!(
            run.stdout.starts_with("ok: "),
            "{}: {}",
            f.display(),
            run.stdout
        );
    }
}
