//! `match` mappings → [`Expr`]: every problem reported with its position.
//!
//! Compile decisions worth knowing:
//! - A mapping's matchers, and the items of `all`, are flattened into one
//!   [`Expr::All`]; a lone matcher is kept as itself. An empty mapping is
//!   [`Expr::always`].
//! - `body_json` tests take exactly one of `equals`, `prefix`, `suffix`,
//!   `contains`, `regex`, `in`, `present`, or a numeric range made of any of
//!   `gt`, `gte`, `lt`, `lte` together (e.g. `gt: 1, lte: 5`).
//! - Nesting of `all` / `any` / `not` is limited to [`MAX_DEPTH`] levels.

use crate::config::raw::{self, Spanned};
use crate::config::{Diagnostics, Location};
use crate::routing::exact_slice;
use crate::routing::expr::Expr;
use crate::routing::matchers::{
    HostMatch, JsonTest, Leaf, PathPrefix, PathTemplate, TextOp, TextTest, ValueTest, build_regex,
    is_token, parse_cidr,
};
use http::{HeaderName, Method};
use std::sync::Arc;

/// Deepest accepted nesting of `all` / `any` / `not`.
pub const MAX_DEPTH: usize = 64;

// === compile ===

/// Compiles a `match` mapping, reporting every problem (with its position)
/// to `diags`. When errors were reported the returned expression is only a
/// placeholder and must not be used.
pub fn compile(m: &Spanned<raw::Match>, file: &Arc<str>, diags: &mut Diagnostics) -> Expr {
    let mut c = Compiler { file, diags };
    c.mapping(m, 0)
}

struct Compiler<'a> {
    file: &'a Arc<str>,
    diags: &'a mut Diagnostics,
}

/// Which value a test reads.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Header,
    Query,
    Cookie,
    BodyJson,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::Query => "query",
            Kind::Cookie => "cookie",
            Kind::BodyJson => "body_json",
        }
    }
}

impl Compiler<'_> {
    fn error(&mut self, at: Location, msg: impl Into<String>) {
        self.diags.error(self.file, at, msg);
    }

    fn mapping(&mut self, m: &Spanned<raw::Match>, depth: usize) -> Expr {
        if depth > MAX_DEPTH {
            self.error(
                m.referenced,
                format!(
                    "match is nested more than {MAX_DEPTH} levels deep (all/any/not); flatten it"
                ),
            );
            return Expr::always();
        }
        let raw = &m.value;
        let mut xs: Vec<Expr> = Vec::new();
        if let Some(h) = &raw.host {
            if h.value.0.is_empty() {
                self.error(h.referenced, "host: the list is empty");
            }
            match HostMatch::new(&h.value.0) {
                Ok(hm) => xs.push(Expr::Leaf(Leaf::Host(hm))),
                Err(e) => self.error(h.referenced, e),
            }
        }
        if let Some(p) = &raw.path {
            match PathTemplate::new(&p.value) {
                Ok(t) => xs.push(Expr::Leaf(Leaf::Path(t))),
                Err(e) => self.error(p.referenced, e),
            }
        }
        if let Some(p) = &raw.path_prefix {
            match PathPrefix::new(&p.value) {
                Ok(pp) => xs.push(Expr::Leaf(Leaf::PathPrefix(pp))),
                Err(e) => self.error(p.referenced, e),
            }
        }
        if let Some(r) = &raw.path_regex {
            match build_regex(&r.value, false) {
                Ok(re) => xs.push(Expr::Leaf(Leaf::PathRegex(Box::new(re)))),
                Err(e) => self.error(
                    r.referenced,
                    format!("path_regex: invalid regex: {}", regex_message(&e)),
                ),
            }
        }
        if let Some(ms) = &raw.method {
            self.methods(ms, &mut xs);
        }
        for (kind, tests) in [
            (Kind::Header, &raw.header),
            (Kind::Query, &raw.query),
            (Kind::Cookie, &raw.cookie),
            (Kind::BodyJson, &raw.body_json),
        ] {
            if let Some(tests) = tests {
                if tests.value.0.is_empty() {
                    self.error(
                        tests.referenced,
                        format!("{}: the list is empty", kind.key()),
                    );
                }
                for t in &tests.value.0 {
                    if let Some(leaf) = self.value_test(kind, t, tests.referenced) {
                        xs.push(Expr::Leaf(leaf));
                    }
                }
            }
        }
        if let Some(ips) = &raw.client_ip {
            if ips.value.0.is_empty() {
                self.error(ips.referenced, "client_ip: the list is empty");
            }
            let mut nets = Vec::new();
            for s in &ips.value.0 {
                match parse_cidr(s) {
                    Ok(n) => nets.push(n),
                    Err(e) => self.error(ips.referenced, e),
                }
            }
            xs.push(Expr::Leaf(Leaf::ClientIp(exact_slice(nets))));
        }
        if let Some(all) = &raw.all {
            if all.is_empty() {
                self.error(
                    m.referenced,
                    "all: the list is empty; give at least one match mapping or remove `all`",
                );
            }
            for item in all {
                match self.mapping(item, depth + 1) {
                    Expr::All(inner) => xs.extend(inner.into_vec()),
                    other => xs.push(other),
                }
            }
        }
        if let Some(any) = &raw.any {
            if any.is_empty() {
                self.error(
                    m.referenced,
                    "any: the list is empty; give at least one match mapping or remove `any`",
                );
            }
            let mut alts: Vec<Expr> = any.iter().map(|i| self.mapping(i, depth + 1)).collect();
            if alts.len() == 1 {
                xs.extend(alts.pop());
            } else {
                xs.push(Expr::Any(exact_slice(alts)));
            }
        }
        if let Some(not) = &raw.not {
            let inner = self.mapping(not, depth + 1);
            xs.push(Expr::Not(Box::new(inner)));
        }
        if xs.len() == 1 {
            xs.pop().unwrap_or_else(Expr::always)
        } else {
            // Kept for the config's lifetime: no spare capacity.
            Expr::All(exact_slice(xs))
        }
    }

    fn methods(&mut self, ms: &Spanned<raw::OneOrMany<String>>, xs: &mut Vec<Expr>) {
        if ms.value.0.is_empty() {
            self.error(ms.referenced, "method: the list is empty");
        }
        let mut list = Vec::new();
        for name in &ms.value.0 {
            if !is_token(name) {
                self.error(
                    ms.referenced,
                    format!("method {name:?} is not a valid HTTP method token"),
                );
                continue;
            }
            if name.bytes().any(|b| b.is_ascii_lowercase()) {
                self.diags.warning(
                    self.file,
                    ms.referenced,
                    format!(
                        "method {name:?}: methods are case-sensitive; did you mean {:?}?",
                        name.to_ascii_uppercase()
                    ),
                );
            }
            match Method::from_bytes(name.as_bytes()) {
                Ok(m) => {
                    if !list.contains(&m) {
                        list.push(m);
                    }
                }
                Err(_) => self.error(ms.referenced, format!("method {name:?} is not valid")),
            }
        }
        xs.push(Expr::Leaf(Leaf::Method(exact_slice(list))));
    }

    /// One header / query / cookie / body_json test; `list_at` is the
    /// position of the matcher key, used when the test itself has none.
    fn value_test(&mut self, kind: Kind, t: &raw::ValueTest, list_at: Location) -> Option<Leaf> {
        let key = kind.key();
        // The test mapping itself has no position: use its first key's.
        let first_op = [
            t.equals.as_ref().map(|s| s.referenced),
            t.prefix.as_ref().map(|s| s.referenced),
            t.suffix.as_ref().map(|s| s.referenced),
            t.contains.as_ref().map(|s| s.referenced),
            t.regex.as_ref().map(|s| s.referenced),
            t.in_.as_ref().map(|s| s.referenced),
            t.present.as_ref().map(|s| s.referenced),
            t.gt.as_ref().map(|s| s.referenced),
            t.gte.as_ref().map(|s| s.referenced),
            t.lt.as_ref().map(|s| s.referenced),
            t.lte.as_ref().map(|s| s.referenced),
        ]
        .into_iter()
        .flatten()
        .next();
        let at = t
            .name
            .as_ref()
            .map(|n| n.referenced)
            .or(t.pointer.as_ref().map(|p| p.referenced))
            .or(first_op)
            .unwrap_or(list_at);
        let mut ok = true;

        // Subject: name or pointer.
        let mut name = None;
        let mut pointer = None;
        if kind == Kind::BodyJson {
            if let Some(n) = &t.name {
                self.error(n.referenced, "body_json tests take `pointer`, not `name`");
                ok = false;
            }
            match &t.pointer {
                None => {
                    self.error(
                        at,
                        "body_json: missing `pointer` (an RFC 6901 JSON pointer such as /user/id)",
                    );
                    ok = false;
                }
                Some(p) => match check_pointer(&p.value) {
                    Ok(()) => pointer = Some(p.value.clone()),
                    Err(e) => {
                        self.error(p.referenced, e);
                        ok = false;
                    }
                },
            }
        } else {
            if let Some(p) = &t.pointer {
                self.error(
                    p.referenced,
                    format!("{key}: `pointer` is only for body_json; use `name`"),
                );
                ok = false;
            }
            match &t.name {
                None => {
                    self.error(at, format!("{key}: missing `name`"));
                    ok = false;
                }
                Some(n) if n.value.is_empty() => {
                    self.error(n.referenced, format!("{key}: `name` must not be empty"));
                    ok = false;
                }
                Some(n) => name = Some(n),
            }
            for (op, v) in [
                ("gt", &t.gt),
                ("gte", &t.gte),
                ("lt", &t.lt),
                ("lte", &t.lte),
            ] {
                if let Some(v) = v {
                    self.error(
                        v.referenced,
                        format!("{key}: `{op}` compares numbers and is only for body_json"),
                    );
                    ok = false;
                }
            }
        }

        // Operator.
        let ic = t.ignore_case.as_ref().is_some_and(|s| s.value);
        let mut given: Vec<(&str, Location)> = Vec::new();
        let mut note = |op: &'static str, loc: Option<Location>| {
            if let Some(l) = loc {
                given.push((op, l));
            }
        };
        note("equals", t.equals.as_ref().map(|s| s.referenced));
        note("prefix", t.prefix.as_ref().map(|s| s.referenced));
        note("suffix", t.suffix.as_ref().map(|s| s.referenced));
        note("contains", t.contains.as_ref().map(|s| s.referenced));
        note("regex", t.regex.as_ref().map(|s| s.referenced));
        note("in", t.in_.as_ref().map(|s| s.referenced));
        note("present", t.present.as_ref().map(|s| s.referenced));
        let range_given = [&t.gt, &t.gte, &t.lt, &t.lte].iter().any(|b| b.is_some());
        if kind == Kind::BodyJson && range_given {
            let l = [&t.gt, &t.gte, &t.lt, &t.lte]
                .iter()
                .find_map(|b| b.as_ref().map(|s| s.referenced))
                .unwrap_or(at);
            given.push(("gt/gte/lt/lte", l));
        }
        let ops = if kind == Kind::BodyJson {
            "equals, prefix, suffix, contains, regex, in, present, or a range of gt/gte/lt/lte"
        } else {
            "equals, prefix, suffix, contains, regex, in, present"
        };
        match given.len() {
            0 => {
                self.error(at, format!("{key}: the test needs one of {ops}"));
                return None;
            }
            1 => {}
            _ => {
                let names: Vec<&str> = given.iter().map(|g| g.0).collect();
                self.error(
                    given[1].1,
                    format!(
                        "{key}: give exactly one of {ops} (found {})",
                        names.join(", ")
                    ),
                );
                return None;
            }
        }

        let text_op: Option<TextOp> = if let Some(s) = &t.prefix {
            Some(TextOp::Prefix(s.value.as_str().into()))
        } else if let Some(s) = &t.suffix {
            Some(TextOp::Suffix(s.value.as_str().into()))
        } else if let Some(s) = &t.contains {
            Some(TextOp::Contains(s.value.as_str().into()))
        } else if let Some(r) = &t.regex {
            match build_regex(&r.value, ic) {
                Ok(re) => Some(TextOp::Regex(Box::new(re))),
                Err(e) => {
                    self.error(
                        r.referenced,
                        format!("{key}: invalid regex: {}", regex_message(&e)),
                    );
                    return None;
                }
            }
        } else {
            None
        };

        if kind == Kind::BodyJson {
            let test = if let Some(op) = text_op {
                JsonTest::Text(TextTest {
                    op,
                    ignore_case: ic,
                })
            } else if let Some(e) = &t.equals {
                JsonTest::Equals(e.value.clone(), ic)
            } else if let Some(list) = &t.in_ {
                JsonTest::In(list.value.clone(), ic)
            } else if let Some(p) = &t.present {
                JsonTest::Present(p.value)
            } else {
                JsonTest::Range {
                    gt: t.gt.as_ref().map(|s| s.value),
                    gte: t.gte.as_ref().map(|s| s.value),
                    lt: t.lt.as_ref().map(|s| s.value),
                    lte: t.lte.as_ref().map(|s| s.value),
                }
            };
            return match (ok, pointer) {
                (true, Some(p)) => Some(Leaf::BodyJson(Box::new((p.into(), test)))),
                _ => None,
            };
        }

        let test = if let Some(op) = text_op {
            ValueTest::Text(TextTest {
                op,
                ignore_case: ic,
            })
        } else if let Some(e) = &t.equals {
            ValueTest::Text(TextTest {
                op: TextOp::Equals(e.value.to_text().into()),
                ignore_case: ic,
            })
        } else if let Some(list) = &t.in_ {
            ValueTest::Text(TextTest {
                op: TextOp::In(list.value.iter().map(|s| s.to_text().into()).collect()),
                ignore_case: ic,
            })
        } else {
            ValueTest::Present(t.present.as_ref().is_none_or(|p| p.value))
        };
        let name = name.filter(|_| ok)?;
        match kind {
            Kind::Header => match HeaderName::from_bytes(name.value.as_bytes()) {
                Ok(h) => Some(Leaf::Header(Box::new((h, test)))),
                Err(_) => {
                    self.error(
                        name.referenced,
                        format!("header: {:?} is not a valid header name", name.value),
                    );
                    None
                }
            },
            Kind::Query => Some(Leaf::Query(Box::new((name.value.as_str().into(), test)))),
            _ => Some(Leaf::Cookie(Box::new((name.value.as_str().into(), test)))),
        }
    }
}

/// A regex error on one line (the parser's caret diagram does not fit a
/// `FILE:LINE:COL` diagnostic).
fn regex_message(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => {
            let last = s.lines().last().unwrap_or(s);
            last.strip_prefix("error: ").unwrap_or(last).to_owned()
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled regex exceeds the size limit of {limit} bytes; simplify it")
        }
        other => other.to_string(),
    }
}

/// RFC 6901: "" (the whole document) or `/`-separated tokens where `~` is
/// only followed by `0` or `1`.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!(
            "body_json: pointer {p:?} must start with `/` (RFC 6901), as in /user/id"
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "body_json: pointer {p:?}: `~` must be followed by 0 (for ~) or 1 (for /)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::diagnostic::Severity;
    use crate::routing::RequestContext;
    use http::{HeaderMap, HeaderValue};
    use std::net::IpAddr;

    fn parse(yaml: &str) -> (Expr, Vec<crate::config::Diagnostic>) {
        let m: Spanned<raw::Match> = serde_saphyr::from_str(yaml).unwrap();
        let file: Arc<str> = "rules.yaml".into();
        let mut d = Diagnostics::default();
        let e = compile(&m, &file, &mut d);
        (e, d.into_sorted())
    }

    fn ok(yaml: &str) -> Expr {
        let (e, d) = parse(yaml);
        assert!(
            d.iter().all(|d| d.severity != Severity::Error),
            "{yaml}: {d:?}"
        );
        e
    }

    fn errors(yaml: &str) -> Vec<String> {
        parse(yaml)
            .1
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect()
    }

    struct Req {
        method: Method,
        host: &'static str,
        path: &'static str,
        query: Option<&'static str>,
        headers: HeaderMap,
        ip: IpAddr,
        body: Option<&'static [u8]>,
    }

    impl Req {
        fn new(host: &'static str, path: &'static str) -> Req {
            Req {
                method: Method::GET,
                host,
                path,
                query: None,
                headers: HeaderMap::new(),
                ip: IpAddr::from([10, 0, 0, 1]),
                body: None,
            }
        }
        fn header(mut self, k: &'static str, v: &'static str) -> Req {
            self.headers.append(k, HeaderValue::from_static(v));
            self
        }
        fn ctx(&self) -> RequestContext<'_> {
            RequestContext::new(
                &self.method,
                self.host,
                self.path,
                self.query,
                &self.headers,
                self.ip,
                self.body,
            )
        }
    }

    #[test]
    fn empty_match_is_always() {
        let e = ok("{}");
        assert!(e.matches(&Req::new("", "/").ctx()));
        assert_eq!(e.summary(), "*");
    }

    #[test]
    fn spec_example() {
        let e = ok(
            "host: api.example.com\npath: /v1/{*rest}\nheader: { name: X-Beta, equals: \"1\" }\n",
        );
        let r = Req::new("API.example.com:443", "/v1/users").header("x-beta", "1");
        assert!(e.matches(&r.ctx()));
        assert_eq!(e.first_failure(&r.ctx()), None);
        let r = Req::new("api.example.com", "/v1/users").header("x-beta", "0");
        assert!(!e.matches(&r.ctx()));
        assert_eq!(
            e.first_failure(&r.ctx()).as_deref(),
            Some("header x-beta equals \"1\"")
        );
        assert_eq!(
            e.summary(),
            "host api.example.com and path /v1/{*rest} and header x-beta equals \"1\""
        );
    }

    #[test]
    fn combinators() {
        let e = ok(
            "any:\n  - { path_prefix: /a }\n  - { path_prefix: /b }\nnot: { header: { name: x-block, present: true } }\n",
        );
        assert!(e.matches(&Req::new("h", "/a/1").ctx()));
        assert!(e.matches(&Req::new("h", "/b").ctx()));
        assert!(!e.matches(&Req::new("h", "/c").ctx()));
        assert!(!e.matches(&Req::new("h", "/a").header("x-block", "").ctx()));
        assert_eq!(
            e.first_failure(&Req::new("h", "/c").ctx()).as_deref(),
            Some("any(path_prefix /a | path_prefix /b)")
        );
        assert_eq!(
            e.first_failure(&Req::new("h", "/a").header("x-block", "1").ctx())
                .as_deref(),
            Some("not(header x-block present)")
        );
        let all = ok("all:\n  - { method: [GET, POST] }\n  - all: [ { path: /x } ]\n");
        assert_eq!(all.conjuncts().len(), 2, "nested all is flattened");
        assert!(all.matches(&Req::new("h", "/x").ctx()));
        assert!(!all.matches(&Req::new("h", "/y").ctx()));
    }

    #[test]
    fn value_test_lists_and_repeats() {
        let e = ok(
            "header:\n  - { name: x-a, prefix: ab, ignore_case: true }\n  - { name: x-b, in: [1, 2] }\n",
        );
        let r = Req::new("h", "/")
            .header("x-a", "ABc")
            .header("x-b", "3")
            .header("x-b", "2");
        assert!(e.matches(&r.ctx()));
        let r = Req::new("h", "/")
            .header("x-a", "ABc")
            .header("x-b", "1, 2");
        assert!(!e.matches(&r.ctx()), "a line is not split at commas");
    }

    #[test]
    fn query_cookie_body_ip() {
        let e = ok(
            "query: { name: q, equals: a b }\ncookie: { name: uid, regex: '^[0-9]+$' }\nclient_ip: [10.0.0.0/8, 192.168.1.1]\nbody_json: { pointer: /n, gt: 1, lte: 5 }\n",
        );
        assert!(e.needs_body());
        let mut r = Req::new("h", "/").header("cookie", "x=1; uid=42");
        r.query = Some("q=a+b");
        r.body = Some(b"{\"n\": 5}");
        assert!(e.matches(&r.ctx()));
        r.body = Some(b"{\"n\": 6}");
        assert_eq!(
            e.first_failure(&r.ctx()).as_deref(),
            Some("body_json /n gt 1 lte 5")
        );
        r.body = Some(b"not json");
        assert!(!e.matches(&r.ctx()));
        r.body = Some(b"{\"n\": 5}");
        r.ip = IpAddr::from([11, 0, 0, 1]);
        assert!(!e.matches(&r.ctx()));
        assert!(!ok("path: /x").needs_body());
    }

    #[test]
    fn reports_every_problem_with_position() {
        let errs = errors(
            "path_regex: '(['\nheader:\n  - { name: x, equals: a, prefix: b }\n  - { equals: a }\n  - { name: y }\nclient_ip: 10.0.0.0/33\npath: /users/:id\npath_prefix: api\nmethod: 'GE T'\n",
        );
        let want = [
            "rules.yaml:1:13: error: path_regex: invalid regex: unclosed character class",
            "rules.yaml:3:35: error: header: give exactly one of",
            "rules.yaml:4:15: error: header: missing `name`",
            "rules.yaml:5:13: error: header: the test needs one of",
            "rules.yaml:6:12: error: invalid client_ip \"10.0.0.0/33\"",
            "rules.yaml:7:7: error: path template \"/users/:id\": parameters are written {name}",
            "rules.yaml:8:14: error: path_prefix \"api\" must start with `/`",
            "rules.yaml:9:9: error: method \"GE T\" is not a valid HTTP method token",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn structural_errors() {
        assert!(errors("all: []")[0].contains("all: the list is empty"));
        assert!(errors("any: []")[0].contains("any: the list is empty"));
        assert!(errors("body_json: { equals: 1 }")[0].contains("missing `pointer`"));
        assert!(errors("body_json: { pointer: a, equals: 1 }")[0].contains("must start with `/`"));
        assert!(errors("body_json: { pointer: /a~2, equals: 1 }")[0].contains("`~`"));
        assert!(
            errors("header: { name: a, pointer: /a, equals: 1 }")[0].contains("only for body_json")
        );
        assert!(
            errors("query: { name: a, gt: 1 }")
                .iter()
                .any(|e| e.contains("only for body_json"))
        );
        assert!(errors("body_json: { pointer: /a, gt: 1, equals: 2 }")[0].contains("exactly one"));
        assert!(errors("path: '/{a}{b}'")[0].contains("one {parameter} is allowed per segment"));
        assert!(errors("path: '/{*rest}/x'")[0].contains("catch-all"));
        assert!(errors("host: 'a.com:80'")[0].contains("port"));
        assert!(errors("header: { name: 'bad name', equals: 1 }")[0].contains("valid header name"));
        assert!(errors("cookie: { name: c, regex: '(' }")[0].contains("invalid regex"));
        ok("method: [PURGE, GET]");
        ok("body_json: { pointer: '', present: true }");
        let (_, d) = parse("method: get");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].severity, Severity::Warning);
    }

    fn nest_not(levels: usize, inner: raw::Match) -> Spanned<raw::Match> {
        let at = Location::UNKNOWN;
        let mut m = Spanned::new(inner, at);
        for _ in 0..levels {
            let outer = raw::Match {
                not: Some(Box::new(m)),
                ..Default::default()
            };
            m = Spanned::new(outer, at);
        }
        m
    }

    #[test]
    fn depth_limit() {
        // Built directly: the YAML parser has its own (lower) depth budget.
        let file: Arc<str> = "rules.yaml".into();
        let mut d = Diagnostics::default();
        compile(&nest_not(70, raw::Match::default()), &file, &mut d);
        let errs: Vec<String> = d.items().iter().map(|d| d.to_string()).collect();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("nested more than 64"));

        let path = raw::Match {
            path: Some(Box::new(Spanned::new("/x".to_owned(), Location::UNKNOWN))),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        let e = compile(&nest_not(64, path), &file, &mut d);
        assert!(!d.has_errors());
        assert!(e.matches(&Req::new("h", "/x").ctx()));
        assert!(!e.matches(&Req::new("h", "/y").ctx()));
    }
}
