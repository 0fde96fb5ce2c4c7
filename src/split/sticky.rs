//! Sticky ids (SPEC 3): where a user's id is read from, how it is decoded,
//! and how a new one is minted and sent back as a cookie.

use crate::routing::context::{cookie_pairs, query_values};
use http::HeaderName;
use percent_encoding::percent_decode;
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The cookie minted when neither `sticky_on` nor `issue_cookie` is given.
pub const DEFAULT_COOKIE: &str = "pm_uid";

/// `Max-Age` of a minted cookie: one year.
pub const COOKIE_MAX_AGE_SECS: u64 = 31_536_000;

/// What a request carries, as the sticky-id lookup reads it. The caller
/// implements this over its request context with the routing layer's
/// parsers ([`crate::routing::context`]), so matchers and sticky ids read a
/// request alike. Return the first occurrence when a name appears several
/// times.
pub trait StickyLookup {
    /// The header's value; `None` when absent or not valid text.
    fn header(&self, name: &HeaderName) -> Option<&str>;
    /// The cookie's value as sent (the split layer decodes it, SPEC 3).
    fn cookie(&self, name: &str) -> Option<Cow<'_, str>>;
    /// The query parameter's value, decoded as query values are (SPEC 2.1).
    fn query(&self, name: &str) -> Option<Cow<'_, str>>;
    /// The client address (SPEC 5).
    fn client_ip(&self) -> IpAddr;
}

/// One `sticky_on` source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StickySource {
    /// `header:NAME` (parsed once, so a lookup only hashes it).
    Header(HeaderName),
    /// `cookie:NAME`.
    Cookie(Arc<str>),
    /// `query:NAME`.
    Query(Arc<str>),
    /// `ip`: the client address as text.
    Ip,
}

/// Why a `sticky_on` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StickySourceError {
    #[error("invalid sticky_on source {0:?}: use header:NAME, cookie:NAME, query:NAME or ip")]
    /// Not `header:`, `cookie:`, `query:` or `ip`.
    Unknown(String),
    #[error("sticky_on source {0:?} needs a name after the colon")]
    /// No name after the colon.
    EmptyName(String),
    #[error("invalid header name in sticky_on source {0:?}")]
    /// Not a valid header name.
    BadHeaderName(String),
    #[error("invalid cookie name {0:?}")]
    /// Not a valid cookie name.
    BadCookieName(String),
}

impl FromStr for StickySource {
    type Err = StickySourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "ip" {
            return Ok(StickySource::Ip);
        }
        let Some((kind, name)) = s.split_once(':') else {
            return Err(StickySourceError::Unknown(s.to_owned()));
        };
        if name.is_empty() {
            return Err(StickySourceError::EmptyName(s.to_owned()));
        }
        match kind {
            "header" => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Ok(StickySource::Header(name)),
                Err(_) => Err(StickySourceError::BadHeaderName(s.to_owned())),
            },
            "cookie" => {
                check_cookie_name(name)?;
                Ok(StickySource::Cookie(name.into()))
            }
            "query" => Ok(StickySource::Query(name.into())),
            _ => Err(StickySourceError::Unknown(s.to_owned())),
        }
    }
}

impl fmt::Display for StickySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StickySource::Header(n) => write!(f, "header:{n}"),
            StickySource::Cookie(n) => write!(f, "cookie:{n}"),
            StickySource::Query(n) => write!(f, "query:{n}"),
            StickySource::Ip => f.write_str("ip"),
        }
    }
}

/// Checks a cookie name is an RFC 6265 token.
pub fn check_cookie_name(name: &str) -> Result<(), StickySourceError> {
    let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(StickySourceError::BadCookieName(name.to_owned()));
    }
    Ok(())
}

/// Where an experiment or canary reads its sticky id, and whether it mints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StickyConfig {
    /// Tried in order; the first present wins.
    pub sources: Vec<StickySource>,
    /// The cookie to mint when no source is present (`issue_cookie`, or
    /// the default `pm_uid` when `sticky_on` is absent).
    pub mint_cookie: Option<Arc<str>>,
}

/// A sticky id found (or minted) for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyId<'a> {
    /// The decoded id that is hashed.
    pub value: Cow<'a, str>,
    /// Where it came from; the mint cookie's source when minted.
    pub source: StickySource,
    /// Whether it was minted for this request (send [`set_cookie_value`]).
    pub minted: bool,
}

impl StickyConfig {
    /// Builds the config from `sticky_on` and `issue_cookie` per SPEC 3:
    /// without `sticky_on` it is `[cookie:NAME]` (NAME = `issue_cookie` or
    /// `pm_uid`, minted); with it, `issue_cookie` adds `cookie:NAME` as the
    /// last source and enables minting.
    ///
    /// Errors carry the index of the bad `sticky_on` entry (`None` for
    /// `issue_cookie`).
    pub fn build(
        sticky_on: Option<&[&str]>,
        issue_cookie: Option<&str>,
    ) -> Result<Self, (Option<usize>, StickySourceError)> {
        if let Some(name) = issue_cookie {
            check_cookie_name(name).map_err(|e| (None, e))?;
        }
        let Some(list) = sticky_on else {
            let name: Arc<str> = issue_cookie.unwrap_or(DEFAULT_COOKIE).into();
            return Ok(StickyConfig {
                sources: vec![StickySource::Cookie(name.clone())],
                mint_cookie: Some(name),
            });
        };
        let mut sources = Vec::with_capacity(list.len() + 1);
        for (i, s) in list.iter().enumerate() {
            sources.push(s.parse::<StickySource>().map_err(|e| (Some(i), e))?);
        }
        let mint_cookie: Option<Arc<str>> = issue_cookie.map(Arc::from);
        if let Some(name) = &mint_cookie {
            let own = StickySource::Cookie(name.clone());
            // Read the minted cookie last (once is enough).
            sources.retain(|s| *s != own);
            sources.push(own);
        }
        Ok(StickyConfig {
            sources,
            mint_cookie,
        })
    }

    /// The first present, non-empty source's decoded id.
    pub fn lookup<'a>(&self, req: &'a dyn StickyLookup) -> Option<StickyId<'a>> {
        self.sources.iter().find_map(|source| {
            let value: Cow<'a, str> = match source {
                StickySource::Header(n) => Cow::Borrowed(req.header(n)?),
                StickySource::Cookie(n) => match req.cookie(n)? {
                    Cow::Borrowed(b) => decode_cookie_value(b),
                    Cow::Owned(o) => Cow::Owned(decode_cookie_value(&o).into_owned()),
                },
                StickySource::Query(n) => req.query(n)?,
                StickySource::Ip => Cow::Owned(req.client_ip().to_string()),
            };
            (!value.is_empty()).then(|| StickyId {
                value,
                source: source.clone(),
                minted: false,
            })
        })
    }

    /// The request's id, or a freshly minted one when none is present and
    /// minting is on. `None`: not enrolled.
    pub fn lookup_or_mint<'a>(&self, req: &'a dyn StickyLookup) -> Option<StickyId<'a>> {
        self.lookup(req).or_else(|| {
            self.mint_cookie.as_ref().map(|name| StickyId {
                value: Cow::Owned(mint_id()),
                source: StickySource::Cookie(name.clone()),
                minted: true,
            })
        })
    }

    /// The sources as written, for diagnostics and `explain`.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self.sources.iter().map(ToString::to_string).collect();
        list.join(",")
    }
}

/// A new random id: 16 random bytes (128 bits) as 22 characters of
/// URL-safe base64 without padding (`[A-Za-z0-9_-]`).
pub fn mint_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(char::from(ALPHABET[((bits >> nbits) & 63) as usize]));
        }
    }
    if nbits > 0 {
        out.push(char::from(ALPHABET[((bits << (6 - nbits)) & 63) as usize]));
    }
    out
}

/// The exact `Set-Cookie` value for a minted id (SPEC 3).
pub fn set_cookie_value(name: &str, id: &str, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{name}={id}; Path=/; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; SameSite=Lax{secure}")
}

/// Decodes a cookie id: surrounding double quotes removed, percent escapes
/// decoded, `+` kept, invalid escapes kept, non-UTF-8 bytes read lossily.
pub fn decode_cookie_value(raw: &str) -> Cow<'_, str> {
    let raw = raw
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(raw);
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    percent_decode(raw.as_bytes()).decode_utf8_lossy()
}

/// A simple [`StickyLookup`] over owned values, for tests, `explain` and
/// `assign`.
#[derive(Debug, Clone)]
pub struct SimpleRequest {
    /// `(lowercase name, value)` pairs.
    pub headers: Vec<(String, String)>,
    /// The `Cookie` header line(s).
    pub cookies: Vec<String>,
    /// The raw query string, without `?`.
    pub query: String,
    /// The client address.
    pub client_ip: IpAddr,
}

impl Default for SimpleRequest {
    fn default() -> Self {
        SimpleRequest {
            headers: Vec::new(),
            cookies: Vec::new(),
            query: String::new(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
        }
    }
}

impl SimpleRequest {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Adds a `Cookie` line (`a=1; b=2`).
    pub fn cookie(mut self, line: &str) -> Self {
        self.cookies.push(line.to_owned());
        self
    }

    /// Sets the raw query string.
    pub fn query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }
}

impl StickyLookup for SimpleRequest {
    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_str()))
            .map(|(_, v)| v.as_str())
    }

    fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        cookie_pairs(self.cookies.iter().map(String::as_str), name)
            .next()
            .map(Cow::Borrowed)
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        query_values(&self.query, name).next()
    }

    fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::context::decode_query_component;

    fn cfg(sticky_on: Option<&[&str]>, issue: Option<&str>) -> StickyConfig {
        StickyConfig::build(sticky_on, issue).unwrap()
    }

    #[test]
    fn parses_every_source_kind() {
        assert_eq!(
            "header:X-User".parse(),
            Ok(StickySource::Header(HeaderName::from_static("x-user")))
        );
        assert_eq!("cookie:a".parse(), Ok(StickySource::Cookie("a".into())));
        assert_eq!("query:u".parse(), Ok(StickySource::Query("u".into())));
        assert_eq!("ip".parse(), Ok(StickySource::Ip));
        for bad in [
            "",
            "ip:x",
            "header:",
            "body:x",
            "cookie:a b",
            "header:a b",
            "user",
        ] {
            assert!(bad.parse::<StickySource>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_is_pm_uid_cookie_minted() {
        let c = cfg(None, None);
        assert_eq!(c.sources, vec![StickySource::Cookie("pm_uid".into())]);
        assert_eq!(c.mint_cookie.as_deref(), Some("pm_uid"));
        let c = cfg(None, Some("uid"));
        assert_eq!(c.sources, vec![StickySource::Cookie("uid".into())]);
        assert_eq!(c.mint_cookie.as_deref(), Some("uid"));
    }

    #[test]
    fn issue_cookie_is_read_last_and_mints() {
        let c = cfg(Some(&["cookie:pm_uid", "header:x-user-id"]), Some("pm_uid"));
        assert_eq!(
            c.sources,
            vec![
                StickySource::Header(HeaderName::from_static("x-user-id")),
                StickySource::Cookie("pm_uid".into())
            ]
        );
        let c = cfg(Some(&["header:x-user-id"]), None);
        assert_eq!(c.mint_cookie, None);
        assert_eq!(c.lookup_or_mint(&SimpleRequest::default()), None);
    }

    #[test]
    fn first_present_non_empty_source_wins() {
        let c = cfg(
            Some(&["header:x-user-id", "query:u", "cookie:c", "ip"]),
            None,
        );
        let req = SimpleRequest::default()
            .header("x-user-id", "")
            .query("u=&v=1")
            .cookie("c=abc");
        let id = c.lookup(&req).unwrap();
        assert_eq!(id.value, "abc");
        assert_eq!(id.source, StickySource::Cookie("c".into()));
        let empty = SimpleRequest::default();
        let id = c.lookup(&empty).unwrap();
        assert_eq!(id.value, "127.0.0.1");
        assert_eq!(id.source, StickySource::Ip);
    }

    #[test]
    fn cookie_and_query_decoding_differ_on_plus() {
        assert_eq!(decode_cookie_value("a+b%20c"), "a+b c");
        assert_eq!(decode_query_component("a+b%20c"), "a b c");
        assert_eq!(decode_cookie_value("100%zz%2"), "100%zz%2");
        assert_eq!(decode_query_component("100%zz%2"), "100%zz%2");
        assert_eq!(decode_cookie_value("%FFx"), "\u{FFFD}x");
        assert_eq!(decode_query_component("Jos%C3%A9"), "José");
        let c = cfg(Some(&["query:u", "cookie:c"]), None);
        let req = SimpleRequest::default().query("u=a+b");
        assert_eq!(c.lookup(&req).unwrap().value, "a b");
        let req = SimpleRequest::default().cookie("c=a+b%21");
        assert_eq!(c.lookup(&req).unwrap().value, "a+b!");
    }

    #[test]
    fn minted_ids_are_long_url_safe_and_distinct() {
        let a = mint_id();
        let b = mint_id();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        let c = cfg(None, None);
        let empty = SimpleRequest::default();
        let id = c.lookup_or_mint(&empty).unwrap();
        assert!(id.minted);
        assert_eq!(id.source, StickySource::Cookie("pm_uid".into()));
    }

    #[test]
    fn set_cookie_is_exact() {
        assert_eq!(
            set_cookie_value("pm_uid", "abc", false),
            "pm_uid=abc; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie_value("pm_uid", "abc", true),
            "pm_uid=abc; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn cookie_ids_are_found_quoted_and_on_later_lines() {
        let c = cfg(Some(&["cookie:b", "cookie:c", "cookie:d"]), None);
        let both = |cookies: &[&str]| {
            let mut req = SimpleRequest::default();
            for line in cookies {
                req = req.cookie(line);
            }
            c.lookup(&req).map(|id| id.value.into_owned())
        };
        assert_eq!(both(&["a=1; b=\"two\"", "c=3"]).as_deref(), Some("two"));
        assert_eq!(both(&["a=1", "c=3"]).as_deref(), Some("3"));
        assert_eq!(both(&["a=1"]), None);
    }
}
