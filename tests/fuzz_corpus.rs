//! The fuzz targets' seed corpora and kept crash inputs
//! (`fuzz/corpus/TARGET/*`, crash inputs named `regression-*`), replayed
//! through the same functions the cargo-fuzz targets call
//! (`pointsman::fuzzing`), so CI checks them on stable Rust without
//! running the fuzzer. One test per target.

use std::path::Path;

/// Runs every input of `target`'s corpus; at least one must exist.
fn replay(target: &str) {
    let (_, run) = pointsman::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{target}: empty corpus");
    for input in &inputs {
        let bytes = std::fs::read(input).expect("corpus input");
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target}: {} failed", input.display());
    }
    println!("{target}: {} inputs", inputs.len());
}

#[test]
fn rule_file_corpus() {
    replay("rule_file");
}

#[test]
fn path_corpus() {
    replay("path");
}

#[test]
fn host_corpus() {
    replay("host");
}

#[test]
fn query_cookie_corpus() {
    replay("query_cookie");
}

#[test]
fn sticky_corpus() {
    replay("sticky");
}

#[test]
fn matchers_corpus() {
    replay("matchers");
}

#[test]
fn every_target_has_a_corpus_test() {
    let names: Vec<&str> = pointsman::fuzzing::TARGETS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        names,
        [
            "rule_file",
            "path",
            "host",
            "query_cookie",
            "sticky",
            "matchers"
        ]
    );
}
