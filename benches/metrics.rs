//! The request path's cost of recording: `RequestSeries::observe`.
//!
//! `cargo bench --bench metrics`

use criterion::{Criterion, criterion_group, criterion_main};
use pointsman::metrics::Metrics;
use std::hint::black_box;
use std::time::Duration;

fn observe(c: &mut Criterion) {
    let Ok(metrics) = Metrics::new() else {
        return;
    };
    let series = metrics.series("checkout", "shop-v2", "canary");
    let mut group = c.benchmark_group("RequestSeries::observe");
    group.bench_function("common code (200)", |b| {
        b.iter(|| series.observe(black_box(200), black_box(Duration::from_micros(1800))))
    });
    group.bench_function("rare code (418)", |b| {
        b.iter(|| series.observe(black_box(418), black_box(Duration::from_micros(1800))))
    });
    group.bench_function("slow request (12 s)", |b| {
        b.iter(|| series.observe(black_box(504), black_box(Duration::from_secs(12))))
    });
    group.finish();

    // What a scrape costs with 1000 series that have seen traffic.
    for i in 0..1000 {
        metrics
            .series(&format!("route-{i}"), "up", "")
            .observe(200, Duration::from_millis(3));
    }
    c.bench_function("Metrics::render (1000 series)", |b| {
        b.iter(|| black_box(metrics.render()))
    });
}

criterion_group!(benches, observe);
criterion_main!(benches);
