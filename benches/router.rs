//! Routing decision cost at 10 to 100,000 routes:
//! - `host_path`: each route has its own host and a path template (indexed);
//!   requests hit the last route's host, so a linear scan would try them all.
//! - `header`: predicate-only routes (a header test each), which no index
//!   can narrow: the cost of evaluating every route in order.
//!
//! Also prints how long compiling and indexing each rule set takes.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use pointsman::compile::matchers::compile as compile_match;
use pointsman::compile::{Action, Respond, Route};
use pointsman::config::raw::{self, OneOrMany, Spanned};
use pointsman::config::{Diagnostics, Location};
use pointsman::routing::{RequestContext, RouteTable};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

const SIZES: &[usize] = &[10, 1_000, 10_000, 100_000];

fn sp<T>(v: T) -> Spanned<T> {
    Spanned::new(v, Location::UNKNOWN)
}

fn bsp<T>(v: T) -> Box<Spanned<T>> {
    Box::new(sp(v))
}

fn host_path_rule(i: usize) -> raw::Match {
    let path = match i % 4 {
        0 => format!("/api/v{}/users/{{id}}", i % 7),
        1 => "/static/{*rest}".to_owned(),
        2 => format!("/svc{i}/items/{{item}}/detail"),
        _ => "/health".to_owned(),
    };
    raw::Match {
        host: Some(bsp(OneOrMany(vec![format!("h{i}.example.com")]))),
        path: Some(bsp(path)),
        ..Default::default()
    }
}

fn header_rule(i: usize) -> raw::Match {
    raw::Match {
        header: Some(bsp(OneOrMany(vec![raw::ValueTest {
            name: Some(sp("x-tenant".to_owned())),
            equals: Some(sp(raw::Scalar::Str(format!("t{i}")))),
            ..Default::default()
        }]))),
        ..Default::default()
    }
}

fn snapshot(n: usize, rule: fn(usize) -> raw::Match) -> RouteTable<Route> {
    let file: Arc<str> = "bench.yaml".into();
    let raws: Vec<Spanned<raw::Match>> = (0..n).map(|i| sp(rule(i))).collect();
    let start = Instant::now();
    let mut diags = Diagnostics::default();
    let routes: Vec<Route> = raws
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let respond = Action::Respond(Box::new(Respond {
                status: StatusCode::OK,
                body: Default::default(),
                headers: vec![],
            }));
            Route::new(
                &format!("r{i}"),
                compile_match(m, &file, &mut diags),
                respond,
            )
        })
        .collect();
    let compiled = start.elapsed();
    let snapshot = RouteTable::new(routes);
    eprintln!(
        "{n} routes: compile {compiled:?}, index {:?}, trie nodes {}",
        start.elapsed() - compiled,
        snapshot.index().trie_nodes()
    );
    assert!(!diags.has_errors());
    snapshot
}

fn bench(c: &mut Criterion) {
    let method = Method::GET;
    let ip = IpAddr::from([127, 0, 0, 1]);
    let mut group = c.benchmark_group("select");
    for &n in SIZES {
        let snap = snapshot(n, host_path_rule);
        let last = n - 1;
        let host = format!("h{last}.example.com");
        let path = match last % 4 {
            0 => format!("/api/v{}/users/42", last % 7),
            1 => "/static/css/site.css".to_owned(),
            2 => format!("/svc{last}/items/9/detail"),
            _ => "/health".to_owned(),
        };
        let headers = HeaderMap::new();
        group.bench_with_input(BenchmarkId::new("host_path", n), &n, |b, _| {
            b.iter(|| {
                let ctx = RequestContext::new(&method, &host, &path, None, &headers, ip, None);
                black_box(snap.select(&ctx).map(|(_, r)| r.name.len()))
            })
        });

        // A linear scan over predicates: skip the largest size, which only
        // says the same thing slower.
        if n <= 10_000 {
            let snap = snapshot(n, header_rule);
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-tenant",
                HeaderValue::from_str(&format!("t{last}")).unwrap(),
            );
            group.bench_with_input(BenchmarkId::new("header", n), &n, |b, _| {
                b.iter(|| {
                    let ctx = RequestContext::new(&method, "h", "/", None, &headers, ip, None);
                    black_box(snap.select(&ctx).map(|(_, r)| r.name.len()))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
