//! One reload, for profilers: criterion's repetitions are too slow under
//! callgrind. Builds the `reload` bench's rule file, compiles it once (the
//! running config), then measures one step in `measured`, which callgrind
//! can isolate:
//!
//! ```text
//! cargo bench --bench reload_profile --no-run
//! RELOAD_PROFILE=compile valgrind --tool=callgrind \
//!     --toggle-collect='reload_profile::measured*' target/release/deps/reload_profile-*
//! ```
//!
//! `RELOAD_PROFILE` picks the step: `parse` (read + parse), `compile`
//! (compile + link + swap, no metrics, as the `reload` bench), `metrics`
//! (compile + link + swap + `after_reload` with metrics, as a real reload),
//! `first` (the first compile + link with metrics, as at start-up).
//! `RELOAD_ROUTES` sets the route count (10,000).

#[path = "support/rules.rs"]
mod support;

use pointsman::compile;
use pointsman::config::{self, Loaded};
use pointsman::metrics::Metrics;
use pointsman::runtime::{Live, Runtime};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq)]
enum Step {
    Parse,
    Compile,
    Metrics,
    First,
}

fn main() {
    let step = match std::env::var("RELOAD_PROFILE").as_deref() {
        Ok("parse") => Step::Parse,
        Ok("metrics") => Step::Metrics,
        Ok("first") => Step::First,
        _ => Step::Compile,
    };
    let n: usize = std::env::var("RELOAD_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, support::rules(n)).expect("write");
    let metrics = Metrics::new().expect("metrics");
    let with_metrics = matches!(step, Step::Metrics | Step::First);
    let runtime = Runtime::new(with_metrics.then(|| metrics.clone()));
    let load = || config::load(&path).expect("load");
    if step == Step::First {
        let t = Instant::now();
        measured(step, &path, load(), &runtime, None);
        println!("first compile of {n} routes (metrics): {:?}", t.elapsed());
        return;
    }
    let first = compile::compile(load()).expect("compile");
    assert_eq!(first.summary.routes, n);
    let live = Live::new(runtime.link(first.config), runtime.clone());
    let loaded = load();
    let t = Instant::now();
    measured(step, &path, loaded, &runtime, Some(&live));
    println!(
        "{} of {n} routes: {:?}",
        match step {
            Step::Parse => "read+parse",
            Step::Compile => "compile+link+swap",
            _ => "compile+link+swap+after_reload (metrics)",
        },
        t.elapsed()
    );
}

/// The step being measured (callgrind: `--toggle-collect` on this).
#[inline(never)]
fn measured(step: Step, path: &Path, loaded: Loaded, runtime: &Arc<Runtime>, live: Option<&Live>) {
    if step == Step::Parse {
        let loaded = config::load(path).expect("load");
        assert!(!loaded.sources.is_empty());
        return;
    }
    let compiled = compile::compile(loaded).expect("compile");
    let snapshot = runtime.link(compiled.config);
    let Some(live) = live else {
        std::hint::black_box(&snapshot);
        return;
    };
    drop(live.swap(snapshot));
    if step == Step::Metrics
        && let Some(m) = runtime.metrics()
    {
        let active = live.snapshot();
        pointsman::runtime::scrape::after_reload(m, Some(&active), 2);
    }
}
