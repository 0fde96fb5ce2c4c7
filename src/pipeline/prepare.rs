//! Prepare: the request head as the upstream gets it (SPEC 5). The head is
//! rewritten once; every target (route, mirror, fallback) starts from it.

use super::ConnInfo;
use super::admit::Admitted;
use crate::compile::ForwardOptions;
use crate::forward::{AddedFields, ForwardError, headers, upstream_path};
use crate::split::SplitDecision;
use crate::upstream::def::Protocol;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Uri, Version, header};
use ipnet::IpNet;

/// Removes hop-by-hop and client-sent internal headers, keeps the Host as
/// received, and sets the forwarding fields and the request id in `added`
/// (written after the head, see [`AddedFields`]). A `te:
/// trailers` is kept for now (it goes to h2 upstreams only, see
/// [`for_protocol`]); the answer tells whether the client sent it.
pub fn head(
    parts: &mut Parts,
    added: &mut AddedFields,
    admitted: &Admitted,
    trusted: &[IpNet],
    conn: &ConnInfo,
    request_id: &HeaderValue,
    upgrade: bool,
) -> bool {
    let te_trailers = headers::strip_hop_by_hop(&mut parts.headers, upgrade, true);
    let present = headers::strip_internal(&mut parts.headers);
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
        present,
        added,
        &conn.peer_entry,
        headers::is_trusted(peer, trusted),
        conn.proto(),
        admitted.host.as_ref(),
    );
    if present.request_id {
        parts.headers.remove(headers::X_REQUEST_ID);
    }
    // A copy, not a clone: the first clone of a value that owns its bytes
    // makes them shared (an allocation, then an atomic count on every
    // clone and drop); a copy of these 32 bytes is one small allocation.
    added.set_request_id(
        HeaderValue::from_bytes(request_id.as_bytes())
            .map_or_else(|_| request_id.clone(), headers::never_indexed),
    );
    te_trailers
}

/// Tells the upstream which variant a split chose.
pub fn variant(added: &mut AddedFields, split: Option<&SplitDecision>) {
    if let Some(v) = split.and_then(|d| d.variant_header.clone()) {
        added.set_variant(v);
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
/// `strip_prefix`) with the query, and the route's request header edits
/// (which see the `added` fields: those move into the head first).
pub fn for_upstream(
    parts: &mut Parts,
    added: &mut AddedFields,
    path: &str,
    opts: Option<&ForwardOptions>,
) -> Result<(), ForwardError> {
    let strip = opts.and_then(|o| o.strip_prefix.as_deref());
    let pq = match parts.uri.path_and_query() {
        // Unchanged by normalization and not stripped: as received (a
        // shared copy, nothing parsed again).
        Some(pq) if strip.is_none() && pq.path() == path => pq.clone(),
        _ => PathAndQuery::try_from(upstream_path(path, parts.uri.query(), strip))
            .map_err(|_| ForwardError::BadRequest("unusable path"))?,
    };
    parts.uri = Uri::from(pq);
    if let Some(o) = opts.filter(|o| !o.request_headers.is_empty()) {
        added.move_into(&mut parts.headers);
        headers::apply_ops(&mut parts.headers, &o.request_headers);
    }
    Ok(())
}
