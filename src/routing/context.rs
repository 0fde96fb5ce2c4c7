//! The request as routing sees it: built once per request, borrowed by every
//! matcher.
//!
//! Everything here borrows from the request; the only per-request work that
//! may allocate is lowercasing a Host that is not already lowercase, decoding
//! percent-encoded query parameters, and parsing the body as JSON (done at
//! most once, and only when a `body_json` matcher asks).

use super::{find_byte, split_at_byte};
use http::header::COOKIE;
use http::{HeaderMap, HeaderName, Method};
use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;

/// What a request carries, as the matchers read it.
#[derive(Debug)]
pub struct RequestContext<'a> {
    /// The method.
    pub method: &'a Method,
    /// Host or :authority, lowercased, port removed ("" when absent).
    pub host: Cow<'a, str>,
    /// The normalized path (see [`normalize_path`]).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The client address (SPEC 5: peer, or from X-Forwarded-For when trusted).
    pub client_ip: IpAddr,
    /// The body when it was read in full within `inspect_body_bytes`.
    pub body: Option<&'a [u8]>,
    /// The body parsed as JSON, computed on first use (`None`: absent or not JSON).
    body_json: OnceLock<Option<serde_json::Value>>,
}

impl<'a> RequestContext<'a> {
    /// Builds the context; `raw_host` is the Host / :authority as received.
    pub fn new(
        method: &'a Method,
        raw_host: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
        client_ip: IpAddr,
        body: Option<&'a [u8]>,
    ) -> Self {
        RequestContext {
            method,
            host: normalize_host(raw_host),
            path,
            query,
            headers,
            client_ip,
            body,
            body_json: OnceLock::new(),
        }
    }

    /// Every value of header `name`, in order. A repeated header yields each
    /// line; one line is never split at commas. Values that are not UTF-8 are
    /// skipped.
    pub fn header_values<'s>(&'s self, name: &'s HeaderName) -> impl Iterator<Item = &'a str> + 's {
        let headers: &'a HeaderMap = self.headers;
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
    }

    /// Every value of query parameter `name` (see [`query_values`]).
    pub fn query_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Cow<'a, str>> + 's {
        query_values(self.query.unwrap_or(""), name)
    }

    /// Every value of cookie `name` (see [`cookie_values`]).
    pub fn cookie_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        cookie_values(self.headers, name)
    }

    /// The body as JSON, parsed on first use; `None` when there is no
    /// inspected body or it is not JSON.
    pub fn body_json(&self) -> Option<&serde_json::Value> {
        self.body_json
            .get_or_init(|| self.body.and_then(|b| serde_json::from_slice(b).ok()))
            .as_ref()
    }
}

/// Every value of query parameter `name` in a raw query string (compared
/// after decoding), each percent-decoded with `+` as a space. A parameter
/// without `=` has the value "".
pub fn query_values<'q>(query: &'q str, name: &str) -> impl Iterator<Item = Cow<'q, str>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query_component(k) == name).then(|| decode_query_component(v))
        })
}

/// Every value of cookie `name` across all `Cookie` headers (HTTP/2 may
/// send several), `;`-separated, as sent (no decoding, quotes kept).
pub fn cookie_values<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> {
    let lines = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok());
    cookie_pairs(lines, name)
}

/// Every value of cookie `name` in `Cookie` header lines, as sent.
pub fn cookie_pairs<'h, 'n>(
    mut lines: impl Iterator<Item = &'h str>,
    name: &'n str,
) -> impl Iterator<Item = &'h str> {
    let mut rest = "";
    std::iter::from_fn(move || {
        loop {
            if let Some(value) = next_cookie(&mut rest, name) {
                return Some(value);
            }
            rest = lines.next()?;
        }
    })
}

/// The value of the next `;`-separated pair named `name` in `rest` (a
/// `Cookie` line), which it advances past that pair; pairs without `=`
/// are skipped. Byte by byte: every split request looks its cookies up.
fn next_cookie<'h>(rest: &mut &'h str, name: &str) -> Option<&'h str> {
    while !rest.is_empty() {
        let (pair, after) = split_at_byte(rest, b';').unwrap_or((rest, ""));
        *rest = after;
        if let Some((k, v)) = split_at_byte(pair, b'=')
            && trim_ows(k) == name
        {
            return Some(trim_ows(v));
        }
    }
    None
}

/// `s` without leading and trailing spaces and tabs.
fn trim_ows(s: &str) -> &str {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|b| !ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or("")
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a
/// space, then percent-decoding (invalid UTF-8 is replaced). Borrows when
/// there is nothing to decode.
pub fn decode_query_component(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// Host as matchers see it: lowercased, port removed (`[::1]:8080` →
/// `[::1]`, a bare IPv6 address is kept whole), a trailing dot removed
/// (`example.com.` is `example.com`, SPEC 5.1, for `explain` as for
/// serving). Borrows when already lowercase.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let host = if raw.starts_with('[') {
        match find_byte(raw, b']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        let name = match find_byte(raw, b':') {
            // One colon: host:port. Several: a bare IPv6 address, no port.
            Some(i) if find_byte(&raw[i + 1..], b':').is_none() => &raw[..i],
            _ => raw,
        };
        name.strip_suffix('.').unwrap_or(name)
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Why a Host (or `:authority`) was refused (SPEC 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No name before the port (`:80`, `""`, `.`).
    #[error("Host has an empty name")]
    Empty,
    /// A byte no host name has (comma, space, `@`, `/`, ...), an empty
    /// label (`a..b`) or an unreadable IPv6 literal.
    #[error("Host is not host[:port]")]
    Invalid,
    /// A port that is not 1 to 5 digits up to 65535.
    #[error("Host has an invalid port")]
    Port,
}

/// Checks a Host (or `:authority`) as `host[:port]` (SPEC 5.1): a name of
/// letters, digits, `-`, `.` and `_` with no empty label, an IPv4 address,
/// or a bracketed IPv6 address; then an optional port of digits. A single
/// trailing dot of the name is removed (`example.com.:8080` is
/// `example.com:8080`): it names the same host and must not escape a
/// `host` rule. Borrows unless a dot was removed.
pub fn canonical_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    let (name, port) = split_host_port(raw)?;
    if let Some(p) = port
        && !is_port(p)
    {
        return Err(HostError::Port);
    }
    if name.starts_with('[') {
        let inner = &name[1..name.len() - 1];
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(Cow::Borrowed(raw)),
            Err(_) => Err(HostError::Invalid),
        };
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(HostError::Empty);
    }
    if !is_host_name(trimmed) {
        return Err(HostError::Invalid);
    }
    if trimmed.len() == name.len() {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len() - 1);
    out.push_str(trimmed);
    if let Some(p) = port {
        out.push(':');
        out.push_str(p);
    }
    Ok(Cow::Owned(out))
}

/// 1 to 5 digits up to 65535.
fn is_port(p: &str) -> bool {
    if p.is_empty() || p.len() > 5 {
        return false;
    }
    let mut n = 0u32;
    for b in p.bytes() {
        if !b.is_ascii_digit() {
            return false;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    n <= 65535
}

/// Letters, digits, `-`, `_` and `.` with no empty label (one pass: this
/// runs on every request).
fn is_host_name(name: &str) -> bool {
    let mut label_empty = true;
    for b in name.bytes() {
        if b == b'.' {
            if label_empty {
                return false;
            }
            label_empty = true;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            label_empty = false;
        } else {
            return false;
        }
    }
    !label_empty
}

/// `raw` as (name, port): a bracketed IPv6 name keeps its brackets.
fn split_host_port(raw: &str) -> Result<(&str, Option<&str>), HostError> {
    if raw.starts_with('[') {
        let end = find_byte(raw, b']').ok_or(HostError::Invalid)?;
        let (name, rest) = raw.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((name, Some(port))),
            None if rest.is_empty() => Ok((name, None)),
            None => Err(HostError::Invalid),
        };
    }
    Ok(match split_at_byte(raw, b':') {
        Some((name, port)) => (name, Some(port)),
        None => (raw, None),
    })
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path climbs above /")]
    /// `..` climbs above `/`.
    AboveRoot,
    #[error("path is not origin-form")]
    /// The path is not a valid origin-form path.
    Invalid,
}

/// Normalizes a request path (SPEC 5): decode unreserved percent-escapes,
/// resolve `.` and `..`, merge repeated `/`; `%2F` stays encoded.
///
/// Escapes that stay encoded get uppercase hex digits (`%2f` → `%2F`);
/// a `%` not followed by two hex digits is kept as is. A trailing `/` is
/// kept. An empty path is `/`; a path not starting with `/` is
/// [`PathError::Invalid`]. Borrows when nothing changes.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !path.starts_with('/') {
        return Err(PathError::Invalid);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let raw_segments: Vec<&str> = path[1..].split('/').collect();
    let last = raw_segments.len().saturating_sub(1);
    let mut segments: Vec<Cow<'_, str>> = Vec::with_capacity(raw_segments.len());
    let mut trailing_slash = false;
    for (i, raw) in raw_segments.iter().enumerate() {
        let seg = decode_unreserved(raw);
        let is_last = i == last;
        match seg.as_ref() {
            "" | "." => trailing_slash = is_last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = is_last;
            }
            _ => {
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    if out == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// Whether `path` (starting with `/`) is already normal: no `//`, no `.` or
/// `..` segment, every escape has uppercase hex and encodes a reserved byte.
/// Every request's path goes through it: [`plainly_normal`] settles most
/// paths eight bytes at a time, the rest take one pass byte by byte.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if plainly_normal(bytes) {
        return true;
    }
    // The byte before `i`; the path starts with `/`.
    let mut prev = b'/';
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            // An empty segment (`//`).
            b'/' if prev == b'/' => return false,
            // A segment starting with a dot: `.` or `..` unless more follows.
            b'.' if prev == b'/' => {
                let next = bytes.get(i + 1).copied();
                let dot_dot = next == Some(b'.');
                let after = if dot_dot {
                    bytes.get(i + 2).copied()
                } else {
                    next
                };
                if after.is_none_or(|c| c == b'/') {
                    return false;
                }
            }
            b'%' => {
                if let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
                    && is_hex(h)
                    && is_hex(l)
                    && (h.is_ascii_lowercase()
                        || l.is_ascii_lowercase()
                        || is_unreserved(hex_val(h) << 4 | hex_val(l)))
                {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// Whether `path` has none of the bytes that can make it not normal: no
/// `.`, no `%`, no `//`. Eight bytes at a time, as a `u64` (every
/// request's path goes through it). It may say no to a normal path (a
/// `.` inside a segment): [`is_normal`] then looks byte by byte.
fn plainly_normal(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `v` equal to `b`; exact when none is,
    // and otherwise never missing one (a byte above a match may be
    // flagged too, which only sends the path the slow way).
    let equal = |v: u64, b: u8| {
        let x = v ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & HIGH
    };
    // Whether the byte before the current chunk was a `/`.
    let mut slash_before = false;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            return false;
        };
        let v = u64::from_le_bytes(word);
        let slashes = equal(v, b'/');
        // A `/` right after a `/`: the next byte up, little-endian.
        let double = (slashes & (slashes << 8)) | (u64::from(slash_before) * (slashes & 0x80));
        if equal(v, b'.') | equal(v, b'%') | double != 0 {
            return false;
        }
        slash_before = slashes >> 63 != 0;
    }
    for &b in chunks.remainder() {
        if b == b'.' || b == b'%' || (b == b'/' && slash_before) {
            return false;
        }
        slash_before = b == b'/';
    }
    true
}

/// Decodes escapes of unreserved bytes; uppercases the hex of the others.
fn decode_unreserved(seg: &str) -> Cow<'_, str> {
    if !seg.contains('%') {
        return Cow::Borrowed(seg);
    }
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(&h), Some(&l)) = (bytes[i], bytes.get(i + 1), bytes.get(i + 2))
            && is_hex(h)
            && is_hex(l)
        {
            out.push_str(&seg[start..i]);
            let v = hex_val(h) << 4 | hex_val(l);
            if is_unreserved(v) && !completes_escape(&out, v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push(char::from(h.to_ascii_uppercase()));
                out.push(char::from(l.to_ascii_uppercase()));
            }
            i += 3;
            start = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&seg[start..]);
    Cow::Owned(out)
}

/// Whether decoding `v` after `out` would spell a new escape: `%%32e`
/// decoded to `%2e` would be routed as one path and read by a backend
/// that decodes again as `/.` (a fuzz finding). Such an escape stays
/// encoded, so normalizing is idempotent.
fn completes_escape(out: &str, v: u8) -> bool {
    if !is_hex(v) {
        return false;
    }
    let b = out.as_bytes();
    match b {
        [.., b'%'] => true,
        [.., b'%', h] => is_hex(*h),
        _ => false,
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    proptest! {
        /// The fast path says yes exactly to paths without `.`, `%` and
        /// `//` (long enough to span several words).
        #[test]
        fn plainly_normal_is_no_dot_no_escape_no_empty_segment(path in "/[a/.%2fF]{0,40}") {
            let plain = !path.contains('.') && !path.contains('%') && !path.contains("//");
            prop_assert_eq!(plainly_normal(path.as_bytes()), plain, "{:?}", path);
        }
    }

    #[test]
    fn plainly_normal_finds_each_kind_in_each_position() {
        for len in 1..=20 {
            let base = format!("/{}", "a".repeat(len));
            assert!(plainly_normal(base.as_bytes()), "{base}");
            for at in 1..=len {
                for bad in [".", "%", "/"] {
                    let mut p = base.clone();
                    p.replace_range(at..at + 1, bad);
                    let found = !plainly_normal(p.as_bytes());
                    // A single `/` inside is fine; `//` (at 1, after the
                    // leading one) is not.
                    let expect = bad != "/" || at == 1;
                    assert_eq!(found, expect, "{p:?}");
                    if bad == "/" && at > 1 {
                        p.insert(at, '/');
                        assert!(!plainly_normal(p.as_bytes()), "{p:?}");
                    }
                }
            }
        }
    }

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(|c| c.into_owned())
    }

    #[test]
    fn normalize_path_cases() {
        assert_eq!(norm("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("/a/../b").as_deref(), Ok("/b"));
        assert_eq!(norm("//a").as_deref(), Ok("/a"));
        assert_eq!(norm("/a//b///c").as_deref(), Ok("/a/b/c"));
        assert_eq!(norm("/%61").as_deref(), Ok("/a"));
        assert_eq!(norm("/a%2Fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(norm("/a%2fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(norm("/%7e%41-%5F").as_deref(), Ok("/~A-_"));
        assert_eq!(norm("/..").as_deref(), Err(&PathError::AboveRoot));
        assert_eq!(norm("/a/../..").as_deref(), Err(&PathError::AboveRoot));
        assert_eq!(norm("/a/%2e%2e/b").as_deref(), Ok("/b"));
        assert_eq!(norm("/a/.%2E").as_deref(), Ok("/"));
        assert_eq!(norm("/%2e%2e").as_deref(), Err(&PathError::AboveRoot));
        assert_eq!(norm("/a/b/").as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/a/b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/b//").as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/").as_deref(), Ok("/"));
        assert_eq!(norm("").as_deref(), Ok("/"));
        assert_eq!(norm("/.").as_deref(), Ok("/"));
        assert_eq!(norm("/%zz/%4").as_deref(), Ok("/%zz/%4"));
        assert_eq!(norm("/é/%C3%A9").as_deref(), Ok("/é/%C3%A9"));
        // Decoding never spells a new escape (fuzz regression).
        assert_eq!(
            norm("/%%32e%%32e/admin").as_deref(),
            Ok("/%%32e%%32e/admin")
        );
        assert_eq!(norm("/%3%32").as_deref(), Ok("/%3%32"));
        assert_eq!(norm("/%%41").as_deref(), Ok("/%%41"));
        assert_eq!(norm("/%%67").as_deref(), Ok("/%g"));
        assert_eq!(norm("a/b"), Err(PathError::Invalid));
        assert_eq!(norm("*"), Err(PathError::Invalid));
    }

    /// `is_normal` as the definition reads, one rule at a time.
    fn is_normal_reference(path: &str) -> bool {
        let bytes = path.as_bytes();
        if bytes.windows(2).any(|w| w == b"//") {
            return false;
        }
        if path[1..].split('/').any(|s| s == "." || s == "..") {
            return false;
        }
        bytes.windows(3).all(|w| match w {
            [b'%', h, l] if is_hex(*h) && is_hex(*l) => {
                !(h.is_ascii_lowercase()
                    || l.is_ascii_lowercase()
                    || is_unreserved(hex_val(*h) << 4 | hex_val(*l)))
            }
            _ => true,
        })
    }

    #[test]
    fn is_normal_agrees_with_its_definition_on_every_short_path() {
        const ALPHABET: &[u8] = b"/.%2eEaF";
        let mut paths = vec![String::from("/")];
        for _ in 0..5 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| {
                    ALPHABET
                        .iter()
                        .map(move |&c| format!("{p}{}", char::from(c)))
                })
                .collect();
            for p in &longer {
                assert_eq!(is_normal(p), is_normal_reference(p), "{p}");
            }
            paths = longer;
        }
    }

    #[test]
    fn normalize_path_borrows_when_unchanged() {
        for p in ["/", "/a/b", "/a/b/", "/a%2Fb", "/files/x.y.z", "/%zz"] {
            assert!(
                matches!(normalize_path(p), Ok(Cow::Borrowed(_))),
                "{p} should borrow"
            );
        }
        assert!(matches!(normalize_path("/a//b"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn host_port_and_case() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com"), "example.com");
        assert!(matches!(normalize_host("example.com:80"), Cow::Borrowed(_)));
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host("[FE80::1]:443"), "[fe80::1]");
        assert_eq!(normalize_host("::1"), "::1");
        assert_eq!(normalize_host(""), "");
        assert_eq!(normalize_host("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(normalize_host("Example.com.:80"), "example.com");
        assert!(matches!(
            normalize_host("example.com."),
            Cow::Borrowed("example.com")
        ));
    }

    #[test]
    fn canonical_host_cases() {
        let ok = |h: &str| canonical_host(h).map(Cow::into_owned);
        assert_eq!(ok("example.com").as_deref(), Ok("example.com"));
        assert_eq!(ok("Example.COM:8080").as_deref(), Ok("Example.COM:8080"));
        assert_eq!(ok("example.com.").as_deref(), Ok("example.com"));
        assert_eq!(ok("example.com.:8080").as_deref(), Ok("example.com:8080"));
        assert_eq!(ok("127.0.0.1:80").as_deref(), Ok("127.0.0.1:80"));
        assert_eq!(ok("[::1]:8080").as_deref(), Ok("[::1]:8080"));
        assert_eq!(ok("[::1]").as_deref(), Ok("[::1]"));
        assert_eq!(ok("my_service").as_deref(), Ok("my_service"));
        assert!(matches!(canonical_host("a.b:1"), Ok(Cow::Borrowed(_))));
        for bad in [
            "a,b",
            "a b",
            "evil@good.example",
            "good.example/x",
            "a..b",
            ".a",
            "a.b..",
            "[::1",
            "[zz]",
            "[::1]x",
            "a;b",
            "a\tb",
            "%61",
            "a?b",
            "a#b",
        ] {
            assert_eq!(canonical_host(bad), Err(HostError::Invalid), "{bad}");
        }
        for empty in ["", ".", ":80", ".:80"] {
            assert_eq!(canonical_host(empty), Err(HostError::Empty), "{empty:?}");
        }
        for port in [
            "a:b:c", "a:", "a:x", "a:65536", "a:123456", "a:-1", "[::1]:",
        ] {
            assert_eq!(canonical_host(port), Err(HostError::Port), "{port}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn headers_query_cookies() {
        let h = headers(&[
            ("x-a", "1, 2"),
            ("x-a", "3"),
            ("cookie", "a=1; b=2"),
            ("cookie", "c=3;a=4"),
        ]);
        let m = Method::GET;
        let ctx = RequestContext::new(
            &m,
            "h",
            "/",
            Some("q=a+b&q=%41%20c&r&&s=1=2&x%5Fy=z"),
            &h,
            IpAddr::from([127, 0, 0, 1]),
            None,
        );
        let name = HeaderName::from_static("x-a");
        assert_eq!(ctx.header_values(&name).collect::<Vec<_>>(), ["1, 2", "3"]);
        assert_eq!(ctx.query_values("q").collect::<Vec<_>>(), ["a b", "A c"]);
        assert_eq!(ctx.query_values("r").collect::<Vec<_>>(), [""]);
        assert_eq!(ctx.query_values("s").collect::<Vec<_>>(), ["1=2"]);
        assert_eq!(ctx.query_values("x_y").collect::<Vec<_>>(), ["z"]);
        assert_eq!(ctx.query_values("none").count(), 0);
        assert_eq!(ctx.cookie_values("a").collect::<Vec<_>>(), ["1", "4"]);
        assert_eq!(ctx.cookie_values("c").collect::<Vec<_>>(), ["3"]);
        assert_eq!(ctx.cookie_values("d").count(), 0);
    }

    #[test]
    fn body_json_parsed_once() {
        let h = HeaderMap::new();
        let m = Method::POST;
        let body = br#"{"a":{"b":[1,2]}}"#;
        let ctx = RequestContext::new(&m, "h", "/", None, &h, IpAddr::from([0; 4]), Some(body));
        assert_eq!(
            ctx.body_json().and_then(|v| v.pointer("/a/b/1")),
            Some(&serde_json::json!(2))
        );
        let ctx = RequestContext::new(&m, "h", "/", None, &h, IpAddr::from([0; 4]), Some(b"{"));
        assert!(ctx.body_json().is_none());
    }
}
