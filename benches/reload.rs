//! Reload cost at 10,000 routes: read and parse the rule file, compile it,
//! link it to the running runtime (upstreams reused), and swap it in (goal:
//! under 100 ms). `compile_swap` starts from parsed files;
//! `load_compile_swap` includes reading and parsing, as a real reload does.
//!
//! On the shared 2-core dev machine (noisy: `reload_profile` under callgrind
//! gives repeatable instruction counts): `compile_swap_10k` ≈ 78 ms (was
//! ≈ 240 ms, and 2.7 s in a one-shot run, before the shadow check stopped
//! comparing every pair of routes), `load_compile_swap_10k` ≈ 170 ms (was
//! ≈ 570 ms), of which read + parse ≈ 100–200 ms. With metrics (a real
//! reload) compile + swap + `after_reload` adds ≈ 10 ms; the first compile
//! with metrics went from 4.7 s to ≈ 55 ms.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
#[path = "support/rules.rs"]
mod support;

use pointsman::compile;
use pointsman::config;
use pointsman::runtime::{Live, Runtime};
use std::time::{Duration, Instant};
use support::rules;

const ROUTES: usize = 10_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, rules(ROUTES)).expect("write");
    let runtime = Runtime::new(None);
    let load = || config::load(&path).expect("load");
    let first = compile::compile(load()).expect("compile");
    assert_eq!(first.summary.routes, ROUTES);
    let live = Live::new(runtime.link(first.config), runtime.clone());

    // What a reload does after reading: compile, link, swap.
    let compile_swap = |loaded: config::Loaded| {
        let compiled = compile::compile(loaded).expect("compile");
        drop(live.swap(runtime.link(compiled.config)));
    };
    let once = || {
        let t = Instant::now();
        let loaded = load();
        let parsed = t.elapsed();
        compile_swap(loaded);
        (parsed, t.elapsed())
    };
    let (parsed, total) = once();
    println!("reload of {ROUTES} routes: read+parse {parsed:?}, read+parse+compile+swap {total:?}");

    let mut g = c.benchmark_group("reload");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("compile_swap_10k", |b| {
        b.iter_batched(&load, &compile_swap, BatchSize::LargeInput)
    });
    g.bench_function("load_compile_swap_10k", |b| b.iter(&once));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
