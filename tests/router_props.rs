//! Property tests of routing:
//! - `indexed_select_equals_linear_scan`: over random rule sets (hosts with
//!   wildcards or none, overlapping and identical path templates, prefixes,
//!   methods, a header test, host/path hidden in `any` / `not`) and random
//!   requests, `RouteTable::select` picks exactly the first route in file order
//!   whose match holds, and `trace` ends on that route. This covers the
//!   index's segment trie (buckets over 4 routes) and the allocation-free
//!   template matcher (`matchers` checks that one against matchit too).
//! - `double_negation`: `Not(Not(e))` matches exactly when `e` does.

use http::{HeaderMap, HeaderValue, Method};
use pointsman::compile::matchers::compile as compile_match;
use pointsman::config::raw::{self, OneOrMany, Spanned};
use pointsman::config::{Diagnostics, Location};
use pointsman::routing::{Expr, HasMatch, RequestContext, RouteTable};
use proptest::prelude::*;
use std::net::IpAddr;
use std::sync::Arc;

const HOSTS: &[&str] = &["a.com", "b.com", "x.a.com", "*.a.com", "*.x.a.com", "[::1]"];
const TEMPLATES: &[&str] = &[
    "/users/{id}",
    "/users/me",
    "/users/{uid}",
    "/users/{id}/posts",
    "/users/",
    "/src/{*f}",
    "/src/{file}",
    "/src/a",
    "/",
    "/{*all}",
    "/{seg}",
    "/{seg}/me",
    "/img/{n}.png",
    "/img/{*r}",
    "/img/x{n}",
    "/users/{id}/",
    "/a/b/c/{d}/e",
];
const PREFIXES: &[&str] = &["/users", "/src/", "/", "/img", "/users/me"];

const REQ_HOSTS: &[&str] = &[
    "a.com",
    "A.com:80",
    "b.com",
    "x.a.com",
    "y.x.a.com",
    "z.y.x.a.com",
    "c.com",
    "",
    "[::1]:8080",
];
const REQ_PATHS: &[&str] = &[
    "/",
    "/users",
    "/users/",
    "/users/me",
    "/users/42",
    "/users/42/posts",
    "/users/me/posts",
    "/src",
    "/src/",
    "/src/a",
    "/src/a/b",
    "/img/1.png",
    "/img/x",
    "/img/x1",
    "/imgx",
    "/me",
    "/x/me",
    "/users/42/",
    "/users//posts",
    "//",
    "/a/b/c/d/e",
    "/a/b/c//e",
];

fn sp<T>(v: T) -> Spanned<T> {
    Spanned::new(v, Location::UNKNOWN)
}

fn bsp<T>(v: T) -> Box<Spanned<T>> {
    Box::new(sp(v))
}

#[derive(Debug, Clone)]
enum PathRule {
    Template(&'static str),
    Prefix(&'static str),
}

#[derive(Debug, Clone)]
struct Rule {
    hosts: Option<Vec<&'static str>>,
    path: Option<PathRule>,
    methods: Option<Vec<&'static str>>,
    header: Option<Option<&'static str>>,
    /// 0: plain; 1: host and path inside `any` with the header; 2: path
    /// inside `not`; 3: nested `all`.
    shape: u8,
}

fn rule() -> impl Strategy<Value = Rule> {
    let hosts = prop_oneof![
        2 => Just(None),
        3 => prop::sample::select(HOSTS).prop_map(|h| Some(vec![h])),
        1 => prop::sample::subsequence(HOSTS, 2).prop_map(Some),
    ];
    let path = prop_oneof![
        1 => Just(None),
        4 => prop::sample::select(TEMPLATES).prop_map(|t| Some(PathRule::Template(t))),
        2 => prop::sample::select(PREFIXES).prop_map(|p| Some(PathRule::Prefix(p))),
    ];
    let methods = prop_oneof![
        3 => Just(None),
        1 => Just(Some(vec!["GET"])),
        1 => Just(Some(vec!["GET", "POST"])),
    ];
    let header = prop_oneof![
        3 => Just(None),
        1 => Just(Some(Some("1"))),
        1 => Just(Some(None)),
    ];
    let shape = prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)];
    (hosts, path, methods, header, shape).prop_map(|(hosts, path, methods, header, shape)| Rule {
        hosts,
        path,
        methods,
        header,
        shape,
    })
}

fn header_test(h: Option<&'static str>) -> raw::ValueTest {
    raw::ValueTest {
        name: Some(sp("x-t".to_owned())),
        equals: h.map(|v| sp(raw::Scalar::Str(v.to_owned()))),
        present: h.is_none().then(|| sp(true)),
        ..Default::default()
    }
}

fn to_raw(r: &Rule) -> raw::Match {
    let mut m = raw::Match::default();
    let mut host_path = raw::Match {
        host: r
            .hosts
            .as_ref()
            .map(|h| bsp(OneOrMany(h.iter().map(|s| s.to_string()).collect()))),
        ..Default::default()
    };
    match &r.path {
        Some(PathRule::Template(t)) => host_path.path = Some(bsp(t.to_string())),
        Some(PathRule::Prefix(p)) => host_path.path_prefix = Some(bsp(p.to_string())),
        None => {}
    }
    m.method = r
        .methods
        .as_ref()
        .map(|ms| bsp(OneOrMany(ms.iter().map(|s| s.to_string()).collect())));
    let header = r.header.map(|h| bsp(OneOrMany(vec![header_test(h)])));
    match r.shape {
        1 => {
            let alt = raw::Match {
                header: Some(bsp(OneOrMany(vec![header_test(Some("1"))]))),
                ..Default::default()
            };
            m.any = Some(vec![sp(host_path), sp(alt)]);
            m.header = header;
        }
        2 => {
            m.host = host_path.host;
            let p = raw::Match {
                path: host_path.path,
                path_prefix: host_path.path_prefix,
                ..Default::default()
            };
            m.not = Some(Box::new(sp(p)));
            m.header = header;
        }
        3 => {
            host_path.header = header;
            m.all = Some(vec![sp(host_path)]);
        }
        _ => {
            m.host = host_path.host;
            m.path = host_path.path;
            m.path_prefix = host_path.path_prefix;
            m.header = header;
        }
    }
    m
}

fn compile(r: &Rule) -> Expr {
    let file: Arc<str> = "props.yaml".into();
    let mut d = Diagnostics::default();
    let e = compile_match(&sp(to_raw(r)), &file, &mut d);
    assert!(!d.has_errors(), "{r:?}: {:?}", d.items());
    e
}

/// A route as the routing layer sees it: a name and a `match`.
struct Named {
    name: String,
    matcher: Expr,
}

impl HasMatch for Named {
    fn matcher(&self) -> &Expr {
        &self.matcher
    }
}

fn table(exprs: Vec<Expr>) -> RouteTable<Named> {
    let routes = exprs
        .into_iter()
        .enumerate()
        .map(|(i, matcher)| Named {
            name: format!("r{i}"),
            matcher,
        })
        .collect();
    RouteTable::new(routes)
}

#[derive(Debug, Clone)]
struct Req {
    host: &'static str,
    path: &'static str,
    method: Method,
    header: Option<&'static str>,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(REQ_HOSTS),
        prop::sample::select(REQ_PATHS),
        prop::sample::select(vec![Method::GET, Method::POST, Method::PUT]),
        prop::sample::select(vec![None, Some("1"), Some("0")]),
    )
        .prop_map(|(host, path, method, header)| Req {
            host,
            path,
            method,
            header,
        })
}

fn with_ctx<R>(req: &Req, f: impl FnOnce(&RequestContext<'_>) -> R) -> R {
    let mut headers = HeaderMap::new();
    if let Some(v) = req.header {
        headers.insert("x-t", HeaderValue::from_static(v));
    }
    let ip = IpAddr::from([127, 0, 0, 1]);
    let ctx = RequestContext::new(&req.method, req.host, req.path, None, &headers, ip, None);
    f(&ctx)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn indexed_select_equals_linear_scan(
        rules in prop::collection::vec(rule(), 0..40),
        reqs in prop::collection::vec(request(), 1..24),
    ) {
        let snap = table(rules.iter().map(compile).collect());
        for req in &reqs {
            with_ctx(req, |ctx| {
                let want = snap.routes().iter().position(|r| r.matcher.matches(ctx));
                let got = snap.select(ctx).map(|(i, _)| i);
                prop_assert_eq!(got, want, "request {:?}", req);
                let trace = snap.trace(ctx);
                match want {
                    Some(i) => {
                        prop_assert_eq!(trace.len(), i + 1);
                        prop_assert_eq!(trace[i].failed.as_deref(), None);
                    }
                    None => prop_assert_eq!(trace.len(), snap.routes().len()),
                }
                prop_assert!(trace.iter().rev().skip(1).all(|t| t.failed.is_some()));
                Ok(())
            })?;
        }
    }

    #[test]
    fn double_negation(rule in rule(), reqs in prop::collection::vec(request(), 1..16)) {
        let e = compile(&rule);
        let nn = Expr::Not(Box::new(Expr::Not(Box::new(e.clone()))));
        for req in &reqs {
            with_ctx(req, |ctx| {
                prop_assert_eq!(nn.matches(ctx), e.matches(ctx));
                prop_assert_eq!(nn.first_failure(ctx).is_none(), e.matches(ctx));
                Ok(())
            })?;
        }
    }
}

#[test]
fn first_declared_wins_over_more_specific() {
    let parse = |yaml: &str| {
        let m: Spanned<raw::Match> = serde_saphyr::from_str(yaml).unwrap();
        let file: Arc<str> = "t.yaml".into();
        let mut d = Diagnostics::default();
        let e = compile_match(&m, &file, &mut d);
        assert!(!d.has_errors());
        e
    };
    let snap = table(vec![
        parse("{ path: '/users/{id}' }"),
        parse("{ path: /users/me }"),
        parse("{ host: '*.example.com', path: '/src/{*f}' }"),
        parse("{ path: '/src/{file}' }"),
        parse("{ path_prefix: /api }"),
        parse("{}"),
    ]);
    let pick = |host: &'static str, path: &'static str| {
        let req = Req {
            host,
            path,
            method: Method::GET,
            header: None,
        };
        with_ctx(&req, |ctx| snap.select(ctx).map(|(_, r)| r.name.clone()))
    };
    assert_eq!(pick("h", "/users/me").as_deref(), Some("r0"));
    assert_eq!(pick("a.example.com", "/src/x").as_deref(), Some("r2"));
    assert_eq!(pick("example.com", "/src/x").as_deref(), Some("r3"));
    assert_eq!(pick("h", "/api").as_deref(), Some("r4"));
    assert_eq!(pick("h", "/api/v1").as_deref(), Some("r4"));
    assert_eq!(pick("h", "/apix").as_deref(), Some("r5"));
}
