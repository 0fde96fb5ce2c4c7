//! Prepare: the request head as the upstream gets it (SPEC 5). The head is
//! rewritten once; every target (route, mirror, fallback) starts from it.

use super::ConnInfo;
use super::admit::Admitted;
use crate::compile::ForwardOptions;
use crate::forward::{ForwardError, headers, upstream_path};
use crate::split::SplitDecision;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri, header};
use ipnet::IpNet;

/// The variant header sent upstream (SPEC 3).
pub const X_POINTSMAN_VARIANT: HeaderName = HeaderName::from_static("x-pointsman-variant");

/// Removes hop-by-hop and client-sent internal headers, keeps the Host as
/// received, and adds the forwarding headers and the request id.
pub fn head(
    parts: &mut Parts,
    admitted: &Admitted,
    trusted: &[IpNet],
    conn: &ConnInfo,
    request_id: &HeaderValue,
    upgrade: bool,
) {
    headers::strip_hop_by_hop(&mut parts.headers, upgrade, false);
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
        peer,
        headers::is_trusted(peer, trusted),
        conn.proto(),
        admitted.host.as_ref(),
    );
    parts
        .headers
        .insert(headers::X_REQUEST_ID, request_id.clone());
}

/// Tells the upstream which variant a split chose.
pub fn variant(parts: &mut Parts, split: Option<&SplitDecision>) {
    if let Some(v) = split.and_then(|d| d.variant_header.clone()) {
        parts.headers.insert(X_POINTSMAN_VARIANT, v);
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
    let pq = upstream_path(path, parts.uri.query(), strip);
    parts.uri = match PathAndQuery::try_from(pq).map(Uri::from) {
        Ok(uri) => uri,
        Err(_) => return Err(ForwardError::BadRequest("unusable path")),
    };
    if let Some(o) = opts {
        headers::apply_ops(&mut parts.headers, &o.request_headers);
    }
    Ok(parts)
}
