//! What forwarding needs whatever the wire (SPEC 5 and 6): request and
//! response bodies ([`body`]), header rewriting ([`headers`]), the path
//! sent upstream, the fields the proxy adds to it ([`added`]), failures
//! and the answers they become ([`error`]), gRPC calls and their error
//! answers ([`grpc`]), and upgraded tunnels ([`tunnel`]).

pub mod added;
pub mod body;
pub mod error;
pub mod grpc;
pub mod headers;
pub mod tunnel;

pub use added::{AddedFields, NO_FIELDS};
pub use body::{BodyFailed, BoxError, ClientBodyError, ProxyBody, RequestBody, empty, full};
pub use error::ForwardError;

/// The path forwarded for `path` under `strip_prefix` (segment-aware; a
/// path equal to the prefix becomes `/`), with the query appended.
pub fn upstream_path(path: &str, query: Option<&str>, strip_prefix: Option<&str>) -> String {
    let p = strip_path_prefix(path, strip_prefix);
    match query {
        Some(q) => {
            let mut s = String::with_capacity(p.len() + q.len() + 1);
            s.push_str(p);
            s.push('?');
            s.push_str(q);
            s
        }
        None => p.to_owned(),
    }
}

/// `path` without `prefix` (segment-aware: `/api` strips `/api/x` and
/// `/api`, which becomes `/`, but not `/apix`).
pub fn strip_path_prefix<'p>(path: &'p str, prefix: Option<&str>) -> &'p str {
    if let Some(prefix) = prefix.map(|s| s.trim_end_matches('/'))
        && let Some(rest) = path.strip_prefix(prefix)
    {
        if rest.is_empty() {
            return "/";
        } else if rest.starts_with('/') {
            return rest;
        }
    }
    path
}
