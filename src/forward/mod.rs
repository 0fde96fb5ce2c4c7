//! Forwarding a routed request to its upstream (SPEC 5 and 6): header
//! rewriting, body handling, timeouts, upgrades and mirroring.

pub mod body;
pub mod error;
pub mod headers;

pub use body::RequestBody;
pub use error::ForwardError;

use crate::router::ForwardOptions;
use crate::upstream::{ProxyBody, Upstream, full};
use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// A response from an upstream, ready for the client.
#[derive(Debug)]
pub struct Forwarded {
    pub response: Response<ProxyBody>,
    /// The endpoint (`host:port`) that answered.
    pub endpoint: Arc<str>,
}

/// The path forwarded for `path` under `strip_prefix` (segment-aware; a
/// path equal to the prefix becomes `/`), with the query appended.
pub fn upstream_path(path: &str, query: Option<&str>, strip_prefix: Option<&str>) -> String {
    let mut p = path;
    if let Some(prefix) = strip_prefix.map(|s| s.trim_end_matches('/'))
        && let Some(rest) = path.strip_prefix(prefix)
    {
        if rest.is_empty() {
            p = "/";
        } else if rest.starts_with('/') {
            p = rest;
        }
    }
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

/// Sends `parts` + `body` to `upstream` with the route's options applied
/// (path rewrite, request/response header edits, timeout). `parts` already
/// carries the forwarding headers. With `on_upgrade` (the client side of an
/// Upgrade request), the two connections are joined only once the upstream
/// answers 101.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    upstream: &Upstream,
    mut parts: Parts,
    body: RequestBody,
    path: &str,
    opts: Option<&ForwardOptions>,
    max_body_bytes: u64,
    on_upgrade: Option<OnUpgrade>,
) -> Result<Forwarded, ForwardError> {
    let strip = opts.and_then(|o| o.strip_prefix.as_deref());
    let pq = upstream_path(path, parts.uri.query(), strip);
    parts.uri = match PathAndQuery::try_from(pq).map(Uri::from) {
        Ok(uri) => uri,
        Err(_) => return Err(ForwardError::BadRequest("unusable path")),
    };
    if let Some(o) = opts {
        headers::apply_ops(&mut parts.headers, &o.request_headers);
    }
    let timeout = opts
        .and_then(|o| o.timeout)
        .unwrap_or(upstream.def.request_timeout);
    let held = body.held().cloned();
    let sent = match held {
        Some(ref bytes) => {
            let req = Request::from_parts(parts, full(Bytes::new()));
            upstream.send(req, Some(bytes), timeout).await?
        }
        None => {
            let req = Request::from_parts(parts, body.into_proxy_body(max_body_bytes));
            upstream.send(req, None, timeout).await?
        }
    };
    let crate::upstream::Sent {
        response,
        endpoint,
        in_flight,
    } = sent;
    let (mut rparts, rbody) = response.into_parts();
    let switching = rparts.status == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = switching && on_upgrade.is_some();
    headers::strip_hop_by_hop(&mut rparts.headers, upgrade, false);
    if let Some(o) = opts {
        headers::apply_ops(&mut rparts.headers, &o.response_headers);
    }
    if switching {
        let mut upstream_resp = Response::from_parts(rparts.clone(), rbody);
        match on_upgrade {
            Some(client) => {
                let server = hyper::upgrade::on(&mut upstream_resp);
                tokio::spawn(tunnel(client, server, in_flight));
            }
            // An unrequested 101: answer 502 rather than switch.
            None => {
                return Err(ForwardError::UpstreamReset(
                    "unrequested 101 from upstream".into(),
                ));
            }
        }
        return Ok(Forwarded {
            response: Response::from_parts(rparts, full(Bytes::new())),
            endpoint,
        });
    }
    // The in-flight guard lives as long as the response body.
    let body = rbody
        .map_frame(move |f| {
            let _held = &in_flight;
            f
        })
        .map_err(crate::upstream::BoxError::from)
        .boxed();
    Ok(Forwarded {
        response: Response::from_parts(rparts, body),
        endpoint,
    })
}

async fn tunnel(client: OnUpgrade, server: OnUpgrade, _in_flight: crate::upstream::InFlight) {
    let (client, server) = match tokio::try_join!(client, server) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut server = TokioIo::new(server);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(error = %e, "tunnel closed");
    }
}

/// Sends a copy of a request to `upstream` in a spawned task and throws the
/// answer away; never delays the caller. `counters` count it as sent or
/// failed.
pub fn mirror(
    upstream: Arc<Upstream>,
    parts: Parts,
    body: Bytes,
    path: String,
    timeout: Duration,
    counters: Option<crate::metrics::MirrorCounters>,
) {
    tokio::spawn(async move {
        let mut parts = parts;
        let pq = upstream_path(&path, parts.uri.query(), None);
        let sent = match (PathAndQuery::try_from(pq), upstream.pick(None)) {
            (Ok(pq), Some(idx)) => {
                parts.uri = Uri::from(pq);
                let req = Request::from_parts(parts, full(body));
                match upstream.send_to(idx, req, timeout).await {
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
