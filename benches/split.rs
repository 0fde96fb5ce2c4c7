//! What sticky assignment adds to a request: `decide_experiment` and
//! `decide_canary` on a prepared `RequestContext`, next to the cost of
//! building the context alone. Sticky ids from a header, from a cookie, and
//! minted (random id plus `Set-Cookie`). Also the distinct-user set every
//! enrolled request goes through (`users/*`).

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use pointsman::compile::{Action, compile_text};
use pointsman::routing::RequestContext;
use pointsman::split::experiment::Mode;
use pointsman::split::{Purpose, decide_canary, decide_experiment};
use std::hint::black_box;
use std::net::IpAddr;

const RULES: &str = r#"
upstreams:
  a: { endpoints: ["127.0.0.1:9001"] }
  b: { endpoints: ["127.0.0.1:9002"] }
experiments:
  exp:
    sticky_on: [header:x-user-id, cookie:pm_uid]
    issue_cookie: pm_uid
    namespace: [ns, 0, 1]
    variants:
      - { name: control, weight: 1 }
      - { name: treat, weight: 1, to: b }
routes:
  - name: exp-route
    match: { path_prefix: /exp }
    to: a
    experiment: exp
  - name: shop
    canary:
      stable: a
      canary: b
      weight: 30
      sticky_on: [header:x-user-id, cookie:pm_uid]
      issue_cookie: pm_uid
"#;

fn bench(c: &mut Criterion) {
    let config = compile_text("split.yaml", RULES).unwrap().config;
    let routes = config.routes.routes();
    let (default, exp) = match &routes[0].action {
        Action::Experiment {
            default,
            experiment,
        } => (*default, experiment.clone()),
        _ => unreachable!(),
    };
    let Action::Canary(canary) = &routes[1].action else {
        unreachable!()
    };
    let method = Method::GET;
    let ip = IpAddr::from([127, 0, 0, 1]);
    let mut by_header = HeaderMap::new();
    by_header.insert("x-user-id", HeaderValue::from_static("user-123456"));
    let mut by_cookie = HeaderMap::new();
    by_cookie.insert(
        "cookie",
        HeaderValue::from_static("theme=dark; pm_uid=Zm9vYmFyYmF6cXV4; lang=en"),
    );
    let none = HeaderMap::new();
    let cases = [
        ("header", &by_header),
        ("cookie", &by_cookie),
        ("minted", &none),
    ];

    let mut g = c.benchmark_group("split");
    g.bench_function("context_only", |b| {
        b.iter(|| {
            let ctx = RequestContext::new(&method, "h", "/exp", None, &by_header, ip, None);
            black_box(ctx.path.len())
        })
    });
    for (name, headers) in cases {
        g.bench_function(format!("experiment/{name}"), |b| {
            b.iter(|| {
                let ctx = RequestContext::new(&method, "h", "/exp", None, headers, ip, None);
                black_box(
                    decide_experiment(default, &exp, Mode::Running, &ctx, false, Purpose::Serve)
                        .decision
                        .upstream,
                )
            })
        });
        g.bench_function(format!("canary/{name}"), |b| {
            b.iter(|| {
                let ctx = RequestContext::new(&method, "h", "/", None, headers, ip, None);
                black_box(
                    decide_canary(canary, 30.0, &ctx, false, Purpose::Serve)
                        .decision
                        .upstream,
                )
            })
        });
    }
    // The distinct-user set every enrolled request goes through: a user
    // seen before (the common case), and a new one.
    let users = pointsman::split::users::DistinctIds::new();
    for i in 0..100_000 {
        users.insert(0, &format!("seen-{i}"));
    }
    g.bench_function("users/seen", |b| {
        b.iter(|| black_box(users.insert(0, black_box("seen-4242"))))
    });
    let mut n = 0u64;
    g.bench_function("users/new", |b| {
        b.iter(|| {
            n += 1;
            black_box(users.insert(1, &n.to_string()))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
