//! The `assign`, `diff`, `demo`, `reload` and `health` commands' output.

use pointsman::app::Bound;
use pointsman::compile::Config;
use pointsman::reload::client::{self, Outcome, TargetError};
use pointsman::split::canary::def::arm_for_bucket;
use pointsman::split::sticky::mint_id;
use pointsman::split::{Arm, CanaryDef, Experiment};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `assign`: `ID VARIANT BUCKET` per id, or observed vs configured shares,
/// for an experiment or a canary route (`stable` / `canary` at its
/// starting weight).
pub(crate) fn assign(
    config: &Config,
    name: &str,
    sample: Option<usize>,
    ids: &[String],
) -> ExitCode {
    if let Some(canary) = config.canary(name) {
        assign_canary(canary, sample, ids);
        return ExitCode::SUCCESS;
    }
    let Some(exp) = config.experiment(name) else {
        let mut known: Vec<&str> = config.experiments.iter().map(|e| &*e.name).collect();
        known.extend(config.canaries.iter().map(|c| &*c.route));
        eprintln!(
            "error: unknown experiment {name:?} (experiments and canary routes: {})",
            known.join(", ")
        );
        return ExitCode::from(2);
    };
    match sample {
        Some(n) => {
            let observed = exp.sample_shares(n);
            let ns_width = exp.namespace.as_ref().map_or(1.0, |(_, a, b)| b - a);
            println!("{:<16} {:>9} {:>11}", "variant", "observed", "configured");
            let mut enrolled = 0.0;
            for ((v, share), range) in exp.variants.iter().zip(&observed).zip(exp.ranges()) {
                let configured = (range.1 - range.0) * ns_width;
                enrolled += configured;
                println!("{:<16} {:>9.4} {:>11.4}", v.name, share, configured);
            }
            let rest: f64 = 1.0 - observed.iter().sum::<f64>();
            println!(
                "{:<16} {:>9.4} {:>11.4}",
                "- (not enrolled)",
                rest,
                1.0 - enrolled
            );
            println!("{n} random ids; targeting is not applied");
        }
        None => {
            for id in ids {
                println!("{}", assign_line(exp, id));
            }
        }
    }
    ExitCode::SUCCESS
}

fn assign_canary(c: &CanaryDef, sample: Option<usize>, ids: &[String]) {
    let weight = c.initial_weight();
    let arm = |id: &str| arm_for_bucket(c.bucket(id), weight);
    match sample {
        Some(n) => {
            let on = (0..n).filter(|_| arm(&mint_id()) == Arm::Canary).count();
            let share = if n == 0 { 0.0 } else { on as f64 / n as f64 };
            println!("{:<16} {:>9} {:>11}", "variant", "observed", "configured");
            println!(
                "{:<16} {:>9.4} {:>11.4}",
                "stable",
                1.0 - share,
                1.0 - weight / 100.0
            );
            println!("{:<16} {:>9.4} {:>11.4}", "canary", share, weight / 100.0);
            println!("{n} random ids at the starting weight ({weight}%)");
        }
        None => {
            for id in ids {
                println!("{id} {} {:.4}", arm(id).as_str(), c.bucket(id));
            }
        }
    }
}

fn assign_line(exp: &Experiment, id: &str) -> String {
    let variant = exp
        .place(id)
        .ok()
        .and_then(|i| exp.variants.get(i))
        .map_or("-", |v| &*v.name);
    format!("{id} {variant} {:.4}", exp.bucket(id))
}

/// `diff`: what changes between two configs; with `exit_code`, exits 1
/// when anything differs.
pub(crate) fn diff(old: &Config, new: &Config, sample: usize, exit_code: bool) -> ExitCode {
    let d = pointsman::diff::ConfigDiff::new(old, new, sample);
    print!("{d}");
    if exit_code && d.differs() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The demo's rule file: `routes/demo.yaml` when present, else the built-in
/// copy written to a temporary directory.
pub(crate) fn demo_config() -> std::io::Result<PathBuf> {
    let local = Path::new("routes/demo.yaml");
    if local.is_file() {
        return Ok(local.to_path_buf());
    }
    let dir = std::env::temp_dir().join(format!("pointsman-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("demo.yaml");
    std::fs::write(&path, pointsman::demo::DEMO_RULES)?;
    Ok(path)
}

/// What the demo prints once it serves.
pub(crate) fn print_demo_banner(config: &Path, bound: &Bound) {
    println!(
        "pointsman demo: upstreams v1 on {} and v2 on {}",
        pointsman::demo::V1,
        pointsman::demo::V2
    );
    for l in &bound.listeners {
        println!("proxy on http://{l}   admin on http://{}", bound.admin);
    }
    println!(
        "dashboard: http://{}/ (open it in a browser: routes, canary, experiment, upstreams)",
        bound.admin
    );
    println!("rules: {} (edit it: the proxy reloads)", config.display());
    println!("try:");
    for line in pointsman::demo::TRY {
        println!("  {line}");
    }
}

/// `health`: exit 0 when the running proxy's `/readyz` answers 200.
pub(crate) fn health(config: &Path) -> ExitCode {
    let target = match client::target(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match client::ready(&target) {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("error: {why}");
            ExitCode::from(1)
        }
    }
}

/// `reload`: asks the running proxy to reload and prints its verdict: the
/// new generation (exit 0), the config's errors (exit 1), or why no proxy
/// answered (exit 3). A config whose `admin` section cannot be read is
/// exit 1, as for `check`.
pub(crate) fn reload(config: &Path) -> ExitCode {
    let target = match client::target(config) {
        Ok(t) => t,
        Err(TargetError::Config(errors)) => {
            for d in &errors {
                println!("{d}");
            }
            eprintln!("error: cannot tell where the proxy's admin listener is");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match client::request(&target) {
        Outcome::Reloaded(status) => {
            let sha = status["sha256"].as_str().unwrap_or("");
            println!(
                "reloaded: generation {} (sha256 {})",
                status["generation"],
                sha.get(..12).unwrap_or(sha)
            );
            ExitCode::SUCCESS
        }
        Outcome::Refused(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!(
                "error: the proxy on {} refused the config ({} error{}); the old config keeps serving",
                target.addr,
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
        Outcome::Unauthorized(status) => {
            let why = match (status, &target.token) {
                (401, None) => "the proxy wants a token and the config names no admin.token_file",
                (401, Some(_)) => "the proxy did not take the token",
                _ => "the proxy refused the token of admin.token_file",
            };
            eprintln!("error: {why} (HTTP {status} from {})", target.addr);
            ExitCode::from(3)
        }
        Outcome::NoAnswer(why) => {
            eprintln!("error: {why}");
            ExitCode::from(3)
        }
    }
}
