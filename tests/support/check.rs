//! `pointsman check` runs.

use super::binary::run_cli;
use std::path::Path;

/// What one `pointsman check` printed, and its exit code.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Every line printed (stdout, then stderr), `dir` written as `DIR`.
    pub fn lines(&self, dir: &Path) -> Vec<String> {
        let d = dir.display().to_string();
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .map(|l| l.replace(&d, "DIR"))
            .collect()
    }
}

/// `pointsman check --config CONFIG`.
pub fn check(config: &Path) -> Run {
    let config = config.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = run_cli(&["check", "--config", config], None);
    Run {
        code,
        stdout,
        stderr,
    }
}

/// Checks `config` and returns (exit code, every line with its folder as
/// `DIR`).
pub fn check_lines(config: &Path) -> (i32, Vec<String>) {
    let run = check(config);
    (run.code, run.lines(config.parent().expect("a folder")))
}

/// Writes `text` to `r.yaml` in a temporary folder and checks it.
pub fn check_file(text: &str) -> (i32, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("r.yaml");
    std::fs::write(&f, text).expect("write rule file");
    check_lines(&f)
}
