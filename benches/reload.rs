//! Reload cost at 10,000 routes: read and parse the rule file, compile it
//! against the running snapshot (upstreams reused), and swap it in (goal:
//! under 100 ms). `compile_swap` starts from parsed files; `load_compile_swap`
//! includes reading and parsing, as a real reload does.

use criterion::{Criterion, criterion_group, criterion_main};
use pointsman::config;
use pointsman::router::compile::{self, CompileEnv};
use pointsman::server::Proxy;
use pointsman::split::CanaryRegistry;
use std::fmt::Write;
use std::time::{Duration, Instant};

const ROUTES: usize = 10_000;

/// A rule file with `n` routes over host, path templates and headers.
fn rules(n: usize) -> String {
    let mut s = String::from(
        "listen:\n  - bind: \"127.0.0.1:0\"\nupstreams:\n  a: { endpoints: [\"127.0.0.1:9001\"] }\n  b: { endpoints: [\"127.0.0.1:9002\"] }\nroutes:\n",
    );
    for i in 0..n {
        let to = if i % 2 == 0 { "a" } else { "b" };
        let m = match i % 3 {
            0 => format!(
                "{{ host: h{i}.example.com, path: \"/api/v{}/users/{{id}}\" }}",
                i % 7
            ),
            1 => format!("{{ path_prefix: /svc{i}/ }}"),
            _ => format!("{{ header: {{ name: x-tenant, equals: t{i} }} }}"),
        };
        let _ = writeln!(s, "  - name: r{i}\n    match: {m}\n    to: {to}");
    }
    s
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, rules(ROUTES)).expect("write");
    let registry = CanaryRegistry::new();
    let env = CompileEnv {
        previous: None,
        canaries: Some(&registry),
        ..Default::default()
    };
    let loaded = config::load(&path).expect("load");
    let first = compile::compile(&loaded, env).expect("compile");
    assert_eq!(first.summary.routes, ROUTES);
    let proxy = Proxy::new(first.snapshot);

    let once = || {
        let t = Instant::now();
        let loaded = config::load(&path).expect("load");
        let parsed = t.elapsed();
        let previous = proxy.snapshot();
        let env = CompileEnv {
            previous: Some(&previous),
            canaries: Some(&registry),
            ..Default::default()
        };
        let compiled = compile::compile(&loaded, env).expect("compile");
        proxy.store(compiled.snapshot);
        (parsed, t.elapsed())
    };
    let (parsed, total) = once();
    println!("reload of {ROUTES} routes: read+parse {parsed:?}, read+parse+compile+swap {total:?}");

    let mut g = c.benchmark_group("reload");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("compile_swap_10k", |b| {
        b.iter(|| {
            let previous = proxy.snapshot();
            let env = CompileEnv {
                previous: Some(&previous),
                canaries: Some(&registry),
                ..Default::default()
            };
            let compiled = compile::compile(&loaded, env).expect("compile");
            proxy.store(compiled.snapshot);
        })
    });
    g.bench_function("load_compile_swap_10k", |b| b.iter(&once));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
