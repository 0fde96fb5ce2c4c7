//! Mirrors: a copy of a share of a route's requests (chosen by request id)
//! sent to another upstream in a task of its own; the answer is thrown away
//! and never delays or changes the real response.

use super::{Outgoing, prepare};
use crate::compile::Route;
use crate::forward::{NO_FIELDS, RequestBody, full, headers, upstream_path};
use crate::metrics::MirrorCounters;
use crate::runtime::Snapshot;
use crate::runtime::handles::RouteMetrics;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Uri};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// Mirrors the request when the route mirrors and its id falls in the
/// share. The body is read first if it fits `inspect_body_bytes`; a larger
/// one is not mirrored (counted as skipped).
pub(super) async fn maybe(
    snapshot: &Snapshot,
    route: &Route,
    metrics: Option<&RouteMetrics>,
    out: &mut Outgoing<'_>,
    request_id: &HeaderValue,
) {
    let Some(m) = &route.forward.mirror else {
        return;
    };
    if !headers::id_in_share(request_id, m.percent) {
        return;
    }
    let limit = snapshot.config.settings.limits.inspect_body_bytes;
    let body = std::mem::replace(&mut out.body, RequestBody::Held(Bytes::new()));
    out.body = body.inspect(limit).await;
    let counters = metrics.and_then(|r| r.mirror.clone());
    match (out.body.held(), snapshot.upstream(m.upstream)) {
        (Some(held), Some(up)) => {
            let mut copy = out.parts.clone();
            out.added.insert_into(&mut copy.headers);
            headers::apply_ops(&mut copy.headers, &route.forward.request_headers);
            prepare::for_protocol(&mut copy, up.def.protocol, out.te_trailers);
            let path = upstream_path(out.path, None, route.forward.strip_prefix.as_deref());
            let timeout = up.def.request_timeout;
            spawn(up.clone(), copy, held.clone(), path, timeout, counters);
        }
        _ => {
            if let Some(c) = counters {
                c.skipped();
            }
        }
    }
}

/// Sends the copy in a spawned task; never delays the caller.
fn spawn(
    upstream: Arc<Upstream>,
    mut parts: Parts,
    body: Bytes,
    path: String,
    timeout: Duration,
    counters: Option<MirrorCounters>,
) {
    tokio::spawn(async move {
        let pq = upstream_path(&path, parts.uri.query(), None);
        let sent = match (PathAndQuery::try_from(pq), upstream.pick()) {
            (Ok(pq), Some(idx)) => {
                parts.uri = Uri::from(pq);
                let sent = upstream.send_to(idx, &mut parts, &NO_FIELDS, full(body), timeout);
                match sent.await {
                    Ok(sent) => {
                        let _ = sent.response.into_body().collect().await;
                        true
                    }
                    Err(e) => {
                        tracing::debug!(upstream = %upstream.def.name, error = %e, "mirror failed");
                        false
                    }
                }
            }
            _ => false,
        };
        match (counters, sent) {
            (Some(c), true) => c.sent(),
            (Some(c), false) => c.failed(),
            (None, _) => {}
        }
    });
}
