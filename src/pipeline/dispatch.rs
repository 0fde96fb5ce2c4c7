//! Dispatch: the answer for a decided request. A `respond` or `redirect`
//! route answers itself; a forwarding route sends to its upstream (with
//! the upstream's retries), mirrors a share, and fails over to the
//! fallback when `fallback.failover` allows; no route goes to the fallback.

use super::decide::Decision;
use super::record::{SeriesAt, Served};
use super::{Outgoing, mirror, prepare};
use crate::compile::{
    Action, FallbackAction, ForwardOptions, Redirect, RedirectPart, Respond, Route,
};
use crate::forward::body::{Unread, Watched};
use crate::forward::tunnel::{PendingUpgrade, tunnel};
use crate::forward::{
    AddedFields, BodyFailed, ForwardError, ProxyBody, RequestBody, full, grpc, headers,
    strip_path_prefix,
};
use crate::runtime::Snapshot;
use crate::split::{Arm, SplitDecision};
use crate::upstream::def::UpstreamId;
use crate::upstream::{InFlight, OutBody, SendError, Sent, Upstream};
use bytes::Bytes;
use http::{HeaderValue, Response, Version, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers a decided request.
#[expect(
    clippy::manual_async_fn,
    reason = "smaller future: see the pipeline module"
)]
pub(super) fn dispatch(
    snapshot: &Snapshot,
    decision: Decision,
    out: &mut Outgoing<'_>,
    request_id: &HeaderValue,
    served: &mut Served,
) -> impl Future<Output = Result<Response<ProxyBody>, ForwardError>> {
    async move {
        let config = &snapshot.config;
        let Some((i, route)) = decision.route.zip(decision.route(config)) else {
            // Boxed here and below: a fallback is a second send, and inline it
            // would double the size of every request's future (which hyper
            // moves once per request).
            return Box::pin(fallback(snapshot, out, served, None)).await;
        };
        served.route = Some(i);
        let metrics = snapshot.route_metrics(i);
        served.series = Some(SeriesAt::Direct(i));
        match &route.action {
            Action::Respond(r) => return Ok(respond(r)),
            Action::Redirect(r) => return redirect(r, out),
            _ => {}
        }
        let Some(upstream) = decision.upstream(config) else {
            return Err(ForwardError::NoHealthyUpstream("no upstream".into()));
        };
        let split = decision.split.as_ref();
        prepare::variant(&mut out.added, split);
        note_split(route, i, split, served);
        if route.forward.mirror.is_some() {
            mirror::maybe(snapshot, route, metrics, out, request_id).await;
        }
        let spare = Spare::keep(snapshot, out);
        let opts: Option<&ForwardOptions> = Some(&route.forward);
        // `send`'s steps, in this future.
        let result = match to_send(snapshot, upstream, out, opts, served) {
            Err(e) => Err(e),
            Ok(ToSend {
                upstream,
                body,
                timeout,
                then,
            }) => {
                let sent = upstream
                    .send(
                        &mut out.parts,
                        &out.added,
                        body,
                        timeout,
                        &mut served.attempts,
                    )
                    .await;
                then.answer(snapshot, upstream, sent, opts, served)
            }
        };
        match (result, spare) {
            (Err(e), Some(spare)) if e.fails_over() => {
                // Boxed: the spare request and a second send, inline, would
                // take room in every request's future.
                Box::pin(failover(snapshot, route, spare, served, e)).await
            }
            (result, _) => result,
        }
    }
}

/// Fails over to the fallback after `e`, with the request as it was
/// before the route's edits, if its body can still be sent.
async fn failover(
    snapshot: &Snapshot,
    route: &Route,
    spare: Box<Spare<'_>>,
    served: &mut Served,
    e: ForwardError,
) -> Result<Response<ProxyBody>, ForwardError> {
    let Some(mut out) = spare.outgoing() else {
        return Err(e);
    };
    tracing::warn!(
        route = %route.name,
        upstream = served.upstream_name(snapshot).unwrap_or(""),
        error = %e,
        "upstream failed; failing over to the fallback"
    );
    fallback(snapshot, &mut out, served, Some(e)).await
}

/// What a failover to the fallback needs (SPEC 6): the head before the
/// route's edits, and the body if it can still be sent: a held body
/// always, a streamed one only if the failed send never read it.
struct Spare<'p> {
    parts: http::request::Parts,
    added: AddedFields,
    path: &'p str,
    body: SpareBody,
    te_trailers: bool,
    deadline: Option<std::time::Instant>,
}

enum SpareBody {
    Held(Bytes),
    Unread(Unread),
}

impl<'p> Spare<'p> {
    /// Keeps what a failover needs when `fallback.failover` is on (never
    /// for an upgrade), lending a streamed body to the first send. Boxed:
    /// the request's future holds it across the send.
    fn keep(snapshot: &Snapshot, out: &mut Outgoing<'p>) -> Option<Box<Spare<'p>>> {
        let on = snapshot
            .config
            .fallback
            .as_ref()
            .is_some_and(|f| f.failover);
        if !on || out.upgrade.is_some() {
            return None;
        }
        let body = match out.body.held() {
            Some(held) => SpareBody::Held(held.clone()),
            None => SpareBody::Unread(out.body.lend()?),
        };
        Some(Box::new(Spare {
            parts: out.parts.clone(),
            added: out.added.clone(),
            path: out.path,
            te_trailers: out.te_trailers,
            deadline: out.deadline,
            body,
        }))
    }

    /// The request for the fallback, if its body can still be sent.
    fn outgoing(self: Box<Self>) -> Option<Outgoing<'p>> {
        let body = match self.body {
            SpareBody::Held(b) => RequestBody::Held(b),
            SpareBody::Unread(u) => RequestBody::streaming(u.take_back()?),
        };
        Some(Outgoing {
            parts: self.parts,
            added: self.added,
            body,
            path: self.path,
            upgrade: None,
            te_trailers: self.te_trailers,
            deadline: self.deadline,
        })
    }
}

/// Notes what a split decided: the variant, a minted cookie, the canary
/// arm for its guard, the exposure, and the arm's request series.
fn note_split(
    route: &Route,
    route_index: usize,
    split: Option<&SplitDecision>,
    served: &mut Served,
) {
    served.variant = split.and_then(|d| d.variant.clone());
    served.set_cookie = split.and_then(|d| d.set_cookie.clone());
    served.expose = split
        .filter(|d| d.expose)
        .and_then(|d| d.variant_header.clone());
    let arm = match (&route.action, split) {
        (Action::Canary(c), Some(d)) => {
            served.canary = d.arm.map(|arm| (c.index, arm));
            usize::from(d.arm == Some(Arm::Canary))
        }
        (Action::Experiment { experiment, .. }, Some(d)) => {
            served.exposure = d.exposure.map(|x| (experiment.index, x.index));
            served.released = d.released.then_some(experiment.index);
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
    served.series = Some(SeriesAt::Arm(route_index, arm));
}

/// Serves through the fallback; `failed` is the error that caused a
/// failover (answered with if the fallback fails too, route name kept).
#[expect(
    clippy::manual_async_fn,
    reason = "smaller future: see the pipeline module"
)]
fn fallback(
    snapshot: &Snapshot,
    out: &mut Outgoing<'_>,
    served: &mut Served,
    failed: Option<ForwardError>,
) -> impl Future<Output = Result<Response<ProxyBody>, ForwardError>> {
    async move {
        let Some(fb) = &snapshot.config.fallback else {
            return Err(failed.unwrap_or(ForwardError::NoRoute));
        };
        served.via_fallback = true;
        served.series = Some(SeriesAt::Fallback);
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
}

/// Sends the request to upstream `id` with a route's options (path
/// rewrite, header edits, timeout) and turns its answer into the client's.
/// The fallback's way; [`dispatch`] runs the same three steps in its own
/// future, a layer fewer on every request.
#[expect(
    clippy::manual_async_fn,
    reason = "smaller future: see the pipeline module"
)]
fn send(
    snapshot: &Snapshot,
    id: UpstreamId,
    out: &mut Outgoing<'_>,
    opts: Option<&ForwardOptions>,
    served: &mut Served,
) -> impl Future<Output = Result<Response<ProxyBody>, ForwardError>> {
    async move {
        let ToSend {
            upstream,
            body,
            timeout,
            then,
        } = to_send(snapshot, id, out, opts, served)?;
        let sent = upstream
            .send(
                &mut out.parts,
                &out.added,
                body,
                timeout,
                &mut served.attempts,
            )
            .await;
        then.answer(snapshot, upstream, sent, opts, served)
    }
}

/// A request ready for its upstream's [`Upstream::send`] (with the head
/// readied in place).
struct ToSend<'s> {
    upstream: &'s Upstream,
    body: OutBody,
    timeout: Duration,
    then: Then,
}

/// What turning the upstream's answer into the client's needs.
struct Then {
    /// The client is an HTTP/1.1 one that accepts trailers.
    declare_trailers: bool,
    /// The client side of an upgrade.
    upgrade: Option<PendingUpgrade>,
}

/// Readies `out` for upstream `id` with a route's options: the path
/// rewrite and header edits, the head for the upstream's protocol (both
/// in place), the timeout (a gRPC deadline shorter than it wins), the
/// body (taken).
fn to_send<'s>(
    snapshot: &'s Snapshot,
    id: UpstreamId,
    out: &mut Outgoing<'_>,
    opts: Option<&ForwardOptions>,
    served: &mut Served,
) -> Result<ToSend<'s>, ForwardError> {
    let Some(upstream) = snapshot.upstream(id) else {
        return Err(ForwardError::NoHealthyUpstream("unknown upstream".into()));
    };
    served.upstream = Some(id);
    // An HTTP/1.1 client that accepts trailers gets them declared.
    let declare_trailers = out.te_trailers && out.parts.version == Version::HTTP_11;
    prepare::for_upstream(&mut out.parts, &mut out.added, out.path, opts)?;
    prepare::for_protocol(&mut out.parts, upstream.def.protocol, out.te_trailers);
    let mut timeout = opts
        .and_then(|o| o.timeout)
        .unwrap_or(upstream.def.request_timeout);
    if let Some(deadline) = out.deadline {
        // A gRPC deadline shorter than the route's timeout wins (SPEC 5).
        timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
    }
    let max = snapshot.config.settings.limits.max_body_bytes;
    let body = match std::mem::replace(&mut out.body, RequestBody::Held(Bytes::new())) {
        RequestBody::Held(held) => OutBody::Held(held),
        streamed => {
            // Streamed: its failure is the client's, also once the
            // response has started (SPEC 5.1).
            let failed = BodyFailed::default();
            let body = Watched::new(streamed.into_proxy_body(max), failed.clone()).boxed();
            OutBody::Stream(body, Some(failed))
        }
    };
    Ok(ToSend {
        upstream,
        body,
        timeout,
        then: Then {
            declare_trailers,
            upgrade: out.upgrade.take(),
        },
    })
}

impl Then {
    /// The client's answer to what the upstream sent.
    fn answer(
        self,
        snapshot: &Snapshot,
        upstream: &Upstream,
        sent: Result<Sent, SendError>,
        opts: Option<&ForwardOptions>,
        served: &mut Served,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let Sent {
            response,
            upgrade,
            endpoint,
        } = sent?;
        served.endpoint = Some(endpoint);
        let tunnel_idle = snapshot.config.settings.limits.tunnel_idle_timeout;
        answer(
            upstream,
            response,
            upgrade,
            opts,
            self.upgrade,
            self.declare_trailers,
            tunnel_idle,
        )
    }
}

/// The client's response: hop-by-hop headers removed, the route's response
/// header edits applied, its trailers declared when the client is an
/// HTTP/1.1 one that accepts them (`declare_trailers`); a 101 joins the
/// two sides when the client asked for the upgrade (an unrequested 101 is
/// a 502).
fn answer(
    upstream: &Upstream,
    response: Response<ProxyBody>,
    upgrade: Option<(PendingUpgrade, InFlight)>,
    opts: Option<&ForwardOptions>,
    client_upgrade: Option<PendingUpgrade>,
    declare_trailers: bool,
    tunnel_idle: Duration,
) -> Result<Response<ProxyBody>, ForwardError> {
    let (mut parts, body) = response.into_parts();
    let tunnelled = upgrade.is_some() && client_upgrade.is_some();
    let declared = match declare_trailers {
        true => parts.headers.get(header::TRAILER).cloned(),
        false => None,
    };
    headers::strip_hop_by_hop(&mut parts.headers, tunnelled, false);
    if declare_trailers {
        let grpc = grpc::is_grpc(&parts.headers);
        headers::declare_trailers(&mut parts.headers, declared, grpc);
    }
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

/// A redirect's answer: its `to` as written, or, with placeholders, filled
/// in from the request (one string built, no regex).
fn redirect(r: &Redirect, out: &Outgoing<'_>) -> Result<Response<ProxyBody>, ForwardError> {
    let location = match &r.template {
        None => r.location.clone(),
        Some(parts) => {
            let host = out
                .parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map_or("", host_without_port);
            let path = strip_path_prefix(out.path, r.strip_prefix.as_deref());
            let query = out.parts.uri.query();
            let mut len = 0;
            for p in parts.iter() {
                len += match p {
                    RedirectPart::Text(t) => t.len(),
                    RedirectPart::Host => host.len(),
                    RedirectPart::Path => path.len(),
                    RedirectPart::Query => query.map_or(0, |q| q.len() + 1),
                };
            }
            let mut s = String::with_capacity(len);
            for p in parts.iter() {
                match p {
                    RedirectPart::Text(t) => s.push_str(t),
                    RedirectPart::Host => s.push_str(host),
                    RedirectPart::Path => s.push_str(path),
                    RedirectPart::Query => {
                        if let Some(q) = query {
                            s.push('?');
                            s.push_str(q);
                        }
                    }
                }
            }
            HeaderValue::from_maybe_shared(Bytes::from(s))
                .map_err(|_| ForwardError::BadRequest("no valid redirect for this request"))?
        }
    };
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

/// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    #[test]
    fn ports_are_removed_from_hosts() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
