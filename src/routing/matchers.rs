//! Leaf matchers and value tests: compiled once from the rule file (regexes,
//! templates, CIDRs), then evaluated against a borrowed [`RequestContext`]
//! without per-request compilation and, where possible, without allocating.
//!
//! `ignore_case` is ASCII case folding for the literal tests (`equals`,
//! `prefix`, `suffix`, `contains`, `in`) and Unicode case folding for
//! `regex`.

use super::context::RequestContext;
pub use super::host::HostMatch;
pub use super::path::{PathPrefix, PathTemplate};
use crate::config::raw::Scalar;
use http::{HeaderName, Method};
use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use std::fmt;
use std::net::IpAddr;

/// Compiled size limit of every regex in a rule file.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a rule-file regex (linear time, size-limited).
pub fn build_regex(pattern: &str, ignore_case: bool) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .case_insensitive(ignore_case)
        .build()
}

// === impl TextTest ===

/// A test on one text value. Kept for the config's lifetime, one per
/// header, query or cookie test: boxed slices and a boxed regex keep it at
/// 24 bytes (issue 6).
#[derive(Debug, Clone)]
pub enum TextOp {
    /// The value equals this.
    Equals(Box<str>),
    /// The value starts with this.
    Prefix(Box<str>),
    /// The value ends with this.
    Suffix(Box<str>),
    /// The value contains this.
    Contains(Box<str>),
    /// Finds a match anywhere (anchor it with `^…$` to test the whole value).
    Regex(Box<Regex>),
    /// The value is one of these.
    In(Box<[Box<str>]>),
}

/// A text test with its case handling.
#[derive(Debug, Clone)]
pub struct TextTest {
    /// The comparison.
    pub op: TextOp,
    /// For a regex this is already compiled in.
    pub ignore_case: bool,
}

impl TextTest {
    /// Whether `v` passes.
    pub fn test(&self, v: &str) -> bool {
        let ic = self.ignore_case;
        match &self.op {
            TextOp::Equals(w) => eq(v, w, ic),
            TextOp::Prefix(p) => {
                v.len() >= p.len() && eq_bytes(&v.as_bytes()[..p.len()], p.as_bytes(), ic)
            }
            TextOp::Suffix(s) => {
                v.len() >= s.len() && eq_bytes(&v.as_bytes()[v.len() - s.len()..], s.as_bytes(), ic)
            }
            TextOp::Contains(c) => {
                if ic {
                    c.is_empty()
                        || v.as_bytes()
                            .windows(c.len())
                            .any(|w| w.eq_ignore_ascii_case(c.as_bytes()))
                } else {
                    v.contains(&**c)
                }
            }
            TextOp::Regex(r) => r.is_match(v),
            TextOp::In(list) => list.iter().any(|w| eq(v, w, ic)),
        }
    }
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    eq_bytes(a.as_bytes(), b.as_bytes(), ignore_case)
}

fn eq_bytes(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

impl fmt::Display for TextTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            TextOp::Equals(w) => write!(f, "equals {w:?}")?,
            TextOp::Prefix(w) => write!(f, "prefix {w:?}")?,
            TextOp::Suffix(w) => write!(f, "suffix {w:?}")?,
            TextOp::Contains(w) => write!(f, "contains {w:?}")?,
            TextOp::Regex(r) => write!(f, "regex {:?}", r.as_str())?,
            TextOp::In(list) => write!(f, "in {list:?}")?,
        }
        if self.ignore_case {
            f.write_str(" (ignore_case)")?;
        }
        Ok(())
    }
}

// === impl ValueTest ===

/// A header, query or cookie test: presence, or a text test that passes when
/// any of the (possibly repeated) values passes.
#[derive(Debug, Clone)]
pub enum ValueTest {
    /// The value is present (or absent).
    Present(bool),
    /// A text test on any one of the values.
    Text(TextTest),
}

impl ValueTest {
    /// Evaluates over every value the request carries under the name.
    pub fn holds<S: AsRef<str>>(&self, mut values: impl Iterator<Item = S>) -> bool {
        match self {
            ValueTest::Present(want) => values.next().is_some() == *want,
            ValueTest::Text(t) => values.any(|v| t.test(v.as_ref())),
        }
    }
}

impl fmt::Display for ValueTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueTest::Present(true) => f.write_str("present"),
            ValueTest::Present(false) => f.write_str("absent"),
            ValueTest::Text(t) => t.fmt(f),
        }
    }
}

// === impl JsonTest ===

/// A `body_json` test on the value at a pointer.
#[derive(Debug, Clone)]
pub enum JsonTest {
    /// The pointer resolves (to anything, `null` included) or not.
    Present(bool),
    /// Equals a JSON scalar (numbers compare numerically; `ignore_case`
    /// applies to strings).
    Equals(Scalar, bool),
    /// Equals one of the scalars.
    In(Vec<Scalar>, bool),
    /// A text test on a JSON string (other types fail).
    Text(TextTest),
    /// A numeric range: every bound given must hold; non-numbers fail.
    Range {
        /// Greater than.
        gt: Option<f64>,
        /// At least.
        gte: Option<f64>,
        /// Less than.
        lt: Option<f64>,
        /// At most.
        lte: Option<f64>,
    },
}

impl JsonTest {
    /// Evaluates on the resolved value (`None`: the pointer does not resolve).
    pub fn holds(&self, v: Option<&serde_json::Value>) -> bool {
        match (self, v) {
            (JsonTest::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (JsonTest::Equals(s, ic), Some(v)) => json_eq(v, s, *ic),
            (JsonTest::In(list, ic), Some(v)) => list.iter().any(|s| json_eq(v, s, *ic)),
            (JsonTest::Text(t), Some(v)) => v.as_str().is_some_and(|s| t.test(s)),
            (JsonTest::Range { gt, gte, lt, lte }, Some(v)) => v.as_f64().is_some_and(|n| {
                gt.is_none_or(|b| n > b)
                    && gte.is_none_or(|b| n >= b)
                    && lt.is_none_or(|b| n < b)
                    && lte.is_none_or(|b| n <= b)
            }),
        }
    }
}

fn json_eq(v: &serde_json::Value, s: &Scalar, ignore_case: bool) -> bool {
    use serde_json::Value;
    match (v, s) {
        (Value::String(a), Scalar::Str(b)) => eq(a, b, ignore_case),
        (Value::Bool(a), Scalar::Bool(b)) => a == b,
        (Value::Number(n), Scalar::Int(i)) => {
            n.as_i64() == Some(*i) || (n.as_i64().is_none() && n.as_f64() == Some(*i as f64))
        }
        (Value::Number(n), Scalar::Float(f)) => n.as_f64() == Some(*f),
        _ => false,
    }
}

impl fmt::Display for JsonTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ic = |f: &mut fmt::Formatter<'_>, on: bool| {
            if on {
                f.write_str(" (ignore_case)")
            } else {
                Ok(())
            }
        };
        match self {
            JsonTest::Present(true) => f.write_str("present"),
            JsonTest::Present(false) => f.write_str("absent"),
            JsonTest::Equals(s, i) => {
                write!(f, "equals {}", scalar_json(s))?;
                ic(f, *i)
            }
            JsonTest::In(list, i) => {
                f.write_str("in [")?;
                for (n, s) in list.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&scalar_json(s))?;
                }
                f.write_str("]")?;
                ic(f, *i)
            }
            JsonTest::Text(t) => t.fmt(f),
            JsonTest::Range { gt, gte, lt, lte } => {
                let mut sep = "";
                for (op, b) in [("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)] {
                    if let Some(b) = b {
                        write!(f, "{sep}{op} {b}")?;
                        sep = " ";
                    }
                }
                Ok(())
            }
        }
    }
}

fn scalar_json(s: &Scalar) -> String {
    match s {
        Scalar::Str(s) => format!("{s:?}"),
        other => other.to_text(),
    }
}

// === impl Leaf ===

/// One matcher of a `match` mapping.
///
/// 32 bytes: every route keeps a few (issue 6, 10,000 routes), so variants
/// whose data is larger than 24 bytes are boxed.
#[derive(Debug, Clone)]
pub enum Leaf {
    /// `host`.
    Host(HostMatch),
    /// `path`.
    Path(PathTemplate),
    /// `path_prefix`.
    PathPrefix(PathPrefix),
    /// `path_regex`.
    PathRegex(Box<Regex>),
    /// `method`.
    Method(Box<[Method]>),
    /// `header`: the name and its test.
    Header(Box<(HeaderName, ValueTest)>),
    /// `query`: the name and its test.
    Query(Box<(Box<str>, ValueTest)>),
    /// `cookie`: the name and its test.
    Cookie(Box<(Box<str>, ValueTest)>),
    /// `client_ip`.
    ClientIp(Box<[IpNet]>),
    /// An RFC 6901 pointer and its test.
    BodyJson(Box<(Box<str>, JsonTest)>),
}

impl Leaf {
    /// Whether the request passes this matcher.
    pub fn matches(&self, ctx: &RequestContext<'_>) -> bool {
        match self {
            Leaf::Host(h) => h.matches(&ctx.host),
            Leaf::Path(t) => t.matches(ctx.path),
            Leaf::PathPrefix(p) => p.matches(ctx.path),
            Leaf::PathRegex(r) => r.is_match(ctx.path),
            Leaf::Method(list) => list.iter().any(|m| m == ctx.method),
            Leaf::Header(h) => {
                let (name, t) = &**h;
                match t {
                    // A value that is not UTF-8 still counts as present.
                    ValueTest::Present(want) => ctx.headers.contains_key(name) == *want,
                    ValueTest::Text(_) => t.holds(ctx.header_values(name)),
                }
            }
            Leaf::Query(q) => q.1.holds(ctx.query_values(&q.0)),
            Leaf::Cookie(c) => c.1.holds(ctx.cookie_values(&c.0)),
            Leaf::ClientIp(nets) => {
                let ip = canonical_ip(ctx.client_ip);
                nets.iter().any(|n| n.contains(&ip))
            }
            Leaf::BodyJson(b) => match ctx.body_json() {
                Some(doc) => b.1.holds(doc.pointer(&b.0)),
                None => false,
            },
        }
    }

    /// Whether evaluating needs the request body.
    pub fn needs_body(&self) -> bool {
        matches!(self, Leaf::BodyJson(..))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Parses a CIDR; a bare address means /32 (IPv4) or /128 (IPv6). Host bits
/// are cleared (`10.0.0.1/8` is `10.0.0.0/8`).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("invalid client_ip {s:?}: expected an address or CIDR such as 10.0.0.0/8 or 2001:db8::/32")
    })
}

/// Whether `s` is an HTTP token (RFC 9110 `tchar`s), as a method must be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

impl fmt::Display for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leaf::Host(h) => h.fmt(f),
            Leaf::Path(t) => write!(f, "path {}", t.template()),
            Leaf::PathPrefix(p) => write!(f, "path_prefix {}", p.prefix()),
            Leaf::PathRegex(r) => write!(f, "path_regex {:?}", r.as_str()),
            Leaf::Method(list) => {
                let names: Vec<&str> = list.iter().map(Method::as_str).collect();
                if names.len() == 1 {
                    write!(f, "method {}", names[0])
                } else {
                    write!(f, "method in [{}]", names.join(", "))
                }
            }
            Leaf::Header(h) => write!(f, "header {} {}", h.0, h.1),
            Leaf::Query(q) => write!(f, "query {} {}", q.0, q.1),
            Leaf::Cookie(c) => write!(f, "cookie {} {}", c.0, c.1),
            Leaf::ClientIp(nets) => {
                let s: Vec<String> = nets.iter().map(IpNet::to_string).collect();
                write!(f, "client_ip in [{}]", s.join(", "))
            }
            Leaf::BodyJson(b) => write!(f, "body_json {} {}", b.0, b.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn text(op: TextOp, ignore_case: bool) -> TextTest {
        TextTest { op, ignore_case }
    }

    #[test]
    fn text_tests() {
        let s = |x: &str| Box::<str>::from(x);
        assert!(text(TextOp::Equals(s("Ab")), false).test("Ab"));
        assert!(!text(TextOp::Equals(s("Ab")), false).test("ab"));
        assert!(text(TextOp::Equals(s("Ab")), true).test("aB"));
        assert!(text(TextOp::Prefix(s("ab")), true).test("ABc"));
        assert!(!text(TextOp::Prefix(s("abcd")), false).test("abc"));
        assert!(text(TextOp::Suffix(s("éx")), false).test("aéx"));
        assert!(text(TextOp::Suffix(s("BC")), true).test("abc"));
        assert!(text(TextOp::Contains(s("Ell")), true).test("hello"));
        assert!(!text(TextOp::Contains(s("Ell")), false).test("hello"));
        assert!(text(TextOp::Contains(s("")), true).test(""));
        let r = build_regex("^v[0-9]+$", true).unwrap();
        assert!(text(TextOp::Regex(Box::new(r.clone())), true).test("V12"));
        assert!(!text(TextOp::Regex(Box::new(r)), true).test("v1x"));
        assert!(text(TextOp::In(Box::new([s("US"), s("CA")])), true).test("ca"));
        assert!(!text(TextOp::In(Box::new([s("US"), s("CA")])), false).test("ca"));
    }

    #[test]
    fn regex_size_limit() {
        assert!(build_regex("(a{1000}){1000}", false).is_err());
    }

    #[test]
    fn value_test_any_value() {
        let t = ValueTest::Text(text(TextOp::Equals("2".into()), false));
        assert!(t.holds(["1", "2"].iter()));
        assert!(!t.holds(["1"].iter()));
        assert!(!t.holds(std::iter::empty::<&str>()));
        assert!(ValueTest::Present(false).holds(std::iter::empty::<&str>()));
        assert!(!ValueTest::Present(false).holds(["x"].iter()));
    }

    #[test]
    fn json_tests() {
        use serde_json::json;
        let range = JsonTest::Range {
            gt: Some(1.0),
            gte: None,
            lt: None,
            lte: Some(5.0),
        };
        assert!(range.holds(Some(&json!(5))));
        assert!(!range.holds(Some(&json!(1))));
        assert!(!range.holds(Some(&json!("3"))));
        assert!(!range.holds(None));
        assert!(JsonTest::Equals(Scalar::Int(3), false).holds(Some(&json!(3))));
        assert!(JsonTest::Equals(Scalar::Int(3), false).holds(Some(&json!(3.0))));
        assert!(!JsonTest::Equals(Scalar::Str("3".into()), false).holds(Some(&json!(3))));
        assert!(JsonTest::Equals(Scalar::Str("Pro".into()), true).holds(Some(&json!("pro"))));
        assert!(JsonTest::Equals(Scalar::Bool(true), false).holds(Some(&json!(true))));
        assert!(JsonTest::Equals(Scalar::Float(1.5), false).holds(Some(&json!(1.5))));
        assert!(
            JsonTest::In(vec![Scalar::Int(1), Scalar::Str("a".into())], false)
                .holds(Some(&json!("a")))
        );
        assert!(JsonTest::Present(true).holds(Some(&json!(null))));
        assert!(JsonTest::Present(false).holds(None));
        let t = JsonTest::Text(text(TextOp::Prefix("ab".into()), false));
        assert!(t.holds(Some(&json!("abc"))));
        assert!(!t.holds(Some(&json!(12))));
    }

    #[test]
    fn cidrs_and_tokens() {
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
        assert!(is_token("GET"));
        assert!(is_token("PURGE"));
        assert!(!is_token("GE T"));
        assert!(!is_token(""));
    }

    fn ctx_with<'a>(
        m: &'a Method,
        h: &'a HeaderMap,
        path: &'a str,
        query: Option<&'a str>,
        ip: IpAddr,
        body: Option<&'a [u8]>,
    ) -> RequestContext<'a> {
        RequestContext::new(m, "Shop.Example.com:8443", path, query, h, ip, body)
    }

    #[test]
    fn leaves() {
        let mut h = HeaderMap::new();
        h.append("x-beta", HeaderValue::from_static("0"));
        h.append("x-beta", HeaderValue::from_static("1"));
        h.append("x-bin", HeaderValue::from_bytes(b"\xff").unwrap());
        h.append("cookie", HeaderValue::from_static("uid=7; theme=dark"));
        let m = Method::POST;
        let body = br#"{"user":{"tier":"gold","age":30}}"#;
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        let ctx = ctx_with(&m, &h, "/v1/users/7", Some("q=a+b"), ip, Some(body));
        let eq = |s: &str| ValueTest::Text(text(TextOp::Equals(s.into()), false));
        let cases: Vec<(Leaf, bool)> = vec![
            (
                Leaf::Host(HostMatch::new(&["shop.example.com"]).unwrap()),
                true,
            ),
            (
                Leaf::Host(HostMatch::new(&["*.example.com"]).unwrap()),
                true,
            ),
            (Leaf::Host(HostMatch::new(&["example.com"]).unwrap()), false),
            (Leaf::Path(PathTemplate::new("/v1/{*rest}").unwrap()), true),
            (
                Leaf::Path(PathTemplate::new("/v1/users/{id}").unwrap()),
                true,
            ),
            (Leaf::Path(PathTemplate::new("/v1/users").unwrap()), false),
            (
                Leaf::PathPrefix(PathPrefix::new("/v1/users").unwrap()),
                true,
            ),
            (Leaf::PathPrefix(PathPrefix::new("/v1/use").unwrap()), false),
            (
                Leaf::PathRegex(Box::new(build_regex("users/[0-9]+", false).unwrap())),
                true,
            ),
            (Leaf::Method(Box::new([Method::GET, Method::POST])), true),
            (Leaf::Method(Box::new([Method::GET])), false),
            (
                Leaf::Header(Box::new((HeaderName::from_static("x-beta"), eq("1")))),
                true,
            ),
            (
                Leaf::Header(Box::new((HeaderName::from_static("x-beta"), eq("2")))),
                false,
            ),
            (
                Leaf::Header(Box::new((
                    HeaderName::from_static("x-bin"),
                    ValueTest::Present(true),
                ))),
                true,
            ),
            (
                Leaf::Header(Box::new((
                    HeaderName::from_static("x-no"),
                    ValueTest::Present(false),
                ))),
                true,
            ),
            (Leaf::Query(Box::new(("q".into(), eq("a b")))), true),
            (
                Leaf::Query(Box::new(("r".into(), ValueTest::Present(true)))),
                false,
            ),
            (Leaf::Cookie(Box::new(("theme".into(), eq("dark")))), true),
            (Leaf::Cookie(Box::new(("uid".into(), eq("8")))), false),
            (
                Leaf::ClientIp(Box::new([parse_cidr("10.0.0.0/8").unwrap()])),
                true,
            ),
            (
                Leaf::ClientIp(Box::new([parse_cidr("192.168.0.1").unwrap()])),
                false,
            ),
            (
                Leaf::BodyJson(Box::new((
                    "/user/tier".into(),
                    JsonTest::Equals(Scalar::Str("gold".into()), false),
                ))),
                true,
            ),
            (
                Leaf::BodyJson(Box::new((
                    "/user/age".into(),
                    JsonTest::Range {
                        gt: None,
                        gte: Some(30.0),
                        lt: Some(40.0),
                        lte: None,
                    },
                ))),
                true,
            ),
            (
                Leaf::BodyJson(Box::new(("/user/none".into(), JsonTest::Present(true)))),
                false,
            ),
        ];
        for (leaf, want) in cases {
            assert_eq!(leaf.matches(&ctx), want, "{leaf}");
        }
        let no_body = ctx_with(&m, &h, "/", None, ip, None);
        assert!(
            !Leaf::BodyJson(Box::new(("/x".into(), JsonTest::Present(false)))).matches(&no_body)
        );
        assert!(Leaf::BodyJson(Box::new(("/x".into(), JsonTest::Present(false)))).needs_body());
    }
}
