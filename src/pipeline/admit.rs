//! Admit: what the proxy checks before it routes a request (limits, Host,
//! TLS server name, path) and what it derives from the connection (the
//! client address). A refused request is answered by the proxy itself and
//! never forwarded.

use super::ConnInfo;
use crate::compile::{Config, UnderscoreHeaders};
use crate::forward::{ForwardError, RequestBody, headers};
use crate::routing::matchers::is_token;
use crate::routing::{canonical_host, normalize_path};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use std::borrow::Cow;
use std::net::IpAddr;

/// What admission found out about a request.
#[derive(Debug)]
pub struct Admitted {
    /// The Host as received (the absolute-form / `:authority` authority,
    /// else the Host header), a trailing dot of its name removed.
    pub host: Option<HeaderValue>,
    /// Whether `host` differs from what the client sent (a trailing dot
    /// removed), so the upstream gets it rewritten.
    pub host_rewritten: bool,
    /// The client address (SPEC 5).
    pub client_ip: IpAddr,
}

impl Admitted {
    /// The Host as text ("" when absent).
    pub fn host_str(&self) -> &str {
        self.host
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Checks the request head against SPEC 5.1 and the limits, and drops
/// header names with `_` when `limits.underscore_headers` says so.
pub fn admit<B>(
    config: &Config,
    req: &mut Request<B>,
    conn: &ConnInfo,
) -> Result<Admitted, ForwardError> {
    let limits = &config.settings.limits;
    // Framing first: whatever else is wrong, a request whose framing
    // cannot be trusted closes its connection.
    if req.version() <= Version::HTTP_11 {
        transfer_encoding(req.headers())?;
    }
    if req.method() == Method::TRACE || req.method() == Method::CONNECT {
        return Err(ForwardError::MethodNotAllowed);
    }
    // hyper enforces the count on HTTP/1.1; HTTP/2 is checked here.
    if req.headers().len() > limits.max_headers {
        return Err(ForwardError::HeadersTooLarge);
    }
    underscores(req.headers_mut(), limits.underscore_headers)?;
    let (host, host_rewritten) = host(req)?;
    let admitted = Admitted {
        client_ip: headers::client_ip(
            conn.peer.ip(),
            req.headers(),
            &config.settings.trusted_proxies,
        ),
        host,
        host_rewritten,
    };
    if let Some(sni) = &conn.sni
        && !admitted.host_str().is_empty()
        && !crate::tls::host_matches_sni(admitted.host_str(), sni)
    {
        return Err(ForwardError::Misdirected);
    }
    if limits.max_body_bytes > 0
        && let Some(len) = content_length(req.headers())
        && len > limits.max_body_bytes
    {
        return Err(ForwardError::BodyTooLarge);
    }
    Ok(admitted)
}

/// HTTP/1.x `Transfer-Encoding` (SPEC 5.1): one line, `chunked` alone.
/// hyper already refuses a last coding other than `chunked` and TE on
/// HTTP/1.0; a repeated line or a malformed list is a 400 here, another
/// coding before `chunked` (`gzip, chunked`) a 501; both close.
fn transfer_encoding(h: &HeaderMap) -> Result<(), ForwardError> {
    let mut lines = h.get_all(header::TRANSFER_ENCODING).iter();
    let Some(line) = lines.next() else {
        return Ok(());
    };
    if lines.next().is_some() {
        return Err(ForwardError::BadFraming("Transfer-Encoding repeated"));
    }
    if line.as_bytes().eq_ignore_ascii_case(b"chunked") {
        return Ok(());
    }
    let text = line
        .to_str()
        .map_err(|_| ForwardError::BadFraming("unreadable Transfer-Encoding"))?;
    let (mut chunked, mut other) = (0, false);
    for coding in text.split(',').map(|c| c.trim_matches([' ', '\t'])) {
        if coding.eq_ignore_ascii_case("chunked") {
            chunked += 1;
        } else if is_token(coding) {
            other = true;
        } else {
            return Err(ForwardError::BadFraming("malformed Transfer-Encoding"));
        }
    }
    let last_chunked = text
        .rsplit(',')
        .next()
        .is_some_and(|c| c.trim_matches([' ', '\t']).eq_ignore_ascii_case("chunked"));
    if chunked != 1 || !last_chunked {
        return Err(ForwardError::BadFraming(
            "chunked must be the one, final coding",
        ));
    }
    if other {
        return Err(ForwardError::UnsupportedCoding);
    }
    Ok(())
}

/// Header names with `_` per `limits.underscore_headers`: CGI-style
/// backends read `X_Forwarded_For` as `X-Forwarded-For`. Allocates only
/// when such a name is present.
fn underscores(h: &mut HeaderMap, policy: UnderscoreHeaders) -> Result<(), ForwardError> {
    let has = |n: &HeaderName| n.as_str().as_bytes().contains(&b'_');
    if policy == UnderscoreHeaders::Allow || !h.keys().any(has) {
        return Ok(());
    }
    if policy == UnderscoreHeaders::Reject {
        return Err(ForwardError::BadRequest("header name with `_`"));
    }
    let names: Vec<HeaderName> = h.keys().filter(|n| has(n)).cloned().collect();
    for name in names {
        h.remove(name);
    }
    Ok(())
}

/// The Host (SPEC 5.1): at most one Host line, present on HTTP/1.1, every
/// value `host[:port]`; the absolute-form / `:authority` authority wins
/// over the Host header. Returns it with a trailing dot removed, and
/// whether it was.
fn host<B>(req: &Request<B>) -> Result<(Option<HeaderValue>, bool), ForwardError> {
    let mut lines = req.headers().get_all(header::HOST).iter();
    let line = lines.next();
    if lines.next().is_some() {
        return Err(ForwardError::BadRequest("more than one Host"));
    }
    if line.is_none() && req.version() == Version::HTTP_11 {
        return Err(ForwardError::BadRequest("HTTP/1.1 request without Host"));
    }
    let Some(raw) = raw_host(req) else {
        return Ok((None, false));
    };
    if let Some(line) = line
        && req.uri().authority().is_some()
    {
        // Ignored, but it must still be a Host (RFC 9112 3.2).
        check_host(line)?;
    }
    match check_host(&raw)? {
        Cow::Borrowed(_) => Ok((Some(raw), false)),
        Cow::Owned(canonical) => HeaderValue::from_str(&canonical)
            .map(|v| (Some(v), true))
            .map_err(|_| ForwardError::BadRequest("Host is not host[:port]")),
    }
}

fn check_host(v: &HeaderValue) -> Result<Cow<'_, str>, ForwardError> {
    let text = v
        .to_str()
        .map_err(|_| ForwardError::BadRequest("unreadable Host"))?;
    canonical_host(text).map_err(|_| ForwardError::BadRequest("Host is not host[:port]"))
}

/// The normalized path (SPEC 5); a path that climbs above `/` is a 400.
pub fn path(uri: &Uri) -> Result<Cow<'_, str>, ForwardError> {
    normalize_path(uri.path()).map_err(|_| ForwardError::BadRequest("bad path"))
}

/// Whether the request body is read ahead (up to `inspect_body_bytes`)
/// before routing: when a matcher inspects bodies. A gRPC call's body
/// never is: it is a stream of length-prefixed messages (never JSON to
/// `body_json`), and a streaming call's client may send nothing before
/// the first answer.
pub fn reads_body(config: &Config, grpc: bool) -> bool {
    config.needs_body && !grpc
}

/// The request body as routing got it ([`reads_body`]), checked: a body
/// held in full over `max_body_bytes` is a 413; a body that the client
/// broke while it was read is a 400.
pub fn body(config: &Config, body: RequestBody) -> Result<RequestBody, ForwardError> {
    let limits = &config.settings.limits;
    if body.failed() {
        return Err(ForwardError::ClientBody);
    }
    if let Some(held) = body.held()
        && limits.max_body_bytes > 0
        && held.len() as u64 > limits.max_body_bytes
    {
        return Err(ForwardError::BodyTooLarge);
    }
    Ok(body)
}

/// Host as received: the absolute-form / :authority authority, else Host.
pub fn raw_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    req.headers().get(header::HOST).cloned()
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn te(values: &[&'static str]) -> Result<(), ForwardError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
        }
        transfer_encoding(&h)
    }

    #[test]
    fn transfer_encoding_is_one_final_chunked() {
        assert!(te(&[]).is_ok());
        assert!(te(&["chunked"]).is_ok());
        assert!(te(&["Chunked"]).is_ok());
        for bad in [
            &["chunked", "chunked"][..],
            &["gzip", "chunked"],
            &["chunked, chunked"],
            &["chunked, identity"],
            &[", chunked"],
            &["gzip;q=1, chunked"],
        ] {
            assert!(
                matches!(te(bad), Err(ForwardError::BadFraming(_))),
                "{bad:?}"
            );
        }
        for unimplemented in [
            &["gzip, chunked"][..],
            &["foo,chunked"],
            &["identity, chunked"],
        ] {
            assert!(
                matches!(te(unimplemented), Err(ForwardError::UnsupportedCoding)),
                "{unimplemented:?}"
            );
        }
    }

    #[test]
    fn underscore_headers_per_policy() {
        let make = || {
            let mut h = HeaderMap::new();
            h.insert("x_forwarded_for", HeaderValue::from_static("1.2.3.4"));
            h.insert("foo_bar", HeaderValue::from_static("1"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            h
        };
        let mut h = make();
        underscores(&mut h, UnderscoreHeaders::Drop).unwrap();
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        let mut h = make();
        assert!(underscores(&mut h, UnderscoreHeaders::Reject).is_err());
        let mut h = make();
        underscores(&mut h, UnderscoreHeaders::Allow).unwrap();
        assert_eq!(h.len(), 3);
    }

    fn host_of(
        version: Version,
        uri: &str,
        hosts: &[&'static str],
    ) -> Result<String, ForwardError> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        let req = b.body(()).unwrap();
        host(&req).map(|(h, _)| {
            h.map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        })
    }

    #[test]
    fn host_rules() {
        let v11 = Version::HTTP_11;
        assert_eq!(host_of(v11, "/", &["a.example"]).unwrap(), "a.example");
        assert_eq!(
            host_of(v11, "/", &["a.example.:81"]).unwrap(),
            "a.example:81"
        );
        assert!(host_of(v11, "/", &[]).is_err());
        assert!(host_of(v11, "/", &["a", "b"]).is_err());
        assert!(host_of(v11, "/", &["a,b"]).is_err());
        assert!(host_of(v11, "/", &[""]).is_err());
        assert_eq!(host_of(Version::HTTP_10, "/", &[]).unwrap(), "");
        // Absolute-form wins, but the Host line must still be valid.
        assert_eq!(
            host_of(v11, "http://b.example/x", &["a.example"]).unwrap(),
            "b.example"
        );
        assert!(host_of(v11, "http://b.example/x", &["a b"]).is_err());
        assert!(host_of(v11, "http://u@b.example/x", &["b.example"]).is_err());
        assert_eq!(
            host_of(Version::HTTP_2, "http://b.example/x", &[]).unwrap(),
            "b.example"
        );
    }
}
