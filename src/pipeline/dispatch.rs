//! Dispatch: the answer for a decided request. A `respond` or `redirect`
//! route answers itself; a forwarding route sends to its upstream (with
//! the upstream's retries), mirrors a share, and fails over to the
//! fallback when `fallback.failover` allows; no route goes to the fallback.

use super::decide::Decision;
use super::record::Served;
use super::{Outgoing, mirror, prepare};
use crate::compile::{Action, FallbackAction, ForwardOptions, Redirect, Respond, Route};
use crate::forward::body::Watched;
use crate::forward::tunnel::{PendingUpgrade, tunnel};
use crate::forward::{BodyFailed, ForwardError, ProxyBody, RequestBody, full, headers};
use crate::runtime::Snapshot;
use crate::runtime::handles::RouteMetrics;
use crate::split::{Arm, SplitDecision};
use crate::upstream::def::UpstreamId;
use crate::upstream::{SendError, Sent, Upstream};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// Answers a decided request.
pub(super) async fn dispatch(
    snapshot: &Snapshot,
    decision: Decision,
    mut out: Outgoing<'_>,
    request_id: &HeaderValue,
    served: &mut Served,
) -> Result<Response<ProxyBody>, ForwardError> {
    let config = &snapshot.config;
    let Some((i, route)) = decision.route.zip(decision.route(config)) else {
        return fallback(snapshot, out, served, None).await;
    };
    served.route = Some(route.name.clone());
    let metrics = snapshot.route_metrics(i);
    served.series = metrics.and_then(|m| m.direct.clone());
    match &route.action {
        Action::Respond(r) => return Ok(respond(r)),
        Action::Redirect(r) => return Ok(redirect(r)),
        _ => {}
    }
    let Some(upstream) = decision.upstream(config) else {
        return Err(ForwardError::NoHealthyUpstream("no upstream".into()));
    };
    let split = decision.split.as_ref();
    prepare::variant(&mut out.parts, split);
    note_split(route, split, metrics, served);
    let out = mirror::maybe(snapshot, route, metrics, out, request_id).await;
    let failover = match (&config.fallback, out.body.held()) {
        (Some(f), Some(held)) if f.failover && out.upgrade.is_none() => Some(Outgoing {
            parts: out.parts.clone(),
            body: RequestBody::Held(held.clone()),
            path: out.path,
            upgrade: None,
        }),
        _ => None,
    };
    match send(snapshot, upstream, out, Some(&route.forward), served).await {
        Err(e) if e.fails_over() => match failover {
            Some(out) => {
                tracing::debug!(route = %route.name, error = %e, "failing over to the fallback");
                fallback(snapshot, out, served, Some(e)).await
            }
            None => Err(e),
        },
        result => result,
    }
}

/// Notes what a split decided: the variant, a minted cookie, the canary
/// arm for its guard, the exposure, and the arm's request series.
fn note_split(
    route: &Route,
    split: Option<&SplitDecision>,
    metrics: Option<&RouteMetrics>,
    served: &mut Served,
) {
    served.variant = split.and_then(|d| d.variant.clone());
    served.set_cookie = split.and_then(|d| d.set_cookie.clone());
    let arm = match (&route.action, split) {
        (Action::Canary(c), Some(d)) => {
            served.canary = d.arm.map(|arm| (c.index, arm));
            usize::from(d.arm == Some(Arm::Canary))
        }
        (Action::Experiment { experiment, .. }, Some(d)) => {
            served.exposure = d.enrolled.map(|v| (experiment.index, v));
            d.variant
                .as_ref()
                .and_then(|v| {
                    // The decision's name is the variant's own Arc.
                    experiment
                        .variants
                        .iter()
                        .position(|x| Arc::ptr_eq(&x.name, v))
                })
                .map_or(0, |i| i + 1)
        }
        _ => 0,
    };
    served.series = metrics.and_then(|m| m.arms.get(arm).cloned());
}

/// Serves through the fallback; `failed` is the error that caused a
/// failover (answered with if the fallback fails too, route name kept).
async fn fallback(
    snapshot: &Snapshot,
    out: Outgoing<'_>,
    served: &mut Served,
    failed: Option<ForwardError>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let Some(fb) = &snapshot.config.fallback else {
        return Err(failed.unwrap_or(ForwardError::NoRoute));
    };
    served.via_fallback = true;
    served.series = snapshot.metrics().fallback.clone();
    let result = match &fb.action {
        FallbackAction::Respond(r) => Ok(respond(r)),
        FallbackAction::Forward(id) => send(snapshot, *id, out, None, served).await,
    };
    if result.is_err() {
        // The JSON body and the label name the route that matched.
        served.via_fallback = false;
    }
    result
}

/// Sends the request to upstream `id` with a route's options (path
/// rewrite, header edits, timeout) and turns its answer into the client's.
async fn send(
    snapshot: &Snapshot,
    id: UpstreamId,
    out: Outgoing<'_>,
    opts: Option<&ForwardOptions>,
    served: &mut Served,
) -> Result<Response<ProxyBody>, ForwardError> {
    let Some(upstream) = snapshot.upstream(id) else {
        return Err(ForwardError::NoHealthyUpstream("unknown upstream".into()));
    };
    served.upstream = Some(upstream.def.name.clone());
    let parts = prepare::for_upstream(out.parts, out.path, opts)?;
    let timeout = opts
        .and_then(|o| o.timeout)
        .unwrap_or(upstream.def.request_timeout);
    let max = snapshot.config.settings.limits.max_body_bytes;
    let sent = match out.body.held().cloned() {
        Some(held) => {
            let req = Request::from_parts(parts, full(Bytes::new()));
            upstream.send(req, Some(&held), timeout, None).await?
        }
        None => {
            // Streamed: its failure is the client's, also once the
            // response has started (SPEC 5.1).
            let failed = BodyFailed::default();
            let body = Watched::new(out.body.into_proxy_body(max), failed.clone()).boxed();
            let req = Request::from_parts(parts, body);
            upstream.send(req, None, timeout, Some(failed)).await?
        }
    };
    served.endpoint = sent.endpoint.clone();
    let tunnel_idle = snapshot.config.settings.limits.tunnel_idle_timeout;
    answer(upstream, sent, opts, out.upgrade, tunnel_idle)
}

/// The client's response: hop-by-hop headers removed, the route's response
/// header edits applied; a 101 joins the two sides when the client asked
/// for the upgrade (an unrequested 101 is a 502).
fn answer(
    upstream: &Upstream,
    sent: Sent,
    opts: Option<&ForwardOptions>,
    client_upgrade: Option<PendingUpgrade>,
    tunnel_idle: Duration,
) -> Result<Response<ProxyBody>, ForwardError> {
    let Sent {
        response, upgrade, ..
    } = sent;
    let (mut parts, body) = response.into_parts();
    let tunnelled = upgrade.is_some() && client_upgrade.is_some();
    headers::strip_hop_by_hop(&mut parts.headers, tunnelled, false);
    if let Some(o) = opts {
        headers::apply_ops(&mut parts.headers, &o.response_headers);
    }
    let Some((server, in_flight)) = upgrade else {
        return Ok(Response::from_parts(parts, body));
    };
    let Some(client) = client_upgrade else {
        let e = SendError::Reset {
            endpoint: Arc::from(""),
            source: "unrequested 101 from upstream".into(),
        };
        upstream.count_error(&e);
        return Err(ForwardError::UpstreamReset(
            "unrequested 101 from upstream".into(),
        ));
    };
    tokio::spawn(tunnel(client, server, in_flight, tunnel_idle));
    Ok(Response::from_parts(parts, full(Bytes::new())))
}

fn respond(r: &Respond) -> Response<ProxyBody> {
    let mut resp = Response::new(full(r.body.clone()));
    *resp.status_mut() = r.status;
    for (k, v) in &r.headers {
        resp.headers_mut().append(k.clone(), v.clone());
    }
    resp
}

fn redirect(r: &Redirect) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = r.status;
    resp.headers_mut()
        .insert(header::LOCATION, r.location.clone());
    resp
}
