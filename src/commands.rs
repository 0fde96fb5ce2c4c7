//! The `assign`, `diff` and `demo` commands' output.

use pointsman::app::Bound;
use pointsman::compile::{Action, Config, Route};
use pointsman::split::canary::def::arm_for_bucket;
use pointsman::split::sticky::mint_id;
use pointsman::split::{Arm, Experiment};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `assign`: `ID VARIANT BUCKET` per id, or observed vs configured shares.
pub(crate) fn assign(
    config: &Config,
    name: &str,
    sample: Option<usize>,
    ids: &[String],
) -> ExitCode {
    let Some(exp) = config.experiment(name) else {
        let known: Vec<&str> = config.experiments.iter().map(|e| &*e.name).collect();
        eprintln!(
            "error: unknown experiment {name:?} (defined: {})",
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

fn assign_line(exp: &Experiment, id: &str) -> String {
    let variant = exp
        .place(id)
        .ok()
        .and_then(|i| exp.variants.get(i))
        .map_or("-", |v| &*v.name);
    format!("{id} {variant} {:.4}", exp.bucket(id))
}

/// `diff`: routes added, removed and changed; for every experiment and
/// canary in both configs, who would change assignment.
pub(crate) fn diff(old: &Config, new: &Config, sample: usize) -> ExitCode {
    let describe =
        |s: &Config, r: &Route| format!("{} -> {}", r.matcher.summary(), action_text(s, r));
    let old_routes: BTreeMap<&str, String> = old
        .routes
        .routes()
        .iter()
        .map(|r| (&*r.name, describe(old, r)))
        .collect();
    let new_routes: BTreeMap<&str, String> = new
        .routes
        .routes()
        .iter()
        .map(|r| (&*r.name, describe(new, r)))
        .collect();
    println!("routes:");
    let mut any = false;
    for (name, text) in &new_routes {
        match old_routes.get(name) {
            None => println!("  + {name}: {text}"),
            Some(before) if before != text => println!("  ~ {name}: {before}  =>  {text}"),
            _ => continue,
        }
        any = true;
    }
    for name in old_routes.keys().filter(|n| !new_routes.contains_key(*n)) {
        println!("  - {name}");
        any = true;
    }
    if !any {
        println!("  (no changes)");
    }
    let ids: Vec<String> = (0..sample).map(|_| mint_id()).collect();
    for exp in &new.experiments {
        let Some(before) = old.experiments.iter().find(|e| e.name == exp.name) else {
            continue;
        };
        let variant = |e: &Experiment, id: &str| {
            e.place(id)
                .ok()
                .and_then(|i| e.variants.get(i))
                .map_or_else(|| "-".to_string(), |v| v.name.to_string())
        };
        let moves = count_moves(&ids, |id| (variant(before, id), variant(exp, id)));
        print_moves("experiment", &exp.name, sample, &moves);
    }
    for c in &new.canaries {
        let Some(before) = old.canary(&c.route) else {
            continue;
        };
        let (wb, wa) = (before.initial_weight(), c.initial_weight());
        let arm = |w: f64, id: &str| -> String {
            let a: Arm = arm_for_bucket(c.bucket(id), w);
            a.as_str().to_string()
        };
        let moves = count_moves(&ids, |id| (arm(wb, id), arm(wa, id)));
        print_moves("canary", &c.route, sample, &moves);
    }
    ExitCode::SUCCESS
}

fn count_moves(
    ids: &[String],
    f: impl Fn(&str) -> (String, String),
) -> BTreeMap<(String, String), usize> {
    let mut moves = BTreeMap::new();
    for id in ids {
        let (a, b) = f(id);
        if a != b {
            *moves.entry((a, b)).or_insert(0) += 1;
        }
    }
    moves
}

fn print_moves(kind: &str, name: &str, sample: usize, moves: &BTreeMap<(String, String), usize>) {
    let total: usize = moves.values().sum();
    let pct = |n: usize| {
        if sample == 0 {
            0.0
        } else {
            100.0 * n as f64 / sample as f64
        }
    };
    println!(
        "{kind} {name}: {:.2}% of users change assignment ({sample} sampled ids)",
        pct(total)
    );
    for ((from, to), n) in moves {
        println!("  {from} -> {to}: {:.2}%", pct(*n));
    }
}

fn action_text(s: &Config, r: &Route) -> String {
    let name = |id: usize| {
        s.upstreams
            .get(id)
            .map_or("?".to_string(), |u| u.name.to_string())
    };
    match &r.action {
        Action::Forward(u) => format!("to {}", name(*u)),
        Action::Experiment {
            default,
            experiment,
        } => {
            format!("to {} experiment {}", name(*default), experiment.name)
        }
        Action::Canary(c) => format!("canary {} / {}", name(c.stable), name(c.canary)),
        Action::Respond(x) => format!("respond {}", x.status.as_u16()),
        Action::Redirect(x) => format!(
            "redirect {} {}",
            x.status.as_u16(),
            x.location.to_str().unwrap_or("")
        ),
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
    println!("rules: {} (edit it: the proxy reloads)", config.display());
    println!("try:");
    for line in pointsman::demo::TRY {
        println!("  {line}");
    }
}
