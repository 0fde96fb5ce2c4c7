//! What recording metrics adds to one request, on a config linked to a
//! runtime with [`Metrics`] (handles resolved at link time) versus one
//! without (every handle `None`). The request path does the same steps as
//! the pipeline's record phase: take the route's arm series (an `Arc`
//! clone), observe status and duration once, drop it.
//!
//! `cargo bench --bench record`

use criterion::{Criterion, criterion_group, criterion_main};
use pointsman::compile::compile_text;
use pointsman::metrics::Metrics;
use pointsman::runtime::{Runtime, Snapshot};
use std::hint::black_box;
use std::sync::Arc;
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

fn compile(metrics: Option<Arc<Metrics>>) -> Option<Snapshot> {
    let config = compile_text("rules.yaml", RULES).ok()?.config;
    Some(Runtime::new(metrics).link(config))
}

/// The recording steps of one request on route 0, arm 0.
fn record(snapshot: &Snapshot, code: u16, took: Duration) {
    let series = snapshot
        .route_metrics(0)
        .and_then(|m| m.arms.first().cloned());
    if let Some(s) = series.as_ref().or(snapshot.metrics().none.as_ref()) {
        s.observe(code, took);
    }
}

fn bench(c: &mut Criterion) {
    let Ok(metrics) = Metrics::new() else { return };
    let (Some(with), Some(without)) = (compile(Some(metrics.clone())), compile(None)) else {
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
    c.bench_function("scrape::render (2 routes)", |b| {
        b.iter(|| black_box(pointsman::runtime::scrape::render(&metrics, &with)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
