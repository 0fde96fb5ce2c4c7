//! Records the git commit the binary is built from, for `--version` and
//! `pointsman_build_info` (SPEC 1, 9).
//!
//! `POINTSMAN_GIT_COMMIT` wins when set (a container build, whose context
//! has no `.git`, passes it as a build argument); otherwise `git rev-parse`
//! asks the checkout; outside one (a source tarball, `cargo install` from a
//! registry) the commit is `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=POINTSMAN_GIT_COMMIT");
    let commit = match std::env::var("POINTSMAN_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => from_git().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=POINTSMAN_GIT_COMMIT={commit}");
}

/// The short commit of HEAD, and rebuild triggers for when HEAD moves.
fn from_git() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it
    // names (a commit) and packed refs. Not the index: staging a file
    // would rebuild the crate.
    // (A path that does not exist would rerun this script on every build.)
    let watch = |p: PathBuf| {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
        watch(dir.join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from) {
        watch(common.join("packed-refs"));
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(common.join(head_ref));
        }
    }
    Some(commit)
}
