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
//! (compile + swap, no metrics, as the `reload` bench), `metrics` (compile +
//! swap + `after_reload` with metrics, as a real reload), `first` (the first
//! compile with metrics, as at start-up). `RELOAD_ROUTES` sets the route
//! count (10,000).

#[path = "support/rules.rs"]
mod support;

use pointsman::config::{self, Loaded};
use pointsman::metrics::Metrics;
use pointsman::router::compile::{self, CompileEnv};
use pointsman::server::Proxy;
use pointsman::split::CanaryRegistry;
use std::path::Path;
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
    let registry = CanaryRegistry::new();
    let metrics = Metrics::new().expect("metrics");
    let with_metrics = matches!(step, Step::Metrics | Step::First);
    let m = with_metrics.then_some(&*metrics);
    let loaded = config::load(&path).expect("load");
    let env = CompileEnv {
        previous: None,
        canaries: Some(&registry),
        metrics: m,
    };
    if step == Step::First {
        let t = Instant::now();
        let proxy = measured(step, &path, &loaded, env, None);
        println!("first compile of {n} routes (metrics): {:?}", t.elapsed());
        drop(proxy);
        return;
    }
    let first = compile::compile(&loaded, env).expect("compile");
    assert_eq!(first.summary.routes, n);
    let proxy = Proxy::with_metrics(first.snapshot, with_metrics.then(|| metrics.clone()));
    let t = Instant::now();
    measured(step, &path, &loaded, env, Some(&proxy));
    println!(
        "{} of {n} routes: {:?}",
        match step {
            Step::Parse => "read+parse",
            Step::Compile => "compile+swap",
            _ => "compile+swap+after_reload (metrics)",
        },
        t.elapsed()
    );
}

/// The step being measured (callgrind: `--toggle-collect` on this).
#[inline(never)]
fn measured(
    step: Step,
    path: &Path,
    loaded: &Loaded,
    env: CompileEnv<'_>,
    proxy: Option<&Proxy>,
) -> Option<Proxy> {
    if step == Step::Parse {
        let loaded = config::load(path).expect("load");
        assert!(!loaded.sources.is_empty());
        return None;
    }
    let Some(proxy) = proxy else {
        let compiled = compile::compile(loaded, env).expect("compile");
        std::hint::black_box(&compiled);
        return None;
    };
    let previous = proxy.snapshot();
    let env = CompileEnv {
        previous: Some(&previous),
        ..env
    };
    let compiled = compile::compile(loaded, env).expect("compile");
    proxy.store(compiled.snapshot);
    if step == Step::Metrics {
        let active = proxy.snapshot();
        pointsman::telemetry::after_reload(proxy.metrics().map(|m| &**m), Some(&active), 2);
    }
    None
}
