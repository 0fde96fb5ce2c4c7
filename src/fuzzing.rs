//! The bodies of the fuzz targets under `fuzz/` (cargo-fuzz), kept in the
//! library so that plain `cargo test` replays every seed corpus and every
//! kept crash input on stable Rust (`tests/fuzz_corpus.rs`). Each function
//! takes arbitrary bytes and panics only when a property breaks; none of
//! the code it drives may panic at all.
//!
//! Not part of the API: hidden from the docs and free to change.

use crate::compile::Config;
use crate::routing::context::{cookie_pairs, decode_query_component, query_values};
use crate::routing::{RequestContext, canonical_host, normalize_host, normalize_path};
use crate::split::force::parse_force;
use crate::split::hash::{HashVersion, hash_with};
use crate::split::sticky::{SimpleRequest, StickyConfig, decode_cookie_value};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;

/// A fuzz target's body: arbitrary bytes in, a panic only when a property
/// breaks.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("rule_file", rule_file),
    ("path", path),
    ("host", host),
    ("query_cookie", query_cookie),
    ("sticky", sticky),
    ("matchers", matchers),
];

/// Rule-file text → compiled config: never a panic, whatever the text
/// (and the fast reader agrees with serde-saphyr on it);
/// when it compiles, a few requests route the same through the index as
/// through a plain scan in file order (the index narrows, never decides).
pub fn rule_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The fast reader reads what serde-saphyr reads, or leaves it alone.
    crate::config::fast_reader_agrees(text);
    let Ok(compiled) = crate::compile::compile_text("fuzz.yaml", text) else {
        return;
    };
    let headers = HeaderMap::new();
    for (method, host, path, query) in [
        (Method::GET, "example.com", "/", None),
        (
            Method::POST,
            "api.example.com:8080",
            "/v1/users/7",
            Some("a=1&b"),
        ),
        (Method::GET, "a.b.example.org", "/static/x.css", None),
        (Method::DELETE, "", "/checkout/", Some("pm_force=x%3Dy")),
    ] {
        let ctx = RequestContext::new(
            &method,
            host,
            path,
            query,
            &headers,
            IpAddr::from([10, 1, 2, 3]),
            None,
        );
        same_winner(&compiled.config, &ctx);
    }
}

/// Path normalization (SPEC 5): a normalized path starts with `/`, has no
/// empty, `.` or `..` segment, and normalizes to itself, so that what is
/// routed is what is forwarded and a backend that normalizes again finds
/// the same path.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(norm) = normalize_path(raw) else {
        return;
    };
    assert!(norm.starts_with('/'), "{raw:?} → {norm:?}");
    assert!(!norm.contains("//"), "{raw:?} → {norm:?}");
    assert!(
        !norm[1..].split('/').any(|s| s == "." || s == ".."),
        "{raw:?} → {norm:?}"
    );
    let again = normalize_path(&norm);
    assert!(
        matches!(again, Ok(Cow::Borrowed(p)) if p == norm),
        "not idempotent: {raw:?} → {norm:?} → {again:?}"
    );
}

/// Host checks (SPEC 5.1): a Host that passes is a valid header value,
/// passes again unchanged (a trailing dot is removed once and for all),
/// and normalizes for matching without a port or upper case.
pub fn host(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let _ = normalize_host(raw);
    let Ok(h) = canonical_host(raw) else {
        return;
    };
    assert!(HeaderValue::from_str(&h).is_ok(), "{raw:?} → {h:?}");
    let again = canonical_host(&h);
    assert!(
        matches!(again, Ok(Cow::Borrowed(x)) if x == h),
        "not idempotent: {raw:?} → {h:?} → {again:?}"
    );
    let name = normalize_host(&h);
    assert!(
        !name.bytes().any(|b| b.is_ascii_uppercase()),
        "{h:?} → {name:?}"
    );
    assert!(!name.is_empty() && !name.ends_with('.'), "{h:?} → {name:?}");
}

/// Query and cookie parsing (SPEC 2.1): `NAME\0TEXT`; every value of NAME
/// in TEXT as a query string and as `Cookie` lines. Decoding never panics
/// and a component without `%` or `+` is returned as is.
pub fn query_cookie(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (name, rest) = text.split_once('\0').unwrap_or(("a", text.as_ref()));
    for v in query_values(rest, name) {
        let _ = v.len();
    }
    for v in cookie_pairs(rest.split('\n'), name) {
        let _ = decode_cookie_value(v);
    }
    let decoded = decode_query_component(rest);
    if !rest.contains(['%', '+']) {
        assert!(matches!(decoded, Cow::Borrowed(d) if d == rest));
    }
    for (n, v) in parse_force(rest) {
        assert!(!n.is_empty() && !v.is_empty());
    }
}

/// Sticky ids (SPEC 3): the first line is a `sticky_on` list (comma
/// separated), the others `h:NAME:VALUE`, `c:COOKIE LINE`, `q:QUERY`
/// and `i:IP`. Whatever the sources, an id found hashes into [0, 1) with
/// both hash versions.
pub fn sticky(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let list: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let Ok(config) = StickyConfig::build(Some(&list), None) else {
        return;
    };
    let mut req = SimpleRequest::default();
    for line in lines {
        match line.split_at_checked(2) {
            Some(("h:", rest)) => {
                let (n, v) = rest.split_once(':').unwrap_or((rest, ""));
                req = req.header(n, v);
            }
            Some(("c:", rest)) => req = req.cookie(rest),
            Some(("q:", rest)) => req = req.query(rest),
            Some(("i:", rest)) => {
                if let Ok(ip) = rest.parse() {
                    req.client_ip = ip;
                }
            }
            _ => {}
        }
    }
    let Some(id) = config.lookup(&req) else {
        return;
    };
    assert!(!id.value.is_empty());
    for v in [HashVersion::V1, HashVersion::V2] {
        let b = hash_with(v, "fuzz-seed", &id.value);
        assert!((0.0..1.0).contains(&b), "{:?} → {b}", id.value);
    }
}

/// The rule set the `matchers` target routes against: every matcher kind,
/// combinators, overlapping templates and an experiment.
const MATCHERS_RULES: &str = r#"
upstreams:
  u: { endpoints: ["127.0.0.1:9"] }
routes:
  - { name: user-id, match: { path: "/users/{id}" }, to: u }
  - { name: user-me, match: { path: /users/me }, to: u }
  - { name: rest, match: { host: "*.example.com", path: "/static/{*rest}" }, to: u }
  - { name: api, match: { host: [api.example.com, API2.example.com], path_prefix: /v1 }, to: u }
  - { name: re, match: { path_regex: "^/r/[a-z]+/[0-9]{2,}$" }, to: u }
  - { name: methods, match: { method: [PUT, DELETE], path_prefix: /m }, to: u }
  - name: headers
    match:
      header: [{ name: x-a, prefix: "v", ignore_case: true }, { name: x-b, present: true }]
    to: u
  - { name: query, match: { query: { name: q, in: [a b, "1"] } }, to: u }
  - { name: cookie, match: { cookie: { name: sid, regex: "^[0-9a-f]{4}" } }, to: u }
  - { name: lan, match: { client_ip: [10.0.0.0/8, "::1/128"] }, to: u }
  - { name: json, match: { body_json: { pointer: /a/b, gt: 3 } }, to: u }
  - name: combo
    match:
      any:
        - { all: [{ path_prefix: /c }, { not: { method: GET } }] }
        - { header: { name: x-c, suffix: z } }
    to: u
  - name: exp
    match: { path_prefix: /exp }
    to: u
    experiment:
      sticky_on: [header:x-user, cookie:pm_uid, query:uid]
      allow_force: true
      variants: [{ name: a, weight: 1 }, { name: b, weight: 1 }]
  - { name: all, to: u }
"#;

fn matchers_config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            crate::compile::compile_text("fuzz.yaml", MATCHERS_RULES)
                .ok()
                .map(|c| c.config)
        })
        .as_ref()
}

/// Matchers on arbitrary requests: `METHOD HOST PATH?QUERY` on the first
/// line, `name: value` header lines, an empty line, then the body. The
/// indexed route table picks the same route as a scan in file order and
/// as `explain`'s trace.
pub fn matchers(data: &[u8]) {
    let Some(config) = matchers_config() else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("");
    let mut parts = first.splitn(3, ' ');
    let method =
        Method::from_bytes(parts.next().unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
    let host = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(path) = normalize_path(raw_path) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.trim().as_bytes()),
            HeaderValue::from_str(v.trim()),
        ) {
            headers.append(n, v);
        }
    }
    let ip = match data.first() {
        Some(b) if b % 2 == 0 => IpAddr::from([10, 0, 0, *b]),
        Some(b) => IpAddr::from([192, 0, 2, *b]),
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let body = (!body.is_empty()).then_some(body.as_bytes());
    let ctx = RequestContext::new(&method, host, &path, query, &headers, ip, body);
    same_winner(config, &ctx);
}

/// The index's pick equals the first route in file order whose `match`
/// holds, and the end of `explain`'s trace.
fn same_winner(config: &Config, ctx: &RequestContext<'_>) {
    let routes = config.routes.routes();
    let indexed = config.routes.select(ctx).map(|(i, _)| i);
    let scanned = routes.iter().position(|r| r.matcher.matches(ctx));
    assert_eq!(indexed, scanned, "index and scan disagree on {ctx:?}");
    let trace = config.routes.trace(ctx);
    let traced = trace.last().filter(|t| t.failed.is_none()).map(|t| t.route);
    assert_eq!(traced, scanned, "trace and scan disagree on {ctx:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matchers_rules_compile() {
        assert!(matchers_config().is_some());
    }
}
