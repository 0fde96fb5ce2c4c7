//! What recording metrics adds to one request, on a config compiled with
//! [`Metrics`] (handles resolved at compile time) versus one compiled
//! without (every handle `None`). The request path does the same steps as
//! `service::handle`: take the route's arm series and the upstream's error
//! handle (two `Arc` clones), observe status and duration once, drop both.
//!
//! `cargo bench --bench record`

use criterion::{Criterion, criterion_group, criterion_main};
use pointsman::metrics::Metrics;
use pointsman::reload;
use pointsman::router::Snapshot;
use pointsman::router::compile::CompileEnv;
use std::hint::black_box;
use std::time::Duration;

const RULES: &str = r#"
listen: [{ bind: "127.0.0.1:0" }]
upstreams:
  v1: { endpoints: ["127.0.0.1:9001"] }
  v2: { endpoints: ["127.0.0.1:9002"] }
routes:
  - name: api
    match: { path_prefix: /api }
    to: v1
  - name: web
    canary: { stable: v1, canary: v2, weight: 10 }
"#;

fn compile(metrics: Option<&Metrics>) -> Option<Snapshot> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).ok()?;
    let env = CompileEnv {
        metrics,
        ..CompileEnv::default()
    };
    reload::load_and_compile(&path, env)
        .ok()
        .map(|(c, _, _)| c.snapshot)
}

/// The recording steps of one request on route 0, arm 0, upstream 0.
fn record(snapshot: &Snapshot, code: u16, took: Duration) {
    let route = &snapshot.routes[0];
    let series = route.metrics.arms.first().cloned();
    let errors = snapshot.metrics.upstream_errors.first().cloned();
    if let Some(s) = series.as_ref().or(snapshot.metrics.none.as_ref()) {
        s.observe(code, took);
    }
    black_box(errors);
}

fn bench(c: &mut Criterion) {
    let Ok(metrics) = Metrics::new() else { return };
    let (Some(with), Some(without)) = (compile(Some(&metrics)), compile(None)) else {
        return;
    };
    let took = Duration::from_micros(1800);
    let mut g = c.benchmark_group("per-request recording");
    g.bench_function("compiled with metrics", |b| {
        b.iter(|| record(black_box(&with), black_box(200), black_box(took)))
    });
    g.bench_function("compiled without metrics", |b| {
        b.iter(|| record(black_box(&without), black_box(200), black_box(took)))
    });
    g.finish();

    // The scrape side: refresh (experiments, canaries) and render.
    c.bench_function("telemetry::render (2 routes)", |b| {
        b.iter(|| black_box(pointsman::telemetry::render(&metrics, &with)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
