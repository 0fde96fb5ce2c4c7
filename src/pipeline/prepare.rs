//! Prepare: the request head as the upstream gets it (SPEC 5). The head is
//! rewritten once; every target (route, mirror, fallback) starts from it.

use super::ConnInfo;
use super::admit::Admitted;
use crate::compile::ForwardOptions;
use crate::forward::{ForwardError, headers, upstream_path};
use crate::split::SplitDecision;
use crate::upstream::def::Protocol;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri, Version, header};
use ipnet::IpNet;

/// The variant header sent upstream (SPEC 3).
pub const X_POINTSMAN_VARIANT: HeaderName = HeaderName::from_static("x-pointsman-variant");

/// Removes hop-by-hop and client-sent internal headers, keeps the Host as
/// received, and adds the forwarding headers and the request id. A `te:
/// trailers` is kept for now (it goes to h2 upstreams only, see
/// [`for_protocol`]); the answer tells whether the client sent it.
pub fn head(
    parts: &mut Parts,
    admitted: &Admitted,
    trusted: &[IpNet],
    conn: &ConnInfo,
    request_id: &HeaderValue,
    upgrade: bool,
) -> bool {
    let te_trailers = headers::strip_hop_by_hop(&mut parts.headers, upgrade, true);
    headers::strip_internal(&mut parts.headers);
    if let Some(v) = &admitted.host
        && (parts.uri.authority().is_some() || admitted.host_rewritten)
    {
        // h2 / absolute-form requests carry the host in the URI, and a
        // trailing dot was removed; others already have this Host header.
        parts.headers.insert(header::HOST, v.clone());
    }
    let peer = conn.peer.ip();
    headers::add_forwarded(
        &mut parts.headers,
        &conn.peer_entry,
        headers::is_trusted(peer, trusted),
        conn.proto(),
        admitted.host.as_ref(),
    );
    parts
        .headers
        .insert(headers::X_REQUEST_ID, request_id.clone());
    te_trailers
}

/// Tells the upstream which variant a split chose.
pub fn variant(parts: &mut Parts, split: Option<&SplitDecision>) {
    if let Some(v) = split.and_then(|d| d.variant_header.clone()) {
        parts.headers.insert(X_POINTSMAN_VARIANT, v);
    }
}

/// What the upstream's protocol asks of the head (SPEC 5): `te: trailers`
/// (present when `te_trailers`) goes to h2 upstreams only, and an HTTP/2
/// request's `cookie` fields reach an HTTP/1.1 upstream as one line. (The
/// Host becomes `:authority` where the request is put on the h2 wire.)
pub fn for_protocol(parts: &mut Parts, protocol: Protocol, te_trailers: bool) {
    if protocol == Protocol::H2 {
        return;
    }
    if te_trailers {
        parts.headers.remove(header::TE);
    }
    if parts.version == Version::HTTP_2 {
        headers::join_cookies(&mut parts.headers);
    }
}

/// The head for one upstream: the normalized `path` (after the route's
/// `strip_prefix`) with the query, and the route's request header edits.
pub fn for_upstream(
    mut parts: Parts,
    path: &str,
    opts: Option<&ForwardOptions>,
) -> Result<Parts, ForwardError> {
    let strip = opts.and_then(|o| o.strip_prefix.as_deref());
    let pq = match parts.uri.path_and_query() {
        // Unchanged by normalization and not stripped: as received (a
        // shared copy, nothing parsed again).
        Some(pq) if strip.is_none() && pq.path() == path => pq.clone(),
        _ => PathAndQuery::try_from(upstream_path(path, parts.uri.query(), strip))
            .map_err(|_| ForwardError::BadRequest("unusable path"))?,
    };
    parts.uri = Uri::from(pq);
    if let Some(o) = opts {
        headers::apply_ops(&mut parts.headers, &o.request_headers);
    }
    Ok(parts)
}
